//! An adapter, checked and compiled from its [`AdapterConfig`]: what it takes (source and
//! route), how it maps and encodes an event into an [`OutboundRequest`], how it reads a
//! vendor's answer (classification), and how its failures are grouped into cases.

use crate::config::{AdapterConfig, CasePart, Declarations, Declared, Retry, Start, WriterConfig};
use crate::encode::Encoding;
use crate::error::{ConfigError, ConfigErrors};
use crate::jq::{Globals, Program};
use crate::template::{Escape, Template};
use serde_json::{Value, json};
use std::path::PathBuf;
use std::time::Duration;
use switchyard_store::connect::{CaseKey, OutboundRequest, UNROUTED_LANE};
use switchyard_types::TopicName;

/// Where a message failed.
pub mod stage {
    pub const ROUTE: &str = "route";
    pub const MAP: &str = "map";
    pub const DELIVER: &str = "deliver";
    pub const REPLY: &str = "reply";
}

/// A writer's resolved settings.
#[derive(Debug)]
pub enum WriterSpec {
    Http {
        method: reqwest::Method,
        url: Template,
        headers: Vec<(String, Template)>,
        /// The `Authorization` header value, from the environment at load time.
        authorization: Option<String>,
    },
    Amqp {
        url: String,
        exchange: String,
        routing_key: Template,
        persistent: bool,
    },
    File {
        dir: PathBuf,
        name: Template,
    },
}

/// Where the correlation id goes in a request.
#[derive(Debug)]
pub enum Place {
    Header(String),
    /// A key of the mapped object.
    Path(String),
}

/// Where a reply carries the correlation id.
#[derive(Debug)]
pub enum ReplyLocation {
    Header(String),
    Path(Program),
}

/// An asynchronous vendor's correlation.
#[derive(Debug)]
pub struct Correlation {
    pub place: Place,
    pub reply: ReplyLocation,
    pub timeout: Duration,
}

/// Where replies become events.
#[derive(Debug)]
pub struct ReplyTarget {
    pub topic: TopicName,
    pub event_type: String,
    pub mapping: Option<Program>,
}

#[derive(Debug)]
struct BusinessRule {
    status: Vec<u16>,
    when: Option<Program>,
    event_type: String,
}

#[derive(Debug)]
struct Classifier {
    success: Vec<u16>,
    retry: Vec<u16>,
    retry_when: Option<Program>,
    retry_delay: Option<Program>,
    business: Vec<BusinessRule>,
}

