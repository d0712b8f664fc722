//! [`Host`]: many services in one process. Each runs as its own task with its own database,
//! port, relay and consumers; a service that fails or panics is stopped on its own (its
//! other parts with it), and started again with backoff (0.5 s doubling to 30 s, back to
//! 0.5 s after a minute up), while the others go on.
//!
//! A panic inside a handler does not even stop its service: it fails that one event, which
//! is retried like any failure (and parked after the service's attempts). A panic anywhere
//! else in a service (a background task, a route's task is answered 500 by axum's runtime)
//! restarts the service. Panics are caught only with `panic = "unwind"` (the default):
//! a host built with `panic = "abort"` loses every service at the first one.

use crate::consume::panic_message;
use crate::error::{Error, Result};
use crate::log::Log;
use crate::platform::Platform;
use crate::progress::{ConsumerPosition, Positions};
use crate::service::{Consume, Launch, Service};
use crate::{Backend, Client};
use futures::future::BoxFuture;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::watch;

trait Hosted: Send + Sync {
    fn topics(&self) -> Vec<String>;
    fn run(
        self: Arc<Self>,
        launch: Launch,
        stop: watch::Receiver<bool>,
        positions: Positions,
    ) -> BoxFuture<'static, Result<()>>;
}

impl<DB: Backend> Hosted for Service<DB> {
    fn topics(&self) -> Vec<String> {
        Service::topics(self)
            .into_iter()
            .map(str::to_string)
            .collect()
    }

    fn run(
        self: Arc<Self>,
        launch: Launch,
        stop: watch::Receiver<bool>,
        positions: Positions,
    ) -> BoxFuture<'static, Result<()>> {
        Box::pin(Service::run(self, launch, stop, positions))
    }
}

/// How one run of a service ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Exit {
    /// Stopped when asked.
    Stopped,
    Failed(String),
    Panicked(String),
}

impl std::fmt::Display for Exit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Exit::Stopped => f.write_str("stopped"),
            Exit::Failed(e) => write!(f, "failed: {e}"),
            Exit::Panicked(m) => write!(f, "panicked: {m}"),
        }
    }
}

/// One run of one service (see [`Host::start`]).
#[derive(Debug)]
pub struct Running {
    task: Option<tokio::task::JoinHandle<Result<()>>>,
    stop: watch::Sender<bool>,
    exit: Option<Exit>,
}

impl Running {
    /// Resolves when the run ends (by itself, or after [`Self::stop`]).
    pub async fn wait(&mut self) -> Exit {
        if let Some(e) = &self.exit {
            return e.clone();
        }
        let exit = match self.task.take() {
            None => Exit::Stopped,
            Some(task) => match task.await {
                Ok(Ok(())) => Exit::Stopped,
                Ok(Err(e)) => match e {
                    Error::Stopped(m) if m.starts_with("panicked: ") => {
                        Exit::Panicked(m.trim_start_matches("panicked: ").to_string())
                    }
                    e => Exit::Failed(e.to_string()),
                },
                Err(join) => match join.try_into_panic() {
                    Ok(p) => Exit::Panicked(panic_message(&*p)),
                    Err(e) => Exit::Failed(e.to_string()),
                },
            },
        };
        self.exit = Some(exit.clone());
        exit
    }

    pub fn is_finished(&self) -> bool {
        self.exit.is_some() || self.task.as_ref().is_none_or(|t| t.is_finished())
    }

    /// Asks the run to stop and waits up to `grace` for it, then cuts it off.
    pub async fn stop(&mut self, grace: Duration) -> Exit {
        let _ = self.stop.send(true);
        match tokio::time::timeout(grace, self.wait()).await {
            Ok(e) => e,
            Err(_) => {
                if let Some(t) = self.task.take() {
                    t.abort();
                }
                Exit::Failed(format!("did not stop within {} ms", grace.as_millis()))
            }
        }
    }
}

/// A service's state as the supervisor sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServiceState {
    /// `running`, `restarting`, `stopped`.
    pub state: &'static str,
    pub restarts: u32,
    pub last_exit: Option<String>,
}

/// Many services in one process, started and restarted on their own.
#[derive(Default)]
pub struct Host {
    services: BTreeMap<String, Arc<dyn Hosted>>,
    errors: Vec<String>,
    board: Arc<Mutex<BTreeMap<String, ServiceState>>>,
    positions: Positions,
}

impl std::fmt::Debug for Host {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Host")
            .field("services", &self.names())
            .finish()
    }
}

