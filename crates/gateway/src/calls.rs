//! Service-to-service calls: `/v1/call/{service}/{path}` on the gateway listener.
//!
//! The caller proves who it is with its service's secret in `Switchyard-Call-Token` (the
//! runner gives each service its own, fresh per run, in `SWITCHYARD_CALL_TOKEN`): no token is
//! 401 `missing-call-token`, an unknown one 401 `invalid-call-token`, and a
//! `Switchyard-Caller` header naming another service than the token's 403 `caller-mismatch`.
//! The token never goes further (the dependency gets `Switchyard-Caller` with the proven
//! name; a queued call is stored without it). The gateway checks the call against the
//! caller's manifest: a call to a service the caller does not declare in `[dependencies]` is
//! refused (403 `undeclared-dependency` naming both). A declared call goes to the service with its
//! policy's timeout; the dependency is *down* for this call when the connection fails, the
//! call times out, the answer is 502, 503 or 504, or its circuit is open; its other answers
//! pass through unchanged. While it is down the caller's `on-failure` policy answers (see
//! [`switchyard_manifest::OnFailure`]): `fail` 503 `dependency-unavailable`; `retry` tries
//! again (idempotent methods or an `Idempotency-Key` only) and then 503; `fallback` the
//! configured response with `Switchyard-Fallback`; `degrade` 503 `dependency-degraded` with
//! the marker header; `queue` appends the call to its topic as a `switchyard.queued-call`
//! CloudEvent and answers 202.
//!
//! The circuit of a service opens after [`BREAKER_FAILURES`] down calls in a row (from any
//! caller) and stays open for [`BREAKER_OPEN`]; then one call at a time is let through until
//! one succeeds.

use crate::problem::Problem;
use crate::proxy::{self, Failure, Ids};
use crate::service::{Gateway, lock};
use axum::body::Body;
use axum::http::{HeaderName, HeaderValue, Method, Request, Response, StatusCode, header};
use axum::response::IntoResponse;
use bytes::Bytes;
use http_body_util::BodyExt as _;
use serde_json::json;
use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};
use switchyard_journal::{PartitionChoice, Record};
use switchyard_manifest::{Dependency, DependencyKind, OnFailure};

/// The header the dependency finds its caller's name in (a caller may send it too: it must
/// then be its token's service).
pub const CALLER_HEADER: &str = "switchyard-caller";
/// The header a caller sends its service's call token in.
pub const CALL_TOKEN_HEADER: &str = "switchyard-call-token";
/// The record header that marks a queued call as appended by the gateway itself (the HTTP
/// API never writes record headers, so a call published from outside cannot carry it).
pub const QUEUED_BY_GATEWAY: (&str, &[u8]) = ("switchyard-origin", b"gateway");
/// Down calls in a row that open a service's circuit.
pub const BREAKER_FAILURES: u32 = 5;
/// How long an open circuit answers without trying.
pub const BREAKER_OPEN: Duration = Duration::from_secs(5);
/// The limit of one call whose policy sets none.
pub const DEFAULT_CALL_TIMEOUT: Duration = Duration::from_secs(10);
/// The largest call body (buffered, so a retry can send it again).
pub const MAX_CALL_BODY: usize = 4 << 20;

/// Each service's declared dependencies: caller -> dependency -> how.
pub type Dependencies = BTreeMap<String, BTreeMap<String, Dependency>>;

/// Each service's call token: service -> secret.
pub type CallTokens = BTreeMap<String, String>;

/// A fresh call token (128 random bits, hex) for each of `services`.
pub fn new_call_tokens<'a>(services: impl IntoIterator<Item = &'a String>) -> CallTokens {
    services
        .into_iter()
        .map(|s| (s.clone(), format!("{:032x}", rand::random::<u128>())))
        .collect()
}