/// A vendor's answer, as the classifier sees it.
#[derive(Clone, Debug)]
pub struct Answer {
    /// The HTTP status; `None` for writers without one (AMQP confirmed, file written).
    pub status: Option<u16>,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Answer {
    /// The answer as jq programs see it: `{status, headers, body}`, the body parsed when
    /// it is JSON.
    pub fn as_json(&self) -> Value {
        let headers: serde_json::Map<String, Value> = self
            .headers
            .iter()
            .map(|(k, v)| (k.to_ascii_lowercase(), Value::String(v.clone())))
            .collect();
        let body = serde_json::from_str::<Value>(&self.body)
            .unwrap_or_else(|_| Value::String(self.body.clone()));
        json!({"status": self.status, "headers": headers, "body": body})
    }

    /// The headers as they may be stored (the replies table is readable over the API):
    /// the value of every credential header is replaced by `[redacted]`.
    pub fn recordable_headers(&self) -> Vec<(String, String)> {
        self.headers
            .iter()
            .map(|(k, v)| {
                if is_credential_header(k) {
                    (k.clone(), REDACTED.to_owned())
                } else {
                    (k.clone(), v.clone())
                }
            })
            .collect()
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// What a credential header's value is stored as.
pub const REDACTED: &str = "[redacted]";

/// Whether a header carries a credential: `Authorization`, `Proxy-Authorization`,
/// `Cookie`, `Set-Cookie`, and any name holding `api-key`, `apikey`, `token`, `secret`,
/// `password`, `signature` or `session` (`X-API-Key`, `X-Auth-Token`, `X-Hub-Signature`).
pub fn is_credential_header(name: &str) -> bool {
    let n = name.to_ascii_lowercase().replace('_', "-");
    matches!(
        n.as_str(),
        "authorization" | "proxy-authorization" | "cookie" | "set-cookie"
    ) || [
        "api-key",
        "apikey",
        "token",
        "secret",
        "password",
        "signature",
        "session",
    ]
    .iter()
    .any(|w| n.contains(w))
}

/// What an answer means.
#[derive(Clone, Debug, PartialEq)]
pub enum Verdict {
    Success,
    /// Send again; no earlier than `delay` when the vendor said (Retry-After or its body).
    Retry {
        delay: Option<Duration>,
        reason: String,
    },
    /// A known business error: an event of this type.
    Business {
        event_type: String,
        reason: String,
    },
    /// Nothing the adapter knows: a case.
    Unknown {
        class: String,
        message: String,
    },
}

/// A compiled adapter.
#[derive(Debug)]
pub struct Adapter {
    pub name: String,
    /// A hash of the configuration as written: the adapter version messages record.
    pub hash: String,
    pub config: AdapterConfig,
    pub vendor: String,
    pub topic: TopicName,
    types: Vec<String>,
    route: Option<Program>,
    key: Option<Program>,
    mapping: Program,
    encoding: Encoding,
    pub writer: WriterSpec,
    classifier: Classifier,
    pub reply: Option<ReplyTarget>,
    pub correlation: Option<Correlation>,
    pub group_by: Vec<CasePart>,
    pub retry: Retry,
    pub concurrency: u32,
    pub timeout: Duration,
    pub start: Start,
}

/// A mapped event, ready for the message store.
#[derive(Clone, Debug, PartialEq)]
pub struct Prepared {
    pub request: OutboundRequest,
    pub correlation_id: Option<String>,
}

/// Compiles every declared adapter; every problem of every adapter is reported, located.
pub fn compile_all(decls: &Declarations) -> Result<Vec<Adapter>, ConfigErrors> {
    let mut out = Vec::new();
    let mut errors = Vec::new();
    // Adapters naming the same vendor share one rate limit: those that declare one
    // declare the same.
    let mut limits: Vec<(String, &str, &crate::config::RateLimit)> = Vec::new();
    for d in &decls.adapters {
        match compile(d, &decls.base) {
            Ok(a) => out.push(a),
            Err(mut es) => errors.append(&mut es),
        }
        let Some(limit) = &d.config.rate_limit else {
            continue;
        };
        let vendor = d.config.vendor.clone().unwrap_or_else(|| d.name.clone());
        match limits.iter().find(|(v, _, _)| *v == vendor) {
            Some((_, other, l)) if *l != limit => errors.push(d.source.error(
                &format!("adapters.{}.rate-limit", d.name),
                format!(
                    "adapter `{other}` declares another rate limit for vendor `{vendor}`: \
                     the adapters of one vendor share one bucket, declare the same limit \
                     (or declare it on one of them)"
                ),
            )),
            Some(_) => {}
            None => limits.push((vendor, &d.name, limit)),
        }
    }
    if errors.is_empty() {
        Ok(out)
    } else {
        Err(ConfigErrors(errors))
    }
}

fn valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    (1..=63).contains(&name.len())
        && chars
            .next()
            .is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
}

fn valid_status(s: u16) -> bool {
    (100..=599).contains(&s)
}

/// Compiles one adapter; the errors name `adapters.<name>.<key>` where they were written.
pub fn compile(d: &Declared, base: &std::path::Path) -> Result<Adapter, Vec<ConfigError>> {
    let c = &d.config;
    let name = &d.name;
    let mut ck = Checker {
        d,
        errors: Vec::new(),
    };
    if !valid_name(name) {
        ck.err(
            "",
            format!(
                "adapter name {name:?}: 1 to 63 characters from a-z, 0-9 and `-`, starting \
                 with a letter or digit"
            ),
        );
    } else if name == UNROUTED_LANE {
        ck.err(
            "",
            format!("`{UNROUTED_LANE}` is reserved (the lane of events no route takes)"),
        );
    }
    let topic = TopicName::new(&c.topic).map_err(|e| e.reason);
    if let Err(reason) = &topic {
        ck.err("topic", reason.to_string());
    }
    for (i, t) in c.types.iter().enumerate() {
        if t.is_empty() || t.len() > 200 {
            ck.err(
                &format!("types[{i}]"),
                "an event type is 1 to 200 characters".into(),
            );
        }
    }
    let route = c.route.as_deref().map(|code| ck.program("route", code));
    let key = c.key.as_deref().map(|code| ck.program("key", code));
    let mapping = ck.program("mapping", &c.mapping);
    let retry_when = c
        .classify
        .retry_when
        .as_deref()
        .map(|code| ck.program("classify.retry-when", code));
    let retry_delay = c
        .classify
        .retry_delay
        .as_deref()
        .map(|code| ck.program("classify.retry-delay", code));
    let mut business = Vec::new();
    for (i, rule) in c.classify.business.iter().enumerate() {
        let when = rule
            .when
            .as_deref()
            .map(|code| ck.program(&format!("classify.business[{i}].when"), code));
        business.push((rule, when));
    }
    let reply_mapping = c
        .reply
        .as_ref()
        .and_then(|r| r.mapping.as_deref())
        .map(|code| ck.program("reply.mapping", code));
    let reply_path = c
        .correlation
        .as_ref()
        .and_then(|k| k.reply_path.as_deref())
        .map(|code| ck.program("correlation.reply-path", code));
    if let Err((key, reason)) = c.encoding.0.validate() {
        ck.err(&format!("encoding.{key}"), reason);
    }
    if !(1..=256).contains(&c.concurrency) {
        ck.err(
            "concurrency",
            format!("must be 1 to 256 (got {})", c.concurrency),
        );
    }
    if c.timeout.0 < Duration::from_millis(1) || c.timeout.0 > Duration::from_secs(300) {
        ck.err("timeout", "must be 1ms to 5m".into());
    }
    if let Some(r) = &c.rate_limit {
        if !(1..=100_000).contains(&r.per_second) {
            ck.err(
                "rate-limit.per-second",
                format!("must be 1 to 100000 (got {})", r.per_second),
            );
        }
        if let Some(b) = r.burst
            && !(1..=100_000).contains(&b)
        {
            ck.err("rate-limit.burst", format!("must be 1 to 100000 (got {b})"));
        }
    }
    let r = &c.retry;
    if r.initial_backoff.0 < Duration::from_millis(1) {
        ck.err("retry.initial-backoff", "must be at least 1ms".into());
    }
    if r.max_backoff.0 < r.initial_backoff.0 || r.max_backoff.0 > Duration::from_secs(86_400) {
        ck.err(
            "retry.max-backoff",
            "must be initial-backoff to 1 day".into(),
        );
    }
    if !(1.0..=100.0).contains(&r.multiplier) {
        ck.err(
            "retry.multiplier",
            format!("must be 1.0 to 100.0 (got {})", r.multiplier),
        );
    }
    if !(1..=1000).contains(&r.max_attempts) {
        ck.err(
            "retry.max-attempts",
            format!("must be 1 to 1000 (got {})", r.max_attempts),
        );
    }
    for (field, list) in [
        ("classify.success", &c.classify.success),
        ("classify.retry", &c.classify.retry),
    ] {
        for (i, s) in list.iter().enumerate() {
            if !valid_status(*s) {
                ck.err(
                    &format!("{field}[{i}]"),
                    format!("{s} is not an HTTP status (100 to 599)"),
                );
            }
        }
    }
    for (i, (rule, _)) in business.iter().enumerate() {
        if rule.event_type.is_empty() || rule.event_type.len() > 200 {
            ck.err(
                &format!("classify.business[{i}].event-type"),
                "must be 1 to 200 characters".into(),
            );
        }
        for s in &rule.status {
            if !valid_status(*s) {
                ck.err(
                    &format!("classify.business[{i}].status"),
                    format!("{s} is not an HTTP status"),
                );
            }
        }
        if rule.status.is_empty() && rule.when.is_none() {
            ck.err(
                &format!("classify.business[{i}]"),
                "a rule needs `status`, `when` or both (else it takes every answer)".into(),
            );
        }
    }
    let writer = writer_spec(&c.writer, base, &mut ck);
    let reply = match &c.reply {
        None => None,
        Some(r) => {
            let t = TopicName::new(&r.topic);
            if let Err(e) = &t {
                ck.err("reply.topic", e.reason.to_string());
            }
            if r.event_type.is_empty() || r.event_type.len() > 200 {
                ck.err("reply.type", "must be 1 to 200 characters".into());
            }
            t.ok().map(|topic| (topic, r.event_type.clone()))
        }
    };
    let correlation = match &c.correlation {
        None => None,
        Some(k) => {
            let place = match (&k.header, &k.path) {
                (Some(h), None) => {
                    if reqwest::header::HeaderName::from_bytes(h.as_bytes()).is_err() {
                        ck.err("correlation.header", format!("{h:?} is not a header name"));
                    }
                    Some(Place::Header(h.clone()))
                }
                (None, Some(p)) => {
                    if p.is_empty() || p.contains(['.', '[', ' ']) {
                        ck.err(
                            "correlation.path",
                            "a top-level key of the mapped object, like `correlation`".into(),
                        );
                    }
                    Some(Place::Path(p.clone()))
                }
                _ => {
                    ck.err(
                        "correlation",
                        "give exactly one of `header` and `path`".into(),
                    );
                    None
                }
            };
            let reply_loc = match (&k.reply_header, reply_path) {
                (Some(_), Some(_)) => {
                    ck.err(
                        "correlation",
                        "give at most one of `reply-header` and `reply-path`".into(),
                    );
                    None
                }
                (Some(h), None) => Some(ReplyLocation::Header(h.clone())),
                (None, Some(Some(p))) => Some(ReplyLocation::Path(p)),
                (None, Some(None)) => None,
                (None, None) => match &k.header {
                    Some(h) => Some(ReplyLocation::Header(h.clone())),
                    None => {
                        ck.err("correlation", "with `path`, say where replies carry the id: `reply-header` or `reply-path`".into());
                        None
                    }
                },
            };
            if k.timeout.0 < Duration::from_secs(1)
                || k.timeout.0 > Duration::from_secs(30 * 86_400)
            {
                ck.err("correlation.timeout", "must be 1s to 30 days".into());
            }
            match (place, reply_loc) {
                (Some(place), Some(reply)) => Some(Correlation {
                    place,
                    reply,
                    timeout: k.timeout.0,
                }),
                _ => None,
            }
        }
    };
    if let Some(q) = &c.reply_queue {
        if c.correlation.is_none() {
            ck.err(
                "reply-queue",
                "replies are matched by correlation: add [correlation]".into(),
            );
        }
        if !q.url.starts_with("amqp://") {
            ck.err("reply-queue.url", "must be an amqp:// URL".into());
        }
        if q.queue.is_empty() {
            ck.err("reply-queue.queue", "must not be empty".into());
        }
    }
    let mut seen = Vec::new();
    for (i, part) in c.cases.group_by.iter().enumerate() {
        if seen.contains(part) {
            ck.err(&format!("cases.group-by[{i}]"), "listed twice".into());
        }
        seen.push(*part);
    }
    let vendor = c.vendor.clone().unwrap_or_else(|| name.clone());
    if !ck.errors.is_empty() {
        return Err(ck.errors);
    }
    // Every `None` below was reported above, so there are none left here.
    let (Ok(topic), Some(mapping), Some(writer)) = (topic, mapping, writer) else {
        return Err(vec![
            d.source
                .error(&format!("adapters.{name}"), "invalid adapter"),
        ]);
    };
    let classifier = Classifier {
        success: c.classify.success.clone(),
        retry: c.classify.retry.clone(),
        retry_when: retry_when.flatten(),
        retry_delay: retry_delay.flatten(),
        business: business
            .into_iter()
            .map(|(rule, when)| BusinessRule {
                status: rule.status.clone(),
                when: when.flatten(),
                event_type: rule.event_type.clone(),
            })
            .collect(),
    };
    let hash = {
        let text = serde_json::to_string(c).unwrap_or_default();
        format!("{:032x}", xxhash_rust::xxh3::xxh3_128(text.as_bytes()))
    };
    Ok(Adapter {
        name: name.clone(),
        hash,
        config: c.clone(),
        vendor,
        topic,
        types: c.types.clone(),
        route: route.flatten(),
        key: key.flatten(),
        mapping,
        encoding: c.encoding.0.clone(),
        writer,
        classifier,
        reply: reply.map(|(topic, event_type)| ReplyTarget {
            topic,
            event_type,
            mapping: reply_mapping.flatten(),
        }),
        correlation,
        group_by: c.cases.group_by.clone(),
        retry: c.retry.clone(),
        concurrency: c.concurrency,
        timeout: c.timeout.0,
        start: c.start,
    })
}

/// Collects an adapter's problems, each located at `adapters.<name>.<key>`.
struct Checker<'a> {
    d: &'a Declared,
    errors: Vec<ConfigError>,
}

impl Checker<'_> {
    fn err(&mut self, key: &str, message: String) {
        let path = if key.is_empty() {
            format!("adapters.{}", self.d.name)
        } else {
            format!("adapters.{}.{key}", self.d.name)
        };
        self.errors.push(self.d.source.error(&path, message));
    }

