//! The conformance suite: one set of behaviour checks that every [`Journal`] backend runs
//! (in the style of Restate's `loglet_tests`).
//!
//! Each case is a public async function that takes the journal under test and a topic-name
//! prefix unique to the call; it creates its own topics under that prefix, panics with a
//! message naming what went wrong when the backend misbehaves, and deletes its topics when
//! it passes. [`run_all`] runs every case, one after the other, on fresh topics.
//!
//! The cases only rely on what the [`Journal`] trait documents. In particular they never
//! assume that offsets are contiguous: they continue from [`ReadBatch::next_offset`].
//! Backend-specific promises (the file backend's contiguous offsets, reopen, locking) are
//! checked by that backend's own tests.
//!
//! ```text
//! #[tokio::test]
//! async fn conformance() {
//!     let journal = MyJournal::new();
//!     switchyard_journal::conformance::run_all(&journal).await;
//! }
//! ```

use crate::{Appended, Error, Journal, PartitionChoice, ReadBatch, ReadLimits};
use bytes::Bytes;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::Poll;
use std::time::{Duration, Instant};
use switchyard_types::{
    Durability, Expectation, Expected, Offset, Partition, Record, Retention, StoredRecord,
    Timestamp, TopicConfig, TopicName, partition_for_key,
};

/// How long the suite waits for something that should happen promptly (a tail wake-up).
/// Generous on purpose: it only bounds how long a broken backend hangs the test.
pub const WAIT: Duration = Duration::from_secs(10);

/// How long the suite waits for retention to be enforced in the background.
pub const RETENTION_WAIT: Duration = Duration::from_secs(15);

/// A topic-name prefix unique to this process and call, so that cases can share a backend
/// (and a persistent backend can run the suite again) without their topics colliding.
pub fn unique_prefix(case: &str) -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    format!("conf-{case}-{}-{nanos:x}-{n}", std::process::id())
}

/// Runs every case of the suite against `j`, each on fresh topics.
pub async fn run_all(j: &dyn Journal) {
    topic_lifecycle(j, &unique_prefix("lifecycle")).await;
    invalid_configs_are_rejected(j, &unique_prefix("invalid")).await;
    partition_out_of_range(j, &unique_prefix("range")).await;
    ordering_and_offsets(j, &unique_prefix("order")).await;
    batch_append_is_one_result_per_record(j, &unique_prefix("batch")).await;
    partition_choice(j, &unique_prefix("choice")).await;
    dedup(j, &unique_prefix("dedup")).await;
    dedup_window_zero_disables_dedup(j, &unique_prefix("dedup0")).await;
    dedup_ids_expire(j, &unique_prefix("dedupexp")).await;
    conflicts(j, &unique_prefix("conflict")).await;
    concurrent_expectations_admit_one_writer(j, &unique_prefix("race")).await;
    time_seek(j, &unique_prefix("time")).await;
    read_limits(j, &unique_prefix("limits")).await;
    tail_wakeups(j, &unique_prefix("tail")).await;
    tail_on_deleted_topic(j, &unique_prefix("taildel")).await;
    concurrent_appenders(j, &unique_prefix("concurrent")).await;
    retention_by_size(j, &unique_prefix("retbytes")).await;
    retention_by_age(j, &unique_prefix("retage")).await;
    retention_applies_after_update(j, &unique_prefix("retupd")).await;
    records_round_trip(j, &unique_prefix("roundtrip")).await;
    every_durability_acknowledges(j, &unique_prefix("durability")).await;
    tail_follower_sees_every_record(j, &unique_prefix("follower")).await;
    reads_during_retention_return_correct_records(j, &unique_prefix("retread")).await;
}

// ---------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------

/// `prefix.suffix` as a topic name.
pub fn topic(prefix: &str, suffix: &str) -> TopicName {
    let name = format!("{prefix}.{suffix}");
    TopicName::new(name.clone()).unwrap_or_else(|e| panic!("bad test topic name {name}: {e}"))
}

/// A config with `partitions` partitions and durability `os` (the fast one); cases that are
/// about durability say so.
pub fn config(partitions: u32) -> TopicConfig {
    TopicConfig {
        partitions,
        durability: Durability::Os,
        ..TopicConfig::default()
    }
}

async fn create(j: &dyn Journal, name: &TopicName, config: TopicConfig) {
    j.create_topic(name, config)
        .await
        .unwrap_or_else(|e| panic!("create_topic {name}: {e}"));
}

async fn delete(j: &dyn Journal, name: &TopicName) {
    j.delete_topic(name)
        .await
        .unwrap_or_else(|e| panic!("delete_topic {name}: {e}"));
}

async fn append(
    j: &dyn Journal,
    t: &TopicName,
    p: Partition,
    records: Vec<Record>,
    expectation: Option<Expectation>,
) -> Vec<Appended> {
    let n = records.len();
    let out = j
        .append(t, p, records, expectation)
        .await
        .unwrap_or_else(|e| panic!("append of {n} records to {t}/{p}: {e}"));
    assert_eq!(
        out.len(),
        n,
        "append to {t}/{p} must return one Appended per record"
    );
    out
}

async fn append_one(j: &dyn Journal, t: &TopicName, p: Partition, record: Record) -> Appended {
    append(j, t, p, vec![record], None).await[0]
}

async fn read(
    j: &dyn Journal,
    t: &TopicName,
    p: Partition,
    from: Offset,
    l: ReadLimits,
) -> ReadBatch {
    let batch = j
        .read(t, p, from, l)
        .await
        .unwrap_or_else(|e| panic!("read {t}/{p} from {from}: {e}"));
    check_batch(t, p, from, l, &batch);
    batch
}

/// What every read must satisfy, whatever was asked.
fn check_batch(t: &TopicName, p: Partition, from: Offset, l: ReadLimits, b: &ReadBatch) {
    assert!(
        b.records.len() <= l.max_records.max(1),
        "read {t}/{p} from {from} returned {} records, over max_records {}",
        b.records.len(),
        l.max_records
    );
    if let Some(first) = b.records.first() {
        assert!(
            first.offset >= from,
            "read {t}/{p} from {from} returned offset {}",
            first.offset
        );
    }
    for w in b.records.windows(2) {
        assert!(
            w[0].offset < w[1].offset,
            "offsets must strictly increase within {t}/{p}: {} then {}",
            w[0].offset,
            w[1].offset
        );
        assert!(
            w[0].timestamp <= w[1].timestamp,
            "timestamps must not decrease within {t}/{p}: offset {} at {:?}, offset {} at {:?}",
            w[0].offset,
            w[0].timestamp,
            w[1].offset,
            w[1].timestamp
        );
    }
    match b.records.last() {
        Some(last) => assert!(
            b.next_offset > last.offset,
            "next_offset {} of a read of {t}/{p} must be past the last record returned ({})",
            b.next_offset,
            last.offset
        ),
        None => assert!(
            b.next_offset >= from,
            "an empty read of {t}/{p} from {from} returned next_offset {}",
            b.next_offset
        ),
    }
    if b.records.len() > 1 {
        let bytes: usize = b.records.iter().map(|r| r.payload.len()).sum();
        assert!(
            bytes <= l.max_bytes,
            "read {t}/{p} returned {} records with {bytes} payload bytes, over max_bytes {}",
            b.records.len(),
            l.max_bytes
        );
    }
}

/// Every record of a partition, from its oldest retained one, following `next_offset`.
pub async fn read_all(j: &dyn Journal, t: &TopicName, p: Partition) -> Vec<StoredRecord> {
    let mut out: Vec<StoredRecord> = Vec::new();
    let mut from = 0;
    loop {
        let batch = read(j, t, p, from, ReadLimits::default()).await;
        if batch.records.is_empty() {
            return out;
        }
        if let (Some(prev), Some(first)) = (out.last(), batch.records.first()) {
            assert!(
                prev.offset < first.offset,
                "{t}/{p}: offsets went back across reads"
            );
            assert!(
                prev.timestamp <= first.timestamp,
                "{t}/{p}: time went back across reads"
            );
        }
        from = batch.next_offset;
        out.extend(batch.records);
    }
}

async fn describe_partition(j: &dyn Journal, t: &TopicName, p: Partition) -> crate::PartitionInfo {
    let info = j
        .describe_topic(t)
        .await
        .unwrap_or_else(|e| panic!("describe_topic {t}: {e}"));
    info.partitions
        .into_iter()
        .find(|i| i.partition == p)
        .unwrap_or_else(|| panic!("describe_topic {t} has no partition {p}"))
}

/// Polls a future exactly once: `Some(output)` if it was ready.
async fn poll_once<F: Future + Unpin>(f: &mut F) -> Option<F::Output> {
    std::future::poll_fn(|cx| {
        Poll::Ready(match Pin::new(&mut *f).poll(cx) {
            Poll::Ready(v) => Some(v),
            Poll::Pending => None,
        })
    })
    .await
}

