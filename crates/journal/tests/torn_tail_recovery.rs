//! Cutting the last segment of a partition anywhere (as a crash mid-write does) or leaving
//! garbage after its last batch: the journal opens cleanly, keeps exactly the batches that
//! lie entirely before the cut, forgets the rest (offsets, ids, key state) and appends
//! continue at the right offsets.

mod common;

use bytes::Bytes;
use common::FrameInfo;
use rand::Rng;
use std::path::{Path, PathBuf};
use switchyard_journal::conformance::read_all;
use switchyard_journal::file::{FileJournal, verify};
use switchyard_journal::{
    Appended, Durability, Error, Expectation, Expected, Journal, Offset, Record, StoredRecord,
    Timestamp, TopicConfig, TopicName,
};

const TOPIC: &str = "torn.v1";

fn topic() -> TopicName {
    TopicName::new(TOPIC).expect("topic")
}

/// One acknowledged append.
#[derive(Clone, Debug)]
struct Sent {
    records: Vec<Record>,
    acks: Vec<Appended>,
}

struct Fixture {
    _dir: tempfile::TempDir,
    src: PathBuf,
    sent: Vec<Sent>,
    stored: Vec<StoredRecord>,
    last_segment: PathBuf,
    frames: Vec<FrameInfo>,
}

/// A partition of several segments whose last one holds many batches, written and closed.
async fn fixture() -> Fixture {
    let dir = tempfile::tempdir().expect("tempdir");
    let src = dir.path().join("journal");
    let j = FileJournal::open(&src).expect("open");
    let config = TopicConfig {
        partitions: 2,
        durability: Durability::Always,
        segment_bytes: 16 * 1024,
        index_interval_bytes: 256,
        dedup_window_ms: 600_000,
        ..TopicConfig::default()
    };
    j.create_topic(&topic(), config).await.expect("create");
    let mut rng = rand::rng();
    let mut sent = Vec::new();
    let mut i = 0usize;
    // Enough batches for several segments, and then until the last one holds many.
    while i < 260 || last_segment_frames(&src) < 10 {
        let n = rng.random_range(1..=4);
        let records: Vec<Record> = (0..n)
            .map(|k| {
                let id = format!("b{i}-r{k}");
                Record::new(common::payload_for(&id))
                    .with_id(id)
                    .with_key(format!("key-{}", i % 5))
                    .with_header("batch", i.to_string())
            })
            .collect();
        let acks = j
            .append(&topic(), 0, records.clone(), None)
            .await
            .expect("append");
        sent.push(Sent { records, acks });
        // The other partition is never cut: it must come through untouched.
        j.append(&topic(), 1, vec![Record::new(format!("other {i}"))], None)
            .await
            .expect("append");
        i += 1;
    }
    let stored = read_all(&j, &topic(), 0).await;
    j.close().await.expect("close");
    drop(j);
    let segs = common::segments(&common::partition_dir(&src, TOPIC, 0));
    assert!(
        segs.len() >= 3,
        "the fixture spans several segments: {segs:?}"
    );
    let last_segment = segs.last().expect("segments").1.clone();
    let frames = common::frames(&last_segment);
    assert!(
        frames.len() >= 10,
        "the last segment holds many batches: {frames:?}"
    );
    let len = std::fs::metadata(&last_segment).expect("stat").len();
    assert_eq!(
        frames.last().expect("frames").end(),
        len,
        "the fixture has no torn tail"
    );
    Fixture {
        _dir: dir,
        src,
        sent,
        stored,
        last_segment,
        frames,
    }
}

fn last_segment_frames(src: &Path) -> usize {
    let segs = common::segments(&common::partition_dir(src, TOPIC, 0));
    segs.last().map_or(0, |(_, p)| common::frames(p).len())
}

