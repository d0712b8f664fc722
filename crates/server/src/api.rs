//! The router and the request handlers of the API v1.

use crate::auth::{self, Caller, Token};
use crate::cloudevents::{self, BATCH, Event, STRUCTURED};
use crate::connect as cx;
use crate::metrics::Metrics;
use crate::position::From as StartFrom;
use crate::problem::Problem;
use crate::stream;
use crate::subs;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use bytes::Bytes;
use serde::Deserialize;
use serde_json::{Value, json};
use std::sync::Arc;
use std::time::Duration;
use switchyard_journal::{
    Expectation, Expected, Journal, Partition, PartitionChoice, ReadLimits, TopicConfig, TopicName,
};
use tokio::sync::watch;

/// The API's limits and timings. Every field has a default.
#[derive(Clone, Debug)]
pub struct Options {
    /// Largest request body accepted (413 above).
    pub max_body_bytes: usize,
    /// Most events in one batch (413 above).
    pub max_batch_events: usize,
    /// Most events one read returns (`limit` is capped to it).
    pub max_read_events: usize,
    /// How often a stream sends a heartbeat when there is nothing else to send.
    pub heartbeat: Duration,
    /// A stream whose client has not taken the next event for this long is ended with its
    /// resume position instead of buffering more.
    pub slow_client_timeout: Duration,
    /// Events buffered per stream between the journal and the client.
    pub stream_buffer: usize,
    /// A connection whose writes have been stuck this long is closed: the last resort for
    /// a client that does not read at all (a slow one gets `slow_client_timeout`'s `end`
    /// message first, so keep this longer).
    pub stalled_write_timeout: Duration,
    /// Bearer tokens; empty means the API is open (see [`crate::auth`]).
    pub tokens: Vec<Token>,
    /// The subscriptions; without it `/v1/subscriptions` answers 503.
    pub bus: Option<switchyard_bus::Bus>,
    /// The integration gateway; without it `/v1/adapters`, `/v1/messages` and
    /// `/v1/cases` answer 503.
    pub connect: Option<switchyard_connect::Connect>,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            max_body_bytes: 4 << 20,
            max_batch_events: 10_000,
            max_read_events: 1_000,
            heartbeat: Duration::from_secs(15),
            slow_client_timeout: Duration::from_secs(30),
            stream_buffer: 1024,
            stalled_write_timeout: Duration::from_secs(60),
            tokens: Vec::new(),
            bus: None,
            connect: None,
        }
    }
}

#[derive(Clone)]
pub(crate) struct AppState {
    pub journal: Arc<dyn Journal>,
    pub options: Arc<Options>,
    pub metrics: Arc<Metrics>,
    /// Turns true when the server shuts down: live streams end.
    pub stop: watch::Receiver<bool>,
    pub schemas: Arc<crate::schemas::Schemas>,
}

/// The API's router. `stop` turning true ends live streams (for graceful shutdown).
pub fn router(journal: Arc<dyn Journal>, options: Options, stop: watch::Receiver<bool>) -> Router {
    let limit = options.max_body_bytes;
    let tokens: Arc<Vec<Arc<Token>>> =
        Arc::new(options.tokens.iter().cloned().map(Arc::new).collect());
    let state = AppState {
        journal,
        options: Arc::new(options),
        metrics: Arc::new(Metrics::default()),
        stop,
        schemas: Arc::default(),
    };
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/v1/openapi.json", get(openapi))
        .route("/v1/topics", get(list_topics))
        .route(
            "/v1/topics/{topic}",
            get(describe_topic).put(put_topic).delete(delete_topic),
        )
        .route("/v1/topics/{topic}/events", get(read_events).post(publish))
        .route("/v1/topics/{topic}/stream", get(stream::handler))
        .route("/v1/subscriptions", get(subs::list))
        .route(
            "/v1/subscriptions/{name}",
            get(subs::get).put(subs::put).delete(subs::delete),
        )
        .route("/v1/subscriptions/{name}/parked", get(subs::parked))
        .route("/v1/subscriptions/{name}/parked/retry", post(subs::retry))
        .route(
            "/v1/subscriptions/{name}/parked/discard",
            post(subs::discard),
        )
        .route("/v1/subscriptions/{name}/seek", post(subs::seek))
        .route("/v1/adapters", get(cx::list_adapters))
        .route("/v1/adapters/reload", post(cx::reload))
        .route("/v1/adapters/promote", post(cx::promote))
        .route("/v1/adapters/{name}", get(cx::get_adapter))
        .route("/v1/adapters/{name}/pause", post(cx::pause))
        .route("/v1/adapters/{name}/resume", post(cx::resume))
        .route("/v1/adapters/{name}/drain", post(cx::drain))
        .route(
            "/v1/adapters/{name}/replies",
            get(cx::list_replies).post(cx::receive_reply),
        )
        .route("/v1/messages", get(cx::list_messages))
        .route("/v1/messages/replay", post(cx::replay))
        .route("/v1/messages/{id}", get(cx::get_message))
        .route("/v1/cases", get(cx::list_cases))
        .route("/v1/cases/{id}", get(cx::get_case))
        .route("/v1/cases/{id}/retry", post(cx::retry_case))
        .route("/v1/cases/{id}/discard", post(cx::discard_case))
        .route("/v1/cases/{id}/resolve", post(cx::resolve_case))
        .fallback(|| async { Problem::new(StatusCode::NOT_FOUND, "no-route", "no such endpoint") })
        .layer(axum::middleware::map_response_with_state(
            state.clone(),
            count_rejections,
        ))
        .layer(DefaultBodyLimit::max(limit))
        .layer(axum::middleware::from_fn_with_state(tokens, auth::check))
        .with_state(state)
}