/// Runs futures concurrently on the current task and returns their outputs in order.
/// (The suite takes `&dyn Journal`, which cannot move into spawned tasks.)
pub async fn join_all<F: Future>(futures: Vec<F>) -> Vec<F::Output> {
    let mut futures: Vec<Pin<Box<F>>> = futures.into_iter().map(Box::pin).collect();
    let mut outputs: Vec<Option<F::Output>> = futures.iter().map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut pending = false;
        for (f, out) in futures.iter_mut().zip(outputs.iter_mut()) {
            if out.is_none() {
                match f.as_mut().poll(cx) {
                    Poll::Ready(v) => *out = Some(v),
                    Poll::Pending => pending = true,
                }
            }
        }
        if pending {
            Poll::Pending
        } else {
            Poll::Ready(())
        }
    })
    .await;
    outputs.into_iter().flatten().collect()
}

fn assert_record_eq(stored: &StoredRecord, sent: &Record, ctx: &str) {
    assert_eq!(stored.id, sent.id, "{ctx}: id");
    assert_eq!(stored.key, sent.key, "{ctx}: key");
    assert_eq!(stored.headers, sent.headers, "{ctx}: headers");
    assert_eq!(stored.payload, sent.payload, "{ctx}: payload");
}

fn expect_topic_not_found<T: std::fmt::Debug>(r: crate::Result<T>, t: &TopicName, what: &str) {
    match r {
        Err(Error::TopicNotFound(name)) => assert_eq!(&name, t, "{what}: TopicNotFound names"),
        other => panic!("{what} on missing topic {t}: expected TopicNotFound, got {other:?}"),
    }
}

fn expect_out_of_range<T: std::fmt::Debug>(
    r: crate::Result<T>,
    t: &TopicName,
    p: Partition,
    n: u32,
    what: &str,
) {
    match r {
        Err(Error::PartitionOutOfRange {
            topic,
            partition,
            partitions,
        }) => {
            assert_eq!(&topic, t, "{what}: PartitionOutOfRange names the topic");
            assert_eq!(
                partition, p,
                "{what}: PartitionOutOfRange names the partition"
            );
            assert_eq!(
                partitions, n,
                "{what}: PartitionOutOfRange names the partition count"
            );
        }
        other => panic!("{what} {t}/{p} of {n}: expected PartitionOutOfRange, got {other:?}"),
    }
}

fn expect_invalid_config<T: std::fmt::Debug>(r: crate::Result<T>, field: &str, what: &str) {
    match r {
        Err(Error::InvalidConfig(e)) => {
            assert_eq!(e.field, field, "{what}: InvalidConfig names the field");
            let text = Error::InvalidConfig(e.clone()).to_string();
            assert!(
                text.contains(field),
                "{what}: the message {text:?} names {field}"
            );
        }
        other => panic!("{what}: expected InvalidConfig naming {field}, got {other:?}"),
    }
}

#[track_caller]
fn expect_conflict<T: std::fmt::Debug>(
    r: crate::Result<T>,
    t: &TopicName,
    p: Partition,
    key: &str,
    expected: Expected,
    actual: Option<Offset>,
) {
    match r {
        Err(Error::Conflict {
            topic,
            partition,
            key: k,
            expected: ex,
            actual: ac,
        }) => {
            let ctx = format!("conflict on {topic}/{partition} key {k:?}");
            assert_eq!(&topic, t, "{ctx}: names the topic");
            assert_eq!(partition, p, "{ctx}: names the partition");
            assert!(k.contains(key), "{ctx}: names the key {key:?}");
            assert_eq!(ex, expected, "{ctx}: reports what was expected");
            assert_eq!(ac, actual, "{ctx}: reports the key's actual last offset");
        }
        other => panic!("expected a conflict on {t}/{p} key {key}, got {other:?}"),
    }
}

fn payload(i: usize, len: usize) -> Bytes {
    let mut v = format!("record-{i}-").into_bytes();
    v.resize(len.max(v.len()), b'a' + (i % 26) as u8);
    Bytes::from(v)
}

// ---------------------------------------------------------------------------------------
// Cases
// ---------------------------------------------------------------------------------------

/// Create (idempotent with the same config, [`Error::TopicExists`] with another), describe,
/// list, update (the partition count cannot change) and delete.
pub async fn topic_lifecycle(j: &dyn Journal, prefix: &str) {
    let t = topic(prefix, "a");
    let t2 = topic(prefix, "b");
    let cfg = TopicConfig {
        dedup_window_ms: 60_000,
        ..config(3)
    };

    let info = j.create_topic(&t, cfg).await.expect("create_topic");
    assert_eq!(info.name, t);
    assert_eq!(info.config, cfg);
    assert_eq!(info.partitions.len(), 3);
    for (i, p) in info.partitions.iter().enumerate() {
        assert_eq!(
            p.partition, i as Partition,
            "partitions are listed in order"
        );
        assert_eq!(
            p.first_offset, p.next_offset,
            "a new partition is empty: {p:?}"
        );
        assert_eq!(
            p.last_timestamp, None,
            "a new partition has no last timestamp: {p:?}"
        );
    }

    // Same config: succeeds and changes nothing.
    let a = append_one(j, &t, 1, Record::new("kept")).await;
    let again = j
        .create_topic(&t, cfg)
        .await
        .expect("create_topic again, same config");
    assert_eq!(again.config, cfg);
    assert!(
        again.partitions[1].next_offset > a.offset,
        "re-creating must not reset a topic"
    );
    assert_eq!(
        read_all(j, &t, 1).await.len(),
        1,
        "re-creating must keep the records"
    );

    // Different config: TopicExists.
    for other in [
        TopicConfig {
            partitions: 4,
            ..cfg
        },
        TopicConfig {
            durability: Durability::Always,
            ..cfg
        },
        TopicConfig {
            dedup_window_ms: 1,
            ..cfg
        },
    ] {
        match j.create_topic(&t, other).await {
            Err(Error::TopicExists { topic }) => assert_eq!(topic, t),
            r => panic!(
                "create_topic {t} with {other:?} over {cfg:?}: expected TopicExists, got {r:?}"
            ),
        }
    }
    assert_eq!(
        j.describe_topic(&t).await.expect("describe").config,
        cfg,
        "a failed create changes nothing"
    );

    // List: sorted, holds both.
    create(j, &t2, config(1)).await;
    let list = j.list_topics().await.expect("list_topics");
    assert!(
        list.contains(&t) && list.contains(&t2),
        "list_topics {list:?} must hold {t} and {t2}"
    );
    assert!(
        list.windows(2).all(|w| w[0] < w[1]),
        "list_topics must be sorted and unique: {list:?}"
    );

    // Update: settings change, records stay; the partition count cannot change.
    let cfg2 = TopicConfig {
        durability: Durability::Always,
        dedup_window_ms: 1_000,
        segment_bytes: 1 << 20,
        index_interval_bytes: 1024,
        // JetStream reserves a stream's max-bytes on the servers' disks: keep it small.
        retention: Retention {
            max_age_ms: Some(86_400_000),
            max_bytes: Some(64 << 20),
        },
        ..cfg
    };
    let updated = j.update_topic(&t, cfg2).await.expect("update_topic");
    assert_eq!(updated.config, cfg2);
    assert_eq!(j.describe_topic(&t).await.expect("describe").config, cfg2);
    assert_eq!(
        read_all(j, &t, 1).await.len(),
        1,
        "update must keep the records"
    );
    // Create with the updated config is now the idempotent case.
    j.create_topic(&t, cfg2)
        .await
        .expect("create with the current config");
    expect_invalid_config(
        j.update_topic(
            &t,
            TopicConfig {
                partitions: 4,
                ..cfg2
            },
        )
        .await,
        "partitions",
        "update_topic changing the partition count",
    );
    expect_invalid_config(
        j.update_topic(
            &t,
            TopicConfig {
                segment_bytes: 1,
                ..cfg2
            },
        )
        .await,
        "segment-bytes",
        "update_topic with a bad segment size",
    );
    assert_eq!(
        j.describe_topic(&t).await.expect("describe").config,
        cfg2,
        "a failed update changes nothing"
    );
    expect_topic_not_found(
        j.update_topic(&topic(prefix, "missing"), config(1)).await,
        &topic(prefix, "missing"),
        "update_topic",
    );

    // Delete: everything about the topic is gone.
    delete(j, &t).await;
    expect_topic_not_found(j.describe_topic(&t).await, &t, "describe_topic");
    expect_topic_not_found(
        j.append(&t, 0, vec![Record::new("x")], None).await,
        &t,
        "append",
    );
    expect_topic_not_found(j.read(&t, 0, 0, ReadLimits::default()).await, &t, "read");
    expect_topic_not_found(
        j.offset_for_time(&t, 0, Timestamp(0)).await,
        &t,
        "offset_for_time",
    );
    let r = tokio::time::timeout(WAIT, j.wait_for(&t, 0, 0))
        .await
        .expect("wait_for ends");
    expect_topic_not_found(r, &t, "wait_for");
    expect_topic_not_found(
        j.choose_partition(&t, &PartitionChoice::RoundRobin).await,
        &t,
        "choose_partition",
    );
    expect_topic_not_found(j.update_topic(&t, cfg2).await, &t, "update_topic");
    expect_topic_not_found(j.delete_topic(&t).await, &t, "delete_topic");
    let list = j.list_topics().await.expect("list_topics");
    assert!(
        !list.contains(&t) && list.contains(&t2),
        "after delete, list_topics {list:?}"
    );

    // Re-create under the same name: a new, empty topic (with another config even).
    let fresh = j
        .create_topic(&t, config(2))
        .await
        .expect("re-create after delete");
    assert_eq!(fresh.partitions.len(), 2);
    for p in &fresh.partitions {
        assert_eq!(
            p.first_offset, p.next_offset,
            "a re-created topic is empty: {p:?}"
        );
    }
    assert!(
        read_all(j, &t, 1).await.is_empty(),
        "a re-created topic has no old records"
    );

    delete(j, &t).await;
    delete(j, &t2).await;
}

