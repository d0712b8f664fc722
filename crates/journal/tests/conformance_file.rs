//! The conformance suite against the file backend, plus what only the file backend promises:
//! contiguous offsets from 0, one timestamp per append, the documented on-disk layout,
//! reopen (records, key state and dedup survive), the directory lock, rebuilt indexes.

mod common;

use bytes::Bytes;
use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::time::Duration;
use switchyard_journal::conformance::{self as c, read_all, topic, unique_prefix};
use switchyard_journal::file::FileJournal;
use switchyard_journal::{
    Durability, Error, Expectation, Expected, Journal, Offset, Partition, PartitionChoice,
    ReadLimits, Record, StoredRecord, Timestamp, TopicConfig, TopicInfo, TopicName,
};

fn open(dir: &Path) -> FileJournal {
    FileJournal::open(dir).unwrap_or_else(|e| panic!("open {}: {e}", dir.display()))
}

macro_rules! conformance_case {
    ($($case:ident),* $(,)?) => {$(
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $case() {
            let dir = tempfile::tempdir().expect("tempdir");
            let j = open(dir.path());
            c::$case(&j, &unique_prefix(stringify!($case))).await;
            j.close().await.expect("close");
        }
    )*};
}

conformance_case!(
    topic_lifecycle,
    invalid_configs_are_rejected,
    partition_out_of_range,
    ordering_and_offsets,
    batch_append_is_one_result_per_record,
    partition_choice,
    dedup,
    dedup_window_zero_disables_dedup,
    dedup_ids_expire,
    conflicts,
    concurrent_expectations_admit_one_writer,
    time_seek,
    read_limits,
    tail_wakeups,
    tail_on_deleted_topic,
    concurrent_appenders,
    retention_by_size,
    retention_by_age,
    retention_applies_after_update,
    records_round_trip,
    every_durability_acknowledges,
    tail_follower_sees_every_record,
    reads_during_retention_return_correct_records,
);

