//! The services of `switchyard dev` as child processes: started in dependency order, each
//! gated on its health check, logs prefixed with its name, restarted with backoff when it
//! crashes, stopped with SIGTERM and then SIGKILL.

use anyhow::{Context, anyhow};
use serde::Serialize;
use std::collections::{BTreeMap, VecDeque};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use switchyard_manifest::{Service, System};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::sync::{mpsc, watch};

/// Lines of each service's output kept for the report of a failed start.
const KEPT_LINES: usize = 20;

/// What `GET /v1/system/status` shows of a service.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct ServiceStatus {
    pub name: String,
    /// `waiting` (for its dependencies), `starting`, `healthy`, `crashed` (restarting
    /// soon), `failed` (never became healthy), `stopped`, `not-started` (left out by
    /// `--only`).
    pub state: &'static str,
    pub port: u16,
    pub url: String,
    /// No pid of its own: it runs inside the runner (a host binary's `in-process` service).
    pub in_process: bool,
    pub pid: Option<u32>,
    pub restarts: u32,
    pub last_exit: Option<String>,
}

/// Everything the runner knows of the services, shared with the status endpoint.
pub type Board = Arc<Mutex<BTreeMap<String, ServiceStatus>>>;

pub fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// How one service is started: the manifest plus what the runner decided.
#[derive(Clone, Debug)]
pub struct Launch {
    pub service: Service,
    pub port: u16,
    pub env: BTreeMap<String, String>,
    /// Services it waits for at start (healthy first).
    pub waits_for: Vec<String>,
    /// For an in-process service: the host that runs it and the journal it uses.
    pub hosted: Option<Hosted>,
}

/// What an in-process service runs on.
#[derive(Clone)]
pub struct Hosted {
    pub host: Arc<switchyard_sdk::Host>,
    pub journal: Arc<dyn switchyard_journal::Journal>,
}

impl std::fmt::Debug for Hosted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hosted").field("host", &self.host).finish()
    }
}

/// A running service: a child process, or a task of this process (in-process).
enum Proc {
    Child(tokio::process::Child),
    Task(switchyard_sdk::Running),
}

impl Proc {
    fn id(&self) -> Option<u32> {
        match self {
            Proc::Child(c) => c.id(),
            Proc::Task(_) => None,
        }
    }

    /// How it ended, if it did.
    fn exited(&mut self) -> Option<String> {
        match self {
            Proc::Child(c) => match c.try_wait() {
                Ok(Some(status)) => Some(describe_exit(status)),
                _ => None,
            },
            Proc::Task(t) => t.is_finished().then(|| "ended".to_string()),
        }
    }

    async fn wait(&mut self) -> String {
        match self {
            Proc::Child(c) => match c.wait().await {
                Ok(s) => describe_exit(s),
                Err(e) => format!("could not be waited for: {e}"),
            },
            Proc::Task(t) => match t.wait().await {
                switchyard_sdk::Exit::Stopped => "ended by itself".to_string(),
                other => other.to_string(),
            },
        }
    }
}

/// A failed start: which service, why, and its last lines of output.
#[derive(Debug)]
pub struct StartFailure {
    pub service: String,
    pub reason: String,
    pub last_lines: Vec<String>,
}