/// Each out-of-range setting is rejected with [`Error::InvalidConfig`] naming its field,
/// and no topic is created.
pub async fn invalid_configs_are_rejected(j: &dyn Journal, prefix: &str) {
    let t = topic(prefix, "bad");
    let cases: Vec<(TopicConfig, &str)> = vec![
        (config(0), "partitions"),
        (config(TopicConfig::MAX_PARTITIONS + 1), "partitions"),
        (
            TopicConfig {
                segment_bytes: 100,
                ..config(1)
            },
            "segment-bytes",
        ),
        (
            TopicConfig {
                index_interval_bytes: 1,
                ..config(1)
            },
            "index-interval-bytes",
        ),
        (
            TopicConfig {
                dedup_window_ms: TopicConfig::MAX_DEDUP_WINDOW_MS + 1,
                ..config(1)
            },
            "dedup-window-ms",
        ),
        (
            TopicConfig {
                retention: Retention {
                    max_age_ms: Some(0),
                    max_bytes: None,
                },
                ..config(1)
            },
            "retention.max-age-ms",
        ),
        (
            TopicConfig {
                segment_bytes: 8192,
                retention: Retention {
                    max_age_ms: None,
                    max_bytes: Some(4096),
                },
                ..config(1)
            },
            "retention.max-bytes",
        ),
    ];
    for (cfg, field) in cases {
        expect_invalid_config(j.create_topic(&t, cfg).await, field, "create_topic");
        expect_topic_not_found(
            j.describe_topic(&t).await,
            &t,
            "describe after a rejected create",
        );
    }
}

/// Every partition-taking operation rejects a partition past the topic's count.
pub async fn partition_out_of_range(j: &dyn Journal, prefix: &str) {
    let t = topic(prefix, "two");
    create(j, &t, config(2)).await;
    let what = "append";
    expect_out_of_range(
        j.append(&t, 2, vec![Record::new("x")], None).await,
        &t,
        2,
        2,
        what,
    );
    expect_out_of_range(
        j.read(&t, 2, 0, ReadLimits::default()).await,
        &t,
        2,
        2,
        "read",
    );
    let r = j.offset_for_time(&t, 7, Timestamp(0)).await;
    expect_out_of_range(r, &t, 7, 2, "offset_for_time");
    expect_out_of_range(j.wait_for(&t, 2, 0).await, &t, 2, 2, "wait_for");
    let r = j.choose_partition(&t, &PartitionChoice::Explicit(2)).await;
    expect_out_of_range(r, &t, 2, 2, "choose_partition(Explicit)");
    for p in 0..2 {
        assert!(
            read_all(j, &t, p).await.is_empty(),
            "a rejected append wrote nothing"
        );
    }
    delete(j, &t).await;
}

/// Offsets strictly increase per partition and reads return records in append order; a
/// partition holds only its own records; reads from any offset start at the first record at
/// or after it; describe reports the extent.
pub async fn ordering_and_offsets(j: &dyn Journal, prefix: &str) {
    let t = topic(prefix, "t");
    create(j, &t, config(2)).await;
    let mut sent: [Vec<(Offset, Record)>; 2] = [Vec::new(), Vec::new()];
    let mut i = 0;
    for round in 0..40 {
        let p = if round % 3 == 2 { 1 } else { 0 };
        let n = if round % 5 == 4 { 3 } else { 1 };
        let records: Vec<Record> = (0..n)
            .map(|_| {
                i += 1;
                Record::new(payload(i, 10 + i % 50))
            })
            .collect();
        let out = append(j, &t, p, records.clone(), None).await;
        for (a, r) in out.iter().zip(records) {
            assert_eq!(a.partition, p);
            assert!(!a.duplicate);
            if let Some((last, _)) = sent[p as usize].last() {
                assert!(
                    a.offset > *last,
                    "offsets must increase in {t}/{p}: {last} then {}",
                    a.offset
                );
            }
            sent[p as usize].push((a.offset, r));
        }
    }
    for p in 0..2u32 {
        let sent = &sent[p as usize];
        let got = read_all(j, &t, p).await;
        assert_eq!(
            got.len(),
            sent.len(),
            "{t}/{p} holds exactly what was appended to it"
        );
        for ((off, rec), stored) in sent.iter().zip(&got) {
            assert_eq!(
                stored.offset, *off,
                "{t}/{p}: read offset equals the acknowledged one"
            );
            assert_record_eq(stored, rec, &format!("{t}/{p} offset {off}"));
        }
        let info = describe_partition(j, &t, p).await;
        let last = got.last().expect("records");
        assert!(info.first_offset <= got[0].offset, "first_offset {info:?}");
        assert!(
            info.next_offset > last.offset,
            "next_offset {info:?} vs last {}",
            last.offset
        );
        assert_eq!(
            info.last_timestamp,
            Some(last.timestamp),
            "last_timestamp {info:?}"
        );
        assert!(
            info.bytes > 0,
            "a partition with records occupies bytes: {info:?}"
        );

        // Read from the middle, exactly at and just after a record.
        let mid = sent.len() / 2;
        let b = read(j, &t, p, sent[mid].0, ReadLimits::default()).await;
        assert_eq!(
            b.records[0].offset, sent[mid].0,
            "a read starts at the requested offset"
        );
        let b = read(j, &t, p, sent[mid].0 + 1, ReadLimits::default()).await;
        assert_eq!(
            b.records[0].offset,
            sent[mid + 1].0,
            "a read starts at the next record"
        );
        // Read from before the first one: starts at the oldest.
        let b = read(j, &t, p, 0, ReadLimits::default()).await;
        assert_eq!(
            b.records[0].offset, sent[0].0,
            "a read from 0 starts at the oldest record"
        );
        // Read at the end: nothing, and next_offset does not go back.
        let b = read(j, &t, p, info.next_offset, ReadLimits::default()).await;
        assert!(b.records.is_empty(), "nothing at next_offset yet: {b:?}");
        assert!(b.next_offset >= info.next_offset);
        let b = read(j, &t, p, info.next_offset + 1000, ReadLimits::default()).await;
        assert!(b.records.is_empty(), "nothing far past next_offset: {b:?}");
    }
    delete(j, &t).await;
}

/// A batch append returns one [`Appended`] per record, in order, and its records are
/// adjacent in the partition.
pub async fn batch_append_is_one_result_per_record(j: &dyn Journal, prefix: &str) {
    let t = topic(prefix, "t");
    create(j, &t, config(3)).await;
    append_one(j, &t, 2, Record::new("before")).await;
    let records: Vec<Record> = (0..7)
        .map(|i| {
            Record::new(payload(i, 20 * i))
                .with_id(format!("{prefix}-b{i}"))
                .with_key("k")
        })
        .collect();
    let out = append(j, &t, 2, records.clone(), None).await;
    for w in out.windows(2) {
        assert!(
            w[0].offset < w[1].offset,
            "batch offsets in input order: {out:?}"
        );
    }
    assert!(
        out.iter().all(|a| a.partition == 2 && !a.duplicate),
        "{out:?}"
    );
    append_one(j, &t, 2, Record::new("after")).await;
    let b = read(
        j,
        &t,
        2,
        out[0].offset,
        ReadLimits {
            max_records: 7,
            max_bytes: 1 << 20,
        },
    )
    .await;
    assert_eq!(
        b.records.len(),
        7,
        "the whole batch reads back, nothing in between"
    );
    for ((a, r), s) in out.iter().zip(&records).zip(&b.records) {
        assert_eq!(s.offset, a.offset);
        assert_record_eq(s, r, "batch record");
    }
    for p in [0, 1] {
        assert!(
            read_all(j, &t, p).await.is_empty(),
            "the batch went to partition 2 only"
        );
    }
    delete(j, &t).await;
}

