//! Failure policies: what the platform does when a dependency is down.
//!
//! Written in service.toml as `on-failure`, either a policy name (every parameter at its
//! default) or a table with `policy` and the policy's parameters:
//!
//! ```toml
//! [dependencies.payments]
//! kind = "sync"
//! on-failure = { policy = "retry", attempts = 3, timeout = "2s", backoff = "100ms" }
//!
//! [dependencies.recommendations]
//! kind = "sync"
//! on-failure = "degrade"
//! ```
//!
//! The semantics of each policy (start-up and calls) are documented on [`OnFailure`] and in
//! the crate docs; this module owns their parameters and validation.

use crate::raw::{HumanDuration, RawPolicy, RawPolicyTable};
use std::time::Duration;
use switchyard_types::TopicName;

/// How a service depends on another.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum DependencyKind {
    /// It calls the other over HTTP (through the gateway) and needs the answer to serve its
    /// own request.
    Sync,
    /// It does not wait for the other: they meet through events in the journal (and calls
    /// that can be answered later, see [`OnFailure::Queue`]).
    Async,
}

impl std::fmt::Display for DependencyKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            DependencyKind::Sync => "sync",
            DependencyKind::Async => "async",
        })
    }
}

/// What the platform does while a dependency is down, at start-up (the dev runner) and on
/// calls (the gateway's east-west proxy).
///
/// "Down" means: its health check fails (`health.path`, probed by the runner), it was taken
/// down on purpose (`switchyard dev`), or a call to it fails to connect, times out or is
/// answered 502, 503 or 504. Any other answer, 500 and 4xx included, is passed back as it
/// is: a policy is about the dependency's availability, not about its errors.
///
/// At start-up a service waits for a dependency only when the dependency is `sync` and the
/// policy is `fail` or `retry` (the service cannot serve anything without it). Every other
/// combination only orders the start (see `System::start_order`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum OnFailure {
    /// The dependency is required. Start: a `sync` dependent starts only once the dependency
    /// is healthy; if it is not healthy within its `health.timeout`, the dependent is not
    /// started and the runner says why. Calls: answered at once without being forwarded,
    /// `503` problem+json with code `dependency-unavailable` naming the dependency and
    /// `Retry-After: 1`; a forwarded call that fails gets the same answer.
    Fail,
    /// The dependency is required and its failures are often brief. Start: as `fail`.
    /// Calls: each try is cut off after `timeout`; a failed try (see "down") is tried again
    /// after `backoff`, doubled after each try (never sooner than a `Retry-After`), up to
    /// `attempts` tries in all; only idempotent methods (GET, HEAD, OPTIONS, PUT, DELETE)
    /// and requests with an `Idempotency-Key` header are tried more than once. After the
    /// last try: `503` `dependency-unavailable` with the number of tries.
    Retry {
        /// Tries in all, the first included: 2 to 10 (default 3).
        attempts: u32,
        /// The limit of each try: 1 ms to 60 s (default 2 s).
        timeout: Duration,
        /// The wait before the second try, doubled after each: 0 to 10 s (default 100 ms).
        backoff: Duration,
    },
    /// The dependency is optional and a stand-in answer will do. Start: no waiting. Calls:
    /// answered at once, not forwarded, with `status`, `body` and `content-type`, plus the
    /// header `Switchyard-Fallback: <dependency>`.
    Fallback {
        /// 200 to 599 (default 200).
        status: u16,
        /// Default empty. With a JSON content type it must be JSON.
        body: String,
        /// Default `application/json`.
        content_type: String,
    },
    /// Only for `async` dependencies: the call can be carried out later. Start: no waiting.
    /// Calls: the request (method, path, query, headers, body) is appended to `topic` as a
    /// CloudEvent of type `switchyard.queued-call` keyed `<caller>-><dependency>` (so one
    /// caller's queued calls stay in order) and answered `202 Accepted` with the event's
    /// partition and offset. The platform delivers queued calls in order once the
    /// dependency is healthy again, with the retries and parking of any subscription.
    Queue {
        /// A topic declared in switchyard.toml.
        topic: TopicName,
    },
    /// The dependency is optional and the caller knows how to do without it. Start: no
    /// waiting. Calls: answered at once, not forwarded: `503` problem+json with code
    /// `dependency-degraded` and the marker header `<header>: <dependency>`, so the service
    /// sees it and serves its reduced response (a page without recommendations).
    Degrade {
        /// A header name, default `Switchyard-Degraded`.
        header: String,
    },
}