/// The service whose token the call carries (see the module docs).
fn caller_of(gw: &Gateway, headers: &http::HeaderMap) -> Result<String, Problem> {
    let unauthorized =
        |code: &'static str, detail: String| Problem::new(StatusCode::UNAUTHORIZED, code, detail);
    let Some(token) = headers.get(CALL_TOKEN_HEADER) else {
        return Err(unauthorized(
            "missing-call-token",
            format!(
                "a service-to-service call carries its service's token in `{CALL_TOKEN_HEADER}` \
                 (the runner sets SWITCHYARD_CALL_TOKEN)"
            ),
        ));
    };
    let tokens = gw.inner.call_tokens.load();
    // Every token is compared, in constant time, so the time taken says nothing.
    let mut found = None;
    for (service, t) in tokens.iter() {
        if crate::admin::constant_time_eq(t.as_bytes(), token.as_bytes()) {
            found = Some(service.clone());
        }
    }
    let Some(caller) = found else {
        return Err(unauthorized(
            "invalid-call-token",
            format!("the `{CALL_TOKEN_HEADER}` is not the token of a service of this system"),
        ));
    };
    if let Some(claimed) = headers.get(CALLER_HEADER)
        && claimed.as_bytes() != caller.as_bytes()
    {
        return Err(Problem::new(
            StatusCode::FORBIDDEN,
            "caller-mismatch",
            format!(
                "`{CALLER_HEADER}` names {:?}, but the call token is `{caller}`'s",
                String::from_utf8_lossy(claimed.as_bytes())
            ),
        )
        .with("caller", caller.as_str()));
    }
    Ok(caller)
}

/// The declared dependencies of every service of `system`.
pub fn dependencies_of(system: &switchyard_manifest::System) -> Dependencies {
    system
        .services
        .values()
        .map(|s| (s.name.clone(), s.dependencies.clone()))
        .collect()
}

/// Where each service of `system` listens, from the ports the runner chose.
pub fn services_on_loopback(ports: &BTreeMap<String, u16>) -> crate::table::Services {
    ports
        .iter()
        .map(|(name, port)| (name.clone(), vec![format!("http://127.0.0.1:{port}")]))
        .collect()
}

/// A service's circuit.
#[derive(Debug, Default)]
struct Breaker {
    failures: u32,
    open_until: Option<Instant>,
    /// Half-open: a trial call is out.
    trial: bool,
}

/// The circuits, by service.
#[derive(Debug, Default)]
pub(crate) struct Breakers {
    by_service: Mutex<HashMap<String, Breaker>>,
}

impl Breakers {
    /// Whether a call may go now (and if it is the half-open trial, mark it out).
    fn allow(&self, service: &str) -> bool {
        let mut m = lock(&self.by_service);
        let b = m.entry(service.to_string()).or_default();
        match b.open_until {
            None => true,
            Some(t) if Instant::now() < t => false,
            Some(_) if b.trial => false,
            Some(_) => {
                b.trial = true;
                true
            }
        }
    }

    fn record(&self, service: &str, down: bool) {
        let mut m = lock(&self.by_service);
        let b = m.entry(service.to_string()).or_default();
        b.trial = false;
        if down {
            b.failures += 1;
            if b.failures >= BREAKER_FAILURES {
                b.open_until = Some(Instant::now() + BREAKER_OPEN);
            }
        } else {
            *b = Breaker::default();
        }
    }
}

fn idempotent(method: &Method, headers: &http::HeaderMap) -> bool {
    matches!(
        *method,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::PUT | Method::DELETE
    ) || headers.contains_key("idempotency-key")
}

/// Why one try counted as down.
enum Down {
    Failure(Failure),
    Status(StatusCode, Option<Duration>),
    CircuitOpen,
    /// A fault injected on purpose (`switchyard chaos`): not counted by the circuit.
    Injected(String),
}

impl Down {
    fn describe(&self) -> String {
        match self {
            Down::Failure(Failure::Unavailable(e)) => format!("did not answer: {e}"),
            Down::Failure(Failure::Timeout(t)) => format!("did not answer within {t:?}"),
            Down::Status(s, _) => format!("answered {s}"),
            Down::CircuitOpen => format!(
                "its circuit is open ({BREAKER_FAILURES} failed calls in a row; tried again after {BREAKER_OPEN:?})"
            ),
            Down::Injected(what) => what.clone(),
        }
    }
}

