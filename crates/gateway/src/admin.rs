//! The admin API, mounted by the platform on its API listener:
//!
//! - `GET /v1/gateway/routes`: every route with its origin, its upstreams and their health,
//!   and the routes left out of the table (a service unknown here) with why;
//! - `GET /v1/gateway/routes/{name}`;
//! - `PUT /v1/gateway/routes/{name}`: create or replace (the body is a route, `name`
//!   optional; checked whole, nothing written when anything is wrong: 422 naming the field);
//! - `DELETE /v1/gateway/routes/{name}`;
//! - `GET /v1/gateway/routes/{name}/quotas`: the route's quota counters in the store (key,
//!   window, units used or reserved);
//! - `GET /v1/gateway/metrics`: the gateway's counters in the Prometheus text format;
//! - `GET /v1/gateway/faults`, `PUT|DELETE /v1/gateway/faults/{service}`, `DELETE
//!   /v1/gateway/faults`: the faults injected on purpose (`switchyard chaos`, see
//!   [`crate::faults`]).
//!
//! A change is appended to the routes topic and answered once the table holds it. With an
//! admin token configured every call needs `Authorization: Bearer <token>` (401 otherwise).

use crate::history::{Change, Origin};
use crate::problem::Problem;
use crate::service::Gateway;
use axum::Json;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use bytes::Bytes;
use serde_json::{Value, json};
use switchyard_manifest::RouteSpec;

/// Bodies larger than this are refused (413).
const MAX_ROUTE_BYTES: usize = 256 << 10;

impl Gateway {
    /// The admin API's routes (see the module docs).
    pub fn admin_router(&self) -> axum::Router {
        axum::Router::new()
            .route("/v1/gateway/routes", get(list))
            .route(
                "/v1/gateway/routes/{name}",
                get(get_one).put(put).delete(delete),
            )
            .route("/v1/gateway/routes/{name}/quotas", get(quotas))
            .route("/v1/gateway/metrics", get(metrics))
            .route("/v1/gateway/faults", get(list_faults).delete(clear_faults))
            .route(
                "/v1/gateway/faults/{service}",
                axum::routing::put(put_fault).delete(clear_fault),
            )
            .with_state(self.clone())
    }
}

fn authorize(gw: &Gateway, headers: &HeaderMap) -> Result<(), Problem> {
    let Some(token) = &gw.inner.admin_token else {
        return Ok(());
    };
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    match given {
        Some(g) if constant_time_eq(g.as_bytes(), token.as_bytes()) => Ok(()),
        Some(_) => Err(Problem::new(
            StatusCode::UNAUTHORIZED,
            "invalid-token",
            "the bearer token is not the gateway's admin token",
        )),
        None => Err(Problem::new(
            StatusCode::UNAUTHORIZED,
            "missing-token",
            "the gateway admin API needs `Authorization: Bearer <admin token>`",
        )
        .header("www-authenticate", "Bearer")),
    }
}

pub(crate) fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn view(gw: &Gateway, origin: Origin, spec: &RouteSpec) -> Value {
    let table = gw.table();
    let compiled = table.routes().iter().find(|r| r.spec.name == spec.name);
    let upstreams: Vec<Value> = compiled
        .map(|r| {
            r.pool
                .targets
                .iter()
                .map(|t| json!({"url": t.url, "weight": t.weight, "healthy": t.is_healthy()}))
                .collect()
        })
        .unwrap_or_default();
    let mut v = json!({
        "name": spec.name,
        "origin": origin,
        "route": spec,
        "upstreams": upstreams,
    });
    if let Some(why) = table.broken.get(&spec.name) {
        v["broken"] = json!(why);
    }
    v
}

async fn list(State(gw): State<Gateway>, headers: HeaderMap) -> Response {
    if let Err(p) = authorize(&gw, &headers) {
        return p.into_response();
    }
    let routes: Vec<Value> = gw.routes().iter().map(|(o, s)| view(&gw, *o, s)).collect();
    Json(json!({ "routes": routes })).into_response()
}

