//! Appends: a one-record batch is a plain publish, a longer one a JetStream atomic batch.
//!
//! Dedup is the server's (`Nats-Msg-Id`, per stream, so topic-wide). Two server behaviours
//! shape the code: an atomic batch that holds an id already in the window fails whole, and
//! a single server checks an expectation before dedup. Both failures end in a *probe* of
//! the batch's ids: a publish with an expectation that can never hold, which the server
//! checks after dedup, so it answers a duplicate with its original's sequence and stores
//! nothing otherwise. The duplicates are then taken out and the rest published again, as
//! the `Journal` contract asks.
//!
//! Which expectation is checked after dedup depends on the stream (measured on 2.15): a
//! replicated stream checks dedup before the raft proposal, then the expected last subject
//! sequence, so that is its probe (`Nats-Expected-Last-Msg-Id` there fails only after the
//! id was staged, which leaves the id wedged); a one-replica stream checks the expected
//! last subject sequence before dedup and the expected last message id after it.

use super::api::{PubAck, code};
use super::{NatsJournal, TopicState, envelope, names};
use crate::{Appended, Error, Result};
use async_nats::HeaderMap;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use switchyard_types::{Expectation, Expected, Offset, Partition, Record};

/// The most records one atomic batch may hold (the server's default `max_msgs`).
pub const MAX_BATCH: usize = 1000;

/// Atomic batches one instance keeps in flight per topic: the server accepts 50 per stream
/// (`max_inflight_per_stream`) and drops the rest as incomplete, so three instances at full
/// load stay under it.
pub const BATCHES_IN_FLIGHT: usize = 16;

/// How often a batch the server dropped as incomplete (nothing of it is stored) is sent
/// again.
const INCOMPLETE_RETRIES: u32 = 5;

/// NATS keeps a message's headers under 64 KiB.
const MAX_HEADER_BYTES: usize = 60 * 1024;

/// How often the duplicates are taken out and the rest published again before giving up
/// (each round needs another writer to race on the same ids).
const ROUNDS: usize = 8;

enum Failure {
    Conflict(Option<Offset>),
    DuplicateInBatch,
    Other(Error),
}

