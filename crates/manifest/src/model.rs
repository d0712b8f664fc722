//! The loaded system: what the dev runner starts and wires together.

use crate::policy::{DependencyKind, OnFailure};
use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::time::Duration;
use switchyard_types::{TopicConfig, TopicName};

/// A system: `switchyard.toml` and every service under its services directory.
///
/// Paths are absolute (the system directory joined with what the files say).
#[derive(Clone, Debug)]
pub struct System {
    /// The system directory.
    pub root: PathBuf,
    /// `system.name`.
    pub name: String,
    /// `system.services-dir`, resolved (default `<root>/services`).
    pub services_dir: PathBuf,
    /// The `[server]` table as written: `switchyard serve` reads it (strictly).
    pub server: Option<toml::Table>,
    /// `[host]`: where the binary of the `in-process` services is built from.
    pub host: Option<Host>,
    pub topics: BTreeMap<TopicName, Topic>,
    /// `[subscriptions."<name>"]`: push subscriptions to endpoints outside the system.
    pub subscriptions: BTreeMap<String, Subscription>,
    /// By name (the name of the service's folder).
    pub services: BTreeMap<String, Service>,
    /// `[[routes]]`: the API gateway's declared routes, in file order, each checked.
    pub routes: Vec<crate::route::RouteSpec>,
}

/// `[host]`: a cargo package whose binary is `switchyard` with the system's in-process
/// services linked in (`switchyard::main_with`); `switchyard dev` builds it and runs the
/// system from it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Host {
    pub package: String,
    /// Its Cargo.toml, absolute.
    pub manifest: PathBuf,
}

/// `[topics."<name>"]`.
#[derive(Clone, Debug, PartialEq)]
pub struct Topic {
    pub name: TopicName,
    /// The journal settings (the same form and checks as `PUT /v1/topics/{topic}`).
    pub config: TopicConfig,
    /// The event types the topic carries, by type.
    pub event_types: BTreeMap<String, EventType>,
    /// Fed from outside the system (the gateway, a script): a subscriber needs no service
    /// that publishes to it.
    pub external_producers: bool,
}

/// One declared event type of a topic.
#[derive(Clone, Debug, PartialEq)]
pub struct EventType {
    /// The schema file, absolute.
    pub schema_file: Option<PathBuf>,
    /// The schema, parsed and known to compile; `None` when there is none or it is broken.
    pub schema: Option<serde_json::Value>,
}

/// A service: `services/<name>/service.toml`.
#[derive(Clone, Debug, PartialEq)]
pub struct Service {
    pub name: String,
    /// The service's folder.
    pub dir: PathBuf,
    /// Its service.toml, relative to the system directory (as diagnostics name it).
    pub manifest: String,
    /// `run` as written (`in-process` for an in-process service).
    pub run_line: String,
    /// `in-process = true`: a Rust service hosted in the platform's process (see
    /// [`Host`]); it has no `run` and no process of its own.
    pub in_process: bool,
    /// `run` split like a shell would (quotes, backslashes), to be run without a shell. A
    /// program written as a path (`./serve.sh`, `bin/app`) is made absolute against
    /// `workdir`; a bare name (`python3`) is left for the `PATH` lookup.
    pub argv: Vec<String>,
    /// Where it runs: `workdir` against the service's folder (default the folder).
    pub workdir: PathBuf,
    /// The port it listens on; `None`: the dev runner picks one and passes it as `PORT`.
    pub port: Option<u16>,
    pub health: Health,
    /// `[env]`, on top of what the runner injects ([`INJECTED_ENV`]).
    pub env: BTreeMap<String, String>,
    pub database: Option<Database>,
    pub publishes: Vec<Publish>,
    /// Its push subscriptions, in file order; `endpoint` is a path on this service.
    pub subscribes: Vec<Subscription>,
    /// By the name of the service depended on.
    pub dependencies: BTreeMap<String, Dependency>,
}

/// The variables the dev runner sets for every service; `[env]` may not override them.
pub const INJECTED_ENV: [&str; 7] = [
    "PORT",
    "SWITCHYARD_URL",
    "SWITCHYARD_GATEWAY_URL",
    "SWITCHYARD_CALL_TOKEN",
    "SERVICE_NAME",
    "DATABASE_URL",
    "TRACEPARENT",
];