impl Host {
    pub fn new() -> Self {
        Host::default()
    }

    /// Adds a service (names are unique: a second one of a name is an error at start).
    pub fn service<DB: Backend>(mut self, service: Service<DB>) -> Self {
        let name = service.name().to_string();
        if self.services.contains_key(&name) {
            self.errors.push(format!("two services named {name}"));
        }
        self.services.insert(name, Arc::new(service));
        self
    }

    pub fn names(&self) -> Vec<String> {
        self.services.keys().cloned().collect()
    }

    pub fn contains(&self, name: &str) -> bool {
        self.services.contains_key(name)
    }

    /// The topics `name` consumes.
    pub fn topics_of(&self, name: &str) -> Vec<String> {
        self.services
            .get(name)
            .map(|s| s.topics())
            .unwrap_or_default()
    }

    fn check(&self) -> Result<()> {
        match self.errors.first() {
            Some(e) => Err(Error::config("host", e.clone())),
            None => Ok(()),
        }
    }

    /// Starts one run of `name` as a task of its own (no restart: see [`Self::run`]).
    pub fn start(&self, name: &str, launch: Launch) -> Result<Running> {
        self.check()?;
        let service = self.services.get(name).cloned().ok_or_else(|| {
            Error::config(
                "service",
                format!(
                    "{name:?} is not hosted here (hosted: {})",
                    self.names().join(", ")
                ),
            )
        })?;
        let (stop, stop_rx) = watch::channel(false);
        self.positions.forget(name);
        let task = tokio::spawn(service.run(launch, stop_rx, self.positions.clone()));
        Ok(Running {
            task: Some(task),
            stop,
            exit: None,
        })
    }

    /// Where each pulling consumer of the running services stands, per partition (for
    /// status pages, and for waiting until they have caught up).
    pub fn consumers(&self) -> Vec<ConsumerPosition> {
        self.positions.all()
    }

    /// Each service's state (for status pages).
    pub fn states(&self) -> BTreeMap<String, ServiceState> {
        self.board.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn set(&self, name: &str, f: impl FnOnce(&mut ServiceState)) {
        let mut b = self.board.lock().unwrap_or_else(|e| e.into_inner());
        let s = b.entry(name.to_string()).or_insert(ServiceState {
            state: "running",
            restarts: 0,
            last_exit: None,
        });
        f(s);
    }

    /// Runs the services of `launches` (by name), each restarted with backoff whenever it
    /// fails or panics, until `shutdown`; then stops them all (each given `grace`).
    pub async fn run(
        &self,
        launches: BTreeMap<String, Launch>,
        grace: Duration,
        shutdown: impl std::future::Future<Output = ()>,
    ) -> Result<()> {
        self.check()?;
        for name in launches.keys() {
            if !self.contains(name) {
                return Err(Error::config(
                    "services",
                    format!(
                        "{name:?} is not hosted here (hosted: {})",
                        self.names().join(", ")
                    ),
                ));
            }
        }
        let (stop, stop_rx) = watch::channel(false);
        let supervised = launches
            .into_iter()
            .map(|(name, launch)| self.supervise(name, launch, grace, stop_rx.clone()));
        let all = futures::future::join_all(supervised);
        tokio::pin!(all);
        tokio::select! {
            _ = &mut all => {}
            _ = shutdown => {
                let _ = stop.send(true);
                all.await;
            }
        }
        Ok(())
    }

    async fn supervise(
        &self,
        name: String,
        launch: Launch,
        grace: Duration,
        mut stop: watch::Receiver<bool>,
    ) {
        let mut backoff = Duration::from_millis(500);
        loop {
            let started = Instant::now();
            let mut run = match self.start(&name, launch.clone()) {
                Ok(r) => r,
                Err(e) => {
                    launch
                        .log
                        .line(format_args!("switchyard: cannot start: {e}"));
                    return;
                }
            };
            self.set(&name, |s| s.state = "running");
            let exit = tokio::select! {
                e = run.wait() => e,
                _ = crate::stopped(&mut stop) => {
                    run.stop(grace).await;
                    self.set(&name, |s| s.state = "stopped");
                    return;
                }
            };
            if started.elapsed() > Duration::from_secs(60) {
                backoff = Duration::from_millis(500);
            }
            launch.log.line(format_args!(
                "switchyard: {exit}; restarting in {} ms",
                backoff.as_millis()
            ));
            self.set(&name, |s| {
                s.state = "restarting";
                s.restarts += 1;
                s.last_exit = Some(exit.to_string());
            });
            tokio::select! {
                _ = tokio::time::sleep(backoff) => {}
                _ = crate::stopped(&mut stop) => {
                    self.set(&name, |s| s.state = "stopped");
                    return;
                }
            }
            backoff = (backoff * 2).min(Duration::from_secs(30));
        }
    }

    /// Runs the services named in `args` (all when none is), in this process, against the
    /// platform at `SWITCHYARD_URL` over HTTP, until SIGINT or SIGTERM.
    ///
    /// Arguments: `--services a,b` (default: all), `--push` (serve `POST /events` for
    /// subscriptions instead of pulling). Each service's settings come from the environment:
    /// `<NAME>_PORT`, `<NAME>_DATABASE_URL` and any `<NAME>_<KEY>` (`payments-eu`:
    /// `PAYMENTS_EU_`) as `PORT`, `DATABASE_URL`, `<KEY>`, on top of the unprefixed
    /// environment (so with one service, `PORT` and `DATABASE_URL` do).
    pub async fn main_with_args(&self, args: &[String]) -> Result<()> {
        let mut only: Vec<String> = Vec::new();
        let mut consume = Consume::Pull;
        let mut it = args.iter();
        while let Some(a) = it.next() {
            match a.as_str() {
                "--services" => {
                    let v = it
                        .next()
                        .ok_or_else(|| Error::config("--services", "needs a list: a,b"))?;
                    only.extend(v.split(',').filter(|s| !s.is_empty()).map(str::to_string));
                }
                "--push" => consume = Consume::Push,
                other => {
                    return Err(Error::config(
                        other,
                        "unknown argument (use --services a,b and --push)",
                    ));
                }
            }
        }
        let selected = if only.is_empty() { self.names() } else { only };
        let platform = Platform::Http(Client::from_env()?);
        let process_env: BTreeMap<String, String> = std::env::vars().collect();
        let mut launches = BTreeMap::new();
        for name in selected {
            let env = env_for(&name, &process_env);
            launches.insert(
                name.clone(),
                Launch {
                    platform: platform.clone(),
                    env,
                    log: Log::named(&name),
                    consume,
                },
            );
        }
        self.run(launches, Duration::from_secs(5), shutdown_signal())
            .await
    }
}

/// `payments-eu` → `PAYMENTS_EU_`.
pub fn env_prefix(service: &str) -> String {
    let mut p: String = service
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_uppercase()
            } else {
                '_'
            }
        })
        .collect();
    p.push('_');
    p
}