pub async fn append(
    j: &NatsJournal,
    t: &TopicState,
    partition: Partition,
    records: Vec<Record>,
    expectation: Option<Expectation>,
) -> Result<Vec<Appended>> {
    if records.is_empty() {
        return Ok(Vec::new());
    }
    let dedup = t.config.dedup_window_ms > 0;
    let max_payload = j.inner.api.max_payload;
    let mut meta = Vec::with_capacity(records.len());
    for (index, r) in records.iter().enumerate() {
        let m = envelope::encode(r.id.as_deref(), r.key.as_deref(), &r.headers);
        let header_bytes = m.as_ref().map_or(0, |m| m.len()) + 256;
        if header_bytes > MAX_HEADER_BYTES {
            return Err(Error::InvalidRecord {
                index,
                reason: format!(
                    "its id, key and headers take {header_bytes} bytes encoded; NATS \
                     JetStream keeps a message's headers under 64 KiB"
                ),
            });
        }
        if r.payload.len() + header_bytes > max_payload {
            return Err(Error::InvalidRecord {
                index,
                reason: format!(
                    "{} bytes with its headers exceed the NATS server's max_payload of {} bytes",
                    r.payload.len() + header_bytes,
                    max_payload
                ),
            });
        }
        meta.push(m);
    }

    // A repeat of an id within the batch is a duplicate of its first occurrence.
    let mut repeat_of: Vec<Option<usize>> = vec![None; records.len()];
    if dedup {
        let mut first: HashMap<&str, usize> = HashMap::new();
        for (i, r) in records.iter().enumerate() {
            if let Some(id) = r.id.as_deref() {
                match first.get(id) {
                    Some(&f) => repeat_of[i] = Some(f),
                    None => {
                        first.insert(id, i);
                    }
                }
            }
        }
    }
    let mut pending: Vec<usize> = (0..records.len())
        .filter(|&i| repeat_of[i].is_none())
        .collect();
    if pending.len() > MAX_BATCH {
        return Err(Error::InvalidRecord {
            index: pending[MAX_BATCH],
            reason: format!(
                "an atomic batch on NATS JetStream holds at most {MAX_BATCH} records; split \
                 the append"
            ),
        });
    }
    let mut out: Vec<Option<Appended>> = vec![None; records.len()];
    let exp = expectation.as_ref();

    for round in 0..ROUNDS {
        if pending.is_empty() {
            break;
        }
        // No record has offset 0: expecting it is a conflict whatever the server says.
        let outcome = if matches!(exp.map(|e| e.expected), Some(Expected::LastOffset(0))) {
            Err(Failure::Conflict(None))
        } else {
            publish(j, t, partition, &records, &meta, &pending, exp, dedup).await
        };
        match outcome {
            Ok(acks) => {
                for (&i, ack) in pending.iter().zip(acks) {
                    out[i] = Some(ack);
                }
                pending.clear();
            }
            Err(Failure::Other(e)) => return Err(e),
            Err(failure) => {
                let conflict = match failure {
                    Failure::Conflict(actual) => Some(actual),
                    _ => None,
                };
                let with_ids: Vec<usize> = pending
                    .iter()
                    .copied()
                    .filter(|&i| dedup && records[i].id.is_some())
                    .collect();
                let found = probe(j, t, partition, &records, &with_ids).await?;
                if found.is_empty() {
                    if let (Some(actual), Some(e)) = (conflict, exp) {
                        return Err(conflict_error(j, t, partition, e, actual).await);
                    }
                    return Err(Error::Unavailable {
                        op: "append",
                        reason: format!(
                            "the server refused a batch for a duplicate id (round {round}), \
                             yet none of its ids is in the dedup window"
                        ),
                    });
                }
                for (i, ack) in found {
                    out[i] = Some(ack);
                    pending.retain(|&p| p != i);
                }
            }
        }
    }
    if !pending.is_empty() {
        return Err(Error::Unavailable {
            op: "append",
            reason: format!(
                "other writers kept appending this batch's ids; gave up after {ROUNDS} rounds"
            ),
        });
    }
    let mut result = Vec::with_capacity(records.len());
    for i in 0..records.len() {
        let a = match repeat_of[i] {
            Some(f) => out[f].map(|a| Appended {
                duplicate: true,
                ..a
            }),
            None => out[i],
        };
        result.push(a.ok_or_else(|| Error::Unavailable {
            op: "append",
            reason: format!("no outcome for record {i}"),
        })?);
    }
    Ok(result)
}

fn expectation_headers(h: &mut HeaderMap, t: &TopicState, partition: Partition, e: &Expectation) {
    let seq = match e.expected {
        Expected::NoRecord => 0,
        Expected::LastOffset(o) => o,
    };
    h.insert(
        "Nats-Expected-Last-Subject-Sequence",
        seq.to_string().as_str(),
    );
    h.insert(
        "Nats-Expected-Last-Subject-Sequence-Subject",
        names::record_subject(&t.name, partition, Some(&e.key)).as_str(),
    );
}

fn record_headers(records: &[Record], meta: &[Option<String>], i: usize, dedup: bool) -> HeaderMap {
    let mut h = HeaderMap::new();
    if dedup && let Some(id) = records[i].id.as_deref() {
        h.insert("Nats-Msg-Id", names::msg_id(id).as_str());
    }
    if let Some(m) = &meta[i] {
        h.insert(envelope::HEADER, m.as_str());
    }
    h
}

