//! [`Gateway`]: the handle. `start` replays the routes topic, syncs the declared routes into
//! it, builds the table and starts the tail (which applies every later change, whoever
//! wrote it) and the health checker. `router` is the gateway listener's app; `admin_router`
//! the admin API, for the platform's API listener.

use crate::history::{self, Change, Origin, State};
use crate::pool::Upstreams;
use crate::problem::Problem;
use crate::proxy::{self, Ids};
use crate::table::{Boards, Services, Table};
use crate::upstream::{Probe, prober};
use arc_swap::ArcSwap;
use axum::body::Body;
use axum::extract::{ConnectInfo, Request, State as AxState};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use switchyard_journal::Journal;
use switchyard_manifest::RouteSpec;
use tokio::sync::watch;

/// What the gateway starts with.
#[derive(Clone, Debug, Default)]
pub struct GatewayOptions {
    /// The routes of switchyard.toml (`System::routes`), already checked.
    pub declared: Vec<RouteSpec>,
    /// Where the system's services listen.
    pub services: Services,
    /// The admin API's bearer token; `None`: the admin API is open (loopback only is the
    /// caller's rule).
    pub admin_token: Option<String>,
    /// Each service's declared dependencies, which service-to-service calls must follow.
    pub dependencies: crate::calls::Dependencies,
    /// Each service's secret for service-to-service calls (`Switchyard-Call-Token`): a call
    /// without one of them is refused.
    pub call_tokens: crate::calls::CallTokens,
    /// Where quotas are counted; without a store a route with a quota is left out.
    pub store: Option<Arc<dyn switchyard_store::Store>>,
    /// Access records waiting for the journal, at most; more are dropped and counted.
    /// 0: [`crate::access::DEFAULT_BUFFER`].
    pub access_log_buffer: usize,
    /// The fault table (`switchyard chaos`); the runner keeps one across restarts.
    pub faults: crate::faults::Faults,
    /// Values of variables the routes' auth names (`secret-env`, `api-keys-env`, ...),
    /// looked up before the process environment: the dev runner's development secrets.
    pub secrets: std::collections::BTreeMap<String, String>,
}

/// The one error of [`Gateway::start`].
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("the gateway's routes topic: {0}")]
    Journal(#[from] switchyard_journal::Error),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// The gateway. Cheap to clone.
#[derive(Clone)]
pub struct Gateway {
    pub(crate) inner: Arc<Inner>,
}

impl std::fmt::Debug for Gateway {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gateway").finish_non_exhaustive()
    }
}

pub(crate) struct Inner {
    pub(crate) journal: Arc<dyn Journal>,
    pub(crate) table: ArcSwap<Table>,
    /// The history applied so far (written by the tail only, after start).
    pub(crate) state: Mutex<State>,
    pub(crate) services: ArcSwap<Services>,
    boards: Arc<Boards>,
    pub(crate) quotas: Arc<crate::limits::Quotas>,
    pub(crate) limit_stats: crate::limits::LimitStats,
    pub(crate) access: crate::access::AccessLog,
    /// The access log's writer, stopped last (it flushes).
    access_writer: Mutex<Option<tokio::task::JoinHandle<()>>>,
    probes: watch::Sender<Vec<Probe>>,
    /// The next offset of the routes topic the table reflects.
    pub(crate) applied: watch::Sender<u64>,
    /// One admin change at a time.
    pub(crate) writer: tokio::sync::Mutex<()>,
    pub(crate) upstreams: Upstreams,
    /// For health checks' peers and JWKS fetches.
    pub(crate) prober: prober::Client,
    pub(crate) admin_token: Option<String>,
    pub(crate) dependencies: ArcSwap<crate::calls::Dependencies>,
    pub(crate) call_tokens: ArcSwap<crate::calls::CallTokens>,
    pub(crate) breakers: crate::calls::Breakers,
    pub(crate) faults: crate::faults::Faults,
    stop: watch::Sender<bool>,
    tasks: Mutex<Vec<tokio::task::JoinHandle<()>>>,
}

