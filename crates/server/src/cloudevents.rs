//! CloudEvents 1.0 over HTTP: the binary, structured and batch content modes, validated
//! into one normalized form (the structured JSON object), which is what the journal stores.
//!
//! Stored events keep every attribute the producer sent. On the way out two extensions are
//! added: `partition` (integer) and `sequence` (the offset, a string as the CloudEvents
//! sequence extension defines it); `time` is added, as the append time, when the producer
//! sent none.

use crate::problem::Problem;
use axum::http::HeaderMap;
use base64::Engine as _;
use bytes::Bytes;
use serde_json::{Map, Value};
use switchyard_journal::{Record, StoredRecord};

pub const STRUCTURED: &str = "application/cloudevents+json";
pub const BATCH: &str = "application/cloudevents-batch+json";

/// One validated event: its attributes and data as a structured-mode JSON object.
#[derive(Clone, Debug, PartialEq)]
pub struct Event(pub Map<String, Value>);

impl Event {
    fn str_attr(&self, name: &str) -> Option<&str> {
        self.0.get(name).and_then(Value::as_str)
    }

    pub fn id(&self) -> &str {
        self.str_attr("id").unwrap_or_default()
    }

    /// What orders the event: the `partitionkey` extension, else `subject`.
    pub fn partition_key(&self) -> Option<&str> {
        self.str_attr("partitionkey")
            .or_else(|| self.str_attr("subject"))
    }

    pub fn into_record(self) -> Record {
        let key = self
            .partition_key()
            .map(|k| Bytes::copy_from_slice(k.as_bytes()));
        let id = self.id().to_string();
        let payload = serde_json::to_vec(&Value::Object(self.0)).unwrap_or_default();
        Record {
            id: Some(id),
            key,
            headers: Vec::new(),
            payload: payload.into(),
        }
    }
}

/// The event stored at `record`, with `partition` and `sequence` added. A record that is
/// not a stored event (written by another tool) is wrapped so it still reads.
pub fn render(record: &StoredRecord, partition: u32) -> Value {
    let mut map = match serde_json::from_slice::<Value>(&record.payload) {
        Ok(Value::Object(m)) => m,
        _ => {
            let mut m = Map::new();
            m.insert("specversion".into(), "1.0".into());
            m.insert(
                "id".into(),
                record
                    .id
                    .clone()
                    .unwrap_or_else(|| format!("{partition}-{}", record.offset))
                    .into(),
            );
            m.insert("source".into(), "/switchyard/journal".into());
            m.insert("type".into(), "switchyard.record".into());
            m.insert(
                "data_base64".into(),
                base64::engine::general_purpose::STANDARD
                    .encode(&record.payload)
                    .into(),
            );
            m
        }
    };
    map.insert("partition".into(), partition.into());
    map.insert("sequence".into(), record.offset.to_string().into());
    if !map.contains_key("time")
        && let Some(t) = rfc3339(record.timestamp.millis())
    {
        map.insert("time".into(), t.into());
    }
    Value::Object(map)
}

pub fn rfc3339(millis: i64) -> Option<String> {
    let t = time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(millis) * 1_000_000).ok()?;
    t.format(&time::format_description::well_known::Rfc3339)
        .ok()
}

/// Context attributes with a defined type; anything else is an extension.
const REQUIRED: [&str; 4] = ["specversion", "id", "source", "type"];
const OPTIONAL_STRINGS: [&str; 4] = ["datacontenttype", "dataschema", "subject", "time"];
/// Extensions Switchyard adds on the way out: a producer may not set them.
const RESERVED: [&str; 2] = ["partition", "sequence"];

/// Parses a structured-mode body (`application/cloudevents+json`).
pub fn parse_structured(body: &[u8]) -> Result<Event, Problem> {
    let value: Value = serde_json::from_slice(body)
        .map_err(|e| Problem::bad_request("malformed-json", format!("body is not JSON: {e}")))?;
    validate(value, "")
}

/// Parses a batch-mode body (`application/cloudevents-batch+json`): a JSON array of
/// structured events, all valid or the whole batch is refused.
pub fn parse_batch(body: &[u8], max_events: usize) -> Result<Vec<Event>, Problem> {
    let value: Value = serde_json::from_slice(body)
        .map_err(|e| Problem::bad_request("malformed-json", format!("body is not JSON: {e}")))?;
    let Value::Array(items) = value else {
        return Err(Problem::bad_request(
            "invalid-batch",
            "a batch must be a JSON array of events",
        ));
    };
    if items.is_empty() {
        return Err(Problem::bad_request("invalid-batch", "the batch is empty"));
    }
    if items.len() > max_events {
        return Err(Problem::new(
            axum::http::StatusCode::PAYLOAD_TOO_LARGE,
            "batch-too-large",
            format!(
                "the batch holds {} events; at most {max_events} are accepted",
                items.len()
            ),
        ));
    }
    items
        .into_iter()
        .enumerate()
        .map(|(i, v)| validate(v, &format!("/{i}")))
        .collect()
}

