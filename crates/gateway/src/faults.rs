//! Fault injection, a development tool (`switchyard chaos`): a service taken `down`, made
//! `slow` or `flaky` on purpose, so a team can watch its failure policies work.
//!
//! A fault is set per service, through the admin API (`/v1/gateway/faults`), and expires
//! (`for`, default [`DEFAULT_FOR`]). It is acted out wherever the platform talks to the
//! service: service-to-service calls (so the caller's `on-failure` policy answers), gateway
//! routes and composed parts whose upstream is the service, and push deliveries of
//! subscriptions whose endpoint is the service's address (the bus asks through its
//! `PushFaults` hook, which the CLI connects to [`Faults::for_url`]).
//!
//! | kind | default | a request meets |
//! |---|---|---|
//! | `down` | | no answer (as a refused connection), or `status` when given |
//! | `slow` | `delay` 500ms, `rate` 1 | `delay` more before it goes on (a fraction `rate` of requests) |
//! | `flaky` | `rate` 0.5 | for a fraction `rate` of requests: no answer, or `status` |
//!
//! Injected failures do not count toward a service's circuit (a `flaky` fault shows its own
//! rate, and `clear` takes effect at once). Faults live in the memory of one process: they
//! are not in the journal and each `switchyard serve` instance has its own.

use crate::service::lock;
use arc_swap::ArcSwap;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};
use switchyard_manifest::Millis;

/// How long a fault lasts when `for` is not given.
pub const DEFAULT_FOR: Duration = Duration::from_secs(600);
/// The longest a fault may last.
pub const MAX_FOR: Duration = Duration::from_secs(86_400);
/// The longest delay.
pub const MAX_DELAY: Duration = Duration::from_secs(300);
/// `slow`'s delay when none is given.
pub const DEFAULT_SLOW_DELAY: Duration = Duration::from_millis(500);
/// `flaky`'s rate when none is given.
pub const DEFAULT_FLAKY_RATE: f64 = 0.5;

/// What a fault does.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum FaultKind {
    Down,
    Slow,
    Flaky,
}

impl FaultKind {
    pub fn as_str(self) -> &'static str {
        match self {
            FaultKind::Down => "down",
            FaultKind::Slow => "slow",
            FaultKind::Flaky => "flaky",
        }
    }
}

/// A fault as asked for (`PUT /v1/gateway/faults/{service}`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct FaultSpec {
    pub kind: FaultKind,
    /// `slow`: added before the request goes on (1ms to 5m).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delay: Option<Millis>,
    /// `slow`, `flaky`: the fraction of requests it applies to (above 0, at most 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate: Option<f64>,
    /// `down`, `flaky`: the status the service seems to answer (400 to 599); without it, it
    /// does not answer at all.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
    /// How long the fault lasts (1s to 24h; default 10m).
    #[serde(default, rename = "for", skip_serializing_if = "Option::is_none")]
    pub lasts: Option<Millis>,
}

impl FaultSpec {
    /// The first problem, as (field, message); `Ok` with the defaults filled in.
    pub fn checked(mut self) -> Result<Self, (&'static str, String)> {
        let kind = self.kind.as_str();
        match self.kind {
            FaultKind::Down => {
                if self.rate.is_some() {
                    return Err((
                        "rate",
                        "rate does not apply to `down`: it fails every request (use `flaky`)"
                            .into(),
                    ));
                }
                if self.delay.is_some() {
                    return Err((
                        "delay",
                        "delay does not apply to `down` (use `slow`)".into(),
                    ));
                }
            }
            FaultKind::Slow => {
                if self.status.is_some() {
                    return Err((
                        "status",
                        "status does not apply to `slow`: its requests go on (use `flaky`)".into(),
                    ));
                }
                self.delay = Some(self.delay.unwrap_or(Millis(DEFAULT_SLOW_DELAY)));
                self.rate = Some(self.rate.unwrap_or(1.0));
            }
            FaultKind::Flaky => {
                if self.delay.is_some() {
                    return Err((
                        "delay",
                        "delay does not apply to `flaky` (use `slow`)".into(),
                    ));
                }
                self.rate = Some(self.rate.unwrap_or(DEFAULT_FLAKY_RATE));
            }
        }
        if let Some(d) = self.delay
            && (d.0 < Duration::from_millis(1) || d.0 > MAX_DELAY)
        {
            return Err(("delay", format!("{kind}: delay must be 1ms to 5m")));
        }
        if let Some(r) = self.rate
            && !(r > 0.0 && r <= 1.0)
        {
            return Err((
                "rate",
                format!("{kind}: rate must be above 0 and at most 1 (got {r})"),
            ));
        }
        if let Some(s) = self.status
            && !(400..=599).contains(&s)
        {
            return Err((
                "status",
                format!("{kind}: status must be 400 to 599 (got {s})"),
            ));
        }
        let lasts = self.lasts.unwrap_or(Millis(DEFAULT_FOR));
        if lasts.0 < Duration::from_secs(1) || lasts.0 > MAX_FOR {
            return Err(("for", format!("{kind}: for must be 1s to 24h")));
        }
        self.lasts = Some(lasts);
        Ok(self)
    }
}