/// Every case, one after the other, on one journal: cases must not disturb each other.
/// On a current-thread runtime (the per-case tests use a multi-threaded one).
#[tokio::test]
async fn run_all_on_one_journal() {
    let dir = tempfile::tempdir().expect("tempdir");
    let j = open(dir.path());
    c::run_all(&j).await;
    j.close().await.expect("close");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_appenders_on_many_threads() {
    let dir = tempfile::tempdir().expect("tempdir");
    let j = open(dir.path());
    c::concurrent_appenders_spawned(j.clone(), &unique_prefix("spawned")).await;
    j.close().await.expect("close");
}

fn cfg(partitions: u32) -> TopicConfig {
    TopicConfig {
        partitions,
        durability: Durability::Os,
        ..TopicConfig::default()
    }
}

async fn append(
    j: &FileJournal,
    t: &TopicName,
    p: Partition,
    records: Vec<Record>,
) -> Vec<switchyard_journal::Appended> {
    j.append(t, p, records, None).await.expect("append")
}

/// Offsets are 0, 1, 2, ... in every partition; the records of one append share one
/// timestamp; timestamps never decrease.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offsets_are_contiguous_from_zero_and_a_batch_shares_one_timestamp() {
    let dir = tempfile::tempdir().expect("tempdir");
    let j = open(dir.path());
    let t = topic("file", "contiguous");
    j.create_topic(
        &t,
        TopicConfig {
            segment_bytes: 4096,
            ..cfg(3)
        },
    )
    .await
    .expect("create");
    let mut batches: Vec<Vec<switchyard_journal::Appended>> = Vec::new();
    for i in 0..120u32 {
        let n = (i % 4 + 1) as usize;
        let records = (0..n)
            .map(|k| Record::new(format!("{i}-{k}-{}", "x".repeat(50))))
            .collect();
        batches.push(append(&j, &t, i % 3, records).await);
        if i % 40 == 0 {
            // A new millisecond for some of the batches.
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }
    let info = j.describe_topic(&t).await.expect("describe");
    for p in 0..3 {
        let got = read_all(&j, &t, p).await;
        let offsets: Vec<Offset> = got.iter().map(|r| r.offset).collect();
        let want: Vec<Offset> = (0..got.len() as u64).collect();
        assert_eq!(offsets, want, "partition {p}: contiguous from 0");
        let pi = &info.partitions[p as usize];
        assert_eq!(
            (pi.first_offset, pi.next_offset),
            (0, got.len() as u64),
            "{pi:?}"
        );
        let by_offset: HashMap<Offset, &StoredRecord> = got.iter().map(|r| (r.offset, r)).collect();
        for b in batches.iter().filter(|b| b[0].partition == p) {
            let ts: Vec<Timestamp> = b.iter().map(|a| by_offset[&a.offset].timestamp).collect();
            assert!(
                ts.iter().all(|x| *x == ts[0]),
                "one append, one timestamp: {ts:?}"
            );
            for w in b.windows(2) {
                assert_eq!(
                    w[1].offset,
                    w[0].offset + 1,
                    "a batch takes consecutive offsets"
                );
            }
        }
    }
    j.close().await.expect("close");
}

/// The layout the CLI and recovery rely on: `LOCK`, `topics/<topic>/topic.json`, one
/// directory per partition, segments named for their 20-digit base offset, frames as
/// documented (CRC32C, base offsets continuing, version 1), segments rolled at
/// `segment-bytes`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_disk_layout_is_as_documented() {
    let dir = tempfile::tempdir().expect("tempdir");
    let j = open(dir.path());
    let t = topic("file", "layout");
    let config = TopicConfig {
        segment_bytes: 4096,
        ..cfg(2)
    };
    j.create_topic(&t, config).await.expect("create");
    for i in 0..200usize {
        let n = i % 3 + 1;
        let records = (0..n)
            .map(|k| Record::new(vec![k as u8; 100 + i]).with_key("k"))
            .collect();
        append(&j, &t, (i % 2) as u32, records).await;
    }
    // One batch larger than a segment gets a segment of its own.
    append(&j, &t, 0, vec![Record::new(vec![1u8; 10_000])]).await;
    append(&j, &t, 0, vec![Record::new("after the big one")]).await;
    let info = j.describe_topic(&t).await.expect("describe");
    j.close().await.expect("close");

    assert!(dir.path().join("LOCK").is_file(), "DIR/LOCK");
    let tdir = dir.path().join("topics").join(t.as_str());
    let tf: serde_json::Value =
        serde_json::from_slice(&std::fs::read(tdir.join("topic.json")).expect("topic.json"))
            .expect("topic.json is JSON");
    assert_eq!(tf["name"], t.as_str(), "topic.json names its topic: {tf}");
    let stored: TopicConfig = serde_json::from_value(tf["config"].clone()).expect("config");
    assert_eq!(stored, config, "topic.json holds the config");

    for p in 0..2u32 {
        let segs = common::segments(&common::partition_dir(dir.path(), t.as_str(), p));
        assert!(
            segs.len() > 3,
            "partition {p} rolled into several segments: {segs:?}"
        );
        let mut next = 0;
        let mut last_ts = i64::MIN;
        let mut total = 0;
        for (i, (base, path)) in segs.iter().enumerate() {
            assert_eq!(
                *base,
                next,
                "{}: named for its first offset",
                path.display()
            );
            let frames = common::frames(path);
            let len = std::fs::metadata(path).expect("stat").len();
            total += len;
            let end = frames.last().map_or(0, |f| f.end());
            assert_eq!(end, len, "{}: nothing but whole frames", path.display());
            if i + 1 < segs.len() && frames.len() > 1 {
                assert!(
                    len <= 4096,
                    "{}: sealed at {len} bytes > segment-bytes",
                    path.display()
                );
            }
            for f in frames {
                assert!(f.crc_ok, "{}: crc of {f:?}", path.display());
                assert_eq!(f.version, 1);
                assert_eq!(f.base, next, "{}: offsets continue", path.display());
                assert!(f.timestamp >= last_ts, "timestamps never decrease");
                last_ts = f.timestamp;
                next = f.next_offset();
            }
        }
        let pi = &info.partitions[p as usize];
        assert_eq!(
            pi.next_offset, next,
            "describe agrees with the files: {pi:?}"
        );
        assert_eq!(
            pi.bytes, total,
            "describe's bytes are the log's bytes: {pi:?}"
        );
    }
    let big = common::segments(&common::partition_dir(dir.path(), t.as_str(), 0));
    let big_frames: Vec<_> = big.iter().map(|(_, p)| common::frames(p)).collect();
    assert!(
        big_frames.iter().any(|f| f.len() == 1 && f[0].len > 10_000),
        "the 10 kB batch sits alone in its segment"
    );
}

