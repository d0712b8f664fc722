//! Gateway routes: `[[routes]]` in switchyard.toml, and the body of the gateway's admin API
//! (`PUT /v1/gateway/routes/{name}`), in one serde form with one set of checks.
//!
//! ```toml
//! [[routes]]
//! name = "orders"                      # unique; [a-z0-9-], 1 to 64 characters
//! path = "/api/orders/{*rest}"         # literal segments, `{name}` (one segment), a final `{*name}` (the rest)
//! hosts = ["shop.example.com"]         # optional: any host when empty
//! methods = ["GET", "POST"]            # optional: any method when empty
//! strip-prefix = true                  # forward only what the final `{*name}` matched
//! rewrite = "/v2/orders/{rest}"        # or: the forwarded path, with the pattern's parameters
//! service = "orders"                   # a service of the system (the runner knows its port) ...
//! upstreams = [{ url = "http://127.0.0.1:9001", weight = 3 }]   # ... or a list of URLs (not both)
//! timeout = "30s"                      # the default: a request to the upstream is cut off after it
//! health = { path = "/healthz", interval = "1s", timeout = "1s", unhealthy-after = 2, healthy-after = 1 }
//! [routes.auth]                        # optional: see [`AuthSpec`]
//! jwt = { algorithm = "RS256", jwks-url = "http://id.internal/jwks.json", issuer = "https://id", audience = ["shop"], leeway = "30s", claims = { "x-user-email" = "email" } }
//! api-keys-env = "SHOP_API_KEYS"       # `name=key,name2=key2`
//! user-header = "x-user-id"
//! [routes.rate-limit]                  # optional: GCRA, see [`RateLimitSpec`]
//! requests = 100                       # this many requests ...
//! per = "1m"                           # ... per this period, spread evenly
//! burst = 20                           # at most this many at once (default: requests)
//! by = "consumer"                      # each consumer its own budget (default), or "route": one for all
//! [routes.quota]                       # optional: persistent counters, see [`QuotaSpec`]
//! daily = 10000                        # per UTC day
//! monthly = 200000                     # per UTC calendar month
//! by = "consumer"
//! [routes.access-log]                  # optional: see [`AccessLogSpec`]
//! topic = "gateway.access.v1"          # each request appended as an event (declared in [topics])
//!
//! [[routes]]                           # a composed route: see [`ComposeSpec`]
//! name = "order-overview"
//! path = "/api/orders/{id}/overview"
//! timeout = "2s"                       # each part's default
//! [routes.compose]
//! merge = '{order: .order, payment: .payment}'   # jq over {"<part>": its JSON or null}
//! [[routes.compose.parts]]
//! name = "order"
//! service = "orders"                   # or url = "http://127.0.0.1:9001"
//! path = "/orders/{id}"                # the route's parameters filled in
//! required = true                      # without it, the route answers with what it has
//! ```

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::time::Duration;

/// A duration written as a humantime string (`"200ms"`, `"30s"`), read and written so.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Millis(pub Duration);

impl Serialize for Millis {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&humantime::format_duration(self.0).to_string())
    }
}

impl<'de> Deserialize<'de> for Millis {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        crate::raw::HumanDuration::deserialize(d).map(|h| Millis(h.0))
    }
}

/// One route of the gateway.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct RouteSpec {
    pub name: String,
    /// The path pattern (see [`PathPattern`]).
    pub path: String,
    /// Host names the route answers (the `Host` header without its port); empty: any.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hosts: Vec<String>,
    /// Methods (upper case); empty: any.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub methods: Vec<String>,
    /// Forward only what the pattern's final `{*name}` matched.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub strip_prefix: bool,
    /// The forwarded path, with `{name}` replaced by the pattern's parameters.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rewrite: Option<String>,
    /// A service of the system.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service: Option<String>,
    /// Upstream URLs with weights.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub upstreams: Vec<UpstreamSpec>,
    /// Limit of one request to the upstream, headers and body (default 30 s).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<Millis>,
    /// Active health checks of the upstreams.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health: Option<HealthCheckSpec>,
    /// Who may use the route: a JWT, an API key, or either.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth: Option<AuthSpec>,
    /// A rate limit (GCRA) per consumer or for the whole route.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_limit: Option<RateLimitSpec>,
    /// Daily and monthly quotas per consumer or for the whole route, kept in the store.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quota: Option<QuotaSpec>,
    /// Each request appended to a journal topic as an event.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub access_log: Option<AccessLogSpec>,
    /// A composed route: several upstreams called in parallel, their JSON merged (instead
    /// of `service` or `upstreams`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub compose: Option<ComposeSpec>,
}