async fn count_rejections(State(s): State<AppState>, resp: Response) -> Response {
    if resp.status().is_client_error() || resp.status().is_server_error() {
        Metrics::add(&s.metrics.rejected_requests, 1);
    }
    resp
}

pub(crate) fn topic_name(raw: &str) -> Result<TopicName, Problem> {
    TopicName::new(raw).map_err(|e| Problem::bad_request("invalid-topic-name", e.to_string()))
}

/// A body, or 413 when it is over the limit.
fn body(b: Result<Bytes, BytesRejection>) -> Result<Bytes, Problem> {
    b.map_err(|e| {
        if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
            Problem::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "body-too-large",
                "the request body is over the server's limit",
            )
        } else {
            Problem::bad_request("unreadable-body", e.body_text())
        }
    })
}

async fn readyz(State(s): State<AppState>) -> Response {
    match s.journal.list_topics().await {
        Ok(_) if !*s.stop.borrow() => "ready\n".into_response(),
        Ok(_) => Problem::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "shutting-down",
            "the server is shutting down",
        )
        .into_response(),
        Err(e) => Problem::from(e).into_response(),
    }
}

async fn metrics(State(s): State<AppState>) -> Response {
    let mut text = s.metrics.render();
    if let Some(bus) = &s.options.bus {
        text.push_str(&subscription_metrics(bus).await);
    }
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text).into_response()
}

/// Per-subscription gauges; a subscription whose stats cannot be read is left out.
async fn subscription_metrics(bus: &switchyard_bus::Bus) -> String {
    use std::fmt::Write as _;
    let Ok(subs) = bus.list().await else {
        return String::new();
    };
    let mut in_flight = String::new();
    let mut parked = String::new();
    for sub in subs {
        let name = &sub.spec.name;
        if let Ok(st) = bus.store().stats(name).await {
            // Names are [A-Za-z0-9._-]: nothing to escape in a label value.
            let _ = writeln!(
                in_flight,
                "switchyard_subscription_in_flight{{subscription=\"{name}\"}} {}",
                st.in_flight
            );
            let _ = writeln!(
                parked,
                "switchyard_subscription_parked{{subscription=\"{name}\"}} {}",
                st.parked
            );
        }
    }
    format!(
        "# HELP switchyard_subscription_in_flight Deliveries not yet acknowledged (due or waiting for a retry).\n\
         # TYPE switchyard_subscription_in_flight gauge\n{in_flight}\
         # HELP switchyard_subscription_parked Deliveries given up on, waiting for a person.\n\
         # TYPE switchyard_subscription_parked gauge\n{parked}"
    )
}

/// The OpenAPI 3.1 description of this API (`src/openapi.json`).
pub const OPENAPI: &str = include_str!("openapi.json");