impl Gateway {
    /// Replays the routes topic (creating it when missing), makes the declared routes hold
    /// (a `put` for each declared route that differs from the history, a `delete` for each
    /// route that came from the file and no longer is in it), builds the table and starts
    /// the tail and the health checks.
    pub async fn start(journal: Arc<dyn Journal>, options: GatewayOptions) -> Result<Self> {
        history::ensure_topic(journal.as_ref()).await?;
        let mut state = State::new();
        let mut next = history::catch_up(journal.as_ref(), &mut state, 0).await?;
        let mut changes = Vec::new();
        for spec in &options.declared {
            if state.get(&spec.name).map(|(_, s)| s) != Some(spec) {
                changes.push(Change::Put {
                    origin: Origin::File,
                    route: Box::new(spec.clone()),
                });
            }
        }
        for (name, (origin, _)) in &state {
            if *origin == Origin::File && !options.declared.iter().any(|d| &d.name == name) {
                changes.push(Change::Delete {
                    origin: Origin::File,
                    name: name.clone(),
                });
            }
        }
        for c in &changes {
            history::append(journal.as_ref(), c).await?;
        }
        if !changes.is_empty() {
            next = history::catch_up(journal.as_ref(), &mut state, next).await?;
        }
        let (probes, probes_rx) = watch::channel(Vec::new());
        let (stop, stop_rx) = watch::channel(false);
        let (access, access_writer) = crate::access::AccessLog::start(
            journal.clone(),
            match options.access_log_buffer {
                0 => crate::access::DEFAULT_BUFFER,
                n => n,
            },
            stop_rx.clone(),
        );
        options.faults.set_services(&options.services);
        let inner = Arc::new(Inner {
            journal,
            table: ArcSwap::from_pointee(Table::default()),
            state: Mutex::new(state),
            services: ArcSwap::from_pointee(options.services),
            boards: Arc::new(Boards {
                quotas: options.store.is_some(),
                secrets: options.secrets,
                ..Boards::default()
            }),
            quotas: Arc::new(crate::limits::Quotas::new(options.store)),
            limit_stats: Default::default(),
            access,
            access_writer: Mutex::new(Some(access_writer)),
            probes,
            applied: watch::channel(next).0,
            writer: tokio::sync::Mutex::new(()),
            upstreams: Upstreams::new(),
            prober: prober::Client::default(),
            admin_token: options.admin_token,
            dependencies: ArcSwap::from_pointee(options.dependencies),
            call_tokens: ArcSwap::from_pointee(options.call_tokens),
            breakers: crate::calls::Breakers::default(),
            faults: options.faults,
            stop,
            tasks: Mutex::new(Vec::new()),
        });
        let gw = Self { inner };
        gw.rebuild();
        let checker = tokio::spawn(crate::upstream::check_loop(
            probes_rx,
            prober::Client::default(),
            stop_rx.clone(),
        ));
        let upkeep = tokio::spawn(crate::limits::upkeep(
            gw.inner.boards.clone(),
            gw.inner.quotas.clone(),
            stop_rx.clone(),
        ));
        let tail = tokio::spawn(tail(gw.inner.clone(), next, stop_rx));
        lock(&gw.inner.tasks).extend([checker, tail, upkeep]);
        Ok(gw)
    }

    /// Builds a new table from the state and the services, and swaps it in.
    pub(crate) fn rebuild(&self) {
        let specs: Vec<RouteSpec> = lock(&self.inner.state)
            .values()
            .map(|(_, s)| s.clone())
            .collect();
        let table = Table::build(specs, &self.inner.services.load(), &self.inner.boards);
        for (name, why) in &table.broken {
            tracing::warn!("gateway route {name} is left out: {why}");
        }
        let probes = table.probes();
        let keep: Vec<(String, String)> = probes
            .iter()
            .map(|p| (p.url.clone(), p.spec.path.clone()))
            .collect();
        self.inner.table.store(Arc::new(table));
        self.inner.boards.health.retain(&keep);
        self.inner.probes.send_replace(probes);
    }

    /// Where the services listen now (the dev runner after it picked the ports); routes to
    /// services are rebuilt.
    pub fn set_services(&self, services: Services) {
        self.inner.faults.set_services(&services);
        self.inner.services.store(Arc::new(services));
        self.rebuild();
    }

