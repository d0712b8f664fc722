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

const HOP_BY_HOP_COUNT: usize = 8;
static HOP_BY_HOP: [HeaderName; HOP_BY_HOP_COUNT] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
];

const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");

/// Takes out the hop-by-hop headers, including those the `Connection` header names.
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    // One pass over the names the message has (a handful) finds which are there: cheaper
    // than a lookup per hop-by-hop name, and most messages have none but `Connection`.
    let mut present = [false; HOP_BY_HOP_COUNT];
    for name in headers.keys() {
        if let Some(i) = HOP_BY_HOP.iter().position(|h| h == name) {
            present[i] = true;
        }
    }
    if present[0] {
        let named: Vec<HeaderName> = headers
            .get_all(header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .map(str::trim)
            // The usual option, which goes anyway: not worth parsing as a name.
            .filter(|t| !t.eq_ignore_ascii_case("keep-alive"))
            .filter_map(|t| HeaderName::from_bytes(t.as_bytes()).ok())
            .collect();
        for h in &named {
            headers.remove(h);
        }
    }
    for (h, _) in HOP_BY_HOP.iter().zip(present).filter(|(_, p)| *p) {
        headers.remove(h);
    }
}

/// The request's host, lower case, without its port (borrowed when it is already lower case).
pub fn host_of<B>(req: &Request<B>) -> std::borrow::Cow<'_, str> {
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
    if host.bytes().any(|b| b.is_ascii_uppercase()) {
        std::borrow::Cow::Owned(host.to_ascii_lowercase())
    } else {
        std::borrow::Cow::Borrowed(host)
    }
}

/// `ip` as a header value; an IPv4 address without the formatting machinery (this runs for
/// every proxied request).
fn ip_text(ip: std::net::IpAddr, out: &mut String) {
    match ip {
        std::net::IpAddr::V4(v4) => {
            for (i, octet) in v4.octets().into_iter().enumerate() {
                if i > 0 {
                    out.push('.');
                }
                if octet >= 100 {
                    out.push(char::from(b'0' + octet / 100));
                }
                if octet >= 10 {
                    out.push(char::from(b'0' + octet / 10 % 10));
                }
                out.push(char::from(b'0' + octet % 10));
            }
        }
        std::net::IpAddr::V6(v6) => {
            use std::fmt::Write as _;
            let _ = write!(out, "{v6}");
        }
    }
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
        headers.insert(X_FORWARDED_HOST, h);
    }
    if let Some(peer) = peer {
        let mut value = String::with_capacity(48);
        if let Some(prior) = headers.get(&X_FORWARDED_FOR).and_then(|v| v.to_str().ok()) {
            value.push_str(prior);
            value.push_str(", ");
        }
        ip_text(peer.ip(), &mut value);
        if let Ok(v) = HeaderValue::from_str(&value) {
            headers.insert(X_FORWARDED_FOR, v);
        }
    }
    headers.insert(X_FORWARDED_PROTO, HeaderValue::from_static("http"));
    headers.insert(
        header::HOST,
        HeaderValue::from_str(authority.as_str()).expect("an authority is a header value"),
    );
    headers.insert(trace::REQUEST_ID, ids.request_id.clone());
    headers.insert(trace::TRACEPARENT, ids.traceparent.clone());
    *req.uri_mut() = uri;
    *req.version_mut() = http::Version::HTTP_11;
    let mut resp = match tokio::time::timeout(timeout, upstreams.send(authority, req)).await {
        Err(_) => return Err(Failure::Timeout(timeout)),
        Ok(Err(e)) => return Err(Failure::Unavailable(e.to_string())),
        Ok(Ok(r)) => r,
    };
    let headers = resp.headers_mut();
    strip_hop_by_hop(headers);
    headers.insert(trace::REQUEST_ID, ids.request_id.clone());
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
    use super::*;

    #[test]
    fn addresses_are_written_as_their_display_writes_them() {
        for ip in [
            "0.0.0.0",
            "255.255.255.255",
            "10.0.100.9",
            "127.0.0.1",
            "192.168.10.99",
            "::1",
            "2001:db8::ff00:42:8329",
        ] {
            let ip: std::net::IpAddr = ip.parse().unwrap();
            let mut out = String::from("prior, ");
            ip_text(ip, &mut out);
            assert_eq!(out, format!("prior, {ip}"));
        }
    }

    #[test]
    fn hop_by_hop_headers_go_and_the_others_stay() {
        let mut h = HeaderMap::new();
        for (n, v) in [
            ("connection", "Keep-Alive, X-Secret-Hop, close"),
            ("keep-alive", "timeout=5"),
            ("proxy-authenticate", "Basic"),
            ("proxy-authorization", "Basic eA=="),
            ("te", "trailers"),
            ("trailer", "x-sum"),
            ("transfer-encoding", "chunked"),
            ("upgrade", "websocket"),
            ("x-secret-hop", "1"),
            ("x-kept", "2"),
            // A header named like an option the `Connection` header lists goes too
            // (RFC 9110, 7.6.1).
            ("close", "named by the option"),
        ] {
            h.append(HeaderName::from_static(n), HeaderValue::from_static(v));
        }
        strip_hop_by_hop(&mut h);
        let mut left: Vec<&str> = h.keys().map(HeaderName::as_str).collect();
        left.sort_unstable();
        assert_eq!(left, ["x-kept"]);

        let mut plain = HeaderMap::new();
        plain.insert(header::ACCEPT, HeaderValue::from_static("*/*"));
        let before = plain.clone();
        strip_hop_by_hop(&mut plain);
        assert_eq!(plain, before);
    }

    #[test]
    fn the_host_is_lower_case_without_its_port() {
        let req = |host: &str| {
            Request::builder()
                .header(header::HOST, host)
                .body(())
                .unwrap()
        };
        assert!(matches!(
            host_of(&req("api.example.com:8080")),
            std::borrow::Cow::Borrowed("api.example.com")
        ));
        assert_eq!(host_of(&req("Api.Example.COM")), "api.example.com");
        assert_eq!(host_of(&req("[::1]:8080")), "[::1]");
        assert_eq!(
            host_of(&Request::get("http://Up.Example/x").body(()).unwrap()),
            "up.example"
        );
    }

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
