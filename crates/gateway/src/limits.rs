//! Rate limits and quotas of routes, per consumer or per route.
//!
//! The *consumer* of a request is the user id of its JWT (`user:<sub>`), the name of its API
//! key (`key:<name>`), or, on a route without auth, the client's IP address (`ip:<addr>`, the
//! connection's peer: `X-Forwarded-For` is not trusted, or a client would pick its own
//! budget). A route's `by = "route"` gives all consumers one budget.
//!
//! **Rates** are GCRA (governor's keyed limiter, one per route, kept in a [`RateBoard`]
//! outside the route tables so a table swap keeps every bucket; a route whose rate changes
//! starts with fresh buckets). Nothing is stored: a restart forgets the buckets, which
//! refill within one `per` anyway.
//!
//! **Quotas** (per UTC day and UTC calendar month) are counters in the store
//! (`Store::reserve_quota`, key `gateway/<route>/<day|month>/<consumer>`), so they survive
//! restarts and are shared by the instances of one store. A request does not write the store:
//! the gateway reserves a block (a hundredth of the limit, 1 to 1000) and spends it in memory;
//! when it is spent it reserves the next. The store never grants past the limit, so no
//! instance, crash or race lets more requests through than the quota; a crash forgets at most
//! the unspent part of a block. Blocks idle for a minute, and every block at shutdown, are
//! given back. A store that cannot be reached fails closed: 503 `quota-unavailable`.
//!
//! Every answer of a limited route carries the IETF `RateLimit-Limit`, `RateLimit-Remaining`
//! and `RateLimit-Reset` (seconds until the budget is whole again) of the budget closest to
//! running out; a refusal is 429 problem+json (`rate-limited`, `quota-exceeded`) with
//! `Retry-After`.

use crate::problem::Problem;
use crate::service::lock;
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use governor::clock::{Clock as _, DefaultClock};
use governor::middleware::StateInformationMiddleware;
use governor::state::keyed::DefaultKeyedStateStore;
use governor::{Quota, RateLimiter};
use std::collections::{HashMap, HashSet};
use std::num::NonZeroU32;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime};
use switchyard_manifest::{LimitBy, QuotaSpec, RateLimitSpec};
use switchyard_store::Store;

const RATELIMIT_LIMIT: HeaderName = HeaderName::from_static("ratelimit-limit");
const RATELIMIT_REMAINING: HeaderName = HeaderName::from_static("ratelimit-remaining");
const RATELIMIT_RESET: HeaderName = HeaderName::from_static("ratelimit-reset");

/// What is left of one budget, for the `RateLimit-*` headers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Budget {
    pub limit: u64,
    pub remaining: u64,
    /// Until the budget is whole again.
    pub reset: Duration,
}

impl Budget {
    /// The `RateLimit-*` headers.
    pub fn headers(&self) -> [(HeaderName, HeaderValue); 3] {
        [
            (RATELIMIT_LIMIT, HeaderValue::from(self.limit)),
            (RATELIMIT_REMAINING, HeaderValue::from(self.remaining)),
            (RATELIMIT_RESET, HeaderValue::from(ceil_secs(self.reset))),
        ]
    }

    /// Writes the headers into `h`.
    pub fn apply(&self, h: &mut HeaderMap) {
        for (n, v) in self.headers() {
            h.insert(n, v);
        }
    }
}

/// Whole seconds, rounded up.
fn ceil_secs(d: Duration) -> u64 {
    d.as_secs() + u64::from(d.subsec_nanos() > 0)
}

type Limiter =
    RateLimiter<String, DefaultKeyedStateStore<String>, DefaultClock, StateInformationMiddleware>;

/// One route's rate limiter.
pub struct RouteRate {
    spec: RateLimitSpec,
    limiter: Limiter,
    interval: Duration,
    /// One check at a time. governor reads the clock before its compare-and-swap, so of two
    /// concurrent admissions the one that read the clock first may commit second and then
    /// report one fewer `RateLimit-Remaining` than it left (seen as 0, 1, 1, 3 for a burst
    /// of 4). Held for a map lookup and a CAS: well under a microsecond.
    serial: std::sync::Mutex<()>,
}

impl std::fmt::Debug for RouteRate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RouteRate")
            .field("spec", &self.spec)
            .finish_non_exhaustive()
    }
}