/// Every route of [`router`], as the OpenAPI document names it (kept in step by a test).
pub const ROUTES: [&str; 30] = [
    "/healthz",
    "/readyz",
    "/metrics",
    "/v1/openapi.json",
    "/v1/topics",
    "/v1/topics/{topic}",
    "/v1/topics/{topic}/events",
    "/v1/topics/{topic}/stream",
    "/v1/subscriptions",
    "/v1/subscriptions/{name}",
    "/v1/subscriptions/{name}/parked",
    "/v1/subscriptions/{name}/parked/retry",
    "/v1/subscriptions/{name}/parked/discard",
    "/v1/subscriptions/{name}/seek",
    "/v1/adapters",
    "/v1/adapters/reload",
    "/v1/adapters/promote",
    "/v1/adapters/{name}",
    "/v1/adapters/{name}/pause",
    "/v1/adapters/{name}/resume",
    "/v1/adapters/{name}/drain",
    "/v1/adapters/{name}/replies",
    "/v1/messages",
    "/v1/messages/replay",
    "/v1/messages/{id}",
    "/v1/cases",
    "/v1/cases/{id}",
    "/v1/cases/{id}/retry",
    "/v1/cases/{id}/discard",
    "/v1/cases/{id}/resolve",
];

async fn openapi() -> Response {
    ([(header::CONTENT_TYPE, "application/json")], OPENAPI).into_response()
}

async fn list_topics(
    State(s): State<AppState>,
    caller: Option<axum::Extension<Caller>>,
) -> Result<Json<Value>, Problem> {
    let mut topics = s.journal.list_topics().await?;
    // A token limited to some topics sees only those.
    if let Some(axum::Extension(Caller(token))) = caller {
        topics.retain(|t| token.allows_topic(t.as_str()));
    }
    Ok(Json(json!({ "topics": topics })))
}

fn topic_json(info: &switchyard_journal::TopicInfo) -> Value {
    let partitions: Vec<Value> = info
        .partitions
        .iter()
        .map(|p| {
            json!({
                "partition": p.partition,
                "first-offset": p.first_offset,
                "next-offset": p.next_offset,
                "bytes": p.bytes,
                "last-time": p.last_timestamp.and_then(|t| cloudevents::rfc3339(t.millis())),
            })
        })
        .collect();
    json!({ "name": info.name, "config": info.config, "partitions": partitions })
}

async fn describe_topic(
    State(s): State<AppState>,
    Path(topic): Path<String>,
) -> Result<Json<Value>, Problem> {
    let topic = topic_name(&topic)?;
    let info = s.journal.describe_topic(&topic).await?;
    let mut v = topic_json(&info);
    if let Some(bus) = &s.options.bus {
        v["subscriptions"] = Value::Array(subscription_lag(bus, &info).await?);
        v["schemas"] =
            serde_json::to_value(bus.store().schemas(topic.as_str()).await?).unwrap_or_default();
    }
    Ok(Json(v))
}

/// Each subscription reading the topic: how many of its events it has not read yet.
async fn subscription_lag(
    bus: &switchyard_bus::Bus,
    info: &switchyard_journal::TopicInfo,
) -> Result<Vec<Value>, Problem> {
    let mut out = Vec::new();
    for sub in bus.list().await? {
        if !sub.spec.topics.iter().any(|t| t == info.name.as_str()) {
            continue;
        }
        let name = &sub.spec.name;
        let cursors = bus.store().cursors(name).await?;
        let lag: u64 = subs::positions(info, &cursors)
            .map(|(_, _, behind)| behind)
            .sum();
        let stats = bus.store().stats(name).await?;
        out.push(json!({
            "name": name,
            "lag": lag,
            "in-flight": stats.in_flight,
            "parked": stats.parked,
        }));
    }
    Ok(out)
}

