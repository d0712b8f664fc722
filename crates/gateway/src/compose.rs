//! Composed routes (`[routes.compose]`, see [`switchyard_manifest::ComposeSpec`]): one
//! request calls every part in parallel and answers their JSON merged by a jq program
//! (`switchyard-jq`, the crate the integration gateway's mappings use too).
//!
//! The answer is `{"data": <merge's output>, "parts": {"<part>": {"status": 200, "ms": 4},
//! ...}, "partial": false}`, 200 even when some parts failed (`"partial": true`, and the
//! failed parts named in `Switchyard-Partial`): a client gets what there is and sees what is
//! missing. A 206 would be wrong: it means a byte range, and caches treat it so. A failed
//! `required` part is problem+json `part-failed` (its 4xx, 504 for a timeout, else 502); all
//! parts failed is `composition-failed` (504 when all timed out, else 502); a merge that
//! fails on the parts' data is 500 `merge-failed`. Every problem carries the parts'
//! statuses.

use crate::problem::Problem;
use crate::proxy::{self, Failure, Ids};
use crate::service::Gateway;
use crate::table::Services;
use crate::upstream::{Pool, Target};
use axum::body::Body;
use axum::http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode, header};
use axum::response::IntoResponse;
use http_body_util::BodyExt as _;
use serde_json::{Map, Value, json};
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use switchyard_manifest::{COMPOSE_GLOBALS, ComposeSpec, PartSpec};

/// The largest body a part may answer (it is held to be parsed and merged).
pub const MAX_PART_BODY: usize = 4 << 20;

/// The header naming the parts that failed in a partial answer.
pub const PARTIAL_HEADER: &str = "switchyard-partial";

/// A composed route, compiled.
#[derive(Debug)]
pub struct Compose {
    pub parts: Vec<Part>,
    merge: switchyard_jq::Program,
}

/// One part, compiled.
#[derive(Debug)]
pub struct Part {
    pub spec: PartSpec,
    pool: Pool,
    timeout: Duration,
}

impl Compose {
    /// Compiles a spec already validated; a service unknown here is an error naming it.
    pub fn compile(
        spec: &ComposeSpec,
        route_timeout: Duration,
        services: &Services,
    ) -> Result<Self, String> {
        let parts = spec
            .parts
            .iter()
            .map(|p| {
                let urls: Vec<String> = match (&p.service, &p.url) {
                    (Some(s), _) => services.get(s).cloned().ok_or_else(|| {
                        format!(
                            "compose.parts {:?}: service {s:?} is unknown here (services: {})",
                            p.name,
                            services.keys().cloned().collect::<Vec<_>>().join(", ")
                        )
                    })?,
                    (None, Some(u)) => vec![u.clone()],
                    (None, None) => return Err(format!("part {:?} has no upstream", p.name)),
                };
                let targets = urls
                    .iter()
                    .map(|u| Target::new(u, 1, None))
                    .collect::<Result<Vec<_>, _>>()?;
                Ok(Part {
                    spec: p.clone(),
                    pool: Pool::new(targets),
                    timeout: p.timeout.map_or(route_timeout, |t| t.0),
                })
            })
            .collect::<Result<Vec<_>, String>>()?;
        let merge = switchyard_jq::Program::compile(&spec.merge, &COMPOSE_GLOBALS)
            .map_err(|e| format!("compose.merge: {e}"))?;
        Ok(Self { parts, merge })
    }
}

/// What became of one part.
struct Outcome {
    /// A number (the HTTP status) or a word (`timeout`, `unavailable`, `invalid-json`,
    /// `too-large`).
    status: Value,
    /// The JSON body of a part that answered 2xx.
    body: Option<Value>,
    error: Option<String>,
    took: Duration,
}

impl Outcome {
    fn ok(&self) -> bool {
        self.body.is_some()
    }

    fn failed(status: Value, error: String, took: Duration) -> Self {
        Self {
            status,
            body: None,
            error: Some(error),
            took,
        }
    }

    fn view(&self) -> Value {
        let mut v = json!({"status": self.status, "ms": self.took.as_millis() as u64});
        if let Some(e) = &self.error {
            v["error"] = json!(e);
        }
        v
    }
}

/// `{name}` in `template` replaced by the parameters.
fn fill(template: &str, params: &[(String, String)]) -> String {
    crate::table::fill_template(template, |name| {
        params
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    })
}

