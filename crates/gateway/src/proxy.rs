//! Forwarding one request to one upstream: the request as the client sent it minus the
//! hop-by-hop headers, with the gateway's `x-forwarded-*`, request id and `traceparent`; the
//! answer streamed back as it comes.

use crate::pool::Upstreams;
use crate::problem::Problem;
use crate::trace;
use axum::body::Body;
use axum::http::{HeaderMap, HeaderName, HeaderValue, Request, Response, StatusCode, header};
use std::net::SocketAddr;
use std::time::Duration;

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
    upstreams: &Upstreams,
    mut req: Request<Body>,
    authority: &http::uri::Authority,
    path_and_query: &str,
    peer: Option<SocketAddr>,
    ids: &Ids,
    timeout: Duration,
) -> Result<Response<Body>, Failure> {
    // Origin form: the request line carries the path, the Host header the authority.
    let uri = http::Uri::builder()
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
    let mut resp = match tokio::time::timeout(timeout, upstreams.send(authority, req)).await {
        Err(_) => return Err(Failure::Timeout(timeout)),
        Ok(Err(e)) => return Err(Failure::Unavailable(e.to_string())),
        Ok(Ok(r)) => r,
    };
    let headers = resp.headers_mut();
    strip_hop_by_hop(headers);
    headers.insert(
        HeaderName::from_static(trace::REQUEST_ID),
        ids.request_id.clone(),
    );
    Ok(resp)
}

/// Where a redirect of the upstream's points, as the client must ask for it: a route that
/// rewrites paths (`/api/orders/o-1` forwarded as `/orders/o-1`) maps a `Location` under the
/// upstream's prefix (`/orders/o-2`, or `http://UPSTREAM/orders/o-2`) back under the client's
/// (`/api/orders/o-2`), as nginx's `proxy_redirect default` does. The prefixes are what the
/// two paths differ by before their longest common tail of whole segments. `None`: leave it
/// as it is (the paths are the same, or it points elsewhere).
pub fn relocated(
    location: &str,
    client_path: &str,
    upstream_path: &str,
    upstream: &http::uri::Authority,
) -> Option<String> {
    if client_path == upstream_path {
        return None;
    }
    let (c, u) = (client_path.as_bytes(), upstream_path.as_bytes());
    let mut common = 0;
    while common < c.len() && common < u.len() && c[c.len() - 1 - common] == u[u.len() - 1 - common]
    {
        common += 1;
    }
    // Back to a segment boundary: the shared tail starts with a `/`.
    let tail = (1..=common)
        .rev()
        .find(|&m| c[c.len() - m] == b'/')
        .unwrap_or(0);
    let client_prefix = &client_path[..client_path.len() - tail];
    let upstream_prefix = &upstream_path[..upstream_path.len() - tail];
    let path = match location.strip_prefix("http://") {
        Some(rest) => {
            let at = rest.find('/').unwrap_or(rest.len());
            if !rest[..at].eq_ignore_ascii_case(upstream.as_str()) {
                return None;
            }
            match &rest[at..] {
                "" => "/",
                p => p,
            }
        }
        None if location.starts_with('/') && !location.starts_with("//") => location,
        None => return None,
    };
    let rest = path.strip_prefix(upstream_prefix)?;
    if !(upstream_prefix.is_empty() || rest.is_empty() || rest.starts_with(['/', '?', '#'])) {
        return None;
    }
    Some(format!("{client_prefix}{rest}"))
}

#[cfg(test)]
mod tests {
    use super::relocated;

    #[test]
    fn a_redirect_under_the_upstreams_prefix_comes_back_under_the_clients() {
        let up: http::uri::Authority = "127.0.0.1:8101".parse().unwrap();
        let r = |loc: &str, client: &str, upstream: &str| relocated(loc, client, upstream, &up);
        // rewrite = "/orders": POST /api/orders answers Location /orders/o-1.
        assert_eq!(
            r("/orders/o-1", "/api/orders", "/orders").as_deref(),
            Some("/api/orders/o-1")
        );
        // rewrite = "/orders/{id}".
        assert_eq!(
            r("/orders/o-2?x=1", "/api/orders/o-1", "/orders/o-1").as_deref(),
            Some("/api/orders/o-2?x=1")
        );
        // strip-prefix: /api/orders/{*rest} forwards /x.
        assert_eq!(
            r("/y", "/api/orders/x", "/x").as_deref(),
            Some("/api/orders/y")
        );
        assert_eq!(r("/", "/svc/", "/").as_deref(), Some("/svc/"));
        // An absolute URL to the upstream itself.
        assert_eq!(
            r("http://127.0.0.1:8101/orders/o-3", "/api/orders", "/orders").as_deref(),
            Some("/api/orders/o-3")
        );
        // rewrite = "/v2/{rest}": /api/a/b forwarded as /v2/a/b.
        assert_eq!(
            r("/v2/a/c", "/api/a/b", "/v2/a/b").as_deref(),
            Some("/api/a/c")
        );
        // Left alone: no rewriting, another host, outside the upstream's prefix, a
        // relative reference, a scheme-relative URL, a prefix that only starts a segment.
        assert_eq!(r("/orders/o-1", "/orders", "/orders"), None);
        assert_eq!(
            r("http://example.com/orders/o-1", "/api/orders", "/orders"),
            None
        );
        assert_eq!(r("/elsewhere", "/api/a/b", "/v2/a/b"), None);
        assert_eq!(r("o-1", "/api/orders", "/orders"), None);
        assert_eq!(r("//evil.example/x", "/api/orders", "/orders"), None);
        assert_eq!(r("/v2x/a", "/api/a/b", "/v2/a/b"), None);
    }
}