    fn program(&mut self, key: &str, code: &str) -> Option<Program> {
        match Program::compile(code) {
            Ok(p) => Some(p),
            Err(e) => {
                self.err(key, e);
                None
            }
        }
    }
}

fn writer_spec(
    w: &WriterConfig,
    base: &std::path::Path,
    ck: &mut Checker<'_>,
) -> Option<WriterSpec> {
    match w {
        WriterConfig::Http {
            method,
            url,
            headers,
            auth,
        } => {
            let method = match method.to_ascii_uppercase().as_str() {
                m @ ("GET" | "POST" | "PUT" | "PATCH" | "DELETE") => {
                    reqwest::Method::from_bytes(m.as_bytes()).ok()
                }
                _ => {
                    ck.err(
                        "writer.method",
                        format!("{method:?}: GET, POST, PUT, PATCH or DELETE"),
                    );
                    None
                }
            };
            if !(url.starts_with("http://") || url.starts_with("https://")) {
                ck.err("writer.url", "must start with http:// or https://".into());
            }
            let url = match Template::compile(url, Escape::Url) {
                Ok(t) => Some(t),
                Err(e) => {
                    ck.err("writer.url", e);
                    None
                }
            };
            let mut compiled = Vec::new();
            for (k, v) in headers {
                if reqwest::header::HeaderName::from_bytes(k.as_bytes()).is_err() {
                    ck.err(
                        &format!("writer.headers.{k}"),
                        format!("{k:?} is not a header name"),
                    );
                    continue;
                }
                match Template::compile(v, Escape::Header) {
                    Ok(t) => compiled.push((k.clone(), t)),
                    Err(e) => ck.err(&format!("writer.headers.{k}"), e),
                }
            }
            let authorization = match auth {
                None => None,
                Some(a) => {
                    let env = |var: &str, key: &str, ck: &mut Checker<'_>| {
                        std::env::var(var).ok().or_else(|| {
                            ck.err(key, format!("environment variable {var} is not set"));
                            None
                        })
                    };
                    match (&a.bearer_env, &a.basic_user, &a.password_env) {
                        (Some(var), None, None) => {
                            env(var, "writer.auth.bearer-env", ck).map(|t| format!("Bearer {t}"))
                        }
                        (None, Some(user), Some(var)) => env(var, "writer.auth.password-env", ck)
                            .map(|p| {
                                use base64::Engine as _;
                                format!(
                                    "Basic {}",
                                    base64::engine::general_purpose::STANDARD
                                        .encode(format!("{user}:{p}"))
                                )
                            }),
                        _ => {
                            ck.err(
                                "writer.auth",
                                "give `bearer-env`, or `basic-user` with `password-env`".into(),
                            );
                            None
                        }
                    }
                }
            };
            Some(WriterSpec::Http {
                method: method?,
                url: url?,
                headers: compiled,
                authorization,
            })
        }
        WriterConfig::Amqp {
            url,
            exchange,
            routing_key,
            persistent,
        } => {
            if !url.starts_with("amqp://") {
                ck.err("writer.url", "must be an amqp:// URL".into());
            }
            let routing_key = match Template::compile(routing_key, Escape::None) {
                Ok(t) => Some(t),
                Err(e) => {
                    ck.err("writer.routing-key", e);
                    None
                }
            };
            Some(WriterSpec::Amqp {
                url: url.clone(),
                exchange: exchange.clone(),
                routing_key: routing_key?,
                persistent: *persistent,
            })
        }
        WriterConfig::File { dir, name } => {
            if dir.as_os_str().is_empty() {
                ck.err("writer.dir", "must not be empty".into());
            }
            let name = match Template::compile(name, Escape::None) {
                Ok(t) => Some(t),
                Err(e) => {
                    ck.err("writer.name", e);
                    None
                }
            };
            Some(WriterSpec::File {
                dir: base.join(dir),
                name: name?,
            })
        }
    }
}

