//! Numbers at the edge of their range: a segment whose name puts its batches next to
//! `u64::MAX` neither panics `open` or `verify` nor yields wrapped-around offsets; a read
//! with no record limit (`usize::MAX`) returns the records; a retention age too large to
//! be a time span is rejected with the field named, instead of deleting everything.

mod common;

use std::path::Path;
use switchyard_journal::file::{FileJournal, verify};
use switchyard_journal::{
    Durability, Error, Journal, ReadLimits, Record, Retention, TopicConfig, TopicName,
};

fn topic() -> TopicName {
    TopicName::new("edge.v1").expect("topic")
}

/// The journal's own frame with its base offset replaced (and its CRC recomputed), after
/// the documented layout `u32 len | u32 crc32c | u64 base | ...`, CRC over the rest.
fn rebased(frame: &[u8], base: u64) -> Vec<u8> {
    let mut f = frame.to_vec();
    f[8..16].copy_from_slice(&base.to_le_bytes());
    let crc = crc32c::crc32c(&f[8..]);
    f[4..8].copy_from_slice(&crc.to_le_bytes());
    f
}

/// A journal whose partition holds a single segment named `base` with one valid batch of
/// `n` records at offset `base`.
async fn journal_with_segment_at(jdir: &Path, base: u64, n: usize) {
    let j = FileJournal::open(jdir).expect("open");
    j.create_topic(&topic(), TopicConfig::default())
        .await
        .expect("create");
    let records: Vec<Record> = (0..n)
        .map(|i| Record::new(format!("r{i}")).with_id(format!("id{i}")))
        .collect();
    j.append(&topic(), 0, records, None).await.expect("append");
    j.close().await.expect("close");
    let part = common::partition_dir(jdir, "edge.v1", 0);
    let segs = common::segments(&part);
    assert_eq!(segs.len(), 1);
    let frames = common::frames(&segs[0].1);
    assert_eq!(frames.len(), 1);
    assert_eq!(frames[0].count as usize, n);
    let data = std::fs::read(&segs[0].1).expect("read");
    for f in common::files_with_ext(&part, &["log", "index", "keys"]) {
        std::fs::remove_file(f).expect("remove");
    }
    std::fs::write(part.join(format!("{base:020}.log")), rebased(&data, base))
        .expect("write segment");
}

/// A batch of two records at `u64::MAX - 1` would end past the last offset: `open` and
/// `verify` do not panic; the batch is not taken for records at wrapped-around offsets.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_that_would_overflow_the_offset_range_is_invalid_not_a_panic() {
    let dir = tempfile::tempdir().expect("tempdir");
    let jdir = dir.path().join("journal");
    let base = u64::MAX - 1;
    journal_with_segment_at(&jdir, base, 2).await;

    let report = std::panic::catch_unwind(|| verify(&jdir))
        .expect("verify panicked")
        .expect("verify");
    let flagged: Vec<_> = report.problems.iter().chain(&report.torn_tails).collect();
    assert_eq!(flagged.len(), 1, "the batch is reported: {report:?}");
    assert_eq!((flagged[0].offset, flagged[0].position), (base, 0));

    let opened = std::panic::catch_unwind(|| FileJournal::open(&jdir)).expect("open panicked");
    match opened {
        Err(e) => {
            // A clear error is acceptable; it names the partition's files.
            assert!(e.to_string().contains("edge.v1"), "{e}");
        }
        Ok(j) => {
            let info = j.describe_topic(&topic()).await.expect("describe");
            let p = &info.partitions[0];
            assert_eq!(
                (p.first_offset, p.next_offset),
                (base, base),
                "the invalid batch holds no records: {p:?}"
            );
            let b = j
                .read(&topic(), 0, 0, ReadLimits::default())
                .await
                .expect("read");
            assert!(b.records.is_empty(), "{b:?}");
            assert_eq!(b.next_offset, base);
            j.close().await.expect("close");
        }
    }
}

/// One record at `u64::MAX - 1` ends exactly at the last offset: valid, read back at its
/// offset, nothing wraps.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_that_ends_at_the_last_offset_reads_back() {
    let dir = tempfile::tempdir().expect("tempdir");
    let jdir = dir.path().join("journal");
    let base = u64::MAX - 1;
    journal_with_segment_at(&jdir, base, 1).await;

    let report = verify(&jdir).expect("verify");
    assert!(
        report.is_clean() && report.torn_tails.is_empty(),
        "{report:?}"
    );
    let j = FileJournal::open(&jdir).expect("open");
    let info = j.describe_topic(&topic()).await.expect("describe");
    let p = &info.partitions[0];
    assert_eq!((p.first_offset, p.next_offset), (base, u64::MAX), "{p:?}");
    for from in [0, base] {
        let b = j
            .read(&topic(), 0, from, ReadLimits::default())
            .await
            .expect("read");
        assert_eq!(b.records.len(), 1, "{b:?}");
        assert_eq!(b.records[0].offset, base);
        assert_eq!(b.records[0].id.as_deref(), Some("id0"));
        assert_eq!(b.next_offset, u64::MAX);
    }
    let b = j
        .read(&topic(), 0, u64::MAX, ReadLimits::default())
        .await
        .expect("read at the end");
    assert!(b.records.is_empty());
    // No offset is left: an append says so, and the partition stays readable.
    match j
        .append(&topic(), 0, vec![Record::new("one more")], None)
        .await
    {
        Err(Error::Failed { reason, .. }) => assert!(reason.contains("exhausted"), "{reason}"),
        other => panic!("expected the offset range to be exhausted, got {other:?}"),
    }
    let b = j
        .read(&topic(), 0, base, ReadLimits::default())
        .await
        .expect("read after the refused append");
    assert_eq!(b.records.len(), 1);
    j.close().await.expect("close");
}

