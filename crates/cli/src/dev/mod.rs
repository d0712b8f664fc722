//! `switchyard dev`: the platform (embedded journal and store) and every service of a
//! system, started in dependency order on one machine; `reset` and `snapshot`, which put
//! a running (or stopped) dev system into a known state.
//!
//! One listener serves the API of the current platform and, around it, the runner's own
//! routes under `/v1/system/`. Reset and snapshot stop the services and the platform, work
//! on the files, and start both again, so what they copy is consistent; the listener stays
//! up throughout (requests meanwhile get 503).

mod client;
mod handoff;
mod secrets;
mod services;
mod state;

pub use client::{ResetArgs, SnapshotCommand, reset, snapshot};

use crate::Exit;
use anyhow::{Context, anyhow};
use arc_swap::ArcSwap;
use axum::Router;
use axum::extract::{Path as UrlPath, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
pub use secrets::{DEV_TOKEN_HELP, DevTokenArgs, dev_token};
use serde_json::json;
use services::{Board, ServiceStatus, Services, lock};
use state::{Postgres, StateDir};
use std::collections::BTreeMap;
use std::io::IsTerminal as _;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};
use switchyard_manifest::{Endpoint, System};
use tokio::sync::{mpsc, oneshot, watch};
use tower::ServiceExt as _;

#[derive(clap::Args, Debug)]
pub struct DevArgs {
    /// The system directory: switchyard.toml and the services' folders.
    #[arg(default_value = ".")]
    dir: PathBuf,
    /// Start only these services (comma-separated); the others count as down for their
    /// dependents, which act on their `on-failure` policy.
    #[arg(long, value_delimiter = ',')]
    only: Vec<String>,
    /// Address of the platform's API.
    #[arg(long, default_value = "127.0.0.1:7400")]
    listen: SocketAddr,
    /// Address of the API gateway: the routes of switchyard.toml and of the admin API
    /// (`/v1/gateway/routes` on the platform's API), and service-to-service calls
    /// (`/v1/call/{service}/{path}`). Port 0: a free port.
    #[arg(long, default_value = "127.0.0.1:7480")]
    gateway_listen: SocketAddr,
    /// Where journal, store, service databases and snapshots live. Default: DIR/.switchyard
    #[arg(long)]
    state: Option<PathBuf>,
    /// How long a service may take to exit after SIGTERM before it gets SIGKILL.
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
    grace: Duration,
    /// Start from an empty state (as `switchyard reset` does) instead of the last one.
    #[arg(long)]
    fresh: bool,
    /// The PostgreSQL server for services whose database is `postgres`: the runner creates
    /// one database per service there (and copies them for snapshots).
    #[arg(
        long,
        env = "SWITCHYARD_POSTGRES_URL",
        default_value = "postgres://postgres@127.0.0.1:5432/postgres"
    )]
    postgres: String,
}

/// What the control routes ask of the runner's loop.
enum Request {
    Reset,
    Save(String),
    Restore(String),
}

type Reply = oneshot::Sender<Result<serde_json::Value, String>>;

#[derive(Clone)]
struct Control {
    /// The current platform's API (or a 503 while it restarts).
    api: Arc<ArcSwap<Router>>,
    board: Board,
    system: Arc<System>,
    requests: mpsc::Sender<(Request, Reply)>,
    state: Arc<StateDir>,
    postgres: Arc<Postgres>,
    url: String,
    /// The gateway listener's address.
    gateway_url: String,
    /// The current gateway's app (or a 503 while the platform restarts).
    gateway: Arc<ArcSwap<Router>>,
    /// The system directory (its switchyard.toml declares the adapters).
    dir: PathBuf,
    /// The services linked into this binary (a host binary), for the in-process ones.
    hosted: Option<Arc<switchyard_sdk::Host>>,
    /// The running platform's journal (None while it restarts): the status page measures
    /// in-process consumers' lag against it.
    journal: Arc<std::sync::Mutex<Option<Arc<dyn switchyard_journal::Journal>>>>,
    /// Each service's secret for service-to-service calls (`SWITCHYARD_CALL_TOKEN`), made
    /// once per run like the ports.
    call_tokens: Arc<switchyard_gateway::CallTokens>,
    /// Faults injected on purpose (`switchyard chaos`), kept across restarts.
    faults: switchyard_gateway::Faults,
    /// The development secrets of HS256 routes whose variable is not set (see `secrets`).
    dev_secrets: Arc<BTreeMap<String, String>>,
}