/// Close, reopen: records, timestamps, config, extents, each key's last offset (what
/// expectations check) and the dedup window are all as before; appends continue.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reopen_after_close_keeps_records_key_state_and_dedup() {
    let dir = tempfile::tempdir().expect("tempdir");
    let t = topic("file", "reopen");
    let config = TopicConfig {
        segment_bytes: 4096,
        index_interval_bytes: 128,
        dedup_window_ms: 600_000,
        ..cfg(3)
    };
    let j = open(dir.path());
    j.create_topic(&t, config).await.expect("create");
    let mut last_by_key: HashMap<(Partition, String), Offset> = HashMap::new();
    let mut placed: HashMap<String, (Partition, Offset)> = HashMap::new();
    for i in 0..150usize {
        let key = format!("acct-{}", i % 7);
        let p = j
            .choose_partition(&t, &PartitionChoice::Key(Bytes::from(key.clone())))
            .await
            .expect("choose");
        let expected = match last_by_key.get(&(p, key.clone())) {
            Some(o) => Expected::LastOffset(*o),
            None => Expected::NoRecord,
        };
        let id = format!("ev-{i}");
        let rec = Record::new(format!("{key} event {i} {}", "p".repeat(i)))
            .with_id(&id)
            .with_key(key.clone())
            .with_header("n", i.to_string());
        let a = j
            .append(
                &t,
                p,
                vec![rec],
                Some(Expectation {
                    key: Bytes::from(key.clone()),
                    expected,
                }),
            )
            .await
            .expect("append with expectation")[0];
        last_by_key.insert((p, key), a.offset);
        placed.insert(id, (p, a.offset));
    }
    let before = j.describe_topic(&t).await.expect("describe");
    let mut records: Vec<Vec<StoredRecord>> = Vec::new();
    for p in 0..3 {
        records.push(read_all(&j, &t, p).await);
    }
    let seeks = time_seeks(&j, &t, &records).await;
    j.close().await.expect("close");
    drop(j);

    let j2 = open(dir.path());
    check_same(&j2, &t, &before, &records, &seeks).await;
    check_key_state(&j2, &t, &last_by_key, 3).await;
    // Dedup survives: every id is still a duplicate at its original place.
    for (id, (p, o)) in placed.iter().take(40) {
        let q = (p + 1) % 3;
        let a = j2
            .append(&t, q, vec![Record::new("again").with_id(id)], None)
            .await
            .expect("dup");
        assert_eq!(a[0].offset, *o, "{id}");
        assert_eq!(a[0].partition, *p, "{id}");
        assert!(a[0].duplicate, "{id} is still a duplicate after reopen");
    }
    // Appends continue at next_offset with timestamps that do not go back.
    for p in 0..3u32 {
        let a = append(&j2, &t, p, vec![Record::new("after reopen")]).await[0];
        assert_eq!(a.offset, before.partitions[p as usize].next_offset);
        let got = read_all(&j2, &t, p).await;
        let n = got.len();
        assert!(got[n - 1].timestamp >= got[n - 2].timestamp);
    }
    j2.close().await.expect("close");
    drop(j2);

    // And once more, after dropping every handle without close.
    let j3 = open(dir.path());
    for p in 0..3u32 {
        let n = read_all(&j3, &t, p).await.len() as u64;
        assert_eq!(n, before.partitions[p as usize].next_offset + 1);
    }
    drop(j3);
    let j4 = open(dir.path());
    assert_eq!(j4.list_topics().await.expect("list"), vec![t.clone()]);
    j4.close().await.expect("close");
}