/// The event's partition key: `partitionkey`, else `subject`.
fn event_key(event: &Value) -> Option<String> {
    ["partitionkey", "subject"]
        .iter()
        .find_map(|k| event.get(*k).and_then(Value::as_str).map(str::to_owned))
}

impl Adapter {
    fn globals<'a>(&'a self, correlation: Option<&'a str>) -> Globals<'a> {
        Globals {
            correlation,
            adapter: &self.name,
        }
    }

    /// Whether the event is of a type this adapter takes (before its route).
    pub fn wants_type(&self, event_type: &str) -> bool {
        self.types.is_empty() || self.types.iter().any(|t| t == event_type)
    }

    /// Whether this adapter takes the event: its type, then its route. A route that fails
    /// to run is an error (the event is then a `route` failure, never dropped).
    pub fn takes(&self, event: &Value) -> Result<bool, String> {
        let event_type = event.get("type").and_then(Value::as_str).unwrap_or("");
        if !self.wants_type(event_type) {
            return Ok(false);
        }
        match &self.route {
            None => Ok(true),
            Some(p) => p.test(event, self.globals(None)),
        }
    }

    /// The message's ordering key.
    pub fn partition_key(&self, event: &Value) -> Result<Option<String>, String> {
        match &self.key {
            None => Ok(event_key(event)),
            Some(p) => match p.one(event, self.globals(None))? {
                Value::Null => Ok(None),
                Value::String(s) => Ok(Some(s)),
                other => Ok(Some(other.to_string())),
            },
        }
    }

