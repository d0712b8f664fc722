//! Reads by sequence and by time, with batched direct gets filtered to the partition's
//! subjects (`next_by_subj = sy.<topic>.<p>.>`), and each partition's extent.
//!
//! Any replica answers a direct get, and a follower may not have applied the newest
//! messages yet. So a read that comes back short of the highest offset this instance knows
//! in the partition (one it was acknowledged, or one its tail watcher saw) asks again,
//! unless the stream's leader says retention removed that offset meanwhile: a caller never
//! reads less than it was told exists.

use super::api::header_u64;
use super::{NatsJournal, TopicState, envelope, names};
use crate::{Error, PartitionInfo, ReadBatch, ReadLimits, Result};
use async_nats::jetstream::{message::StreamMessage, stream};
use futures::StreamExt as _;
use std::time::{Duration, Instant};
use switchyard_types::{Offset, Partition, StoredRecord, Timestamp};

/// How many records one direct get asks for at most.
const MAX_BATCH: usize = 1000;

/// How long a read waits for a lagging replica to catch up with what it is known to hold.
const CATCH_UP: Duration = Duration::from_secs(5);

pub async fn read(
    j: &NatsJournal,
    t: &TopicState,
    partition: Partition,
    from: Offset,
    limits: ReadLimits,
) -> Result<ReadBatch> {
    let max_records = limits.max_records.clamp(1, MAX_BATCH);
    let max_bytes = limits.max_bytes.clamp(1, 64 << 20);
    let started = Instant::now();
    let mut pause = Duration::from_millis(1);
    loop {
        let known = t.known(partition);
        let mut body = serde_json::json!({
            "next_by_subj": names::partition_filter(&t.name, partition),
            "batch": max_records,
            "max_bytes": max_bytes,
        });
        if from > 0 {
            body["seq"] = from.into();
        }
        let (messages, pending) = j.inner.api.direct_get_batch(&t.stream, body).await?;
        let mut records = Vec::with_capacity(messages.len());
        let mut bytes = 0usize;
        let mut limited = pending > 0;
        for m in messages {
            let r = decode(t, partition, m)?;
            if r.offset < from {
                continue;
            }
            if records.len() == max_records
                || (!records.is_empty() && bytes + r.payload.len() > limits.max_bytes)
            {
                limited = true;
                break;
            }
            bytes += r.payload.len();
            records.push(r);
        }
        let reached = records.last().map_or(0, |r: &StoredRecord| r.offset);
        let complete = limited || records.len() == max_records || reached >= known;
        if complete || known < from || !retained(j, t, known).await? {
            let next_offset = records.last().map_or(from, |r| r.offset + 1);
            if let Some(last) = records.last() {
                t.mark(partition, last.offset);
            }
            return Ok(ReadBatch {
                records,
                next_offset,
            });
        }
        if started.elapsed() > CATCH_UP {
            return Err(Error::Unavailable {
                op: "read",
                reason: format!(
                    "the replicas answering reads of {}/{partition} stayed behind offset \
                     {known} for {CATCH_UP:?}",
                    t.name
                ),
            });
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_millis(100));
    }
}

/// Whether `offset` is still inside the stream (limits retention removes from the front).
async fn retained(j: &NatsJournal, t: &TopicState, offset: Offset) -> Result<bool> {
    match j.inner.api.stream_info(&t.stream).await? {
        Some(info) => Ok(offset >= info.state.first_sequence),
        None => Err(Error::TopicNotFound(t.name.clone())),
    }
}

fn corrupt(t: &TopicState, partition: Partition, offset: Offset, reason: String) -> Error {
    Error::Corrupt {
        topic: t.name.to_string(),
        partition,
        offset,
        path: format!("nats stream {}", t.stream).into(),
        position: offset,
        reason,
    }
}

/// A stored message as a record.
fn decode(t: &TopicState, partition: Partition, m: async_nats::Message) -> Result<StoredRecord> {
    let seq = header_u64(m.headers.as_ref(), "Nats-Sequence").unwrap_or(0);
    let m = StreamMessage::try_from(m).map_err(|e| {
        corrupt(
            t,
            partition,
            seq,
            format!("unreadable direct get reply: {e}"),
        )
    })?;
    let meta = match m.headers.get(envelope::HEADER) {
        Some(v) => {
            envelope::decode(v.as_str()).map_err(|e| corrupt(t, partition, m.sequence, e))?
        }
        None => envelope::Meta::default(),
    };
    Ok(StoredRecord {
        offset: m.sequence,
        timestamp: millis(m.time),
        id: meta.id,
        key: meta.key,
        headers: meta.headers,
        payload: m.payload,
    })
}