/// The process environment, with `service`'s prefixed variables taking the place of the
/// plain ones.
fn env_for(service: &str, env: &BTreeMap<String, String>) -> BTreeMap<String, String> {
    let prefix = env_prefix(service);
    let mut out = env.clone();
    for (k, v) in env {
        if let Some(plain) = k.strip_prefix(&prefix)
            && !plain.is_empty()
        {
            out.insert(plain.to_string(), v.clone());
        }
    }
    out.insert("SERVICE_NAME".into(), service.to_string());
    out
}

/// Resolves on SIGINT or SIGTERM. The handlers are installed when this is called, not when
/// the future is first polled: a signal that arrives in between is then seen here instead
/// of killing the process (the default action) or being swallowed.
pub fn shutdown_signal() -> impl Future<Output = ()> + Send + 'static {
    use tokio::signal::unix::{SignalKind, signal};
    let int = signal(SignalKind::interrupt()).ok();
    let term = signal(SignalKind::terminate()).ok();
    async move {
        tokio::select! {
            _ = next_signal(int) => {}
            _ = next_signal(term) => {}
        }
    }
}

/// The next delivery of a signal whose handler may have failed to install (then never).
async fn next_signal(s: Option<tokio::signal::unix::Signal>) {
    match s {
        Some(mut s) => {
            s.recv().await;
        }
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixed_settings_take_the_place_of_plain_ones() {
        let env: BTreeMap<String, String> = [
            ("PORT", "1"),
            ("PAYMENTS_EU_PORT", "2"),
            ("PAYMENTS_EU_DATABASE_URL", "sqlite://x"),
            ("SWITCHYARD_URL", "http://h"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        let e = env_for("payments-eu", &env);
        assert_eq!(e["PORT"], "2");
        assert_eq!(e["DATABASE_URL"], "sqlite://x");
        assert_eq!(e["SWITCHYARD_URL"], "http://h");
        assert_eq!(e["SERVICE_NAME"], "payments-eu");
        assert_eq!(env_for("other", &env)["PORT"], "1");
    }
}