/// `/v1/call/{service}/{path}`: the request's path after `/v1/call/`.
pub(crate) async fn call(
    gw: &Gateway,
    rest: &str,
    req: Request<Body>,
    peer: Option<SocketAddr>,
    ids: &Ids,
) -> Response<Body> {
    let (service, path) = match rest.split_once('/') {
        Some((s, p)) => (s.to_string(), format!("/{p}")),
        None => (rest.to_string(), "/".to_string()),
    };
    let caller = match caller_of(gw, req.headers()) {
        Ok(c) => c,
        Err(p) => return p.into_response(),
    };
    let deps = gw.inner.dependencies.load();
    let Some(declared) = deps.get(&caller) else {
        return Problem::new(
            StatusCode::FORBIDDEN,
            "unknown-caller",
            format!("`{caller}` is not a service of this system, so it may call nothing"),
        )
        .with("caller", caller.as_str())
        .into_response();
    };
    let Some(dependency) = declared.get(&service).cloned() else {
        return Problem::new(
            StatusCode::FORBIDDEN,
            "undeclared-dependency",
            format!(
                "service `{caller}` does not declare a dependency on `{service}`: add \
                 [dependencies.{service}] with its on-failure policy to {caller}'s service.toml"
            ),
        )
        .with("caller", caller.as_str())
        .with("service", service.as_str())
        .into_response();
    };
    drop(deps);
    let query = req.uri().query().map(str::to_string);
    let (parts, body) = req.into_parts();
    let body = match http_body_util::Limited::new(body, MAX_CALL_BODY)
        .collect()
        .await
    {
        Ok(b) => b.to_bytes(),
        Err(_) => {
            return Problem::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "body-too-large",
                format!("a call body may be at most {MAX_CALL_BODY} bytes"),
            )
            .into_response();
        }
    };
    let path_and_query = match &query {
        Some(q) => format!("{path}?{q}"),
        None => path.clone(),
    };
    let (attempts, timeout, mut backoff) = match &dependency.on_failure {
        OnFailure::Retry {
            attempts,
            timeout,
            backoff,
        } if idempotent(&parts.method, &parts.headers) => (*attempts, *timeout, *backoff),
        OnFailure::Retry { timeout, .. } => (1, *timeout, Duration::ZERO),
        _ => (1, DEFAULT_CALL_TIMEOUT, Duration::ZERO),
    };
    let mut last = Down::CircuitOpen;
    let mut tried = 0;
    for attempt in 0..attempts {
        if attempt > 0 {
            let wait = match &last {
                Down::Status(_, Some(after)) => backoff.max(*after),
                _ => backoff,
            };
            tokio::time::sleep(wait).await;
            backoff *= 2;
        }
        if !gw.inner.breakers.allow(&service) {
            last = Down::CircuitOpen;
            continue;
        }
        tried += 1;
        match try_once(
            gw,
            &service,
            &caller,
            &parts,
            body.clone(),
            &path_and_query,
            peer,
            ids,
            timeout,
        )
        .await
        {
            Ok(resp) => {
                gw.inner.breakers.record(&service, false);
                return resp;
            }
            Err(d) => {
                if !matches!(d, Down::CircuitOpen | Down::Injected(_)) {
                    gw.inner.breakers.record(&service, true);
                }
                last = d;
            }
        }
    }
    on_down(
        gw,
        &caller,
        &service,
        &dependency,
        &parts,
        body,
        &path_and_query,
        last,
        tried,
    )
    .await
}

