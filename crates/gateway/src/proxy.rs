//! Forwarding one request to one upstream: the request as the client sent it minus the
//! hop-by-hop headers, with the gateway's `x-forwarded-*`, request id and `traceparent`; the
//! answer streamed back as it comes.

use crate::problem::Problem;
use crate::trace;
use axum::body::Body;
use axum::http::{HeaderMap, HeaderName, HeaderValue, Request, Response, StatusCode, header};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use std::net::SocketAddr;
use std::time::Duration;

/// The pooled HTTP/1.1 client to upstreams.
pub type UpstreamClient = Client<HttpConnector, Body>;

pub fn client() -> UpstreamClient {
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    connector.set_connect_timeout(Some(Duration::from_secs(5)));
    Client::builder(hyper_util::rt::TokioExecutor::new())
        .pool_idle_timeout(Duration::from_secs(30))
        .pool_max_idle_per_host(256)
        .build(connector)
}

const HOP_BY_HOP: [HeaderName; 8] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
];

/// Takes out the hop-by-hop headers, including those the `Connection` header names.
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|t| HeaderName::from_bytes(t.trim().as_bytes()).ok())
        .collect();
    for h in named.iter().chain(HOP_BY_HOP.iter()) {
        headers.remove(h);
    }
}

/// The request's host, lower case, without its port.
pub fn host_of<B>(req: &Request<B>) -> String {
    let raw = req
        .headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .or_else(|| req.uri().host())
        .unwrap_or("");
    let host = if raw.starts_with('[') {
        raw.split(']').next().map_or(raw, |h| &raw[..=h.len()])
    } else {
        raw.split(':').next().unwrap_or(raw)
    };
    host.to_ascii_lowercase()
}

/// The ids a request carries through the gateway.
#[derive(Clone, Debug)]
pub struct Ids {
    pub request_id: HeaderValue,
    pub traceparent: HeaderValue,
}

impl Ids {
    pub fn of(headers: &HeaderMap) -> Self {
        Self {
            request_id: trace::request_id(headers),
            traceparent: trace::child_traceparent(headers),
        }
    }
}

/// A failed forward, as the client sees it.
#[derive(Debug)]
pub enum Failure {
    /// Refused, reset or closed before an answer.
    Unavailable(String),
    /// No answer within the timeout.
    Timeout(Duration),
}

impl Failure {
    pub fn problem(&self, what: &str) -> Problem {
        match self {
            Failure::Unavailable(e) => Problem::new(
                StatusCode::BAD_GATEWAY,
                "upstream-unavailable",
                format!("{what} did not answer: {e}"),
            ),
            Failure::Timeout(t) => Problem::new(
                StatusCode::GATEWAY_TIMEOUT,
                "upstream-timeout",
                format!("{what} did not answer within {}", humantime_like(*t)),
            ),
        }
    }
}

fn humantime_like(d: Duration) -> String {
    if d.as_millis() < 1000 {
        format!("{} ms", d.as_millis())
    } else {
        format!("{:.1} s", d.as_secs_f64())
    }
}

/// Sends `req` (its method, headers and body) to `authority` at `path_and_query`.
pub async fn forward(
    client: &UpstreamClient,
    mut req: Request<Body>,
    authority: &http::uri::Authority,
    path_and_query: &str,
    peer: Option<SocketAddr>,
    ids: &Ids,
    timeout: Duration,
) -> Result<Response<Body>, Failure> {
    let uri = http::Uri::builder()
        .scheme("http")
        .authority(authority.clone())
        .path_and_query(path_and_query)
        .build()
        .map_err(|e| Failure::Unavailable(format!("bad upstream URI: {e}")))?;
    let original_host = req.headers().get(header::HOST).cloned();
    let headers = req.headers_mut();
    strip_hop_by_hop(headers);
    if let Some(h) = original_host {
        headers.insert(HeaderName::from_static("x-forwarded-host"), h);
    }
    if let Some(peer) = peer {
        let ip = peer.ip().to_string();
        let value = match headers.get("x-forwarded-for").and_then(|v| v.to_str().ok()) {
            Some(prior) => format!("{prior}, {ip}"),
            None => ip,
        };
        if let Ok(v) = HeaderValue::from_str(&value) {
            headers.insert(HeaderName::from_static("x-forwarded-for"), v);
        }
    }
    headers.insert(
        HeaderName::from_static("x-forwarded-proto"),
        HeaderValue::from_static("http"),
    );
    headers.insert(
        header::HOST,
        HeaderValue::from_str(authority.as_str()).expect("an authority is a header value"),
    );
    headers.insert(
        HeaderName::from_static(trace::REQUEST_ID),
        ids.request_id.clone(),
    );
    headers.insert(
        HeaderName::from_static(trace::TRACEPARENT),
        ids.traceparent.clone(),
    );
    *req.uri_mut() = uri;
    *req.version_mut() = http::Version::HTTP_11;
    let resp = match tokio::time::timeout(timeout, client.request(req)).await {
        Err(_) => return Err(Failure::Timeout(timeout)),
        Ok(Err(e)) => return Err(Failure::Unavailable(error_chain(&e))),
        Ok(Ok(r)) => r,
    };
    let (mut parts, body) = resp.into_parts();
    strip_hop_by_hop(&mut parts.headers);
    parts.headers.insert(
        HeaderName::from_static(trace::REQUEST_ID),
        ids.request_id.clone(),
    );
    Ok(Response::from_parts(parts, Body::new(body)))
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}
