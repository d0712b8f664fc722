//! Counters exposed at `/metrics` in the Prometheus text format.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};

#[derive(Debug, Default)]
pub struct Metrics {
    pub events_published: AtomicU64,
    pub events_duplicate: AtomicU64,
    pub events_read: AtomicU64,
    pub publish_requests: AtomicU64,
    pub rejected_requests: AtomicU64,
    pub streams_open: AtomicU64,
    pub streams_disconnected_slow: AtomicU64,
}

impl Metrics {
    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    pub fn render(&self) -> String {
        let mut out = String::new();
        let rows: [(&str, &str, &str, &AtomicU64); 7] = [
            (
                "switchyard_events_published_total",
                "counter",
                "Events appended (new, not duplicates).",
                &self.events_published,
            ),
            (
                "switchyard_events_duplicate_total",
                "counter",
                "Published events that were duplicates within the dedup window.",
                &self.events_duplicate,
            ),
            (
                "switchyard_events_read_total",
                "counter",
                "Events returned by reads and streams.",
                &self.events_read,
            ),
            (
                "switchyard_publish_requests_total",
                "counter",
                "POST .../events requests accepted.",
                &self.publish_requests,
            ),
            (
                "switchyard_rejected_requests_total",
                "counter",
                "Requests answered with a problem (4xx or 5xx).",
                &self.rejected_requests,
            ),
            (
                "switchyard_streams_open",
                "gauge",
                "Open SSE and NDJSON streams.",
                &self.streams_open,
            ),
            (
                "switchyard_streams_disconnected_slow_total",
                "counter",
                "Streams ended because the client did not keep up.",
                &self.streams_disconnected_slow,
            ),
        ];
        for (name, kind, help, v) in rows {
            let _ = writeln!(out, "# HELP {name} {help}");
            let _ = writeln!(out, "# TYPE {name} {kind}");
            let _ = writeln!(out, "{name} {}", v.load(Ordering::Relaxed));
        }
        out
    }
}