/// `compose`: a `GET` of the route calls every part in parallel (`GET`, with the client's
/// headers after auth, the request id and trace context) and answers
/// `{"data": <merge's output>, "parts": {"<part>": {"status": 200, "ms": 12}, ...},
/// "partial": false}`. `merge` is a jq program whose input is `{"<part>": <its JSON body, or
/// null when it failed>}` and which may read `$params` (the path's parameters) and `$parts`
/// (each part's status, as in the answer). A part *fails* when it does not answer 2xx with
/// JSON within its timeout; its status is then its HTTP status or `"timeout"`,
/// `"unavailable"` (no connection or answer), `"invalid-json"` or `"too-large"`. When some
/// parts fail the answer is still 200, with `"partial": true` and the failed parts named in
/// `Switchyard-Partial`; when a `required` part fails it is problem+json `part-failed` (the
/// part's 4xx, 504 for a timeout, else 502), when every part does `composition-failed`, each
/// with the statuses.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct ComposeSpec {
    /// 1 to [`MAX_PARTS`].
    pub parts: Vec<PartSpec>,
    /// Default `.`: the parts' bodies by name.
    #[serde(default = "default_merge")]
    pub merge: String,
}

fn default_merge() -> String {
    ".".to_string()
}

/// One part of a composed route.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct PartSpec {
    /// `[a-z][a-z0-9_]*`, at most 64 characters: the key in the merge's input (`.order`).
    pub name: String,
    /// A service of the system ...
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service: Option<String>,
    /// ... or a base URL (`http://host:port[/base]`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// The path (and query) asked, with `{name}` replaced by the route's parameters.
    pub path: String,
    /// The limit of this part (default: the route's `timeout`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<Millis>,
    /// Without this part there is no answer: its failure fails the route.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub required: bool,
}

/// The most parts of a composed route.
pub const MAX_PARTS: usize = 16;

/// The variables a composed route's `merge` may read, in this order.
pub const COMPOSE_GLOBALS: [&str; 2] = ["$params", "$parts"];

impl ComposeSpec {
    fn validate(
        &self,
        route: &RouteSpec,
        pattern: Option<&PathPattern>,
        err: &mut dyn FnMut(String, String),
    ) {
        if route.service.is_some() || !route.upstreams.is_empty() {
            err(
                if route.service.is_some() {
                    "service"
                } else {
                    "upstreams"
                }
                .into(),
                "a composed route calls its parts: give no service or upstreams".into(),
            );
        }
        for (set, key) in [
            (route.strip_prefix, "strip-prefix"),
            (route.rewrite.is_some(), "rewrite"),
            (route.health.is_some(), "health"),
        ] {
            if set {
                err(
                    key.into(),
                    format!("{key} does not apply to a composed route (each part has its path)"),
                );
            }
        }
        for (i, m) in route.methods.iter().enumerate() {
            if m != "GET" && m != "HEAD" {
                err(
                    format!("methods[{i}]"),
                    format!("a composed route answers GET and HEAD only, not {m}"),
                );
            }
        }
        if self.parts.is_empty() || self.parts.len() > MAX_PARTS {
            err(
                "compose.parts".into(),
                format!(
                    "a composed route needs 1 to {MAX_PARTS} parts (has {})",
                    self.parts.len()
                ),
            );
        }
        let mut names = std::collections::BTreeSet::new();
        for (i, p) in self.parts.iter().enumerate() {
            let at = |k: &str| format!("compose.parts[{i}].{k}");
            let good_name = p.name.len() <= 64
                && p.name.starts_with(|c: char| c.is_ascii_lowercase())
                && p.name
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
            if !good_name {
                err(
                    at("name"),
                    format!(
                        "part name {:?} must be a-z, 0-9 and `_`, starting with a letter (it is a key in jq: `.{}`)",
                        p.name, p.name
                    ),
                );
            } else if !names.insert(p.name.as_str()) {
                err(at("name"), format!("part {:?} appears twice", p.name));
            }
            match (&p.service, &p.url) {
                (Some(_), Some(_)) => err(at("url"), "give service or url, not both".into()),
                (None, None) => err(
                    at("service"),
                    "a part needs `service = \"<name>\"` or `url = \"http://...\"`".into(),
                ),
                (Some(s), None) if s.is_empty() => {
                    err(at("service"), "service name is empty".into())
                }
                (None, Some(u)) => {
                    if let Err(e) = check_upstream_url(u) {
                        err(at("url"), e);
                    }
                }
                _ => {}
            }
            let (path, query) = p.path.split_once('?').unwrap_or((&p.path, ""));
            if let Some(pattern) = pattern
                && let Err(e) = check_template(path, pattern).and_then(|()| {
                    if query.contains(['#', ' ']) {
                        Err(format!("path {:?} holds a space or `#`", p.path))
                    } else {
                        check_template(&format!("/{query}"), pattern)
                    }
                })
            {
                err(at("path"), e.replace("template", "path"));
            }
            if let Some(t) = p.timeout
                && (t.0 < Duration::from_millis(1) || t.0 > Duration::from_secs(3600))
            {
                err(at("timeout"), "timeout must be 1ms to 1h".into());
            }
        }
        if let Err(e) = switchyard_jq::Program::compile(&self.merge, &COMPOSE_GLOBALS) {
            err(
                "compose.merge".into(),
                format!(
                    "merge is not a jq program this gateway runs: {e} (it may read {})",
                    COMPOSE_GLOBALS.join(", ")
                ),
            );
        }
    }
}

