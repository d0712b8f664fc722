//! Typed events and the CloudEvents envelope they travel in.
//!
//! An [`Event`] is one CloudEvents `type` on one topic, with its data as the struct (serde)
//! and an optional partition key (every event of a key is delivered in order). `#[derive(Event)]`
//! writes the impl. An [`Events`] set is several types on one topic decoded by `type` (an
//! entity's events: `#[derive(Events)]` on an enum).
//!
//! [`CloudEvent`] is the envelope as the journal stores it: the structured-mode JSON
//! object (the same normal form the HTTP API stores), so services in any language, the
//! bus and the HTTP API read what an in-process Rust service appended.

use crate::error::{Error, Result};
use crate::trace::Lineage;
use bytes::Bytes;
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value};
use switchyard_types::{Partition, Record, StoredRecord};

/// One event type: its CloudEvents `type`, its topic and its partition key.
///
/// ```
/// use serde::{Deserialize, Serialize};
/// use switchyard_sdk::Event;
///
/// #[derive(Event, Serialize, Deserialize)]
/// #[event(type = "order.placed", topic = "orders.v1", key = order)]
/// struct OrderPlaced {
///     order: String,
///     total_cents: i64,
/// }
///
/// let e = OrderPlaced { order: "ord-1".into(), total_cents: 250 };
/// assert_eq!(e.partition_key().as_deref(), Some("ord-1"));
/// assert_eq!(OrderPlaced::TOPIC, "orders.v1");
/// ```
pub trait Event: Serialize + DeserializeOwned + Send + Sync + 'static {
    /// The CloudEvents `type`, e.g. `order.placed`.
    const TYPE: &'static str;
    /// The topic it is published to, e.g. `orders.v1`.
    const TOPIC: &'static str;
    /// What orders it (the `partitionkey`, also sent as `subject`); `None`: no order.
    fn partition_key(&self) -> Option<String>;
}

/// A closed set of event types on one topic, decoded by `type`: what an event-sourced
/// entity folds. `#[derive(Event)]` makes every event a set of one; `#[derive(Events)]`
/// on an enum of events makes a set of several (all on one topic, checked at compile time).
pub trait Events: Sized + Send + Sync + 'static {
    /// The one topic of the set.
    fn topic() -> &'static str;
    /// The `type`s of the set.
    fn types() -> &'static [&'static str];
    /// The event as a member of the set; `Ok(None)` when its type is not one of the set.
    /// Data that does not match the type's struct is [`Error::InvalidEvent`].
    fn decode(event: &CloudEvent) -> Result<Option<Self>>;
    /// The event, ready to be stamped with an id, a source and its lineage.
    fn encode(&self) -> Result<Outgoing>;
}

/// An event on its way out, before it has an id, a source and its lineage.
#[derive(Clone, Debug, PartialEq)]
pub struct Outgoing {
    pub topic: String,
    pub ty: String,
    pub key: Option<String>,
    pub data: Value,
}

impl Outgoing {
    pub fn of<E: Event>(event: &E) -> Result<Self> {
        let data = serde_json::to_value(event)
            .map_err(|e| Error::invalid("data", format!("{} does not serialize: {e}", E::TYPE)))?;
        Ok(Outgoing {
            topic: E::TOPIC.to_string(),
            ty: E::TYPE.to_string(),
            key: event.partition_key(),
            data,
        })
    }

    /// The CloudEvent: `id`, `source`, the time now, and `lineage`'s trace context,
    /// correlation and causation ids.
    pub fn stamp(self, id: String, source: &str, lineage: &Lineage) -> Result<CloudEvent> {
        if let Some(k) = &self.key
            && k.is_empty()
        {
            return Err(Error::invalid(
                "partitionkey",
                format!("{}: the partition key is empty", self.ty),
            ));
        }
        let mut m = Map::new();
        m.insert("specversion".into(), "1.0".into());
        m.insert("id".into(), id.into());
        m.insert("source".into(), source.into());
        m.insert("type".into(), self.ty.into());
        if let Some(k) = self.key {
            m.insert("subject".into(), k.clone().into());
            m.insert("partitionkey".into(), k.into());
        }
        if let Some(t) = rfc3339(switchyard_types::Timestamp::now().millis()) {
            m.insert("time".into(), t.into());
        }
        m.insert("datacontenttype".into(), "application/json".into());
        lineage.write_to(&mut m);
        m.insert("data".into(), self.data);
        CloudEvent::from_map(m)
    }
}