#[allow(clippy::too_many_arguments)]
async fn try_once(
    gw: &Gateway,
    service: &str,
    caller: &str,
    parts: &http::request::Parts,
    body: Bytes,
    path_and_query: &str,
    peer: Option<SocketAddr>,
    ids: &Ids,
    timeout: Duration,
) -> Result<Response<Body>, Down> {
    let target = {
        let services = gw.inner.services.load();
        services.get(service).and_then(|urls| urls.first()).cloned()
    };
    let Some(url) = target else {
        return Err(Down::Failure(Failure::Unavailable(format!(
            "service {service} has no known address"
        ))));
    };
    let target = crate::upstream::Target::new(&url, 1, None)
        .map_err(|e| Down::Failure(Failure::Unavailable(e)))?;
    let mut timeout = timeout;
    if let Some(i) = gw.inner.faults.for_service(service) {
        use crate::faults::Played;
        match i.play(timeout).await {
            Played::Go(rest) => timeout = rest,
            Played::TimedOut => {
                return Err(Down::Injected(format!(
                    "did not answer within {timeout:?} (fault injected: `switchyard chaos {}`)",
                    i.kind.as_str()
                )));
            }
            Played::NoAnswer => return Err(Down::Injected(i.describe())),
            Played::Status(s) => {
                if (502..=504).contains(&s) {
                    return Err(Down::Injected(i.describe()));
                }
                let status = StatusCode::from_u16(s).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
                // Not down as the manifest defines it: the caller gets it as answered.
                return Ok(Problem::new(
                    status,
                    "fault-injected",
                    format!("`{service}` {}", i.describe()),
                )
                .header(crate::faults::FAULT_HEADER, i.kind.as_str())
                .into_response());
            }
        }
    }
    let mut req = Request::builder()
        .method(parts.method.clone())
        .uri(parts.uri.clone())
        .body(Body::from(body))
        .map_err(|e| Down::Failure(Failure::Unavailable(e.to_string())))?;
    *req.headers_mut() = parts.headers.clone();
    req.headers_mut().remove(CALL_TOKEN_HEADER);
    if let Ok(v) = HeaderValue::from_str(caller) {
        req.headers_mut()
            .insert(HeaderName::from_static(CALLER_HEADER), v);
    }
    let pq = format!("{}{path_and_query}", target.base);
    let resp = proxy::forward(
        &gw.inner.upstreams,
        req,
        &target.authority,
        &pq,
        peer,
        ids,
        timeout,
    )
    .await
    .map_err(Down::Failure)?;
    let status = resp.status();
    if matches!(
        status,
        StatusCode::BAD_GATEWAY | StatusCode::SERVICE_UNAVAILABLE | StatusCode::GATEWAY_TIMEOUT
    ) {
        let after = resp
            .headers()
            .get(header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(|s| Duration::from_secs(s.min(60)));
        return Err(Down::Status(status, after));
    }
    Ok(resp)
}

#[allow(clippy::too_many_arguments)]
async fn on_down(
    gw: &Gateway,
    caller: &str,
    service: &str,
    dependency: &Dependency,
    parts: &http::request::Parts,
    body: Bytes,
    path_and_query: &str,
    why: Down,
    tried: u32,
) -> Response<Body> {
    let what = format!("`{caller}` -> `{service}`: `{service}` {}", why.describe());
    match &dependency.on_failure {
        OnFailure::Fail => unavailable(&what, caller, service, tried).into_response(),
        OnFailure::Retry { .. } => unavailable(
            &format!("{what} (after {tried} tries)"),
            caller,
            service,
            tried,
        )
        .into_response(),
        OnFailure::Fallback {
            status,
            body,
            content_type,
        } => {
            let mut resp = Response::new(Body::from(body.clone()));
            *resp.status_mut() = StatusCode::from_u16(*status).unwrap_or(StatusCode::OK);
            if let Ok(v) = HeaderValue::from_str(content_type) {
                resp.headers_mut().insert(header::CONTENT_TYPE, v);
            }
            if let Ok(v) = HeaderValue::from_str(service) {
                resp.headers_mut()
                    .insert(HeaderName::from_static("switchyard-fallback"), v);
            }
            resp
        }
        OnFailure::Degrade { header: marker } => Problem::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "dependency-degraded",
            format!("{what}; serve the reduced response"),
        )
        .with("caller", caller)
        .with("dependency", service)
        .header(marker, service)
        .into_response(),
        OnFailure::Queue { topic } => {
            if dependency.kind != DependencyKind::Async {
                return unavailable(&what, caller, service, tried).into_response();
            }
            queue(gw, caller, service, topic, parts, body, path_and_query).await
        }
    }
}

