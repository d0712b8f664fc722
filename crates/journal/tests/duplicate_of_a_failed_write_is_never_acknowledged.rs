//! A record whose id is still in flight on another partition is answered as a duplicate
//! only once that original is written. When the original's write fails instead (here with
//! EFBIG: the process's file size limit, RLIMIT_FSIZE, is below the record's size and
//! SIGXFSZ is ignored), the failed write's offset goes to the next record on that
//! partition; the duplicate append must never be acknowledged against it. It fails with
//! `Error::Failed` asking for a retry, and the retry writes the record exactly once.
//!
//! RLIMIT_FSIZE is process-wide, so this file holds a single test.

use bytes::Bytes;
use std::collections::HashMap;
use std::time::Duration;
use switchyard_journal::conformance::read_all;
use switchyard_journal::file::FileJournal;
use switchyard_journal::{
    Appended, Durability, Error, Journal, ReadLimits, Record, StoredRecord, TopicConfig, TopicName,
};

/// The file size limit, far below the original record's size.
const FSIZE_LIMIT: u64 = 8 << 20;
const BIG: usize = 16 << 20;
/// Attempts at landing the duplicate between the original's placement and its failure,
/// at a spread of delays; the test stops early once the window was hit a few times.
const ATTEMPTS: u32 = 120;
const WANTED_HITS: u32 = 3;

/// Sets the soft file size limit of this process (no safe API for `setrlimit`).
#[allow(unsafe_code)]
fn limit_file_size(limit: u64) {
    // SAFETY: plain libc calls with valid arguments; SIG_IGN for SIGXFSZ makes an
    // oversized write fail with EFBIG instead of killing the process.
    unsafe {
        libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
        let mut old = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        assert_eq!(libc::getrlimit(libc::RLIMIT_FSIZE, &mut old), 0);
        let lim = libc::rlimit {
            rlim_cur: limit,
            rlim_max: old.rlim_max,
        };
        assert_eq!(libc::setrlimit(libc::RLIMIT_FSIZE, &lim), 0, "setrlimit");
    }
}

fn is_file_too_large(e: &Error) -> bool {
    matches!(e, Error::Io { source, .. }
        if source.kind() == std::io::ErrorKind::FileTooLarge
            || source.raw_os_error() == Some(libc::EFBIG))
        || e.to_string().contains("File too large")
}