    /// Each service's declared dependencies (the manifests changed).
    pub fn set_dependencies(&self, dependencies: crate::calls::Dependencies) {
        self.inner.dependencies.store(Arc::new(dependencies));
    }

    /// The current table.
    pub fn table(&self) -> Arc<Table> {
        self.inner.table.load_full()
    }

    /// The routes with who last changed each.
    pub fn routes(&self) -> Vec<(Origin, RouteSpec)> {
        lock(&self.inner.state).values().cloned().collect()
    }

    /// Appends `change` and waits until the tail has applied it (the table holds it).
    pub async fn change(&self, change: Change) -> Result<(), Problem> {
        let _one = self.inner.writer.lock().await;
        let offset = history::append(self.inner.journal.as_ref(), &change)
            .await
            .map_err(|e| {
                Problem::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "journal-unavailable",
                    format!(
                        "the change could not be written to {}: {e}",
                        history::ROUTES_TOPIC
                    ),
                )
            })?;
        let mut applied = self.inner.applied.subscribe();
        let waited = tokio::time::timeout(
            Duration::from_secs(10),
            applied.wait_for(|&next| next > offset),
        )
        .await;
        match waited {
            Ok(Ok(_)) => Ok(()),
            _ => Err(Problem::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "gateway-not-applied",
                format!(
                    "the change is written ({} offset {offset}) but the table did not take it \
                     within 10 s; it will when the gateway catches up",
                    history::ROUTES_TOPIC
                ),
            )),
        }
    }

    /// The quota counters of `route` in the store (`Problem` when there is no store or it
    /// fails).
    pub async fn quota_usage(
        &self,
        route: &str,
    ) -> Result<Vec<switchyard_store::QuotaUsage>, Problem> {
        self.inner
            .quotas
            .usage(route)
            .await
            .map_err(|e| Problem::new(StatusCode::SERVICE_UNAVAILABLE, "quota-unavailable", e))
    }

    /// The gateway's counters in the Prometheus text format.
    pub fn render_metrics(&self) -> String {
        use std::fmt::Write as _;
        use std::sync::atomic::Ordering::Relaxed;
        let l = &self.inner.limit_stats;
        let a = &self.inner.access.stats;
        let rows = [
            (
                "switchyard_gateway_access_records_written_total",
                "Access records appended to their topics.",
                a.written.load(Relaxed),
            ),
            (
                "switchyard_gateway_access_records_dropped_total",
                "Access records dropped because the buffer to the journal was full.",
                a.dropped.load(Relaxed),
            ),
            (
                "switchyard_gateway_access_records_failed_total",
                "Access records lost because their append failed.",
                a.failed.load(Relaxed),
            ),
            (
                "switchyard_gateway_rate_limited_total",
                "Requests refused by a route's rate limit (429 rate-limited).",
                l.rate_limited.load(Relaxed),
            ),
            (
                "switchyard_gateway_quota_exceeded_total",
                "Requests refused by a route's quota (429 quota-exceeded).",
                l.quota_exceeded.load(Relaxed),
            ),
            (
                "switchyard_gateway_quota_unavailable_total",
                "Requests refused because the store could not count a quota (503).",
                l.quota_unavailable.load(Relaxed),
            ),
        ];
        let mut out = String::new();
        for (name, help, v) in rows {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} counter\n{name} {v}"
            );
        }
        out
    }

    /// The gateway listener's app as an axum router, for a listener that also serves other
    /// things (the dev runner's, which swaps gateways across restarts): service-to-service
    /// calls under `/v1/call/`, and every other request matched against the route table.
    /// The peer address comes from the request's `ConnectInfo` ([`serve_app`] puts it there).
    pub fn router(&self) -> axum::Router {
        axum::Router::new()
            .fallback(|AxState(gw): AxState<Gateway>, req: Request| async move {
                let peer = req
                    .extensions()
                    .get::<ConnectInfo<SocketAddr>>()
                    .map(|c| c.0);
                respond(&gw, req, peer).await
            })
            .with_state(self.clone())
    }

    /// Serves the gateway on `listener` until `shutdown`. Each connection answers with
    /// [`respond`] directly, with no router in between (the same answers as
    /// [`Gateway::router`]'s).
    pub async fn serve(
        &self,
        listener: tokio::net::TcpListener,
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        serve_connections(listener, self.clone(), Box::pin(shutdown)).await
    }

    /// Serves [`Gateway::router`] on `threads` threads of its own until `stop` turns true,
    /// the way nginx runs its workers: each thread is a single-threaded runtime with its
    /// own listening socket on `listener`'s address (`SO_REUSEPORT`: the kernel spreads the
    /// connections over them) and its own upstream connections, so a request, its upstream
    /// exchange and its answer stay on one thread, with no hand-off between threads and no
    /// work stealing. `listener` (bound with `SO_REUSEPORT`, see [`bind_shared`]) is the
    /// first thread's. Returns once every thread has stopped; a thread that cannot start
    /// or fails stops the others, and its error is returned.
    pub async fn serve_threads(
        &self,
        listener: std::net::TcpListener,
        threads: usize,
        stop: watch::Receiver<bool>,
    ) -> std::io::Result<()> {
        let addr = listener.local_addr()?;
        let mut listeners = vec![listener];
        for _ in 1..threads.max(1) {
            listeners.push(bind_shared(addr)?);
        }
        // A thread that cannot start or fails stops the others: the gateway serves on all
        // its threads or not at all (and the error is returned).
        let (failed_tx, failed_rx) = watch::channel(false);
        let mut done = Vec::new();
        let mut result = Ok(());
        for (i, listener) in listeners.into_iter().enumerate() {
            let gw = self.clone();
            let (mut stop, mut failed) = (stop.clone(), failed_rx.clone());
            let fail = failed_tx.clone();
            let (tx, rx) = tokio::sync::oneshot::channel::<std::io::Result<()>>();
            let spawned = std::thread::Builder::new()
                .name(format!("gateway-{}", i + 1))
                .spawn(move || {
                    let served = (|| {
                        let rt = tokio::runtime::Builder::new_current_thread()
                            .enable_all()
                            .build()?;
                        crate::pool::SERVING_THREAD.with(|t| t.set(i + 1));
                        rt.block_on(async move {
                            listener.set_nonblocking(true)?;
                            let listener = tokio::net::TcpListener::from_std(listener)?;
                            let stopped = async move {
                                tokio::select! {
                                    _ = stop.wait_for(|&s| s) => {}
                                    _ = failed.wait_for(|&f| f) => {}
                                }
                            };
                            serve_connections(listener, gw, Box::pin(stopped)).await
                        })
                    })();
                    if served.is_err() {
                        fail.send_replace(true);
                    }
                    let _ = tx.send(served);
                });
            match spawned {
                Ok(_) => done.push(rx),
                Err(e) => {
                    failed_tx.send_replace(true);
                    result = Err(e);
                    break;
                }
            }
        }
        for rx in done {
            match rx.await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => result = result.and(Err(e)),
                Err(_) => {
                    failed_tx.send_replace(true);
                    result = result.and(Err(std::io::Error::other("a gateway thread panicked")));
                }
            }
        }
        result
    }

    /// Stops the tail, the health checks and the upkeep, gives the unspent quota units back
    /// to the store, and writes the access records still queued (for up to 10 s).
    pub async fn shutdown(&self) {
        self.inner.stop.send_replace(true);
        let tasks: Vec<_> = lock(&self.inner.tasks).drain(..).collect();
        for t in tasks {
            t.abort();
            let _ = t.await;
        }
        self.inner.quotas.release_idle(Duration::ZERO).await;
        let writer = lock(&self.inner.access_writer).take();
        if let Some(mut w) = writer
            && tokio::time::timeout(Duration::from_secs(10), &mut w)
                .await
                .is_err()
        {
            w.abort();
        }
    }

    /// The access log's counters: records written, dropped (buffer full), failed.
    pub fn access_stats(&self) -> &crate::access::AccessStats {
        &self.inner.access.stats
    }
}

