//! Upstreams: a route's targets with their weights, picked by smooth weighted round robin
//! among the healthy ones, and the active health checks that say which are healthy.
//!
//! Health lives in a [`HealthBoard`] keyed by URL and check path, outside any route table,
//! so a table swap keeps what the checks learned (a new route to a known-dead upstream does
//! not start by sending it traffic). A target starts healthy; a route without `health`
//! never marks its targets down.

use axum::http::Uri;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use switchyard_manifest::HealthCheckSpec;

/// What the checks know of one upstream.
#[derive(Debug)]
pub struct Health {
    healthy: AtomicBool,
    fails: AtomicU32,
    oks: AtomicU32,
}

impl Default for Health {
    fn default() -> Self {
        Self {
            healthy: AtomicBool::new(true),
            fails: AtomicU32::new(0),
            oks: AtomicU32::new(0),
        }
    }
}

impl Health {
    pub fn is_healthy(&self) -> bool {
        self.healthy.load(Ordering::Relaxed)
    }

    /// Records one probe's outcome under `spec`'s thresholds.
    pub fn record(&self, ok: bool, spec: &HealthCheckSpec) {
        if ok {
            self.fails.store(0, Ordering::Relaxed);
            let n = self.oks.fetch_add(1, Ordering::Relaxed) + 1;
            if n >= spec.healthy_after {
                self.healthy.store(true, Ordering::Relaxed);
            }
        } else {
            self.oks.store(0, Ordering::Relaxed);
            let n = self.fails.fetch_add(1, Ordering::Relaxed) + 1;
            if n >= spec.unhealthy_after {
                self.healthy.store(false, Ordering::Relaxed);
            }
        }
    }
}

/// Health by `(base URL, check path)`, shared by every table.
#[derive(Debug, Default)]
pub struct HealthBoard {
    entries: Mutex<HashMap<(String, String), Arc<Health>>>,
}

impl HealthBoard {
    pub fn get(&self, url: &str, path: &str) -> Arc<Health> {
        let mut m = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        m.entry((url.to_string(), path.to_string()))
            .or_default()
            .clone()
    }

    /// Forgets entries no table uses any more.
    pub fn retain(&self, keep: &[(String, String)]) {
        let mut m = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        m.retain(|k, _| keep.contains(k));
    }
}

/// One target of a route.
#[derive(Debug)]
pub struct Target {
    /// As configured: `http://host:port[/base]`.
    pub url: String,
    /// `http://host:port` parsed.
    pub authority: http::uri::Authority,
    /// The base path (no trailing `/`), prepended to forwarded paths.
    pub base: String,
    pub weight: u32,
    pub health: Option<Arc<Health>>,
}

impl Target {
    pub fn new(url: &str, weight: u32, health: Option<Arc<Health>>) -> Result<Self, String> {
        let uri: Uri = url
            .parse()
            .map_err(|e| format!("upstream {url:?} is not a URL: {e}"))?;
        let authority = uri
            .authority()
            .cloned()
            .ok_or_else(|| format!("upstream {url:?} has no host"))?;
        let base = uri.path().trim_end_matches('/').to_string();
        Ok(Self {
            url: url.to_string(),
            authority,
            base,
            weight,
            health,
        })
    }

    pub fn is_healthy(&self) -> bool {
        self.health.as_ref().is_none_or(|h| h.is_healthy())
    }
}

/// A route's targets and its schedule.
#[derive(Debug)]
pub struct Pool {
    pub targets: Vec<Target>,
    /// Target indexes in smooth weighted round-robin order (nginx's), one cycle.
    schedule: Vec<usize>,
    next: AtomicUsize,
}

impl Pool {
    pub fn new(targets: Vec<Target>) -> Self {
        let schedule = smooth_schedule(&targets.iter().map(|t| t.weight).collect::<Vec<_>>());
        Self {
            targets,
            schedule,
            next: AtomicUsize::new(0),
        }
    }

    /// The next healthy target, or `None` when none is.
    pub fn pick(&self) -> Option<&Target> {
        let n = self.schedule.len();
        if n == 0 {
            return None;
        }
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        (0..n)
            .map(|i| &self.targets[self.schedule[(start + i) % n]])
            .find(|t| t.is_healthy())
    }
}

/// One cycle of smooth weighted round robin: each step every target gains its weight, the
/// largest current wins and loses the total. Weights 5,1,1 give a,a,b,a,c,a,a.
fn smooth_schedule(weights: &[u32]) -> Vec<usize> {
    let total: i64 = weights.iter().map(|&w| i64::from(w)).sum();
    let mut current = vec![0i64; weights.len()];
    let mut out = Vec::with_capacity(total as usize);
    for _ in 0..total {
        let mut best = 0;
        for (i, &w) in weights.iter().enumerate() {
            current[i] += i64::from(w);
            if current[i] > current[best] {
                best = i;
            }
        }
        current[best] -= total;
        out.push(best);
    }
    out
}

