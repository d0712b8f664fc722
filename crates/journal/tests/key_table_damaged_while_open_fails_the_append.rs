//! A sealed segment's `.keys` is validated at open and searched on demand afterwards. If it
//! is damaged while the journal is open (cut short, entries out of order), an expectation
//! whose lookup reaches it fails with a corruption error naming the file, and writes
//! nothing: it is never taken for "no record for this key", which would let a conflicting
//! append through. Lookups answered before reaching it are unaffected, and a reopen
//! rebuilds the file from the log.

mod common;

use bytes::Bytes;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use switchyard_journal::file::FileJournal;
use switchyard_journal::{
    Durability, Error, Expectation, Expected, Journal, Offset, Record, TopicConfig, TopicName,
};

const KEYS_HEADER: u64 = 32;
const KEY_ENTRY: u64 = 24;

fn topic() -> TopicName {
    TopicName::new("keys.damaged").expect("topic")
}

fn expect(key: &str, expected: Expected) -> Option<Expectation> {
    Some(Expectation {
        key: Bytes::from(key.to_owned()),
        expected,
    })
}

/// Keys `k0..k199`, each appended once, over many small segments; closed.
async fn fixture(dir: &Path) -> BTreeMap<String, Offset> {
    let j = FileJournal::open(dir).expect("open");
    let config = TopicConfig {
        partitions: 1,
        durability: Durability::Os,
        segment_bytes: 4096,
        ..TopicConfig::default()
    };
    j.create_topic(&topic(), config).await.expect("create");
    let mut last = BTreeMap::new();
    for i in 0..200 {
        let k = format!("k{i}");
        let rec = Record::new(vec![b'v'; 100]).with_key(k.clone());
        let a = j
            .append(&topic(), 0, vec![rec], expect(&k, Expected::NoRecord))
            .await
            .expect("append");
        last.insert(k, a[0].offset);
    }
    j.close().await.expect("close");
    last
}

fn segments(dir: &Path) -> Vec<(u64, PathBuf)> {
    common::segments(&common::partition_dir(dir, topic().as_str(), 0))
}

async fn next_offset(j: &FileJournal) -> Offset {
    j.describe_topic(&topic())
        .await
        .expect("describe")
        .partitions[0]
        .next_offset
}

/// An append expecting `expected` for `key`, which must fail with a corruption error
/// naming `keys`, and write nothing.
async fn fails_on(j: &FileJournal, key: &str, expected: Expected, keys: &Path, what: &str) {
    let before = next_offset(j).await;
    let res = j
        .append(
            &topic(),
            0,
            vec![Record::new("x").with_key(key.to_owned())],
            expect(key, expected),
        )
        .await;
    match res {
        Err(Error::Corrupt {
            ref path,
            ref reason,
            ..
        }) => {
            assert_eq!(path, keys, "{what}: names the file: {reason}");
            assert!(
                reason.contains("reopen"),
                "{what}: says what to do: {reason}"
            );
        }
        other => panic!("{what}: {key} expecting {expected:?}: expected corruption, got {other:?}"),
    }
    assert_eq!(next_offset(j).await, before, "{what}: nothing was written");
}

async fn last_offset(j: &FileJournal, key: &str) -> Option<Offset> {
    let res = j
        .append(
            &topic(),
            0,
            vec![Record::new("x")],
            expect(key, Expected::LastOffset(u64::MAX)),
        )
        .await;
    match res {
        Err(Error::Conflict { actual, .. }) => actual,
        other => panic!("{key}: expected a conflict, got {other:?}"),
    }
}

/// Damages the `.keys` of sealed segment `seg` in place (so the open handle sees it).
fn damage(dir: &Path, seg: usize, how: &str) -> PathBuf {
    use std::os::unix::fs::FileExt;
    let keys = segments(dir)[seg].1.with_extension("keys");
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&keys)
        .expect("open keys");
    let len = f.metadata().expect("stat").len();
    let count = (len - KEYS_HEADER - 4) / KEY_ENTRY;
    assert!(count >= 2, "several keys in segment {seg}");
    match how {
        "cut short" => f.set_len(KEYS_HEADER + KEY_ENTRY).expect("set_len"),
        "out of order" => {
            let (a, b) = (KEYS_HEADER, KEYS_HEADER + (count - 1) * KEY_ENTRY);
            let mut first = [0u8; KEY_ENTRY as usize];
            let mut last = [0u8; KEY_ENTRY as usize];
            f.read_exact_at(&mut first, a).expect("read");
            f.read_exact_at(&mut last, b).expect("read");
            f.write_all_at(&last, a).expect("write");
            f.write_all_at(&first, b).expect("write");
        }
        other => panic!("{other}"),
    }
    keys
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_table_damaged_while_open_fails_the_append_and_is_rebuilt_on_reopen() {
    for how in ["cut short", "out of order"] {
        let dir = tempfile::tempdir().expect("tempdir");
        let last = fixture(dir.path()).await;
        let segs = segments(dir.path());
        assert!(segs.len() >= 6, "many segments: {}", segs.len());
        // Damage a middle sealed segment, after opening (nothing is cached yet).
        let seg = segs.len() / 2;
        let (seg_base, next_base) = (segs[seg].0, segs[seg + 1].0);
        let j = FileJournal::open(dir.path()).expect("open");
        let keys = damage(dir.path(), seg, how);
        let what = format!("a .keys {how}");

        // Keys of older segments, and keys with no record, are searched through it.
        let older = last
            .iter()
            .find(|(_, o)| **o < seg_base)
            .expect("an older key");
        fails_on(&j, older.0, Expected::LastOffset(*older.1), &keys, &what).await;
        fails_on(&j, older.0, Expected::NoRecord, &keys, &what).await;
        fails_on(&j, "nobody", Expected::NoRecord, &keys, &what).await;
        // Still failing: an error is not cached as an answer.
        fails_on(&j, "nobody", Expected::NoRecord, &keys, &what).await;
        // Keys found in newer segments never reach it.
        let newer = last
            .iter()
            .find(|(_, o)| **o >= next_base)
            .expect("a newer key");
        assert_eq!(last_offset(&j, newer.0).await, Some(*newer.1), "{what}");
        // Appends without expectations go on.
        j.append(&topic(), 0, vec![Record::new("plain")], None)
            .await
            .unwrap_or_else(|e| panic!("{what}: a plain append: {e}"));
        j.close().await.expect("close");

        // Reopen: validated, found damaged, rebuilt from the log; every answer is right.
        let j = FileJournal::open(dir.path()).expect("reopen");
        for (k, o) in &last {
            assert_eq!(last_offset(&j, k).await, Some(*o), "{what}, reopened: {k}");
        }
        assert_eq!(last_offset(&j, "nobody").await, None, "{what}, reopened");
        j.close().await.expect("close");
    }
}
