//! Optimistic concurrency keeps only the active segment's keys in memory and finds older
//! ones in the sealed segments' `.keys` sidecars. Expectations ("last offset is X", "no
//! record yet") must give the same answers wherever the key's last record is: in a sealed
//! segment, in the active one, in both (the newest wins), in several sealed ones, before and
//! after a reopen; and once retention removed the segments holding a key's only records,
//! the key has no record, even after its answer was cached.

mod common;

use bytes::Bytes;
use rand::{Rng, SeedableRng};
use std::collections::HashMap;
use std::path::Path;
use std::time::{Duration, Instant};
use switchyard_journal::conformance::RETENTION_WAIT;
use switchyard_journal::file::FileJournal;
use switchyard_journal::{
    Durability, Error, Expectation, Expected, Journal, Offset, Record, Retention, TopicConfig,
    TopicName,
};

fn topic(name: &str) -> TopicName {
    TopicName::new(name).expect("topic")
}

fn small_segments() -> TopicConfig {
    TopicConfig {
        partitions: 1,
        durability: Durability::Os,
        segment_bytes: 4096,
        ..TopicConfig::default()
    }
}

fn expect(key: &str, expected: Expected) -> Option<Expectation> {
    Some(Expectation {
        key: Bytes::from(key.to_owned()),
        expected,
    })
}

fn rec(key: &str, n: usize) -> Record {
    Record::new(format!("{key} #{n} {}", "x".repeat(60))).with_key(key.to_owned())
}

/// The key's last offset as the journal sees it: an expectation no offset can meet
/// conflicts and reports it, writing nothing.
async fn last_offset(j: &FileJournal, t: &TopicName, key: &str) -> Option<Offset> {
    match j
        .append(
            t,
            0,
            vec![rec(key, 0)],
            expect(key, Expected::LastOffset(u64::MAX)),
        )
        .await
    {
        Err(Error::Conflict { actual, .. }) => actual,
        other => panic!("{key}: expected a conflict, got {other:?}"),
    }
}

async fn append(j: &FileJournal, t: &TopicName, key: &str, exp: Expected) -> Offset {
    j.append(t, 0, vec![rec(key, 1)], expect(key, exp))
        .await
        .unwrap_or_else(|e| panic!("{key}: append expecting {exp:?}: {e}"))[0]
        .offset
}

/// Appends keyless records until `n` more segments were sealed.
async fn seal_segments(j: &FileJournal, dir: &Path, t: &TopicName, n: usize) {
    let pdir = common::partition_dir(dir, t.as_str(), 0);
    let target = common::segments(&pdir).len() + n;
    while common::segments(&pdir).len() < target {
        j.append(t, 0, vec![Record::new(vec![b'f'; 500])], None)
            .await
            .expect("filler");
    }
}