    /// Maps and encodes the event into the request its writer sends; the correlation id
    /// (a new random one, for asynchronous adapters) is put where the adapter says.
    pub fn prepare(&self, event: &Value) -> Result<Prepared, String> {
        self.prepare_with(event, None)
    }

    /// [`prepare`](Self::prepare), keeping `correlation_id` when given (mapping a stored
    /// message again: its replies must still find it).
    pub fn prepare_with(
        &self,
        event: &Value,
        correlation_id: Option<String>,
    ) -> Result<Prepared, String> {
        let correlation_id = self
            .correlation
            .as_ref()
            .map(|_| correlation_id.unwrap_or_else(new_correlation_id));
        let globals = self.globals(correlation_id.as_deref());
        let mut mapped = self.mapping.one(event, globals)?;
        let mut extra_headers = Vec::new();
        if let (Some(k), Some(id)) = (&self.correlation, &correlation_id) {
            match &k.place {
                Place::Header(h) => extra_headers.push((h.clone(), id.clone())),
                Place::Path(p) => match &mut mapped {
                    Value::Object(o) => {
                        o.insert(p.clone(), Value::String(id.clone()));
                    }
                    _ => {
                        return Err(format!(
                            "the correlation id goes at key `{p}`, but the mapping did not \
                             produce an object"
                        ));
                    }
                },
            }
        }
        let body = self.encoding.encode(&mapped)?;
        let (target, method, mut headers) = match &self.writer {
            WriterSpec::Http {
                method,
                url,
                headers,
                ..
            } => {
                let mut rendered = Vec::with_capacity(headers.len());
                for (k, t) in headers {
                    rendered.push((k.clone(), t.render(event, globals)?));
                }
                (
                    url.render(event, globals)?,
                    Some(method.as_str().to_owned()),
                    rendered,
                )
            }
            WriterSpec::Amqp {
                exchange,
                routing_key,
                ..
            } => (
                format!("{exchange}/{}", routing_key.render(event, globals)?),
                None,
                Vec::new(),
            ),
            WriterSpec::File { name, .. } => {
                let name = name.render(event, globals)?;
                crate::writer::file::check_name(&name)?;
                (name, None, Vec::new())
            }
        };
        headers.extend(extra_headers);
        Ok(Prepared {
            request: OutboundRequest {
                target,
                method,
                headers,
                content_type: self.encoding.content_type().to_owned(),
                body,
            },
            correlation_id,
        })
    }

    /// What the vendor's answer means. Business rules first, then retry, then success;
    /// anything else is unknown.
    pub fn classify(&self, answer: &Answer) -> Verdict {
        let c = &self.classifier;
        let view = answer.as_json();
        let g = self.globals(None);
        let protocol = match self.writer {
            WriterSpec::Amqp { .. } => "AMQP reply code",
            _ => "HTTP",
        };
        let status_text = answer
            .status
            .map_or_else(|| "no status".to_owned(), |s| format!("{protocol} {s}"));
        // A rule that fails to run takes nothing. On a body that is not JSON (an HTML
        // error page, an empty 202) that is all; on a JSON body the rule is wrong, and an
        // answer it might have taken is never called a success for it.
        let json_body = serde_json::from_str::<Value>(&answer.body).is_ok();
        let mut rule_error = None;
        for rule in &c.business {
            let status_ok =
                rule.status.is_empty() || answer.status.is_some_and(|s| rule.status.contains(&s));
            if !status_ok {
                continue;
            }
            let when = match &rule.when {
                None => true,
                Some(p) => match p.test(&view, g) {
                    Ok(b) => b,
                    Err(e) => {
                        if json_body {
                            rule_error.get_or_insert_with(|| {
                                format!("business rule `{}`: {e}", p.code())
                            });
                        }
                        false
                    }
                },
            };
            if when {
                return Verdict::Business {
                    event_type: rule.event_type.clone(),
                    reason: format!("{status_text}: {}", snippet(&answer.body)),
                };
            }
        }
        let retry_when = match &c.retry_when {
            None => false,
            Some(p) => p.test(&view, g).unwrap_or(false),
        };
        if retry_when || answer.status.is_some_and(|s| c.retry.contains(&s)) {
            let delay = retry_after(answer).or_else(|| {
                c.retry_delay.as_ref().and_then(|p| {
                    p.one(&view, g)
                        .ok()
                        .and_then(|v| v.as_f64())
                        .filter(|s| s.is_finite() && *s >= 0.0)
                        .map(|s| Duration::from_secs_f64(s.min(86_400.0)))
                })
            });
            return Verdict::Retry {
                delay,
                reason: format!("{status_text}: {}", snippet(&answer.body)),
            };
        }
        let success = match answer.status {
            None => true,
            Some(s) if c.success.is_empty() => (200..300).contains(&s),
            Some(s) => c.success.contains(&s),
        };
        if let Some(message) = rule_error {
            return Verdict::Unknown {
                class: "classify-error".into(),
                message,
            };
        }
        if success {
            return Verdict::Success;
        }
        Verdict::Unknown {
            class: "http-status".into(),
            message: format!("{status_text}: {}", snippet(&answer.body)),
        }
    }