async fn put_topic(
    State(s): State<AppState>,
    Path(topic): Path<String>,
    headers: HeaderMap,
    raw: Result<Bytes, BytesRejection>,
) -> Result<Response, Problem> {
    let topic = topic_name(&topic)?;
    let raw = body(raw)?;
    require_json(&headers, &raw)?;
    let mut settings: Value = if raw.iter().all(u8::is_ascii_whitespace) {
        json!({})
    } else {
        serde_json::from_slice(&raw)
            .map_err(|e| Problem::bad_request("malformed-json", format!("body is not JSON: {e}")))?
    };
    // `schemas` belongs to the server (kept in the store), the rest to the journal.
    let schemas = match settings.as_object_mut().map(|m| m.remove("schemas")) {
        Some(Some(v)) => {
            let map: switchyard_store::EventSchemas = serde_json::from_value(v).map_err(|_| {
                Problem::bad_request(
                    "invalid-schema",
                    "`schemas` maps event types to JSON Schemas",
                )
                .at("/schemas")
            })?;
            crate::schemas::compile(&map)?;
            if s.options.bus.is_none() {
                return Err(Problem::bad_request(
                    "schemas-unavailable",
                    "this server runs without a store: event schemas are off",
                )
                .at("/schemas"));
            }
            Some(map)
        }
        _ => None,
    };
    let config: TopicConfig = serde_json::from_value(settings).map_err(|e| {
        Problem::bad_request("invalid-topic-config", format!("topic settings: {e}"))
    })?;
    config
        .validate()
        .map_err(|e| Problem::bad_request("invalid-topic-config", e.to_string()).at(e.field))?;
    let (status, info) = match s.journal.describe_topic(&topic).await {
        Err(switchyard_journal::Error::TopicNotFound(_)) => (
            StatusCode::CREATED,
            s.journal.create_topic(&topic, config).await?,
        ),
        Err(e) => return Err(e.into()),
        Ok(_) => (
            StatusCode::OK,
            s.journal.update_topic(&topic, config).await?,
        ),
    };
    if let (Some(map), Some(bus)) = (schemas, &s.options.bus) {
        bus.store().put_schemas(topic.as_str(), map).await?;
        s.schemas.forget(topic.as_str());
    }
    Ok((status, Json(topic_json(&info))).into_response())
}

fn require_json(headers: &HeaderMap, raw: &Bytes) -> Result<(), Problem> {
    let ct = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if raw.is_empty() || switchyard_types::media_type_essence(ct) == "application/json" {
        Ok(())
    } else {
        Err(Problem::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported-media-type",
            format!("expected application/json, got {ct:?}"),
        ))
    }
}

async fn delete_topic(
    State(s): State<AppState>,
    Path(topic): Path<String>,
) -> Result<StatusCode, Problem> {
    let topic = topic_name(&topic)?;
    s.journal.delete_topic(&topic).await?;
    if let Some(bus) = &s.options.bus {
        bus.store()
            .put_schemas(topic.as_str(), Default::default())
            .await?;
        s.schemas.forget(topic.as_str());
    }
    Ok(StatusCode::NO_CONTENT)
}

/// The header that makes a publish conditional on the key's last offset.
pub const EXPECTED_OFFSET: &str = "switchyard-expected-offset";

fn expectation(headers: &HeaderMap, events: &[Event]) -> Result<Option<Expectation>, Problem> {
    let Some(raw) = headers.get(EXPECTED_OFFSET) else {
        return Ok(None);
    };
    let bad = |why: String| Problem::bad_request("invalid-expectation", why).at(EXPECTED_OFFSET);
    let raw = raw
        .to_str()
        .map_err(|_| bad(format!("{EXPECTED_OFFSET} is not ASCII")))?;
    let expected = match raw.trim() {
        "none" => Expected::NoRecord,
        n => Expected::LastOffset(n.parse().map_err(|_| {
            bad(format!(
                "{EXPECTED_OFFSET} must be an offset or `none`, got {n:?}"
            ))
        })?),
    };
    let key = events[0].partition_key().ok_or_else(|| {
        bad(format!(
            "{EXPECTED_OFFSET} needs events with a partition key (`partitionkey` or `subject`)"
        ))
    })?;
    if events.iter().any(|e| e.partition_key() != Some(key)) {
        return Err(bad(format!(
            "{EXPECTED_OFFSET} applies to one key: every event of the batch must have the same \
             partition key"
        )));
    }
    Ok(Some(Expectation {
        key: Bytes::copy_from_slice(key.as_bytes()),
        expected,
    }))
}