/// `Key` uses [`partition_for_key`]; `RoundRobin` cycles through every partition; `Explicit`
/// is taken as given.
pub async fn partition_choice(j: &dyn Journal, prefix: &str) {
    let t = topic(prefix, "t");
    create(j, &t, config(5)).await;
    for k in 0..64 {
        let key = format!("order-{k}");
        let p = j
            .choose_partition(&t, &PartitionChoice::Key(Bytes::from(key.clone())))
            .await
            .expect("choose_partition(Key)");
        assert_eq!(p, partition_for_key(key.as_bytes(), 5), "key {key}");
    }
    let bin = Bytes::from_static(&[0, 255, 7, 0]);
    let p = j
        .choose_partition(&t, &PartitionChoice::Key(bin.clone()))
        .await
        .expect("key");
    assert_eq!(p, partition_for_key(&bin, 5), "binary key");
    for p in 0..5 {
        let got = j
            .choose_partition(&t, &PartitionChoice::Explicit(p))
            .await
            .expect("explicit");
        assert_eq!(got, p);
    }
    let mut seq = Vec::new();
    for _ in 0..15 {
        seq.push(
            j.choose_partition(&t, &PartitionChoice::RoundRobin)
                .await
                .expect("round robin"),
        );
    }
    let mut first: Vec<Partition> = seq[..5].to_vec();
    first.sort_unstable();
    assert_eq!(
        first,
        vec![0, 1, 2, 3, 4],
        "round robin visits every partition: {seq:?}"
    );
    assert_eq!(
        seq[..5],
        seq[5..10],
        "round robin repeats its cycle: {seq:?}"
    );
    assert_eq!(
        seq[..5],
        seq[10..15],
        "round robin repeats its cycle: {seq:?}"
    );
    delete(j, &t).await;
}

/// A record whose id was already appended is not written again and reports the original's
/// partition and offset, whatever partition it is sent to; records without an id are never
/// deduplicated.
pub async fn dedup(j: &dyn Journal, prefix: &str) {
    let t = topic(prefix, "t");
    create(
        j,
        &t,
        TopicConfig {
            dedup_window_ms: 60_000,
            ..config(3)
        },
    )
    .await;
    let id_a = format!("{prefix}-a");
    let a = append_one(j, &t, 0, Record::new("first").with_id(&id_a)).await;
    assert!(!a.duplicate);

    let again = append_one(j, &t, 0, Record::new("second").with_id(&id_a)).await;
    assert_eq!(
        again,
        Appended {
            partition: 0,
            offset: a.offset,
            duplicate: true
        }
    );
    let elsewhere = append_one(j, &t, 1, Record::new("third").with_id(&id_a)).await;
    assert_eq!(
        elsewhere,
        Appended {
            partition: 0,
            offset: a.offset,
            duplicate: true
        },
        "a duplicate sent to another partition reports the original's place"
    );
    let p0 = read_all(j, &t, 0).await;
    assert_eq!(p0.len(), 1, "the duplicate was not written: {p0:?}");
    assert_eq!(p0[0].payload, Bytes::from("first"), "the original is kept");
    assert!(
        read_all(j, &t, 1).await.is_empty(),
        "nothing was written to partition 1"
    );

    // Round robin: the second send lands on another partition and is still a duplicate.
    let id_b = format!("{prefix}-b");
    let p1 = j
        .choose_partition(&t, &PartitionChoice::RoundRobin)
        .await
        .expect("rr");
    let b = append_one(j, &t, p1, Record::new("b").with_id(&id_b)).await;
    let p2 = j
        .choose_partition(&t, &PartitionChoice::RoundRobin)
        .await
        .expect("rr");
    assert_ne!(p1, p2, "round robin moves on");
    let b2 = append_one(j, &t, p2, Record::new("b").with_id(&id_b)).await;
    assert_eq!(
        b2,
        Appended {
            partition: p1,
            offset: b.offset,
            duplicate: true
        }
    );

    // A batch mixing duplicates, new ids and records without ids.
    let before = describe_partition(j, &t, 2).await.next_offset;
    let batch = vec![
        Record::new("dup-a").with_id(&id_a),
        Record::new("new-c").with_id(format!("{prefix}-c")),
        Record::new("no-id"),
        Record::new("no-id"),
        Record::new("dup-b").with_id(&id_b),
    ];
    let out = append(j, &t, 2, batch, None).await;
    assert_eq!(
        out[0],
        Appended {
            partition: 0,
            offset: a.offset,
            duplicate: true
        }
    );
    assert_eq!(
        out[4],
        Appended {
            partition: p1,
            offset: b.offset,
            duplicate: true
        }
    );
    for a in &out[1..4] {
        assert!(!a.duplicate && a.partition == 2, "{out:?}");
        assert!(a.offset >= before);
    }
    assert!(
        out[1].offset < out[2].offset && out[2].offset < out[3].offset,
        "{out:?}"
    );
    let p2_records = read_all(j, &t, 2).await;
    let payloads: Vec<&[u8]> = p2_records.iter().map(|r| r.payload.as_ref()).collect();
    assert!(
        payloads.ends_with(&[b"new-c".as_slice(), b"no-id", b"no-id"]),
        "only the new records were written: {payloads:?}"
    );
    assert!(!payloads.contains(&b"dup-a".as_slice()) && !payloads.contains(&b"dup-b".as_slice()));

    // The same new id twice in one batch: written once, the repeat is its duplicate.
    let id_d = format!("{prefix}-d");
    let out = append(
        j,
        &t,
        1,
        vec![
            Record::new("d1").with_id(&id_d),
            Record::new("d2").with_id(&id_d),
        ],
        None,
    )
    .await;
    assert!(!out[0].duplicate, "{out:?}");
    assert_eq!(
        out[1],
        Appended {
            duplicate: true,
            ..out[0]
        },
        "a repeat within a batch"
    );
    let p1: Vec<StoredRecord> = read_all(j, &t, 1).await;
    assert_eq!(
        p1.iter()
            .filter(|r| r.id.as_deref() == Some(id_d.as_str()))
            .count(),
        1
    );

    // An all-duplicate batch writes nothing.
    let next = describe_partition(j, &t, 0).await.next_offset;
    let out = append(j, &t, 0, vec![Record::new("x").with_id(&id_a)], None).await;
    assert!(out[0].duplicate);
    assert_eq!(
        describe_partition(j, &t, 0).await.next_offset,
        next,
        "nothing written"
    );
    delete(j, &t).await;
}

/// With `dedup-window-ms = 0` the same id is appended every time.
pub async fn dedup_window_zero_disables_dedup(j: &dyn Journal, prefix: &str) {
    let t = topic(prefix, "t");
    create(
        j,
        &t,
        TopicConfig {
            dedup_window_ms: 0,
            ..config(1)
        },
    )
    .await;
    let id = format!("{prefix}-same");
    let a = append_one(j, &t, 0, Record::new("1").with_id(&id)).await;
    let b = append_one(j, &t, 0, Record::new("2").with_id(&id)).await;
    assert!(!a.duplicate && !b.duplicate, "{a:?} {b:?}");
    assert!(b.offset > a.offset);
    let got = read_all(j, &t, 0).await;
    assert_eq!(got.len(), 2);
    assert!(got.iter().all(|r| r.id.as_deref() == Some(id.as_str())));
    delete(j, &t).await;
}

/// Ids are forgotten once the dedup window has passed.
pub async fn dedup_ids_expire(j: &dyn Journal, prefix: &str) {
    const WINDOW_MS: u64 = 500;
    let t = topic(prefix, "t");
    create(
        j,
        &t,
        TopicConfig {
            dedup_window_ms: WINDOW_MS,
            ..config(1)
        },
    )
    .await;
    let id = format!("{prefix}-x");
    let started = Instant::now();
    let a = append_one(j, &t, 0, Record::new("1").with_id(&id)).await;
    let b = append_one(j, &t, 0, Record::new("2").with_id(&id)).await;
    // Only meaningful if the machine was not too slow to stay within the window.
    if started.elapsed() < Duration::from_millis(WINDOW_MS / 2) {
        assert_eq!(
            b,
            Appended {
                duplicate: true,
                ..a
            },
            "within the window: a duplicate"
        );
    }
    // Waiting out the window is what this case is about: there is no event to await.
    tokio::time::sleep(Duration::from_millis(WINDOW_MS * 2 + 100)).await;
    let c = append_one(j, &t, 0, Record::new("3").with_id(&id)).await;
    assert!(!c.duplicate, "after the window the id is new again: {c:?}");
    assert!(c.offset > a.offset);
    let d = append_one(j, &t, 0, Record::new("4").with_id(&id)).await;
    assert_eq!(
        d,
        Appended {
            duplicate: true,
            ..c
        },
        "and now remembered from the new append"
    );
    delete(j, &t).await;
}