/// `access-log`: every request the route answers (forwarded, or refused by its auth or
/// limits) is appended to `topic` as a `switchyard.gateway.request` CloudEvent (method, path
/// without the query, status, latency, request id, traceparent, consumer), keyed by the
/// route's name, so requests sit in the journal's timeline beside the events they caused.
/// Written in the background in batches: a full buffer drops records (counted), it never
/// holds a request up.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct AccessLogSpec {
    pub topic: switchyard_types::TopicName,
}

/// The CloudEvents type of an access record.
pub const ACCESS_RECORD_TYPE: &str = "switchyard.gateway.request";

/// Whose budget a rate limit or quota counts.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum LimitBy {
    /// Each consumer its own: the user id of a JWT (`sub`), the name of an API key, or,
    /// without credentials, the client's IP address (the connection's peer).
    #[default]
    Consumer,
    /// One budget that every consumer of the route shares.
    Route,
}

/// `rate-limit`: GCRA (the generic cell rate algorithm: a leaky bucket without a timer).
/// `requests` per `per`, spread evenly (one every `per / requests`), with up to `burst`
/// at once after a quiet spell. Over it: 429 `rate-limited` with `Retry-After`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct RateLimitSpec {
    /// 1 to 1,000,000.
    pub requests: u32,
    /// 1ms to 1 day.
    pub per: Millis,
    /// 1 to 1,000,000; default `requests`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub burst: Option<u32>,
    #[serde(default, skip_serializing_if = "is_default")]
    pub by: LimitBy,
}

impl RateLimitSpec {
    /// The burst, defaulted.
    pub fn burst(&self) -> u32 {
        self.burst.unwrap_or(self.requests)
    }
}

/// `quota`: at most `daily` requests per UTC day and `monthly` per UTC calendar month,
/// counted in the store so they survive restarts and are shared by instances on one store.
/// Over it: 429 `quota-exceeded` with `Retry-After` (until the window ends).
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct QuotaSpec {
    /// 1 to 10^12.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub daily: Option<u64>,
    /// 1 to 10^12.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub monthly: Option<u64>,
    #[serde(default, skip_serializing_if = "is_default")]
    pub by: LimitBy,
}

/// The largest quota.
pub const MAX_QUOTA: u64 = 1_000_000_000_000;

fn is_default<T: Default + PartialEq>(v: &T) -> bool {
    *v == T::default()
}

/// `auth`: a request needs a valid JWT (`Authorization: Bearer`) or API key (`X-Api-Key`)
/// when the route names them. The backend gets the consumer's id (the JWT's `sub`, or the
/// API key's name) in `user-header` and the chosen claims in their headers; those headers
/// are always taken out of what the client sent. Secrets are named by environment variable,
/// never written here.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct AuthSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jwt: Option<JwtSpec>,
    /// A variable holding `name=key` pairs separated by commas.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_keys_env: Option<String>,
    /// Default `x-user-id`.
    #[serde(default = "default_user_header")]
    pub user_header: String,
}

fn default_user_header() -> String {
    "x-user-id".to_string()
}

/// `auth.jwt`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct JwtSpec {
    /// `HS256`, `RS256` or `ES256`: the only one accepted (no confusion between them).
    pub algorithm: String,
    /// HS256: the variable holding the shared secret (at least 32 bytes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_env: Option<String>,
    /// RS256, ES256: the variable holding the public key (PEM).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub public_key_env: Option<String>,
    /// RS256, ES256: a JWKS URL (http), cached `jwks-ttl` and fetched again (at most every
    /// 5 s) for an unknown `kid`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jwks_url: Option<String>,
    /// How long fetched keys are fresh: older, they are fetched again in the background
    /// while requests go on with them (default 5m; 1s to 1d).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jwks_ttl: Option<Millis>,
    /// How long keys are still used while every fetch fails (the JWKS URL is down); older,
    /// requests are answered 503 `auth-unavailable` (default 1h; at least `jwks-ttl`, at
    /// most 7d).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jwks_max_stale: Option<Millis>,
    /// Required `iss`, when given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub issuer: Option<String>,
    /// `aud` must hold one of these, when given.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub audience: Vec<String>,
    /// Clock skew allowed on `exp` and `nbf` (default 30 s, at most 5 minutes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub leeway: Option<Millis>,
    /// Header -> claim: `{ "x-user-email" = "email" }`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub claims: BTreeMap<String, String>,
}