/// The base offset of the active (last) segment.
fn active_base(dir: &Path, t: &TopicName) -> Offset {
    let segs = common::segments(&common::partition_dir(dir, t.as_str(), 0));
    segs.last().expect("a segment").0
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn last_offsets_in_sealed_active_and_both() {
    let dir = tempfile::tempdir().expect("tempdir");
    let t = topic("keys.where");
    let j = FileJournal::open(dir.path()).expect("open");
    j.create_topic(&t, small_segments()).await.expect("create");

    let mut last: HashMap<&str, Offset> = HashMap::new();
    last.insert("old", append(&j, &t, "old", Expected::NoRecord).await);
    last.insert("twice", append(&j, &t, "twice", Expected::NoRecord).await);
    last.insert("both", append(&j, &t, "both", Expected::NoRecord).await);
    seal_segments(&j, dir.path(), &t, 2).await;
    let o = append(&j, &t, "twice", Expected::LastOffset(last["twice"])).await;
    last.insert("twice", o);
    last.insert("middle", append(&j, &t, "middle", Expected::NoRecord).await);
    seal_segments(&j, dir.path(), &t, 2).await;
    let o = append(&j, &t, "both", Expected::LastOffset(last["both"])).await;
    last.insert("both", o);
    last.insert("new", append(&j, &t, "new", Expected::NoRecord).await);

    // Where each key's last record is.
    let active = active_base(dir.path(), &t);
    for k in ["old", "twice", "middle"] {
        assert!(last[k] < active, "{k} is in a sealed segment");
    }
    for k in ["both", "new"] {
        assert!(last[k] >= active, "{k} is in the active segment");
    }

    check_keys(&j, &t, &last, "before reopen").await;
    check_keys(&j, &t, &last, "before reopen, cached").await;
    j.close().await.expect("close");

    let j = FileJournal::open(dir.path()).expect("reopen");
    check_keys(&j, &t, &last, "after reopen").await;
    check_keys(&j, &t, &last, "after reopen, cached").await;
    // Expectations that hold are still met, across the sealed segments.
    let o = append(&j, &t, "old", Expected::LastOffset(last["old"])).await;
    let n = append(&j, &t, "never", Expected::NoRecord).await;
    assert_eq!(last_offset(&j, &t, "old").await, Some(o));
    assert_eq!(last_offset(&j, &t, "never").await, Some(n));
    j.close().await.expect("close");
}

/// Every key reports its last offset; a conflicting expectation fails and writes nothing,
/// a key without records passes "no record yet" checks.
async fn check_keys(j: &FileJournal, t: &TopicName, last: &HashMap<&str, Offset>, what: &str) {
    let before = j.describe_topic(t).await.expect("describe").partitions[0].next_offset;
    for (k, o) in last {
        assert_eq!(last_offset(j, t, k).await, Some(*o), "{what}: {k}");
        match j
            .append(t, 0, vec![rec(k, 2)], expect(k, Expected::NoRecord))
            .await
        {
            Err(Error::Conflict { actual, .. }) => assert_eq!(actual, Some(*o), "{what}: {k}"),
            other => panic!("{what}: {k}: expected a conflict, got {other:?}"),
        }
        let wrong = Expected::LastOffset(o + 1);
        assert!(
            matches!(
                j.append(t, 0, vec![rec(k, 3)], expect(k, wrong)).await,
                Err(Error::Conflict { .. })
            ),
            "{what}: {k} expecting {wrong:?}"
        );
    }
    assert_eq!(last_offset(j, t, "never").await, None, "{what}: never");
    let after = j.describe_topic(t).await.expect("describe").partitions[0].next_offset;
    assert_eq!(before, after, "{what}: conflicts wrote nothing");
}

/// Random appends (single records and batches of several keys) with random expectations,
/// against a model of each key's last offset, over dozens of segments and two reopens.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_expectations_agree_with_a_model() {
    let dir = tempfile::tempdir().expect("tempdir");
    let t = topic("keys.model");
    let mut j = FileJournal::open(dir.path()).expect("open");
    j.create_topic(&t, small_segments()).await.expect("create");
    let mut rng = rand::rngs::StdRng::seed_from_u64(42);
    let keys: Vec<String> = (0..200).map(|i| format!("acct-{i}")).collect();
    let mut model: HashMap<String, Offset> = HashMap::new();
    let n = 2400;
    for i in 0..n {
        if i > 0 && i % (n / 3) == 0 {
            j.close().await.expect("close");
            j = FileJournal::open(dir.path()).expect("reopen");
        }
        let key = &keys[rng.random_range(0..keys.len())];
        let actual = model.get(key).copied();
        let expected = match (rng.random_range(0..4), actual) {
            (0, _) => Expected::NoRecord,
            (1, Some(o)) => Expected::LastOffset(o + rng.random_range(1..3)),
            (1, None) => Expected::LastOffset(rng.random_range(0..i as u64 + 1)),
            (_, Some(o)) => Expected::LastOffset(o),
            (_, None) => Expected::NoRecord,
        };
        // Sometimes a batch whose other records carry other keys.
        let mut batch = vec![rec(key, i)];
        for _ in 0..rng.random_range(0..3) {
            let other = &keys[rng.random_range(0..keys.len())];
            batch.push(rec(other, i));
        }
        let ok = match expected {
            Expected::NoRecord => actual.is_none(),
            Expected::LastOffset(o) => actual == Some(o),
        };
        match j.append(&t, 0, batch.clone(), expect(key, expected)).await {
            Ok(a) if ok => {
                for (r, a) in batch.iter().zip(&a) {
                    let k = String::from_utf8(r.key.clone().expect("key").to_vec()).expect("utf8");
                    model.insert(k, a.offset);
                }
            }
            Err(Error::Conflict { actual: got, .. }) if !ok => {
                assert_eq!(got, actual, "append {i}: {key} expecting {expected:?}")
            }
            other => {
                panic!("append {i}: {key} expecting {expected:?} (last {actual:?}): {other:?}")
            }
        }
    }
    let segs = common::segments(&common::partition_dir(dir.path(), t.as_str(), 0));
    assert!(segs.len() > 20, "many sealed segments: {}", segs.len());
    for key in &keys {
        assert_eq!(
            last_offset(&j, &t, key).await,
            model.get(key).copied(),
            "{key}"
        );
    }
    j.close().await.expect("close");
}

/// A key whose only record was in a removed segment has no record any more, also when its
/// offset was cached before retention removed the segment.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_forgets_cached_keys_of_removed_segments() {
    let dir = tempfile::tempdir().expect("tempdir");
    let t = topic("keys.retention");
    let j = FileJournal::open(dir.path()).expect("open");
    j.create_topic(&t, small_segments()).await.expect("create");
    let gone = append(&j, &t, "gone", Expected::NoRecord).await;
    seal_segments(&j, dir.path(), &t, 1).await;
    let kept = append(&j, &t, "kept", Expected::NoRecord).await;
    seal_segments(&j, dir.path(), &t, 4).await;
    // Both answers now come from the sealed segments, and are cached.
    assert_eq!(last_offset(&j, &t, "gone").await, Some(gone));
    assert_eq!(last_offset(&j, &t, "kept").await, Some(kept));
    assert_eq!(last_offset(&j, &t, "gone").await, Some(gone));

    // Keep the segments from `kept`'s on: remove exactly those before it.
    let pdir = common::partition_dir(dir.path(), t.as_str(), 0);
    let segs = common::segments(&pdir);
    let kept_seg = segs
        .iter()
        .rposition(|(b, _)| *b <= kept)
        .expect("kept's segment");
    let from_kept: u64 = segs[kept_seg..]
        .iter()
        .map(|(_, p)| std::fs::metadata(p).expect("log").len())
        .sum();
    let cfg = TopicConfig {
        retention: Retention {
            max_age_ms: None,
            max_bytes: Some(from_kept),
        },
        ..small_segments()
    };
    j.update_topic(&t, cfg).await.expect("update");
    let deadline = Instant::now() + RETENTION_WAIT;
    loop {
        let first = j.describe_topic(&t).await.expect("describe").partitions[0].first_offset;
        if first > gone {
            assert!(first <= kept, "kept's segment stays: first offset {first}");
            break;
        }
        assert!(Instant::now() < deadline, "retention was not enforced");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        last_offset(&j, &t, "gone").await,
        None,
        "removed with its segment"
    );
    assert_eq!(last_offset(&j, &t, "kept").await, Some(kept));
    let again = append(&j, &t, "gone", Expected::NoRecord).await;
    assert_eq!(last_offset(&j, &t, "gone").await, Some(again));
    j.close().await.expect("close");
}
