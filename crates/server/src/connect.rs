//! The integration gateway's endpoints, over a [`Connect`] (503 when the server runs
//! without one):
//!
//! - `/v1/adapters`: lanes (state, counts), reload, pause, resume, drain; the reply
//!   callback `POST /v1/adapters/{name}/replies` (the HTTP reply reader) and the replies
//!   received;
//! - `/v1/messages`: the message store (query, one message with its attempts, replay);
//! - `/v1/cases`: failures grouped by their key (list, inspect, retry, discard, resolve).

use crate::api::AppState;
use crate::problem::Problem;
use axum::Json;
use axum::extract::rejection::{BytesRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use serde::Deserialize;
use serde_json::{Value, json};
use switchyard_connect::{Answer, Connect, ReplayMode};
use switchyard_store::connect::{
    CaseState, LaneState, MessageFilter, MessageState, ReplyDisposition,
};

impl From<switchyard_connect::Error> for Problem {
    fn from(e: switchyard_connect::Error) -> Self {
        use switchyard_connect::Error as E;
        let detail = e.to_string();
        match e {
            E::Config(errors) => Problem::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid-adapter-config",
                detail,
            )
            .with(
                "errors",
                errors
                    .0
                    .iter()
                    .map(|e| {
                        json!({
                            "file": e.file.display().to_string(), "line": e.line,
                            "column": e.column, "key": e.key, "message": e.message,
                        })
                    })
                    .collect(),
            ),
            E::UnknownAdapter(_) => {
                Problem::new(StatusCode::NOT_FOUND, "adapter-not-found", detail)
            }
            E::InvalidInput { field, .. } => {
                Problem::bad_request("invalid-request", detail).at(field)
            }
            E::Store(switchyard_store::Error::NotFound { what, .. }) => Problem::new(
                StatusCode::NOT_FOUND,
                match what {
                    "message" => "message-not-found",
                    "case" => "case-not-found",
                    _ => "not-found",
                },
                detail,
            ),
            E::Store(s) => Problem::from(s),
            E::Journal(j) => Problem::from(j),
            E::Standby => Problem::new(StatusCode::SERVICE_UNAVAILABLE, "standby", detail),
            E::Closed => Problem::new(StatusCode::SERVICE_UNAVAILABLE, "shutting-down", detail),
        }
    }
}

fn connect(s: &AppState) -> Result<&Connect, Problem> {
    s.options.connect.as_ref().ok_or_else(|| {
        Problem::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "connect-unavailable",
            "this server runs without the integration gateway",
        )
    })
}

fn query<T>(q: Result<Query<T>, QueryRejection>) -> Result<T, Problem> {
    q.map(|Query(v)| v)
        .map_err(|e| Problem::bad_request("invalid-query", e.body_text()))
}

fn json_body<T: serde::de::DeserializeOwned>(
    raw: Result<Bytes, BytesRejection>,
) -> Result<T, Problem> {
    let raw = raw.map_err(|e| Problem::bad_request("unreadable-body", e.body_text()))?;
    let raw = if raw.is_empty() {
        Bytes::from_static(b"{}")
    } else {
        raw
    };
    let mut de = serde_json::Deserializer::from_slice(&raw);
    serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let path = e.path().to_string();
        Problem::bad_request("invalid-request", e.inner().to_string()).at(path)
    })
}

pub(crate) async fn list_adapters(State(s): State<AppState>) -> Result<Json<Value>, Problem> {
    let c = connect(&s)?;
    let lanes = c.lanes().await?;
    Ok(Json(
        json!({ "standby": c.is_standby().await, "adapters": lanes }),
    ))
}

/// Makes a standby instance active (blue-green): its lanes start.
pub(crate) async fn promote(State(s): State<AppState>) -> Result<Json<Value>, Problem> {
    Ok(Json(json!(connect(&s)?.promote().await?)))
}

pub(crate) async fn get_adapter(
    State(s): State<AppState>,
    Path(name): Path<String>,
) -> Result<Json<Value>, Problem> {
    Ok(Json(json!(connect(&s)?.lane(&name).await?)))
}

pub(crate) async fn reload(State(s): State<AppState>) -> Result<Json<Value>, Problem> {
    Ok(Json(json!(connect(&s)?.reload().await?)))
}

async fn set_state(s: &AppState, name: &str, state: LaneState) -> Result<Json<Value>, Problem> {
    Ok(Json(json!(connect(s)?.set_state(name, state).await?)))
}

pub(crate) async fn pause(
    State(s): State<AppState>,
    Path(name): Path<String>,
) -> Result<Json<Value>, Problem> {
    set_state(&s, &name, LaneState::Paused).await
}