/// A listening socket on `addr` that other sockets may listen on too (`SO_REUSEPORT`), for
/// [`Gateway::serve_threads`]. Port 0 picks a free port; bind the others to the port this
/// one got. Linux lets only sockets of the same user that also ask for sharing join: a port
/// another program holds is refused as usual.
pub fn bind_shared(addr: SocketAddr) -> std::io::Result<std::net::TcpListener> {
    let socket = socket2::Socket::new(
        socket2::Domain::for_address(addr),
        socket2::Type::STREAM,
        Some(socket2::Protocol::TCP),
    )?;
    socket.set_reuse_address(true)?;
    socket.set_reuse_port(true)?;
    socket.bind(&addr.into())?;
    socket.listen(1024)?;
    Ok(socket.into())
}

/// Serves any gateway app (the router, or one that swaps between gateways) until
/// `shutdown`, each request with its peer's address (`ConnectInfo`).
pub async fn serve_app(
    listener: tokio::net::TcpListener,
    app: axum::Router,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    serve_connections(listener, app, Box::pin(shutdown)).await
}

/// What answers the requests of a gateway listener's connections.
trait Answers: Clone + Send + Sync + 'static {
    fn answer(
        &self,
        req: Request,
        peer: SocketAddr,
    ) -> impl std::future::Future<Output = Response> + Send + use<Self>;
}

