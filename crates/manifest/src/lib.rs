//! Switchyard's manifests: a system directory's `switchyard.toml` and one `service.toml` per
//! service, loaded into a [`System`] and checked, every problem a located [`Diagnostic`].
//!
//! ```text
//! shop/
//!   switchyard.toml               the system: topics, event types, system subscriptions
//!   schemas/order-placed.json     JSON Schemas named by switchyard.toml
//!   services/
//!     orders/service.toml         one folder per service; the folder name is its name
//!     payments/service.toml
//! ```
//!
//! [`load`] reads it all; `switchyard check` prints the diagnostics, and the dev runner (a
//! later issue) is to start the [`System`] only when there is no error.
//!
//! # `switchyard.toml`
//!
//! ```toml
//! [system]
//! name = "shop"                      # a DNS label: lowercase letters, digits, `-`
//! services-dir = "services"          # the default
//!
//! [server]                           # `switchyard serve`'s table, kept as written
//! listen = "127.0.0.1:7400"
//!
//! [topics."orders.v1"]               # TopicConfig's keys, as in PUT /v1/topics/{topic}
//! partitions = 3
//! durability = "always"            # always | os | interval(50ms)
//! dedup-window-ms = 120000
//! segment-bytes = 67108864
//! retention = { max-age-ms = 604800000 }
//! [topics."orders.v1".event-types]   # the types the topic carries
//! "order.placed" = { schema = "schemas/order-placed.json" }   # relative to the directory
//! "order.cancelled" = {}
//!
//! [topics."payments.v1"]
//! event-types = { "payment.captured" = {}, "payment.failed" = {} }
//!
//! [topics."signups.v1"]
//! external-producers = true          # fed from outside (the gateway, a script); default false
//! event-types = { "user.signed-up" = {} }
//!
//! [topics."notify-calls.v1"]         # where a `queue` policy appends calls (see below)
//!
//! [topics."gateway.access.v1"]       # where routes with `access-log` append their requests
//!
//! [subscriptions.audit]              # a push subscription to an endpoint outside the system
//! topics = ["orders.v1"]
//! types = []                         # empty: every type
//! endpoint = "https://audit.example.com/events"
//! concurrency = 4                    # default 16
//! max-batch = 100                    # events per POST, 1 to 1000 (default 1: one per POST);
//!                                    # above 1: the CloudEvents batch mode, one per key
//! retry = { initial-backoff = "1s", max-backoff = "1m", multiplier = 2.0, jitter = 0.2, max-attempts = 20, max-age = "2d" }
//! ```
//!
//! # `services/<name>/service.toml`
//!
//! ```toml
//! name = "orders"                    # must be the folder's name
//! run = "python3 -m orders --workers 2"  # split like a shell would, run without a shell
//! workdir = "."                      # relative to the service's folder (the default)
//! port = 8101                        # optional: without it the dev runner picks one
//!
//! [health]
//! path = "/healthz"                  # the default
//! timeout = "10s"                    # the default: how long it may take to become healthy
//!
//! [env]                              # may not set PORT, SWITCHYARD_URL, SWITCHYARD_GATEWAY_URL,
//! LOG_LEVEL = "info"                 # SWITCHYARD_CALL_TOKEN, SERVICE_NAME, DATABASE_URL or
//!                                    # TRACEPARENT (the runner sets them)
//!
//! [database]
//! kind = "sqlite"                    # sqlite | postgres
//! migrations = "migrations"          # a folder of *.sql, relative to the service's folder
//!
//! [[publishes]]
//! topic = "orders.v1"
//! types = ["order.placed", "order.cancelled"]
//!
//! [[subscribes]]
//! topic = "payments.v1"
//! types = ["payment.captured"]       # empty or absent: every type
//! path = "/events"                   # the default: where on this service events are pushed
//! name = "orders.payments.v1"        # the default: <service>.<topic>
//! concurrency = 16                   # the default
//! max-batch = 1                      # the default (see [subscriptions] above)
//! [subscribes.retry]                 # the defaults: 500ms, 1m, 2.0, 0.2, 10, 1d
//! initial-backoff = "500ms"
//! max-backoff = "1m"
//! multiplier = 2.0
//! jitter = 0.2
//! max-attempts = 10
//! max-age = "1d"
//!
//! [dependencies.payments]
//! kind = "sync"                      # sync: calls it over HTTP; async: only through events
//! on-failure = { policy = "retry", attempts = 3, timeout = "2s", backoff = "100ms" }
//!
//! [dependencies.notify]
//! kind = "async"
//! on-failure = { policy = "queue", topic = "notify-calls.v1" }
//! ```
//!
//! Keys are kebab-case; an unknown key is an error. Durations are humantime strings
//! (`"200ms"`, `"10s"`, `"1m 30s"`); the topic settings keep `TopicConfig`'s own form
//! (milliseconds and byte counts as integers).
//!
//! # Failure policies (`on-failure`)
//!
//! Every dependency must name one: there is no default, because what a service does while a
//! dependency is down is a decision. `on-failure = "fail"` takes a policy's defaults;
//! `on-failure = { policy = "...", ... }` sets its parameters. A dependency is *down* while
//! its health check fails, while it is taken down on purpose, or when a call to it fails to
//! connect, times out or is answered 502, 503 or 504; its other answers are passed back
//! unchanged.
//!
//! | policy | parameters | at start (dev runner) | on calls while it is down (gateway) |
//! |---|---|---|---|
//! | `fail` | none | `sync`: the service starts once the dependency is healthy; if it is not healthy within its `health.timeout` the service is not started and the runner says why | answered at once, not forwarded: 503 problem+json `dependency-unavailable`, `Retry-After: 1` |
//! | `retry` | `attempts` 2..=10 (3), `timeout` per try 1ms..=60s (2s), `backoff` 0..=10s (100ms), doubled per try | as `fail` | tried up to `attempts` times, idempotent methods (or an `Idempotency-Key`) only; then 503 `dependency-unavailable` |
//! | `fallback` | `status` 200..=599 (200), `body` (empty; JSON when the type is), `content-type` (`application/json`) | no waiting | answered at once with that response and `Switchyard-Fallback: <dependency>` |
//! | `queue` | `topic` (declared in switchyard.toml); `async` dependencies only | no waiting | appended to `topic` as a `switchyard.queued-call` event, answered 202; delivered in order once the dependency is back |
//! | `degrade` | `header` (`Switchyard-Degraded`) | no waiting | answered at once: 503 problem+json `dependency-degraded` with `<header>: <dependency>`, so the service serves a reduced response |
//!
//! `async` dependencies never make a service wait at start; see [`OnFailure`] for each policy
//! in full and [`System::start_order`] for the order.
//!
//! # Diagnostics
//!
//! Each [`Diagnostic`] has a stable [`Code`], the file (relative to the directory), the line
//! and column, and the key path (`dependencies.payments.on-failure`). Syntax and type errors
//! come from the TOML parser with their byte span, turned into line and column; a file
//! stops at its first such error. Checks after parsing point at the key they are about, or
//! at the table that lacks it. Rules between files run once every file parses.

