//! The value types the [`Store`](crate::Store) works with, and their validation.

use crate::{Error, Result};
use serde::{Deserialize, Serialize};
use std::fmt;
use switchyard_types::TopicName;

/// The most characters a subscription name may have.
pub const MAX_NAME_LEN: usize = 200;
/// The most characters an endpoint URL may have.
pub const MAX_ENDPOINT_LEN: usize = 2048;
/// The most characters an event type filter may have.
pub const MAX_TYPE_LEN: usize = 200;
/// The most topics (and, separately, event types) one subscription may list.
pub const MAX_FILTERS: usize = 256;
/// The largest `concurrency` a subscription may ask for.
pub const MAX_CONCURRENCY: u32 = 1024;
/// The largest offset a store can hold (offsets are stored as signed 64-bit integers).
pub const MAX_OFFSET: u64 = i64::MAX as u64;
/// The most bytes of an error or park reason that are kept; longer text is cut (at a
/// character boundary) so that one huge response body cannot bloat the store.
pub const MAX_ERROR_LEN: usize = 4096;

/// What a subscription is: which events it wants and where and how they are delivered.
///
/// Unknown fields are rejected when deserializing; [`validate`](Self::validate) checks the
/// values and names the first bad field.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct SubscriptionSpec {
    /// The subscription's name: 1 to 200 characters from `[A-Za-z0-9._-]`. It is the key
    /// of everything else the store holds for the subscription.
    pub name: String,
    /// The topics it reads, at least one, each a valid topic name, no duplicates.
    pub topics: Vec<String>,
    /// The event types it wants; empty means every type.
    #[serde(default)]
    pub types: Vec<String>,
    /// Where events are pushed: an `http://` or `https://` URL.
    pub endpoint: String,
    /// How many deliveries may be in progress at once, 1 to 1024.
    #[serde(default = "default_concurrency")]
    pub concurrency: u32,
    /// How failed deliveries are retried, and when they are parked.
    #[serde(default)]
    pub retry: RetryPolicy,
    /// Events per push, 1 to 1000. With 1 (the default) each event is one POST in the
    /// CloudEvents binary mode; above 1 the subscriber gets up to this many events (at most
    /// one per partition key) in one POST in the batch mode
    /// (`application/cloudevents-batch+json`), and its answer counts for all of them.
    #[serde(default = "default_max_batch")]
    pub max_batch: u32,
}

fn default_concurrency() -> u32 {
    16
}

fn default_max_batch() -> u32 {
    1
}

/// The largest `max-batch` a subscription may ask for.
pub use switchyard_types::MAX_BATCH;

/// How a subscription retries a failed delivery: exponential backoff with jitter, until
/// `max-attempts` attempts have failed or the first attempt is `max-age-ms` old; then the
/// delivery is parked.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields, default)]
pub struct RetryPolicy {
    /// Delay before the first retry, at least 1 ms.
    pub initial_backoff_ms: u64,
    /// The longest delay between attempts, at least `initial-backoff-ms`.
    pub max_backoff_ms: u64,
    /// Each delay is the previous one times this, 1.0 to 100.0.
    pub multiplier: f64,
    /// Each delay is randomly shortened by up to this fraction of itself, 0.0 to 1.0.
    pub jitter: f64,
    /// Park after this many failed attempts, at least 1.
    pub max_attempts: u32,
    /// Park once the first attempt is this old, at least 1 ms.
    pub max_age_ms: u64,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            initial_backoff_ms: 500,
            max_backoff_ms: 60_000,
            multiplier: 2.0,
            jitter: 0.2,
            max_attempts: 10,
            max_age_ms: 24 * 3600 * 1000,
        }
    }
}

impl RetryPolicy {
    /// The longest backoff a policy may ask for: one day.
    pub const MAX_BACKOFF_MS: u64 = 24 * 3600 * 1000;
    /// The longest `max-age-ms`: 30 days.
    pub const MAX_AGE_MS: u64 = 30 * 24 * 3600 * 1000;