async fn call_part(
    gw: &Gateway,
    part: &Part,
    headers: &HeaderMap,
    params: &[(String, String)],
    peer: Option<SocketAddr>,
    ids: &Ids,
) -> Outcome {
    let started = Instant::now();
    let Some(target) = part.pool.pick() else {
        return Outcome::failed(json!("unavailable"), "no address".into(), started.elapsed());
    };
    let path_and_query = format!("{}{}", target.base, fill(&part.spec.path, params));
    let mut timeout = part.timeout;
    let injected = match &part.spec.service {
        Some(s) => gw.inner.faults.for_service(s),
        None => gw.inner.faults.for_url(&target.url).map(|(_, i)| i),
    };
    if let Some(i) = injected {
        use crate::faults::Played;
        match i.play(timeout).await {
            Played::Go(rest) => timeout = rest,
            Played::TimedOut => {
                return Outcome::failed(json!("timeout"), i.describe(), started.elapsed());
            }
            Played::NoAnswer => {
                return Outcome::failed(json!("unavailable"), i.describe(), started.elapsed());
            }
            Played::Status(s) => {
                return Outcome::failed(json!(s), i.describe(), started.elapsed());
            }
        }
    }
    let mut req = Request::new(Body::empty());
    *req.method_mut() = Method::GET;
    *req.headers_mut() = headers.clone();
    req.headers_mut()
        .insert(header::ACCEPT, HeaderValue::from_static("application/json"));
    let upstreams = &gw.inner.upstreams;
    let asked = async {
        let resp = proxy::forward(
            upstreams,
            req,
            &target.authority,
            &path_and_query,
            peer,
            ids,
            timeout,
        )
        .await?;
        let status = resp.status();
        let body = http_body_util::Limited::new(resp.into_body(), MAX_PART_BODY)
            .collect()
            .await
            .map(|b| b.to_bytes());
        Ok::<_, Failure>((status, body))
    };
    let answered = tokio::time::timeout(timeout, asked).await;
    let took = started.elapsed();
    match answered {
        Err(_) | Ok(Err(Failure::Timeout(_))) => Outcome::failed(
            json!("timeout"),
            format!("no answer within {} ms", timeout.as_millis()),
            took,
        ),
        Ok(Err(Failure::Unavailable(e))) => Outcome::failed(json!("unavailable"), e, took),
        Ok(Ok((status, Err(e)))) => {
            let too_large = e
                .downcast_ref::<http_body_util::LengthLimitError>()
                .is_some();
            if too_large {
                Outcome::failed(
                    json!("too-large"),
                    format!("the body is over {MAX_PART_BODY} bytes"),
                    took,
                )
            } else {
                Outcome::failed(
                    json!(status.as_u16()),
                    format!("the body was cut short: {e}"),
                    took,
                )
            }
        }
        Ok(Ok((status, Ok(body)))) if status.is_success() => {
            match serde_json::from_slice::<Value>(&body) {
                Ok(v) => Outcome {
                    status: json!(status.as_u16()),
                    body: Some(v),
                    error: None,
                    took,
                },
                Err(e) => Outcome::failed(
                    json!("invalid-json"),
                    format!("answered {status} with a body that is not JSON: {e}"),
                    took,
                ),
            }
        }
        Ok(Ok((status, Ok(_)))) => {
            Outcome::failed(json!(status.as_u16()), format!("answered {status}"), took)
        }
    }
}

/// The answer of a composed route (after its auth and limits passed).
pub(crate) async fn answer(
    gw: &Gateway,
    route_name: &str,
    compose: &Compose,
    req: Request<Body>,
    params: Vec<(String, String)>,
    peer: Option<SocketAddr>,
    ids: &Ids,
) -> Response<Body> {
    let mut headers = req.headers().clone();
    for h in [header::CONTENT_LENGTH, header::CONTENT_TYPE] {
        headers.remove(h);
    }
    let calls = compose
        .parts
        .iter()
        .map(|p| call_part(gw, p, &headers, &params, peer, ids));
    let outcomes = futures::future::join_all(calls).await;
    let mut input = Map::new();
    let mut statuses = Map::new();
    let mut failed = Vec::new();
    for (part, o) in compose.parts.iter().zip(&outcomes) {
        let name = part.spec.name.clone();
        input.insert(name.clone(), o.body.clone().unwrap_or(Value::Null));
        statuses.insert(name.clone(), o.view());
        if !o.ok() {
            failed.push(name);
        }
    }
    let statuses = Value::Object(statuses);
    let required_failed = compose
        .parts
        .iter()
        .zip(&outcomes)
        .find(|(p, o)| p.spec.required && !o.ok());
    if let Some((part, o)) = required_failed {
        let status = match &o.status {
            Value::Number(n) => n
                .as_u64()
                .and_then(|n| u16::try_from(n).ok())
                .filter(|s| (400..500).contains(s))
                .and_then(|s| StatusCode::from_u16(s).ok())
                .unwrap_or(StatusCode::BAD_GATEWAY),
            Value::String(s) if s == "timeout" => StatusCode::GATEWAY_TIMEOUT,
            _ => StatusCode::BAD_GATEWAY,
        };
        return Problem::new(
            status,
            "part-failed",
            format!(
                "route {route_name}: the required part `{}` failed: {}",
                part.spec.name,
                o.error.as_deref().unwrap_or("")
            ),
        )
        .with("part", part.spec.name.as_str())
        .with("parts", statuses)
        .into_response();
    }
    if failed.len() == outcomes.len() {
        let all_timeouts = outcomes.iter().all(|o| o.status == json!("timeout"));
        return Problem::new(
            if all_timeouts {
                StatusCode::GATEWAY_TIMEOUT
            } else {
                StatusCode::BAD_GATEWAY
            },
            "composition-failed",
            format!("route {route_name}: every part failed"),
        )
        .with("parts", statuses)
        .into_response();
    }
    let params: Map<String, Value> = params
        .into_iter()
        .map(|(k, v)| (k, Value::String(v)))
        .collect();
    let data = match compose.merge.one(
        &Value::Object(input),
        &[Value::Object(params), statuses.clone()],
    ) {
        Ok(d) => d,
        Err(e) => {
            return Problem::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "merge-failed",
                format!("route {route_name}: the merge failed on the parts' answers: {e}"),
            )
            .with("parts", statuses)
            .into_response();
        }
    };
    let body = json!({"data": data, "parts": statuses, "partial": !failed.is_empty()});
    let mut resp = (
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response();
    if !failed.is_empty()
        && let Ok(v) = HeaderValue::from_str(&failed.join(","))
    {
        resp.headers_mut().insert(PARTIAL_HEADER, v);
    }
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn templates_take_the_parameters() {
        let p = vec![("id".to_string(), "42".to_string())];
        assert_eq!(fill("/orders/{id}?full={id}", &p), "/orders/42?full=42");
        assert_eq!(fill("/plain", &p), "/plain");
    }
}