mod diagnostic;
mod load;
mod locate;
mod model;
mod policy;
mod raw;
mod route;
mod rules;

pub use diagnostic::{Code, Diagnostic, Severity};
pub use load::{Error, Loaded, Result, SERVICE_MANIFEST, SYSTEM_MANIFEST, read_routes};
pub use model::{
    Database, DatabaseKind, DeliveryRetry, Dependency, Edge, Endpoint, EventType, Health, Host,
    INJECTED_ENV, Publish, Service, Subscription, System, Topic,
};
pub use policy::{DEFAULT_DEGRADE_HEADER, DependencyKind, OnFailure, POLICIES};
pub use route::{
    ACCESS_RECORD_TYPE, AccessLogSpec, AuthSpec, COMPOSE_GLOBALS, ComposeSpec,
    DEFAULT_ROUTE_TIMEOUT, HealthCheckSpec, JWT_ALGORITHMS, JwtSpec, LimitBy, MAX_PARTS, MAX_QUOTA,
    Millis, PartSpec, PathPattern, QuotaSpec, RateLimitSpec, RouteError, RouteSpec, Segment,
    UpstreamSpec, check_route_name, check_upstream_url,
};

use std::path::Path;

/// Loads and checks the system in `dir`. The only error is a directory that cannot be read
/// at all; everything else is a diagnostic in [`Loaded`]. `run` programs are looked up on
/// this process's `PATH`.
pub fn load(dir: &Path) -> Result<Loaded> {
    load::load(dir, std::env::var_os("PATH"))
}
