//! Lineage: the W3C trace context and the correlation and causation ids an event carries,
//! so one request can be followed through every event it caused.

use crate::event::CloudEvent;
use serde_json::{Map, Value};

/// A W3C `traceparent`: version 00, trace id, parent (span) id, flags.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TraceParent {
    pub trace_id: u128,
    pub parent_id: u64,
    pub flags: u8,
}

impl TraceParent {
    /// Parses `00-<32 hex>-<16 hex>-<2 hex>`; anything else (or all-zero ids) is `None`.
    pub fn parse(s: &str) -> Option<Self> {
        let mut parts = s.trim().split('-');
        let (v, t, p, f) = (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
        if parts.next().is_some() || v != "00" || t.len() != 32 || p.len() != 16 || f.len() != 2 {
            return None;
        }
        let hex = |s: &str| s.bytes().all(|b| b.is_ascii_hexdigit());
        if !(hex(t) && hex(p) && hex(f)) {
            return None;
        }
        let tp = TraceParent {
            trace_id: u128::from_str_radix(t, 16).ok()?,
            parent_id: u64::from_str_radix(p, 16).ok()?,
            flags: u8::from_str_radix(f, 16).ok()?,
        };
        (tp.trace_id != 0 && tp.parent_id != 0).then_some(tp)
    }

    /// A new trace, sampled.
    pub fn root() -> Self {
        TraceParent {
            trace_id: rand::random::<u128>() | 1,
            parent_id: rand::random::<u64>() | 1,
            flags: 1,
        }
    }

    /// The same trace, a new span.
    pub fn child(&self) -> Self {
        TraceParent {
            parent_id: rand::random::<u64>() | 1,
            ..*self
        }
    }
}

impl std::fmt::Display for TraceParent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "00-{:032x}-{:016x}-{:02x}",
            self.trace_id, self.parent_id, self.flags
        )
    }
}

/// What an outgoing event inherits from what caused it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Lineage {
    pub traceparent: TraceParent,
    pub tracestate: Option<String>,
    /// The id shared by everything one request caused (the first event's id by default).
    pub correlation_id: Option<String>,
    /// The id of the event that caused this one.
    pub causation_id: Option<String>,
}

impl Lineage {
    /// A new trace with no cause.
    pub fn root() -> Self {
        Lineage {
            traceparent: TraceParent::root(),
            tracestate: None,
            correlation_id: None,
            causation_id: None,
        }
    }

    /// What events published while handling `cause` carry: a child span of its trace (a new
    /// trace when it has none), its correlation id (else its own id) and its id as cause.
    pub fn caused_by(cause: &CloudEvent) -> Self {
        let traceparent = cause
            .traceparent()
            .and_then(TraceParent::parse)
            .map_or_else(TraceParent::root, |t| t.child());
        Lineage {
            traceparent,
            tracestate: cause.attr("tracestate").map(str::to_string),
            correlation_id: Some(
                cause
                    .correlation_id()
                    .unwrap_or_else(|| cause.id())
                    .to_string(),
            ),
            causation_id: Some(cause.id().to_string()),
        }
    }

    /// Continues the trace of an incoming request's `traceparent` header (a malformed or
    /// missing one starts a new trace), for events a route publishes.
    pub fn from_headers(headers: &axum::http::HeaderMap) -> Self {
        let header = |n: &str| headers.get(n).and_then(|v| v.to_str().ok());
        Lineage {
            traceparent: header("traceparent")
                .and_then(TraceParent::parse)
                .map_or_else(TraceParent::root, |t| t.child()),
            tracestate: header("tracestate").map(str::to_string),
            correlation_id: header("correlationid").map(str::to_string),
            causation_id: None,
        }
    }

    pub fn with_correlation(mut self, id: impl Into<String>) -> Self {
        self.correlation_id = Some(id.into());
        self
    }

    pub(crate) fn write_to(&self, m: &mut Map<String, Value>) {
        m.insert("traceparent".into(), self.traceparent.to_string().into());
        if let Some(s) = &self.tracestate {
            m.insert("tracestate".into(), s.clone().into());
        }
        if let Some(c) = &self.correlation_id {
            m.insert("correlationid".into(), c.clone().into());
        }
        if let Some(c) = &self.causation_id {
            m.insert("causationid".into(), c.clone().into());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn traceparents_parse_and_children_keep_the_trace() {
        let s = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let t = TraceParent::parse(s).expect("valid");
        assert_eq!(t.to_string(), s);
        let c = t.child();
        assert_eq!(c.trace_id, t.trace_id);
        assert_ne!(c.parent_id, t.parent_id);
        for bad in [
            "",
            "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902bz-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-x",
        ] {
            assert!(TraceParent::parse(bad).is_none(), "{bad}");
        }
    }
}