/// One probe target: its health, URL and spec.
#[derive(Clone, Debug)]
pub struct Probe {
    pub health: Arc<Health>,
    pub url: String,
    pub spec: HealthCheckSpec,
}

/// Probes every target of the current probe list at its interval until `shutdown`.
pub async fn check_loop(
    mut probes: tokio::sync::watch::Receiver<Vec<Probe>>,
    client: prober::Client,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) {
    loop {
        let list = probes.borrow_and_update().clone();
        let mut tasks = tokio::task::JoinSet::new();
        for p in list {
            let client = client.clone();
            tasks.spawn(async move {
                let mut tick = tokio::time::interval(p.spec.interval.0);
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                loop {
                    tick.tick().await;
                    let ok = client.probe(&p.url, &p.spec.path, p.spec.timeout.0).await;
                    p.health.record(ok, &p.spec);
                }
            });
        }
        tokio::select! {
            r = probes.changed() => if r.is_err() { return },
            _ = shutdown.wait_for(|&s| s) => return,
        }
        tasks.abort_all();
    }
}

/// The health checks' HTTP client (hyper, HTTP/1.1, pooled).
pub mod prober {
    use super::*;
    use http_body_util::{BodyExt as _, Empty};

    #[derive(Clone, Debug)]
    pub struct Client {
        pub(crate) inner: hyper_util::client::legacy::Client<
            hyper_util::client::legacy::connect::HttpConnector,
            Empty<bytes::Bytes>,
        >,
    }

    impl Default for Client {
        fn default() -> Self {
            Self {
                inner: hyper_util::client::legacy::Client::builder(
                    hyper_util::rt::TokioExecutor::new(),
                )
                .build_http(),
            }
        }
    }

    impl Client {
        /// `GET url+path` answered 2xx within `timeout`.
        pub async fn probe(&self, url: &str, path: &str, timeout: Duration) -> bool {
            let Ok(uri) = format!("{}{path}", url.trim_end_matches('/')).parse::<Uri>() else {
                return false;
            };
            let req = match http::Request::get(uri).body(Empty::new()) {
                Ok(r) => r,
                Err(_) => return false,
            };
            let fut = async {
                let resp = self.inner.request(req).await.ok()?;
                let ok = resp.status().is_success();
                resp.into_body().collect().await.ok()?;
                Some(ok)
            };
            matches!(tokio::time::timeout(timeout, fut).await, Ok(Some(true)))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn smooth_round_robin_spreads_the_heavy_target() {
        assert_eq!(smooth_schedule(&[5, 1, 1]), [0, 0, 1, 0, 2, 0, 0]);
        assert_eq!(smooth_schedule(&[1, 1]), [0, 1]);
        assert_eq!(smooth_schedule(&[0, 2]), [1, 1]);
    }

    #[test]
    fn pick_skips_unhealthy_targets_and_fails_when_none_is_left() {
        let spec = HealthCheckSpec {
            path: "/h".into(),
            interval: switchyard_manifest::Millis(Duration::from_secs(1)),
            timeout: switchyard_manifest::Millis(Duration::from_secs(1)),
            unhealthy_after: 2,
            healthy_after: 1,
        };
        let ha = Arc::new(Health::default());
        let hb = Arc::new(Health::default());
        let pool = Pool::new(vec![
            Target::new("http://127.0.0.1:1", 1, Some(ha.clone())).unwrap(),
            Target::new("http://127.0.0.1:2/base/", 1, Some(hb.clone())).unwrap(),
        ]);
        assert_eq!(pool.targets[1].base, "/base");
        let picks: Vec<&str> = (0..4).map(|_| pool.pick().unwrap().url.as_str()).collect();
        assert_eq!(picks.iter().filter(|u| u.ends_with(":1")).count(), 2);
        ha.record(false, &spec);
        assert!(ha.is_healthy(), "one failure is not enough");
        ha.record(false, &spec);
        assert!(!ha.is_healthy());
        assert!((0..4).all(|_| pool.pick().unwrap().url.ends_with("/base/")));
        hb.record(false, &spec);
        hb.record(false, &spec);
        assert!(pool.pick().is_none());
        ha.record(true, &spec);
        assert!(pool.pick().unwrap().url.ends_with(":1"));
    }
}
