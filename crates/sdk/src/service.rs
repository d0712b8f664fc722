//! [`Service`]: a service's handlers, routes and background tasks, and what one run of it
//! does: open its database and the SDK's tables, start the outbox relay, consume its topics
//! (pulled from the platform, or pushed to `POST /events`), serve its HTTP routes with
//! `GET /healthz` on its port, until it is stopped or one of its parts fails.

use crate::consume::{HandlerFn, Handlers, PartitionWorker, RetryPolicy, panic_message};
use crate::context::{Context, Handle, Shared};
use crate::db::Backend;
use crate::error::{Error, HandlerError, Result};
use crate::event::{CloudEvent, Event};
use crate::log::Log;
use crate::outbox::Outbox;
use crate::platform::Platform;
use crate::progress::Positions;
use axum::Router;
use futures::future::BoxFuture;
use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use tokio::task::JoinSet;

type RoutesFn<DB> = Arc<dyn Fn(Handle<DB>) -> Router + Send + Sync>;
type TaskFn<DB> = Arc<dyn Fn(Handle<DB>) -> BoxFuture<'static, Result<()>> + Send + Sync>;

/// How a service gets its events.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Consume {
    /// It reads its topics itself, from cursors in its own database (committed with each
    /// handler's writes): from the journal in process, or over the HTTP API's streams.
    Pull,
    /// A subscription pushes to its `POST /events`; it reads nothing itself.
    Push,
}

/// What the host gives one run of a service.
#[derive(Clone, Debug)]
pub struct Launch {
    pub platform: Platform,
    /// Its settings: `PORT` and `DATABASE_URL` at least (under `switchyard dev`, what a
    /// process would find in its environment).
    pub env: BTreeMap<String, String>,
    pub log: Log,
    pub consume: Consume,
}

impl Launch {
    fn var(&self, name: &str) -> Result<&str> {
        self.env
            .get(name)
            .map(String::as_str)
            .ok_or_else(|| Error::config(name, "is not set"))
    }
}

/// A service: its name, its handlers by event type, its routes and background tasks.
///
/// Built once, run by a [`crate::Host`] (which restarts it when it fails).
pub struct Service<DB: Backend> {
    name: String,
    source: Option<String>,
    handlers: Handlers<DB>,
    routes: Option<RoutesFn<DB>>,
    tasks: Vec<TaskFn<DB>>,
    retry: RetryPolicy,
    errors: Vec<String>,
}

impl<DB: Backend> std::fmt::Debug for Service<DB> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Service")
            .field("name", &self.name)
            .field("topics", &self.topics())
            .finish()
    }
}