/// Optimistic concurrency: `NoRecord`, then `LastOffset(x)`; a wrong expectation fails with
/// [`Error::Conflict`] and writes nothing (not even its ids into the dedup window); an
/// all-duplicate batch with a stale expectation returns the duplicates.
pub async fn conflicts(j: &dyn Journal, prefix: &str) {
    let t = topic(prefix, "t");
    create(
        j,
        &t,
        TopicConfig {
            dedup_window_ms: 60_000,
            ..config(3)
        },
    )
    .await;
    let key = "acct-1";
    let kb = Bytes::from(key);
    let p = j
        .choose_partition(&t, &PartitionChoice::Key(kb.clone()))
        .await
        .expect("choose");
    let exp = |expected| {
        Some(Expectation {
            key: kb.clone(),
            expected,
        })
    };
    let rec = |n: &str| {
        Record::new(format!("{key}-{n}"))
            .with_key(key)
            .with_id(format!("{prefix}-{n}"))
    };

    let e1 = append(j, &t, p, vec![rec("e1")], exp(Expected::NoRecord)).await[0];
    assert!(!e1.duplicate);

    let next = describe_partition(j, &t, p).await.next_offset;
    let r = j
        .append(&t, p, vec![rec("e2")], exp(Expected::NoRecord))
        .await;
    expect_conflict(r, &t, p, key, Expected::NoRecord, Some(e1.offset));
    let r = j
        .append(
            &t,
            p,
            vec![rec("e2")],
            exp(Expected::LastOffset(e1.offset + 1000)),
        )
        .await;
    expect_conflict(
        r,
        &t,
        p,
        key,
        Expected::LastOffset(e1.offset + 1000),
        Some(e1.offset),
    );
    assert_eq!(
        describe_partition(j, &t, p).await.next_offset,
        next,
        "a conflict writes nothing"
    );

    // e2 was never written, so it is not a duplicate now.
    let e2 = append(
        j,
        &t,
        p,
        vec![rec("e2")],
        exp(Expected::LastOffset(e1.offset)),
    )
    .await[0];
    assert!(
        !e2.duplicate,
        "an id from a conflicting append must not be remembered: {e2:?}"
    );
    assert!(e2.offset > e1.offset);
    let r = j
        .append(&t, p, vec![rec("e3")], exp(Expected::LastOffset(e1.offset)))
        .await;
    expect_conflict(
        r,
        &t,
        p,
        key,
        Expected::LastOffset(e1.offset),
        Some(e2.offset),
    );

    // A batch: the key's last offset becomes the batch's last record with that key.
    let out = append(
        j,
        &t,
        p,
        vec![rec("e3"), rec("e4")],
        exp(Expected::LastOffset(e2.offset)),
    )
    .await;
    let e4 = out[1];
    let r = j
        .append(
            &t,
            p,
            vec![rec("e5")],
            exp(Expected::LastOffset(out[0].offset)),
        )
        .await;
    expect_conflict(
        r,
        &t,
        p,
        key,
        Expected::LastOffset(out[0].offset),
        Some(e4.offset),
    );

    // Records of other keys (and without keys) do not move this key's last offset.
    let other = Record::new("other").with_key("someone-else");
    append(
        j,
        &t,
        p,
        vec![other, Record::new("keyless")],
        exp(Expected::LastOffset(e4.offset)),
    )
    .await;
    let e5 = append(
        j,
        &t,
        p,
        vec![rec("e5")],
        exp(Expected::LastOffset(e4.offset)),
    )
    .await[0];

    // A key with no record: NoRecord passes, LastOffset conflicts with `actual: None`.
    let fresh = "acct-2";
    let fb = Bytes::from(fresh);
    let fp = j
        .choose_partition(&t, &PartitionChoice::Key(fb.clone()))
        .await
        .expect("choose");
    let r = j
        .append(
            &t,
            fp,
            vec![Record::new("x").with_key(fresh)],
            Some(Expectation {
                key: fb.clone(),
                expected: Expected::LastOffset(0),
            }),
        )
        .await;
    expect_conflict(r, &t, fp, fresh, Expected::LastOffset(0), None);
    let nr = Some(Expectation {
        key: fb.clone(),
        expected: Expected::NoRecord,
    });
    append(j, &t, fp, vec![Record::new("x").with_key(fresh)], nr).await;

    // Expectations are per partition: the key has no record in another partition.
    let q = (p + 1) % 3;
    append(
        j,
        &t,
        q,
        vec![Record::new("x").with_key(key)],
        exp(Expected::NoRecord),
    )
    .await;

    // All duplicates with a stale expectation: the duplicates, no conflict.
    let next = describe_partition(j, &t, p).await.next_offset;
    let out = append(
        j,
        &t,
        p,
        vec![rec("e2"), rec("e1")],
        exp(Expected::NoRecord),
    )
    .await;
    assert_eq!(
        out[0],
        Appended {
            partition: p,
            offset: e2.offset,
            duplicate: true
        }
    );
    assert_eq!(
        out[1],
        Appended {
            partition: p,
            offset: e1.offset,
            duplicate: true
        }
    );
    assert_eq!(
        describe_partition(j, &t, p).await.next_offset,
        next,
        "nothing written"
    );
    // But a new record in the batch makes the expectation count.
    let r = j
        .append(&t, p, vec![rec("e1"), rec("e6")], exp(Expected::NoRecord))
        .await;
    expect_conflict(r, &t, p, key, Expected::NoRecord, Some(e5.offset));
    assert_eq!(
        describe_partition(j, &t, p).await.next_offset,
        next,
        "nothing written"
    );

    let got: Vec<Option<String>> = read_all(j, &t, p)
        .await
        .into_iter()
        .filter(|r| r.key == Some(kb.clone()))
        .map(|r| r.id)
        .collect();
    let want: Vec<Option<String>> = ["e1", "e2", "e3", "e4", "e5"]
        .iter()
        .map(|n| Some(format!("{prefix}-{n}")))
        .collect();
    assert_eq!(
        got, want,
        "exactly the successful appends are in the partition, in order"
    );
    delete(j, &t).await;
}

/// Concurrent appends that all expect the same last offset: exactly one wins.
pub async fn concurrent_expectations_admit_one_writer(j: &dyn Journal, prefix: &str) {
    let t = topic(prefix, "t");
    create(j, &t, config(1)).await;
    let key = Bytes::from("aggregate");
    let first = append(
        j,
        &t,
        0,
        vec![Record::new("created").with_key(key.clone())],
        Some(Expectation {
            key: key.clone(),
            expected: Expected::NoRecord,
        }),
    )
    .await[0];
    for round in 0..5 {
        let last = read_all(j, &t, 0).await.last().expect("records").offset;
        let t = &t;
        let attempts = (0..8).map(|w| {
            let key = key.clone();
            async move {
                j.append(
                    t,
                    0,
                    vec![Record::new(format!("r{round}-w{w}")).with_key(key.clone())],
                    Some(Expectation {
                        key,
                        expected: Expected::LastOffset(last),
                    }),
                )
                .await
            }
        });
        let results = join_all(attempts.collect()).await;
        let wins = results.iter().filter(|r| r.is_ok()).count();
        assert_eq!(
            wins, 1,
            "exactly one of 8 racing appends wins round {round}: {results:?}"
        );
        for r in results.into_iter().filter(|r| r.is_err()) {
            assert!(
                matches!(r, Err(Error::Conflict { .. })),
                "losers get a conflict: {r:?}"
            );
        }
    }
    let got = read_all(j, &t, 0).await;
    assert_eq!(got.len(), 6, "one record per round plus the first");
    assert_eq!(got[0].offset, first.offset);
    delete(j, &t).await;
}

/// `offset_for_time` before, at, between and after the records; timestamps are the append
/// time and never decrease.
pub async fn time_seek(j: &dyn Journal, prefix: &str) {
    let t = topic(prefix, "t");
    create(j, &t, config(1)).await;
    let empty = describe_partition(j, &t, 0).await.next_offset;
    let at0 = j
        .offset_for_time(&t, 0, Timestamp(0))
        .await
        .expect("offset_for_time");
    assert_eq!(at0, empty, "an empty partition: next_offset");

    let before = Timestamp::now();
    append_one(j, &t, 0, Record::new("a")).await;
    // Distinct timestamps are what this case needs; the clock is the event.
    tokio::time::sleep(Duration::from_millis(20)).await;
    append(j, &t, 0, vec![Record::new("b1"), Record::new("b2")], None).await;
    tokio::time::sleep(Duration::from_millis(20)).await;
    for _ in 0..5 {
        append_one(j, &t, 0, Record::new("c")).await;
    }
    tokio::time::sleep(Duration::from_millis(20)).await;
    append_one(j, &t, 0, Record::new("d")).await;
    let after = Timestamp::now();

    let got = read_all(j, &t, 0).await;
    assert_eq!(got.len(), 9);
    let slack = 2_000;
    for r in &got {
        assert!(
            r.timestamp.0 >= before.0 - slack && r.timestamp.0 <= after.0 + slack,
            "timestamp {:?} of offset {} is the append time ({before:?}..{after:?})",
            r.timestamp,
            r.offset
        );
    }
    let (a, b, c, d) = (
        got[0].timestamp,
        got[1].timestamp,
        got[3].timestamp,
        got[8].timestamp,
    );
    assert!(
        a < b && b < c && c < d,
        "appends 20 ms apart get later timestamps: {got:?}"
    );
    let next = describe_partition(j, &t, 0).await.next_offset;
    let expected = |at: Timestamp| {
        got.iter()
            .find(|r| r.timestamp >= at)
            .map(|r| r.offset)
            .unwrap_or(next)
    };
    let probes = [
        Timestamp(i64::MIN),
        Timestamp(0),
        Timestamp(a.0 - 1),
        a,
        Timestamp(a.0 + 1),
        Timestamp(b.0 - 1),
        b,
        Timestamp(b.0 + 1),
        c,
        Timestamp(c.0 + 1),
        d,
        Timestamp(d.0 + 1),
        Timestamp(i64::MAX),
    ];
    for at in probes {
        let got_off = j.offset_for_time(&t, 0, at).await.expect("offset_for_time");
        assert_eq!(got_off, expected(at), "offset_for_time({at:?})");
    }
    assert_eq!(
        j.offset_for_time(&t, 0, a).await.expect("seek"),
        got[0].offset
    );
    assert_eq!(
        j.offset_for_time(&t, 0, b).await.expect("seek"),
        got[1].offset,
        "first of the batch"
    );
    assert_eq!(
        j.offset_for_time(&t, 0, Timestamp(d.0 + 1))
            .await
            .expect("seek"),
        next
    );
    delete(j, &t).await;
}

