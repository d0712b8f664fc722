//! The `.index` and `.keys` files next to a sealed segment are derived data: when one is
//! oversized (a sparse 1 GiB file), garbage, or well-formed but pointing outside its
//! segment, the journal ignores it and rebuilds it from the log. Open succeeds without
//! reading the oversized file into memory, reads from every offset and by time are right,
//! and every key's last offset is right.
//!
//! Layouts (as documented in the backend's sidecar module), all integers little-endian:
//!
//! ```text
//! .index: "SYIX" u32 version (1) | u64 base | u64 log_len | u64 next_offset | i64 max_ts
//!         | u64 count | count * (u32 rel_offset, u32 position, i64 timestamp) | u32 crc32c
//! .keys:  "SYKY" u32 version (2) | u64 base | u64 log_len | u64 count
//!         | count * (u128 key hash, u64 offset) | u32 crc32c
//! ```
//!
//! `.keys` entries are sorted by key hash; version 1 sorted them by offset.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use switchyard_journal::conformance::read_all;
use switchyard_journal::file::FileJournal;
use switchyard_journal::{
    Durability, Error, Expectation, Expected, Journal, Offset, ReadLimits, Record, StoredRecord,
    TopicConfig, TopicName,
};

const TOPIC: &str = "sidecar.v1";
const INDEX_HEADER: usize = 48;
const INDEX_ENTRY: usize = 16;
const KEYS_HEADER: usize = 32;
const KEY_ENTRY: usize = 24;
/// A sidecar this large must not be read into memory.
const HUGE: u64 = 1 << 30;

fn topic() -> TopicName {
    TopicName::new(TOPIC).expect("topic")
}

fn key_of(i: usize) -> String {
    format!("k{}", i / 2)
}

struct Fixture {
    _dir: tempfile::TempDir,
    src: PathBuf,
    stored: Vec<StoredRecord>,
    /// Each key's last offset.
    last: BTreeMap<String, Offset>,
}

/// A partition of many sealed segments, each with a sparse index of several entries, and
/// keys whose last records are spread over all of them.
async fn fixture() -> Fixture {
    let dir = tempfile::tempdir().expect("tempdir");
    let src = dir.path().join("journal");
    let j = FileJournal::open(&src).expect("open");
    let config = TopicConfig {
        durability: Durability::Os,
        segment_bytes: 4096,
        index_interval_bytes: 256,
        ..TopicConfig::default()
    };
    j.create_topic(&topic(), config).await.expect("create");
    let mut last = BTreeMap::new();
    for i in 0..80usize {
        let id = format!("rec-{i}");
        let rec = Record::new(common::payload_for(&id))
            .with_id(id)
            .with_key(key_of(i));
        let a = j
            .append(&topic(), 0, vec![rec], None)
            .await
            .expect("append");
        last.insert(key_of(i), a[0].offset);
    }
    let stored = read_all(&j, &topic(), 0).await;
    assert_eq!(stored.len(), 80);
    j.close().await.expect("close");
    Fixture {
        _dir: dir,
        src,
        stored,
        last,
    }
}

fn sealed_segments(root: &Path) -> Vec<(u64, PathBuf)> {
    let mut segs = common::segments(&common::partition_dir(root, TOPIC, 0));
    segs.pop();
    segs
}

fn with_crc(mut body: Vec<u8>) -> Vec<u8> {
    let crc = crc32c::crc32c(&body);
    body.extend_from_slice(&crc.to_le_bytes());
    body
}

fn body(path: &Path) -> Vec<u8> {
    let mut b = std::fs::read(path).expect("read sidecar");
    let n = b.len() - 4;
    assert_eq!(
        crc32c::crc32c(&b[..n]).to_le_bytes(),
        b[n..],
        "{} is valid to begin with",
        path.display()
    );
    b.truncate(n);
    b
}

