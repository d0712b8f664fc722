//! `/v1/subscriptions`: create, inspect and delete push subscriptions, their parked
//! deliveries (retry or discard) and their position (seek).

use crate::api::{AppState, topic_name};
use crate::position::From as StartFrom;
use crate::problem::Problem;
use axum::Json;
use axum::extract::rejection::{BytesRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use serde::Deserialize;
use serde_json::{Value, json};
use switchyard_bus::{Bus, StoreError};
use switchyard_store::{DeliveryKey, SubscriptionSpec};

impl From<StoreError> for Problem {
    fn from(e: StoreError) -> Self {
        let detail = e.to_string();
        match e {
            StoreError::NotFound { what, .. } => Problem::new(
                StatusCode::NOT_FOUND,
                if what == "subscription" {
                    "subscription-not-found"
                } else {
                    "not-found"
                },
                detail,
            ),
            StoreError::InvalidInput { field, .. } => {
                Problem::bad_request("invalid-subscription", detail).at(field)
            }
            StoreError::Conflict { .. } => Problem::new(StatusCode::CONFLICT, "conflict", detail),
            StoreError::Corrupt { .. } => {
                Problem::new(StatusCode::INTERNAL_SERVER_ERROR, "store-corrupt", detail)
            }
            _ => Problem::new(StatusCode::SERVICE_UNAVAILABLE, "store-unavailable", detail),
        }
    }
}

fn bus(s: &AppState) -> Result<&Bus, Problem> {
    s.options.bus.as_ref().ok_or_else(|| {
        Problem::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "subscriptions-unavailable",
            "this server runs without a store: subscriptions are off",
        )
    })
}

fn json_body(raw: Result<Bytes, BytesRejection>) -> Result<Value, Problem> {
    let raw = raw.map_err(|e| Problem::bad_request("unreadable-body", e.body_text()))?;
    serde_json::from_slice(&raw)
        .map_err(|e| Problem::bad_request("malformed-json", format!("body is not JSON: {e}")))
}

pub(crate) async fn list(State(s): State<AppState>) -> Result<Json<Value>, Problem> {
    let subs = bus(&s)?.list().await?;
    let names: Vec<&str> = subs.iter().map(|s| s.spec.name.as_str()).collect();
    Ok(Json(json!({ "subscriptions": names })))
}

pub(crate) async fn put(
    State(s): State<AppState>,
    Path(name): Path<String>,
    raw: Result<Bytes, BytesRejection>,
) -> Result<Response, Problem> {
    let bus = bus(&s)?;
    let mut body = json_body(raw)?;
    let Some(obj) = body.as_object_mut() else {
        return Err(Problem::bad_request(
            "invalid-subscription",
            "the body must be a JSON object",
        ));
    };
    match obj.get("name") {
        Some(n) if n.as_str() != Some(name.as_str()) => {
            return Err(Problem::bad_request(
                "invalid-subscription",
                format!("the body names {n}, the path `{name}`"),
            )
            .at("name"));
        }
        _ => {
            obj.insert("name".into(), name.clone().into());
        }
    }
    let spec: SubscriptionSpec = serde_json::from_value(body)
        .map_err(|e| Problem::bad_request("invalid-subscription", format!("subscription: {e}")))?;
    spec.validate()?;
    for t in &spec.topics {
        s.journal.describe_topic(&topic_name(t)?).await?;
    }
    let (sub, created) = bus.put(spec).await?;
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(serde_json::to_value(&sub).unwrap_or_default())).into_response())
}

pub(crate) async fn get(
    State(s): State<AppState>,
    Path(name): Path<String>,
) -> Result<Json<Value>, Problem> {
    // Cursors first: a cursor passes a delivery that still needs a row only once that row
    // has committed, so counts read after it include every delivery behind it. (The other
    // order could show an advanced cursor with the deliveries behind it not yet counted:
    // "lag 0, nothing in flight" while something is.)
    let cursors = bus(&s)?.store().cursors(&name).await?;
    let (sub, stats) = bus(&s)?.get(&name).await?;
    let mut lag = Vec::new();
    for t in &sub.spec.topics {
        let Ok(info) = s.journal.describe_topic(&topic_name(t)?).await else {
            continue;
        };
        for (p, at, behind) in positions(&info, &cursors) {
            lag.push(json!({
                "topic": t,
                "partition": p.partition,
                "cursor": at,
                "next-offset": p.next_offset,
                "lag": behind,
            }));
        }
    }
    let mut v = serde_json::to_value(&sub).unwrap_or_default();
    v["in-flight"] = stats.in_flight.into();
    v["parked"] = stats.parked.into();
    v["last-error"] = stats.last_error.map_or(Value::Null, Value::from);
    v["partitions"] = Value::Array(lag);
    Ok(Json(v))
}