pub(crate) async fn resume(
    State(s): State<AppState>,
    Path(name): Path<String>,
) -> Result<Json<Value>, Problem> {
    set_state(&s, &name, LaneState::Running).await
}

pub(crate) async fn drain(
    State(s): State<AppState>,
    Path(name): Path<String>,
) -> Result<Json<Value>, Problem> {
    set_state(&s, &name, LaneState::Draining).await
}

/// The HTTP reply reader: a vendor's asynchronous reply, matched by correlation id.
pub(crate) async fn receive_reply(
    State(s): State<AppState>,
    Path(name): Path<String>,
    headers: HeaderMap,
    raw: Result<Bytes, BytesRejection>,
) -> Result<Response, Problem> {
    let raw = raw.map_err(|e| Problem::bad_request("unreadable-body", e.body_text()))?;
    let answer = Answer {
        status: None,
        headers: headers
            .iter()
            .filter_map(|(k, v)| {
                v.to_str()
                    .ok()
                    .map(|v| (k.as_str().to_owned(), v.to_owned()))
            })
            .collect(),
        body: String::from_utf8_lossy(&raw).into_owned(),
    };
    let reply = connect(&s)?.receive_reply(&name, answer).await?;
    Ok((
        StatusCode::ACCEPTED,
        Json(json!({
            "id": reply.id, "disposition": reply.disposition,
            "message-id": reply.message_id, "correlation-id": reply.correlation_id,
        })),
    )
        .into_response())
}

#[derive(Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub(crate) struct RepliesQuery {
    disposition: Option<String>,
    limit: Option<u32>,
}

pub(crate) async fn list_replies(
    State(s): State<AppState>,
    Path(name): Path<String>,
    q: Result<Query<RepliesQuery>, QueryRejection>,
) -> Result<Json<Value>, Problem> {
    let q = query(q)?;
    let disposition = match q.disposition.as_deref() {
        None => None,
        Some(d) => Some(ReplyDisposition::parse(d).ok_or_else(|| {
            Problem::bad_request(
                "invalid-query",
                format!("disposition {d:?}: matched, unmatched or late"),
            )
            .at("disposition")
        })?),
    };
    let c = connect(&s)?;
    c.lane(&name).await?;
    let replies = c
        .store()
        .replies(&name, disposition, q.limit.unwrap_or(100))
        .await
        .map_err(switchyard_connect::Error::from)?;
    Ok(Json(json!({ "replies": replies })))
}

#[derive(Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub(crate) struct MessagesQuery {
    adapter: Option<String>,
    state: Option<String>,
    case: Option<String>,
    /// An RFC 3339 time, or a duration back from now (`1h`, `30m`).
    since: Option<String>,
    after: Option<u64>,
    limit: Option<u32>,
}

fn parse_since(text: &str) -> Result<i64, Problem> {
    let bad = |why: String| Problem::bad_request("invalid-query", why).at("since");
    if let Ok(t) = time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339)
    {
        return i64::try_from(t.unix_timestamp_nanos() / 1_000_000).map_err(|e| bad(e.to_string()));
    }
    let back = humantime::parse_duration(text).map_err(|e| {
        bad(format!(
            "{text:?} is neither an RFC 3339 time nor a duration like 1h: {e}"
        ))
    })?;
    let back = i64::try_from(back.as_millis()).unwrap_or(i64::MAX);
    Ok(switchyard_types::Timestamp::now()
        .millis()
        .saturating_sub(back))
}

pub(crate) async fn list_messages(
    State(s): State<AppState>,
    q: Result<Query<MessagesQuery>, QueryRejection>,
) -> Result<Json<Value>, Problem> {
    let q = query(q)?;
    let state = match q.state.as_deref() {
        None => None,
        Some(st) => Some(MessageState::parse(st).ok_or_else(|| {
            let all: Vec<&str> = MessageState::ALL.iter().map(|s| s.as_str()).collect();
            Problem::bad_request(
                "invalid-query",
                format!("state {st:?}: one of {}", all.join(", ")),
            )
            .at("state")
        })?),
    };
    let since_ms = q.since.as_deref().map(parse_since).transpose()?;
    let limit = q.limit.unwrap_or(100);
    let filter = MessageFilter {
        adapter: q.adapter,
        state,
        case_id: q.case,
        since_ms,
        after_id: q.after,
        limit,
    };
    let messages = connect(&s)?
        .store()
        .messages(&filter)
        .await
        .map_err(switchyard_connect::Error::from)?;
    let next = (messages.len() == limit as usize)
        .then(|| messages.last().map(|m| m.id))
        .flatten();
    Ok(Json(json!({ "messages": messages, "next-after": next })))
}