/// Rewrites entry `i` of a valid `.index` with `edit`, keeping it well-formed.
fn edit_index_entry(path: &Path, i: usize, edit: impl Fn(&mut [u8])) {
    let mut b = body(path);
    let at = INDEX_HEADER + i * INDEX_ENTRY;
    assert!(at + INDEX_ENTRY <= b.len(), "{}: entry {i}", path.display());
    edit(&mut b[at..at + INDEX_ENTRY]);
    std::fs::write(path, with_crc(b)).expect("write index");
}

/// Rewrites a valid `.keys` with `edit` applied to its entries, keeping the CRC valid.
fn edit_keys(path: &Path, edit: impl Fn(&mut Vec<[u8; KEY_ENTRY]>)) {
    let mut b = body(path);
    let mut entries: Vec<[u8; KEY_ENTRY]> = b[KEYS_HEADER..]
        .chunks_exact(KEY_ENTRY)
        .map(|e| e.try_into().expect("entry"))
        .collect();
    assert!(entries.len() >= 2, "{}: several keys", path.display());
    edit(&mut entries);
    b.truncate(KEYS_HEADER);
    for e in entries {
        b.extend_from_slice(&e);
    }
    std::fs::write(path, with_crc(b)).expect("write keys");
}

fn index_entries(path: &Path) -> usize {
    (body(path).len() - INDEX_HEADER) / INDEX_ENTRY
}

fn set_u32(e: &mut [u8], at: usize, v: u32) {
    e[at..at + 4].copy_from_slice(&v.to_le_bytes());
}

fn log_of(sidecar: &Path) -> PathBuf {
    sidecar.with_extension("log")
}

fn log_len(sidecar: &Path) -> u64 {
    std::fs::metadata(log_of(sidecar)).expect("log").len()
}

/// The peak resident memory of this process, in bytes.
fn peak_rss() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    let line = status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .expect("VmHWM");
    let kb: u64 = line
        .split_whitespace()
        .nth(1)
        .and_then(|v| v.parse().ok())
        .expect("VmHWM value");
    kb * 1024
}

type Damage = Box<dyn Fn(&Path)>;

