//! Request ids and W3C trace context (`traceparent`, version 00).
//!
//! A request keeps a client's `x-request-id` when it is 1 to 128 visible ASCII characters,
//! and otherwise gets a new one (32 hex digits). A valid `traceparent` is continued: same
//! trace id and flags, a new span id for the gateway's hop, so the upstream sees the gateway
//! as its parent; an absent or invalid one starts a new trace (sampled).

use axum::http::{HeaderMap, HeaderName, HeaderValue};
use rand::Rng as _;

pub const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
pub const TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");

/// Lower-case hex of `N` random bytes, never all zero (an all-zero id is invalid in trace
/// context), written into `out[..2 * N]`.
fn random_hex<const N: usize>(out: &mut [u8]) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut b = [0u8; N];
    while b.iter().all(|&x| x == 0) {
        rand::rng().fill(&mut b[..]);
    }
    for (i, x) in b.iter().enumerate() {
        out[2 * i] = DIGITS[usize::from(x >> 4)];
        out[2 * i + 1] = DIGITS[usize::from(x & 15)];
    }
}

fn header(bytes: &[u8]) -> HeaderValue {
    HeaderValue::from_bytes(bytes).expect("hex and dashes are a header value")
}

/// The client's request id when it is acceptable, else a new one.
pub fn request_id(headers: &HeaderMap) -> HeaderValue {
    if let Some(v) = headers.get(&REQUEST_ID) {
        let b = v.as_bytes();
        if !b.is_empty() && b.len() <= 128 && b.iter().all(|c| c.is_ascii_graphic()) {
            return v.clone();
        }
    }
    let mut id = [0u8; 32];
    random_hex::<16>(&mut id);
    header(&id)
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
        .get(&TRACEPARENT)
        .and_then(|v| v.to_str().ok())
        .and_then(parse);
    // 00-<trace, 32>-<parent, 16>-<flags, 2>: a new parent under the caller's trace, or
    // a new trace.
    let mut text = *b"00-00000000000000000000000000000000-0000000000000000-01";
    match incoming {
        Some((trace, flags)) => {
            text[3..35].copy_from_slice(trace.as_bytes());
            text[53..55].copy_from_slice(flags.as_bytes());
        }
        None => random_hex::<16>(&mut text[3..35]),
    }
    random_hex::<8>(&mut text[36..52]);
    header(&text)
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
        assert!(parse(c).is_some(), "{c}");
        // The caller's flags are kept (not sampled stays not sampled).
        h.insert(
            TRACEPARENT,
            HeaderValue::from_static("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00"),
        );
        let c = child_traceparent(&h);
        let c = c.to_str().unwrap();
        assert!(c.ends_with("-00") && parse(c).is_some(), "{c}");
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