/// The running services. Dropping it does not stop them: call [`Services::stop`].
pub struct Services {
    stop: watch::Sender<bool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Services {
    /// Starts every service of `launches` (each once its `waits_for` are healthy) and
    /// resolves when all are healthy, or with the first that failed.
    pub async fn start(
        launches: Vec<Launch>,
        board: Board,
        grace: Duration,
        colour: bool,
    ) -> (Self, Result<(), StartFailure>) {
        let (stop, stop_rx) = watch::channel(false);
        let (failed_tx, mut failed_rx) = mpsc::channel(launches.len().max(1));
        let healthy: BTreeMap<String, watch::Sender<bool>> = launches
            .iter()
            .map(|l| (l.service.name.clone(), watch::channel(false).0))
            .collect();
        let width = launches
            .iter()
            .map(|l| l.service.name.len())
            .max()
            .unwrap_or(0);
        let mut tasks = Vec::new();
        for (i, launch) in launches.iter().enumerate() {
            let waits: Vec<watch::Receiver<bool>> = launch
                .waits_for
                .iter()
                .filter_map(|d| healthy.get(d).map(watch::Sender::subscribe))
                .collect();
            let run = Supervised {
                launch: launch.clone(),
                board: board.clone(),
                healthy: healthy[&launch.service.name].clone(),
                prefix: prefix(&launch.service.name, width, i, colour),
                stop: stop_rx.clone(),
                grace,
                failed: failed_tx.clone(),
            };
            tasks.push(tokio::spawn(run.run(waits)));
        }
        drop(failed_tx);
        let mut all: Vec<watch::Receiver<bool>> = healthy.values().map(|h| h.subscribe()).collect();
        let all_healthy = async {
            for h in &mut all {
                let _ = h.wait_for(|&ok| ok).await;
            }
        };
        let outcome = tokio::select! {
            () = all_healthy => Ok(()),
            Some(f) = failed_rx.recv() => Err(f),
        };
        (Self { stop, tasks }, outcome)
    }

    /// SIGTERM to every service, SIGKILL to those still running after the grace period.
    pub async fn stop(self) {
        let _ = self.stop.send(true);
        for t in self.tasks {
            let _ = t.await;
        }
    }
}

/// `name │ ` padded to `width`, coloured by position when `colour`.
fn prefix(name: &str, width: usize, i: usize, colour: bool) -> String {
    const COLOURS: [u8; 6] = [36, 33, 35, 32, 34, 31];
    if colour {
        let c = COLOURS[i % COLOURS.len()];
        format!("\x1b[{c}m{name:>width$}\x1b[0m │ ")
    } else {
        format!("{name:>width$} │ ")
    }
}

struct Supervised {
    launch: Launch,
    board: Board,
    healthy: watch::Sender<bool>,
    prefix: String,
    stop: watch::Receiver<bool>,
    grace: Duration,
    failed: mpsc::Sender<StartFailure>,
}

impl Supervised {
    fn set(&self, state: &'static str, pid: Option<u32>) {
        if let Some(s) = lock(&self.board).get_mut(&self.launch.service.name) {
            s.state = state;
            s.pid = pid;
        }
    }

    async fn run(self, mut waits: Vec<watch::Receiver<bool>>) {
        let mut stop = self.stop.clone();
        self.set("waiting", None);
        for w in &mut waits {
            tokio::select! {
                _ = w.wait_for(|&ok| ok) => {}
                _ = stopped(&mut stop) => { self.set("stopped", None); return; }
            }
        }
        let lines: Arc<Mutex<VecDeque<String>>> = Arc::default();
        let mut backoff = Duration::from_millis(500);
        let mut first = true;
        loop {
            self.set("starting", None);
            let mut child = match self.spawn(&lines) {
                Ok(c) => c,
                Err(e) => {
                    self.fail(
                        first,
                        format!("could not start `{}`: {e:#}", self.launch.service.run_line),
                        &lines,
                    )
                    .await;
                    return;
                }
            };
            let pid = child.id();
            self.set("starting", pid);
            let started = Instant::now();
            // Health: poll until 2xx, the process exits, or the start timeout.
            let health = self.probe_until_healthy(&mut child);
            let up = tokio::select! {
                r = health => r,
                _ = stopped(&mut stop) => {
                    self.terminate(&mut child).await;
                    self.set("stopped", None);
                    return;
                }
            };
            match up {
                Ok(()) => {
                    self.set("healthy", pid);
                    let _ = self.healthy.send(true);
                    if !first {
                        note(
                            &self.prefix,
                            &format!("healthy again after {} ms", started.elapsed().as_millis()),
                        );
                    }
                }
                Err(reason) => {
                    self.terminate(&mut child).await;
                    if first {
                        self.fail(true, reason, &lines).await;
                        return;
                    }
                    note(
                        &self.prefix,
                        &format!("{reason}; restarting in {} ms", backoff.as_millis()),
                    );
                    self.bump_restarts(Some(reason));
                    self.set("crashed", None);
                    if self.sleep_or_stop(backoff).await {
                        return;
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(30));
                    continue;
                }
            }
            first = false;
            // Running: wait for it to exit or for the stop.
            let how = tokio::select! {
                how = child.wait() => how,
                _ = stopped(&mut stop) => {
                    self.terminate(&mut child).await;
                    self.set("stopped", None);
                    let _ = self.healthy.send(false);
                    return;
                }
            };
            let _ = self.healthy.send(false);
            // A service that stayed up a while starts over with a short backoff.
            if started.elapsed() > Duration::from_secs(60) {
                backoff = Duration::from_millis(500);
            }
            note(
                &self.prefix,
                &format!("{how}; restarting in {} ms", backoff.as_millis()),
            );
            self.bump_restarts(Some(how));
            self.set("crashed", None);
            if self.sleep_or_stop(backoff).await {
                return;
            }
            backoff = (backoff * 2).min(Duration::from_secs(30));
        }
    }