impl RouteRate {
    fn new(spec: &RateLimitSpec) -> Result<Self, String> {
        let requests = spec.requests.max(1);
        let interval = spec.per.0 / requests;
        let burst = NonZeroU32::new(spec.burst())
            .ok_or_else(|| "rate-limit.burst: must be at least 1".to_string())?;
        let quota = Quota::with_period(interval)
            .ok_or_else(|| "rate-limit: `per / requests` is under a nanosecond".to_string())?
            .allow_burst(burst);
        Ok(Self {
            spec: spec.clone(),
            limiter: RateLimiter::keyed(quota).with_middleware::<StateInformationMiddleware>(),
            interval,
            serial: std::sync::Mutex::new(()),
        })
    }

    /// Takes one request of `consumer`'s bucket: what is left, or how long to wait.
    fn check(&self, consumer: &str) -> Result<Budget, (Budget, Duration)> {
        let key = match self.spec.by {
            LimitBy::Consumer => consumer.to_string(),
            LimitBy::Route => String::new(),
        };
        let burst = u64::from(self.spec.burst());
        let _one = self.serial.lock().unwrap_or_else(|e| e.into_inner());
        match self.limiter.check_key(&key) {
            Ok(snapshot) => {
                let remaining = u64::from(snapshot.remaining_burst_capacity());
                Ok(Budget {
                    limit: burst,
                    remaining,
                    reset: self.interval * u32::try_from(burst - remaining).unwrap_or(u32::MAX),
                })
            }
            Err(not_until) => {
                let wait = not_until.wait_time_from(self.limiter.clock().now());
                let full = wait + self.interval * u32::try_from(burst - 1).unwrap_or(u32::MAX);
                Err((
                    Budget {
                        limit: burst,
                        remaining: 0,
                        reset: full,
                    },
                    wait,
                ))
            }
        }
    }
}

/// Every route's rate limiter, by route name, outside the tables.
#[derive(Debug, Default)]
pub struct RateBoard {
    by_route: std::sync::Mutex<HashMap<String, Arc<RouteRate>>>,
}

impl RateBoard {
    /// The limiter of `route` for `spec`: the current one when its spec is the same, else a
    /// new one (fresh buckets).
    pub fn get(&self, route: &str, spec: &RateLimitSpec) -> Result<Arc<RouteRate>, String> {
        let mut m = lock(&self.by_route);
        if let Some(r) = m.get(route)
            && r.spec == *spec
        {
            return Ok(r.clone());
        }
        let r = Arc::new(RouteRate::new(spec)?);
        m.insert(route.to_string(), r.clone());
        Ok(r)
    }

    /// Forgets the limiters of routes no longer in the table.
    pub fn retain(&self, routes: &HashSet<&str>) {
        lock(&self.by_route).retain(|name, _| routes.contains(name.as_str()));
    }

    /// Drops the buckets that are full again (memory stays bounded by recent consumers).
    fn sweep(&self) {
        let limiters: Vec<Arc<RouteRate>> = lock(&self.by_route).values().cloned().collect();
        for r in limiters {
            r.limiter.retain_recent();
            r.limiter.shrink_to_fit();
        }
    }
}

/// A quota window.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Window {
    Day,
    Month,
}

impl Window {
    fn name(self) -> &'static str {
        match self {
            Window::Day => "day",
            Window::Month => "month",
        }
    }

    /// The window holding `now`: start and end, Unix milliseconds (UTC).
    fn bounds(self, now: SystemTime) -> (i64, i64) {
        const DAY_MS: i64 = 86_400_000;
        let ms = now
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
            .unwrap_or(0);
        let day_start = ms.div_euclid(DAY_MS) * DAY_MS;
        match self {
            Window::Day => (day_start, day_start + DAY_MS),
            Window::Month => {
                let date = time::OffsetDateTime::from_unix_timestamp(day_start / 1000)
                    .map(|t| t.date())
                    .unwrap_or(time::Date::MIN);
                let first = date.replace_day(1).unwrap_or(date);
                let next = first
                    .checked_add(time::Duration::days(32))
                    .and_then(|d| d.replace_day(1).ok())
                    .unwrap_or(first);
                let ms_of = |d: time::Date| d.midnight().assume_utc().unix_timestamp() * 1000;
                (ms_of(first), ms_of(next))
            }
        }
    }
}