pub async fn run(args: DevArgs, hosted: Option<Arc<switchyard_sdk::Host>>) -> Result<u8, Exit> {
    let started = Instant::now();
    let dir = args.dir.clone();
    let loaded = switchyard_manifest::load(&dir)
        .with_context(|| format!("reading the system in {}", dir.display()))?;
    if !loaded.is_ok() {
        for d in loaded.diagnostics.iter().filter(|d| d.is_error()) {
            eprintln!("{d}");
        }
        eprintln!(
            "switchyard dev: {} error(s) in the manifests; `switchyard check {}` lists them all",
            loaded.errors(),
            dir.display()
        );
        return Ok(1);
    }
    let system = Arc::new(loaded.system);
    for name in &args.only {
        if !system.services.contains_key(name) {
            return Err(anyhow!(
                "--only: no service named {name:?} (services: {})",
                system
                    .services
                    .keys()
                    .cloned()
                    .collect::<Vec<_>>()
                    .join(", ")
            )
            .into());
        }
    }
    // In-process services run in this process, on its journal: only a host binary that
    // links them in can run them (the plain binary hands over to one).
    let in_process: Vec<String> = system
        .services
        .values()
        .filter(|s| s.in_process && (args.only.is_empty() || args.only.contains(&s.name)))
        .map(|s| s.name.clone())
        .collect();
    if !in_process.is_empty() {
        match &hosted {
            None => return Ok(handoff::hand_over(&system, &in_process)?),
            Some(h) => {
                let missing: Vec<&String> = in_process.iter().filter(|n| !h.contains(n)).collect();
                if !missing.is_empty() {
                    return Err(anyhow!(
                        "services {missing:?} are in-process, but this host binary does not link \
                         them in (it hosts: {})",
                        h.names().join(", ")
                    )
                    .into());
                }
            }
        }
    }
    // Absolute: services run in their own folders and get paths into it.
    let state_dir = args
        .state
        .clone()
        .unwrap_or_else(|| dir.join(".switchyard"));
    let state = Arc::new(StateDir::new(
        std::path::absolute(&state_dir)
            .with_context(|| format!("resolving {}", state_dir.display()))?,
    ));
    let postgres = Arc::new(Postgres {
        admin: args.postgres.clone(),
        system: system.name.clone(),
    });
    if args.fresh {
        wipe(&state, &postgres, &system).await?;
    }
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| {
            format!(
                "listening on {} (is another switchyard running?)",
                args.listen
            )
        })?;
    let url = format!(
        "http://{}",
        listener.local_addr().context("reading the bound address")?
    );
    let gateway_listener = tokio::net::TcpListener::bind(args.gateway_listen)
        .await
        .with_context(|| {
            format!(
                "--gateway-listen {} (is another switchyard running?)",
                args.gateway_listen
            )
        })?;
    let gateway_url = format!(
        "http://{}",
        gateway_listener
            .local_addr()
            .context("reading the gateway's bound address")?
    );

    // Ports and call tokens are chosen once, so they stay the same across resets and
    // restores.
    let ports = assign_ports(&system)?;
    let call_tokens = Arc::new(switchyard_gateway::new_call_tokens(system.services.keys()));
    let dev_secrets = Arc::new(secrets::ensure(&state, &system)?);
    let board: Board = Arc::new(std::sync::Mutex::new(
        system
            .services
            .values()
            .map(|s| {
                let port = ports[&s.name];
                let chosen = args.only.is_empty() || args.only.contains(&s.name);
                let status = ServiceStatus {
                    name: s.name.clone(),
                    state: if chosen { "waiting" } else { "not-started" },
                    port,
                    url: format!("http://127.0.0.1:{port}"),
                    in_process: s.in_process,
                    pid: None,
                    restarts: 0,
                    last_exit: None,
                };
                (s.name.clone(), status)
            })
            .collect(),
    ));
    let (requests, mut incoming) = mpsc::channel(4);
    let control = Control {
        api: Arc::new(ArcSwap::from_pointee(restarting())),
        board: board.clone(),
        system: system.clone(),
        requests,
        state: state.clone(),
        postgres: postgres.clone(),
        url: url.clone(),
        gateway_url: gateway_url.clone(),
        gateway: Arc::new(ArcSwap::from_pointee(restarting())),
        dir: dir.clone(),
        hosted,
        journal: Arc::default(),
        call_tokens,
        faults: switchyard_gateway::Faults::default(),
        dev_secrets: dev_secrets.clone(),
    };
    let (stop_http, stop_http_rx) = watch::channel(false);
    let http = tokio::spawn(switchyard_server::serve_router(
        listener,
        control_routes(control.clone()),
        Duration::from_secs(60),
        async move {
            let mut rx = stop_http_rx;
            let _ = rx.wait_for(|&s| s).await;
        },
    ));
    let gateway_app = control.gateway.clone();
    let (stop_gateway, stop_gateway_rx) = watch::channel(false);
    let gateway_http = tokio::spawn(switchyard_gateway::serve_app(
        gateway_listener,
        Router::new().fallback(move |req: axum::extract::Request| {
            let app = gateway_app.load_full();
            async move {
                match app.as_ref().clone().oneshot(req).await {
                    Ok(r) => r,
                    Err(never) => match never {},
                }
            }
        }),
        async move {
            let mut rx = stop_gateway_rx;
            let _ = rx.wait_for(|&s| s).await;
        },
    ));
    let colour = std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none();

    let mut first = true;
    // Installed once the system is first up (until then Ctrl-C simply ends the runner and
    // its children) and kept across resets, so a Ctrl-C during a restart is not lost.
    let mut stop_signal = None;
    let mut pending: Option<(Reply, serde_json::Value)> = None;
    let code = loop {
        let up = match Up::start(&control, &args, &ports, colour).await {
            Ok(up) => up,
            Err(e) => {
                eprintln!("switchyard dev: {e:#}");
                if let Some((reply, _)) = pending.take() {
                    let _ = reply.send(Err(format!("{e:#}")));
                }
                break 1;
            }
        };
        if first {
            print_ready(&system, &board, &url, &gateway_url, started.elapsed());
            if !dev_secrets.is_empty() {
                println!(
                    "switchyard dev: JWT routes check tokens against a development secret \
                     ({} not set; kept in {}); `switchyard dev-token {}{} --sub NAME` makes one",
                    dev_secrets.keys().cloned().collect::<Vec<_>>().join(", "),
                    state.root.join("secrets").display(),
                    dir.display(),
                    match &args.state {
                        Some(s) => format!(" --state {}", s.display()),
                        None => String::new(),
                    }
                );
            }
            first = false;
        }
        if let Some((reply, mut body)) = pending.take() {
            body["ms"] = json!(up.started.elapsed().as_millis() as u64);
            let _ = reply.send(Ok(body));
        }
        let stop = stop_signal.get_or_insert_with(|| Box::pin(crate::serve::shutdown_signal()));
        let next = tokio::select! {
            _ = stop.as_mut() => None,
            r = incoming.recv() => r,
        };
        up.stop(&control).await;
        let Some((request, reply)) = next else {
            break 0;
        };
        let what = match &request {
            Request::Reset => "reset".to_string(),
            Request::Save(name) => format!("saving snapshot {name}"),
            Request::Restore(name) => format!("restoring snapshot {name}"),
        };
        eprintln!("switchyard dev: {what}: services and platform stopped; starting them again");
        // The platform and the services are down: the files are ours.
        let pg = pg_services(&system);
        let done = match request {
            Request::Reset => wipe(&state, &postgres, &system)
                .await
                .map(|()| json!({"reset": true})),
            Request::Save(name) => match state.save(&name) {
                Ok(i) => match postgres.save(&pg, &name).await {
                    Ok(()) => Ok(json!({"saved": i})),
                    Err(e) => {
                        // Half a snapshot is worse than none.
                        let _ = state.discard(&name);
                        Err(e)
                    }
                },
                Err(e) => Err(e),
            },
            Request::Restore(name) => match state.restore(&name) {
                Ok(i) => postgres
                    .restore(&pg, &name)
                    .await
                    .map(|()| json!({"restored": i})),
                Err(e) => Err(e),
            },
        };
        match done {
            Ok(body) => pending = Some((reply, body)),
            Err(e) => {
                // Files are staged beside, so a failed save or restore left them as they
                // were (a restore whose PostgreSQL part failed is the exception: said in the
                // error). Start again either way.
                let _ = reply.send(Err(format!("{e:#}")));
            }
        }
    };
    let _ = stop_http.send(true);
    let _ = stop_gateway.send(true);
    let _ = http.await;
    let _ = gateway_http.await;
    eprintln!("switchyard dev: stopped");
    Ok(code)
}