    /// Checks every value; the error's field is `retry.<kebab-case key>`.
    pub fn validate(&self) -> Result<()> {
        let bad =
            |field: &str, reason: String| Err(Error::invalid(format!("retry.{field}"), reason));
        if self.initial_backoff_ms == 0 || self.initial_backoff_ms > Self::MAX_BACKOFF_MS {
            return bad(
                "initial-backoff-ms",
                format!(
                    "must be 1 to {} (got {})",
                    Self::MAX_BACKOFF_MS,
                    self.initial_backoff_ms
                ),
            );
        }
        if self.max_backoff_ms < self.initial_backoff_ms
            || self.max_backoff_ms > Self::MAX_BACKOFF_MS
        {
            return bad(
                "max-backoff-ms",
                format!(
                    "must be from initial-backoff-ms ({}) to {} (got {})",
                    self.initial_backoff_ms,
                    Self::MAX_BACKOFF_MS,
                    self.max_backoff_ms
                ),
            );
        }
        if !(self.multiplier.is_finite() && (1.0..=100.0).contains(&self.multiplier)) {
            return bad(
                "multiplier",
                format!("must be 1.0 to 100.0 (got {})", self.multiplier),
            );
        }
        if !(self.jitter.is_finite() && (0.0..=1.0).contains(&self.jitter)) {
            return bad(
                "jitter",
                format!("must be 0.0 to 1.0 (got {})", self.jitter),
            );
        }
        if self.max_attempts == 0 {
            return bad("max-attempts", "must be at least 1".into());
        }
        if self.max_age_ms == 0 || self.max_age_ms > Self::MAX_AGE_MS {
            return bad(
                "max-age-ms",
                format!(
                    "must be 1 to {} (got {})",
                    Self::MAX_AGE_MS,
                    self.max_age_ms
                ),
            );
        }
        Ok(())
    }
}

impl SubscriptionSpec {
    /// A spec with the given name, topics and endpoint and every other field at its default
    /// (all event types, concurrency 16, the default [`RetryPolicy`]).
    pub fn new(
        name: impl Into<String>,
        topics: impl IntoIterator<Item = impl Into<String>>,
        endpoint: impl Into<String>,
    ) -> Self {
        Self {
            name: name.into(),
            topics: topics.into_iter().map(Into::into).collect(),
            types: Vec::new(),
            endpoint: endpoint.into(),
            concurrency: default_concurrency(),
            retry: RetryPolicy::default(),
            max_batch: default_max_batch(),
        }
    }

    /// Checks every field and names the first bad one (`name`, `topics[1]`, `endpoint`,
    /// `retry.jitter`, ...).
    pub fn validate(&self) -> Result<()> {
        validate_name("name", &self.name)?;
        if self.topics.is_empty() {
            return Err(Error::invalid("topics", "must list at least one topic"));
        }
        if self.topics.len() > MAX_FILTERS {
            return Err(Error::invalid(
                "topics",
                format!("must list at most {MAX_FILTERS} topics"),
            ));
        }
        for (i, topic) in self.topics.iter().enumerate() {
            validate_topic(&format!("topics[{i}]"), topic)?;
            if self.topics[..i].contains(topic) {
                return Err(Error::invalid(
                    format!("topics[{i}]"),
                    format!("topic `{topic}` is listed twice"),
                ));
            }
        }
        if self.types.len() > MAX_FILTERS {
            return Err(Error::invalid(
                "types",
                format!("must list at most {MAX_FILTERS} types"),
            ));
        }
        for (i, ty) in self.types.iter().enumerate() {
            let field = format!("types[{i}]");
            if ty.is_empty() || ty.len() > MAX_TYPE_LEN {
                return Err(Error::invalid(
                    field,
                    format!("must be 1 to {MAX_TYPE_LEN} bytes"),
                ));
            }
            if ty.chars().any(|c| c.is_control() || c.is_whitespace()) {
                return Err(Error::invalid(
                    field,
                    "must not contain whitespace or control characters",
                ));
            }
            if self.types[..i].contains(ty) {
                return Err(Error::invalid(
                    field,
                    format!("type `{ty}` is listed twice"),
                ));
            }
        }
        validate_endpoint(&self.endpoint)?;
        if self.concurrency == 0 || self.concurrency > MAX_CONCURRENCY {
            return Err(Error::invalid(
                "concurrency",
                format!("must be 1 to {MAX_CONCURRENCY} (got {})", self.concurrency),
            ));
        }
        if self.max_batch == 0 || self.max_batch > MAX_BATCH {
            return Err(Error::invalid(
                "max-batch",
                format!("must be 1 to {MAX_BATCH} (got {})", self.max_batch),
            ));
        }
        self.retry.validate()
    }
}