/// Copies the fixture, damages the copy's last segment with `damage`, reopens it, and checks
/// that exactly the records before `keep_until` survived and that appends continue there.
async fn check_damage(f: &Fixture, what: &str, keep_until: Offset, damage: impl FnOnce(&Path)) {
    let dir = tempfile::tempdir().expect("tempdir");
    let copy = dir.path().join("journal");
    common::copy_dir(&f.src, &copy);
    let rel = f.last_segment.strip_prefix(&f.src).expect("inside src");
    let seg = copy.join(rel);
    damage(&seg);

    // Offline, before recovery: a torn tail is reported as such, never as corruption.
    let kept_end = f
        .frames
        .iter()
        .rfind(|fr| fr.next_offset() <= keep_until)
        .map_or(0, FrameInfo::end);
    let torn = std::fs::metadata(&seg).expect("stat").len() > kept_end;
    let report = verify(&copy).unwrap_or_else(|e| panic!("{what}: verify: {e}"));
    assert!(
        report.problems.is_empty(),
        "{what}: a torn tail is not corruption: {report:?}"
    );
    assert_eq!(
        !report.torn_tails.is_empty(),
        torn,
        "{what}: torn tails: {report:?}"
    );
    if let Some(tt) = report.torn_tails.first() {
        assert_eq!(tt.file, seg, "{what}: {tt:?}");
        assert_eq!(
            (tt.offset, tt.position),
            (keep_until, kept_end),
            "{what}: {tt:?}"
        );
    }

    let j = FileJournal::open(&copy).unwrap_or_else(|e| panic!("{what}: open failed: {e}"));
    let t = topic();
    let info = j.describe_topic(&t).await.expect("describe");
    assert_eq!(
        info.partitions[0].next_offset, keep_until,
        "{what}: next_offset"
    );
    assert_eq!(info.partitions[0].first_offset, 0, "{what}: first_offset");
    let got = read_all(&j, &t, 0).await;
    let want: Vec<StoredRecord> = f
        .stored
        .iter()
        .filter(|r| r.offset < keep_until)
        .cloned()
        .collect();
    assert_eq!(got.len(), want.len(), "{what}: number of records kept");
    assert!(
        got == want,
        "{what}: the kept records are exactly the ones before the cut"
    );
    assert_eq!(
        info.partitions[0].last_timestamp,
        want.last().map(|r| r.timestamp),
        "{what}: last_timestamp"
    );
    assert_eq!(
        read_all(&j, &t, 1).await.len(),
        f.sent.len(),
        "{what}: the other partition is whole"
    );

    // Time seeks see only what is kept.
    for r in f.stored.iter().step_by(7) {
        let at = r.timestamp;
        let o = j.offset_for_time(&t, 0, at).await.expect("offset_for_time");
        let expect = want
            .iter()
            .find(|w| w.timestamp >= at)
            .map_or(keep_until, |w| w.offset);
        assert_eq!(o, expect, "{what}: offset_for_time({at:?})");
    }
    assert_eq!(
        j.offset_for_time(&t, 0, Timestamp(i64::MAX))
            .await
            .expect("seek"),
        keep_until
    );

    // Key state is what the kept records say.
    for k in 0..5 {
        let key = format!("key-{k}");
        let last = want
            .iter()
            .rev()
            .find(|r| r.key.as_deref() == Some(key.as_bytes()))
            .map(|r| r.offset);
        let exp = Expectation {
            key: Bytes::from(key.clone()),
            expected: Expected::LastOffset(u64::MAX),
        };
        match j
            .append(
                &t,
                0,
                vec![Record::new("x").with_key(key.clone())],
                Some(exp),
            )
            .await
        {
            Err(Error::Conflict { actual, .. }) => {
                assert_eq!(actual, last, "{what}: {key}'s last offset")
            }
            other => panic!("{what}: expected a conflict, got {other:?}"),
        }
    }

    // Dedup: kept ids are duplicates at their place; lost ids are new again. Re-sending the
    // lost batches in order puts them back at their old offsets.
    let mut next = keep_until;
    for s in &f.sent {
        let out = j
            .append(&t, 0, s.records.clone(), None)
            .await
            .expect("re-send");
        if s.acks[0].offset < keep_until {
            assert_eq!(
                out,
                s.acks
                    .iter()
                    .map(|a| Appended {
                        duplicate: true,
                        ..*a
                    })
                    .collect::<Vec<_>>(),
                "{what}: kept batch is a duplicate"
            );
        } else {
            for (a, want) in out.iter().zip(&s.acks) {
                assert!(!a.duplicate, "{what}: a lost id is new again");
                assert_eq!(
                    a.offset, next,
                    "{what}: appends continue after the kept records"
                );
                assert_eq!(
                    a.offset, want.offset,
                    "{what}: the lost batch goes back to its offset"
                );
                next += 1;
            }
        }
    }
    assert_eq!(next, f.stored.len() as u64);
    j.close().await.expect("close");
    drop(j);

    let report = verify(&copy).unwrap_or_else(|e| panic!("{what}: verify: {e}"));
    assert!(
        report.is_clean() && report.torn_tails.is_empty(),
        "{what}: after recovery: {report:?}"
    );

    // And the repaired log reads back whole after another reopen.
    let j = FileJournal::open(&copy).unwrap_or_else(|e| panic!("{what}: second open: {e}"));
    let again = read_all(&j, &t, 0).await;
    assert_eq!(
        again.len(),
        f.stored.len(),
        "{what}: after re-sending and reopening"
    );
    for (a, b) in again.iter().zip(&f.stored) {
        assert_eq!(
            (a.offset, &a.id, &a.payload),
            (b.offset, &b.id, &b.payload),
            "{what}"
        );
    }
    j.close().await.expect("close");
}