/// `POST /v1/queued-calls`: one queued call, pushed by the subscription the runner makes on
/// each queue topic (CloudEvents binary mode). The push is only a pointer: the call made is
/// the record the push names (`ce-partition`, `ce-sequence`) in the queue topic of the
/// caller's policy, and only when that record was appended by the gateway itself (it carries
/// [`QUEUED_BY_GATEWAY`], which nothing outside can write) and its id is the push's
/// `ce-id`; anything else is 403 `forged-queued-call`, so a POST from outside cannot make a
/// call as some service. The call goes to its dependency as it was made; the answer tells the
/// bus what to do: the dependency's 2xx is 200 (delivered), a down dependency 503 (tried
/// again later, after `Retry-After`), its 4xx passed on (parked: the call itself is wrong),
/// anything else 500 (tried again).
pub(crate) async fn deliver_queued(gw: &Gateway, req: Request<Body>, ids: &Ids) -> Response<Body> {
    use base64::Engine as _;
    let pushed = req.headers().clone();
    let body = match http_body_util::Limited::new(req.into_body(), 2 * MAX_CALL_BODY)
        .collect()
        .await
    {
        Ok(b) => b.to_bytes(),
        Err(_) => {
            return Problem::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "body-too-large",
                "a queued call is too large",
            )
            .into_response();
        }
    };
    let bad = |field: &str, why: &str| {
        Problem::new(
            StatusCode::BAD_REQUEST,
            "invalid-queued-call",
            format!("{field}: {why}"),
        )
        .with("pointer", format!("/{field}"))
        .into_response()
    };
    let Ok(claimed) = serde_json::from_slice::<serde_json::Value>(&body) else {
        return bad("data", "not JSON");
    };
    let claimed_text = |k: &str| claimed.get(k).and_then(|v| v.as_str()).map(str::to_string);
    let (Some(caller), Some(service)) = (claimed_text("caller"), claimed_text("dependency")) else {
        return bad("data", "needs caller, dependency, method and path");
    };
    let topic = match gw
        .inner
        .dependencies
        .load()
        .get(&caller)
        .and_then(|d| d.get(&service))
        .map(|d| d.on_failure.clone())
    {
        Some(OnFailure::Queue { topic }) => topic,
        _ => {
            return Problem::new(
                StatusCode::FORBIDDEN,
                "undeclared-dependency",
                format!(
                    "service `{caller}` does not declare a dependency on `{service}` with the \
                     queue policy"
                ),
            )
            .into_response();
        }
    };
    let data = match queued_record(gw, &topic, &pushed).await {
        Ok(d) => d,
        Err(p) => return p.into_response(),
    };
    let text = |k: &str| data.get(k).and_then(|v| v.as_str()).map(str::to_string);
    let (Some(caller), Some(service), Some(method), Some(path)) = (
        text("caller"),
        text("dependency"),
        text("method"),
        text("path"),
    ) else {
        return bad("data", "needs caller, dependency, method and path");
    };
    let Ok(method) = Method::from_bytes(method.as_bytes()) else {
        return bad("method", "not an HTTP method");
    };
    if !path.starts_with('/') {
        return bad("path", "must start with `/`");
    }
    let declared = gw
        .inner
        .dependencies
        .load()
        .get(&caller)
        .is_some_and(|d| d.contains_key(&service));
    if !declared {
        return Problem::new(
            StatusCode::FORBIDDEN,
            "undeclared-dependency",
            format!("service `{caller}` does not declare a dependency on `{service}`"),
        )
        .into_response();
    }
    let payload =
        match text("body-base64").map(|b| base64::engine::general_purpose::STANDARD.decode(b)) {
            None => Bytes::new(),
            Some(Ok(b)) => Bytes::from(b),
            Some(Err(_)) => return bad("body-base64", "not base64"),
        };
    let mut headers = http::HeaderMap::new();
    for pair in data
        .get("headers")
        .and_then(|h| h.as_array())
        .into_iter()
        .flatten()
    {
        let n = pair.get(0).and_then(|x| x.as_str()).unwrap_or_default();
        let v = pair.get(1).and_then(|x| x.as_str()).unwrap_or_default();
        if let (Ok(n), Ok(v)) = (
            HeaderName::from_bytes(n.as_bytes()),
            HeaderValue::from_str(v),
        ) {
            headers.append(n, v);
        }
    }
    let (mut parts, ()) = Request::builder()
        .method(method)
        .uri(path.as_str())
        .body(())
        .map(|r| r.into_parts())
        .unwrap_or_else(|_| Request::new(()).into_parts());
    parts.headers = headers;
    match try_once(
        gw,
        &service,
        &caller,
        &parts,
        payload,
        &path,
        None,
        ids,
        DEFAULT_CALL_TIMEOUT,
    )
    .await
    {
        Ok(resp) if resp.status().is_success() => {
            gw.inner.breakers.record(&service, false);
            StatusCode::OK.into_response()
        }
        Ok(resp) if resp.status().is_client_error() => resp.status().into_response(),
        Ok(resp) => {
            tracing::warn!(
                "queued call {caller} -> {service} {path}: answered {}",
                resp.status()
            );
            StatusCode::INTERNAL_SERVER_ERROR.into_response()
        }
        Err(d) => Problem::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "dependency-unavailable",
            format!(
                "queued call `{caller}` -> `{service}`: `{service}` {}",
                d.describe()
            ),
        )
        .header("retry-after", "1")
        .into_response(),
    }
}