/// Parses a binary-mode request: attributes in `ce-*` headers, data in the body.
pub fn parse_binary(headers: &HeaderMap, body: Bytes) -> Result<Event, Problem> {
    let mut map = Map::new();
    for (name, value) in headers {
        let Some(attr) = name.as_str().strip_prefix("ce-") else {
            continue;
        };
        let raw = value.to_str().map_err(|_| {
            Problem::bad_request(
                "invalid-attribute",
                format!("header {name} is not visible ASCII"),
            )
            .at(attr)
        })?;
        let decoded = percent_decode(raw).ok_or_else(|| {
            Problem::bad_request(
                "invalid-attribute",
                format!("header {name} has a bad percent-encoding or is not UTF-8"),
            )
            .at(attr)
        })?;
        if map.insert(attr.to_string(), decoded.into()).is_some() {
            return Err(Problem::bad_request(
                "invalid-attribute",
                format!("header {name} is given more than once"),
            )
            .at(attr));
        }
    }
    if map.contains_key("datacontenttype") {
        return Err(Problem::bad_request(
            "invalid-attribute",
            "in binary mode datacontenttype is the Content-Type header, not ce-datacontenttype",
        )
        .at("datacontenttype"));
    }
    let content_type = headers
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    if let Some(ct) = &content_type {
        map.insert("datacontenttype".into(), ct.clone().into());
    }
    if !body.is_empty() {
        let ct = content_type.as_deref().unwrap_or("application/json");
        if switchyard_types::is_json_media_type(ct) {
            let data: Value = serde_json::from_slice(&body).map_err(|e| {
                Problem::bad_request(
                    "malformed-json",
                    format!("the body is declared {ct} but is not JSON: {e}"),
                )
                .at("data")
            })?;
            map.insert("data".into(), data);
        } else if let (true, Ok(text)) = (ct.starts_with("text/"), std::str::from_utf8(&body)) {
            map.insert("data".into(), text.into());
        } else {
            map.insert(
                "data_base64".into(),
                base64::engine::general_purpose::STANDARD
                    .encode(&body)
                    .into(),
            );
        }
    }
    validate(Value::Object(map), "")
}

