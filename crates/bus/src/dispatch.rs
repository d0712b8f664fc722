//! One subscription's dispatcher: readers that move records from the journal into the
//! store's in-flight table, and a deliverer that pushes what is due.

use crate::push::{self, Outcome};
use crate::{BusOptions, now_ms};
use rand::Rng as _;
use serde_json::{Map, Value};
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use switchyard_journal::{Journal, Partition, ReadLimits, TopicName};
use switchyard_store::{Cursor, Delivery, DeliveryKey, RetryPolicy, Store, Subscription};
use tokio::sync::{Notify, Semaphore, watch};

pub(crate) struct Dispatcher {
    pub sub: Subscription,
    pub journal: Arc<dyn Journal>,
    pub store: Arc<dyn Store>,
    pub client: reqwest::Client,
    pub options: BusOptions,
    pub stop: watch::Receiver<bool>,
}

/// Resolves once `stop` is true (or its sender is gone).
async fn stopped(stop: &mut watch::Receiver<bool>) {
    while !*stop.borrow_and_update() {
        if stop.changed().await.is_err() {
            return;
        }
    }
}

impl Dispatcher {
    pub async fn run(self) {
        let me = Arc::new(self);
        let wake = Arc::new(Notify::new());
        let mut readers = Vec::new();
        for topic in &me.sub.spec.topics {
            let Ok(topic) = TopicName::new(topic) else {
                continue; // validated by the store: cannot happen
            };
            let partitions = loop {
                match me.journal.describe_topic(&topic).await {
                    Ok(info) => break info.partitions.len() as Partition,
                    Err(e) => {
                        tracing::warn!(subscription = %me.sub.spec.name, %topic, "waiting for the topic: {e}");
                        let mut stop = me.stop.clone();
                        tokio::select! {
                            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                            _ = stopped(&mut stop) => return,
                        }
                    }
                }
            };
            for p in 0..partitions {
                readers.push(tokio::spawn(me.clone().read(
                    topic.clone(),
                    p,
                    wake.clone(),
                )));
            }
        }
        me.deliver(wake).await;
        for r in readers {
            r.abort();
        }
    }