/// `max_records` and `max_bytes` bound a read, which still returns at least one record.
pub async fn read_limits(j: &dyn Journal, prefix: &str) {
    let t = topic(prefix, "t");
    create(j, &t, config(1)).await;
    let records: Vec<Record> = (0..10).map(|i| Record::new(payload(i, 1000))).collect();
    let out = append(j, &t, 0, records.clone(), None).await;
    let big = append_one(j, &t, 0, Record::new(vec![7u8; 10_000])).await;
    let first = out[0].offset;

    let b = read(
        j,
        &t,
        0,
        first,
        ReadLimits {
            max_records: 3,
            max_bytes: 1 << 20,
        },
    )
    .await;
    assert_eq!(b.records.len(), 3, "max_records = 3");
    let b = read(
        j,
        &t,
        0,
        first,
        ReadLimits {
            max_records: 1,
            max_bytes: 1 << 20,
        },
    )
    .await;
    assert_eq!(b.records.len(), 1, "max_records = 1");
    let b = read(
        j,
        &t,
        0,
        first,
        ReadLimits {
            max_records: 100,
            max_bytes: 1,
        },
    )
    .await;
    assert_eq!(
        b.records.len(),
        1,
        "max_bytes smaller than a record still returns one"
    );
    assert_eq!(b.records[0].offset, first);
    let b = read(
        j,
        &t,
        0,
        first,
        ReadLimits {
            max_records: 100,
            max_bytes: 3_500,
        },
    )
    .await;
    assert!(
        (1..=3).contains(&b.records.len()),
        "3,500 bytes hold at most 3 records of 1,000"
    );
    let b = read(
        j,
        &t,
        0,
        big.offset,
        ReadLimits {
            max_records: 100,
            max_bytes: 100,
        },
    )
    .await;
    assert_eq!(
        b.records.len(),
        1,
        "a record larger than max_bytes is returned alone"
    );
    assert_eq!(b.records[0].payload.len(), 10_000);
    let b = read(
        j,
        &t,
        0,
        first,
        ReadLimits {
            max_records: 100,
            max_bytes: 1 << 20,
        },
    )
    .await;
    assert_eq!(b.records.len(), 11, "generous limits return everything");

    // Stepping through with small limits visits every record once, in order.
    for limits in [
        ReadLimits {
            max_records: 3,
            max_bytes: 1 << 20,
        },
        ReadLimits {
            max_records: 100,
            max_bytes: 2_500,
        },
        ReadLimits {
            max_records: 2,
            max_bytes: 1,
        },
    ] {
        let mut from = 0;
        let mut seen = Vec::new();
        loop {
            let b = read(j, &t, 0, from, limits).await;
            if b.records.is_empty() {
                break;
            }
            from = b.next_offset;
            seen.extend(b.records.into_iter().map(|r| r.payload));
        }
        let want: Vec<Bytes> = records
            .iter()
            .map(|r| r.payload.clone())
            .chain([Bytes::from(vec![7u8; 10_000])])
            .collect();
        assert_eq!(seen, want, "stepping with {limits:?}");
    }
    delete(j, &t).await;
}

/// `wait_for` returns at once when a record is readable, waits otherwise, and is woken by an
/// append to its partition (and not by one to another partition).
pub async fn tail_wakeups(j: &dyn Journal, prefix: &str) {
    let t = topic(prefix, "t");
    create(j, &t, config(2)).await;
    let start = describe_partition(j, &t, 0).await.next_offset;

    let mut wait = j.wait_for(&t, 0, start);
    let mut wait2 = j.wait_for(&t, 0, start);
    assert!(
        poll_once(&mut wait).await.is_none(),
        "nothing to wait for yet"
    );
    // Check it does not resolve by itself.
    assert!(
        tokio::time::timeout(Duration::from_millis(100), &mut wait)
            .await
            .is_err()
    );
    append_one(j, &t, 1, Record::new("other partition")).await;
    assert!(
        poll_once(&mut wait).await.is_none(),
        "an append to partition 1 does not wake 0"
    );

    // The append runs concurrently with the waiters, as another task would.
    let appender = async {
        tokio::task::yield_now().await;
        append_one(j, &t, 0, Record::new("wake")).await
    };
    let waiters = async {
        let a = tokio::time::timeout(WAIT, &mut wait).await;
        let b = tokio::time::timeout(WAIT, &mut wait2).await;
        (a, b)
    };
    let (appended, (a, b)) = tokio::join!(appender, waiters);
    for r in [a, b] {
        let next = r
            .expect("wait_for must wake on an append")
            .expect("wait_for");
        assert!(
            next > appended.offset,
            "wait_for returns the new next_offset: {next}"
        );
    }

    // Already readable: returns at once.
    let now = tokio::time::timeout(WAIT, j.wait_for(&t, 0, appended.offset))
        .await
        .expect("wait_for on a readable offset returns at once")
        .expect("wait_for");
    assert_eq!(now, describe_partition(j, &t, 0).await.next_offset);
    let now = tokio::time::timeout(WAIT, j.wait_for(&t, 0, 0))
        .await
        .expect("at once");
    assert!(now.expect("wait_for") > appended.offset);

    // Waiting further ahead: only wakes once a record at or past that offset exists.
    let next = describe_partition(j, &t, 0).await.next_offset;
    let mut ahead = j.wait_for(&t, 0, next + 3);
    assert!(poll_once(&mut ahead).await.is_none());
    let mut woke = None;
    for i in 0..20 {
        let a = append_one(j, &t, 0, Record::new(format!("n{i}"))).await;
        let polled = poll_once(&mut ahead).await;
        if a.offset < next + 3 {
            assert!(
                polled.is_none(),
                "woke at offset {} before {}",
                a.offset,
                next + 3
            );
        } else {
            woke = Some(match polled {
                Some(r) => r,
                None => tokio::time::timeout(WAIT, &mut ahead).await.expect("wakes"),
            });
            break;
        }
    }
    let woke = woke
        .expect("an append reached the awaited offset")
        .expect("wait_for");
    assert!(woke > next + 3);

    // Cancel-safe: a dropped wait leaves the partition working.
    let dropped = j.wait_for(&t, 1, 1 << 40);
    drop(dropped);
    append_one(j, &t, 1, Record::new("after a dropped wait")).await;
    delete(j, &t).await;
}

/// A wait on a topic that is deleted ends with [`Error::TopicNotFound`]; a wait on a missing
/// topic fails at once.
pub async fn tail_on_deleted_topic(j: &dyn Journal, prefix: &str) {
    let t = topic(prefix, "t");
    create(j, &t, config(2)).await;
    let mut waits = vec![j.wait_for(&t, 0, 0), j.wait_for(&t, 1, 0)];
    for w in &mut waits {
        assert!(poll_once(w).await.is_none());
    }
    delete(j, &t).await;
    for w in waits {
        let r = tokio::time::timeout(WAIT, w)
            .await
            .expect("a wait on a deleted topic ends");
        expect_topic_not_found(r, &t, "wait_for across delete_topic");
    }
    let missing = topic(prefix, "never");
    let r = tokio::time::timeout(WAIT, j.wait_for(&missing, 0, 0))
        .await
        .expect("at once");
    expect_topic_not_found(r, &missing, "wait_for");
}

/// 8 concurrent appenders × 200 appends (some of them batches): every record is present
/// exactly once, at its acknowledged offset, and each key's records are in append order.
pub async fn concurrent_appenders(j: &dyn Journal, prefix: &str) {
    let t = topic(prefix, "t");
    create(
        j,
        &t,
        TopicConfig {
            durability: Durability::Always,
            ..config(4)
        },
    )
    .await;
    let tasks = (0..8).map(|task| {
        let t = t.clone();
        async move { appender_task(j, &t, prefix, task).await }
    });
    let acks: Vec<(String, Appended)> = join_all(tasks.collect())
        .await
        .into_iter()
        .flatten()
        .collect();
    check_concurrent(j, &t, acks).await;
    delete(j, &t).await;
}