/// The `data` of the queued call the push points at, read from `topic` (see
/// [`deliver_queued`]).
async fn queued_record(
    gw: &Gateway,
    topic: &switchyard_journal::TopicName,
    pushed: &http::HeaderMap,
) -> Result<serde_json::Value, Problem> {
    let forged = |why: &str| {
        Problem::new(
            StatusCode::FORBIDDEN,
            "forged-queued-call",
            format!("not a queued call of the gateway's: {why}"),
        )
    };
    let header = |n: &str| pushed.get(n).and_then(|v| v.to_str().ok());
    let (Some(partition), Some(offset), Some(id)) = (
        header("ce-partition").and_then(|p| p.parse::<u32>().ok()),
        header("ce-sequence").and_then(|o| o.parse::<u64>().ok()),
        header("ce-id"),
    ) else {
        return Err(forged(
            "the push names no record (ce-partition, ce-sequence, ce-id)",
        ));
    };
    let limits = switchyard_journal::ReadLimits {
        max_records: 1,
        ..Default::default()
    };
    let batch = gw
        .inner
        .journal
        .read(topic, partition, offset, limits)
        .await
        .map_err(|e| match e {
            switchyard_journal::Error::TopicNotFound(_) => {
                forged(&format!("{topic} {partition}@{offset}: {e}"))
            }
            // The journal cannot say now: the bus asks again.
            other => Problem::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "journal-unavailable",
                format!("reading the queued call from {topic}: {other}"),
            )
            .header("retry-after", "1"),
        })?;
    let record = batch
        .records
        .into_iter()
        .find(|r| r.offset == offset)
        .ok_or_else(|| forged(&format!("{topic} has no record {partition}@{offset}")))?;
    let marked = record
        .headers
        .iter()
        .any(|(n, v)| n == QUEUED_BY_GATEWAY.0 && v.as_ref() == QUEUED_BY_GATEWAY.1);
    if !marked {
        return Err(forged(&format!(
            "{topic} {partition}@{offset} was not appended by the gateway"
        )));
    }
    let event: serde_json::Value = serde_json::from_slice(&record.payload)
        .map_err(|_| forged(&format!("{topic} {partition}@{offset} is not a CloudEvent")))?;
    if event.get("id").and_then(|v| v.as_str()) != Some(id) {
        return Err(forged(&format!(
            "{topic} {partition}@{offset} is another event than ce-id {id:?}"
        )));
    }
    Ok(event.get("data").cloned().unwrap_or_default())
}

fn unavailable(what: &str, caller: &str, service: &str, tried: u32) -> Problem {
    Problem::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "dependency-unavailable",
        what.to_string(),
    )
    .with("caller", caller)
    .with("dependency", service)
    .with("tries", tried)
    .header("retry-after", "1")
}

async fn queue(
    gw: &Gateway,
    caller: &str,
    service: &str,
    topic: &switchyard_journal::TopicName,
    parts: &http::request::Parts,
    body: Bytes,
    path_and_query: &str,
) -> Response<Body> {
    use base64::Engine as _;
    let key = format!("{caller}->{service}");
    let id = crate::trace::request_id(&http::HeaderMap::new());
    let id = id.to_str().unwrap_or("queued").to_string();
    let headers: Vec<(String, String)> = parts
        .headers
        .iter()
        .filter(|(n, _)| {
            *n != header::HOST
                && *n != CALL_TOKEN_HEADER
                && *n != CALLER_HEADER
                && !n.as_str().starts_with("connection")
        })
        .filter_map(|(n, v)| Some((n.to_string(), v.to_str().ok()?.to_string())))
        .collect();
    let event = json!({
        "specversion": "1.0",
        "id": id,
        "source": format!("/switchyard/gateway/{caller}"),
        "type": "switchyard.queued-call",
        "subject": service,
        "partitionkey": key,
        "datacontenttype": "application/json",
        "data": {
            "caller": caller,
            "dependency": service,
            "method": parts.method.as_str(),
            "path": path_and_query,
            "headers": headers,
            "body-base64": base64::engine::general_purpose::STANDARD.encode(&body),
        },
    });
    let journal = gw.inner.journal.as_ref();
    let written = async {
        let partition = journal
            .choose_partition(topic, &PartitionChoice::Key(Bytes::from(key.clone())))
            .await?;
        let record = Record::new(event.to_string())
            .with_id(id.clone())
            .with_key(key.clone().into_bytes())
            .with_header(QUEUED_BY_GATEWAY.0, QUEUED_BY_GATEWAY.1);
        let out = journal.append(topic, partition, vec![record], None).await?;
        Ok::<_, switchyard_journal::Error>((partition, out.first().map_or(0, |a| a.offset)))
    }
    .await;
    match written {
        Ok((partition, offset)) => (
            StatusCode::ACCEPTED,
            axum::Json(json!({
                "queued": true, "topic": topic.as_str(), "partition": partition, "offset": offset, "id": id,
            })),
        )
            .into_response(),
        Err(e) => Problem::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "dependency-unavailable",
            format!("`{service}` is down and the call could not be queued on {topic}: {e}"),
        )
        .into_response(),
    }
}