fn message_id(raw: &str) -> Result<u64, Problem> {
    raw.parse().map_err(|_| {
        Problem::bad_request("invalid-message-id", format!("{raw:?} is not a message id")).at("id")
    })
}

pub(crate) async fn get_message(
    State(s): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<Value>, Problem> {
    let id = message_id(&id)?;
    let (message, attempts) = connect(&s)?
        .store()
        .message(id)
        .await
        .map_err(switchyard_connect::Error::from)?;
    Ok(Json(json!({ "message": message, "attempts": attempts })))
}

#[derive(Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub(crate) struct ReplayBody {
    ids: Vec<u64>,
    #[serde(default = "resend")]
    mode: ReplayMode,
}

fn resend() -> ReplayMode {
    ReplayMode::Resend
}

/// Replays messages: every id is checked first, so a bad one replays none.
pub(crate) async fn replay(
    State(s): State<AppState>,
    raw: Result<Bytes, BytesRejection>,
) -> Result<Json<Value>, Problem> {
    let body: ReplayBody = json_body(raw)?;
    if body.ids.is_empty() || body.ids.len() > 10_000 {
        return Err(
            Problem::bad_request("invalid-request", "ids: 1 to 10000 message ids").at("/ids"),
        );
    }
    let c = connect(&s)?;
    for (i, id) in body.ids.iter().enumerate() {
        let (m, _) = c.store().message(*id).await.map_err(|e| {
            Problem::from(switchyard_connect::Error::from(e)).at(format!("/ids/{i}"))
        })?;
        if !m.state.replayable() {
            return Err(Problem::new(
                StatusCode::CONFLICT,
                "not-replayable",
                format!("message {id} is {}: only delivered, rejected, failed or discarded messages are replayed", m.state),
            )
            .at(format!("/ids/{i}")));
        }
    }
    let mut replayed = Vec::with_capacity(body.ids.len());
    for id in body.ids {
        replayed.push(c.replay(id, body.mode).await?);
    }
    Ok(Json(json!({ "replayed": replayed })))
}

#[derive(Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub(crate) struct CasesQuery {
    adapter: Option<String>,
    state: Option<String>,
    limit: Option<u32>,
}

pub(crate) async fn list_cases(
    State(s): State<AppState>,
    q: Result<Query<CasesQuery>, QueryRejection>,
) -> Result<Json<Value>, Problem> {
    let q = query(q)?;
    let state = match q.state.as_deref() {
        None => None,
        Some(st) => Some(CaseState::parse(st).ok_or_else(|| {
            Problem::bad_request("invalid-query", format!("state {st:?}: open or resolved"))
                .at("state")
        })?),
    };
    let cases = connect(&s)?
        .store()
        .cases(q.adapter.as_deref(), state, q.limit.unwrap_or(100))
        .await
        .map_err(switchyard_connect::Error::from)?;
    Ok(Json(json!({ "cases": cases })))
}

pub(crate) async fn get_case(
    State(s): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<Value>, Problem> {
    let case = connect(&s)?
        .store()
        .case(&id)
        .await
        .map_err(switchyard_connect::Error::from)?;
    Ok(Json(json!(case)))
}

#[derive(Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub(crate) struct RetryBody {
    #[serde(default = "resend")]
    mode: ReplayMode,
}

pub(crate) async fn retry_case(
    State(s): State<AppState>,
    Path(id): Path<String>,
    raw: Result<Bytes, BytesRejection>,
) -> Result<Json<Value>, Problem> {
    let body: RetryBody = json_body(raw)?;
    let n = connect(&s)?.retry_case(&id, body.mode).await?;
    Ok(Json(json!({ "case": id, "retried": n })))
}

pub(crate) async fn discard_case(
    State(s): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<Value>, Problem> {
    let now = switchyard_types::Timestamp::now().millis();
    let n = connect(&s)?
        .store()
        .discard_case(&id, now)
        .await
        .map_err(switchyard_connect::Error::from)?;
    Ok(Json(json!({ "case": id, "discarded": n })))
}

pub(crate) async fn resolve_case(
    State(s): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<Value>, Problem> {
    let now = switchyard_types::Timestamp::now().millis();
    let case = connect(&s)?
        .store()
        .resolve_case(&id, now)
        .await
        .map_err(switchyard_connect::Error::from)?;
    Ok(Json(json!(case)))
}