/// The same as [`concurrent_appenders`], with every appender in its own spawned task (so on
/// several runtime threads under a multi-threaded runtime).
pub async fn concurrent_appenders_spawned<J: Journal + Clone>(j: J, prefix: &str) {
    let t = topic(prefix, "t");
    create(
        &j,
        &t,
        TopicConfig {
            durability: Durability::Always,
            ..config(4)
        },
    )
    .await;
    let mut set = tokio::task::JoinSet::new();
    for task in 0..8 {
        let (j, t, prefix) = (j.clone(), t.clone(), prefix.to_owned());
        set.spawn(async move { appender_task(&j, &t, &prefix, task).await });
    }
    let mut acks = Vec::new();
    while let Some(r) = set.join_next().await {
        acks.extend(r.expect("appender task"));
    }
    check_concurrent(&j, &t, acks).await;
    delete(&j, &t).await;
}

async fn appender_task(
    j: &dyn Journal,
    t: &TopicName,
    prefix: &str,
    task: usize,
) -> Vec<(String, Appended)> {
    let mut acks = Vec::new();
    let mut seq = 0;
    for i in 0..200 {
        let key = Bytes::from(format!("t{task}-k{}", i % 4));
        let p = j
            .choose_partition(t, &PartitionChoice::Key(key.clone()))
            .await
            .expect("choose");
        let n = if i % 7 == 0 { 3 } else { 1 };
        let mut ids = Vec::new();
        let records = (0..n)
            .map(|_| {
                let id = format!("{prefix}-t{task}-{seq:04}");
                seq += 1;
                ids.push(id.clone());
                Record::new(format!("payload of {id}"))
                    .with_id(id)
                    .with_key(key.clone())
            })
            .collect();
        let out = append(j, t, p, records, None).await;
        for (id, a) in ids.into_iter().zip(out) {
            assert!(!a.duplicate && a.partition == p, "{id}: {a:?}");
            acks.push((id, a));
        }
    }
    acks
}

async fn check_concurrent(j: &dyn Journal, t: &TopicName, acks: Vec<(String, Appended)>) {
    assert_eq!(
        acks.len(),
        8 * (200 + 2 * 29),
        "every append was acknowledged"
    );
    let mut by_id: HashMap<String, (Partition, Offset)> = HashMap::new();
    let mut at: HashSet<(Partition, Offset)> = HashSet::new();
    for (id, a) in &acks {
        assert!(
            at.insert((a.partition, a.offset)),
            "two records acknowledged at {a:?}"
        );
        by_id.insert(id.clone(), (a.partition, a.offset));
    }
    let mut seen: HashSet<String> = HashSet::new();
    let mut last_by_key: HashMap<Bytes, String> = HashMap::new();
    let info = j.describe_topic(t).await.expect("describe");
    for p in 0..info.partitions.len() as Partition {
        for r in read_all(j, t, p).await {
            let id = r.id.clone().expect("every record has an id");
            assert!(seen.insert(id.clone()), "{id} is in the journal twice");
            assert_eq!(
                by_id.get(&id),
                Some(&(p, r.offset)),
                "{id} is at its acknowledged place"
            );
            assert_eq!(
                r.payload,
                Bytes::from(format!("payload of {id}")),
                "{id}: payload"
            );
            let key = r.key.clone().expect("every record has a key");
            if let Some(prev) = last_by_key.insert(key.clone(), id.clone()) {
                assert!(prev < id, "per-key order of {key:?}: {prev} before {id}");
            }
        }
    }
    assert_eq!(
        seen.len(),
        acks.len(),
        "every acknowledged record is present"
    );
}

/// Retention by size removes the oldest records (whole sealed segments on the file backend,
/// single messages on JetStream) once the partition holds more than `retention.max-bytes`;
/// reads from before the oldest retained record start at it.
pub async fn retention_by_size(j: &dyn Journal, prefix: &str) {
    let t = topic(prefix, "t");
    let cfg = TopicConfig {
        segment_bytes: 4096,
        retention: Retention {
            max_age_ms: None,
            max_bytes: Some(16 * 1024),
        },
        ..config(1)
    };
    create(j, &t, cfg).await;
    let early = Bytes::from("early-key");
    let no_record = || {
        Some(Expectation {
            key: early.clone(),
            expected: Expected::NoRecord,
        })
    };
    let e = append(
        j,
        &t,
        0,
        vec![Record::new("early").with_key(early.clone())],
        no_record(),
    )
    .await[0];
    let acks = fill(j, &t, 200, 300).await;
    let info = wait_for_retention(j, &t, e.offset, |i| i.bytes <= 16 * 1024).await;
    check_retained(j, &t, &info, &acks).await;
    // The key's only record is gone with retention: the key has no record any more.
    append(
        j,
        &t,
        0,
        vec![Record::new("again").with_key(early.clone())],
        no_record(),
    )
    .await;
    delete(j, &t).await;
}

/// Retention by age removes records older than `retention.max-age-ms` (on the file backend,
/// sealed segments whose newest record is; JetStream may remove every record, leaving the
/// partition empty with its next offset where it was).
pub async fn retention_by_age(j: &dyn Journal, prefix: &str) {
    let t = topic(prefix, "t");
    let cfg = TopicConfig {
        segment_bytes: 4096,
        retention: Retention {
            max_age_ms: Some(300),
            max_bytes: None,
        },
        ..config(1)
    };
    create(j, &t, cfg).await;
    let acks = fill(j, &t, 60, 300).await;
    let info = wait_for_retention(j, &t, acks[0].1, |_| true).await;
    check_retained(j, &t, &info, &acks).await;
    delete(j, &t).await;
}

/// Retention configured by `update_topic` on a topic that already holds data is enforced.
pub async fn retention_applies_after_update(j: &dyn Journal, prefix: &str) {
    let t = topic(prefix, "t");
    let cfg = TopicConfig {
        segment_bytes: 4096,
        ..config(1)
    };
    create(j, &t, cfg).await;
    let acks = fill(j, &t, 120, 300).await;
    let first = describe_partition(j, &t, 0).await.first_offset;
    assert!(
        first <= acks[0].1,
        "no retention yet, so nothing was removed"
    );
    let retained = Retention {
        max_age_ms: None,
        max_bytes: Some(8192),
    };
    j.update_topic(
        &t,
        TopicConfig {
            retention: retained,
            ..cfg
        },
    )
    .await
    .expect("update_topic with retention");
    let info = wait_for_retention(j, &t, acks[0].1, |i| i.bytes <= 8192 + 4096).await;
    check_retained(j, &t, &info, &acks).await;
    delete(j, &t).await;
}

/// Appends `n` records of `len` bytes one at a time; returns (payload, offset) per record.
async fn fill(j: &dyn Journal, t: &TopicName, n: usize, len: usize) -> Vec<(Bytes, Offset)> {
    let mut acks = Vec::new();
    for i in 0..n {
        let p = payload(i, len);
        let a = append_one(j, t, 0, Record::new(p.clone())).await;
        acks.push((p, a.offset));
    }
    acks
}