impl Answers for Gateway {
    fn answer(
        &self,
        req: Request,
        peer: SocketAddr,
    ) -> impl std::future::Future<Output = Response> + Send + use<> {
        let gw = self.clone();
        async move { respond(&gw, req, Some(peer)).await }
    }
}

impl Answers for axum::Router {
    fn answer(
        &self,
        mut req: Request,
        peer: SocketAddr,
    ) -> impl std::future::Future<Output = Response> + Send + use<> {
        use tower::ServiceExt as _;
        req.extensions_mut().insert(ConnectInfo(peer));
        let answered = self.clone().oneshot(req);
        async move {
            match answered.await {
                Ok(r) => r,
                Err(never) => match never {},
            }
        }
    }
}

/// Serves HTTP/1.1 on `listener` until `shutdown`: each connection (`TCP_NODELAY`) in a
/// task of its own, its requests answered by `app`. Then it stops accepting, lets each
/// connection finish the request it is on, and returns once all are closed. This is the
/// hot path of every proxied request: hyper's connection directly, with no protocol
/// sniffing and no boxed future per request. The shutdown signal comes boxed, so this loop
/// is compiled (and optimized) in this crate whatever crate the signal comes from (the
/// command line's is built for size).
async fn serve_connections(
    listener: tokio::net::TcpListener,
    app: impl Answers,
    mut shutdown: std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>,
) -> std::io::Result<()> {
    // `closing` tells the connections to finish; each holds an `open` receiver, so the
    // sender's `closed` is when the last has ended.
    let (closing_tx, closing_rx) = watch::channel(false);
    let (open_tx, open_rx) = watch::channel(());
    loop {
        let (tcp, peer) = tokio::select! {
            _ = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    accept_failed(e).await;
                    continue;
                }
            },
        };
        let _ = tcp.set_nodelay(true);
        let app = app.clone();
        let service =
            hyper::service::service_fn(move |req: http::Request<hyper::body::Incoming>| {
                let answered = app.answer(req.map(Body::new), peer);
                async move { Ok::<_, std::convert::Infallible>(answered.await) }
            });
        let (mut closing, open) = (closing_rx.clone(), open_rx.clone());
        tokio::spawn(async move {
            let conn = hyper::server::conn::http1::Builder::new()
                .serve_connection(hyper_util::rt::TokioIo::new(tcp), service);
            let mut conn = std::pin::pin!(conn);
            tokio::select! {
                biased;
                _ = conn.as_mut() => {}
                // Set once, never set back; an error: the server is gone.
                _ = closing.changed() => {
                    conn.as_mut().graceful_shutdown();
                    let _ = conn.await;
                }
            }
            drop(open);
        });
    }
    drop(open_rx);
    closing_tx.send_replace(true);
    open_tx.closed().await;
    Ok(())
}

/// After a failed `accept`: a connection reset before it was taken is nothing; anything
/// else (out of file descriptors, say) waits a second, as hyper and axum do, so the loop
/// does not spin while connections close.
async fn accept_failed(e: std::io::Error) {
    use std::io::ErrorKind::{ConnectionAborted, ConnectionRefused, ConnectionReset};
    if matches!(
        e.kind(),
        ConnectionRefused | ConnectionAborted | ConnectionReset
    ) {
        return;
    }
    tracing::error!("gateway: accepting a connection failed: {e}");
    tokio::time::sleep(Duration::from_secs(1)).await;
}