/// One counter's block in memory.
#[derive(Debug)]
struct Counter {
    key: String,
    start: i64,
    /// Units reserved in the store and not spent yet.
    left: u64,
    /// The store's `used` after this instance's last reservation.
    used: u64,
    last: Instant,
    /// When the store last granted nothing, under which limit: for [`SPENT_RECHECK`] the
    /// store is not asked again (a spent consumer's requests cost it nothing).
    spent: Option<(Instant, u64)>,
    /// Taken out of the map: whoever still holds it looks again.
    retired: bool,
}

/// How long a spent quota is answered from memory before the store is asked again (another
/// instance may have given units back, the limit may have been raised).
const SPENT_RECHECK: Duration = Duration::from_secs(5);

/// Why a quota refused.
enum Refusal {
    Spent(Budget),
    Store(String),
}

/// The quota counters in memory, over the store.
pub struct Quotas {
    store: Option<Arc<dyn Store>>,
    counters: std::sync::Mutex<HashMap<String, Arc<tokio::sync::Mutex<Counter>>>>,
}

impl std::fmt::Debug for Quotas {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Quotas")
            .field("store", &self.store.is_some())
            .finish_non_exhaustive()
    }
}

/// The store key of a route's counter: `gateway/<route>/<day|month>/<consumer>`; a consumer
/// that is long or holds control characters is hashed.
pub fn quota_key(route: &str, window: &str, consumer: &str) -> String {
    if consumer.len() <= 256 && !consumer.chars().any(char::is_control) {
        format!("gateway/{route}/{window}/{consumer}")
    } else {
        let h = xxhash_rust::xxh3::xxh3_128(consumer.as_bytes());
        format!("gateway/{route}/{window}/xxh3:{h:032x}")
    }
}

impl Quotas {
    pub fn new(store: Option<Arc<dyn Store>>) -> Self {
        Self {
            store,
            counters: Default::default(),
        }
    }

    pub fn enabled(&self) -> bool {
        self.store.is_some()
    }

    /// Spends one unit of `consumer`'s `window` counter of `route` under `limit`.
    async fn take(
        &self,
        route: &str,
        window: Window,
        consumer: &str,
        limit: u64,
        now: SystemTime,
    ) -> Result<Budget, Refusal> {
        let Some(store) = &self.store else {
            return Err(Refusal::Store("no store is configured".into()));
        };
        let (start, end) = window.bounds(now);
        let key = quota_key(route, window.name(), consumer);
        let until_end = || {
            Duration::from_millis(
                u64::try_from(
                    end.saturating_sub(
                        now.duration_since(SystemTime::UNIX_EPOCH)
                            .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
                            .unwrap_or(0),
                    ),
                )
                .unwrap_or(0),
            )
        };
        loop {
            let counter = lock(&self.counters)
                .entry(key.clone())
                .or_insert_with(|| {
                    Arc::new(tokio::sync::Mutex::new(Counter {
                        key: key.clone(),
                        start,
                        left: 0,
                        used: 0,
                        last: Instant::now(),
                        spent: None,
                        retired: false,
                    }))
                })
                .clone();
            let mut c = counter.lock().await;
            if c.retired {
                continue;
            }
            c.last = Instant::now();
            if c.start != start {
                // A new window: what was left of the old one is of no use.
                c.start = start;
                c.left = 0;
                c.used = 0;
                c.spent = None;
            }
            if c.left == 0
                && c.spent
                    .is_some_and(|(at, l)| l == limit && at.elapsed() < SPENT_RECHECK)
            {
                return Err(Refusal::Spent(Budget {
                    limit,
                    remaining: 0,
                    reset: until_end(),
                }));
            }
            if c.left == 0 {
                let block = (limit / 100).clamp(1, 1000);
                let g = store
                    .reserve_quota(&key, start, end, limit, block)
                    .await
                    .map_err(|e| Refusal::Store(e.to_string()))?;
                c.used = g.used;
                c.left = g.granted;
                c.spent = (g.granted == 0).then(|| (Instant::now(), limit));
                if c.left == 0 {
                    let reset = until_end();
                    return Err(Refusal::Spent(Budget {
                        limit,
                        remaining: 0,
                        reset,
                    }));
                }
            }
            c.left -= 1;
            return Ok(Budget {
                limit,
                remaining: limit.saturating_sub(c.used) + c.left,
                reset: until_end(),
            });
        }
    }

