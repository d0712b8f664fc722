//! Access records: each request of a route with `access-log` becomes a
//! `switchyard.gateway.request` CloudEvent in the route's topic (see
//! [`switchyard_manifest::AccessLogSpec`]), so requests are in the journal's timeline.
//!
//! Off the request's path: a request puts a small [`Entry`] in a bounded channel with
//! `try_send` and goes on; when the channel is full the entry is dropped and counted
//! (`dropped`), never waited for. One writer task takes whatever is queued (up to
//! [`BATCH`]), turns it into events and appends them per topic and partition in one append
//! each (keyed by the route's name); an append that fails counts its records as `failed`.
//! At shutdown the writer appends what is still queued.

use axum::http::{HeaderValue, Method};
use serde_json::json;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime};
use switchyard_journal::{Journal, PartitionChoice, Record, TopicName};
use tokio::sync::{mpsc, watch};

/// The most records one append carries.
pub const BATCH: usize = 512;
/// The default buffer between requests and the writer, in records.
pub const DEFAULT_BUFFER: usize = 8192;

/// One request, as the route answered it.
#[derive(Debug)]
pub struct Entry {
    pub topic: TopicName,
    pub route: String,
    pub method: Method,
    /// Without the query (it may hold secrets).
    pub path: String,
    pub status: u16,
    /// From the request's arrival until the answer's headers.
    pub latency: Duration,
    pub request_id: HeaderValue,
    pub traceparent: HeaderValue,
    /// `user:<sub>`, `key:<name>`, `ip:<addr>`; none when the credentials were refused.
    pub consumer: Option<String>,
    pub upstream: Option<String>,
    pub at: SystemTime,
}

/// The writer's counters.
#[derive(Debug, Default)]
pub struct AccessStats {
    pub written: AtomicU64,
    /// Dropped because the buffer was full.
    pub dropped: AtomicU64,
    /// Lost because their append failed (the topic is missing, the journal is down).
    pub failed: AtomicU64,
}

/// The requests' end of the channel.
#[derive(Debug)]
pub(crate) struct AccessLog {
    tx: mpsc::Sender<Entry>,
    pub(crate) stats: Arc<AccessStats>,
}

impl AccessLog {
    /// The log and its writer (which ends, after a last flush, when `stop` turns true).
    pub(crate) fn start(
        journal: Arc<dyn Journal>,
        buffer: usize,
        stop: watch::Receiver<bool>,
    ) -> (Self, tokio::task::JoinHandle<()>) {
        let (tx, rx) = mpsc::channel(buffer.max(1));
        let stats = Arc::new(AccessStats::default());
        let writer = tokio::spawn(write_loop(journal, rx, stats.clone(), stop));
        (Self { tx, stats }, writer)
    }

    /// Queues `entry`, or counts it dropped when the buffer is full.
    pub(crate) fn record(&self, entry: Entry) {
        if self.tx.try_send(entry).is_err() {
            self.stats.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }
}

async fn write_loop(
    journal: Arc<dyn Journal>,
    mut rx: mpsc::Receiver<Entry>,
    stats: Arc<AccessStats>,
    mut stop: watch::Receiver<bool>,
) {
    let mut buf = Vec::with_capacity(BATCH);
    let mut warned: Option<Instant> = None;
    loop {
        let n = tokio::select! {
            n = rx.recv_many(&mut buf, BATCH) => Some(n),
            _ = stop.wait_for(|&s| s) => None,
        };
        match n {
            Some(0) => return,
            Some(_) => write(journal.as_ref(), &mut buf, &stats, &mut warned).await,
            None => {
                // A last flush of what is queued.
                while let Ok(e) = rx.try_recv() {
                    buf.push(e);
                    if buf.len() == BATCH {
                        write(journal.as_ref(), &mut buf, &stats, &mut warned).await;
                    }
                }
                write(journal.as_ref(), &mut buf, &stats, &mut warned).await;
                return;
            }
        }
    }
}

/// Appends `buf` (emptied), one append per topic and partition.
async fn write(
    journal: &dyn Journal,
    buf: &mut Vec<Entry>,
    stats: &AccessStats,
    warned: &mut Option<Instant>,
) {
    let mut groups: BTreeMap<(TopicName, String), Vec<Record>> = BTreeMap::new();
    for e in buf.drain(..) {
        let record = to_record(&e);
        groups.entry((e.topic, e.route)).or_default().push(record);
    }
    let mut by_partition: BTreeMap<(TopicName, u32), Vec<Record>> = BTreeMap::new();
    for ((topic, route), records) in groups {
        let n = records.len() as u64;
        match journal
            .choose_partition(&topic, &PartitionChoice::Key(route.into_bytes().into()))
            .await
        {
            Ok(p) => by_partition.entry((topic, p)).or_default().extend(records),
            Err(e) => failed(stats, n, &topic, &e, warned),
        }
    }
    for ((topic, partition), records) in by_partition {
        let n = records.len() as u64;
        match journal.append(&topic, partition, records, None).await {
            Ok(_) => {
                stats.written.fetch_add(n, Ordering::Relaxed);
            }
            Err(e) => failed(stats, n, &topic, &e, warned),
        }
    }
}

fn failed(
    stats: &AccessStats,
    n: u64,
    topic: &TopicName,
    e: &switchyard_journal::Error,
    warned: &mut Option<Instant>,
) {
    stats.failed.fetch_add(n, Ordering::Relaxed);
    // One warning every 10 s at most: a missing topic would otherwise flood the log.
    if warned.is_none_or(|w| w.elapsed() >= Duration::from_secs(10)) {
        *warned = Some(Instant::now());
        tracing::warn!("gateway: {n} access record(s) for {topic} are lost: {e}");
    }
}

fn to_record(e: &Entry) -> Record {
    let id = crate::trace::request_id(&http::HeaderMap::new());
    let id = id.to_str().unwrap_or("access").to_string();
    let text = |v: &HeaderValue| v.to_str().unwrap_or("").to_string();
    let time = time::OffsetDateTime::from(e.at)
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default();
    let event = json!({
        "specversion": "1.0",
        "id": id,
        "source": "/switchyard/gateway",
        "type": switchyard_manifest::ACCESS_RECORD_TYPE,
        "subject": e.route,
        "time": time,
        "partitionkey": e.route,
        "traceparent": text(&e.traceparent),
        "datacontenttype": "application/json",
        "data": {
            "route": e.route,
            "method": e.method.as_str(),
            "path": e.path,
            "status": e.status,
            "latency-ms": (e.latency.as_secs_f64() * 1e6).round() / 1e3,
            "request-id": text(&e.request_id),
            "traceparent": text(&e.traceparent),
            "consumer": e.consumer,
            "upstream": e.upstream,
        },
    });
    Record::new(event.to_string())
        .with_id(id)
        .with_key(e.route.clone().into_bytes())
}
