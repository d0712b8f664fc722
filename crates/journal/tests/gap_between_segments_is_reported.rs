//! A sealed segment that ends short of the next segment's base (its last batches are gone,
//! cut exactly at a batch boundary so that every remaining CRC checks out) lost records.
//! Reading across it returns the records before the gap and then fails with
//! `Error::Corrupt` naming the first missing offset, rather than skipping to the next
//! segment; `verify` reports the gap; records after it stay readable from their offsets.

mod common;

use std::path::{Path, PathBuf};
use switchyard_journal::file::{FileJournal, verify};
use switchyard_journal::{
    Durability, Error, Journal, ReadLimits, Record, StoredRecord, TopicConfig, TopicName,
};

const TOPIC: &str = "gap.v1";

fn topic() -> TopicName {
    TopicName::new(TOPIC).expect("topic")
}

/// A partition of several sealed segments of a few single-record batches each, closed.
async fn fixture(jdir: &Path) -> Vec<StoredRecord> {
    let j = FileJournal::open(jdir).expect("open");
    let config = TopicConfig {
        durability: Durability::Os,
        segment_bytes: 4096,
        ..TopicConfig::default()
    };
    j.create_topic(&topic(), config).await.expect("create");
    for i in 0..16u32 {
        let id = format!("rec-{i}");
        let rec = Record::new(vec![i as u8; 1000])
            .with_id(id)
            .with_key(format!("k{}", i % 3));
        j.append(&topic(), 0, vec![rec], None)
            .await
            .expect("append");
    }
    let stored = switchyard_journal::conformance::read_all(&j, &topic(), 0).await;
    assert_eq!(stored.len(), 16);
    j.close().await.expect("close");
    stored
}

/// Reads from `from` batch by batch until an error, which is returned with what came before.
async fn read_until_error(j: &FileJournal, from: u64) -> (Vec<StoredRecord>, Option<Error>) {
    let mut got = Vec::new();
    let mut from = from;
    loop {
        match j.read(&topic(), 0, from, ReadLimits::default()).await {
            Ok(b) if b.records.is_empty() => return (got, None),
            Ok(b) => {
                from = b.next_offset;
                got.extend(b.records);
            }
            Err(e) => return (got, Some(e)),
        }
    }
}

fn check_gap_error(e: &Error, gap_start: u64, seg: &Path, position: u64) {
    match e {
        Error::Corrupt {
            topic,
            partition,
            offset,
            path,
            position: pos,
            reason,
        } => {
            assert_eq!(topic, TOPIC, "{e}");
            assert_eq!(*partition, 0, "{e}");
            assert_eq!(*offset, gap_start, "names the first missing offset: {e}");
            assert_eq!(path, seg, "names the short segment: {e}");
            assert_eq!(*pos, position, "names where the segment ends: {e}");
            assert!(!reason.is_empty(), "{e}");
            assert!(
                e.to_string().contains(&format!("offset {gap_start}")),
                "{e}"
            );
        }
        other => panic!("expected Error::Corrupt at offset {gap_start}, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_segment_that_ends_short_of_the_next_is_reported_not_skipped() {
    let dir = tempfile::tempdir().expect("tempdir");
    let jdir = dir.path().join("journal");
    let stored = fixture(&jdir).await;
    let part = common::partition_dir(&jdir, TOPIC, 0);
    let segs = common::segments(&part);
    assert!(segs.len() >= 4, "several segments: {segs:?}");

    // Cut the second segment after its first batch: the one before it stays whole, so a
    // read from 0 crosses an intact segment boundary before it reaches the gap.
    let short: &PathBuf = &segs[1].1;
    let next_base = segs[2].0;
    let frames = common::frames(short);
    assert!(
        frames.len() >= 2,
        "the segment holds several batches: {frames:?}"
    );
    assert!(frames.iter().all(|f| f.crc_ok));
    let cut = frames[0].end();
    let gap_start = frames[0].next_offset();
    assert!(gap_start < next_base);
    let bytes = std::fs::read(short).expect("read");
    std::fs::write(short, &bytes[..cut as usize]).expect("cut");

    // verify names the gap.
    let report = verify(&jdir).expect("verify");
    assert_eq!(report.problems.len(), 1, "one problem: {report:?}");
    let p = &report.problems[0];
    assert_eq!((&p.file, p.offset), (short, gap_start), "{report:?}");

    let j = FileJournal::open(&jdir).expect("open with a gap");

    // From the start: every record before the gap, then Corrupt at the gap.
    let (got, err) = read_until_error(&j, 0).await;
    let err = err.expect("the read stops at the gap with an error, not past it");
    check_gap_error(&err, gap_start, short, cut);
    assert_eq!(
        got.as_slice(),
        &stored[..gap_start as usize],
        "records before the gap"
    );

    // A single large read that spans the gap returns nothing after it.
    let b = j
        .read(&topic(), 0, 0, ReadLimits::default())
        .await
        .expect("read from 0");
    assert!(b.records.iter().all(|r| r.offset < gap_start), "{b:?}");
    assert_eq!(b.next_offset, gap_start);

    // From the gap's start or from inside it: the same error.
    for from in gap_start..next_base {
        let e = j
            .read(&topic(), 0, from, ReadLimits::default())
            .await
            .expect_err("a read from a missing offset fails");
        check_gap_error(&e, gap_start, short, cut);
    }

    // After the gap, records are readable from their own offsets, intact.
    let (after, err) = read_until_error(&j, next_base).await;
    assert!(err.is_none(), "{err:?}");
    assert_eq!(after.as_slice(), &stored[next_base as usize..]);

    // The partition still takes appends, after its last offset.
    let a = j
        .append(&topic(), 0, vec![Record::new("after")], None)
        .await
        .expect("append");
    assert_eq!(a[0].offset, stored.len() as u64);
    j.close().await.expect("close");
}