/// The services whose database is PostgreSQL.
fn pg_services(system: &System) -> Vec<&switchyard_manifest::Service> {
    system
        .services
        .values()
        .filter(|s| {
            s.database
                .as_ref()
                .is_some_and(|d| d.kind == switchyard_manifest::DatabaseKind::Postgres)
        })
        .collect()
}

/// Empties the journal, the store and every service database.
async fn wipe(state: &StateDir, postgres: &Postgres, system: &System) -> anyhow::Result<()> {
    state.wipe()?;
    let pg = pg_services(system);
    if !pg.is_empty() {
        postgres.drop_all(&pg).await?;
    }
    Ok(())
}

/// The platform and the services, running.
struct Up {
    platform: crate::serve::Platform,
    gateway: switchyard_gateway::Gateway,
    stop_streams: watch::Sender<bool>,
    services: Services,
    started: Instant,
}

impl Up {
    async fn start(
        control: &Control,
        args: &DevArgs,
        ports: &BTreeMap<String, u16>,
        colour: bool,
    ) -> anyhow::Result<Self> {
        let started = Instant::now();
        let system = &control.system;
        let only = &args.only;
        let chosen = |name: &str| only.is_empty() || only.iter().any(|o| o == name);
        // Databases first: a failure here leaves no platform to close.
        let mut databases = BTreeMap::new();
        for s in system.services.values().filter(|s| chosen(&s.name)) {
            let url = match control.state.prepare_sqlite(s).await? {
                Some(url) => Some(url),
                None => control.postgres.prepare(s).await?,
            };
            if let Some(url) = url {
                databases.insert(s.name.clone(), url);
            }
        }
        let platform = crate::serve::Platform::open(
            &control.state.data(),
            Some(&control.dir.join("switchyard.toml")),
            false,
        )
        .await?;
        let gateway = match switchyard_gateway::Gateway::start(
            platform.journal(),
            switchyard_gateway::GatewayOptions {
                declared: system.routes.clone(),
                services: switchyard_gateway::services_on_loopback(ports),
                admin_token: gateway_admin_token()?,
                dependencies: switchyard_gateway::dependencies_of(system),
                call_tokens: (*control.call_tokens).clone(),
                store: Some(platform.store()),
                faults: control.faults.clone(),
                secrets: (*control.dev_secrets).clone(),
                ..Default::default()
            },
        )
        .await
        {
            Ok(g) => g,
            Err(e) => {
                platform.close().await?;
                return Err(anyhow!("starting the gateway: {e}"));
            }
        };
        platform
            .bus
            .set_push_faults(Arc::new(crate::serve::PushFaultsOf(control.faults.clone())));
        let (stop_streams, stop_rx) = watch::channel(false);
        let options = switchyard_server::Options {
            bus: Some(platform.bus.clone()),
            connect: Some(platform.connect.clone()),
            ..Default::default()
        };
        control.api.store(Arc::new(
            switchyard_server::router(platform.journal(), options, stop_rx)
                .merge(gateway.admin_router()),
        ));
        control.gateway.store(Arc::new(gateway.router()));
        *lock(&control.journal) = Some(platform.journal());
        if let Err(e) = register(control, &platform.bus, system, ports, &chosen).await {
            let _ = stop_streams.send(true);
            control.api.store(Arc::new(restarting()));
            control.gateway.store(Arc::new(restarting()));
            gateway.shutdown().await;
            platform.close().await?;
            return Err(e);
        }
        let mut launches = services::launches(
            system,
            only,
            ports,
            &control.url,
            &control.gateway_url,
            &databases,
            &control.call_tokens,
        );
        if let Some(host) = &control.hosted {
            for l in launches.iter_mut().filter(|l| l.service.in_process) {
                l.hosted = Some(services::Hosted {
                    host: host.clone(),
                    journal: platform.journal(),
                });
            }
        }
        let (services, outcome) =
            Services::start(launches, control.board.clone(), args.grace, colour).await;
        let up = Up {
            platform,
            gateway,
            stop_streams,
            services,
            started,
        };
        if let Err(f) = outcome {
            up.stop(control).await;
            let mut msg = format!("service {} did not start: {}", f.service, f.reason);
            if f.last_lines.is_empty() {
                msg.push_str("\n  (it printed nothing)");
            } else {
                msg.push_str("\n  its last lines:");
                for l in f.last_lines {
                    msg.push_str("\n    ");
                    msg.push_str(&l);
                }
            }
            return Err(anyhow!(msg));
        }
        Ok(up)
    }