/// Decodes `%XX` sequences; None on a malformed escape or invalid UTF-8.
pub(crate) fn percent_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes.get(i + 1..i + 3)?;
            if !hex.iter().all(u8::is_ascii_hexdigit) {
                return None;
            }
            out.push(u8::from_str_radix(std::str::from_utf8(hex).ok()?, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

fn invalid(pointer: &str, attr: &str, detail: impl Into<String>) -> Problem {
    Problem::bad_request("invalid-attribute", detail).at(format!("{pointer}/{attr}"))
}

/// Checks one event against CloudEvents 1.0 and normalizes nothing but what it must.
fn validate(value: Value, pointer: &str) -> Result<Event, Problem> {
    let Value::Object(map) = value else {
        return Err(
            Problem::bad_request("invalid-event", "an event must be a JSON object")
                .at(if pointer.is_empty() { "/" } else { pointer }),
        );
    };
    if let Some(v) = map.get("specversion")
        && v.as_str() != Some("1.0")
    {
        return Err(Problem::bad_request(
            "unsupported-specversion",
            format!("specversion must be \"1.0\", got {v}"),
        )
        .at(format!("{pointer}/specversion")));
    }
    for attr in REQUIRED {
        match map.get(attr) {
            None => {
                return Err(Problem::bad_request(
                    "missing-attribute",
                    format!("required attribute `{attr}` is missing"),
                )
                .at(format!("{pointer}/{attr}")));
            }
            Some(Value::String(s)) if !s.is_empty() => {}
            Some(_) => {
                return Err(invalid(
                    pointer,
                    attr,
                    format!("`{attr}` must be a non-empty string"),
                ));
            }
        }
    }
    if map.contains_key("data") && map.contains_key("data_base64") {
        return Err(invalid(
            pointer,
            "data_base64",
            "an event has `data` or `data_base64`, not both",
        ));
    }
    for (name, value) in &map {
        match name.as_str() {
            "data" => continue,
            "data_base64" => {
                let ok = value
                    .as_str()
                    .is_some_and(|s| base64::engine::general_purpose::STANDARD.decode(s).is_ok());
                if !ok {
                    return Err(invalid(pointer, name, "`data_base64` must be base64 text"));
                }
                continue;
            }
            _ => {}
        }
        if RESERVED.contains(&name.as_str()) {
            return Err(invalid(
                pointer,
                name,
                format!("`{name}` is set by Switchyard when the event is stored"),
            ));
        }
        if name.is_empty()
            || name.len() > 20
            || !name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        {
            return Err(invalid(
                pointer,
                name,
                format!("attribute name `{name}` must be 1 to 20 lower-case letters or digits"),
            ));
        }
        if OPTIONAL_STRINGS.contains(&name.as_str()) || REQUIRED.contains(&name.as_str()) {
            if !value.is_string() {
                return Err(invalid(pointer, name, format!("`{name}` must be a string")));
            }
        } else {
            let ok = match value {
                Value::String(_) | Value::Bool(_) => true,
                Value::Number(n) => n.as_i64().is_some_and(|i| i32::try_from(i).is_ok()),
                _ => false,
            };
            if !ok {
                return Err(invalid(
                    pointer,
                    name,
                    format!("extension `{name}` must be a string, a boolean or a 32-bit integer"),
                ));
            }
        }
    }
    if let Some(t) = map.get("time").and_then(Value::as_str)
        && time::OffsetDateTime::parse(t, &time::format_description::well_known::Rfc3339).is_err()
    {
        return Err(invalid(
            pointer,
            "time",
            "`time` must be an RFC 3339 timestamp",
        ));
    }
    if let Some(k) = map.get("partitionkey")
        && k.as_str().is_none_or(str::is_empty)
    {
        return Err(invalid(
            pointer,
            "partitionkey",
            "`partitionkey` must be a non-empty string",
        ));
    }
    Ok(Event(map))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn ok_event() -> Value {
        json!({"specversion": "1.0", "id": "e1", "source": "/orders", "type": "order.placed",
               "subject": "order-7", "data": {"total": 42}})
    }

    #[test]
    fn a_structured_event_is_kept_as_sent() {
        let e = parse_structured(ok_event().to_string().as_bytes()).expect("valid");
        assert_eq!(e.id(), "e1");
        assert_eq!(e.partition_key(), Some("order-7"));
        assert_eq!(Value::Object(e.0), ok_event());
    }

    #[test]
    fn each_bad_attribute_is_named() {
        let cases = [
            ("specversion", json!("0.3"), "unsupported-specversion"),
            ("id", json!(""), "invalid-attribute"),
            ("source", json!(7), "invalid-attribute"),
            ("time", json!("yesterday"), "invalid-attribute"),
            ("Bad-Name", json!("x"), "invalid-attribute"),
            ("ext", json!({"nested": 1}), "invalid-attribute"),
            ("ext", json!(1_u64 << 40), "invalid-attribute"),
            ("sequence", json!("5"), "invalid-attribute"),
            ("data_base64", json!("not base64!"), "invalid-attribute"),
        ];
        for (attr, value, code) in cases {
            let mut e = ok_event();
            e[attr] = value;
            let p = parse_structured(e.to_string().as_bytes()).expect_err(attr);
            assert_eq!(p.code, code, "{attr}");
            assert_eq!(p.pointer.as_deref(), Some(format!("/{attr}").as_str()));
        }
        let mut e = ok_event();
        e.as_object_mut().expect("object").remove("type");
        let p = parse_structured(e.to_string().as_bytes()).expect_err("missing type");
        assert_eq!(
            (p.code, p.pointer.as_deref()),
            ("missing-attribute", Some("/type"))
        );
    }

    #[test]
    fn a_batch_names_the_bad_event_and_refuses_all() {
        let mut bad = ok_event();
        bad["specversion"] = json!("2.0");
        let body = json!([ok_event(), bad]).to_string();
        let p = parse_batch(body.as_bytes(), 100).expect_err("bad second event");
        assert_eq!(p.pointer.as_deref(), Some("/1/specversion"));
        assert_eq!(
            parse_batch(b"[]", 100).expect_err("empty").code,
            "invalid-batch"
        );
        assert_eq!(
            parse_batch(b"{}", 100).expect_err("object").code,
            "invalid-batch"
        );
        let three = json!([ok_event(), ok_event(), ok_event()]).to_string();
        assert_eq!(
            parse_batch(three.as_bytes(), 2).expect_err("over").code,
            "batch-too-large"
        );
        assert_eq!(
            parse_batch(b"[1,", 2).expect_err("json").code,
            "malformed-json"
        );
    }

    #[test]
    fn binary_mode_reads_headers_and_body() {
        let mut h = HeaderMap::new();
        for (k, v) in [
            ("ce-specversion", "1.0"),
            ("ce-id", "b1"),
            ("ce-source", "/x"),
            ("ce-type", "t"),
            ("ce-partitionkey", "caf%C3%A9"),
            ("content-type", "application/json"),
        ] {
            h.insert(
                axum::http::HeaderName::from_static(k),
                axum::http::HeaderValue::from_static(v),
            );
        }
        let e = parse_binary(&h, Bytes::from_static(b"{\"a\":1}")).expect("valid");
        assert_eq!(e.partition_key(), Some("café"));
        assert_eq!(e.0["data"], json!({"a": 1}));
        let p = parse_binary(&h, Bytes::from_static(b"{nope")).expect_err("bad json");
        assert_eq!(p.code, "malformed-json");
        h.insert(
            axum::http::HeaderName::from_static("content-type"),
            axum::http::HeaderValue::from_static("application/octet-stream"),
        );
        let e = parse_binary(&h, Bytes::from_static(b"\xff\x00")).expect("bytes");
        assert_eq!(e.0["data_base64"], json!("/wA="));
        h.insert(
            axum::http::HeaderName::from_static("ce-id"),
            axum::http::HeaderValue::from_static("%zz"),
        );
        assert_eq!(
            parse_binary(&h, Bytes::new())
                .expect_err("escape")
                .pointer
                .as_deref(),
            Some("id")
        );
    }
}