impl JwtSpec {
    /// `jwks-ttl`, defaulted.
    pub fn jwks_ttl(&self) -> Millis {
        self.jwks_ttl.unwrap_or(Millis(Duration::from_secs(300)))
    }

    /// `jwks-max-stale`, defaulted (never below the ttl).
    pub fn jwks_max_stale(&self) -> Millis {
        self.jwks_max_stale
            .unwrap_or(Millis(Duration::from_secs(3600)))
            .max(self.jwks_ttl())
    }
}

/// The algorithms a route may name.
pub const JWT_ALGORITHMS: [&str; 3] = ["HS256", "RS256", "ES256"];

fn is_header_name(h: &str) -> bool {
    !h.is_empty() && h.len() <= 64 && h.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
}

fn is_var_name(v: &str) -> bool {
    let mut b = v.bytes();
    b.next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == b'_')
        && b.all(|c| c.is_ascii_alphanumeric() || c == b'_')
}

impl AuthSpec {
    fn validate(&self, err: &mut dyn FnMut(String, String)) {
        if self.jwt.is_none() && self.api_keys_env.is_none() {
            err(
                "auth".into(),
                "auth needs `jwt`, `api-keys-env` or both".into(),
            );
        }
        if !is_header_name(&self.user_header) {
            err(
                "auth.user-header".into(),
                format!("{:?} is not a header name", self.user_header),
            );
        }
        if let Some(v) = &self.api_keys_env
            && !is_var_name(v)
        {
            err(
                "auth.api-keys-env".into(),
                format!("{v:?} is not a variable name"),
            );
        }
        let Some(j) = &self.jwt else { return };
        if !JWT_ALGORITHMS.contains(&j.algorithm.as_str()) {
            err(
                "auth.jwt.algorithm".into(),
                format!(
                    "algorithm {:?} is not one of {}",
                    j.algorithm,
                    JWT_ALGORITHMS.join(", ")
                ),
            );
        }
        let hs = j.algorithm == "HS256";
        let sources = [
            j.secret_env.is_some(),
            j.public_key_env.is_some(),
            j.jwks_url.is_some(),
        ];
        if sources.iter().filter(|&&x| x).count() != 1 {
            err(
                "auth.jwt".into(),
                "give exactly one of secret-env (HS256), public-key-env or jwks-url (RS256, ES256)"
                    .into(),
            );
        } else if hs != j.secret_env.is_some() {
            err(
                "auth.jwt.secret-env".into(),
                if hs {
                    "HS256 needs secret-env".to_string()
                } else {
                    format!(
                        "{} verifies with a public key: public-key-env or jwks-url",
                        j.algorithm
                    )
                },
            );
        }
        for (k, v) in [
            ("secret-env", &j.secret_env),
            ("public-key-env", &j.public_key_env),
        ] {
            if let Some(v) = v
                && !is_var_name(v)
            {
                err(
                    format!("auth.jwt.{k}"),
                    format!("{v:?} is not a variable name"),
                );
            }
        }
        if let Some(Err(e)) = j.jwks_url.as_ref().map(|u| check_upstream_url(u)) {
            err(
                "auth.jwt.jwks-url".into(),
                e.replace("upstream", "jwks-url"),
            );
        }
        if j.jwks_url.is_none() {
            for (k, v) in [
                ("jwks-ttl", j.jwks_ttl),
                ("jwks-max-stale", j.jwks_max_stale),
            ] {
                if v.is_some() {
                    err(format!("auth.jwt.{k}"), format!("{k} needs jwks-url"));
                }
            }
        }
        if let Some(t) = j.jwks_ttl
            && (t.0 < Duration::from_secs(1) || t.0 > Duration::from_secs(86_400))
        {
            err(
                "auth.jwt.jwks-ttl".into(),
                "jwks-ttl must be 1s to 1d".into(),
            );
        }
        if let Some(m) = j.jwks_max_stale {
            if m.0 > Duration::from_secs(7 * 86_400) {
                err(
                    "auth.jwt.jwks-max-stale".into(),
                    "jwks-max-stale must be at most 7d".into(),
                );
            } else if m.0 < j.jwks_ttl().0 {
                err(
                    "auth.jwt.jwks-max-stale".into(),
                    "jwks-max-stale must be at least jwks-ttl".into(),
                );
            }
        }
        if let Some(l) = j.leeway
            && l.0 > Duration::from_secs(300)
        {
            err("auth.jwt.leeway".into(), "leeway must be at most 5m".into());
        }
        for (h, c) in &j.claims {
            if !is_header_name(h) || h.eq_ignore_ascii_case(&self.user_header) {
                err(
                    format!("auth.jwt.claims.{h}"),
                    format!("{h:?} must be a header name other than user-header"),
                );
            }
            if c.is_empty() {
                err(
                    format!("auth.jwt.claims.{h}"),
                    "the claim name is empty".into(),
                );
            }
        }
    }
}

