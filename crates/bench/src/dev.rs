//! `switchyard-bench dev`: the local environment's figures, with the real `switchyard`
//! binary and the demo system (`examples/shop`, Python services):
//!
//! - `ready`: from starting `switchyard dev` to its "ready" line (every service healthy;
//!   nothing is compiled: a system with in-process services runs from its prebuilt host
//!   binary, as `switchyard dev` does after its cargo build), and the platform's resident
//!   memory once idle (the runner's own process, in-process services included: the other
//!   services are separate processes and not counted);
//! - `seed-100k`: `switchyard seed` of 100,000 events into a topic the bench adds, with a
//!   subscription pushing them in batches (`max-batch` 500) to an HTTP sink in this
//!   process, until the seed command
//!   reports every subscription caught up (it waits for that itself), and the runner's
//!   peak resident memory by then (VmHWM);
//! - `reset`: `switchyard reset` against the running system, until it runs again.

use crate::report::{median, say, verdict};
use anyhow::{Context, Result, anyhow, bail};
use serde_json::json;
use std::io::BufRead as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// One repeat per case; the whole suite finishes within 60 s.
    #[arg(long)]
    quick: bool,
    /// One JSON object per case on stdout (notes go to stderr).
    #[arg(long)]
    json: bool,
    /// Repeats per case; the median is reported [default: 1 with --quick, else 3].
    #[arg(long, value_name = "N")]
    repeats: Option<usize>,
    /// The system to run [default: examples/shop of this workspace].
    #[arg(long, value_name = "DIR")]
    system: Option<PathBuf>,
    /// The `switchyard` binary [default: the one next to this benchmark's binary; build it
    /// with `cargo build --release -p switchyard`].
    #[arg(long, value_name = "PATH")]
    switchyard: Option<PathBuf>,
    /// The system's host binary, when it has in-process services [default: the `[host]`
    /// package's binary next to this benchmark's; for the shop:
    /// `cargo build --release -p shop-host`].
    #[arg(long, value_name = "PATH")]
    host: Option<PathBuf>,
    /// Events seeded by the seed case.
    #[arg(long, default_value_t = 100_000)]
    events: usize,
}

pub async fn run(args: Args) -> Result<()> {
    let bin = crate::env::switchyard_binary(args.switchyard.as_deref())?;
    let system = args
        .system
        .clone()
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/shop"));
    if !system.join("switchyard.toml").is_file() {
        bail!(
            "{} holds no switchyard.toml (--system DIR)",
            system.display()
        );
    }
    // `switchyard dev` hands a system with in-process services over to its host binary
    // after a cargo build; the bench starts that binary itself, so no cargo runs in the
    // time measured.
    let loaded = switchyard_manifest::load(&system)
        .with_context(|| format!("reading the system in {}", system.display()))?;
    let in_process = loaded.system.services.values().any(|s| s.in_process);
    let runner = match (&loaded.system.host, in_process) {
        (Some(host), true) => {
            let exe = match &args.host {
                Some(p) => p.clone(),
                None => bin.with_file_name(&host.package),
            };
            if !exe.is_file() {
                bail!(
                    "{} has in-process services: no host binary at {} (build it first: cargo \
                     build --release -p {}, or pass --host PATH)",
                    system.display(),
                    exe.display(),
                    host.package
                );
            }
            exe
        }
        _ => bin.clone(),
    };
    let repeats = args
        .repeats
        .unwrap_or(if args.quick { 1 } else { 3 })
        .max(1);
    let scratch = tempfile::tempdir().context("creating a scratch directory")?;
    let state = scratch.path().join("state");
    say(
        args.json,
        &format!(
            "switchyard-bench dev: {} with {} (state in {}); median of {repeats}",
            system.display(),
            runner.display(),
            state.display()
        ),
    );

    // ready: start from an empty state each time, stop, start again.
    let mut ready_ms = Vec::new();
    let mut rss_mb = Vec::new();
    for i in 0..repeats {
        let mut dev = Dev::start(&runner, &system, &state)?;
        ready_ms.push(dev.ready.as_secs_f64() * 1000.0);
        // Idle: let start-up allocations settle before reading the resident set.
        tokio::time::sleep(Duration::from_secs(1)).await;
        rss_mb.push(rss_mb_of(dev.child.id())?);
        if i + 1 < repeats {
            dev.stop()?;
        } else {
            let result = measure_running(&args, &bin, &dev, scratch.path(), repeats).await;
            let peak = peak_rss_mb_of(dev.child.id());
            dev.stop()?;
            let (seed_ms, reset_ms) = result?;
            let peak = peak?;
            let ready = median(ready_ms.clone());
            let rss = median(rss_mb.clone());
            row(
                args.json,
                json!({"suite":"dev","case":"ready","system":"switchyard","ms":ready,"rss_mb":rss}),
            );
            row(
                args.json,
                json!({"suite":"dev","case":seed_case(args.events),"system":"switchyard","ms":seed_ms,"events":args.events,"peak_rss_mb":peak}),
            );
            row(
                args.json,
                json!({"suite":"dev","case":"reset","system":"switchyard","ms":reset_ms}),
            );
            say(
                args.json,
                &format!(
                    "targets: ready <= 1000 ms ({}), idle RSS <= 30 MB ({}), seed 100k <= 2000 ms \
                     ({}), reset <= 1000 ms ({})",
                    verdict(ready <= 1000.0),
                    verdict(rss <= 30.0),
                    verdict(args.events == 100_000 && seed_ms <= 2000.0),
                    verdict(reset_ms <= 1000.0)
                ),
            );
        }
    }
    Ok(())
}