/// The policy names, in the order messages list them.
pub const POLICIES: [&str; 5] = ["fail", "retry", "fallback", "queue", "degrade"];

/// The marker header of `degrade` when none is given.
pub const DEFAULT_DEGRADE_HEADER: &str = "Switchyard-Degraded";

impl OnFailure {
    /// The policy's name as written in `on-failure`.
    pub fn name(&self) -> &'static str {
        match self {
            OnFailure::Fail => "fail",
            OnFailure::Retry { .. } => "retry",
            OnFailure::Fallback { .. } => "fallback",
            OnFailure::Queue { .. } => "queue",
            OnFailure::Degrade { .. } => "degrade",
        }
    }

    /// True when a service with this dependency waits, at start, until the dependency is
    /// healthy (and is not started if it never is).
    pub fn waits_at_start(&self, kind: DependencyKind) -> bool {
        kind == DependencyKind::Sync && matches!(self, OnFailure::Fail | OnFailure::Retry { .. })
    }
}

/// A problem with an `on-failure` value: the key below `on-failure` it is about (empty for
/// the value itself) and what is wrong.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct PolicyProblem {
    pub(crate) key: Option<&'static str>,
    pub(crate) queue_needs_async: bool,
    pub(crate) message: String,
}

impl PolicyProblem {
    fn at(key: Option<&'static str>, message: String) -> Self {
        Self {
            key,
            queue_needs_async: false,
            message,
        }
    }
}

/// The parameters each policy takes, by name.
fn parameters(policy: &str) -> &'static [&'static str] {
    match policy {
        "retry" => &["attempts", "timeout", "backoff"],
        "fallback" => &["status", "body", "content-type"],
        "queue" => &["topic"],
        "degrade" => &["header"],
        _ => &[],
    }
}

/// Checks an `on-failure` value for a dependency of `kind` and fills in the defaults. All
/// problems are returned, not only the first.
pub(crate) fn resolve(
    raw: &RawPolicy,
    kind: DependencyKind,
) -> Result<OnFailure, Vec<PolicyProblem>> {
    let empty = RawPolicyTable::default();
    let (name, params, name_key) = match raw {
        RawPolicy::Name(name) => (name.as_str(), &empty, None),
        RawPolicy::Table(t) => (t.policy.as_str(), t, Some("policy")),
    };
    if !POLICIES.contains(&name) {
        return Err(vec![PolicyProblem::at(
            name_key,
            format!(
                "unknown policy `{name}`: expected one of {}",
                POLICIES.join(", ")
            ),
        )]);
    }
    let mut problems = Vec::new();
    let allowed = parameters(name);
    for (key, present) in params.present() {
        if present && !allowed.contains(&key) {
            let takes = if allowed.is_empty() {
                "it takes no parameters".to_string()
            } else {
                format!("it takes {}", allowed.join(", "))
            };
            problems.push(PolicyProblem::at(
                Some(key),
                format!("`{key}` is not a parameter of `{name}` ({takes})"),
            ));
        }
    }
    let duration = |d: &Option<HumanDuration>, default: Duration| d.map_or(default, |d| d.0);
    let policy = match name {
        "fail" => OnFailure::Fail,
        "retry" => {
            let attempts = params.attempts.unwrap_or(3);
            if !(2..=10).contains(&attempts) {
                problems.push(PolicyProblem::at(
                    Some("attempts"),
                    format!(
                        "attempts must be 2 to 10, the first try included (got {attempts}); \
                         for a single try use `fail`"
                    ),
                ));
            }
            let timeout = duration(&params.timeout, Duration::from_secs(2));
            if timeout.is_zero() || timeout > Duration::from_secs(60) {
                problems.push(PolicyProblem::at(
                    Some("timeout"),
                    format!("timeout must be 1ms to 60s (got {timeout:?})"),
                ));
            }
            let backoff = duration(&params.backoff, Duration::from_millis(100));
            if backoff > Duration::from_secs(10) {
                problems.push(PolicyProblem::at(
                    Some("backoff"),
                    format!("backoff must be at most 10s (got {backoff:?})"),
                ));
            }
            OnFailure::Retry {
                attempts,
                timeout,
                backoff,
            }
        }
        "fallback" => {
            let status = params.status.unwrap_or(200);
            if !(200..=599).contains(&status) {
                problems.push(PolicyProblem::at(
                    Some("status"),
                    format!("status must be an HTTP status from 200 to 599 (got {status})"),
                ));
            }
            let content_type = params
                .content_type
                .clone()
                .unwrap_or_else(|| "application/json".to_string());
            let essence = switchyard_types::media_type_essence(&content_type);
            if !essence.contains('/') || essence.starts_with('/') || essence.ends_with('/') {
                problems.push(PolicyProblem::at(
                    Some("content-type"),
                    format!("content-type must be a media type like application/json (got {content_type:?})"),
                ));
            }
            let body = params.body.clone().unwrap_or_default();
            if !body.is_empty()
                && switchyard_types::is_json_media_type(&content_type)
                && let Err(e) = serde_json::from_str::<serde_json::Value>(&body)
            {
                problems.push(PolicyProblem::at(
                    Some("body"),
                    format!("body is not JSON, but content-type is {content_type} ({e})"),
                ));
            }
            OnFailure::Fallback {
                status,
                body,
                content_type,
            }
        }
        "queue" => {
            if kind == DependencyKind::Sync {
                problems.push(PolicyProblem {
                    key: name_key,
                    queue_needs_async: true,
                    message: "`queue` is only for async dependencies: a sync caller needs the \
                              answer now, a queued call is answered 202 and carried out later \
                              (make the dependency `kind = \"async\"` or choose another policy)"
                        .to_string(),
                });
            }
            match params.topic.as_deref() {
                None => {
                    problems.push(PolicyProblem::at(
                        name_key,
                        "`queue` needs `topic`: the topic queued calls are appended to \
                         (on-failure = { policy = \"queue\", topic = \"...\" })"
                            .to_string(),
                    ));
                    return Err(problems);
                }
                Some(t) => match TopicName::new(t) {
                    Ok(topic) => OnFailure::Queue { topic },
                    Err(e) => {
                        problems.push(PolicyProblem::at(Some("topic"), e.to_string()));
                        return Err(problems);
                    }
                },
            }
        }
        _ => {
            let header = params
                .header
                .clone()
                .unwrap_or_else(|| DEFAULT_DEGRADE_HEADER.to_string());
            if !is_header_name(&header) {
                problems.push(PolicyProblem::at(
                    Some("header"),
                    format!(
                        "header must be an HTTP header name (letters, digits, `-`, ...), got {header:?}"
                    ),
                ));
            }
            OnFailure::Degrade { header }
        }
    };
    if problems.is_empty() {
        Ok(policy)
    } else {
        Err(problems)
    }
}