/// One upstream URL: `http://host:port` with an optional base path.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct UpstreamSpec {
    pub url: String,
    /// Share of the requests: 1 to 1000 (default 1); 0 takes none (drained).
    #[serde(default = "one")]
    pub weight: u32,
}

fn one() -> u32 {
    1
}

/// `health`: each upstream is asked `GET path` every `interval`; after `unhealthy-after`
/// failures in a row (no 2xx within `timeout`) it gets no requests until `healthy-after`
/// successes in a row.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct HealthCheckSpec {
    #[serde(default = "default_health_path")]
    pub path: String,
    #[serde(default = "default_interval")]
    pub interval: Millis,
    #[serde(default = "default_interval")]
    pub timeout: Millis,
    #[serde(default = "two")]
    pub unhealthy_after: u32,
    #[serde(default = "one")]
    pub healthy_after: u32,
}

fn default_health_path() -> String {
    "/healthz".to_string()
}
fn default_interval() -> Millis {
    Millis(Duration::from_secs(1))
}
fn two() -> u32 {
    2
}

/// The default of [`RouteSpec::timeout`].
pub const DEFAULT_ROUTE_TIMEOUT: Duration = Duration::from_secs(30);

/// A problem with a route: the key it is about (`upstreams[1].url`, relative to the route)
/// and what is wrong.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RouteError {
    pub field: String,
    pub message: String,
}

impl std::fmt::Display for RouteError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.field, self.message)
    }
}

/// One segment of a [`PathPattern`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Segment {
    Literal(String),
    /// `{name}`: exactly one non-empty segment.
    Param(String),
    /// `{*name}`, last only: the rest of the path, possibly empty.
    Rest(String),
}

/// A route's path: `/` followed by `/`-separated segments, each a literal, `{name}` or (last)
/// `{*name}`. `/api/orders/{id}` matches `/api/orders/42`; `/api/{*rest}` matches `/api`,
/// `/api/` and everything below it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PathPattern {
    pub segments: Vec<Segment>,
}

const MAX_PATH_LEN: usize = 1024;

impl PathPattern {
    pub fn parse(text: &str) -> Result<Self, String> {
        if !text.starts_with('/') {
            return Err(format!("{text:?} must start with `/`"));
        }
        if text.len() > MAX_PATH_LEN {
            return Err(format!("is longer than {MAX_PATH_LEN} characters"));
        }
        let mut segments = Vec::new();
        let body = &text[1..];
        if body.is_empty() {
            return Ok(Self { segments });
        }
        let parts: Vec<&str> = body.split('/').collect();
        let mut names = Vec::new();
        for (i, part) in parts.iter().enumerate() {
            let last = i + 1 == parts.len();
            if let Some(inner) = part.strip_prefix('{').and_then(|p| p.strip_suffix('}')) {
                let (rest, name) = match inner.strip_prefix('*') {
                    Some(n) => (true, n),
                    None => (false, inner),
                };
                if name.is_empty()
                    || !name
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
                {
                    return Err(format!(
                        "parameter {part:?} needs a name of letters, digits, `_` or `-`"
                    ));
                }
                if names.contains(&name) {
                    return Err(format!("parameter {{{name}}} appears twice"));
                }
                names.push(name);
                if rest {
                    if !last {
                        return Err(format!("{part:?} may only be the last segment"));
                    }
                    segments.push(Segment::Rest(name.to_string()));
                } else {
                    segments.push(Segment::Param(name.to_string()));
                }
            } else {
                if part.contains(['{', '}']) {
                    return Err(format!(
                        "segment {part:?}: a parameter is a whole segment, `{{name}}` or `{{*name}}`"
                    ));
                }
                if part.is_empty() && !last {
                    return Err("has an empty segment (`//`)".to_string());
                }
                if part.contains(|c: char| c.is_ascii_control() || c == ' ' || c == '?' || c == '#')
                {
                    return Err(format!(
                        "segment {part:?} holds a space, `?`, `#` or a control character"
                    ));
                }
                if part.is_empty() {
                    // A trailing slash: `/api/` is the prefix `/api` with an empty rest.
                    segments.push(Segment::Rest(String::new()));
                } else {
                    segments.push(Segment::Literal(part.to_string()));
                }
            }
        }
        Ok(Self { segments })
    }