/// The offset the partition keeps when the last segment is cut at `cut`.
fn kept_for_cut(f: &Fixture, cut: u64) -> Offset {
    let first = f.frames[0].base;
    f.frames
        .iter()
        .take_while(|fr| fr.end() <= cut)
        .last()
        .map_or(first, FrameInfo::next_offset)
}

fn truncate(path: &Path, len: u64) {
    let file = std::fs::OpenOptions::new()
        .write(true)
        .open(path)
        .expect("open segment");
    file.set_len(len).expect("truncate");
}

fn append_bytes(path: &Path, bytes: &[u8]) {
    use std::io::Write;
    let mut file = std::fs::OpenOptions::new()
        .append(true)
        .open(path)
        .expect("open segment");
    file.write_all(bytes).expect("append garbage");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn truncating_the_last_segment_anywhere_keeps_the_whole_batches_before_the_cut() {
    let f = fixture().await;
    let len = f.frames.last().expect("frames").end();
    let mut cuts: Vec<u64> = vec![0, 1, 3, 4, 8, 28, 29, len - 1];
    for fr in f.frames.iter().skip(f.frames.len() / 2).take(3) {
        cuts.extend([
            fr.position,
            fr.position + 1,
            fr.position + 4,
            fr.end() - 1,
            fr.end(),
        ]);
    }
    let mut rng = rand::rng();
    for _ in 0..12 {
        cuts.push(rng.random_range(1..len));
    }
    cuts.sort_unstable();
    cuts.dedup();
    for cut in cuts {
        let keep = kept_for_cut(&f, cut);
        let what = format!("cut at byte {cut} of {len}");
        check_damage(&f, &what, keep, |p| truncate(p, cut)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_after_the_last_batch_is_dropped() {
    let f = fixture().await;
    let all = f.stored.len() as u64;
    let mut rng = rand::rng();
    let random: Vec<u8> = (0..333).map(|_| rng.random()).collect();
    let mut plausible = Vec::new();
    // A frame header that promises more bytes than follow.
    plausible.extend_from_slice(&1000u32.to_le_bytes());
    plausible.extend_from_slice(&[0u8; 40]);
    // A whole frame with a wrong CRC.
    let mut bad_crc = Vec::new();
    let body_len = 25u32 + 10;
    bad_crc.extend_from_slice(&body_len.to_le_bytes());
    bad_crc.extend_from_slice(&0xdead_beefu32.to_le_bytes());
    bad_crc.extend_from_slice(&all.to_le_bytes());
    bad_crc.extend_from_slice(&0i64.to_le_bytes());
    bad_crc.extend_from_slice(&1u32.to_le_bytes());
    bad_crc.push(1);
    bad_crc.extend_from_slice(&[0u8; 10]);
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("4 KiB of zeros (preallocated space)", vec![0u8; 4096]),
        ("one zero byte", vec![0u8]),
        ("random bytes", random),
        ("a frame header promising more than follows", plausible),
        ("a whole frame with a bad CRC", bad_crc),
    ];
    for (what, bytes) in cases {
        check_damage(&f, what, all, |p| append_bytes(p, &bytes)).await;
    }
    // Cut inside the last batch and garbage after the cut.
    let last = f.frames.last().expect("frames");
    let cut = last.position + last.len / 2;
    let keep = kept_for_cut(&f, cut);
    check_damage(&f, "a cut batch followed by zeros", keep, |p| {
        truncate(p, cut);
        append_bytes(p, &[0u8; 512]);
    })
    .await;
}