/// `[health]`: the runner probes `GET path` on the service's port until it answers 2xx.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Health {
    /// Default `/healthz`.
    pub path: String,
    /// How long the service may take to become healthy at start (default 10 s).
    pub timeout: Duration,
}

impl Default for Health {
    fn default() -> Self {
        Self {
            path: "/healthz".to_string(),
            timeout: Duration::from_secs(10),
        }
    }
}

/// `[database]`: the runner creates the database, applies `migrations` (`*.sql` in name
/// order) and passes its URL as `DATABASE_URL`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Database {
    pub kind: DatabaseKind,
    /// The migrations folder, absolute.
    pub migrations: Option<PathBuf>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum DatabaseKind {
    Sqlite,
    Postgres,
}

/// `[[publishes]]`: the event types a service appends to a topic.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Publish {
    pub topic: TopicName,
    pub types: Vec<String>,
}

/// A push subscription, of a service (`[[subscribes]]`) or of the system
/// (`[subscriptions."<name>"]`).
#[derive(Clone, Debug, PartialEq)]
pub struct Subscription {
    /// Unique in the system; a service's default is `<service>.<topic>`.
    pub name: String,
    pub topics: Vec<TopicName>,
    /// The event types it takes; empty: all.
    pub types: Vec<String>,
    pub endpoint: Endpoint,
    /// Deliveries in progress at once (default 16).
    pub concurrency: u32,
    /// Events per push (default 1): above 1, up to this many in one POST in the CloudEvents
    /// batch mode, at most one per partition key.
    pub max_batch: u32,
    pub retry: DeliveryRetry,
}

impl Subscription {
    /// Whether it takes events of `event_type`.
    pub fn takes(&self, event_type: &str) -> bool {
        self.types.is_empty() || self.types.iter().any(|t| t == event_type)
    }
}

/// Where a subscription pushes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Endpoint {
    /// A path on the subscribing service, joined with its port by the runner.
    Service { service: String, path: String },
    /// An absolute `http://` or `https://` URL.
    Url(String),
}

/// How failed deliveries are retried before they are parked (the bus's retry policy, with
/// durations). The defaults are the bus's.
#[derive(Clone, Debug, PartialEq)]
pub struct DeliveryRetry {
    pub initial_backoff: Duration,
    pub max_backoff: Duration,
    pub multiplier: f64,
    pub jitter: f64,
    pub max_attempts: u32,
    pub max_age: Duration,
}

impl Default for DeliveryRetry {
    fn default() -> Self {
        Self {
            initial_backoff: Duration::from_millis(500),
            max_backoff: Duration::from_secs(60),
            multiplier: 2.0,
            jitter: 0.2,
            max_attempts: 10,
            max_age: Duration::from_secs(24 * 3600),
        }
    }
}

/// `[dependencies.<service>]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Dependency {
    pub kind: DependencyKind,
    pub on_failure: OnFailure,
}

/// One edge of the topology: `from` depends on `to`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Edge<'a> {
    pub from: &'a str,
    pub to: &'a str,
    pub dependency: &'a Dependency,
}

