//! Record output: one JSON object per line.

use base64::Engine as _;
use serde::Serialize;
use std::collections::BTreeMap;
use switchyard_types::{Partition, StoredRecord, TopicName};

/// A stored record as one JSON object, fields in this order. Text fields hold UTF-8 as is;
/// bytes that are not UTF-8 go in a `*_base64` field instead (`key_base64`,
/// `payload_base64`, and `headers_base64` for header values).
#[derive(Debug, Serialize)]
pub struct RecordOut<'a> {
    topic: &'a str,
    partition: Partition,
    offset: u64,
    timestamp: String,
    timestamp_ms: i64,
    id: Option<&'a str>,
    key: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    key_base64: Option<String>,
    headers: BTreeMap<&'a str, &'a str>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    headers_base64: BTreeMap<&'a str, String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    payload: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    payload_base64: Option<String>,
}

pub fn record_json<'a>(
    topic: &'a TopicName,
    partition: Partition,
    r: &'a StoredRecord,
) -> RecordOut<'a> {
    let (key, key_base64) = match &r.key {
        None => (None, None),
        Some(k) => split(k),
    };
    let (payload, payload_base64) = split(&r.payload);
    let mut headers = BTreeMap::new();
    let mut headers_base64 = BTreeMap::new();
    for (name, value) in &r.headers {
        match std::str::from_utf8(value) {
            Ok(s) => {
                headers.insert(name.as_str(), s);
            }
            Err(_) => {
                headers_base64.insert(name.as_str(), b64(value));
            }
        }
    }
    RecordOut {
        topic: topic.as_str(),
        partition,
        offset: r.offset,
        timestamp: crate::args::format_timestamp(r.timestamp),
        timestamp_ms: r.timestamp.millis(),
        id: r.id.as_deref(),
        key,
        key_base64,
        headers,
        headers_base64,
        payload,
        payload_base64,
    }
}

fn split(bytes: &[u8]) -> (Option<&str>, Option<String>) {
    match std::str::from_utf8(bytes) {
        Ok(s) => (Some(s), None),
        Err(_) => (None, Some(b64(bytes))),
    }
}

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// True when the error is a write to a closed pipe (`switchyard ... | head`): not a failure.
pub fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use switchyard_types::Timestamp;

    #[test]
    fn binary_fields_become_base64() {
        let r = StoredRecord {
            offset: 7,
            timestamp: Timestamp(1500),
            id: Some("id-1".into()),
            key: Some(Bytes::from_static(b"order-1")),
            headers: vec![
                ("a".into(), Bytes::from_static(b"text")),
                ("b".into(), Bytes::from_static(&[0xff, 0x00])),
            ],
            payload: Bytes::from_static(&[0xfe]),
        };
        let t = TopicName::new("t").unwrap();
        let v = serde_json::to_value(record_json(&t, 2, &r)).unwrap();
        assert_eq!(v["offset"], 7);
        assert_eq!(v["partition"], 2);
        assert_eq!(v["timestamp"], "1970-01-01T00:00:01.500Z");
        assert_eq!(v["key"], "order-1");
        assert_eq!(v["headers"]["a"], "text");
        assert_eq!(v["headers_base64"]["b"], "/wA=");
        assert_eq!(v["payload_base64"], "/g==");
        assert!(v.get("payload").is_none());
    }
}