pub(crate) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Applies every change appended after `next`, by this instance or any other.
async fn tail(inner: Arc<Inner>, mut next: u64, mut stop: watch::Receiver<bool>) {
    let gw = Gateway { inner };
    let topic = history::topic();
    loop {
        let waited = tokio::select! {
            r = gw.inner.journal.wait_for(&topic, 0, next) => r,
            _ = stop.wait_for(|&s| s) => return,
        };
        if let Err(e) = waited {
            tracing::warn!("gateway: waiting on {}: {e}", history::ROUTES_TOPIC);
            tokio::time::sleep(Duration::from_millis(500)).await;
            continue;
        }
        let mut state = lock(&gw.inner.state).clone();
        match history::catch_up(gw.inner.journal.as_ref(), &mut state, next).await {
            Ok(n) => {
                *lock(&gw.inner.state) = state;
                gw.rebuild();
                next = n;
                gw.inner.applied.send_replace(next);
            }
            Err(e) => {
                tracing::warn!("gateway: reading {}: {e}", history::ROUTES_TOPIC);
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }
    }
}

/// Every request on the gateway listener, from `peer`.
async fn respond(gw: &Gateway, req: Request, peer: Option<SocketAddr>) -> Response {
    let ids = Ids::of(req.headers());
    let mut resp = match req.uri().path().strip_prefix("/v1/call/") {
        Some(rest) => {
            let rest = rest.to_string();
            crate::calls::call(gw, &rest, req, peer, &ids).await
        }
        None if req.uri().path() == "/v1/queued-calls" && req.method() == http::Method::POST => {
            crate::calls::deliver_queued(gw, req, &ids).await
        }
        None => route_request(gw, req, peer, &ids).await,
    };
    resp.headers_mut()
        .insert(crate::trace::REQUEST_ID, ids.request_id.clone());
    resp
}

async fn route_request(
    gw: &Gateway,
    req: Request<Body>,
    peer: Option<SocketAddr>,
    ids: &Ids,
) -> Response {
    let started = std::time::Instant::now();
    let at = std::time::SystemTime::now();
    let found = {
        let table = gw.inner.table.load();
        let host = proxy::host_of(&req);
        let path = req.uri().path();
        table.find(&host, req.method(), path).map(|(route, caps)| {
            let target = route.pool.pick().map(|target| {
                let mut forwarded = String::with_capacity(target.base.len() + path.len() + 64);
                forwarded.push_str(&target.base);
                route.forward_path(path, &caps, &mut forwarded);
                if let Some(q) = req.uri().query() {
                    forwarded.push('?');
                    forwarded.push_str(q);
                }
                (target.authority.clone(), target.url.clone(), forwarded)
            });
            let params: Vec<(String, String)> = match &route.compose {
                Some(_) => caps
                    .params
                    .iter()
                    .map(|(n, v)| (n.to_string(), v.to_string()))
                    .collect(),
                None => Vec::new(),
            };
            (route.clone(), target, params)
        })
    };
    let Some((route, target, params)) = found else {
        return Problem::new(
            StatusCode::NOT_FOUND,
            "no-route",
            format!(
                "no gateway route takes {} {}",
                req.method(),
                req.uri().path()
            ),
        )
        .into_response();
    };
    let logged = route.spec.access_log.as_ref().map(|log| {
        (
            log.topic.clone(),
            req.method().clone(),
            req.uri().path().to_string(),
        )
    });
    let mut consumer = None;
    let upstream = logged
        .as_ref()
        .and(target.as_ref())
        .map(|(_, url, _)| url.clone());
    let resp = answer(gw, &route, target, params, req, peer, ids, &mut consumer).await;
    if let Some((topic, method, path)) = logged {
        gw.inner.access.record(crate::access::Entry {
            topic,
            route: route.spec.name.clone(),
            method,
            path,
            status: resp.status().as_u16(),
            latency: started.elapsed(),
            request_id: ids.request_id.clone(),
            traceparent: ids.traceparent.clone(),
            consumer,
            upstream,
            at,
        });
    }
    resp
}

fn no_healthy_upstream(route: &crate::table::Route) -> Response {
    Problem::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "no-healthy-upstream",
        format!(
            "route {} has no healthy upstream ({} checked)",
            route.spec.name,
            route.pool.targets.len()
        ),
    )
    .header("retry-after", "1")
    .into_response()
}