async fn time_seeks(
    j: &FileJournal,
    t: &TopicName,
    records: &[Vec<StoredRecord>],
) -> Vec<(Partition, Timestamp, Offset)> {
    let mut out = Vec::new();
    for (p, recs) in records.iter().enumerate() {
        let mut probes: Vec<Timestamp> = recs.iter().map(|r| r.timestamp).collect();
        probes.extend(recs.iter().map(|r| Timestamp(r.timestamp.0 + 1)));
        probes.push(Timestamp(0));
        probes.sort();
        probes.dedup();
        for at in probes {
            let o = j
                .offset_for_time(t, p as Partition, at)
                .await
                .expect("offset_for_time");
            let want = recs
                .iter()
                .find(|r| r.timestamp >= at)
                .map_or(recs.len() as u64, |r| r.offset);
            assert_eq!(o, want, "offset_for_time({at:?}) on {p}");
            out.push((p as Partition, at, o));
        }
    }
    out
}

async fn check_same(
    j: &FileJournal,
    t: &TopicName,
    before: &TopicInfo,
    records: &[Vec<StoredRecord>],
    seeks: &[(Partition, Timestamp, Offset)],
) {
    let after = j.describe_topic(t).await.expect("describe after reopen");
    assert_eq!(&after, before, "describe after reopen");
    for (p, want) in records.iter().enumerate() {
        let got = read_all(j, t, p as Partition).await;
        assert_eq!(&got, want, "partition {p} after reopen");
    }
    for (p, at, o) in seeks {
        let got = j
            .offset_for_time(t, *p, *at)
            .await
            .expect("offset_for_time");
        assert_eq!(got, *o, "offset_for_time({at:?}) on {p} after reopen");
    }
}

/// Each key's last offset as the journal sees it, read from the conflict an impossible
/// expectation causes (this writes nothing).
async fn key_last_offset(
    j: &FileJournal,
    t: &TopicName,
    p: Partition,
    key: &str,
) -> Option<Offset> {
    let exp = Expectation {
        key: Bytes::from(key.to_owned()),
        expected: Expected::LastOffset(u64::MAX),
    };
    match j
        .append(
            t,
            p,
            vec![Record::new("never").with_key(key.to_owned())],
            Some(exp),
        )
        .await
    {
        Err(Error::Conflict { actual, .. }) => actual,
        other => panic!("expected a conflict for {key} on {p}, got {other:?}"),
    }
}

async fn check_key_state(
    j: &FileJournal,
    t: &TopicName,
    last_by_key: &HashMap<(Partition, String), Offset>,
    partitions: u32,
) {
    for ((p, key), o) in last_by_key {
        assert_eq!(
            key_last_offset(j, t, *p, key).await,
            Some(*o),
            "last offset of {key} on {p}"
        );
        let other = (p + 1) % partitions;
        if !last_by_key.contains_key(&(other, key.clone())) {
            assert_eq!(
                key_last_offset(j, t, other, key).await,
                None,
                "{key} has no record on {other}"
            );
        }
    }
}