#[allow(clippy::too_many_arguments)]
async fn publish(
    j: &NatsJournal,
    t: &TopicState,
    partition: Partition,
    records: &[Record],
    meta: &[Option<String>],
    pending: &[usize],
    exp: Option<&Expectation>,
    dedup: bool,
) -> std::result::Result<Vec<Appended>, Failure> {
    let api = &j.inner.api;
    let subject = |i: usize| names::record_subject(&t.name, partition, records[i].key.as_deref());
    let ack: PubAck = if let [i] = pending {
        let mut h = record_headers(records, meta, *i, dedup);
        if let Some(e) = exp {
            expectation_headers(&mut h, t, partition, e);
        }
        api.publish(subject(*i), h, records[*i].payload.clone())
            .await
            .map_err(Failure::Other)?
    } else {
        let _permit = t
            .batches
            .acquire()
            .await
            .map_err(|_| Failure::Other(Error::TopicNotFound(t.name.clone())))?;
        let mut tries = 0;
        loop {
            let ack = publish_batch(j, t, partition, records, meta, pending, exp, dedup).await?;
            match &ack.error {
                Some(e) if e.err_code == code::BATCH_INCOMPLETE && tries < INCOMPLETE_RETRIES => {
                    tries += 1;
                    tokio::time::sleep(std::time::Duration::from_millis(5 << tries)).await;
                }
                _ => break ack,
            }
        }
    };
    finish(j, t, partition, pending, ack).await
}

#[allow(clippy::too_many_arguments)]
async fn publish_batch(
    j: &NatsJournal,
    t: &TopicState,
    partition: Partition,
    records: &[Record],
    meta: &[Option<String>],
    pending: &[usize],
    exp: Option<&Expectation>,
    dedup: bool,
) -> std::result::Result<PubAck, Failure> {
    let api = &j.inner.api;
    let subject = |i: usize| names::record_subject(&t.name, partition, records[i].key.as_deref());
    {
        let batch = batch_id();
        let last = pending.len() - 1;
        let mut answer = None;
        for (n, &i) in pending.iter().enumerate() {
            let mut h = record_headers(records, meta, i, dedup);
            h.insert("Nats-Batch-Id", batch.as_str());
            h.insert("Nats-Batch-Sequence", (n + 1).to_string().as_str());
            if n == 0
                && let Some(e) = exp
            {
                expectation_headers(&mut h, t, partition, e);
            }
            let payload = records[i].payload.clone();
            if n == last {
                h.insert("Nats-Batch-Commit", "1");
                answer = Some(
                    api.publish(subject(i), h, payload)
                        .await
                        .map_err(Failure::Other)?,
                );
            } else {
                api.publish_only(subject(i), h, payload)
                    .await
                    .map_err(Failure::Other)?;
            }
        }
        Ok(answer.unwrap_or_default())
    }
}

/// What a publish's answer means for the records of `pending`.
async fn finish(
    j: &NatsJournal,
    t: &TopicState,
    partition: Partition,
    pending: &[usize],
    ack: PubAck,
) -> std::result::Result<Vec<Appended>, Failure> {
    if let Some(e) = ack.error {
        return Err(match e.err_code {
            code::WRONG_LAST_SEQUENCE => Failure::Conflict(parse_actual(&e.description)),
            code::WRONG_LAST_SEQUENCE_IN_FLIGHT => Failure::Conflict(None),
            code::BATCH_HAS_DUPLICATE | code::BATCH_UNSUPPORTED_HEADER => Failure::DuplicateInBatch,
            code::MESSAGE_TOO_LARGE => Failure::Other(Error::InvalidRecord {
                index: pending[0],
                reason: e.description,
            }),
            _ => Failure::Other(Error::Unavailable {
                op: "append",
                reason: e.to_string(),
            }),
        });
    }
    if ack.seq == 0 {
        return Err(Failure::Other(Error::Unavailable {
            op: "append",
            reason: "the server acknowledged without a sequence".into(),
        }));
    }
    if ack.duplicate {
        // Only a single publish is answered as a duplicate.
        let place = original(j, t, partition, ack.seq)
            .await
            .map_err(Failure::Other)?;
        return Ok(vec![place]);
    }
    let count = ack.count.unwrap_or(1) as usize;
    if count != pending.len() || ack.seq < count as u64 {
        return Err(Failure::Other(Error::Unavailable {
            op: "append",
            reason: format!(
                "the server acknowledged {count} records of a batch of {}",
                pending.len()
            ),
        }));
    }
    t.mark(partition, ack.seq);
    let first = ack.seq + 1 - count as u64;
    Ok((0..count as u64)
        .map(|k| Appended {
            partition,
            offset: first + k,
            duplicate: false,
        })
        .collect())
}