/// Every way of spoiling a sidecar, each applied to one sealed segment's file.
fn damages() -> Vec<(&'static str, &'static str, Damage)> {
    vec![
        (
            "a sparse 1 GiB .index",
            "index",
            Box::new(|p: &Path| {
                // Sized like an index of 2^26 entries, so that only its size gives it away.
                let f = std::fs::File::create(p).expect("create");
                f.set_len((INDEX_HEADER + 4) as u64 + INDEX_ENTRY as u64 * (1 << 26))
                    .expect("set_len");
            }),
        ),
        (
            "a sparse 1 GiB .keys",
            "keys",
            Box::new(|p: &Path| {
                let f = std::fs::File::create(p).expect("create");
                f.set_len((KEYS_HEADER + 4) as u64 + KEY_ENTRY as u64 * (HUGE / 24))
                    .expect("set_len");
            }),
        ),
        (
            "a .index of random bytes",
            "index",
            Box::new(|p: &Path| {
                let len = std::fs::metadata(p).expect("index").len() as usize;
                let junk: Vec<u8> = (0..len).map(|_| rand::random::<u8>()).collect();
                std::fs::write(p, junk).expect("write");
            }),
        ),
        (
            "a .keys of random bytes",
            "keys",
            Box::new(|p: &Path| {
                let len = std::fs::metadata(p).expect("keys").len() as usize;
                let junk: Vec<u8> = (0..len).map(|_| rand::random::<u8>()).collect();
                std::fs::write(p, junk).expect("write");
            }),
        ),
        (
            "a .index whose last entry points past the end of the log",
            "index",
            Box::new(|p: &Path| {
                let past = log_len(p) as u32 + 100;
                edit_index_entry(p, index_entries(p) - 1, |e| set_u32(e, 4, past));
            }),
        ),
        (
            "a .index whose first entry points past the end of the log",
            "index",
            Box::new(|p: &Path| {
                let past = log_len(p) as u32 + 1;
                edit_index_entry(p, 0, |e| set_u32(e, 4, past));
            }),
        ),
        (
            "a .index whose last entry names an offset past the segment",
            "index",
            Box::new(|p: &Path| {
                edit_index_entry(p, index_entries(p) - 1, |e| set_u32(e, 0, 1_000_000));
            }),
        ),
        (
            "a .index whose entries are out of order",
            "index",
            Box::new(|p: &Path| {
                let n = index_entries(p);
                assert!(n >= 2, "{}: several index entries", p.display());
                let mut b = body(p);
                let (a, z) = (INDEX_HEADER, INDEX_HEADER + (n - 1) * INDEX_ENTRY);
                let first: Vec<u8> = b[a..a + INDEX_ENTRY].to_vec();
                let lastb: Vec<u8> = b[z..z + INDEX_ENTRY].to_vec();
                b[a..a + INDEX_ENTRY].copy_from_slice(&lastb);
                b[z..z + INDEX_ENTRY].copy_from_slice(&first);
                std::fs::write(p, with_crc(b)).expect("write");
            }),
        ),
        (
            "a .index that says it has more entries than it holds",
            "index",
            Box::new(|p: &Path| {
                let mut b = body(p);
                let n = u64::from_le_bytes(b[40..48].try_into().expect("8"));
                b[40..48].copy_from_slice(&(n + 1).to_le_bytes());
                std::fs::write(p, with_crc(b)).expect("write");
            }),
        ),
        (
            "a missing .keys",
            "keys",
            Box::new(|p: &Path| std::fs::remove_file(p).expect("remove")),
        ),
        (
            "a truncated .keys",
            "keys",
            Box::new(|p: &Path| {
                let len = std::fs::metadata(p).expect("keys").len();
                let f = std::fs::OpenOptions::new()
                    .write(true)
                    .open(p)
                    .expect("open");
                f.set_len(len - KEY_ENTRY as u64).expect("set_len");
            }),
        ),
        (
            "a .keys with a flipped byte",
            "keys",
            Box::new(|p: &Path| {
                let mut b = std::fs::read(p).expect("read");
                b[KEYS_HEADER + 5] ^= 0x04;
                std::fs::write(p, b).expect("write");
            }),
        ),
        (
            "a version 1 .keys (sorted by offset) with a valid CRC",
            "keys",
            Box::new(|p: &Path| {
                edit_keys(p, |e| {
                    e.sort_by_key(|e| u64::from_le_bytes(e[16..].try_into().expect("8")))
                });
                let mut b = body(p);
                b[4..8].copy_from_slice(&1u32.to_le_bytes());
                std::fs::write(p, with_crc(b)).expect("write");
            }),
        ),
        (
            "a .keys whose entries are out of hash order, with a valid CRC",
            "keys",
            Box::new(|p: &Path| {
                edit_keys(p, |e| {
                    let n = e.len();
                    e.swap(0, n - 1)
                })
            }),
        ),
        (
            "a .keys with an entry before the segment's base",
            "keys",
            Box::new(|p: &Path| {
                let mut b = body(p);
                let base = u64::from_le_bytes(b[8..16].try_into().expect("8"));
                let at = KEYS_HEADER + 16;
                b[at..at + 8].copy_from_slice(&(base - 1).to_le_bytes());
                std::fs::write(p, with_crc(b)).expect("write");
            }),
        ),
    ]
}