async fn record_at(j: &FileJournal, t: &TopicName, a: &Appended) -> StoredRecord {
    let limits = ReadLimits {
        max_records: 1,
        max_bytes: 1 << 20,
    };
    let batch = j
        .read(t, a.partition, a.offset, limits)
        .await
        .expect("read an acknowledged offset");
    let r = batch.records.into_iter().next().expect("a record");
    assert_eq!(r.offset, a.offset, "the record at the acknowledged offset");
    r
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_duplicate_of_a_failed_write_is_never_acknowledged() {
    let dir = tempfile::tempdir().expect("tempdir");
    let j = FileJournal::open(dir.path().join("journal")).expect("open");
    let t = TopicName::new("dups.v1").expect("topic");
    let config = TopicConfig {
        partitions: 2,
        durability: Durability::Os,
        dedup_window_ms: 600_000,
        ..TopicConfig::default()
    };
    j.create_topic(&t, config).await.expect("create");
    limit_file_size(FSIZE_LIMIT);
    let big = Bytes::from(vec![7u8; BIG]);

    // Every acknowledged write (not duplicates): id -> where it was acknowledged.
    let mut acked: HashMap<String, Appended> = HashMap::new();
    let mut hits = 0u32;
    for attempt in 0..ATTEMPTS {
        if hits >= WANTED_HITS {
            break;
        }
        let id = format!("x-{attempt}");
        let original = {
            let (j, t, rec) = (
                j.clone(),
                t.clone(),
                Record::new(big.clone()).with_id(id.clone()),
            );
            tokio::spawn(async move { j.append(&t, 0, vec![rec], None).await })
        };
        tokio::time::sleep(Duration::from_micros(250 * u64::from(attempt % 60))).await;
        let duplicate = {
            let (j, t, rec) = (j.clone(), t.clone(), Record::new("dup").with_id(id.clone()));
            tokio::spawn(async move { j.append(&t, 1, vec![rec], None).await })
        };

        // The original cannot be written: EFBIG. (Unless the duplicate got in first: then
        // the original is the duplicate of that record.)
        match original.await.expect("join") {
            Err(e) => assert!(is_file_too_large(&e), "attempt {attempt}: {e}"),
            Ok(a) => {
                assert!(
                    a[0].duplicate && a[0].partition == 1,
                    "attempt {attempt}: a {BIG}-byte write past RLIMIT_FSIZE succeeded: {a:?}"
                );
            }
        }
        let answer = tokio::time::timeout(Duration::from_secs(30), duplicate)
            .await
            .expect("the duplicate append never returned")
            .expect("join");
        match answer {
            Err(Error::Failed {
                partition, reason, ..
            }) => {
                assert_eq!(partition, 0, "the error names the original's partition");
                assert!(
                    reason.contains("retry"),
                    "the error says to retry: {reason}"
                );
                hits += 1;
                eprintln!("attempt {attempt}: the duplicate append failed: {reason}");
                // The retry is not a duplicate of anything: it is written, once.
                let retry = j
                    .append(&t, 1, vec![Record::new("dup").with_id(id.clone())], None)
                    .await
                    .expect("retry");
                assert_eq!(retry.len(), 1);
                assert!(!retry[0].duplicate, "attempt {attempt}: retry {retry:?}");
                assert_eq!(retry[0].partition, 1);
                acked.insert(id.clone(), retry[0]);
            }
            Err(e) => panic!("attempt {attempt}: the duplicate append failed with {e:?}"),
            Ok(a) => {
                assert_eq!(a.len(), 1);
                if a[0].duplicate {
                    // Acknowledged as a duplicate: the record there must be this id.
                    let r = record_at(&j, &t, &a[0]).await;
                    assert_eq!(
                        r.id.as_deref(),
                        Some(id.as_str()),
                        "attempt {attempt}: duplicate acknowledged at {a:?}, which holds {r:?}"
                    );
                    if a[0].partition == 0 {
                        hits += 1;
                    }
                } else {
                    assert_eq!(a[0].partition, 1);
                    acked.insert(id.clone(), a[0]);
                }
            }
        }
        // The duplicate has answered without anything else reaching partition 0 (a failed
        // write wakes it). Partition 0 goes on: its next record takes the failed offset.
        let y = j
            .append(&t, 0, vec![Record::new(format!("y-{attempt}"))], None)
            .await
            .expect("append after a failed write");
        acked.insert(format!("y-{attempt}"), y[0]);
    }
    limit_file_size(libc::RLIM_INFINITY);
    eprintln!("the duplicate landed in the original's window {hits} times");
    assert!(
        hits > 0,
        "in {ATTEMPTS} attempts the duplicate never arrived while the original was in flight"
    );

    // Every acknowledged record is where it was acknowledged, and each id is there once.
    for (id, a) in &acked {
        let r = record_at(&j, &t, a).await;
        if let Some(rid) = r.id.as_deref() {
            assert_eq!(rid, id, "{a:?}");
        } else {
            assert_eq!(&r.payload[..], id.as_bytes(), "{a:?}");
        }
    }
    let mut seen: HashMap<String, usize> = HashMap::new();
    for p in 0..2 {
        for r in read_all(&j, &t, p).await {
            assert!(
                r.payload.len() < BIG,
                "a failed write became readable: {p}/{}",
                r.offset
            );
            if let Some(id) = r.id {
                *seen.entry(id).or_default() += 1;
            }
        }
    }
    for (id, n) in &seen {
        assert_eq!(*n, 1, "id {id} is stored {n} times");
    }
    let written = acked.keys().filter(|k| k.starts_with("x-")).count();
    assert_eq!(
        seen.len(),
        written,
        "exactly the acknowledged ids are stored"
    );
    j.close().await.expect("close");
}