    /// Puts back one unit taken by [`Quotas::take`] (the request was refused by another
    /// budget after all).
    async fn put_back(&self, route: &str, window: Window, consumer: &str, now: SystemTime) {
        let key = quota_key(route, window.name(), consumer);
        let counter = lock(&self.counters).get(&key).cloned();
        if let Some(counter) = counter {
            let mut c = counter.lock().await;
            if !c.retired && c.start == window.bounds(now).0 {
                c.left += 1;
            }
        }
    }

    /// The store's counters of `route`.
    pub async fn usage(&self, route: &str) -> Result<Vec<switchyard_store::QuotaUsage>, String> {
        let Some(store) = &self.store else {
            return Err("this gateway has no store to count quotas in".into());
        };
        store
            .quotas(&format!("gateway/{route}/"))
            .await
            .map_err(|e| e.to_string())
    }

    /// Gives back the unspent units of counters idle for `idle` (all of them with zero) and
    /// forgets those counters.
    pub async fn release_idle(&self, idle: Duration) {
        let Some(store) = &self.store else { return };
        let candidates: Vec<Arc<tokio::sync::Mutex<Counter>>> =
            lock(&self.counters).values().cloned().collect();
        for counter in candidates {
            let mut c = counter.lock().await;
            if c.retired || c.last.elapsed() < idle {
                continue;
            }
            c.retired = true;
            lock(&self.counters).remove(&c.key);
            if c.left > 0 {
                if let Err(e) = store.release_quota(&c.key, c.start, c.left).await {
                    tracing::warn!("gateway: giving back quota units of {}: {e}", c.key);
                }
                c.left = 0;
            }
        }
    }
}

/// Counters of refusals, for the metrics.
#[derive(Debug, Default)]
pub struct LimitStats {
    pub rate_limited: AtomicU64,
    pub quota_exceeded: AtomicU64,
    pub quota_unavailable: AtomicU64,
}

/// Checks `consumer`'s budgets on a route: the budget to report, or the refusal.
pub(crate) async fn admit(
    route: &crate::table::Route,
    quotas: &Quotas,
    stats: &LimitStats,
    consumer: &str,
) -> Result<Option<Budget>, Problem> {
    let mut report: Option<Budget> = None;
    let mut keep = |b: Budget| {
        if report.is_none_or(|r| b.remaining < r.remaining) {
            report = Some(b);
        }
    };
    if let Some(rate) = &route.rate {
        match rate.check(consumer) {
            Ok(b) => keep(b),
            Err((b, wait)) => {
                stats.rate_limited.fetch_add(1, Ordering::Relaxed);
                let spec = &rate.spec;
                return Err(too_many(
                    "rate-limited",
                    format!(
                        "{} over the rate of route {} ({} per {}, burst {})",
                        whose(spec.by, consumer),
                        route.spec.name,
                        spec.requests,
                        humantime::format_duration(spec.per.0),
                        spec.burst()
                    ),
                    &b,
                    wait,
                ));
            }
        }
    }
    if let Some(q) = &route.spec.quota {
        let now = SystemTime::now();
        let who = match q.by {
            LimitBy::Consumer => consumer,
            LimitBy::Route => "*",
        };
        let mut taken = Vec::new();
        for (window, limit) in windows(q) {
            match quotas.take(&route.spec.name, window, who, limit, now).await {
                Ok(b) => {
                    keep(b);
                    taken.push(window);
                }
                Err(refusal) => {
                    for w in taken {
                        quotas.put_back(&route.spec.name, w, who, now).await;
                    }
                    return Err(match refusal {
                        Refusal::Spent(b) => {
                            stats.quota_exceeded.fetch_add(1, Ordering::Relaxed);
                            too_many(
                                "quota-exceeded",
                                format!(
                                    "{} used the {} quota of route {} ({limit} per {})",
                                    whose(q.by, consumer),
                                    match window {
                                        Window::Day => "daily",
                                        Window::Month => "monthly",
                                    },
                                    route.spec.name,
                                    match window {
                                        Window::Day => "UTC day",
                                        Window::Month => "UTC month",
                                    },
                                ),
                                &b,
                                b.reset,
                            )
                        }
                        Refusal::Store(e) => {
                            stats.quota_unavailable.fetch_add(1, Ordering::Relaxed);
                            Problem::new(
                                StatusCode::SERVICE_UNAVAILABLE,
                                "quota-unavailable",
                                format!(
                                    "the quota of route {} cannot be counted: {e}",
                                    route.spec.name
                                ),
                            )
                            .header("retry-after", "1")
                        }
                    });
                }
            }
        }
    }
    Ok(report)
}