/// Everything a reader and a writer can observe, checked against the fixture.
async fn check(j: &FileJournal, f: &Fixture, what: &str) {
    let t = topic();
    assert_eq!(read_all(j, &t, 0).await, f.stored, "{what}: read from 0");
    // From every offset, through the index's seek.
    for r in &f.stored {
        let limits = ReadLimits {
            max_records: 1,
            max_bytes: 1 << 20,
        };
        let b = j
            .read(&t, 0, r.offset, limits)
            .await
            .unwrap_or_else(|e| panic!("{what}: read from {}: {e}", r.offset));
        assert_eq!(b.records.as_slice(), std::slice::from_ref(r), "{what}");
    }
    // By time, through the index's timestamps.
    for r in &f.stored {
        let at = j
            .offset_for_time(&t, 0, r.timestamp)
            .await
            .unwrap_or_else(|e| panic!("{what}: offset_for_time: {e}"));
        let first = f
            .stored
            .iter()
            .find(|s| s.timestamp >= r.timestamp)
            .expect("a record");
        assert_eq!(at, first.offset, "{what}: offset for {:?}", r.timestamp);
    }
    // Each key's last offset, as a conflicting expectation reports it (nothing is written).
    for (key, last) in &f.last {
        let expectation = Expectation {
            key: key.clone().into(),
            expected: Expected::NoRecord,
        };
        match j
            .append(&t, 0, vec![Record::new("x")], Some(expectation))
            .await
        {
            Err(Error::Conflict { actual, .. }) => {
                assert_eq!(actual, Some(*last), "{what}: last offset of key {key}")
            }
            other => panic!("{what}: key {key}: expected a conflict, got {other:?}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_sidecars_are_ignored_and_rebuilt() {
    let f = fixture().await;
    let segs = sealed_segments(&f.src);
    assert!(segs.len() >= 6, "many sealed segments: {}", segs.len());
    for (what, ext, damage) in damages() {
        // An early, a middle and the last sealed segment (not the first: its base is 0).
        for seg in [1, segs.len() / 2, segs.len() - 1] {
            let what = format!("{what} (segment {seg})");
            let dir = tempfile::tempdir().expect("tempdir");
            let copy = dir.path().join("journal");
            common::copy_dir(&f.src, &copy);
            let log = &sealed_segments(&copy)[seg].1;
            let sidecar = log.with_extension(ext);
            damage(&sidecar);
            // (The huge ones are told apart by their size: they are never read whole.)
            let damaged_len = std::fs::metadata(&sidecar).map_or(0, |m| m.len());
            let damaged = (damaged_len < 1 << 20)
                .then(|| std::fs::read(&sidecar).ok())
                .flatten();

            let j = FileJournal::open(&copy).unwrap_or_else(|e| panic!("{what}: open: {e}"));
            // Rebuilt: small again, and not what was there.
            let now = std::fs::metadata(&sidecar).expect("sidecar").len();
            assert!(
                now < 1 << 20,
                "{what}: {} is {now} bytes",
                sidecar.display()
            );
            if let Some(damaged) = damaged {
                assert_ne!(
                    std::fs::read(&sidecar).expect("read"),
                    damaged,
                    "{what}: {} was not rebuilt",
                    sidecar.display()
                );
            }
            check(&j, &f, &what).await;
            j.close().await.expect("close");

            // And it stays good: a second open reads the same.
            let j = FileJournal::open(&copy).unwrap_or_else(|e| panic!("{what}: reopen: {e}"));
            check(&j, &f, &what).await;
            j.close().await.expect("close");
        }
    }
    // The 1 GiB files were never read into memory.
    let peak = peak_rss();
    assert!(peak < HUGE / 4, "peak resident memory {peak} bytes");
}

/// An index entry that passes every check at open but points one byte into its batch:
/// reads, seeks by offset and by time fall back to scanning the segment and return the right
/// records, never a false corruption.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_index_entry_inside_a_batch_is_not_trusted() {
    let f = fixture().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let copy = dir.path().join("journal");
    common::copy_dir(&f.src, &copy);
    let segs = sealed_segments(&copy);
    let index = segs[1].1.with_extension("index");
    let last = index_entries(&index) - 1;
    edit_index_entry(&index, last, |e| {
        let pos = u32::from_le_bytes([e[4], e[5], e[6], e[7]]);
        set_u32(e, 4, pos + 1);
    });
    let j = FileJournal::open(&copy).expect("open");
    check(&j, &f, "an index entry one byte into its batch").await;
    j.close().await.expect("close");
}
