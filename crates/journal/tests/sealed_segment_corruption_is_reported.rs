//! A flipped byte inside a batch of a sealed segment (not the last of its partition): the
//! journal still opens; reading from the start returns the records before the damaged
//! batch, then fails with `Error::Corrupt` naming topic, partition, offset and file; the
//! damaged records are never returned; records in later segments still read; appends
//! continue; and `verify` reports the spot.

mod common;

use common::FrameInfo;
use std::path::{Path, PathBuf};
use switchyard_journal::conformance::read_all;
use switchyard_journal::file::{FileJournal, verify};
use switchyard_journal::{
    Durability, Error, Journal, Offset, ReadLimits, Record, StoredRecord, TopicConfig, TopicName,
};

const TOPIC: &str = "sealed.v1";

fn topic() -> TopicName {
    TopicName::new(TOPIC).expect("topic")
}

struct Fixture {
    _dir: tempfile::TempDir,
    src: PathBuf,
    stored: Vec<StoredRecord>,
    other: Vec<StoredRecord>,
    segments: Vec<(u64, PathBuf)>,
}

/// `dedup_window_ms` matters: with dedup on, opening reads the ids of the records within
/// the window, so the damaged segment is read during open.
async fn fixture(dedup_window_ms: u64) -> Fixture {
    let dir = tempfile::tempdir().expect("tempdir");
    let src = dir.path().join("journal");
    let j = FileJournal::open(&src).expect("open");
    let config = TopicConfig {
        partitions: 2,
        durability: Durability::Os,
        segment_bytes: 4096,
        index_interval_bytes: 128,
        dedup_window_ms,
        ..TopicConfig::default()
    };
    j.create_topic(&topic(), config).await.expect("create");
    for i in 0..150usize {
        let n = i % 3 + 1;
        let records = (0..n)
            .map(|k| {
                let id = format!("r{i}-{k}");
                Record::new(format!("{id} {}", "payload ".repeat(12)))
                    .with_id(id)
                    .with_key("k")
            })
            .collect();
        j.append(&topic(), 0, records, None).await.expect("append");
        j.append(&topic(), 1, vec![Record::new(format!("other {i}"))], None)
            .await
            .expect("append");
    }
    let stored = read_all(&j, &topic(), 0).await;
    let other = read_all(&j, &topic(), 1).await;
    j.close().await.expect("close");
    drop(j);
    let segments = common::segments(&common::partition_dir(&src, TOPIC, 0));
    assert!(segments.len() >= 4, "several segments: {segments:?}");
    let report = verify(&src).expect("verify");
    assert!(
        report.problems.is_empty(),
        "the fixture is clean: {report:?}"
    );
    Fixture {
        _dir: dir,
        src,
        stored,
        other,
        segments,
    }
}

fn flip(path: &Path, position: u64) {
    let mut bytes = std::fs::read(path).expect("read");
    bytes[position as usize] ^= 0xFF;
    std::fs::write(path, bytes).expect("write");
}