    /// The parameters' names, in order.
    pub fn params(&self) -> impl Iterator<Item = &str> {
        self.segments.iter().filter_map(|s| match s {
            Segment::Param(n) | Segment::Rest(n) => Some(n.as_str()),
            Segment::Literal(_) => None,
        })
    }

    /// Ends with `{*name}` (or `/`).
    pub fn has_rest(&self) -> bool {
        matches!(self.segments.last(), Some(Segment::Rest(_)))
    }
}

/// Names: 1 to 64 of `[a-z0-9-]`, starting with a letter or digit.
pub fn check_route_name(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > 64 {
        return Err(format!("route name {name:?} must be 1 to 64 characters"));
    }
    if !name
        .chars()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        || name.starts_with('-')
    {
        return Err(format!(
            "route name {name:?} may hold only a-z, 0-9 and `-`, not first"
        ));
    }
    Ok(())
}

const METHODS: [&str; 9] = [
    "GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "TRACE", "CONNECT",
];

impl RouteSpec {
    /// Every problem with the route on its own (a service's existence is the caller's check:
    /// [`crate::System`] rules, or the gateway's directory). Empty: the route is good.
    pub fn validate(&self) -> Vec<RouteError> {
        let mut out = Vec::new();
        let mut err = |field: String, message: String| out.push(RouteError { field, message });
        if let Err(e) = check_route_name(&self.name) {
            err("name".into(), e);
        }
        let pattern = match PathPattern::parse(&self.path) {
            Ok(p) => Some(p),
            Err(e) => {
                err("path".into(), format!("path {e}"));
                None
            }
        };
        for (i, h) in self.hosts.iter().enumerate() {
            let ok = !h.is_empty()
                && h.len() <= 253
                && h.chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.' || c == '*')
                && (!h.contains('*') || (h.starts_with("*.") && h[2..].find('*').is_none()));
            if !ok {
                err(
                    format!("hosts[{i}]"),
                    format!(
                        "host {h:?} must be a DNS name (letters, digits, `-`, `.`), optionally \
                         starting with `*.`"
                    ),
                );
            }
        }
        for (i, m) in self.methods.iter().enumerate() {
            if !METHODS.contains(&m.as_str()) {
                err(
                    format!("methods[{i}]"),
                    format!("method {m:?} is not one of {}", METHODS.join(", ")),
                );
            }
        }
        if let Some(p) = &pattern {
            if self.strip_prefix && !p.has_rest() {
                err(
                    "strip-prefix".into(),
                    "strip-prefix needs a path ending in `{*name}` or `/` (what is kept)".into(),
                );
            }
            if self.strip_prefix && self.rewrite.is_some() {
                err(
                    "rewrite".into(),
                    "give strip-prefix or rewrite, not both".into(),
                );
            }
            if let Some(Err(e)) = self.rewrite.as_ref().map(|r| check_template(r, p)) {
                err("rewrite".into(), e.replace("template", "rewrite"));
            }
        }
        if let Some(c) = &self.compose {
            c.validate(self, pattern.as_ref(), &mut err);
        }
        match (&self.service, self.upstreams.is_empty()) {
            _ if self.compose.is_some() => {}
            (Some(_), false) => err(
                "upstreams".into(),
                "give service or upstreams, not both".into(),
            ),
            (None, true) => err(
                "service".into(),
                "a route needs an upstream: `service = \"<name>\"`, `upstreams = [{ url = \"http://...\" }]` or `[routes.compose]`"
                    .into(),
            ),
            (Some(s), true) if s.is_empty() => {
                err("service".into(), "service name is empty".into())
            }
            _ => {}
        }
        for (i, u) in self.upstreams.iter().enumerate() {
            if let Err(e) = check_upstream_url(&u.url) {
                err(format!("upstreams[{i}].url"), e);
            }
            if u.weight > 1000 {
                err(
                    format!("upstreams[{i}].weight"),
                    format!("weight {} is above 1000", u.weight),
                );
            }
        }
        if !self.upstreams.is_empty() && self.upstreams.iter().all(|u| u.weight == 0) {
            err(
                "upstreams".into(),
                "every upstream has weight 0: none would get a request".into(),
            );
        }
        if let Some(t) = self.timeout
            && (t.0 < Duration::from_millis(1) || t.0 > Duration::from_secs(3600))
        {
            err("timeout".into(), "timeout must be 1ms to 1h".into());
        }
        if let Some(a) = &self.auth {
            a.validate(&mut err);
        }
        if let Some(r) = &self.rate_limit {
            if !(1..=1_000_000).contains(&r.requests) {
                err(
                    "rate-limit.requests".into(),
                    format!("requests must be 1 to 1000000 (got {})", r.requests),
                );
            }
            if r.per.0 < Duration::from_millis(1) || r.per.0 > Duration::from_secs(86_400) {
                err("rate-limit.per".into(), "per must be 1ms to 1d".into());
            }
            if let Some(b) = r.burst
                && !(1..=1_000_000).contains(&b)
            {
                err(
                    "rate-limit.burst".into(),
                    format!("burst must be 1 to 1000000 (got {b})"),
                );
            }
        }
        if let Some(q) = &self.quota {
            if q.daily.is_none() && q.monthly.is_none() {
                err(
                    "quota".into(),
                    "quota needs `daily`, `monthly` or both".into(),
                );
            }
            for (k, v) in [("daily", q.daily), ("monthly", q.monthly)] {
                if let Some(v) = v
                    && !(1..=MAX_QUOTA).contains(&v)
                {
                    err(
                        format!("quota.{k}"),
                        format!("{k} must be 1 to {MAX_QUOTA} (got {v})"),
                    );
                }
            }
            if let (Some(d), Some(m)) = (q.daily, q.monthly)
                && d > m
            {
                err(
                    "quota.daily".into(),
                    format!("daily ({d}) is above monthly ({m}): the day could never use it"),
                );
            }
        }
        if let Some(h) = &self.health {
            if !h.path.starts_with('/') {
                err(
                    "health.path".into(),
                    format!("health path {:?} must start with `/`", h.path),
                );
            }
            if h.interval.0 < Duration::from_millis(10) || h.interval.0 > Duration::from_secs(3600)
            {
                err(
                    "health.interval".into(),
                    "interval must be 10ms to 1h".into(),
                );
            }
            if h.timeout.0 < Duration::from_millis(1) || h.timeout.0 > Duration::from_secs(60) {
                err("health.timeout".into(), "timeout must be 1ms to 60s".into());
            }
            if !(1..=100).contains(&h.unhealthy_after) {
                err(
                    "health.unhealthy-after".into(),
                    "unhealthy-after must be 1 to 100".into(),
                );
            }
            if !(1..=100).contains(&h.healthy_after) {
                err(
                    "health.healthy-after".into(),
                    "healthy-after must be 1 to 100".into(),
                );
            }
        }
        out
    }