/// One fault in force.
#[derive(Debug)]
pub struct Fault {
    pub service: String,
    /// Checked, with its defaults.
    pub spec: FaultSpec,
    pub until: Instant,
    pub until_wall: SystemTime,
    /// Requests it delayed or failed.
    pub injected: AtomicU64,
}

/// What one request meets.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Injection {
    pub kind: FaultKind,
    /// Waited before anything else.
    pub delay: Duration,
    /// `None`: the request goes on (after the delay). `Some(None)`: no answer.
    /// `Some(Some(s))`: the service seems to answer `s`.
    pub fail: Option<Option<u16>>,
}

impl Injection {
    /// How this reads in an error: `taken down by \`switchyard chaos down\``.
    pub fn describe(&self) -> String {
        let kind = self.kind.as_str();
        match self.fail {
            Some(None) => format!("did not answer (fault injected: `switchyard chaos {kind}`)"),
            Some(Some(s)) => format!("answered {s} (fault injected: `switchyard chaos {kind}`)"),
            None => format!(
                "was slowed by {} ms (fault injected: `switchyard chaos {kind}`)",
                self.delay.as_millis()
            ),
        }
    }
}

/// What [`Injection::play`] leaves of a request.
#[derive(Debug, PartialEq, Eq)]
pub enum Played {
    /// Go on, with this much of the timeout left.
    Go(Duration),
    /// The delay used the whole timeout.
    TimedOut,
    /// No answer.
    NoAnswer,
    /// The service seems to answer this.
    Status(u16),
}

impl Injection {
    /// Waits the delay (at most `timeout`) and says what the request meets then.
    pub async fn play(&self, timeout: Duration) -> Played {
        if self.delay >= timeout {
            tokio::time::sleep(timeout).await;
            return Played::TimedOut;
        }
        if !self.delay.is_zero() {
            tokio::time::sleep(self.delay).await;
        }
        match self.fail {
            None => Played::Go(timeout - self.delay),
            Some(None) => Played::NoAnswer,
            Some(Some(s)) => Played::Status(s),
        }
    }
}

/// The header that marks an answer a fault made up.
pub const FAULT_HEADER: &str = "switchyard-fault";

/// For a route or a composed part: waits the delay, then `Ok` with what is left of
/// `timeout`, or the answer the fault makes (502 as no answer, 504 as a timeout, or the
/// fault's status), marked with [`FAULT_HEADER`].
pub(crate) async fn answer(
    i: &Injection,
    timeout: Duration,
    what: &str,
) -> Result<Duration, axum::response::Response> {
    use crate::proxy::Failure;
    use axum::response::IntoResponse as _;
    let injected = format!("fault injected: `switchyard chaos {}`", i.kind.as_str());
    let problem = match i.play(timeout).await {
        Played::Go(rest) => return Ok(rest),
        Played::TimedOut => Failure::Timeout(timeout).problem(what),
        Played::NoAnswer => Failure::Unavailable(injected).problem(what),
        Played::Status(s) => crate::problem::Problem::new(
            http::StatusCode::from_u16(s).unwrap_or(http::StatusCode::SERVICE_UNAVAILABLE),
            "fault-injected",
            format!("{what} {}", i.describe()),
        ),
    };
    Err(problem
        .with("fault", i.kind.as_str())
        .header(FAULT_HEADER, i.kind.as_str())
        .into_response())
}