/// Checks a subscription name: 1 to 200 characters from `[A-Za-z0-9._-]`.
pub fn validate_name(field: &str, name: &str) -> Result<()> {
    if name.is_empty() || name.len() > MAX_NAME_LEN {
        return Err(Error::invalid(
            field,
            format!(
                "must be 1 to {MAX_NAME_LEN} characters (got {})",
                name.len()
            ),
        ));
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
    {
        return Err(Error::invalid(
            field,
            "may contain only ASCII letters, digits, '.', '_' and '-'",
        ));
    }
    Ok(())
}

/// Checks a topic's event schemas: valid topic, event types of 1 to [`MAX_TYPE_LEN`]
/// characters, at most [`MAX_FILTERS`] of them, each schema a JSON object or boolean.
pub(crate) fn validate_schemas(topic: &str, schemas: &crate::EventSchemas) -> Result<()> {
    validate_topic("topic", topic)?;
    if schemas.len() > MAX_FILTERS {
        return Err(Error::invalid(
            "schemas",
            format!("at most {MAX_FILTERS} event types may have a schema"),
        ));
    }
    for (t, schema) in schemas {
        if t.is_empty() || t.len() > MAX_TYPE_LEN {
            return Err(Error::invalid(
                "schemas",
                format!("event type {t:?} must be 1 to {MAX_TYPE_LEN} characters"),
            ));
        }
        if !(schema.is_object() || schema.is_boolean()) {
            return Err(Error::invalid(
                format!("schemas.{t}"),
                "a JSON Schema is an object or a boolean",
            ));
        }
    }
    Ok(())
}

fn validate_topic(field: &str, topic: &str) -> Result<()> {
    TopicName::new(topic)
        .map(drop)
        .map_err(|e| Error::invalid(field, e.reason))
}

fn validate_offset(field: &str, offset: u64) -> Result<()> {
    if offset > MAX_OFFSET {
        return Err(Error::invalid(
            field,
            format!("must be at most {MAX_OFFSET} (got {offset})"),
        ));
    }
    Ok(())
}

/// Checks that `endpoint` is an absolute `http://` or `https://` URL with a host.
fn validate_endpoint(endpoint: &str) -> Result<()> {
    let bad = |reason: &str| Err(Error::invalid("endpoint", reason));
    if endpoint.len() > MAX_ENDPOINT_LEN {
        return bad("must be at most 2048 characters");
    }
    if endpoint
        .chars()
        .any(|c| c.is_control() || c.is_whitespace())
    {
        return bad("must not contain whitespace or control characters");
    }
    let lower = endpoint.to_ascii_lowercase();
    let rest = if let Some(rest) = lower.strip_prefix("https://") {
        rest
    } else if let Some(rest) = lower.strip_prefix("http://") {
        rest
    } else {
        return bad("must be an http:// or https:// URL");
    };
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    let host_port = authority.rsplit('@').next().unwrap_or_default();
    let host = if host_port.starts_with('[') {
        // An IPv6 literal: `[::1]:8080`.
        match host_port.find(']') {
            Some(end) => &host_port[1..end],
            None => return bad("has an unterminated IPv6 address"),
        }
    } else {
        let (host, port) = match host_port.rsplit_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (host_port, None),
        };
        if let Some(port) = port
            && port.parse::<u16>().is_err()
        {
            return bad("has an invalid port");
        }
        host
    };
    if host.is_empty() {
        return bad("must name a host");
    }
    Ok(())
}