/// Copies the fixture, flips the byte at `position` of segment `seg` inside `frame`, and
/// checks everything the damage must and must not cause.
async fn check_flip(f: &Fixture, seg: usize, frame: &FrameInfo, position: u64) {
    let what = format!(
        "segment {seg}, batch at byte {}, byte {position} flipped",
        frame.position
    );
    let dir = tempfile::tempdir().expect("tempdir");
    let copy = dir.path().join("journal");
    common::copy_dir(&f.src, &copy);
    let rel = f.segments[seg].1.strip_prefix(&f.src).expect("inside");
    let seg_path = copy.join(rel);
    flip(&seg_path, position);

    let j = FileJournal::open(&copy).unwrap_or_else(|e| panic!("{what}: open failed: {e}"));
    let t = topic();
    let bad = frame.base..frame.next_offset();

    // From the start: the records before the damaged batch, then Corrupt.
    let mut got: Vec<StoredRecord> = Vec::new();
    let mut from = 0;
    let err = loop {
        match j.read(&t, 0, from, ReadLimits::default()).await {
            Ok(b) => {
                assert!(
                    !b.records.is_empty(),
                    "{what}: the read ended before the damaged batch without an error"
                );
                from = b.next_offset;
                got.extend(b.records);
            }
            Err(e) => break e,
        }
    };
    assert!(
        got.iter().all(|r| r.offset < bad.start),
        "{what}: damaged or later records returned"
    );
    assert_eq!(
        got.len() as u64,
        bad.start,
        "{what}: every record before the damage is returned"
    );
    assert!(
        got[..] == f.stored[..got.len()],
        "{what}: the records before the damage are intact"
    );
    check_corrupt(
        &err,
        &what,
        bad.start..bad.start + 1,
        &seg_path,
        frame.position,
    );

    // Reading anywhere inside the damaged batch fails the same way.
    for o in bad.clone() {
        match j.read(&t, 0, o, ReadLimits::default()).await {
            Err(e) => check_corrupt(&e, &what, bad.clone(), &seg_path, frame.position),
            Ok(b) => panic!("{what}: read from {o} inside the damaged batch returned {b:?}"),
        }
    }
    // A small read that ends just before the damage is fine.
    if bad.start > 0 {
        let b = j
            .read(
                &t,
                0,
                bad.start - 1,
                ReadLimits {
                    max_records: 1,
                    max_bytes: 1 << 20,
                },
            )
            .await;
        let b = b.unwrap_or_else(|e| panic!("{what}: the record just before the damage: {e}"));
        assert_eq!(b.records.len(), 1);
        assert_eq!(b.records[0], f.stored[bad.start as usize - 1]);
    }
    // Later batches of the same segment: correct data or an error, never wrong data.
    match j.read(&t, 0, bad.end, ReadLimits::default()).await {
        Ok(b) => check_intact(&b.records, &f.stored, &what),
        Err(e) => check_corrupt(&e, &what, bad.start..bad.end + 1, &seg_path, frame.position),
    }
    // Later segments read normally.
    let next_seg = f.segments[seg + 1].0;
    let b = j.read(&t, 0, next_seg, ReadLimits::default()).await;
    let b = b.unwrap_or_else(|e| panic!("{what}: the next segment is not damaged: {e}"));
    assert_eq!(
        b.records.first().map(|r| r.offset),
        Some(next_seg),
        "{what}"
    );
    check_intact(&b.records, &f.stored, &what);
    let tail_from = f.segments.last().expect("segments").0;
    let b = j
        .read(&t, 0, tail_from, ReadLimits::default())
        .await
        .expect("last segment");
    check_intact(&b.records, &f.stored, &what);
    assert_eq!(
        read_all(&j, &t, 1).await,
        f.other,
        "{what}: the other partition is untouched"
    );

    // The partition still takes appends, at the end.
    let info = j.describe_topic(&t).await.expect("describe");
    assert_eq!(
        info.partitions[0].next_offset,
        f.stored.len() as u64,
        "{what}: next_offset"
    );
    let a = j
        .append(&t, 0, vec![Record::new("after the damage")], None)
        .await
        .expect("append");
    assert_eq!(a[0].offset, f.stored.len() as u64);
    let b = j
        .read(&t, 0, a[0].offset, ReadLimits::default())
        .await
        .expect("read new");
    assert_eq!(b.records[0].payload, "after the damage");
    j.close().await.expect("close");
    drop(j);

    // Reopening does not "repair" the damage away, and verify reports it.
    let j = FileJournal::open(&copy).unwrap_or_else(|e| panic!("{what}: second open: {e}"));
    let e = j
        .read(&t, 0, bad.start, ReadLimits::default())
        .await
        .expect_err("still corrupt");
    check_corrupt(&e, &what, bad.clone(), &seg_path, frame.position);
    j.close().await.expect("close");
    drop(j);
    let report = verify(&copy).expect("verify");
    let problem = report
        .problems
        .iter()
        .find(|p| p.file == seg_path)
        .unwrap_or_else(|| {
            panic!(
                "{what}: verify does not report {}: {report:?}",
                seg_path.display()
            )
        });
    assert_eq!(problem.topic, TOPIC, "{what}: {problem:?}");
    assert_eq!(problem.partition, 0, "{what}: {problem:?}");
    assert_eq!(problem.offset, bad.start, "{what}: {problem:?}");
    assert_eq!(problem.position, frame.position, "{what}: {problem:?}");
    assert!(!report.is_clean());
    assert_eq!(
        report.problems.len(),
        1,
        "{what}: exactly one problem: {report:?}"
    );
}

fn check_intact(records: &[StoredRecord], stored: &[StoredRecord], what: &str) {
    for r in records {
        assert_eq!(
            r, &stored[r.offset as usize],
            "{what}: offset {} reads back intact",
            r.offset
        );
    }
}

fn check_corrupt(
    e: &Error,
    what: &str,
    offsets: std::ops::Range<Offset>,
    seg: &Path,
    position: u64,
) {
    match e {
        Error::Corrupt {
            topic,
            partition,
            offset,
            path,
            position: pos,
            reason,
        } => {
            assert_eq!(topic, TOPIC, "{what}: {e}");
            assert_eq!(*partition, 0, "{what}: {e}");
            assert!(
                offsets.contains(offset),
                "{what}: offset {offset} not in {offsets:?}: {e}"
            );
            assert_eq!(path, seg, "{what}: names the segment file: {e}");
            assert_eq!(
                *pos, position,
                "{what}: names the batch's byte position: {e}"
            );
            assert!(!reason.is_empty());
            let text = e.to_string();
            for part in [
                TOPIC.to_string(),
                format!("offset {offset}"),
                seg.display().to_string(),
            ] {
                assert!(
                    text.contains(&part),
                    "{what}: the message {text:?} names {part}"
                );
            }
        }
        other => panic!("{what}: expected Error::Corrupt, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flipped_byte_in_a_sealed_segment_is_reported_and_never_returned() {
    // The default dedup window: the damaged records are recent, so open reads them.
    let f = fixture(TopicConfig::default().dedup_window_ms).await;
    // A batch in the middle of the second segment: every field after the length.
    let frames = common::frames(&f.segments[1].1);
    let fr = frames[frames.len() / 2].clone();
    assert!(fr.count >= 1 && fr.len > 40);
    for rel in [4, 7, 8, 15, 16, 23, 24, 28, 29, 30, fr.len / 2, fr.len - 1] {
        check_flip(&f, 1, &fr, fr.position + rel).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn damage_at_either_end_of_a_sealed_segment_is_reported() {
    // Dedup off: open does not read the sealed segments at all.
    let f = fixture(0).await;
    let seg = f.segments.len() - 2; // the last sealed one
    let frames = common::frames(&f.segments[seg].1);
    let first = frames.first().expect("frames").clone();
    let last = frames.last().expect("frames").clone();
    check_flip(&f, seg, &first, first.position + first.len - 3).await;
    check_flip(&f, seg, &last, last.position + 20).await;
    // The very first batch of the partition: nothing before it to return.
    let frames0 = common::frames(&f.segments[0].1);
    check_flip(&f, 0, &frames0[0], frames0[0].position + 30).await;
}