/// The fault table. Cheap to clone; the clones share it. One per process, handed to each
/// gateway and, through the CLI, to the bus.
#[derive(Clone, Default)]
pub struct Faults {
    inner: Arc<Shared>,
}

#[derive(Default)]
struct Shared {
    /// Whether any fault was set and not yet cleared (requests skip the rest when not).
    any: AtomicBool,
    by_service: ArcSwap<BTreeMap<String, Arc<Fault>>>,
    /// Service by the authority (`host:port`) of its address.
    by_authority: ArcSwap<BTreeMap<String, String>>,
    /// One change at a time.
    writer: Mutex<()>,
}

impl std::fmt::Debug for Faults {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Faults")
            .field("faults", &self.inner.by_service.load().len())
            .finish()
    }
}

/// `http://host:port/path` -> `host:port`.
fn authority(url: &str) -> Option<&str> {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    rest.split(['/', '?', '#']).next().filter(|a| !a.is_empty())
}

impl Faults {
    /// Where the services listen (their faults apply to pushes to these addresses).
    pub fn set_services(&self, services: &crate::table::Services) {
        let map = services
            .iter()
            .flat_map(|(name, urls)| {
                urls.iter()
                    .filter_map(|u| authority(u))
                    .map(|a| (a.to_ascii_lowercase(), name.clone()))
            })
            .collect();
        self.inner.by_authority.store(Arc::new(map));
    }

    /// Sets (or replaces) the fault of `service`.
    pub fn set(
        &self,
        service: &str,
        spec: FaultSpec,
    ) -> Result<Arc<Fault>, (&'static str, String)> {
        let spec = spec.checked()?;
        let lasts = spec.lasts.map_or(DEFAULT_FOR, |l| l.0);
        let fault = Arc::new(Fault {
            service: service.to_string(),
            spec,
            until: Instant::now() + lasts,
            until_wall: SystemTime::now() + lasts,
            injected: AtomicU64::new(0),
        });
        let _one = lock(&self.inner.writer);
        let mut map = (**self.inner.by_service.load()).clone();
        map.retain(|_, f| f.until > Instant::now());
        map.insert(service.to_string(), fault.clone());
        self.inner.by_service.store(Arc::new(map));
        self.inner.any.store(true, Ordering::Release);
        Ok(fault)
    }

    /// Clears the fault of `service`, or every fault; how many were in force.
    pub fn clear(&self, service: Option<&str>) -> usize {
        let _one = lock(&self.inner.writer);
        let mut map = (**self.inner.by_service.load()).clone();
        map.retain(|_, f| f.until > Instant::now());
        let cleared = match service {
            Some(s) => usize::from(map.remove(s).is_some()),
            None => std::mem::take(&mut map).len(),
        };
        self.inner.any.store(!map.is_empty(), Ordering::Release);
        self.inner.by_service.store(Arc::new(map));
        cleared
    }

    /// The faults in force.
    pub fn list(&self) -> Vec<Arc<Fault>> {
        let now = Instant::now();
        self.inner
            .by_service
            .load()
            .values()
            .filter(|f| f.until > now)
            .cloned()
            .collect()
    }

    /// What a request to `service` meets now, if a fault is in force.
    pub fn for_service(&self, service: &str) -> Option<Injection> {
        if !self.inner.any.load(Ordering::Acquire) {
            return None;
        }
        let map = self.inner.by_service.load();
        let fault = map.get(service)?;
        if fault.until <= Instant::now() {
            return None;
        }
        let spec = &fault.spec;
        let hit = || {
            spec.rate
                .is_none_or(|r| r >= 1.0 || rand::random::<f64>() < r)
        };
        let injection = match spec.kind {
            FaultKind::Down => Injection {
                kind: spec.kind,
                delay: Duration::ZERO,
                fail: Some(spec.status),
            },
            FaultKind::Slow if hit() => Injection {
                kind: spec.kind,
                delay: spec.delay.map_or(DEFAULT_SLOW_DELAY, |d| d.0),
                fail: None,
            },
            FaultKind::Flaky if hit() => Injection {
                kind: spec.kind,
                delay: Duration::ZERO,
                fail: Some(spec.status),
            },
            _ => return None,
        };
        fault.injected.fetch_add(1, Ordering::Relaxed);
        Some(injection)
    }