/// `.index` and `.keys` files are derived: deleted, truncated, garbage or swapped between
/// segments, they are rebuilt on open and every answer stays the same.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn indexes_are_rebuilt_when_missing_or_stale() {
    let dir = tempfile::tempdir().expect("tempdir");
    let t = topic("file", "indexes");
    let config = TopicConfig {
        segment_bytes: 4096,
        index_interval_bytes: 64,
        dedup_window_ms: 600_000,
        ..cfg(2)
    };
    let j = open(dir.path());
    j.create_topic(&t, config).await.expect("create");
    let mut last_by_key: HashMap<(Partition, String), Offset> = HashMap::new();
    for i in 0..300usize {
        let key = format!("k{}", i % 11);
        let p = (i % 2) as Partition;
        let n = i % 3 + 1;
        let records = (0..n)
            .map(|r| {
                Record::new(vec![b'a' + (r as u8); 40 + i % 90])
                    .with_key(key.clone())
                    .with_id(format!("id-{i}-{r}"))
            })
            .collect();
        let out = append(&j, &t, p, records).await;
        last_by_key.insert((p, key), out[n - 1].offset);
        if i % 50 == 0 {
            tokio::time::sleep(Duration::from_millis(3)).await;
        }
    }
    let before = j.describe_topic(&t).await.expect("describe");
    let mut records = Vec::new();
    for p in 0..2 {
        records.push(read_all(&j, &t, p).await);
    }
    let seeks = time_seeks(&j, &t, &records).await;
    j.close().await.expect("close");
    drop(j);

    let sidecars = common::files_with_ext(dir.path(), &["index", "keys"]);
    assert!(
        sidecars
            .iter()
            .any(|p| p.extension().is_some_and(|e| e == "index")),
        "sealed segments have .index files: {sidecars:?}"
    );
    assert!(
        sidecars
            .iter()
            .any(|p| p.extension().is_some_and(|e| e == "keys")),
        "sealed segments have .keys files: {sidecars:?}"
    );
    let originals: BTreeMap<_, _> = sidecars
        .iter()
        .map(|p| (p.clone(), std::fs::read(p).expect("read sidecar")))
        .collect();

    type Damage = fn(&Path, &BTreeMap<std::path::PathBuf, Vec<u8>>);
    let damages: [(&str, Damage); 5] = [
        ("deleted", |p, _| std::fs::remove_file(p).expect("remove")),
        ("truncated", |p, o| {
            std::fs::write(p, &o[p][..o[p].len() / 2]).expect("write")
        }),
        ("garbage", |p, o| {
            std::fs::write(p, vec![0xA5u8; o[p].len()]).expect("write")
        }),
        ("empty", |p, _| std::fs::write(p, b"").expect("write")),
        ("one byte flipped", |p, o| {
            let mut b = o[p].clone();
            let i = b.len() / 2;
            b[i] ^= 0x10;
            std::fs::write(p, b).expect("write")
        }),
    ];
    for (what, damage) in damages {
        for p in &sidecars {
            damage(p, &originals);
        }
        let j = open(dir.path());
        check_same(&j, &t, &before, &records, &seeks).await;
        check_key_state(&j, &t, &last_by_key, 2).await;
        let a = j
            .append(&t, 0, vec![Record::new("x").with_id("id-0-0")], None)
            .await
            .expect("dup");
        assert!(
            a[0].duplicate && a[0].offset == 0,
            "{what}: dedup state after rebuild: {a:?}"
        );
        j.close().await.expect("close");
    }

    // Swapped: each segment gets another segment's (valid) sidecar.
    let mut by_ext: BTreeMap<String, Vec<std::path::PathBuf>> = BTreeMap::new();
    for p in &sidecars {
        let dirname = p.parent().expect("parent").to_string_lossy().into_owned();
        let ext = p.extension().expect("ext").to_string_lossy().into_owned();
        by_ext
            .entry(format!("{dirname}/{ext}"))
            .or_default()
            .push(p.clone());
    }
    for group in by_ext.values() {
        for (i, p) in group.iter().enumerate() {
            let other = &group[(i + 1) % group.len()];
            std::fs::write(p, &originals[other]).expect("write");
        }
    }
    let j = open(dir.path());
    check_same(&j, &t, &before, &records, &seeks).await;
    check_key_state(&j, &t, &last_by_key, 2).await;
    j.close().await.expect("close");
}