/// An HTTP field name: one or more `tchar`s (RFC 9110 section 5.6.2).
fn is_header_name(s: &str) -> bool {
    !s.is_empty()
        && s.bytes().all(|b| {
            b.is_ascii_alphanumeric()
                || matches!(
                    b,
                    b'!' | b'#'
                        | b'$'
                        | b'%'
                        | b'&'
                        | b'\''
                        | b'*'
                        | b'+'
                        | b'-'
                        | b'.'
                        | b'^'
                        | b'_'
                        | b'`'
                        | b'|'
                        | b'~'
                )
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use DependencyKind::{Async, Sync};

    fn table(text: &str) -> RawPolicy {
        RawPolicy::Table(toml::from_str(text).unwrap())
    }

    fn problems(raw: &RawPolicy, kind: DependencyKind) -> Vec<(Option<&'static str>, String)> {
        resolve(raw, kind)
            .unwrap_err()
            .into_iter()
            .map(|p| (p.key, p.message))
            .collect()
    }

    #[test]
    fn names_alone_take_the_defaults() {
        assert_eq!(
            resolve(&RawPolicy::Name("fail".into()), Sync),
            Ok(OnFailure::Fail)
        );
        assert_eq!(
            resolve(&RawPolicy::Name("retry".into()), Sync),
            Ok(OnFailure::Retry {
                attempts: 3,
                timeout: Duration::from_secs(2),
                backoff: Duration::from_millis(100)
            })
        );
        assert_eq!(
            resolve(&RawPolicy::Name("degrade".into()), Sync),
            Ok(OnFailure::Degrade {
                header: "Switchyard-Degraded".into()
            })
        );
        assert_eq!(
            resolve(&RawPolicy::Name("fallback".into()), Async),
            Ok(OnFailure::Fallback {
                status: 200,
                body: String::new(),
                content_type: "application/json".into()
            })
        );
        let p = problems(&RawPolicy::Name("retyr".into()), Sync);
        assert_eq!(p.len(), 1);
        assert_eq!(p[0].0, None);
        assert!(p[0].1.contains("unknown policy `retyr`"), "{}", p[0].1);
        assert!(p[0].1.contains("fail, retry, fallback, queue, degrade"));
    }

    #[test]
    fn fail_takes_no_parameters() {
        let p = problems(&table("policy = \"fail\"\nattempts = 3"), Sync);
        assert_eq!(p[0].0, Some("attempts"));
        assert!(p[0].1.contains("takes no parameters"), "{}", p[0].1);
    }

    #[test]
    fn retry_checks_attempts_timeout_and_backoff() {
        assert_eq!(
            resolve(
                &table("policy = \"retry\"\nattempts = 5\ntimeout = \"500ms\"\nbackoff = \"0s\""),
                Sync
            ),
            Ok(OnFailure::Retry {
                attempts: 5,
                timeout: Duration::from_millis(500),
                backoff: Duration::ZERO
            })
        );
        let p = problems(
            &table(
                "policy = \"retry\"\nattempts = 1\ntimeout = \"2m\"\nbackoff = \"1m\"\nstatus = 200",
            ),
            Sync,
        );
        let keys: Vec<_> = p.iter().map(|(k, _)| *k).collect();
        assert_eq!(
            keys,
            [
                Some("status"),
                Some("attempts"),
                Some("timeout"),
                Some("backoff")
            ]
        );
        assert!(p[0].1.contains("not a parameter of `retry`"), "{}", p[0].1);
        assert!(p[1].1.contains("use `fail`"), "{}", p[1].1);
    }

    #[test]
    fn fallback_checks_status_media_type_and_json_body() {
        assert_eq!(
            resolve(
                &table("policy = \"fallback\"\nstatus = 200\nbody = '{\"items\": []}'"),
                Sync
            ),
            Ok(OnFailure::Fallback {
                status: 200,
                body: "{\"items\": []}".into(),
                content_type: "application/json".into()
            })
        );
        assert!(
            resolve(
                &table("policy = \"fallback\"\nbody = \"sorry\"\ncontent-type = \"text/plain\""),
                Sync
            )
            .is_ok()
        );
        let p = problems(
            &table("policy = \"fallback\"\nstatus = 99\nbody = \"{oops\""),
            Sync,
        );
        let keys: Vec<_> = p.iter().map(|(k, _)| *k).collect();
        assert_eq!(keys, [Some("status"), Some("body")]);
        let p = problems(
            &table("policy = \"fallback\"\ncontent-type = \"json\""),
            Sync,
        );
        assert_eq!(p[0].0, Some("content-type"));
    }

    #[test]
    fn queue_needs_a_topic_and_an_async_dependency() {
        assert_eq!(
            resolve(&table("policy = \"queue\"\ntopic = \"calls.v1\""), Async),
            Ok(OnFailure::Queue {
                topic: TopicName::new("calls.v1").unwrap()
            })
        );
        let errs = resolve(&table("policy = \"queue\"\ntopic = \"calls.v1\""), Sync).unwrap_err();
        assert!(errs[0].queue_needs_async);
        assert_eq!(errs[0].key, Some("policy"));
        let p = problems(&table("policy = \"queue\""), Async);
        assert!(p[0].1.contains("needs `topic`"), "{}", p[0].1);
        let p = problems(&table("policy = \"queue\"\ntopic = \"bad/name\""), Async);
        assert_eq!(p[0].0, Some("topic"));
    }

    #[test]
    fn degrade_checks_the_header_name() {
        assert_eq!(
            resolve(
                &table("policy = \"degrade\"\nheader = \"X-Degraded\""),
                Sync
            ),
            Ok(OnFailure::Degrade {
                header: "X-Degraded".into()
            })
        );
        let p = problems(
            &table("policy = \"degrade\"\nheader = \"x degraded\""),
            Sync,
        );
        assert_eq!(p[0].0, Some("header"));
    }

    #[test]
    fn only_required_sync_dependencies_are_waited_for() {
        let retry = resolve(&RawPolicy::Name("retry".into()), Sync).unwrap();
        assert!(OnFailure::Fail.waits_at_start(Sync));
        assert!(retry.waits_at_start(Sync));
        assert!(!OnFailure::Fail.waits_at_start(Async));
        let degrade = resolve(&RawPolicy::Name("degrade".into()), Sync).unwrap();
        assert!(!degrade.waits_at_start(Sync));
    }
}