/// `max_records: usize::MAX` (and `max_bytes: usize::MAX`) means no limit, from any offset.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_without_a_record_limit_returns_the_records() {
    let dir = tempfile::tempdir().expect("tempdir");
    let j = FileJournal::open(dir.path().join("journal")).expect("open");
    let config = TopicConfig {
        durability: Durability::Os,
        segment_bytes: 4096,
        ..TopicConfig::default()
    };
    j.create_topic(&topic(), config).await.expect("create");
    const N: u64 = 30;
    for i in 0..N {
        j.append(&topic(), 0, vec![Record::new(vec![i as u8; 500])], None)
            .await
            .expect("append");
    }
    let info = j.describe_topic(&topic()).await.expect("describe");
    assert_eq!(info.partitions[0].next_offset, N);
    for limits in [
        ReadLimits {
            max_records: usize::MAX,
            max_bytes: 1 << 20,
        },
        ReadLimits {
            max_records: usize::MAX,
            max_bytes: usize::MAX,
        },
    ] {
        for from in [0, 1, 2, 7, N - 1] {
            let b = j
                .read(&topic(), 0, from, limits)
                .await
                .unwrap_or_else(|e| panic!("read from {from} with {limits:?}: {e}"));
            let offsets: Vec<u64> = b.records.iter().map(|r| r.offset).collect();
            assert_eq!(
                offsets,
                (from..N).collect::<Vec<_>>(),
                "read from {from} with {limits:?}"
            );
            assert_eq!(b.next_offset, N);
            for r in &b.records {
                assert_eq!(r.payload.as_ref(), vec![r.offset as u8; 500].as_slice());
            }
        }
        let b = j
            .read(&topic(), 0, N, limits)
            .await
            .expect("read at the end");
        assert!(b.records.is_empty());
        assert_eq!(b.next_offset, N);
    }
    j.close().await.expect("close");
}

fn retention_age(ms: u64) -> TopicConfig {
    TopicConfig {
        durability: Durability::Os,
        segment_bytes: 4096,
        retention: Retention {
            max_age_ms: Some(ms),
            max_bytes: None,
        },
        ..TopicConfig::default()
    }
}

fn assert_names_max_age(e: &Error) {
    match e {
        Error::InvalidConfig(c) => assert_eq!(c.field, "retention.max-age-ms", "{e}"),
        other => panic!("expected InvalidConfig naming retention.max-age-ms, got {other:?}"),
    }
    assert!(e.to_string().contains("retention.max-age-ms"), "{e}");
}

/// `retention.max-age-ms = u64::MAX` is not "forever" (that is no age limit): it is
/// rejected by create and update, and in a `topic.json` found at open, naming the field.
/// The largest accepted age keeps every record.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retention_age_beyond_the_limit_is_rejected() {
    let dir = tempfile::tempdir().expect("tempdir");
    let jdir = dir.path().join("journal");
    let j = FileJournal::open(&jdir).expect("open");

    for ms in [
        u64::MAX,
        i64::MAX as u64 + 1,
        TopicConfig::MAX_RETENTION_AGE_MS + 1,
    ] {
        let e = j
            .create_topic(&topic(), retention_age(ms))
            .await
            .expect_err("create with an out-of-range retention age");
        assert_names_max_age(&e);
    }
    assert!(j.list_topics().await.expect("list").is_empty());
    assert!(
        !jdir.join("topics").join("edge.v1").exists(),
        "a rejected topic leaves no directory"
    );

    // The largest age accepted is a real bound: nothing is old enough to go.
    j.create_topic(&topic(), retention_age(TopicConfig::MAX_RETENTION_AGE_MS))
        .await
        .expect("create with the largest retention age");
    for i in 0..20u8 {
        j.append(&topic(), 0, vec![Record::new(vec![i; 1000])], None)
            .await
            .expect("append");
    }
    let info = j.describe_topic(&topic()).await.expect("describe");
    assert_eq!(info.partitions[0].first_offset, 0, "no record was removed");
    assert_eq!(info.partitions[0].next_offset, 20);
    let e = j
        .update_topic(&topic(), retention_age(u64::MAX))
        .await
        .expect_err("update with an out-of-range retention age");
    assert_names_max_age(&e);
    j.close().await.expect("close");

    // The same value written into topic.json by hand: open fails and names field and file.
    let path = jdir.join("topics").join("edge.v1").join("topic.json");
    let text = std::fs::read_to_string(&path).expect("topic.json");
    let mut v: serde_json::Value = serde_json::from_str(&text).expect("json");
    v["config"]["retention"]["max-age-ms"] = u64::MAX.into();
    std::fs::write(&path, v.to_string()).expect("write topic.json");
    let e = FileJournal::open(&jdir).expect_err("open with an out-of-range retention age");
    let msg = e.to_string();
    assert!(msg.contains("retention.max-age-ms"), "{msg}");
    assert!(msg.contains(&path.display().to_string()), "{msg}");
}
