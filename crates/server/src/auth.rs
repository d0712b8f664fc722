//! Bearer tokens with scopes, optionally limited to some topics.
//!
//! With no tokens configured the API is open (the CLI then only listens on loopback). With
//! tokens, every endpoint except `/healthz` and `/readyz` needs `Authorization: Bearer
//! <secret>`: a missing or unknown token gets 401, a token without the scope or the topic
//! gets 403, and nothing changes. Secrets are compared in constant time and never printed
//! (`Token`'s `Debug` hides them).

use crate::problem::Problem;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use std::sync::Arc;

/// What a token may do.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Scope {
    /// POST events.
    Publish,
    /// Read topics' settings, events and streams.
    Read,
    /// Create, change and delete topics; metrics.
    Admin,
}

#[derive(Clone)]
pub struct Token {
    /// A label for errors and audit (never the secret).
    pub name: String,
    pub secret: String,
    pub scopes: Vec<Scope>,
    /// Topic names or prefixes ending in `*`; empty means every topic.
    pub topics: Vec<String>,
}

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Token")
            .field("name", &self.name)
            .field("secret", &"<hidden>")
            .field("scopes", &self.scopes)
            .field("topics", &self.topics)
            .finish()
    }
}

impl Token {
    pub fn allows_topic(&self, topic: &str) -> bool {
        self.topics.is_empty()
            || self.topics.iter().any(|p| match p.strip_suffix('*') {
                Some(prefix) => topic.starts_with(prefix),
                None => p == topic,
            })
    }
}

/// Equal without an early exit on the first differing byte.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Who is calling, once authenticated (absent when the API is open).
#[derive(Clone, Debug)]
pub struct Caller(pub Arc<Token>);

/// The scope and topic a request needs, from its method and path.
fn required(method: &Method, path: &str) -> Option<(Scope, Option<String>)> {
    let rest = match path {
        "/healthz" | "/readyz" | "/v1/openapi.json" => return None,
        "/metrics" => return Some((Scope::Admin, None)),
        "/v1/topics" => return Some((Scope::Read, None)),
        // A vendor's reply is published into the system.
        p if p.starts_with("/v1/adapters/")
            && p.ends_with("/replies")
            && method == Method::POST =>
        {
            return Some((Scope::Publish, None));
        }
        p if p == "/v1/subscriptions"
            || p.starts_with("/v1/subscriptions/")
            || p == "/v1/adapters"
            || p.starts_with("/v1/adapters/")
            || p == "/v1/messages"
            || p.starts_with("/v1/messages/")
            || p == "/v1/cases"
            || p.starts_with("/v1/cases/") =>
        {
            let scope = if method == Method::GET {
                Scope::Read
            } else {
                Scope::Admin
            };
            return Some((scope, None));
        }
        p => p.strip_prefix("/v1/topics/")?,
    };
    let mut parts = rest.splitn(2, '/');
    let topic = parts.next().map(percent_decoded);
    let scope = match (parts.next(), method) {
        (None, &Method::GET) => Scope::Read,
        (None, _) => Scope::Admin,
        (Some("events"), &Method::POST) => Scope::Publish,
        (Some(_), _) => Scope::Read,
    };
    Some((scope, topic))
}

fn percent_decoded(s: &str) -> String {
    crate::cloudevents::percent_decode(s).unwrap_or_else(|| s.to_string())
}

pub(crate) async fn check(
    State(tokens): State<Arc<Vec<Arc<Token>>>>,
    mut req: Request,
    next: Next,
) -> Response {
    if tokens.is_empty() {
        return next.run(req).await;
    }
    let Some((scope, topic)) = required(req.method(), req.uri().path()) else {
        return next.run(req).await;
    };
    let presented = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        })
        .map(str::trim);
    let Some(presented) = presented else {
        return unauthorized("a bearer token is required (Authorization: Bearer <token>)");
    };
    // Check every token, so the time taken does not say which one nearly matched.
    let mut found = None;
    for t in tokens.iter() {
        if same(t.secret.as_bytes(), presented.as_bytes()) {
            found = Some(t.clone());
        }
    }
    let Some(token) = found else {
        return unauthorized("the bearer token is not valid");
    };
    if !token.scopes.contains(&scope) {
        return Problem::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            format!("token `{}` lacks the {scope:?} scope", token.name),
        )
        .into_response();
    }
    if let Some(t) = &topic
        && !token.allows_topic(t)
    {
        return Problem::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            format!("token `{}` is not allowed on topic `{t}`", token.name),
        )
        .into_response();
    }
    req.extensions_mut().insert(Caller(token));
    next.run(req).await
}

fn unauthorized(detail: &str) -> Response {
    let mut r = Problem::new(StatusCode::UNAUTHORIZED, "unauthorized", detail).into_response();
    r.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static("Bearer realm=\"switchyard\""),
    );
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_route_needs_its_scope() {
        let cases = [
            (Method::GET, "/healthz", None),
            (Method::GET, "/metrics", Some((Scope::Admin, None))),
            (Method::GET, "/v1/topics", Some((Scope::Read, None))),
            (
                Method::PUT,
                "/v1/topics/a.b",
                Some((Scope::Admin, Some("a.b".into()))),
            ),
            (
                Method::DELETE,
                "/v1/topics/a",
                Some((Scope::Admin, Some("a".into()))),
            ),
            (
                Method::GET,
                "/v1/topics/a",
                Some((Scope::Read, Some("a".into()))),
            ),
            (
                Method::POST,
                "/v1/topics/a/events",
                Some((Scope::Publish, Some("a".into()))),
            ),
            (
                Method::GET,
                "/v1/topics/a/events",
                Some((Scope::Read, Some("a".into()))),
            ),
            (
                Method::GET,
                "/v1/topics/a%2Eb/stream",
                Some((Scope::Read, Some("a.b".into()))),
            ),
        ];
        for (m, p, want) in cases {
            assert_eq!(required(&m, p), want, "{m} {p}");
        }
    }

    #[test]
    fn topic_patterns_and_secrets() {
        let t = Token {
            name: "n".into(),
            secret: "s3cret".into(),
            scopes: vec![Scope::Read],
            topics: vec!["orders.*".into(), "pay.v1".into()],
        };
        assert!(t.allows_topic("orders.v1"));
        assert!(t.allows_topic("pay.v1"));
        assert!(!t.allows_topic("pay.v2"));
        assert!(!format!("{t:?}").contains("s3cret"));
        assert!(same(b"abc", b"abc"));
        assert!(!same(b"abc", b"abd"));
        assert!(!same(b"abc", b"abcd"));
    }
}