/// A closed journal answers [`Error::Closed`], and a tail waiting when it closes ends.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_closed_journal_says_so() {
    let dir = tempfile::tempdir().expect("tempdir");
    let j = open(dir.path());
    let t = topic("file", "closing");
    j.create_topic(&t, cfg(1)).await.expect("create");
    let clone = j.clone();
    let waiting = tokio::spawn({
        let (j, t) = (j.clone(), t.clone());
        async move { j.wait_for(&t, 0, 0).await }
    });
    // Let the wait start; then close from another clone.
    tokio::task::yield_now().await;
    clone.close().await.expect("close");
    let r = tokio::time::timeout(c::WAIT, waiting)
        .await
        .expect("a wait ends when the journal closes");
    assert!(
        matches!(r.expect("join"), Err(Error::Closed)),
        "a wait across close ends with Closed"
    );
    let closed = |what: &str, r: Result<String, Error>| match r {
        Err(Error::Closed) => {}
        other => panic!("{what} on a closed journal: expected Closed, got {other:?}"),
    };
    fn dbg<T: std::fmt::Debug>(r: Result<T, Error>) -> Result<String, Error> {
        r.map(|v| format!("{v:?}"))
    }
    closed(
        "create_topic (new)",
        dbg(j.create_topic(&topic("file", "new"), cfg(1)).await),
    );
    closed(
        "create_topic (existing)",
        dbg(j.create_topic(&t, cfg(1)).await),
    );
    closed("update_topic", dbg(j.update_topic(&t, cfg(1)).await));
    closed("describe_topic", dbg(j.describe_topic(&t).await));
    closed("list_topics", dbg(j.list_topics().await));
    closed("delete_topic", dbg(j.delete_topic(&t).await));
    closed(
        "choose_partition",
        dbg(j.choose_partition(&t, &PartitionChoice::RoundRobin).await),
    );
    closed(
        "append",
        dbg(j.append(&t, 0, vec![Record::new("x")], None).await),
    );
    closed("read", dbg(j.read(&t, 0, 0, ReadLimits::default()).await));
    closed(
        "offset_for_time",
        dbg(j.offset_for_time(&t, 0, Timestamp(0)).await),
    );
    closed("wait_for", dbg(j.wait_for(&t, 0, 0).await));
    drop((j, clone));
    let j = open(dir.path());
    assert_eq!(
        j.list_topics().await.expect("list"),
        vec![t],
        "nothing was created after close"
    );
    j.close().await.expect("close");
}

/// A batch with one bad record is rejected whole, naming the record.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invalid_record_rejects_the_whole_batch() {
    let dir = tempfile::tempdir().expect("tempdir");
    let j = open(dir.path());
    let t = topic("file", "invalid");
    j.create_topic(&t, cfg(1)).await.expect("create");
    let bad_records = [
        Record::new("empty id").with_id(""),
        Record::new("empty header name").with_header("", "v"),
        Record::new("long key").with_key(vec![b'k'; 64 * 1024]),
    ];
    for bad in bad_records {
        let batch = vec![
            Record::new("fine").with_id("fine-1"),
            bad.clone(),
            Record::new("fine"),
        ];
        match j.append(&t, 0, batch, None).await {
            Err(Error::InvalidRecord { index, reason }) => {
                assert_eq!(index, 1, "the error names the bad record ({reason})");
                assert!(!reason.is_empty());
            }
            other => panic!("{bad:?}: expected InvalidRecord, got {other:?}"),
        }
    }
    assert!(
        read_all(&j, &t, 0).await.is_empty(),
        "nothing of a rejected batch was written"
    );
    let a = append(&j, &t, 0, vec![Record::new("fine").with_id("fine-1")]).await;
    assert!(
        !a[0].duplicate,
        "ids of a rejected batch are not remembered"
    );
    j.close().await.expect("close");
}

