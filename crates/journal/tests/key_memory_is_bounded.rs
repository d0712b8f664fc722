//! Memory for optimistic concurrency stays bounded whatever the journal's size: after many
//! distinct keys over many sealed segments, a partition holds in memory only the keys of
//! its active segment (plus a cache of fixed size), before and after a reopen, and every
//! key's last offset is still found.

mod common;

use bytes::Bytes;
use std::path::Path;
use switchyard_journal::file::FileJournal;
use switchyard_journal::{
    Durability, Error, Expectation, Expected, Journal, Offset, Record, TopicConfig, TopicName,
};

const KEYS: usize = 3000;

fn key(i: usize) -> String {
    format!("customer-{i:05}")
}

/// How many records the active (last) segment holds: each has its own key.
async fn active_records(j: &FileJournal, dir: &Path, t: &TopicName) -> usize {
    let segs = common::segments(&common::partition_dir(dir, t.as_str(), 0));
    let base = segs.last().expect("a segment").0;
    let next = j.describe_topic(t).await.expect("describe").partitions[0].next_offset;
    (next - base) as usize
}

async fn last_offset(j: &FileJournal, t: &TopicName, key: &str) -> Option<Offset> {
    let exp = Expectation {
        key: Bytes::from(key.to_owned()),
        expected: Expected::LastOffset(u64::MAX),
    };
    match j.append(t, 0, vec![Record::new("x")], Some(exp)).await {
        Err(Error::Conflict { actual, .. }) => actual,
        other => panic!("{key}: expected a conflict, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_active_segments_keys_are_held_in_memory() {
    let dir = tempfile::tempdir().expect("tempdir");
    let t = TopicName::new("keys.bounded").expect("topic");
    let j = FileJournal::open(dir.path()).expect("open");
    let config = TopicConfig {
        partitions: 1,
        durability: Durability::Os,
        segment_bytes: 4096,
        ..TopicConfig::default()
    };
    j.create_topic(&t, config).await.expect("create");
    let mut offsets = Vec::with_capacity(KEYS);
    let mut most = 0;
    for i in 0..KEYS {
        let k = key(i);
        let exp = Expectation {
            key: Bytes::from(k.clone()),
            expected: Expected::NoRecord,
        };
        let a = j
            .append(&t, 0, vec![Record::new("v").with_key(k)], Some(exp))
            .await
            .unwrap_or_else(|e| panic!("append {i}: {e}"));
        offsets.push(a[0].offset);
        if i % 97 == 0 || i == KEYS - 1 {
            let held = j.keys_in_memory(&t, 0).expect("keys in memory");
            let active = active_records(&j, dir.path(), &t).await;
            assert!(
                held <= active,
                "after {i} keys: {held} held, the active segment has {active}"
            );
            assert_eq!(held, active, "after {i} keys: exactly the active segment's");
            most = most.max(held);
        }
    }
    let segs = common::segments(&common::partition_dir(dir.path(), t.as_str(), 0));
    assert!(segs.len() > 30, "many sealed segments: {}", segs.len());
    assert!(most * 20 < KEYS, "{most} keys held at most, of {KEYS}");
    for i in (0..KEYS).step_by(7) {
        assert_eq!(
            last_offset(&j, &t, &key(i)).await,
            Some(offsets[i]),
            "{}",
            key(i)
        );
    }
    j.close().await.expect("close");

    // Recovery validates the sealed segments' key tables without loading them.
    let j = FileJournal::open(dir.path()).expect("reopen");
    let held = j.keys_in_memory(&t, 0).expect("keys in memory");
    let active = active_records(&j, dir.path(), &t).await;
    assert_eq!(held, active, "after reopen: the active segment's keys only");
    for i in (3..KEYS).step_by(7) {
        assert_eq!(
            last_offset(&j, &t, &key(i)).await,
            Some(offsets[i]),
            "{}",
            key(i)
        );
    }
    assert_eq!(last_offset(&j, &t, "nobody").await, None);
    assert_eq!(
        j.keys_in_memory(&t, 0).expect("keys in memory"),
        held,
        "lookups add none"
    );
    j.close().await.expect("close");
}