/// A fresh event id: 128 random bits in hex.
pub fn new_id() -> String {
    format!("{:032x}", rand::random::<u128>())
}

pub(crate) fn rfc3339(millis: i64) -> Option<String> {
    let t = time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(millis) * 1_000_000).ok()?;
    t.format(&time::format_description::well_known::Rfc3339)
        .ok()
}

/// A CloudEvent 1.0 in its structured-mode JSON form, validated: `specversion` 1.0,
/// non-empty string `id`, `source` and `type`, attribute names of lower-case letters and
/// digits, `data` or `data_base64` but not both.
#[derive(Clone, Debug, PartialEq)]
pub struct CloudEvent(Map<String, Value>);

impl CloudEvent {
    /// Validates a structured-mode object (input from outside: each bad attribute is named).
    pub fn from_json(value: Value) -> Result<Self> {
        match value {
            Value::Object(m) => Self::from_map(m),
            _ => Err(Error::invalid("/", "an event must be a JSON object")),
        }
    }

    pub fn from_map(m: Map<String, Value>) -> Result<Self> {
        match m.get("specversion") {
            Some(Value::String(v)) if v == "1.0" => {}
            Some(v) => {
                return Err(Error::invalid(
                    "specversion",
                    format!("must be \"1.0\", got {v}"),
                ));
            }
            None => return Err(Error::invalid("specversion", "is missing")),
        }
        for attr in ["id", "source", "type"] {
            match m.get(attr) {
                Some(Value::String(s)) if !s.is_empty() => {}
                Some(_) => return Err(Error::invalid(attr, "must be a non-empty string")),
                None => return Err(Error::invalid(attr, "is missing")),
            }
        }
        if m.contains_key("data") && m.contains_key("data_base64") {
            return Err(Error::invalid(
                "data_base64",
                "an event has `data` or `data_base64`, not both",
            ));
        }
        for name in m.keys() {
            let ok = name == "data_base64"
                || (!name.is_empty()
                    && name.len() <= 20
                    && name
                        .bytes()
                        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit()));
            if !ok {
                return Err(Error::invalid(
                    name.as_str(),
                    "attribute names are 1 to 20 lower-case letters or digits",
                ));
            }
        }
        for name in [
            "subject",
            "partitionkey",
            "traceparent",
            "tracestate",
            "time",
        ] {
            if let Some(v) = m.get(name)
                && !v.is_string()
            {
                return Err(Error::invalid(name, "must be a string"));
            }
        }
        Ok(CloudEvent(m))
    }

    /// The event stored in `record` of `partition`, with `partition` and `sequence` (the
    /// offset) added, as the HTTP API renders it. A record that is not a CloudEvent (written
    /// by another tool) reads as type `switchyard.record` with its bytes in `data_base64`.
    pub fn from_record(record: &StoredRecord, partition: Partition) -> Self {
        use base64::Engine as _;
        let mut m = match serde_json::from_slice::<Value>(&record.payload)
            .ok()
            .and_then(|v| CloudEvent::from_json(v).ok())
        {
            Some(e) => e.0,
            None => {
                let mut m = Map::new();
                m.insert("specversion".into(), "1.0".into());
                let id = record
                    .id
                    .clone()
                    .unwrap_or_else(|| format!("{partition}-{}", record.offset));
                m.insert("id".into(), id.into());
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
        m.insert("partition".into(), partition.into());
        m.insert("sequence".into(), record.offset.to_string().into());
        if !m.contains_key("time")
            && let Some(t) = rfc3339(record.timestamp.millis())
        {
            m.insert("time".into(), t.into());
        }
        CloudEvent(m)
    }

    /// The journal record: id = the event id (dedup), key = `partitionkey` else `subject`
    /// (ordering and optimistic concurrency), payload = the structured JSON. The extensions
    /// Switchyard adds on the way out (`partition`, `sequence`) are left out.
    pub fn to_record(&self) -> Record {
        let mut m = self.0.clone();
        m.remove("partition");
        m.remove("sequence");
        let payload = serde_json::to_vec(&Value::Object(m)).unwrap_or_default();
        Record {
            id: Some(self.id().to_string()),
            key: self
                .partition_key()
                .map(|k| Bytes::copy_from_slice(k.as_bytes())),
            headers: Vec::new(),
            payload: payload.into(),
        }
    }

    pub fn attr(&self, name: &str) -> Option<&str> {
        self.0.get(name).and_then(Value::as_str)
    }

    pub fn id(&self) -> &str {
        self.attr("id").unwrap_or_default()
    }

    pub fn source(&self) -> &str {
        self.attr("source").unwrap_or_default()
    }

    /// The CloudEvents `type`.
    pub fn ty(&self) -> &str {
        self.attr("type").unwrap_or_default()
    }

    pub fn subject(&self) -> Option<&str> {
        self.attr("subject")
    }

    /// What orders the event: `partitionkey`, else `subject` (as the platform reads it).
    pub fn partition_key(&self) -> Option<&str> {
        self.attr("partitionkey").or_else(|| self.subject())
    }

    /// The partition it was read from (set on events read back from the platform).
    pub fn partition(&self) -> Option<Partition> {
        self.0
            .get("partition")
            .and_then(Value::as_u64)
            .and_then(|p| u32::try_from(p).ok())
    }

    /// Its offset in that partition (the `sequence` extension).
    pub fn sequence(&self) -> Option<u64> {
        match self.0.get("sequence") {
            Some(Value::String(s)) => s.parse().ok(),
            Some(Value::Number(n)) => n.as_u64(),
            _ => None,
        }
    }

    pub fn traceparent(&self) -> Option<&str> {
        self.attr("traceparent")
    }

    pub fn correlation_id(&self) -> Option<&str> {
        self.attr("correlationid")
    }

    pub fn causation_id(&self) -> Option<&str> {
        self.attr("causationid")
    }

    pub fn data(&self) -> Option<&Value> {
        self.0.get("data")
    }

    /// The data decoded as `T`; an error names the event's type and what did not match.
    pub fn data_as<T: DeserializeOwned>(&self) -> Result<T> {
        let data = self.data().cloned().unwrap_or(Value::Null);
        serde_json::from_value(data).map_err(|e| {
            Error::invalid(
                "data",
                format!("{} {}: the data does not decode: {e}", self.ty(), self.id()),
            )
        })
    }

    /// The structured-mode JSON object.
    pub fn as_map(&self) -> &Map<String, Value> {
        &self.0
    }

    pub fn into_json(self) -> Value {
        Value::Object(self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn each_bad_attribute_is_named() {
        let good = json!({"specversion": "1.0", "id": "e1", "source": "/x", "type": "t"});
        assert!(CloudEvent::from_json(good.clone()).is_ok());
        let cases = [
            ("specversion", json!("0.3")),
            ("id", json!("")),
            ("source", json!(7)),
            ("Bad", json!("x")),
            ("subject", json!(3)),
        ];
        for (attr, v) in cases {
            let mut e = good.clone();
            e[attr] = v;
            match CloudEvent::from_json(e) {
                Err(Error::InvalidEvent { field, .. }) => assert_eq!(field, attr),
                other => panic!("{attr}: {other:?}"),
            }
        }
        let mut e = good.clone();
        e.as_object_mut().map(|m| m.remove("type"));
        assert!(matches!(
            CloudEvent::from_json(e),
            Err(Error::InvalidEvent { field, .. }) if field == "type"
        ));
        assert!(CloudEvent::from_json(json!([1])).is_err());
    }

    #[test]
    fn records_round_trip_in_the_platforms_form() {
        let lineage = Lineage::root();
        let out = Outgoing {
            topic: "t.v1".into(),
            ty: "thing.done".into(),
            key: Some("k1".into()),
            data: json!({"n": 1}),
        };
        let e = out.stamp("id-1".into(), "/svc", &lineage).expect("valid");
        let r = e.to_record();
        assert_eq!(r.id.as_deref(), Some("id-1"));
        assert_eq!(r.key.as_deref(), Some(&b"k1"[..]));
        let stored = StoredRecord {
            offset: 7,
            timestamp: switchyard_types::Timestamp(0),
            id: r.id.clone(),
            key: r.key.clone(),
            headers: Vec::new(),
            payload: r.payload.clone(),
        };
        let back = CloudEvent::from_record(&stored, 2);
        assert_eq!((back.partition(), back.sequence()), (Some(2), Some(7)));
        assert_eq!(back.data(), Some(&json!({"n": 1})));
        assert_eq!(back.partition_key(), Some("k1"));
        assert!(back.traceparent().is_some());
        // Not a CloudEvent: still readable, as the HTTP API shows it.
        let raw = StoredRecord {
            payload: Bytes::from_static(b"\xff"),
            ..stored
        };
        assert_eq!(CloudEvent::from_record(&raw, 0).ty(), "switchyard.record");
    }
}
