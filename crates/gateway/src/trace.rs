//! Request ids and W3C trace context (`traceparent`, version 00).
//!
//! A request keeps a client's `x-request-id` when it is 1 to 128 visible ASCII characters,
//! and otherwise gets a new one (32 hex digits). A valid `traceparent` is continued: same
//! trace id and flags, a new span id for the gateway's hop, so the upstream sees the gateway
//! as its parent; an absent or invalid one starts a new trace (sampled).

use axum::http::{HeaderMap, HeaderValue};
use rand::Rng as _;

pub const REQUEST_ID: &str = "x-request-id";
pub const TRACEPARENT: &str = "traceparent";

fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(DIGITS[usize::from(b >> 4)] as char);
        s.push(DIGITS[usize::from(b & 15)] as char);
    }
    s
}

fn random_hex<const N: usize>() -> String {
    let mut b = [0u8; N];
    loop {
        rand::rng().fill(&mut b[..]);
        // All-zero ids are invalid in trace context.
        if b.iter().any(|&x| x != 0) {
            return hex(&b);
        }
    }
}

/// The client's request id when it is acceptable, else a new one.
pub fn request_id(headers: &HeaderMap) -> HeaderValue {
    if let Some(v) = headers.get(REQUEST_ID) {
        let b = v.as_bytes();
        if !b.is_empty() && b.len() <= 128 && b.iter().all(|c| c.is_ascii_graphic()) {
            return v.clone();
        }
    }
    HeaderValue::from_str(&random_hex::<16>()).expect("hex is a header value")
}

/// A `traceparent` that parses: `00-<32 hex trace id>-<16 hex parent id>-<2 hex flags>`.
fn parse(text: &str) -> Option<(&str, &str)> {
    let mut parts = text.split('-');
    let (version, trace, parent, flags) =
        (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
    let lower_hex = |s: &str, n: usize| {
        s.len() == n
            && s.bytes()
                .all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(&c))
    };
    if parts.next().is_some()
        || version != "00"
        || !lower_hex(trace, 32)
        || !lower_hex(parent, 16)
        || !lower_hex(flags, 2)
        || trace.bytes().all(|c| c == b'0')
        || parent.bytes().all(|c| c == b'0')
    {
        return None;
    }
    Some((trace, flags))
}

/// The `traceparent` to send upstream: the client's trace continued with a new span, or
/// a new trace.
pub fn child_traceparent(headers: &HeaderMap) -> HeaderValue {
    let incoming = headers
        .get(TRACEPARENT)
        .and_then(|v| v.to_str().ok())
        .and_then(parse);
    let text = match incoming {
        Some((trace, flags)) => format!("00-{trace}-{}-{flags}", random_hex::<8>()),
        None => format!("00-{}-{}-01", random_hex::<16>(), random_hex::<8>()),
    };
    HeaderValue::from_str(&text).expect("hex is a header value")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_ids_are_kept_when_sane_and_made_otherwise() {
        let mut h = HeaderMap::new();
        h.insert(REQUEST_ID, HeaderValue::from_static("abc-123"));
        assert_eq!(request_id(&h), "abc-123");
        h.insert(REQUEST_ID, HeaderValue::from_static("has space"));
        assert_eq!(request_id(&h).len(), 32);
        h.insert(REQUEST_ID, HeaderValue::from_str(&"x".repeat(129)).unwrap());
        assert_eq!(request_id(&h).len(), 32);
        assert_ne!(request_id(&HeaderMap::new()), request_id(&HeaderMap::new()));
    }

    #[test]
    fn traceparent_is_continued_or_started() {
        let mut h = HeaderMap::new();
        h.insert(
            TRACEPARENT,
            HeaderValue::from_static("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"),
        );
        let child = child_traceparent(&h);
        let c = child.to_str().unwrap();
        assert!(c.starts_with("00-4bf92f3577b34da6a3ce929d0e0e4736-"), "{c}");
        assert!(c.ends_with("-01"));
        assert_ne!(&c[36..52], "00f067aa0ba902b7");
        for bad in [
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-x",
            "garbage",
        ] {
            h.insert(TRACEPARENT, HeaderValue::from_static(bad));
            let c = child_traceparent(&h);
            let c = c.to_str().unwrap();
            assert!(!c.contains("4bf92f3577b34da6"), "{bad} -> {c}");
            assert!(parse(c).is_some(), "{c}");
        }
    }
}