/// For each partition of `info`: the subscription's cursor there (0 before its first read)
/// and how many retained events it has not read yet.
pub(crate) fn positions<'a>(
    info: &'a switchyard_journal::TopicInfo,
    cursors: &'a [switchyard_store::Cursor],
) -> impl Iterator<Item = (&'a switchyard_journal::PartitionInfo, u64, u64)> + 'a {
    info.partitions.iter().map(move |p| {
        let at = cursors
            .iter()
            .find(|c| c.topic == info.name.as_str() && c.partition == p.partition)
            .map_or(0, |c| c.offset);
        (p, at, p.next_offset.saturating_sub(at.max(p.first_offset)))
    })
}

pub(crate) async fn delete(
    State(s): State<AppState>,
    Path(name): Path<String>,
) -> Result<StatusCode, Problem> {
    bus(&s)?.delete(&name).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ParkedQuery {
    limit: Option<u32>,
}

pub(crate) async fn parked(
    State(s): State<AppState>,
    Path(name): Path<String>,
    q: Result<Query<ParkedQuery>, QueryRejection>,
) -> Result<Json<Value>, Problem> {
    let Query(q) = q.map_err(|e| Problem::bad_request("invalid-query", e.body_text()))?;
    let list = bus(&s)?
        .parked(&name, None, q.limit.unwrap_or(100).clamp(1, 1000))
        .await?;
    Ok(Json(json!({ "parked": list })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct KeyBody {
    topic: String,
    partition: u32,
    offset: u64,
}

fn key_of(name: &str, raw: Result<Bytes, BytesRejection>) -> Result<DeliveryKey, Problem> {
    let k: KeyBody = serde_json::from_value(json_body(raw)?).map_err(|e| {
        Problem::bad_request(
            "invalid-key",
            format!("expected {{topic, partition, offset}}: {e}"),
        )
    })?;
    Ok(DeliveryKey::new(name, k.topic, k.partition, k.offset))
}

pub(crate) async fn retry(
    State(s): State<AppState>,
    Path(name): Path<String>,
    raw: Result<Bytes, BytesRejection>,
) -> Result<StatusCode, Problem> {
    bus(&s)?.retry_parked(&key_of(&name, raw)?).await?;
    Ok(StatusCode::NO_CONTENT)
}

pub(crate) async fn discard(
    State(s): State<AppState>,
    Path(name): Path<String>,
    raw: Result<Bytes, BytesRejection>,
) -> Result<StatusCode, Problem> {
    bus(&s)?.discard_parked(&key_of(&name, raw)?).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SeekBody {
    topic: String,
    /// An offset (with `partition`), a position, an RFC 3339 time, `earliest` or `latest`.
    to: String,
    partition: Option<u32>,
}

/// POST /v1/subscriptions/{name}/seek: rewind (replay) or skip.
pub(crate) async fn seek(
    State(s): State<AppState>,
    Path(name): Path<String>,
    raw: Result<Bytes, BytesRejection>,
) -> Result<Json<Value>, Problem> {
    let bus = bus(&s)?;
    let b: SeekBody = serde_json::from_value(json_body(raw)?).map_err(|e| {
        Problem::bad_request(
            "invalid-seek",
            format!("expected {{topic, to, partition?}}: {e}"),
        )
    })?;
    let (sub, _) = bus.get(&name).await?;
    if !sub.spec.topics.contains(&b.topic) {
        return Err(Problem::bad_request(
            "invalid-seek",
            format!("subscription `{name}` does not read topic `{}`", b.topic),
        )
        .at("topic"));
    }
    let topic = topic_name(&b.topic)?;
    let info = s.journal.describe_topic(&topic).await?;
    let starts = StartFrom::parse(&b.to)?
        .resolve(&s.journal, &topic, &info, b.partition)
        .await?;
    let mut dropped = 0;
    for (p, offset) in &starts {
        dropped += bus.seek(&name, &b.topic, *p, *offset).await?;
    }
    let at: Vec<Value> = starts
        .iter()
        .map(|(p, o)| json!({"partition": p, "offset": o}))
        .collect();
    Ok(Json(
        json!({ "positions": at, "dropped-in-flight": dropped }),
    ))
}