/// POST /v1/topics/{topic}/events: binary, structured or batch mode.
async fn publish(
    State(s): State<AppState>,
    Path(topic): Path<String>,
    headers: HeaderMap,
    raw: Result<Bytes, BytesRejection>,
) -> Result<Json<Value>, Problem> {
    let topic = topic_name(&topic)?;
    let raw = body(raw)?;
    let ct = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let essence = switchyard_types::media_type_essence(ct);
    let events = if essence == BATCH {
        cloudevents::parse_batch(&raw, s.options.max_batch_events)?
    } else if essence == STRUCTURED {
        vec![cloudevents::parse_structured(&raw)?]
    } else if headers.contains_key("ce-specversion") {
        vec![cloudevents::parse_binary(&headers, raw)?]
    } else {
        return Err(Problem::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported-media-type",
            format!(
                "send {STRUCTURED}, {BATCH}, or a binary-mode event with ce-* headers \
                 (got Content-Type {ct:?} and no ce-specversion)"
            ),
        ));
    };
    let expectation = expectation(&headers, &events)?;
    // The journal picks each event's partition (and answers 404 for an unknown topic)
    // before anything else looks at the topic.
    let mut places = Vec::with_capacity(events.len());
    for e in &events {
        let choice = match e.partition_key() {
            Some(k) => PartitionChoice::Key(Bytes::copy_from_slice(k.as_bytes())),
            None => PartitionChoice::RoundRobin,
        };
        places.push(s.journal.choose_partition(&topic, &choice).await?);
    }
    if let Some(bus) = &s.options.bus {
        let compiled = s.schemas.for_topic(&**bus.store(), topic.as_str()).await?;
        crate::schemas::check(&compiled, &events, essence == BATCH)?;
    }

    // Group by partition, keeping each event's place in the answer.
    let mut groups: Vec<(Partition, Vec<usize>, Vec<switchyard_journal::Record>)> = Vec::new();
    for (i, (e, p)) in events.into_iter().zip(places).enumerate() {
        let g = match groups.iter().position(|g| g.0 == p) {
            Some(g) => g,
            None => {
                groups.push((p, Vec::new(), Vec::new()));
                groups.len() - 1
            }
        };
        groups[g].1.push(i);
        groups[g].2.push(e.into_record());
    }
    let total: usize = groups.iter().map(|g| g.1.len()).sum();
    let mut answers = vec![Value::Null; total];
    let ids: Vec<Option<String>> = groups
        .iter()
        .flat_map(|g| g.2.iter().map(|r| r.id.clone()))
        .collect();
    let order: Vec<usize> = groups.iter().flat_map(|g| g.1.iter().copied()).collect();
    let mut k = 0;
    for (p, _, records) in groups {
        let appended = s
            .journal
            .append(&topic, p, records, expectation.clone())
            .await?;
        for a in appended {
            let (place, id) = (order[k], ids[k].clone());
            k += 1;
            if a.duplicate {
                Metrics::add(&s.metrics.events_duplicate, 1);
            } else {
                Metrics::add(&s.metrics.events_published, 1);
            }
            answers[place] = json!({
                "id": id,
                "partition": a.partition,
                "offset": a.offset,
                "duplicate": a.duplicate,
            });
        }
    }
    Metrics::add(&s.metrics.publish_requests, 1);
    Ok(Json(json!({ "events": answers })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ReadQuery {
    pub from: Option<String>,
    pub limit: Option<usize>,
    pub partition: Option<Partition>,
}

/// GET /v1/topics/{topic}/events: one page of events, oldest first, and where to continue.
async fn read_events(
    State(s): State<AppState>,
    Path(topic): Path<String>,
    query: Result<Query<ReadQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<Value>, Problem> {
    let Query(q) = query.map_err(|e| Problem::bad_request("invalid-query", e.body_text()))?;
    let topic = topic_name(&topic)?;
    let limit = q.limit.unwrap_or(100).clamp(1, s.options.max_read_events);
    let from = StartFrom::parse(q.from.as_deref().unwrap_or(""))?;
    let info = s.journal.describe_topic(&topic).await?;
    let starts = from.resolve(&s.journal, &topic, &info, q.partition).await?;
    // Read up to `limit` from each partition, merge by time, keep the first `limit`.
    let mut merged = Vec::new();
    for &(p, start) in &starts {
        let batch = s
            .journal
            .read(
                &topic,
                p,
                start,
                ReadLimits {
                    max_records: limit,
                    ..ReadLimits::default()
                },
            )
            .await?;
        merged.extend(batch.records.into_iter().map(|r| (p, r)));
    }
    merged.sort_by_key(|(p, r)| (r.timestamp, *p, r.offset));
    merged.truncate(limit);
    let mut next: Vec<(Partition, u64)> = starts.clone();
    for (p, r) in &merged {
        if let Some(n) = next.iter_mut().find(|n| n.0 == *p) {
            n.1 = n.1.max(r.offset + 1);
        }
    }
    Metrics::add(&s.metrics.events_read, merged.len() as u64);
    let events: Vec<Value> = merged
        .iter()
        .map(|(p, r)| cloudevents::render(r, *p))
        .collect();
    let next = match q.partition {
        Some(_) => next[0].1.to_string(),
        None => crate::position::Position(next.iter().map(|n| n.1).collect()).to_string(),
    };
    Ok(Json(json!({ "events": events, "next": next })))
}