    /// Moves one partition's records into the in-flight table, behind the cursor.
    async fn read(self: Arc<Self>, topic: TopicName, partition: Partition, wake: Arc<Notify>) {
        let name = &self.sub.spec.name;
        let mut stop = self.stop.clone();
        let mut cursor = match self.store.cursors(name).await {
            Ok(cs) => cs
                .into_iter()
                .find(|c| c.topic == topic.as_str() && c.partition == partition)
                .map_or(0, |c| c.offset),
            Err(e) => {
                tracing::error!(subscription = %name, "reading cursors: {e}");
                return;
            }
        };
        let types = &self.sub.spec.types;
        loop {
            if *stop.borrow() {
                return;
            }
            // Backpressure: do not read further ahead than the subscriber can take.
            match self.store.stats(name).await {
                Ok(s) if s.in_flight >= self.options.max_in_flight => {
                    tokio::select! {
                        _ = tokio::time::sleep(Duration::from_millis(50)) => {}
                        _ = stopped(&mut stop) => return,
                    }
                    continue;
                }
                Ok(_) => {}
                Err(e) => {
                    tracing::error!(subscription = %name, "reading stats: {e}");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    continue;
                }
            }
            let batch = match self
                .journal
                .read(
                    &topic,
                    partition,
                    cursor,
                    ReadLimits {
                        max_records: 256,
                        ..ReadLimits::default()
                    },
                )
                .await
            {
                Ok(b) => b,
                Err(e) => {
                    tracing::warn!(subscription = %name, %topic, partition, "read: {e}");
                    tokio::select! {
                        _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                        _ = stopped(&mut stop) => return,
                    }
                    continue;
                }
            };
            if batch.records.is_empty() {
                tokio::select! {
                    _ = self.journal.wait_for(&topic, partition, batch.next_offset) => {}
                    _ = stopped(&mut stop) => return,
                }
                cursor = batch.next_offset.max(cursor);
                continue;
            }
            let now = now_ms();
            let deliveries: Vec<Delivery> = batch
                .records
                .iter()
                .filter(|r| {
                    types.is_empty() || event_type(&r.payload).is_some_and(|t| types.contains(&t))
                })
                .map(|r| {
                    Delivery::new(
                        DeliveryKey::new(name.clone(), topic.as_str(), partition, r.offset),
                        r.key
                            .as_ref()
                            .map(|k| String::from_utf8_lossy(k).into_owned()),
                        deliver_at(&r.payload).unwrap_or(now),
                    )
                })
                .collect();
            let next = Cursor::new(topic.as_str(), partition, batch.next_offset);
            match self.store.enqueue(name, deliveries, Some(next)).await {
                Ok(_) => {
                    cursor = batch.next_offset;
                    wake.notify_one();
                }
                Err(e) => {
                    tracing::error!(subscription = %name, "enqueue: {e}");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
        }
    }

    /// Pushes due deliveries, at most `concurrency` at once, one at a time per key.
    async fn deliver(self: &Arc<Self>, wake: Arc<Notify>) {
        let name = self.sub.spec.name.clone();
        let permits = Arc::new(Semaphore::new(self.sub.spec.concurrency as usize));
        // Deliveries being attempted now, and their keys (topic, partition, partition key).
        let busy: Arc<Mutex<HashSet<DeliveryKey>>> = Arc::default();
        let busy_keys: Arc<Mutex<HashSet<(String, u32, String)>>> = Arc::default();
        // Deliveries whose outcome was recorded, with a count of finished attempts at that
        // moment: a `due` list read while an attempt was finishing may still hold it.
        let settled: Arc<Mutex<HashMap<DeliveryKey, u64>>> = Arc::default();
        let finished = Arc::new(AtomicU64::new(0));
        let mut stop = self.stop.clone();
        loop {
            if *stop.borrow() {
                break;
            }
            let now = now_ms();
            let before = finished.load(Ordering::Acquire);
            // Outcomes recorded before this read are in what it returns.
            lock(&settled).retain(|_, at| *at > before);
            let due = match self.store.due(&name, now, 512).await {
                Ok(d) => d,
                Err(e) => {
                    tracing::error!(subscription = %name, "due: {e}");
                    Vec::new()
                }
            };
            // Per-key order: a delivery waits while an earlier one of its key is in flight.
            let mut blocked_before: HashMap<(String, u32, String), u64> = HashMap::new();
            let mut partitions: Vec<(String, u32)> = due
                .iter()
                .filter(|d| d.partition_key.is_some())
                .map(|d| (d.key.topic.clone(), d.key.partition))
                .collect();
            partitions.sort();
            partitions.dedup();
            for (topic, p) in partitions {
                if let Ok(all) = self.store.in_flight(&name, &topic, p).await {
                    for d in all {
                        if let Some(k) = d.partition_key {
                            let e = blocked_before
                                .entry((topic.clone(), p, k))
                                .or_insert(u64::MAX);
                            *e = (*e).min(d.key.offset);
                        }
                    }
                }
            }
            for d in due {
                let key_of = d
                    .partition_key
                    .clone()
                    .map(|k| (d.key.topic.clone(), d.key.partition, k));
                if lock(&busy).contains(&d.key) || lock(&settled).contains_key(&d.key) {
                    continue;
                }
                if let Some(k) = &key_of {
                    if lock(&busy_keys).contains(k) {
                        continue;
                    }
                    if blocked_before
                        .get(k)
                        .is_some_and(|&first| first < d.key.offset)
                    {
                        continue;
                    }
                }
                let permit = tokio::select! {
                    p = permits.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => return },
                    _ = stopped(&mut stop) => break,
                };
                lock(&busy).insert(d.key.clone());
                if let Some(k) = &key_of {
                    lock(&busy_keys).insert(k.clone());
                }
                let me = self.clone();
                let (busy, busy_keys, wake) = (busy.clone(), busy_keys.clone(), wake.clone());
                let (settled, finished) = (settled.clone(), finished.clone());
                tokio::spawn(async move {
                    me.attempt(&d).await;
                    let n = finished.fetch_add(1, Ordering::AcqRel) + 1;
                    lock(&settled).insert(d.key.clone(), n);
                    lock(&busy).remove(&d.key);
                    if let Some(k) = &key_of {
                        lock(&busy_keys).remove(k);
                    }
                    drop(permit);
                    wake.notify_one();
                });
            }
            tokio::select! {
                _ = wake.notified() => {}
                _ = tokio::time::sleep(self.options.poll) => {}
                _ = stopped(&mut stop) => break,
            }
        }
        // Let attempts in progress finish (their outcome is recorded), up to a bound.
        let all = self.sub.spec.concurrency;
        let _ = tokio::time::timeout(self.options.push_timeout, permits.acquire_many(all)).await;
    }

    /// One attempt of `d`: push, then ack, retry later or park.
    async fn attempt(&self, d: &Delivery) {
        let now = now_ms();
        let outcome = match self.load(d).await {
            Ok(event) => match push::request(
                &self.client,
                &self.sub.spec.endpoint,
                &event,
                &self.sub.spec.name,
                d.attempts + 1,
                self.options.push_timeout,
            ) {
                Ok(req) => push::attempt(req).await,
                Err(error) => Outcome::Reject { error },
            },
            Err(error) => Outcome::Reject { error },
        };
        let result = match outcome {
            Outcome::Delivered => self.store.ack(&d.key).await.map(|_| ()),
            Outcome::Reject { error } => {
                self.store.park(&d.key, now_ms(), &error).await.map(|_| ())
            }
            Outcome::Retry { error, not_before } => {
                let policy = &self.sub.spec.retry;
                let first = d.first_attempt_at_ms.unwrap_or(now);
                let attempts = d.attempts + 1;
                if attempts >= policy.max_attempts
                    || now_ms().saturating_sub(first) >= policy.max_age_ms as i64
                {
                    let reason = format!("gave up after {attempts} attempt(s): {error}");
                    self.store.park(&d.key, now_ms(), &reason).await.map(|_| ())
                } else {
                    let delay = not_before.unwrap_or_else(|| backoff(policy, d.attempts));
                    let at = now_ms().saturating_add(delay.as_millis() as i64);
                    self.store
                        .retry_later(&d.key, now, at, &error)
                        .await
                        .map(|_| ())
                }
            }
        };
        if let Err(e) = result {
            tracing::error!(subscription = %self.sub.spec.name, key = %d.key, "recording the outcome: {e}");
        }
    }

    /// The stored event of `d`.
    async fn load(&self, d: &Delivery) -> Result<Map<String, Value>, String> {
        let topic = TopicName::new(&d.key.topic).map_err(|e| e.to_string())?;
        let batch = self
            .journal
            .read(
                &topic,
                d.key.partition,
                d.key.offset,
                ReadLimits {
                    max_records: 1,
                    ..ReadLimits::default()
                },
            )
            .await
            .map_err(|e| format!("reading the event from the journal: {e}"))?;
        let record = batch
            .records
            .into_iter()
            .find(|r| r.offset == d.key.offset)
            .ok_or_else(|| {
                "the event is no longer in the journal (retention removed it)".to_string()
            })?;
        match serde_json::from_slice::<Value>(&record.payload) {
            Ok(Value::Object(mut m)) => {
                m.insert("partition".into(), d.key.partition.into());
                m.insert("sequence".into(), d.key.offset.to_string().into());
                Ok(m)
            }
            _ => {
                Err("the record is not a CloudEvent (it was not published through the API)".into())
            }
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// The delay before retry number `attempts + 1`: exponential, capped, with jitter.
pub(crate) fn backoff(policy: &RetryPolicy, attempts: u32) -> Duration {
    let base = policy.initial_backoff_ms as f64 * policy.multiplier.powi(attempts.min(64) as i32);
    let capped = base.min(policy.max_backoff_ms as f64);
    let jitter = rand::rng().random_range(0.0..=policy.jitter.clamp(0.0, 1.0));
    Duration::from_millis((capped * (1.0 - jitter)).max(1.0) as u64)
}

fn event_type(payload: &[u8]) -> Option<String> {
    match serde_json::from_slice::<Value>(payload).ok()? {
        Value::Object(m) => m.get("type")?.as_str().map(str::to_string),
        _ => None,
    }
}

/// The `deliverat` extension (RFC 3339): the event is not delivered before it.
fn deliver_at(payload: &[u8]) -> Option<i64> {
    let v: Value = serde_json::from_slice(payload).ok()?;
    let t = v.get("deliverat")?.as_str()?;
    let t = time::OffsetDateTime::parse(t, &time::format_description::well_known::Rfc3339).ok()?;
    i64::try_from(t.unix_timestamp_nanos() / 1_000_000).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_and_stays_capped() {
        let p = RetryPolicy {
            initial_backoff_ms: 100,
            max_backoff_ms: 1_000,
            multiplier: 2.0,
            jitter: 0.0,
            max_attempts: 10,
            max_age_ms: 60_000,
        };
        let ms: Vec<u128> = (0..6).map(|a| backoff(&p, a).as_millis()).collect();
        assert_eq!(ms, [100, 200, 400, 800, 1000, 1000]);
        let j = RetryPolicy { jitter: 0.5, ..p };
        for _ in 0..100 {
            let d = backoff(&j, 3).as_millis();
            assert!((400..=800).contains(&d), "{d}");
        }
    }

    #[test]
    fn deliver_at_reads_the_extension() {
        assert_eq!(
            deliver_at(br#"{"deliverat":"1970-01-01T00:00:01Z"}"#),
            Some(1000)
        );
        assert_eq!(deliver_at(br#"{"deliverat":"later"}"#), None);
        assert_eq!(deliver_at(b"not json"), None);
    }
}