    async fn stop(self, control: &Control) {
        *lock(&control.journal) = None;
        self.services.stop().await;
        let _ = self.stop_streams.send(true);
        control.api.store(Arc::new(restarting()));
        control.gateway.store(Arc::new(restarting()));
        self.gateway.shutdown().await;
        if let Err(e) = self.platform.close().await {
            eprintln!("switchyard dev: closing the platform: {e:#}");
        }
    }
}

/// Topics (with their schemas) and the subscriptions of the services that run, through the
/// platform's own API, so they get the same checks as any client's.
async fn register(
    control: &Control,
    bus: &switchyard_bus::Bus,
    system: &System,
    ports: &BTreeMap<String, u16>,
    chosen: &dyn Fn(&str) -> bool,
) -> anyhow::Result<()> {
    for (name, topic) in &system.topics {
        let mut body = serde_json::to_value(topic.config)?;
        let schemas: serde_json::Map<String, serde_json::Value> = topic
            .event_types
            .iter()
            .filter_map(|(t, e)| e.schema.clone().map(|s| (t.clone(), s)))
            .collect();
        if !schemas.is_empty() {
            body["schemas"] = serde_json::Value::Object(schemas);
        }
        call(control, "PUT", &format!("/v1/topics/{name}"), body)
            .await
            .with_context(|| format!("creating topic {name} (switchyard.toml)"))?;
    }
    // Queued calls: one subscription per queue topic, pushing to the gateway, which makes
    // each call once its dependency answers (the bus's retries and parking meanwhile).
    let queues: std::collections::BTreeSet<&switchyard_types::TopicName> = system
        .services
        .values()
        .flat_map(|s| s.dependencies.values())
        .filter_map(|d| match &d.on_failure {
            switchyard_manifest::OnFailure::Queue { topic } => Some(topic),
            _ => None,
        })
        .collect();
    for topic in queues {
        let name = format!("switchyard.queued-calls.{topic}");
        let body = json!({
            "topics": [topic],
            "types": ["switchyard.queued-call"],
            "endpoint": format!("{}/v1/queued-calls", control.gateway_url),
            "concurrency": 4,
        });
        call(control, "PUT", &format!("/v1/subscriptions/{name}"), body)
            .await
            .with_context(|| format!("creating subscription {name} (queued calls)"))?;
    }
    for sub in system.all_subscriptions() {
        let endpoint = match &sub.endpoint {
            Endpoint::Url(u) => u.clone(),
            Endpoint::Service { service, .. }
                if system.services.get(service).is_some_and(|s| s.in_process) =>
            {
                // It reads the journal itself, with its cursors in its own database; a push
                // subscription left from a run when it was a process would deliver twice.
                let _ = bus.delete(&sub.name).await;
                continue;
            }
            Endpoint::Service { service, path } => {
                if !chosen(service) {
                    // Not started: its events wait in the journal (a subscription kept
                    // from an earlier run would otherwise push to a dead port and park).
                    bus.pause(&sub.name).await;
                    continue;
                }
                format!("http://127.0.0.1:{}{path}", ports[service])
            }
        };
        let r = &sub.retry;
        let body = json!({
            "topics": sub.topics,
            "types": sub.types,
            "endpoint": endpoint,
            "concurrency": sub.concurrency,
            "max-batch": sub.max_batch,
            "retry": {
                "initial-backoff-ms": r.initial_backoff.as_millis() as u64,
                "max-backoff-ms": r.max_backoff.as_millis() as u64,
                "multiplier": r.multiplier,
                "jitter": r.jitter,
                "max-attempts": r.max_attempts,
                "max-age-ms": r.max_age.as_millis() as u64,
            },
        });
        call(
            control,
            "PUT",
            &format!("/v1/subscriptions/{}", sub.name),
            body,
        )
        .await
        .with_context(|| format!("creating subscription {}", sub.name))?;
    }
    Ok(())
}

