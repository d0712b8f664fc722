//! A roll to a new segment that fails part way (here the process runs out of file
//! descriptors, RLIMIT_NOFILE, at each step of the roll in turn: creating the new segment
//! file, opening its read handle, syncing the directory, ...) must not lose an acknowledged
//! record nor hand its offset out again. The partition may stop taking appends
//! (`Error::Failed`) until reopened; after reopening, every record that was acknowledged
//! is readable at its offset, and new appends get new offsets.
//!
//! RLIMIT_NOFILE is process-wide, so this file holds a single test.

mod common;

use std::collections::BTreeMap;
use switchyard_journal::conformance::read_all;
use switchyard_journal::file::{FileJournal, verify};
use switchyard_journal::{
    Durability, Error, Journal, Offset, ReadLimits, Record, TopicConfig, TopicName,
};

/// How many file descriptors this process has open.
fn open_fds() -> u64 {
    // read_dir's own descriptor is counted and closed again afterwards.
    let n = std::fs::read_dir("/proc/self/fd")
        .expect("/proc/self/fd")
        .count() as u64;
    n - 1
}

/// Sets the soft limit on open files, returning the previous one.
#[allow(unsafe_code)]
fn limit_open_files(soft: u64) -> u64 {
    // SAFETY: plain libc calls with valid pointers; the hard limit is left unchanged.
    unsafe {
        let mut old = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        assert_eq!(libc::getrlimit(libc::RLIMIT_NOFILE, &mut old), 0);
        let lim = libc::rlimit {
            rlim_cur: soft,
            rlim_max: old.rlim_max,
        };
        assert_eq!(libc::setrlimit(libc::RLIMIT_NOFILE, &lim), 0, "setrlimit");
        old.rlim_cur
    }
}

fn topic() -> TopicName {
    TopicName::new("roll.v1").expect("topic")
}

/// One run: a segment nearly full, then an append that needs a roll while only `spare`
/// more descriptors can be opened, then more appends with the limit lifted.
/// Returns what the append that needed the roll got.
async fn run(spare: u64, durability: Durability) -> String {
    let dir = tempfile::tempdir().expect("tempdir");
    let jdir = dir.path().join("journal");
    let what = format!("{spare} spare descriptors, durability {durability}");
    // What was acknowledged: offset -> payload.
    let mut acked: BTreeMap<Offset, Vec<u8>> = BTreeMap::new();
    let outcome;
    {
        let j = FileJournal::open(&jdir).expect("open");
        let config = TopicConfig {
            durability,
            segment_bytes: 4096,
            dedup_window_ms: 0,
            ..TopicConfig::default()
        };
        j.create_topic(&topic(), config).await.expect("create");
        let first = vec![1u8; 3000];
        let a = j
            .append(&topic(), 0, vec![Record::new(first.clone())], None)
            .await
            .expect("append");
        acked.insert(a[0].offset, first);

        // Does not fit: the writer seals the segment and rolls, with few descriptors.
        let second = vec![2u8; 2000];
        let old = limit_open_files(open_fds() + spare);
        let r = j
            .append(&topic(), 0, vec![Record::new(second.clone())], None)
            .await;
        limit_open_files(old);
        outcome = match &r {
            Ok(a) => format!("acknowledged at {}", a[0].offset),
            Err(e) => e.to_string(),
        };
        if let Ok(a) = r {
            acked.insert(a[0].offset, second);
        }

        // More appends: small ones that still fit the old segment and large ones that do
        // not. Each either fails (clearly) or is acknowledged at an offset never given out.
        for (i, len) in [20usize, 3500, 20, 20, 3900, 20].into_iter().enumerate() {
            let payload = vec![10 + i as u8; len];
            match j
                .append(&topic(), 0, vec![Record::new(payload.clone())], None)
                .await
            {
                Ok(a) => {
                    assert!(
                        !acked.contains_key(&a[0].offset),
                        "{what}: offset {} acknowledged twice",
                        a[0].offset
                    );
                    acked.insert(a[0].offset, payload);
                }
                Err(e) => assert!(
                    matches!(e, Error::Failed { .. } | Error::Io { .. }),
                    "{what}: {e:?}"
                ),
            }
        }
        let _ = j.close().await;
    }

    // Reopened: every acknowledged record is at its offset.
    let report = verify(&jdir).expect("verify");
    assert!(report.is_clean(), "{what}: {report:?}");
    let j = FileJournal::open(&jdir).expect("reopen");
    let all = read_all(&j, &topic(), 0).await;
    let by_offset: BTreeMap<Offset, Vec<u8>> =
        all.iter().map(|r| (r.offset, r.payload.to_vec())).collect();
    for (offset, payload) in &acked {
        assert_eq!(
            by_offset.get(offset).map(|p| p.len()),
            Some(payload.len()),
            "{what}: the record acknowledged at {offset} after reopening; partition holds {:?}",
            by_offset.keys().collect::<Vec<_>>()
        );
        assert_eq!(
            by_offset.get(offset),
            Some(payload),
            "{what}: offset {offset}"
        );
        let b = j
            .read(&topic(), 0, *offset, ReadLimits::default())
            .await
            .expect("read");
        assert_eq!(b.records.first().map(|r| r.offset), Some(*offset), "{what}");
    }
    // Nothing unacknowledged came back either: only acknowledged offsets exist.
    for offset in by_offset.keys() {
        assert!(
            acked.contains_key(offset),
            "{what}: unacknowledged record at {offset}"
        );
    }
    // New appends get new offsets.
    let last = *acked.keys().last().expect("acked");
    let a = j
        .append(&topic(), 0, vec![Record::new("after reopen")], None)
        .await
        .expect("append after reopen");
    assert!(a[0].offset > last, "{what}: {a:?} after {last}");
    j.close().await.expect("close");
    outcome
}

#[tokio::test(flavor = "current_thread")]
async fn a_failed_roll_loses_no_acknowledged_record() {
    // From no spare descriptor (the roll cannot even create the file) up to enough for the
    // whole roll to succeed.
    let mut outcomes = Vec::new();
    for durability in [Durability::Os, Durability::Always] {
        for spare in 0..6 {
            let outcome = run(spare, durability).await;
            eprintln!(
                "{spare} spare descriptors, {durability}: the append needing a roll -> {outcome}"
            );
            outcomes.push(outcome);
        }
    }
    assert!(
        outcomes.iter().any(|o| o.contains("acknowledged")),
        "with enough descriptors the roll succeeds: {outcomes:?}"
    );
    assert!(
        outcomes.iter().any(|o| !o.contains("acknowledged")),
        "with too few descriptors the roll fails: {outcomes:?}"
    );
}