fn millis(t: time::OffsetDateTime) -> Timestamp {
    Timestamp((t.unix_timestamp_nanos() / 1_000_000) as i64)
}

/// The first offset of `partition` whose timestamp is at or after `at`.
pub async fn offset_for_time(
    j: &NatsJournal,
    t: &TopicState,
    partition: Partition,
    at: Timestamp,
) -> Result<Offset> {
    let filter = names::partition_filter(&t.name, partition);
    // RFC 3339 holds years 0 to 9999; outside them every record is after, or before.
    const MAX_MS: i64 = 253_402_300_799_999;
    let mut body = serde_json::json!({ "next_by_subj": filter });
    if at.0 > MAX_MS {
        return Ok(extent(j, t, partition, None).await?.next_offset);
    }
    if at.0 > 0 {
        let when = time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(at.0) * 1_000_000)
            .map_err(|e| Error::Unavailable {
                op: "offset for time",
                reason: e.to_string(),
            })?;
        let text = when
            .format(&time::format_description::well_known::Rfc3339)
            .map_err(|e| Error::Unavailable {
                op: "offset for time",
                reason: e.to_string(),
            })?;
        body["start_time"] = text.into();
    }
    match j.inner.api.direct_get_one(&t.stream, body).await? {
        Some(m) => Ok(decode(t, partition, m)?.offset),
        None => Ok(extent(j, t, partition, None).await?.next_offset),
    }
}

/// Every partition's extent. Bytes are estimated: JetStream counts a stream's bytes, not a
/// subject's, so each partition gets the stream's bytes in proportion to its records.
pub async fn partitions(
    j: &NatsJournal,
    t: &TopicState,
    state: &stream::State,
) -> Result<Vec<PartitionInfo>> {
    let mut out: Vec<PartitionInfo> = futures::stream::iter(0..t.partitions())
        .map(|p| extent(j, t, p, Some(state)))
        .buffered(32)
        .collect::<Vec<Result<PartitionInfo>>>()
        .await
        .into_iter()
        .collect::<Result<_>>()?;
    out.sort_by_key(|p| p.partition);
    Ok(out)
}

/// One partition's extent: its first and last record, and its share of the bytes.
async fn extent(
    j: &NatsJournal,
    t: &TopicState,
    partition: Partition,
    state: Option<&stream::State>,
) -> Result<PartitionInfo> {
    let api = &j.inner.api;
    let filter = names::partition_filter(&t.name, partition);
    let (first, pending) = api
        .direct_get_batch(
            &t.stream,
            serde_json::json!({ "next_by_subj": filter, "batch": 1 }),
        )
        .await?;
    let last = match first.is_empty() {
        true => None,
        false => {
            api.direct_get_one(&t.stream, serde_json::json!({ "last_by_subj": filter }))
                .await?
        }
    };
    match (first.into_iter().next(), last) {
        (Some(first), Some(last)) => {
            let first = decode(t, partition, first)?;
            let last = decode(t, partition, last)?;
            let count = pending + 1;
            let bytes = match state {
                Some(s) if s.messages > 0 => {
                    ((u128::from(s.bytes) * u128::from(count)) / u128::from(s.messages)) as u64
                }
                _ => 0,
            };
            Ok(PartitionInfo {
                partition,
                first_offset: first.offset,
                next_offset: last.offset.max(first.offset) + 1,
                bytes: bytes.max(1),
                last_timestamp: Some(last.timestamp),
            })
        }
        _ => {
            // Empty: nothing before the stream's next sequence can appear in it any more.
            let next = match state {
                Some(s) => s.last_sequence + 1,
                None => match api.stream_info(&t.stream).await? {
                    Some(info) => info.state.last_sequence + 1,
                    None => return Err(Error::TopicNotFound(t.name.clone())),
                },
            };
            Ok(PartitionInfo {
                partition,
                first_offset: next,
                next_offset: next,
                bytes: 0,
                last_timestamp: None,
            })
        }
    }
}