/// Cuts `text` to at most [`MAX_ERROR_LEN`] bytes, at a character boundary.
pub(crate) fn clip_error(text: &str) -> String {
    if text.len() <= MAX_ERROR_LEN {
        return text.to_owned();
    }
    let mut end = MAX_ERROR_LEN;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text[..end].to_owned()
}

/// A stored subscription: its spec plus bookkeeping.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct Subscription {
    pub spec: SubscriptionSpec,
    /// When it was created (Unix milliseconds).
    pub created_at_ms: i64,
    /// When its spec last changed (Unix milliseconds).
    pub updated_at_ms: i64,
    /// 1 when created, incremented by every update that changes the spec. A dispatcher
    /// that sees a new generation reloads the spec.
    pub generation: u64,
}

/// A subscription's read position in one partition: `offset` is the next offset to read.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct Cursor {
    pub topic: String,
    pub partition: u32,
    pub offset: u64,
}

impl Cursor {
    pub fn new(topic: impl Into<String>, partition: u32, offset: u64) -> Self {
        Self {
            topic: topic.into(),
            partition,
            offset,
        }
    }

    pub(crate) fn validate(&self) -> Result<()> {
        validate_topic("topic", &self.topic)?;
        validate_offset("offset", self.offset)
    }
}

/// Which record one delivery carries, for which subscription. A key is in at most one place
/// at a time: in flight, or parked.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct DeliveryKey {
    pub subscription: String,
    pub topic: String,
    pub partition: u32,
    pub offset: u64,
}

impl DeliveryKey {
    pub fn new(
        subscription: impl Into<String>,
        topic: impl Into<String>,
        partition: u32,
        offset: u64,
    ) -> Self {
        Self {
            subscription: subscription.into(),
            topic: topic.into(),
            partition,
            offset,
        }
    }

    /// Checks the key's fields; the error's field is `<prefix>subscription` and so on.
    pub fn validate(&self, prefix: &str) -> Result<()> {
        validate_name(&format!("{prefix}subscription"), &self.subscription)?;
        validate_topic(&format!("{prefix}topic"), &self.topic)?;
        validate_offset(&format!("{prefix}offset"), self.offset)
    }
}

impl fmt::Display for DeliveryKey {
    /// `subscription topic/partition@offset`, as it appears in error messages.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {}/{}@{}",
            self.subscription, self.topic, self.partition, self.offset
        )
    }
}

/// One record owed to one subscription that has not been acknowledged yet (in flight:
/// waiting for its first attempt, being attempted, or waiting to be retried).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct Delivery {
    pub key: DeliveryKey,
    /// The record's key, if it has one: deliveries with the same key are delivered in
    /// offset order, one at a time.
    pub partition_key: Option<String>,
    /// How many attempts have failed so far.
    pub attempts: u32,
    /// When the first attempt failed (Unix milliseconds), used for `max-age-ms`.
    pub first_attempt_at_ms: Option<i64>,
    /// When the next attempt is due (Unix milliseconds).
    pub next_attempt_at_ms: i64,
    /// The error of the latest failed attempt.
    pub last_error: Option<String>,
}

impl Delivery {
    /// A fresh delivery of `key`, due at `due_at_ms`, with no attempts yet.
    pub fn new(key: DeliveryKey, partition_key: Option<String>, due_at_ms: i64) -> Self {
        Self {
            key,
            partition_key,
            attempts: 0,
            first_attempt_at_ms: None,
            next_attempt_at_ms: due_at_ms,
            last_error: None,
        }
    }
}