/// One request to the current platform's router, in process.
async fn call(
    control: &Control,
    method: &str,
    path: &str,
    body: serde_json::Value,
) -> anyhow::Result<()> {
    let req = axum::http::Request::builder()
        .method(method)
        .uri(path)
        .header("content-type", "application/json")
        .body(axum::body::Body::from(body.to_string()))?;
    let router = control.api.load_full().as_ref().clone();
    let resp = router.oneshot(req).await?;
    if resp.status().is_success() {
        return Ok(());
    }
    let status = resp.status();
    let bytes = axum::body::to_bytes(resp.into_body(), 64 << 10)
        .await
        .unwrap_or_default();
    Err(anyhow!("{status}: {}", String::from_utf8_lossy(&bytes)))
}

fn assign_ports(system: &System) -> anyhow::Result<BTreeMap<String, u16>> {
    let mut out = BTreeMap::new();
    // Hold every picked port until all are picked, so two services never get the same.
    let mut held = Vec::new();
    for s in system.services.values() {
        let port = match s.port {
            Some(p) => p,
            None => {
                let l = std::net::TcpListener::bind("127.0.0.1:0")
                    .context("finding a free port for a service")?;
                let p = l.local_addr()?.port();
                held.push(l);
                p
            }
        };
        out.insert(s.name.clone(), port);
    }
    Ok(out)
}