fn windows(q: &QuotaSpec) -> impl Iterator<Item = (Window, u64)> {
    [(Window::Day, q.daily), (Window::Month, q.monthly)]
        .into_iter()
        .filter_map(|(w, l)| Some((w, l?)))
}

fn whose(by: LimitBy, consumer: &str) -> String {
    match by {
        LimitBy::Consumer => format!("consumer {consumer} is"),
        LimitBy::Route => "the route's consumers together are".to_string(),
    }
}

fn too_many(code: &'static str, detail: String, b: &Budget, wait: Duration) -> Problem {
    let mut p = Problem::new(StatusCode::TOO_MANY_REQUESTS, code, detail)
        .with("retry-after-seconds", ceil_secs(wait).max(1))
        .header("retry-after", &ceil_secs(wait).max(1).to_string());
    for (n, v) in b.headers() {
        p.headers.push((n, v));
    }
    p
}

/// The gateway's upkeep of limits: buckets that are full again dropped every 10 s, idle
/// quota blocks given back every minute, ended quota windows older than 40 days pruned from
/// the store every hour.
pub(crate) async fn upkeep(
    rates: Arc<crate::table::Boards>,
    quotas: Arc<Quotas>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let mut tick = tokio::time::interval(Duration::from_secs(10));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut n: u64 = 0;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.wait_for(|&s| s) => return,
        }
        n += 1;
        rates.rates.sweep();
        if n.is_multiple_of(6) {
            quotas.release_idle(Duration::from_secs(60)).await;
        }
        if n % 360 == 1
            && let Some(store) = &quotas.store
        {
            let cutoff = SystemTime::now()
                .checked_sub(Duration::from_secs(40 * 86_400))
                .and_then(|t| t.duration_since(SystemTime::UNIX_EPOCH).ok())
                .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(0));
            if let Err(e) = store.prune_quotas(cutoff).await {
                tracing::warn!("gateway: pruning ended quota windows: {e}");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(text: &str) -> SystemTime {
        let t = time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339)
            .unwrap();
        SystemTime::UNIX_EPOCH + Duration::from_secs(t.unix_timestamp() as u64)
    }

    fn ms(text: &str) -> i64 {
        time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339)
            .unwrap()
            .unix_timestamp()
            * 1000
    }

    #[test]
    fn windows_are_utc_days_and_calendar_months() {
        let now = at("2024-02-29T23:59:59Z");
        assert_eq!(
            Window::Day.bounds(now),
            (ms("2024-02-29T00:00:00Z"), ms("2024-03-01T00:00:00Z"))
        );
        assert_eq!(
            Window::Month.bounds(now),
            (ms("2024-02-01T00:00:00Z"), ms("2024-03-01T00:00:00Z"))
        );
        assert_eq!(
            Window::Month.bounds(at("2023-12-31T12:00:00Z")),
            (ms("2023-12-01T00:00:00Z"), ms("2024-01-01T00:00:00Z"))
        );
        assert_eq!(
            Window::Month.bounds(at("2024-01-01T00:00:00Z")),
            (ms("2024-01-01T00:00:00Z"), ms("2024-02-01T00:00:00Z"))
        );
    }

    #[test]
    fn a_bucket_reports_what_is_left_and_how_long_to_wait() {
        let spec: RateLimitSpec = toml::from_str("requests = 3\nper = \"3s\"\nburst = 2").unwrap();
        let r = RouteRate::new(&spec).unwrap();
        let first = r.check("a").unwrap();
        assert_eq!((first.limit, first.remaining), (2, 1));
        assert_eq!(r.check("a").unwrap().remaining, 0);
        let (b, wait) = r.check("a").unwrap_err();
        assert_eq!(b.remaining, 0);
        assert!(
            wait > Duration::ZERO && wait <= Duration::from_secs(1),
            "{wait:?}"
        );
        // Another consumer has its own bucket.
        assert_eq!(r.check("b").unwrap().remaining, 1);
    }

    #[test]
    fn long_or_odd_consumers_are_hashed_into_the_key() {
        assert_eq!(quota_key("r", "day", "user:ann"), "gateway/r/day/user:ann");
        let long = quota_key("r", "day", &"x".repeat(300));
        assert!(long.starts_with("gateway/r/day/xxh3:") && long.len() < 60);
        assert!(quota_key("r", "day", "a\nb").contains("xxh3:"));
    }
}