/// Polls `describe_topic` until partition 0's first offset moved past `first` and `done`
/// holds. Retention runs in the background, so polling with a deadline is the way to see it.
async fn wait_for_retention(
    j: &dyn Journal,
    t: &TopicName,
    first: Offset,
    done: impl Fn(&crate::PartitionInfo) -> bool,
) -> crate::PartitionInfo {
    let deadline = Instant::now() + RETENTION_WAIT;
    loop {
        let info = describe_partition(j, t, 0).await;
        if info.first_offset > first && done(&info) {
            return info;
        }
        assert!(
            Instant::now() < deadline,
            "retention was not enforced on {t} within {RETENTION_WAIT:?}: {info:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn check_retained(
    j: &dyn Journal,
    t: &TopicName,
    info: &crate::PartitionInfo,
    acks: &[(Bytes, Offset)],
) {
    let last = acks.last().expect("records").1;
    assert!(
        info.next_offset > last,
        "retention does not move next_offset back: {info:?}"
    );
    let got = read_all(j, t, 0).await;
    if let Some(oldest) = got.first() {
        assert!(
            oldest.offset >= info.first_offset,
            "nothing before first_offset is read"
        );
        let b = read(j, t, 0, 0, ReadLimits::default()).await;
        assert_eq!(
            b.records[0].offset, oldest.offset,
            "a read from 0 starts at the oldest"
        );
        let at = j
            .offset_for_time(t, 0, Timestamp(0))
            .await
            .expect("offset_for_time");
        assert_eq!(
            at, oldest.offset,
            "a time seek to 0 lands on the oldest retained record"
        );
    }
    let by_offset: BTreeMap<Offset, &Bytes> = acks.iter().map(|(p, o)| (*o, p)).collect();
    let retained: Vec<Offset> = by_offset
        .range(info.first_offset..)
        .map(|(o, _)| *o)
        .collect();
    let got_offsets: Vec<Offset> = got.iter().map(|r| r.offset).collect();
    // A record appended after `describe` may have been removed since; compare the tail.
    assert!(
        retained.ends_with(&got_offsets),
        "the retained records are exactly the newest ones: {got_offsets:?} vs {retained:?}"
    );
    for r in &got {
        assert_eq!(
            by_offset.get(&r.offset).copied(),
            Some(&r.payload),
            "offset {}",
            r.offset
        );
    }
}

/// Ids, keys, headers and payloads come back byte for byte, including empty and binary ones.
pub async fn records_round_trip(j: &dyn Journal, prefix: &str) {
    let t = topic(prefix, "t");
    create(j, &t, config(1)).await;
    let all_bytes: Vec<u8> = (0..=255u8).cycle().take(1024).collect();
    let records = vec![
        Record::new(Bytes::new()),
        Record::new(all_bytes.clone()),
        Record::new("with everything")
            .with_id(format!("{prefix}-id-ü-✓"))
            .with_key(Bytes::from_static(&[0, 255, 1, 254, 0]))
            .with_header("content-type", "application/json")
            .with_header("x-binary", Bytes::from_static(&[0, 1, 2, 255, 0]))
            .with_header("x-empty", Bytes::new())
            .with_header("x-dup", "1")
            .with_header("x-dup", "2")
            .with_header(
                "traceparent",
                "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
            ),
        Record::new(Bytes::new())
            .with_key("")
            .with_header("only", "header"),
        Record::new(vec![0u8; 256 * 1024]).with_id(format!("{prefix}-large")),
        Record::new("\n\r\0\u{1F600}").with_key("key with spaces / and: colons"),
    ];
    let out = append(j, &t, 0, records[..3].to_vec(), None).await;
    let mut offsets: Vec<Offset> = out.iter().map(|a| a.offset).collect();
    for r in &records[3..] {
        offsets.push(append_one(j, &t, 0, r.clone()).await.offset);
    }
    let got = read_all(j, &t, 0).await;
    assert_eq!(got.len(), records.len());
    for ((s, r), o) in got.iter().zip(&records).zip(&offsets) {
        assert_eq!(s.offset, *o);
        assert_record_eq(s, r, &format!("round trip of offset {o}"));
    }
    delete(j, &t).await;
}

/// Appends are acknowledged, readable and wake tails under every durability, and a topic's
/// durability can change while it holds records.
pub async fn every_durability_acknowledges(j: &dyn Journal, prefix: &str) {
    let modes = [
        Durability::Always,
        Durability::Os,
        Durability::Interval(Duration::from_millis(5)),
        Durability::Interval(Duration::from_secs(3600)),
    ];
    for (i, durability) in modes.into_iter().enumerate() {
        let t = topic(prefix, &format!("d{i}"));
        let cfg = TopicConfig {
            durability,
            ..config(2)
        };
        create(j, &t, cfg).await;
        let mut wait = j.wait_for(&t, 1, 0);
        assert!(poll_once(&mut wait).await.is_none());
        let writers = (0..4).map(|w| {
            let t = &t;
            async move {
                let mut acks = Vec::new();
                for n in 0..25 {
                    let r = Record::new(format!("{durability} w{w} n{n}"));
                    acks.push(append(j, t, (w % 2) as Partition, vec![r], None).await[0]);
                }
                acks
            }
        });
        let acks: Vec<Appended> = join_all(writers.collect())
            .await
            .into_iter()
            .flatten()
            .collect();
        let woke = tokio::time::timeout(WAIT, wait).await;
        assert!(
            woke.expect("a tail wakes").expect("wait_for") > 0,
            "{durability}"
        );
        for p in 0..2 {
            let got = read_all(j, &t, p).await;
            assert_eq!(
                got.len(),
                50,
                "{durability}: every acknowledged record of {p} reads"
            );
            for a in acks.iter().filter(|a| a.partition == p) {
                assert!(
                    got.iter().any(|r| r.offset == a.offset),
                    "{durability}: {a:?}"
                );
            }
        }
        let next = modes[(i + 1) % modes.len()];
        j.update_topic(
            &t,
            TopicConfig {
                durability: next,
                ..cfg
            },
        )
        .await
        .expect("change durability");
        append(j, &t, 0, vec![Record::new("after the change")], None).await;
        assert_eq!(read_all(j, &t, 0).await.len(), 51, "{durability} -> {next}");
        delete(j, &t).await;
    }
}

/// A follower that only uses `wait_for` and `read` sees every record of concurrent
/// appenders exactly once, in offset order, and nothing that was not appended.
pub async fn tail_follower_sees_every_record(j: &dyn Journal, prefix: &str) {
    let t = topic(prefix, "t");
    create(
        j,
        &t,
        TopicConfig {
            durability: Durability::Always,
            ..config(1)
        },
    )
    .await;
    const WRITERS: usize = 4;
    const PER_WRITER: usize = 100;
    let total = WRITERS * PER_WRITER;
    let follower = async {
        let mut seen: Vec<StoredRecord> = Vec::new();
        let mut from = 0;
        while seen.len() < total {
            let b = read(
                j,
                &t,
                0,
                from,
                ReadLimits {
                    max_records: 7,
                    max_bytes: 1 << 20,
                },
            )
            .await;
            if b.records.is_empty() {
                let next = tokio::time::timeout(WAIT, j.wait_for(&t, 0, b.next_offset))
                    .await
                    .unwrap_or_else(|_| {
                        panic!("no wake-up after {} of {total} records", seen.len())
                    })
                    .expect("wait_for");
                assert!(
                    next > b.next_offset,
                    "wait_for returned {next} for {}",
                    b.next_offset
                );
                // Woken means a record at or after the awaited offset is readable now.
                let b = read(j, &t, 0, b.next_offset, ReadLimits::default()).await;
                assert!(
                    !b.records.is_empty(),
                    "wait_for returned but nothing is readable"
                );
                from = b.next_offset;
                seen.extend(b.records);
                continue;
            }
            from = b.next_offset;
            seen.extend(b.records);
        }
        seen
    };
    let writers = (0..WRITERS).map(|w| {
        let t = &t;
        async move {
            let mut acks = Vec::new();
            let mut n = 0;
            while n < PER_WRITER {
                let k = if n % 5 == 0 { 3.min(PER_WRITER - n) } else { 1 };
                let records = (n..n + k)
                    .map(|i| Record::new(format!("w{w}-{i:03}")))
                    .collect();
                acks.extend(append(j, t, 0, records, None).await);
                n += k;
            }
            acks
        }
    });
    let (seen, acks) = tokio::join!(follower, join_all(writers.collect()));
    let acks: Vec<Appended> = acks.into_iter().flatten().collect();
    assert_eq!(seen.len(), total, "the follower saw every record once");
    let mut offsets: Vec<Offset> = acks.iter().map(|a| a.offset).collect();
    offsets.sort_unstable();
    let seen_offsets: Vec<Offset> = seen.iter().map(|r| r.offset).collect();
    assert_eq!(
        seen_offsets, offsets,
        "the follower saw exactly the acknowledged offsets, in order"
    );
    for w in 0..WRITERS {
        let mine: Vec<String> = seen
            .iter()
            .map(|r| String::from_utf8_lossy(&r.payload).into_owned())
            .filter(|p| p.starts_with(&format!("w{w}-")))
            .collect();
        let want: Vec<String> = (0..PER_WRITER).map(|i| format!("w{w}-{i:03}")).collect();
        assert_eq!(mine, want, "writer {w}'s records in its order");
    }
    delete(j, &t).await;
}

/// Readers racing with retention (which removes the segments they read) get either the
/// right record for an offset or a later one, never a wrong or damaged record.
pub async fn reads_during_retention_return_correct_records(j: &dyn Journal, prefix: &str) {
    let t = topic(prefix, "t");
    let cfg = TopicConfig {
        segment_bytes: 4096,
        retention: Retention {
            max_age_ms: None,
            max_bytes: Some(8192),
        },
        ..config(1)
    };
    create(j, &t, cfg).await;
    let done = std::sync::atomic::AtomicBool::new(false);
    let writer = async {
        let mut acks = Vec::new();
        for n in 0..400usize {
            let p = payload(n, 200 + n % 100);
            acks.push((append_one(j, &t, 0, Record::new(p.clone())).await.offset, p));
            if n % 16 == 0 {
                tokio::task::yield_now().await;
            }
        }
        done.store(true, Ordering::Release);
        acks
    };
    let reader = async {
        let mut seen: Vec<StoredRecord> = Vec::new();
        let mut passes = 0;
        while !done.load(Ordering::Acquire) || passes == 0 {
            let mut from = 0;
            loop {
                let l = ReadLimits {
                    max_records: 5,
                    max_bytes: 1 << 20,
                };
                let b = read(j, &t, 0, from, l).await;
                if b.records.is_empty() {
                    break;
                }
                from = b.next_offset;
                seen.extend(b.records);
                tokio::task::yield_now().await;
            }
            passes += 1;
        }
        seen
    };
    let (acks, seen) = tokio::join!(writer, reader);
    let by_offset: HashMap<Offset, Bytes> = acks.into_iter().collect();
    for r in &seen {
        assert_eq!(
            by_offset.get(&r.offset),
            Some(&r.payload),
            "offset {} read during retention",
            r.offset
        );
    }
    delete(j, &t).await;
}