/// A delivery that was given up on; it stays here until a person unparks or discards it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct Parked {
    /// The delivery as it was when parked (its attempts include the final one).
    #[serde(flatten)]
    pub delivery: Delivery,
    /// Why it was parked.
    pub reason: String,
    /// When it was parked (Unix milliseconds).
    pub parked_at_ms: i64,
}

/// Counts for one subscription, for the API and metrics.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct SubscriptionStats {
    /// Deliveries in flight (due or waiting for a retry).
    pub in_flight: u64,
    /// Parked deliveries.
    pub parked: u64,
    /// The most recent error recorded for the subscription by `retry_later` or `park`, if
    /// any (kept after the delivery is acknowledged, cleared never).
    pub last_error: Option<String>,
    /// When `last_error` was recorded (Unix milliseconds).
    pub last_error_at_ms: Option<i64>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spec_json_uses_kebab_case_and_defaults() {
        let spec: SubscriptionSpec = serde_json::from_str(
            r#"{"name": "billing", "topics": ["orders.v1"], "endpoint": "http://h/"}"#,
        )
        .expect("minimal spec");
        assert_eq!(
            spec,
            SubscriptionSpec::new("billing", ["orders.v1"], "http://h/")
        );
        spec.validate().expect("the defaults are valid");
        let json = serde_json::to_value(&spec).expect("to json");
        assert_eq!(json["retry"]["initial-backoff-ms"], 500);
        assert_eq!(json["retry"]["max-attempts"], 10);

        let partial: SubscriptionSpec = serde_json::from_str(
            r#"{"name": "b", "topics": ["t"], "endpoint": "http://h/",
                "retry": {"max-attempts": 3}}"#,
        )
        .expect("partial retry");
        assert_eq!(partial.retry.max_attempts, 3);
        assert_eq!(
            partial.retry.max_backoff_ms,
            RetryPolicy::default().max_backoff_ms
        );
    }

    #[test]
    fn unknown_fields_are_rejected() {
        let err = serde_json::from_str::<SubscriptionSpec>(
            r#"{"name": "b", "topics": ["t"], "endpoint": "http://h/", "endpiont": "x"}"#,
        )
        .expect_err("unknown field");
        assert!(err.to_string().contains("endpiont"), "{err}");
        let err = serde_json::from_str::<SubscriptionSpec>(
            r#"{"name": "b", "topics": ["t"], "endpoint": "http://h/",
                "retry": {"max_attempts": 3}}"#,
        )
        .expect_err("snake_case key");
        assert!(err.to_string().contains("max_attempts"), "{err}");
    }

    #[test]
    fn parked_json_flattens_the_delivery() {
        let parked = Parked {
            delivery: Delivery::new(DeliveryKey::new("s", "t", 1, 2), None, 3),
            reason: "r".into(),
            parked_at_ms: 4,
        };
        let json = serde_json::to_value(&parked).expect("to json");
        assert_eq!(json["key"]["offset"], 2);
        assert_eq!(json["next-attempt-at-ms"], 3);
        assert_eq!(json["parked-at-ms"], 4);
        let back: Parked = serde_json::from_value(json).expect("from json");
        assert_eq!(back, parked);
    }

    #[test]
    fn clip_error_cuts_at_a_character_boundary() {
        assert_eq!(clip_error("short"), "short");
        let long = format!("a{}", "€".repeat(MAX_ERROR_LEN));
        let clipped = clip_error(&long);
        assert!(clipped.len() <= MAX_ERROR_LEN);
        assert!(clipped.len() > MAX_ERROR_LEN - 3);
        assert!(long.starts_with(&clipped));
    }

    #[test]
    fn delivery_key_display_names_every_part() {
        assert_eq!(
            DeliveryKey::new("billing", "orders.v1", 3, 120).to_string(),
            "billing orders.v1/3@120"
        );
    }
}