    /// The delay before attempt `attempts + 1` (after `attempts` failed ones).
    pub fn backoff(&self, attempts: u32) -> Duration {
        let r = &self.retry;
        let exp = r
            .multiplier
            .powi(i32::try_from(attempts.saturating_sub(1)).unwrap_or(i32::MAX));
        let ms = (r.initial_backoff.0.as_secs_f64() * exp).min(r.max_backoff.0.as_secs_f64());
        Duration::from_secs_f64(ms.max(0.0))
    }

    /// The case a failure belongs to, keyed by what the adapter's `cases.group-by` keeps.
    pub fn case_key(
        &self,
        stage: &str,
        class: &str,
        status: Option<u16>,
        message: &str,
    ) -> CaseKey {
        case_key(
            &self.name,
            &self.vendor,
            &self.group_by,
            stage,
            class,
            status,
            message,
        )
    }

    /// Where a reply carries the correlation id, read from its headers and body.
    pub fn reply_correlation(&self, answer: &Answer) -> Option<String> {
        let k = self.correlation.as_ref()?;
        match &k.reply {
            ReplyLocation::Header(h) => answer.header(h).map(str::to_owned),
            ReplyLocation::Path(p) => match p.one(&answer.as_json()["body"], self.globals(None)) {
                Ok(Value::String(s)) => Some(s),
                Ok(Value::Number(n)) => Some(n.to_string()),
                _ => None,
            },
        }
    }

    /// The event a reply becomes: `reply.mapping` over `{status, headers, body, event}`
    /// (default: the body), as the data of a CloudEvent of `reply.type`.
    pub fn reply_data(&self, answer: &Answer, event: &Value) -> Result<Option<Value>, String> {
        let Some(r) = &self.reply else {
            return Ok(None);
        };
        let mut view = answer.as_json();
        view["event"] = event.clone();
        match &r.mapping {
            None => Ok(Some(view["body"].clone())),
            Some(p) => p.one(&view, self.globals(None)).map(Some),
        }
    }
}

/// The case key of a failure (also for the `unrouted` lane, which has no adapter).
pub fn case_key(
    adapter: &str,
    vendor: &str,
    group_by: &[CasePart],
    stage: &str,
    class: &str,
    status: Option<u16>,
    message: &str,
) -> CaseKey {
    let message = normalise(message);
    let mut text = format!("{adapter}\u{1f}");
    for part in group_by {
        match part {
            CasePart::Stage => text.push_str(stage),
            CasePart::ErrorClass => text.push_str(class),
            CasePart::Status => text.push_str(&status.map(|s| s.to_string()).unwrap_or_default()),
            CasePart::Message => text.push_str(&message),
            CasePart::Vendor => text.push_str(vendor),
        }
        text.push('\u{1f}');
    }
    let id = format!("{:016x}", xxhash_rust::xxh3::xxh3_64(text.as_bytes()));
    CaseKey {
        id,
        adapter: adapter.to_owned(),
        stage: stage.to_owned(),
        error_class: class.to_owned(),
        status,
        message,
        vendor: vendor.to_owned(),
    }
}

/// A failure message with what varies between alike failures taken out: lower-cased,
/// every run of digits (and any word holding one, like an id) becomes `#`, cut to 200
/// characters. So "order 12 for sku 77 not found" and "order 13 for sku 8 not found" group.
pub fn normalise(message: &str) -> String {
    let mut out = Vec::new();
    for word in message.split_whitespace() {
        if word.chars().any(|c| c.is_ascii_digit()) {
            let trimmed: String = word
                .chars()
                .filter(|c| !c.is_alphanumeric() && !matches!(c, '-' | '_'))
                .collect();
            out.push(format!("#{trimmed}"));
        } else {
            out.push(word.to_lowercase());
        }
    }
    let joined = out.join(" ");
    joined.chars().take(200).collect()
}

fn snippet(body: &str) -> String {
    let one_line: String = body
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .take(200)
        .collect();
    one_line.trim().to_owned()
}

/// `Retry-After`: seconds, or an HTTP date (RFC 9110: IMF-fixdate, and the obsolete
/// RFC 850 and asctime forms); at most a day. A date in the past is no delay; anything
/// else is no Retry-After.
pub fn retry_after(answer: &Answer) -> Option<Duration> {
    parse_retry_after(answer.header("retry-after")?, std::time::SystemTime::now())
}

/// [`retry_after`]'s parser, `now` given.
pub fn parse_retry_after(value: &str, now: std::time::SystemTime) -> Option<Duration> {
    const DAY: Duration = Duration::from_secs(86_400);
    let v = value.trim();
    if !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()) {
        // Digits only: seconds (more digits than a u64 holds is a long time).
        return Some(
            v.parse::<u64>()
                .map_or(DAY, |s| Duration::from_secs(s).min(DAY)),
        );
    }
    let when = httpdate::parse_http_date(v).ok()?;
    Some(when.duration_since(now).unwrap_or(Duration::ZERO).min(DAY))
}