    /// The request timeout, defaulted.
    pub fn request_timeout(&self) -> Duration {
        self.timeout.map_or(DEFAULT_ROUTE_TIMEOUT, |t| t.0)
    }
}

/// A path with `{name}`s that must be the pattern's parameters (a rewrite, a part's path).
/// Errors say "template"; the caller names the field.
fn check_template(template: &str, pattern: &PathPattern) -> Result<(), String> {
    if !template.starts_with('/') {
        return Err(format!("template {template:?} must start with `/`"));
    }
    let params: Vec<&str> = pattern.params().collect();
    let mut rest = template;
    while let Some(open) = rest.find('{') {
        let Some(close) = rest[open..].find('}') else {
            return Err(format!("template {template:?} has an unclosed `{{`"));
        };
        let name = &rest[open + 1..open + close];
        if !params.contains(&name) {
            return Err(format!(
                "template names {{{name}}}, which the route's path does not have (it has: {})",
                if params.is_empty() {
                    "none".to_string()
                } else {
                    params.join(", ")
                }
            ));
        }
        rest = &rest[open + close + 1..];
    }
    if rest.contains('}') {
        return Err(format!("template {template:?} has a `}}` without `{{`"));
    }
    Ok(())
}

/// `http://host:port[/base]`: no query, fragment or credentials.
pub fn check_upstream_url(url: &str) -> Result<(), String> {
    let Some(rest) = url.strip_prefix("http://") else {
        return Err(format!(
            "upstream {url:?} must start with http:// (the gateway speaks HTTP/1.1 to upstreams)"
        ));
    };
    let authority = rest.split('/').next().unwrap_or("");
    if authority.is_empty() {
        return Err(format!("upstream {url:?} has no host"));
    }
    if authority.contains('@') || url.contains(['?', '#', ' ']) {
        return Err(format!(
            "upstream {url:?} may not hold credentials, a query, a fragment or spaces"
        ));
    }
    if let Some((_, port)) = authority.rsplit_once(':')
        && !authority.ends_with(']')
        && port.parse::<u16>().is_err()
    {
        return Err(format!("upstream {url:?} has a bad port {port:?}"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(toml_text: &str) -> RouteSpec {
        toml::from_str(toml_text).unwrap()
    }

    #[test]
    fn patterns_parse_and_refuse_what_they_cannot_match() {
        let p = PathPattern::parse("/api/orders/{id}").unwrap();
        assert_eq!(
            p.segments,
            vec![
                Segment::Literal("api".into()),
                Segment::Literal("orders".into()),
                Segment::Param("id".into())
            ]
        );
        assert!(PathPattern::parse("/api/{*rest}").unwrap().has_rest());
        assert!(PathPattern::parse("/api/").unwrap().has_rest());
        assert!(PathPattern::parse("/").unwrap().segments.is_empty());
        for bad in [
            "api",
            "/a/{*rest}/b",
            "/a/{id}/{id}",
            "/a//b",
            "/a/x{id}",
            "/a/{}",
            "/a b",
        ] {
            assert!(PathPattern::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_route_is_checked_field_by_field() {
        let ok = spec(
            "name = \"orders\"\npath = \"/api/orders/{*rest}\"\nstrip-prefix = true\nservice = \"orders\"",
        );
        assert_eq!(ok.validate(), vec![]);
        let bad = spec(
            "name = \"Orders\"\npath = \"/api/{id}\"\nmethods = [\"FETCH\"]\nstrip-prefix = true\n\
             upstreams = [{ url = \"https://x\" }, { url = \"http://a:1\", weight = 5000 }]\n\
             health = { path = \"healthz\" }",
        );
        let fields: Vec<String> = bad.validate().into_iter().map(|e| e.field).collect();
        assert_eq!(
            fields,
            [
                "name",
                "methods[0]",
                "strip-prefix",
                "upstreams[0].url",
                "upstreams[1].weight",
                "health.path"
            ]
        );
        let none = spec("name = \"a\"\npath = \"/\"");
        assert_eq!(none.validate()[0].field, "service");
        let rewrite =
            spec("name = \"a\"\npath = \"/a/{id}\"\nrewrite = \"/b/{nope}\"\nservice = \"x\"");
        assert!(rewrite.validate()[0].message.contains("{nope}"));
        assert!(toml::from_str::<RouteSpec>("name = \"a\"\npath = \"/\"\nprefix = \"/\"").is_err());
    }

    #[test]
    fn jwks_cache_settings_are_checked() {
        let base =
            "name = \"a\"\npath = \"/\"\nservice = \"x\"\n[auth.jwt]\nalgorithm = \"RS256\"\n";
        let fields = |extra: &str| -> Vec<String> {
            spec(&format!("{base}{extra}"))
                .validate()
                .into_iter()
                .map(|e| e.field)
                .collect()
        };
        let url = "jwks-url = \"http://id:1/jwks.json\"\n";
        assert!(fields(&format!("{url}jwks-ttl = \"10s\"\njwks-max-stale = \"1h\"")).is_empty());
        assert_eq!(
            fields("public-key-env = \"K\"\njwks-ttl = \"10s\""),
            ["auth.jwt.jwks-ttl"]
        );
        assert_eq!(
            fields(&format!("{url}jwks-ttl = \"500ms\"")),
            ["auth.jwt.jwks-ttl"]
        );
        assert_eq!(
            fields(&format!("{url}jwks-ttl = \"10m\"\njwks-max-stale = \"5m\"")),
            ["auth.jwt.jwks-max-stale"]
        );
        assert_eq!(
            fields(&format!("{url}jwks-max-stale = \"8d\"")),
            ["auth.jwt.jwks-max-stale"]
        );
        let j = spec(&format!("{base}{url}jwks-ttl = \"2h\""));
        let jwt = j.auth.unwrap().jwt.unwrap();
        // The default max-stale (1h) never falls below the ttl.
        assert_eq!(jwt.jwks_max_stale().0, Duration::from_secs(7200));
    }

    #[test]
    fn a_route_round_trips_through_json() {
        let s = spec(
            "name = \"a\"\npath = \"/a/{*r}\"\nservice = \"x\"\ntimeout = \"2s\"\nhealth = { interval = \"500ms\" }",
        );
        let json = serde_json::to_string(&s).unwrap();
        let back: RouteSpec = serde_json::from_str(&json).unwrap();
        assert_eq!(back, s);
        assert_eq!(back.request_timeout(), Duration::from_secs(2));
    }
}