    fn bump_restarts(&self, exit: Option<String>) {
        if let Some(s) = lock(&self.board).get_mut(&self.launch.service.name) {
            s.restarts += 1;
            s.last_exit = exit;
        }
    }

    /// True when stopped while sleeping.
    async fn sleep_or_stop(&self, d: Duration) -> bool {
        let mut stop = self.stop.clone();
        tokio::select! {
            _ = tokio::time::sleep(d) => false,
            _ = stopped(&mut stop) => { self.set("stopped", None); true }
        }
    }

    async fn fail(&self, first: bool, reason: String, lines: &Arc<Mutex<VecDeque<String>>>) {
        self.set("failed", None);
        if let Some(s) = lock(&self.board).get_mut(&self.launch.service.name) {
            s.last_exit = Some(reason.clone());
        }
        if first {
            let last_lines = lock(lines).iter().cloned().collect();
            let _ = self
                .failed
                .send(StartFailure {
                    service: self.launch.service.name.clone(),
                    reason,
                    last_lines,
                })
                .await;
        }
    }

    fn spawn(&self, lines: &Arc<Mutex<VecDeque<String>>>) -> anyhow::Result<Proc> {
        if let Some(h) = &self.launch.hosted {
            let launch = switchyard_sdk::Launch {
                platform: switchyard_sdk::Platform::Journal(h.journal.clone()),
                env: self.launch.env.clone(),
                log: switchyard_sdk::Log::new(self.prefix.clone()),
                consume: switchyard_sdk::Consume::Pull,
            };
            return Ok(Proc::Task(h.host.start(&self.launch.service.name, launch)?));
        }
        let s = &self.launch.service;
        let (program, args) = s
            .argv
            .split_first()
            .ok_or_else(|| anyhow!("`run` is empty"))?;
        let mut cmd = tokio::process::Command::new(program);
        cmd.args(args)
            .current_dir(&s.workdir)
            .envs(&self.launch.env)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            // Its own process group: Ctrl-C in the terminal reaches the runner only, and
            // stopping the service stops whatever it started too.
            .process_group(0)
            .kill_on_drop(true);
        let mut child = cmd
            .spawn()
            .with_context(|| format!("in {}", s.workdir.display()))?;
        if let Some(out) = child.stdout.take() {
            tokio::spawn(relay(out, self.prefix.clone(), lines.clone()));
        }
        if let Some(err) = child.stderr.take() {
            tokio::spawn(relay(err, self.prefix.clone(), lines.clone()));
        }
        Ok(Proc::Child(child))
    }

    async fn probe_until_healthy(&self, child: &mut Proc) -> Result<(), String> {
        let s = &self.launch.service;
        let url = format!("http://127.0.0.1:{}{}", self.launch.port, s.health.path);
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(1))
            .no_proxy()
            .build()
            .map_err(|e| e.to_string())?;
        let deadline = Instant::now() + s.health.timeout;
        let mut last;
        let mut pause = Duration::from_millis(10);
        loop {
            if let Some(how) = child.exited() {
                return Err(format!("exited during start ({how})"));
            }
            match client.get(&url).send().await {
                Ok(r) if r.status().is_success() => return Ok(()),
                Ok(r) => last = format!("GET {url} answered {}", r.status()),
                Err(e) if e.is_connect() => {
                    last = format!("nothing listens on port {}", self.launch.port)
                }
                Err(e) => last = format!("GET {url}: {e}"),
            }
            if Instant::now() >= deadline {
                // A service that is failing may be on its way out (a slow machine): its exit
                // says more than the timeout.
                if let Ok(how) =
                    tokio::time::timeout(Duration::from_millis(500), child.wait()).await
                {
                    return Err(format!("exited during start ({how})"));
                }
                return Err(format!(
                    "not healthy within {} ({last})",
                    humantime::format_duration(s.health.timeout)
                ));
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_millis(100));
        }
    }

    /// SIGTERM to the service's process group, SIGKILL after the grace period (an
    /// in-process service: asked to stop, cut off after the grace period).
    async fn terminate(&self, child: &mut Proc) {
        let child = match child {
            Proc::Child(c) => c,
            Proc::Task(t) => {
                t.stop(self.grace).await;
                return;
            }
        };
        let Some(pid) = child.id() else { return };
        let group = rustix::process::Pid::from_raw(pid as i32);
        if let Some(group) = group {
            let _ = rustix::process::kill_process_group(group, rustix::process::Signal::TERM);
        }
        if tokio::time::timeout(self.grace, child.wait())
            .await
            .is_err()
        {
            note(
                &self.prefix,
                &format!(
                    "still running {} after SIGTERM: SIGKILL",
                    humantime::format_duration(self.grace)
                ),
            );
            if let Some(group) = group {
                let _ = rustix::process::kill_process_group(group, rustix::process::Signal::KILL);
            }
            let _ = child.kill().await;
        }
    }
}