/// `seed-100k` for the documented run, `seed-N` for other sizes.
fn seed_case(events: usize) -> String {
    if events >= 1000 && events.is_multiple_of(1000) {
        format!("seed-{}k", events / 1000)
    } else {
        format!("seed-{events}")
    }
}

/// Seed and reset against the running system: medians in ms.
async fn measure_running(
    args: &Args,
    bin: &Path,
    dev: &Dev,
    scratch: &Path,
    repeats: usize,
) -> Result<(f64, f64)> {
    let (sink_url, received) = start_sink().await?;
    let client = reqwest::Client::new();
    let mut seed_ms = Vec::new();
    let mut reset_ms = Vec::new();
    let file = scratch.join("seed-bench.yaml");
    for r in 0..repeats {
        // The topic and the subscription are declared again after each reset.
        let topic = "bench.seed.v1";
        let put = client
            .put(format!("{}/v1/topics/{topic}", dev.url))
            .json(&json!({"partitions": 4}))
            .send()
            .await?;
        if !put.status().is_success() {
            bail!("creating {topic}: {}", put.status());
        }
        let put = client
            .put(format!("{}/v1/subscriptions/bench-sink", dev.url))
            .json(&json!({"topics": [topic], "endpoint": sink_url, "concurrency": 16, "max-batch": 500}))
            .send()
            .await?;
        if !put.status().is_success() {
            bail!("creating the bench subscription: {}", put.status());
        }
        write_seed(&file, topic, args.events, r)?;
        received.store(0, Ordering::Relaxed);
        let t = Instant::now();
        let out = Command::new(bin)
            .args(["seed", "--json", "--timeout", "300s"])
            .arg(&file)
            .env("SWITCHYARD_URL", &dev.url)
            .stdin(Stdio::null())
            .output()
            .context("running switchyard seed")?;
        let took = t.elapsed();
        if !out.status.success() {
            bail!(
                "switchyard seed failed: {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let got = received.load(Ordering::Relaxed);
        if got < args.events as u64 {
            bail!(
                "seed reported caught up, but the sink got {got} of {} events",
                args.events
            );
        }
        seed_ms.push(took.as_secs_f64() * 1000.0);
        // The seed's own account of where the time went.
        if let Ok(report) = serde_json::from_slice::<serde_json::Value>(&out.stdout) {
            let p = &report["phases"];
            let ms = |k: &str| p[k].as_f64().unwrap_or(f64::NAN) * 1000.0;
            say(
                args.json,
                &format!(
                    "seed round {}: {:.0} ms: read {:.0}, append {:.0}, wait {:.0} ms",
                    r + 1,
                    took.as_secs_f64() * 1000.0,
                    ms("read"),
                    ms("append"),
                    ms("wait")
                ),
            );
        }

        let t = Instant::now();
        let out = Command::new(bin)
            .arg("reset")
            .env("SWITCHYARD_URL", &dev.url)
            .stdin(Stdio::null())
            .output()
            .context("running switchyard reset")?;
        if !out.status.success() {
            bail!(
                "switchyard reset failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        reset_ms.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    Ok((median(seed_ms), median(reset_ms)))
}

/// `n` small events for `topic`, keyed over 1,000 keys; ids differ per round so a round
/// after a reset appends them all.
fn write_seed(path: &Path, topic: &str, n: usize, round: usize) -> Result<()> {
    use std::fmt::Write as _;
    let mut y = String::with_capacity(n * 80);
    let _ = writeln!(y, "events:\n  {topic}:");
    for i in 0..n {
        let _ = writeln!(
            y,
            "    - {{type: bench.seeded, id: r{round}-{i}, key: k{}, data: {{n: {i}}}}}",
            i % 1000
        );
    }
    std::fs::write(path, y).with_context(|| format!("writing {}", path.display()))
}

/// An HTTP sink that acknowledges every push and counts the events (a batch counts its length).
async fn start_sink() -> Result<(String, Arc<AtomicU64>)> {
    let count = Arc::new(AtomicU64::new(0));
    let c = count.clone();
    let app = axum::Router::new().route(
        "/",
        axum::routing::post(move |body: bytes::Bytes| {
            let c = c.clone();
            async move {
                let n = serde_json::from_slice::<Vec<serde_json::Value>>(&body)
                    .map_or(1, |events| events.len());
                c.fetch_add(n as u64, Ordering::Relaxed);
                axum::http::StatusCode::NO_CONTENT
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}/", listener.local_addr()?);
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    Ok((url, count))
}

struct Dev {
    child: Child,
    url: String,
    ready: Duration,
}

impl Dev {
    fn start(bin: &Path, system: &Path, state: &Path) -> Result<Dev> {
        let t = Instant::now();
        let mut child = Command::new(bin)
            .arg("dev")
            .arg(system)
            .args(["--listen", "127.0.0.1:0", "--fresh", "--state"])
            .arg(state)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .context("starting switchyard dev")?;
        let mut out = std::io::BufReader::new(child.stdout.take().context("stdout")?);
        loop {
            let mut line = String::new();
            if out.read_line(&mut line)? == 0 {
                let status = child.wait()?;
                bail!("switchyard dev exited ({status}) before it was ready");
            }
            if line.starts_with("switchyard dev: ") && line.contains(" ready in ") {
                let ready = t.elapsed();
                let url = line
                    .split_whitespace()
                    .find(|w| w.starts_with("http://"))
                    .ok_or_else(|| anyhow!("no API address in {line:?}"))?
                    .trim_end_matches(',')
                    .to_string();
                // Keep reading its output so the services never block on a full pipe.
                std::thread::spawn(move || {
                    let mut sink = String::new();
                    while out.read_line(&mut sink).unwrap_or(0) > 0 {
                        sink.clear();
                    }
                });
                return Ok(Dev { child, url, ready });
            }
        }
    }

    fn stop(&mut self) -> Result<()> {
        Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .context("sending SIGTERM")?;
        let status = self.child.wait()?;
        if !status.success() {
            bail!("switchyard dev stopped with {status}");
        }
        Ok(())
    }
}

fn rss_mb_of(pid: u32) -> Result<f64> {
    status_mb(pid, "VmRSS:")
}

/// The most the process ever held resident.
fn peak_rss_mb_of(pid: u32) -> Result<f64> {
    status_mb(pid, "VmHWM:")
}

fn status_mb(pid: u32, field: &str) -> Result<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("reading /proc/{pid}/status"))?;
    let kb: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| anyhow!("no {field} in /proc/{pid}/status"))?;
    Ok(kb / 1024.0)
}

fn row(json: bool, v: serde_json::Value) {
    if json {
        println!("{v}");
    } else {
        let ms = v["ms"].as_f64().unwrap_or(f64::NAN);
        let mb = |k: &str, label: &str| {
            v.get(k)
                .and_then(serde_json::Value::as_f64)
                .map(|r| format!("  {label} {r:.1} MB"))
                .unwrap_or_default()
        };
        let extra = mb("rss_mb", "idle RSS") + &mb("peak_rss_mb", "peak RSS");
        println!(
            "{:12} {:>10.1} ms{extra}",
            v["case"].as_str().unwrap_or("?"),
            ms
        );
    }
}