    /// What a request to `url` meets now: the fault of the service listening there. With
    /// the service's name.
    pub fn for_url(&self, url: &str) -> Option<(String, Injection)> {
        if !self.inner.any.load(Ordering::Acquire) {
            return None;
        }
        let a = authority(url)?.to_ascii_lowercase();
        let service = self.inner.by_authority.load().get(&a)?.clone();
        let i = self.for_service(&service)?;
        Some((service, i))
    }
}

/// A fault as the admin API shows it.
pub fn view(f: &Fault) -> serde_json::Value {
    let left = f.until.saturating_duration_since(Instant::now());
    let until_ms = f
        .until_wall
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    let mut v = serde_json::to_value(&f.spec).unwrap_or_default();
    v["service"] = serde_json::json!(f.service);
    v["expires-in-ms"] = serde_json::json!(left.as_millis() as u64);
    v["expires-at-ms"] = serde_json::json!(until_ms);
    v["injected"] = serde_json::json!(f.injected.load(Ordering::Relaxed));
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(json: serde_json::Value) -> Result<FaultSpec, (&'static str, String)> {
        serde_json::from_value::<FaultSpec>(json)
            .expect("parses")
            .checked()
    }

    #[test]
    fn bad_faults_name_their_field() {
        use serde_json::json;
        for (body, field) in [
            (json!({"kind": "down", "rate": 0.5}), "rate"),
            (json!({"kind": "down", "delay": "1s"}), "delay"),
            (json!({"kind": "slow", "status": 503}), "status"),
            (json!({"kind": "slow", "delay": "10m"}), "delay"),
            (json!({"kind": "flaky", "rate": 0}), "rate"),
            (json!({"kind": "flaky", "rate": 1.5}), "rate"),
            (json!({"kind": "flaky", "status": 200}), "status"),
            (json!({"kind": "down", "for": "2d"}), "for"),
            (json!({"kind": "down", "for": "10ms"}), "for"),
        ] {
            assert_eq!(spec(body.clone()).map(drop).unwrap_err().0, field, "{body}");
        }
        let s = spec(json!({"kind": "slow"})).expect("good");
        assert_eq!(s.delay, Some(Millis(DEFAULT_SLOW_DELAY)));
        assert_eq!(s.lasts, Some(Millis(DEFAULT_FOR)));
        assert!(serde_json::from_value::<FaultSpec>(json!({"kind": "gone"})).is_err());
        assert!(serde_json::from_value::<FaultSpec>(json!({"kind": "down", "x": 1})).is_err());
    }

    #[test]
    fn faults_apply_by_service_and_address_and_clear() {
        let f = Faults::default();
        let mut services = crate::table::Services::new();
        services.insert("orders".into(), vec!["http://127.0.0.1:9001".into()]);
        f.set_services(&services);
        assert_eq!(f.for_service("orders"), None);
        let down = FaultSpec {
            kind: FaultKind::Down,
            delay: None,
            rate: None,
            status: None,
            lasts: None,
        };
        f.set("orders", down).expect("good");
        assert_eq!(f.for_service("orders").and_then(|i| i.fail), Some(None));
        assert_eq!(f.for_service("payments"), None);
        let (s, _) = f
            .for_url("http://127.0.0.1:9001/events")
            .expect("by address");
        assert_eq!(s, "orders");
        assert!(f.for_url("http://127.0.0.1:9002/events").is_none());
        assert_eq!(f.list().len(), 1);
        assert_eq!(f.clear(Some("orders")), 1);
        assert_eq!(f.for_service("orders"), None);
        assert_eq!(f.clear(None), 0);
    }
}