/// The gateway admin API's token: `SWITCHYARD_GATEWAY_TOKEN` when set (at least 16
/// characters), else none (the dev runner listens on loopback).
fn gateway_admin_token() -> anyhow::Result<Option<String>> {
    crate::serve::admin_token_from_env(crate::serve::GATEWAY_TOKEN_ENV)
}

fn print_ready(system: &System, board: &Board, url: &str, gateway: &str, took: Duration) {
    let b = lock(board);
    let width = b.keys().map(String::len).max().unwrap_or(7).max(7);
    println!();
    println!("{:width$}  {:>5}  {:27}  state", "service", "port", "url");
    for s in b.values() {
        println!(
            "{:width$}  {:>5}  {:27}  {}",
            s.name, s.port, s.url, s.state
        );
    }
    println!();
    println!(
        "switchyard dev: {} ready in {} ms; API {url}, status {url}/v1/system/status, gateway {gateway}; Ctrl-C stops",
        system.name,
        took.as_millis()
    );
}

/// The runner's routes, with the platform's API behind them.
fn control_routes(control: Control) -> Router {
    Router::new()
        .route("/v1/system/status", get(status))
        .route("/v1/system/reset", post(reset_route))
        .route("/v1/system/snapshots", get(list_snapshots))
        .route("/v1/system/snapshots/{name}", put(save_snapshot))
        .route(
            "/v1/system/snapshots/{name}/restore",
            post(restore_snapshot),
        )
        .fallback(forward)
        .with_state(control)
}