/// Copies a child's output to ours, line by line, behind its prefix, keeping the last
/// lines for a failure report.
async fn relay(
    out: impl tokio::io::AsyncRead + Unpin,
    prefix: String,
    kept: Arc<Mutex<VecDeque<String>>>,
) {
    let mut lines = BufReader::new(out).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        println!("{prefix}{line}");
        let mut k = lock(&kept);
        if k.len() == KEPT_LINES {
            k.pop_front();
        }
        k.push_back(line);
    }
}

/// Resolves once `stop` is true (or its sender is gone).
async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|&s| s).await;
}

fn note(prefix: &str, what: &str) {
    eprintln!("{prefix}switchyard: {what}");
}

fn describe_exit(s: std::process::ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt as _;
    match (s.code(), s.signal()) {
        (Some(c), _) => format!("exited with status {c}"),
        (None, Some(sig)) => format!("killed by signal {sig}"),
        _ => "exited".to_string(),
    }
}

/// The launches of `system`'s services (those in `only`, when given), with their ports
/// and environment.
pub fn launches(
    system: &System,
    only: &[String],
    ports: &BTreeMap<String, u16>,
    platform_url: &str,
    gateway_url: &str,
    databases: &BTreeMap<String, String>,
    call_tokens: &BTreeMap<String, String>,
) -> Vec<Launch> {
    let chosen = |name: &str| only.is_empty() || only.iter().any(|o| o == name);
    system
        .start_order()
        .into_iter()
        .filter(|s| chosen(&s.name))
        .map(|s| {
            let mut env = s.env.clone();
            for to in s.dependencies.keys() {
                if let Some(port) = ports.get(to) {
                    env.insert(env_name(to, "_URL"), format!("http://127.0.0.1:{port}"));
                }
            }
            let port = ports[&s.name];
            env.insert("PORT".into(), port.to_string());
            env.insert("SWITCHYARD_URL".into(), platform_url.to_string());
            // Service-to-service calls: `$SWITCHYARD_GATEWAY_URL/v1/call/<service>/<path>`
            // with `Switchyard-Call-Token: $SWITCHYARD_CALL_TOKEN` (the service's own secret,
            // which the gateway knows it by).
            env.insert("SWITCHYARD_GATEWAY_URL".into(), gateway_url.to_string());
            if let Some(t) = call_tokens.get(&s.name) {
                env.insert("SWITCHYARD_CALL_TOKEN".into(), t.clone());
            }
            env.insert("SERVICE_NAME".into(), s.name.clone());
            // The running switchyard itself, for services that are its tools (the demo's
            // fake vendors run `$SWITCHYARD_BIN fake-vendor`).
            if let Ok(exe) = std::env::current_exe() {
                env.insert("SWITCHYARD_BIN".into(), exe.display().to_string());
            }
            env.insert("TRACEPARENT".into(), traceparent());
            if let Some(url) = databases.get(&s.name) {
                env.insert("DATABASE_URL".into(), url.clone());
            }
            let waits_for = s
                .dependencies
                .iter()
                .filter(|(to, d)| chosen(to) && d.on_failure.waits_at_start(d.kind))
                .map(|(to, _)| to.clone())
                .collect();
            Launch {
                service: s.clone(),
                port,
                env,
                waits_for,
                hosted: None,
            }
        })
        .collect()
}

/// `payments-eu` → `PAYMENTS_EU_URL` (the SDK's host names settings the same way).
pub fn env_name(service: &str, suffix: &str) -> String {
    let prefix = switchyard_sdk::env_prefix(service);
    format!("{}{suffix}", prefix.trim_end_matches('_'))
}

/// A fresh W3C trace context: the root of the service's start-up trace.
fn traceparent() -> String {
    let trace: u128 = rand::random::<u128>() | 1;
    let span: u64 = rand::random::<u64>() | 1;
    format!("00-{trace:032x}-{span:016x}-01")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_names_are_upper_snake() {
        assert_eq!(env_name("payments-eu", "_URL"), "PAYMENTS_EU_URL");
        assert_eq!(env_name("inventory", "_URL"), "INVENTORY_URL");
    }

    #[test]
    fn traceparents_are_well_formed() {
        let t = traceparent();
        let parts: Vec<&str> = t.split('-').collect();
        assert_eq!(parts.len(), 4);
        assert_eq!(
            (parts[0], parts[1].len(), parts[2].len(), parts[3]),
            ("00", 32, 16, "01")
        );
    }
}