async fn get_one(
    State(gw): State<Gateway>,
    Path(name): Path<String>,
    headers: HeaderMap,
) -> Response {
    if let Err(p) = authorize(&gw, &headers) {
        return p.into_response();
    }
    match gw.routes().iter().find(|(_, s)| s.name == name) {
        Some((o, s)) => Json(view(&gw, *o, s)).into_response(),
        None => not_found(&name),
    }
}

fn not_found(name: &str) -> Response {
    Problem::new(
        StatusCode::NOT_FOUND,
        "not-found",
        format!("route `{name}` not found"),
    )
    .into_response()
}

fn invalid(field: &str, message: impl Into<String>) -> Problem {
    Problem::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid-route", message).with(
        "pointer",
        format!("/{}", field.replace(['.', '['], "/").replace(']', "")),
    )
}

/// Parses and checks a route body; the route as it will be stored.
pub(crate) async fn parse_route(
    gw: &Gateway,
    name: &str,
    body: &[u8],
) -> Result<RouteSpec, Problem> {
    if body.len() > MAX_ROUTE_BYTES {
        return Err(Problem::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "body-too-large",
            format!("a route body may be at most {MAX_ROUTE_BYTES} bytes"),
        ));
    }
    let mut value: Value = serde_json::from_slice(body).map_err(|e| {
        Problem::new(
            StatusCode::BAD_REQUEST,
            "invalid-json",
            format!("the body is not JSON: {e}"),
        )
    })?;
    let Some(obj) = value.as_object_mut() else {
        return Err(Problem::new(
            StatusCode::BAD_REQUEST,
            "invalid-json",
            "the body must be a JSON object (a route)",
        ));
    };
    match obj.get("name") {
        None => {
            obj.insert("name".into(), json!(name));
        }
        Some(Value::String(n)) if n == name => {}
        Some(other) => {
            return Err(invalid(
                "name",
                format!("the body's name {other} is not the path's `{name}`"),
            ));
        }
    }
    let spec: RouteSpec = serde_json::from_value(value).map_err(|e| {
        Problem::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid-route",
            format!("the route does not parse: {e}"),
        )
    })?;
    if let Some(e) = spec.validate().into_iter().next() {
        return Err(invalid(&e.field, format!("{}: {}", e.field, e.message)));
    }
    if spec.quota.is_some() && !gw.inner.quotas.enabled() {
        return Err(invalid(
            "quota",
            "quota: this gateway has no store to count quotas in",
        ));
    }
    if let Some(log) = &spec.access_log
        && let Err(e) = gw.inner.journal.describe_topic(&log.topic).await
    {
        return Err(invalid(
            "access-log.topic",
            format!("access-log.topic: {}: {e}", log.topic),
        ));
    }
    let services = gw.inner.services.load();
    let named = spec
        .service
        .iter()
        .map(|s| ("service".to_string(), s))
        .chain(spec.compose.iter().flat_map(|c| {
            c.parts.iter().enumerate().filter_map(|(i, p)| {
                p.service
                    .as_ref()
                    .map(|s| (format!("compose.parts[{i}].service"), s))
            })
        }));
    for (field, s) in named {
        if !services.contains_key(s) {
            return Err(invalid(
                &field,
                format!(
                    "{field}: there is no service {s:?} (services: {})",
                    services.keys().cloned().collect::<Vec<_>>().join(", ")
                ),
            )
            .with("code-detail", "unknown-service"));
        }
    }
    Ok(spec)
}

async fn put(
    State(gw): State<Gateway>,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if let Err(p) = authorize(&gw, &headers) {
        return p.into_response();
    }
    let spec = match parse_route(&gw, &name, &body).await {
        Ok(s) => s,
        Err(p) => return p.into_response(),
    };
    let existed = gw.routes().iter().any(|(_, s)| s.name == name);
    if let Err(p) = gw
        .change(Change::Put {
            origin: Origin::Admin,
            route: Box::new(spec.clone()),
        })
        .await
    {
        return p.into_response();
    }
    let status = if existed {
        StatusCode::OK
    } else {
        StatusCode::CREATED
    };
    (status, Json(view(&gw, Origin::Admin, &spec))).into_response()
}