fn new_correlation_id() -> String {
    let n: u128 = rand::random();
    format!("{n:032x}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::SystemTime;

    fn adapter(extra: &str) -> Adapter {
        let text = format!(
            r#"
[adapters.bakery]
vendor = "bakery-inc"
topic = "inventory.v1"
mapping = "."
writer = {{ kind = "http", url = "http://127.0.0.1:9/orders" }}
{extra}
"#
        );
        let decls = crate::config::parse(
            &text,
            std::path::Path::new("switchyard.toml"),
            std::path::Path::new("."),
        )
        .expect("parses");
        compile_all(&decls).expect("compiles").remove(0)
    }

    fn answer(status: u16, headers: &[(&str, &str)], body: &str) -> Answer {
        Answer {
            status: Some(status),
            headers: headers
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
            body: body.to_owned(),
        }
    }

    #[test]
    fn default_classification() {
        let a = adapter("");
        assert_eq!(a.classify(&answer(200, &[], "{}")), Verdict::Success);
        assert_eq!(a.classify(&answer(204, &[], "")), Verdict::Success);
        for s in [408, 425, 429, 500, 502, 503, 504] {
            assert!(
                matches!(
                    a.classify(&answer(s, &[], "")),
                    Verdict::Retry { delay: None, .. }
                ),
                "{s}"
            );
        }
        assert_eq!(
            a.classify(&answer(400, &[], "bad sku 12\n")),
            Verdict::Unknown {
                class: "http-status".into(),
                message: "HTTP 400: bad sku 12".into()
            }
        );
        // A writer without a status (a file written, a broker's confirm): success.
        let none = Answer {
            status: None,
            headers: Vec::new(),
            body: String::new(),
        };
        assert_eq!(a.classify(&none), Verdict::Success);
    }

    #[test]
    fn business_rules_come_first_then_retry_then_success() {
        let a = adapter(
            r#"
[adapters.bakery.classify]
success = [200, 202]
retry = [503]
retry-when = '.body.code == "BUSY"'
retry-delay = ".body.retry_in"
business = [{ status = [409], when = '.body.error == "OUT_OF_STOCK"', event-type = "restock.rejected" },
            { when = '.body.code == "CLOSED"', event-type = "vendor.closed" }]
"#,
        );
        assert_eq!(
            a.classify(&answer(409, &[], r#"{"error":"OUT_OF_STOCK"}"#)),
            Verdict::Business {
                event_type: "restock.rejected".into(),
                reason: r#"HTTP 409: {"error":"OUT_OF_STOCK"}"#.into()
            }
        );
        // A 409 the rule's `when` does not take: unknown.
        assert!(matches!(
            a.classify(&answer(409, &[], r#"{"error":"OTHER"}"#)),
            Verdict::Unknown { .. }
        ));
        // A rule without status takes any status; it comes before success.
        assert!(matches!(
            a.classify(&answer(200, &[], r#"{"code":"CLOSED"}"#)),
            Verdict::Business { event_type, .. } if event_type == "vendor.closed"
        ));
        // retry-when on a 200, with the delay from the body.
        assert_eq!(
            a.classify(&answer(200, &[], r#"{"code":"BUSY","retry_in":2.5}"#)),
            Verdict::Retry {
                delay: Some(Duration::from_millis(2500)),
                reason: r#"HTTP 200: {"code":"BUSY","retry_in":2.5}"#.into()
            }
        );
        // Retry-After wins over the body.
        assert!(matches!(
            a.classify(&answer(503, &[("Retry-After", "7")], r#"{"retry_in":1}"#)),
            Verdict::Retry { delay: Some(d), .. } if d == Duration::from_secs(7)
        ));
        // A body delay that is no number of seconds (negative, text): no delay.
        for body in [r#"{"retry_in":-1}"#, r#"{"retry_in":"soon"}"#, "not json"] {
            assert!(
                matches!(
                    a.classify(&answer(503, &[], body)),
                    Verdict::Retry { delay: None, .. }
                ),
                "{body}"
            );
        }
        // Only the listed statuses are success: a 201 is unknown.
        assert!(matches!(
            a.classify(&answer(201, &[], "")),
            Verdict::Unknown { .. }
        ));
        assert_eq!(a.classify(&answer(202, &[], "")), Verdict::Success);
        // 429 is not in this adapter's retry list.
        assert!(matches!(
            a.classify(&answer(429, &[], "")),
            Verdict::Unknown { .. }
        ));
    }

    #[test]
    fn a_business_rule_that_fails_to_run_is_unknown() {
        let a = adapter(
            r#"
[adapters.bakery.classify]
business = [{ when = '.body.n | test("x")', event-type = "x" }]
"#,
        );
        assert!(matches!(
            a.classify(&answer(200, &[], r#"{"n":"xyz"}"#)),
            Verdict::Business { .. }
        ));
        assert_eq!(
            a.classify(&answer(200, &[], r#"{"n":"abc"}"#)),
            Verdict::Success
        );
        // `test` on a number: a jq error. The rule takes nothing, and what would have
        // been a success is unknown (a case), never a silent success.
        assert!(matches!(
            a.classify(&answer(200, &[], r#"{"n":5}"#)),
            Verdict::Unknown { class, .. } if class == "classify-error"
        ));
        // A body that is no JSON (an HTML error page, an empty 202): the rule does not
        // apply; a retry status is a retry, a 2xx a success.
        assert!(matches!(
            a.classify(&answer(503, &[], "<html>busy</html>")),
            Verdict::Retry { .. }
        ));
        assert_eq!(a.classify(&answer(202, &[], "")), Verdict::Success);
    }

    #[test]
    fn normalise_takes_out_what_varies() {
        assert_eq!(
            normalise("Order 12 for SKU 77 not found"),
            normalise("order 13 for sku 8 not found")
        );
        assert_eq!(
            normalise("Order 12 for SKU 77 not found"),
            "order # for sku # not found"
        );
        // Ids holding digits become `#` (keeping their punctuation), whitespace runs one.
        assert_eq!(
            normalise("timeout  for req-8f3a2 (id=42)"),
            "timeout for # #(=)"
        );
        assert_ne!(normalise("out of stock"), normalise("unknown sku"));
        assert_eq!(normalise(&"x".repeat(500)).chars().count(), 200);
        assert_eq!(normalise("ÄRGER 1"), "ärger #");
    }

    #[test]
    fn retry_after_in_seconds_and_as_an_http_date() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(784_111_777); // Sun, 06 Nov 1994 08:49:37 GMT
        let p = |v: &str| parse_retry_after(v, now);
        assert_eq!(p("120"), Some(Duration::from_secs(120)));
        assert_eq!(p(" 3 "), Some(Duration::from_secs(3)));
        assert_eq!(p("0"), Some(Duration::ZERO));
        assert_eq!(
            p("999999"),
            Some(Duration::from_secs(86_400)),
            "at most a day"
        );
        assert_eq!(
            p("99999999999999999999999"),
            Some(Duration::from_secs(86_400))
        );
        assert_eq!(
            p("Sun, 06 Nov 1994 08:49:47 GMT"),
            Some(Duration::from_secs(10))
        );
        assert_eq!(
            p("Sunday, 06-Nov-94 08:50:37 GMT"),
            Some(Duration::from_secs(60)),
            "RFC 850"
        );
        assert_eq!(
            p("Sun Nov  6 08:49:38 1994"),
            Some(Duration::from_secs(1)),
            "asctime"
        );
        assert_eq!(
            p("Sun, 06 Nov 1994 08:00:00 GMT"),
            Some(Duration::ZERO),
            "a date past is no delay"
        );
        for bad in [
            "",
            "-5",
            "1.5",
            "soon",
            "Sun, 06 Nov 1994 08:49:37 +0200",
            "12s",
        ] {
            assert_eq!(p(bad), None, "{bad:?}");
        }
        let a = answer(503, &[("RETRY-AFTER", "4")], "");
        assert_eq!(retry_after(&a), Some(Duration::from_secs(4)));
    }

    #[test]
    fn credential_headers_are_redacted_for_the_record() {
        let a = answer(
            200,
            &[
                ("Authorization", "Bearer s3cret"),
                ("proxy-authorization", "Basic eA=="),
                ("Cookie", "sid=1"),
                ("X-API-Key", "k1"),
                ("x-auth-token", "t"),
                ("X-Hub-Signature-256", "sha256=ab"),
                ("api_key", "k2"),
                ("x-correlation-id", "c-1"),
                ("content-type", "application/json"),
            ],
            "",
        );
        let kept = a.recordable_headers();
        for (k, v) in &kept {
            let secret = !matches!(k.as_str(), "x-correlation-id" | "content-type");
            assert_eq!(v == REDACTED, secret, "{k}: {v}");
        }
        assert_eq!(kept.len(), 9, "names are kept");
        // The answer itself (for the correlation and the reply mapping) is unchanged.
        assert_eq!(a.header("authorization"), Some("Bearer s3cret"));
    }

    #[test]
    fn cases_group_by_what_the_adapter_keeps() {
        let all = adapter("");
        let k1 = all.case_key(stage::DELIVER, "http-status", Some(500), "sku 1 broke");
        let k2 = all.case_key(stage::DELIVER, "http-status", Some(500), "sku 2 broke");
        let k3 = all.case_key(stage::DELIVER, "http-status", Some(502), "sku 2 broke");
        assert_eq!(k1.id, k2.id, "normalised messages group");
        assert_ne!(k1.id, k3.id, "statuses split by default");
        assert_eq!(k1.vendor, "bakery-inc");
        let coarse = adapter(
            r#"
[adapters.bakery.cases]
group-by = ["stage", "error-class"]
"#,
        );
        let c1 = coarse.case_key(stage::DELIVER, "http-status", Some(500), "a");
        let c3 = coarse.case_key(stage::DELIVER, "http-status", Some(502), "b");
        let c4 = coarse.case_key(stage::MAP, "http-status", Some(500), "a");
        assert_eq!(c1.id, c3.id, "status and message not kept: one case");
        assert_ne!(c1.id, c4.id);
        assert_ne!(c1.id, k1.id);
    }

    #[test]
    fn adapters_of_one_vendor_declare_one_rate_limit() {
        let text = r#"
[adapters.a]
vendor = "acme"
topic = "t.v1"
mapping = "."
rate-limit = { per-second = 5 }
writer = { kind = "http", url = "http://127.0.0.1:9/a" }

[adapters.b]
vendor = "acme"
topic = "t.v1"
mapping = "."
rate-limit = { per-second = 6 }
writer = { kind = "http", url = "http://127.0.0.1:9/b" }

[adapters.c]
vendor = "acme"
topic = "t.v1"
mapping = "."
writer = { kind = "http", url = "http://127.0.0.1:9/c" }
"#;
        let decls = crate::config::parse(
            text,
            std::path::Path::new("switchyard.toml"),
            std::path::Path::new("."),
        )
        .expect("parses");
        let errors = compile_all(&decls).expect_err("two limits for one vendor");
        let text = errors.to_string();
        assert!(text.contains("adapters.b.rate-limit"), "{text}");
        assert!(text.contains("vendor `acme`"), "{text}");
        assert_eq!(errors.0.len(), 1, "{text}");
    }
}