/// `close` releases the directory: it opens again while a closed handle is still alive.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn close_releases_the_directory() {
    let dir = tempfile::tempdir().expect("tempdir");
    let j = open(dir.path());
    let t = topic("file", "release");
    j.create_topic(&t, cfg(1)).await.expect("create");
    append(&j, &t, 0, vec![Record::new("kept")]).await;
    j.close().await.expect("close");
    let j2 = FileJournal::open(dir.path())
        .unwrap_or_else(|e| panic!("open after close, with the closed handle alive: {e}"));
    assert_eq!(read_all(&j2, &t, 0).await.len(), 1);
    assert!(
        matches!(j.describe_topic(&t).await, Err(Error::Closed)),
        "the old handle stays closed"
    );
    drop(j);
    j2.close().await.expect("close");
}

/// Topic changes are on disk: an update, a delete and retention's removed segments are all
/// still in effect after a reopen.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn topic_changes_and_retention_survive_reopen() {
    let dir = tempfile::tempdir().expect("tempdir");
    let j = open(dir.path());
    let kept = topic("file", "kept");
    let gone = topic("file", "gone");
    let retained = topic("file", "retained");
    j.create_topic(&kept, cfg(2)).await.expect("create");
    j.create_topic(&gone, cfg(1)).await.expect("create");
    let small = TopicConfig {
        segment_bytes: 4096,
        ..cfg(1)
    };
    j.create_topic(&retained, small).await.expect("create");
    append(&j, &gone, 0, vec![Record::new("x")]).await;
    for i in 0..100 {
        append(&j, &retained, 0, vec![Record::new(vec![i as u8; 300])]).await;
    }
    let updated = TopicConfig {
        dedup_window_ms: 5_000,
        durability: Durability::Always,
        ..cfg(2)
    };
    j.update_topic(&kept, updated).await.expect("update");
    j.delete_topic(&gone).await.expect("delete");
    let with_retention = TopicConfig {
        retention: switchyard_journal::Retention {
            max_age_ms: None,
            max_bytes: Some(8192),
        },
        ..small
    };
    j.update_topic(&retained, with_retention)
        .await
        .expect("update retention");
    let deadline = std::time::Instant::now() + c::RETENTION_WAIT;
    let info = loop {
        let info = j.describe_topic(&retained).await.expect("describe");
        if info.partitions[0].first_offset > 0 {
            break info;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "retention not enforced: {info:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let first = info.partitions[0].first_offset;
    let segs = common::segments(&common::partition_dir(dir.path(), retained.as_str(), 0));
    assert_eq!(
        segs[0].0, first,
        "the removed segments' files are gone: {segs:?}"
    );
    assert!(
        !dir.path().join("topics").join(gone.as_str()).exists(),
        "deleted topic's files"
    );
    j.close().await.expect("close");
    drop(j);

    let j = open(dir.path());
    assert_eq!(
        j.list_topics().await.expect("list"),
        vec![kept.clone(), retained.clone()]
    );
    assert_eq!(
        j.describe_topic(&kept).await.expect("describe").config,
        updated
    );
    assert!(matches!(
        j.describe_topic(&gone).await,
        Err(Error::TopicNotFound(_))
    ));
    let after = j.describe_topic(&retained).await.expect("describe");
    assert_eq!(after.config, with_retention);
    assert!(after.partitions[0].first_offset >= first, "{after:?}");
    assert_eq!(
        read_all(&j, &retained, 0).await[0].offset,
        after.partitions[0].first_offset
    );
    j.create_topic(&gone, cfg(3)).await.expect("re-create");
    assert!(
        read_all(&j, &gone, 0).await.is_empty(),
        "a re-created topic starts empty"
    );
    j.close().await.expect("close");
}