async fn delete(
    State(gw): State<Gateway>,
    Path(name): Path<String>,
    headers: HeaderMap,
) -> Response {
    if let Err(p) = authorize(&gw, &headers) {
        return p.into_response();
    }
    if !gw.routes().iter().any(|(_, s)| s.name == name) {
        return not_found(&name);
    }
    match gw
        .change(Change::Delete {
            origin: Origin::Admin,
            name,
        })
        .await
    {
        Ok(()) => StatusCode::NO_CONTENT.into_response(),
        Err(p) => p.into_response(),
    }
}

async fn quotas(
    State(gw): State<Gateway>,
    Path(name): Path<String>,
    headers: HeaderMap,
) -> Response {
    if let Err(p) = authorize(&gw, &headers) {
        return p.into_response();
    }
    if !gw.routes().iter().any(|(_, s)| s.name == name) {
        return not_found(&name);
    }
    match gw.quota_usage(&name).await {
        Ok(q) => Json(json!({ "route": name, "quotas": q })).into_response(),
        Err(p) => p.into_response(),
    }
}

async fn metrics(State(gw): State<Gateway>, headers: HeaderMap) -> Response {
    if let Err(p) = authorize(&gw, &headers) {
        return p.into_response();
    }
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        gw.render_metrics(),
    )
        .into_response()
}

async fn list_faults(State(gw): State<Gateway>, headers: HeaderMap) -> Response {
    if let Err(p) = authorize(&gw, &headers) {
        return p.into_response();
    }
    let faults: Vec<Value> = gw
        .inner
        .faults
        .list()
        .iter()
        .map(|f| crate::faults::view(f))
        .collect();
    Json(json!({ "faults": faults })).into_response()
}

async fn put_fault(
    State(gw): State<Gateway>,
    Path(service): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if let Err(p) = authorize(&gw, &headers) {
        return p.into_response();
    }
    let bad = |field: &str, message: String| {
        Problem::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid-fault", message)
            .with("pointer", format!("/{field}"))
            .into_response()
    };
    {
        let services = gw.inner.services.load();
        if !services.contains_key(&service) {
            return Problem::new(
                StatusCode::NOT_FOUND,
                "unknown-service",
                format!(
                    "there is no service {service:?} (services: {})",
                    if services.is_empty() {
                        "none".to_string()
                    } else {
                        services.keys().cloned().collect::<Vec<_>>().join(", ")
                    }
                ),
            )
            .into_response();
        }
    }
    if body.len() > 4096 {
        return Problem::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "body-too-large",
            "a fault body may be at most 4096 bytes",
        )
        .into_response();
    }
    let spec: crate::faults::FaultSpec = match serde_json::from_slice(&body) {
        Ok(s) => s,
        Err(e) if e.is_syntax() || e.is_eof() => {
            return Problem::new(
                StatusCode::BAD_REQUEST,
                "invalid-json",
                format!("the body is not JSON: {e}"),
            )
            .into_response();
        }
        Err(e) => return bad("", format!("the fault does not parse: {e}")),
    };
    match gw.inner.faults.set(&service, spec) {
        Ok(f) => Json(crate::faults::view(&f)).into_response(),
        Err((field, message)) => bad(field, message),
    }
}

async fn clear_fault(
    State(gw): State<Gateway>,
    Path(service): Path<String>,
    headers: HeaderMap,
) -> Response {
    if let Err(p) = authorize(&gw, &headers) {
        return p.into_response();
    }
    match gw.inner.faults.clear(Some(&service)) {
        0 => Problem::new(
            StatusCode::NOT_FOUND,
            "no-fault",
            format!("no fault is in force on {service:?}"),
        )
        .into_response(),
        n => Json(json!({ "cleared": n })).into_response(),
    }
}

async fn clear_faults(State(gw): State<Gateway>, headers: HeaderMap) -> Response {
    if let Err(p) = authorize(&gw, &headers) {
        return p.into_response();
    }
    Json(json!({ "cleared": gw.inner.faults.clear(None) })).into_response()
}