async fn forward(State(c): State<Control>, req: axum::extract::Request) -> Response {
    let router = c.api.load_full().as_ref().clone();
    match router.oneshot(req).await {
        Ok(r) => r,
        Err(never) => match never {},
    }
}

/// The API while the platform restarts.
fn restarting() -> Router {
    Router::new().fallback(|| async {
        problem(
            StatusCode::SERVICE_UNAVAILABLE,
            "restarting",
            "the platform is restarting (reset or snapshot restore); try again in a moment",
        )
    })
}

fn problem(status: StatusCode, code: &'static str, detail: &str) -> Response {
    switchyard_server::problem::Problem::new(status, code, detail).into_response()
}

async fn status(State(c): State<Control>) -> Response {
    let services: Vec<ServiceStatus> = lock(&c.board).values().cloned().collect();
    axum::Json(json!({
        "system": c.system.name,
        "api": c.url,
        "state-dir": c.state.root.display().to_string(),
        "services": services,
        "consumers": consumers(&c).await,
    }))
    .into_response()
}

/// Where the in-process services' consumers stand, each partition with its lag (the
/// journal's next offset minus the consumer's position), like a push subscription's.
async fn consumers(c: &Control) -> Vec<serde_json::Value> {
    let (Some(host), Some(journal)) = (&c.hosted, lock(&c.journal).clone()) else {
        return Vec::new();
    };
    let mut ends: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    let mut out = Vec::new();
    for p in host.consumers() {
        if !ends.contains_key(&p.topic) {
            let next = match switchyard_journal::TopicName::new(&p.topic) {
                Ok(t) => match journal.describe_topic(&t).await {
                    Ok(info) => info.partitions.iter().map(|x| x.next_offset).collect(),
                    Err(_) => Vec::new(),
                },
                Err(_) => Vec::new(),
            };
            ends.insert(p.topic.clone(), next);
        }
        let next = ends[&p.topic]
            .get(p.partition as usize)
            .copied()
            .unwrap_or(p.position);
        out.push(json!({
            "service": p.service,
            "topic": p.topic,
            "partition": p.partition,
            "position": p.position,
            "next-offset": next,
            "lag": next.saturating_sub(p.position),
            "in-flight": p.in_flight,
        }));
    }
    out
}

async fn ask(c: &Control, request: Request) -> Response {
    let (tx, rx) = oneshot::channel();
    if c.requests.send((request, tx)).await.is_err() {
        return problem(
            StatusCode::SERVICE_UNAVAILABLE,
            "stopping",
            "the runner is stopping",
        );
    }
    match rx.await {
        Ok(Ok(body)) => axum::Json(body).into_response(),
        Ok(Err(e)) => problem(StatusCode::CONFLICT, "state-operation-failed", &e),
        Err(_) => problem(
            StatusCode::SERVICE_UNAVAILABLE,
            "stopping",
            "the runner is stopping",
        ),
    }
}

async fn reset_route(State(c): State<Control>) -> Response {
    ask(&c, Request::Reset).await
}

async fn save_snapshot(State(c): State<Control>, UrlPath(name): UrlPath<String>) -> Response {
    snapshot_request(&c, name, Request::Save).await
}

async fn restore_snapshot(State(c): State<Control>, UrlPath(name): UrlPath<String>) -> Response {
    snapshot_request(&c, name, Request::Restore).await
}

async fn snapshot_request(c: &Control, name: String, request: fn(String) -> Request) -> Response {
    match state::check_snapshot_name(&name) {
        Ok(()) => ask(c, request(name)).await,
        Err(e) => problem(
            StatusCode::BAD_REQUEST,
            "invalid-snapshot-name",
            &e.to_string(),
        ),
    }
}

async fn list_snapshots(State(c): State<Control>) -> Response {
    match c.state.list() {
        Ok(l) => axum::Json(json!({ "snapshots": l })).into_response(),
        Err(e) => problem(StatusCode::INTERNAL_SERVER_ERROR, "io", &format!("{e:#}")),
    }
}