impl<DB: Backend> Service<DB> {
    /// A service named `name` (lower-case letters, digits and `-`); its events' `source`
    /// is `/<name>` unless [`Self::source`] says otherwise.
    pub fn new(name: &str) -> Self {
        let mut errors = Vec::new();
        let ok = !name.is_empty()
            && name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
        if !ok {
            errors.push(format!(
                "service name {name:?}: use lower-case letters, digits and `-`"
            ));
        }
        Service {
            name: name.to_string(),
            source: None,
            handlers: Handlers {
                by_topic: BTreeMap::new(),
            },
            routes: None,
            tasks: Vec::new(),
            retry: RetryPolicy::default(),
            errors,
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// The CloudEvents `source` of the events it publishes (default `/<name>`).
    pub fn source(mut self, source: &str) -> Self {
        self.source = Some(source.to_string());
        self
    }

    /// Handles events of type `E`: `handler(ctx, event)` runs in a transaction that also
    /// records the event in the inbox; `Ok` commits both (and the events it published),
    /// an error rolls both back and decides what happens to the event ([`HandlerError`]).
    /// Data that does not decode as `E` is rejected (parked) without calling the handler.
    pub fn on<E, F, Fut>(mut self, handler: F) -> Self
    where
        E: Event,
        F: Fn(Context<DB>, E) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), HandlerError>> + Send + 'static,
    {
        let handler = Arc::new(handler);
        let f: HandlerFn<DB> = Arc::new(move |ctx: Context<DB>, event: CloudEvent| {
            let handler = handler.clone();
            Box::pin(async move {
                let typed: E = event.data_as().map_err(HandlerError::reject)?;
                handler(ctx, typed).await
            })
        });
        let topic = self
            .handlers
            .by_topic
            .entry(E::TOPIC.to_string())
            .or_default();
        if topic.insert(E::TYPE.to_string(), f).is_some() {
            self.errors.push(format!(
                "two handlers for {} on {}: one per event type",
                E::TYPE,
                E::TOPIC
            ));
        }
        self
    }

    /// Its HTTP routes, built from the running service's [`Handle`] (on its port, beside
    /// `GET /healthz` and `POST /events`).
    pub fn routes(mut self, routes: impl Fn(Handle<DB>) -> Router + Send + Sync + 'static) -> Self {
        self.routes = Some(Arc::new(routes));
        self
    }

    /// A background task that runs as long as the service; an error or a panic in it
    /// restarts the service.
    pub fn task<F, Fut>(mut self, task: F) -> Self
    where
        F: Fn(Handle<DB>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<()>> + Send + 'static,
    {
        self.tasks.push(Arc::new(move |h| Box::pin(task(h))));
        self
    }

    /// How pulled events that fail are retried before they are parked.
    pub fn retry(mut self, policy: RetryPolicy) -> Self {
        self.retry = policy;
        self
    }

    /// The topics it consumes.
    pub fn topics(&self) -> Vec<&str> {
        self.handlers.by_topic.keys().map(String::as_str).collect()
    }

    fn check(&self, consume: Consume) -> Result<()> {
        if let Some(e) = self.errors.first() {
            return Err(Error::config(format!("service {}", self.name), e.clone()));
        }
        if consume == Consume::Push {
            let mut seen: BTreeMap<&str, &str> = BTreeMap::new();
            for (topic, types) in &self.handlers.by_topic {
                for ty in types.keys() {
                    if let Some(other) = seen.insert(ty, topic) {
                        return Err(Error::config(
                            format!("service {}", self.name),
                            format!(
                                "type {ty} is handled on {other} and on {topic}: a pushed event \
                                 does not say its topic (pull instead, or rename one)"
                            ),
                        ));
                    }
                }
            }
        }
        Ok(())
    }

    /// One run: until `stop` turns true (then `Ok`), or until one of its parts fails or
    /// panics (then the error, everything else stopped).
    pub(crate) async fn run(
        self: Arc<Self>,
        launch: Launch,
        stop: watch::Receiver<bool>,
        positions: Positions,
    ) -> Result<()> {
        self.check(launch.consume)?;
        let url = launch.var("DATABASE_URL")?;
        let port_text = launch.var("PORT")?;
        let port: u16 = port_text
            .parse()
            .map_err(|_| Error::config("PORT", format!("{port_text:?} is not a port")))?;
        // Pushed events are acknowledged after the commit: it must be on disk. Pulled ones
        // have their cursor in the same commit: a commit lost to a power loss is read again.
        let pool = DB::connect(url, launch.consume == Consume::Push).await?;
        let result = self
            .run_with(pool.clone(), port, &launch, stop, positions)
            .await;
        pool.close().await;
        result
    }

    async fn run_with(
        &self,
        pool: sqlx::Pool<DB>,
        port: u16,
        launch: &Launch,
        mut stop: watch::Receiver<bool>,
        positions: Positions,
    ) -> Result<()> {
        DB::migrate(&pool).await?;
        let source = self
            .source
            .clone()
            .unwrap_or_else(|| format!("/{}", self.name));
        let outbox = Outbox::new(pool.clone(), &source);
        let handle = Handle(Arc::new(Shared {
            name: self.name.clone(),
            outbox: outbox.clone(),
            platform: launch.platform.clone(),
            log: launch.log.clone(),
            env: launch.env.clone(),
        }));
        let mut set: JoinSet<Result<()>> = JoinSet::new();
        let relay = outbox.relay(Arc::new(launch.platform.clone()), launch.log.clone());
        let s = stop.clone();
        set.spawn(async move {
            relay.run(s).await;
            Ok(())
        });
        let pruned = handle.clone();
        let s = stop.clone();
        set.spawn(prune_inbox(pruned, s));
        if launch.consume == Consume::Pull {
            for topic in self.handlers.by_topic.keys() {
                let partitions = launch.platform.partitions(topic).await?;
                let cursors: BTreeMap<u32, u64> = DB::cursors(&pool, &self.name, topic)
                    .await?
                    .into_iter()
                    .collect();
                for p in partitions {
                    let start = cursors.get(&p.partition).copied().unwrap_or(0);
                    let worker = PartitionWorker {
                        handle: handle.clone(),
                        handlers: self.handlers.clone(),
                        topic: topic.clone(),
                        partition: p.partition,
                        policy: self.retry,
                        positions: positions.clone(),
                    };
                    set.spawn(worker.run(start, stop.clone()));
                }
            }
        }
        for task in &self.tasks {
            let fut = task(handle.clone());
            let mut s = stop.clone();
            set.spawn(async move {
                tokio::select! {
                    r = fut => r,
                    _ = crate::stopped(&mut s) => Ok(()),
                }
            });
        }
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
            .await
            .map_err(|e| Error::config("PORT", format!("listening on 127.0.0.1:{port}: {e}")))?;
        let app = self.router(handle.clone());
        let s = stop.clone();
        set.spawn(async move {
            axum::serve(listener, app)
                .with_graceful_shutdown(async move {
                    let mut s = s;
                    let _ = crate::stopped(&mut s).await;
                })
                .await
                .map_err(|e| Error::Stopped(format!("serving HTTP: {e}")))
        });
        loop {
            tokio::select! {
                _ = crate::stopped(&mut stop) => {
                    // Parts stop on the same signal; give them a moment, then cut them off.
                    let _ = tokio::time::timeout(Duration::from_secs(5), async {
                        while set.join_next().await.is_some() {}
                    })
                    .await;
                    set.shutdown().await;
                    return Ok(());
                }
                joined = set.join_next() => match joined {
                    None => return Ok(()),
                    // A part that ends by itself (a task with nothing more to do) is fine.
                    Some(Ok(Ok(()))) => {}
                    Some(Ok(Err(e))) => {
                        set.shutdown().await;
                        return Err(e);
                    }
                    Some(Err(join)) => {
                        set.shutdown().await;
                        return Err(Error::Stopped(match join.try_into_panic() {
                            Ok(panic) => format!("panicked: {}", panic_message(&*panic)),
                            Err(e) => e.to_string(),
                        }));
                    }
                },
            }
        }
    }

    fn router(&self, handle: Handle<DB>) -> Router {
        let push = crate::push::PushState {
            handle: handle.clone(),
            handlers: self.handlers.clone(),
        };
        let health = handle.clone();
        let own = match &self.routes {
            Some(r) => r(handle),
            None => Router::new(),
        };
        own.route(
            "/healthz",
            axum::routing::get(move || {
                let h = health.clone();
                async move {
                    let ok = DB::ping(h.db()).await.is_ok();
                    let status = if ok {
                        axum::http::StatusCode::OK
                    } else {
                        axum::http::StatusCode::SERVICE_UNAVAILABLE
                    };
                    (status, axum::Json(serde_json::json!({ "ok": ok })))
                }
            }),
        )
        .merge(
            Router::new()
                .route("/events", axum::routing::post(crate::push::handle::<DB>))
                .with_state(push),
        )
    }
}

/// Forgets inbox ids older than a week, hourly: by then every cursor is past them and
/// every subscription has given up redelivering them.
async fn prune_inbox<DB: Backend>(
    handle: Handle<DB>,
    mut stop: watch::Receiver<bool>,
) -> Result<()> {
    const AGE: Duration = Duration::from_secs(7 * 24 * 3600);
    loop {
        if let Err(e) = DB::inbox_prune(handle.db(), AGE).await {
            handle
                .log()
                .line(format_args!("inbox: pruning old ids failed: {e}"));
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(3600)) => {}
            _ = crate::stopped(&mut stop) => return Ok(()),
        }
    }
}