/// A unique atomic batch id (at most 64 characters).
fn batch_id() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    format!(
        "sy{:x}{:x}{:x}",
        std::process::id(),
        nanos,
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

/// `wrong last sequence: 12` -> Some(12); 0 means no record.
fn parse_actual(description: &str) -> Option<Offset> {
    description
        .rsplit(':')
        .next()
        .and_then(|n| n.trim().parse::<u64>().ok())
        .filter(|&n| n > 0)
}

async fn conflict_error(
    j: &NatsJournal,
    t: &TopicState,
    partition: Partition,
    e: &Expectation,
    actual: Option<Offset>,
) -> Error {
    // The server's answer names the key's last sequence; without one (or for the offset-0
    // shortcut), ask the leader.
    let actual = match actual {
        Some(a) => Some(a),
        None => {
            let body = serde_json::json!({
                "last_by_subj": names::record_subject(&t.name, partition, Some(&e.key))
            });
            match j.inner.api.leader_get(&t.stream, body).await {
                Ok(found) => found.map(|m| m.seq),
                Err(err) => return err,
            }
        }
    };
    Error::Conflict {
        topic: t.name.clone(),
        partition,
        key: String::from_utf8_lossy(&e.key).into_owned(),
        expected: e.expected,
        actual,
    }
}

/// Which of `indices` (records with ids) are already in the dedup window, with their
/// originals' places. Stores nothing.
async fn probe(
    j: &NatsJournal,
    t: &TopicState,
    partition: Partition,
    records: &[Record],
    indices: &[usize],
) -> Result<Vec<(usize, Appended)>> {
    let api = &j.inner.api;
    let asks = indices.iter().map(|&i| async move {
        let mut h = HeaderMap::new();
        let id = records[i].id.as_deref().unwrap_or_default();
        h.insert("Nats-Msg-Id", names::msg_id(id).as_str());
        if t.replicas > 1 {
            h.insert(
                "Nats-Expected-Last-Subject-Sequence",
                u64::MAX.to_string().as_str(),
            );
        } else {
            h.insert("Nats-Expected-Last-Msg-Id", names::IMPOSSIBLE_MSG_ID);
        }
        let subject = names::record_subject(&t.name, partition, None);
        (i, api.publish(subject, h, bytes::Bytes::new()).await)
    });
    let mut found = Vec::new();
    for (i, answer) in futures::future::join_all(asks).await {
        let ack = answer?;
        match ack.error {
            None if ack.duplicate && ack.seq > 0 => {
                found.push((i, original(j, t, partition, ack.seq).await?));
            }
            // Checked after dedup: the id is new.
            Some(e)
                if e.err_code == code::WRONG_LAST_MSG_ID
                    || e.err_code == code::WRONG_LAST_SEQUENCE
                    || e.err_code == code::WRONG_LAST_SEQUENCE_IN_FLIGHT => {}
            Some(e) => {
                return Err(Error::Unavailable {
                    op: "append",
                    reason: format!("checking an id for dedup: {e}"),
                });
            }
            None => {
                return Err(Error::Unavailable {
                    op: "append",
                    reason: "a dedup check was stored; the server ignored its expectation".into(),
                });
            }
        }
    }
    Ok(found)
}

/// The place of the original of a duplicate: its sequence, and the partition its subject
/// names (the one asked for, if retention has removed it meanwhile).
async fn original(
    j: &NatsJournal,
    t: &TopicState,
    asked: Partition,
    seq: Offset,
) -> Result<Appended> {
    let found = j
        .inner
        .api
        .leader_get(&t.stream, serde_json::json!({ "seq": seq }))
        .await?;
    let partition = found
        .and_then(|m| names::partition_of_subject(&m.subject))
        .unwrap_or(asked);
    Ok(Appended {
        partition,
        offset: seq,
        duplicate: true,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conflict_descriptions_name_the_actual_offset() {
        assert_eq!(parse_actual("wrong last sequence: 12"), Some(12));
        assert_eq!(parse_actual("wrong last sequence: 0"), None);
        assert_eq!(parse_actual("wrong last sequence"), None);
    }

    #[test]
    fn batch_ids_are_unique_and_short() {
        let a = batch_id();
        let b = batch_id();
        assert_ne!(a, b);
        assert!(a.len() <= 64);
    }
}