/// A matched route's answer: auth, limits, then the upstream's (or, for a composed route,
/// its parts' merged). `consumer` is set once the credentials are accepted.
#[allow(clippy::too_many_arguments)]
async fn answer(
    gw: &Gateway,
    route: &crate::table::Route,
    target: Option<(http::uri::Authority, String, String)>,
    params: Vec<(String, String)>,
    mut req: Request<Body>,
    peer: Option<SocketAddr>,
    ids: &Ids,
    consumer: &mut Option<String>,
) -> Response {
    if target.is_none() && route.compose.is_none() {
        return no_healthy_upstream(route);
    }
    let limited = route.rate.is_some() || route.spec.quota.is_some();
    let who = if let Some(auth) = &route.auth {
        let granted = match auth.check(req.headers(), &gw.inner.prober).await {
            Ok(g) => g,
            Err(p) => return p.into_response(),
        };
        auth.strip(req.headers_mut());
        for (n, v) in granted.headers {
            req.headers_mut().insert(n, v);
        }
        Some(granted.consumer)
    } else if limited || route.spec.access_log.is_some() {
        Some(match peer {
            Some(p) => format!("ip:{}", p.ip()),
            None => "ip:unknown".to_string(),
        })
    } else {
        // Nothing counts or records who asked: not worth a string per request.
        None
    };
    *consumer = who;
    let budget = if let (true, Some(who)) = (limited, consumer.as_deref()) {
        match crate::limits::admit(route, &gw.inner.quotas, &gw.inner.limit_stats, who).await {
            Ok(b) => b,
            Err(p) => return p.into_response(),
        }
    } else {
        None
    };
    let mut resp = match (&route.compose, target) {
        (Some(c), _) => {
            crate::compose::answer(gw, &route.spec.name, c, req, params, peer, ids).await
        }
        (None, Some(t)) => forward(gw, route, t, req, peer, ids).await,
        (None, None) => no_healthy_upstream(route),
    };
    if let Some(b) = budget {
        b.apply(resp.headers_mut());
    }
    resp
}

/// Forwards to the route's upstream `target`, after any fault injected on it.
async fn forward(
    gw: &Gateway,
    route: &crate::table::Route,
    (authority, url, forwarded): (http::uri::Authority, String, String),
    req: Request<Body>,
    peer: Option<SocketAddr>,
    ids: &Ids,
) -> Response {
    let what = || format!("upstream {url} of route {}", route.spec.name);
    let mut timeout = route.timeout;
    let injected = match &route.spec.service {
        Some(s) => gw.inner.faults.for_service(s),
        None => gw.inner.faults.for_url(&url).map(|(_, i)| i),
    };
    if let Some(i) = injected {
        match crate::faults::answer(&i, timeout, &what()).await {
            Ok(rest) => timeout = rest,
            Err(resp) => return resp,
        }
    }
    // Only a route that rewrites the path can have to map a redirect back (a cheap clone:
    // the URI's bytes are shared).
    let rewrites = route.spec.rewrite.is_some() || route.spec.strip_prefix;
    let client_uri = rewrites.then(|| req.uri().clone());
    match proxy::forward(
        &gw.inner.upstreams,
        req,
        &authority,
        &forwarded,
        peer,
        ids,
        timeout,
    )
    .await
    {
        Ok(mut r) => {
            if let Some(client) = client_uri {
                let upstream_path = forwarded.split('?').next().unwrap_or_default();
                let moved = r
                    .headers()
                    .get(http::header::LOCATION)
                    .and_then(|l| l.to_str().ok())
                    .and_then(|l| proxy::relocated(l, client.path(), upstream_path, &authority))
                    .and_then(|l| http::HeaderValue::from_str(&l).ok());
                if let Some(l) = moved {
                    r.headers_mut().insert(http::header::LOCATION, l);
                }
            }
            r
        }
        Err(f) => f.problem(&what()).into_response(),
    }
}