impl System {
    /// Every dependency between services, by `from` then `to`. Dependencies on services the
    /// system does not have are left out (`check` reports them).
    pub fn edges(&self) -> Vec<Edge<'_>> {
        self.services
            .iter()
            .flat_map(|(from, s)| {
                s.dependencies
                    .iter()
                    .filter(|(to, _)| self.services.contains_key(to.as_str()))
                    .map(move |(to, dependency)| Edge {
                        from,
                        to,
                        dependency,
                    })
            })
            .collect()
    }

    /// The order the dev runner starts services in: each after its `sync` dependencies, and
    /// after its `async` dependencies too unless they form a cycle (legal: they meet through
    /// the journal, which holds the events until the consumer is up). Among the services free
    /// to start, the first by name, so the order is always the same.
    ///
    /// With a cycle of `sync` dependencies (an error `check` reports) the first service of
    /// the cycle by name goes first, so the order is still total.
    pub fn start_order(&self) -> Vec<&Service> {
        let mut started: BTreeSet<&str> = BTreeSet::new();
        let mut order = Vec::with_capacity(self.services.len());
        let deps_started = |s: &Service, kind: DependencyKind, started: &BTreeSet<&str>| {
            s.dependencies.iter().all(|(to, d)| {
                d.kind != kind
                    || !self.services.contains_key(to.as_str())
                    || started.contains(to.as_str())
            })
        };
        while order.len() < self.services.len() {
            let waiting = || {
                self.services
                    .values()
                    .filter(|s| !started.contains(s.name.as_str()))
            };
            let free = || waiting().filter(|s| deps_started(s, DependencyKind::Sync, &started));
            let next = free()
                .find(|s| deps_started(s, DependencyKind::Async, &started))
                .or_else(|| free().next())
                .or_else(|| waiting().next());
            let Some(next) = next else { break };
            started.insert(next.name.as_str());
            order.push(next);
        }
        order
    }

    /// Every subscription: the system's, then each service's (services by name).
    pub fn all_subscriptions(&self) -> impl Iterator<Item = &Subscription> {
        self.subscriptions
            .values()
            .chain(self.services.values().flat_map(|s| s.subscribes.iter()))
    }

    /// The topics that `queue` policies append calls to (their producer and consumer is the
    /// platform).
    pub fn queue_topics(&self) -> BTreeSet<&TopicName> {
        self.services
            .values()
            .flat_map(|s| s.dependencies.values())
            .filter_map(|d| match &d.on_failure {
                OnFailure::Queue { topic } => Some(topic),
                _ => None,
            })
            .collect()
    }

    /// The topics the gateway itself appends to: queued calls and the routes' access logs.
    pub fn gateway_topics(&self) -> BTreeSet<&TopicName> {
        let mut out = self.queue_topics();
        out.extend(
            self.routes
                .iter()
                .filter_map(|r| r.access_log.as_ref().map(|a| &a.topic)),
        );
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn service(name: &str, deps: &[(&str, DependencyKind)]) -> Service {
        Service {
            name: name.into(),
            dir: PathBuf::from(name),
            manifest: format!("services/{name}/service.toml"),
            run_line: "true".into(),
            in_process: false,
            argv: vec!["true".into()],
            workdir: PathBuf::from(name),
            port: None,
            health: Health::default(),
            env: BTreeMap::new(),
            database: None,
            publishes: Vec::new(),
            subscribes: Vec::new(),
            dependencies: deps
                .iter()
                .map(|(to, kind)| {
                    (
                        to.to_string(),
                        Dependency {
                            kind: *kind,
                            on_failure: OnFailure::Fail,
                        },
                    )
                })
                .collect(),
        }
    }

    fn system(services: Vec<Service>) -> System {
        System {
            root: PathBuf::from("."),
            name: "t".into(),
            services_dir: PathBuf::from("services"),
            server: None,
            host: None,
            topics: BTreeMap::new(),
            subscriptions: BTreeMap::new(),
            services: services.into_iter().map(|s| (s.name.clone(), s)).collect(),
            routes: Vec::new(),
        }
    }

    fn order(s: &System) -> Vec<&str> {
        s.start_order().iter().map(|s| s.name.as_str()).collect()
    }

    use DependencyKind::{Async, Sync};

    #[test]
    fn start_order_puts_dependencies_first_and_breaks_ties_by_name() {
        let s = system(vec![
            service("web", &[("orders", Sync), ("catalog", Sync)]),
            service("orders", &[("payments", Sync), ("notify", Async)]),
            service("payments", &[]),
            service("catalog", &[]),
            service("notify", &[]),
        ]);
        assert_eq!(
            order(&s),
            ["catalog", "notify", "payments", "orders", "web"]
        );
    }

    #[test]
    fn async_cycles_do_not_block_the_start() {
        let s = system(vec![
            service("a", &[("b", Async)]),
            service("b", &[("a", Async)]),
            service("c", &[("a", Sync)]),
        ]);
        assert_eq!(order(&s), ["a", "b", "c"]);
    }

    #[test]
    fn a_sync_cycle_still_gives_a_total_order_and_unknown_services_are_ignored() {
        let s = system(vec![
            service("x", &[("y", Sync)]),
            service("y", &[("x", Sync)]),
            service("z", &[("ghost", Sync)]),
        ]);
        assert_eq!(order(&s), ["z", "x", "y"]);
        let edges: Vec<_> = s.edges().iter().map(|e| (e.from, e.to)).collect();
        assert_eq!(edges, [("x", "y"), ("y", "x")]);
    }
}
