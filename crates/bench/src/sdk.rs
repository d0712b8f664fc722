//! `switchyard-bench sdk`: what the Rust SDK costs.
//!
//! - `rss-15-services`: the peak resident memory (VmHWM) of one process hosting 15
//!   example-sized SDK services on the embedded journal: each with its own SQLite database
//!   (inbox, outbox, cursors, a table of its own), its own HTTP port, a pull consumer of a
//!   3-partition topic and an outbox relay, all handling the same stream of events and
//!   publishing one event per event handled. It runs in a child process (this binary,
//!   `sdk-host`), so nothing of the benchmark itself is counted.
//! - `publish-to-handler`: in this process, an event appended through the SDK's
//!   [`Platform`] to the file journal (durability `os`) until its handler starts running
//!   in a service pulling that topic (after its inbox row is written, before its commit),
//!   at a steady rate; p50 and p99.

use crate::report::say;
use anyhow::{Context as _, Result, anyhow, bail};
use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};
use serde_json::json;
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use switchyard_journal::file::FileJournal;
use switchyard_journal::{Durability, Journal, TopicConfig, TopicName};
use switchyard_sdk::sqlx::{self, Sqlite};
use switchyard_sdk::{
    Consume, Context, Event, HandlerError, Host, Launch, Lineage, Log, Outgoing, Platform, Service,
    new_id,
};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Shorter runs: the whole suite finishes within 60 s.
    #[arg(long)]
    quick: bool,
    /// One JSON object per case on stdout (notes go to stderr).
    #[arg(long)]
    json: bool,
    /// Services hosted in the memory case.
    #[arg(long, default_value_t = 15)]
    services: usize,
    /// Events every service handles in the memory case.
    #[arg(long, value_name = "N")]
    events: Option<usize>,
    /// Events per second in the latency case.
    #[arg(long, default_value_t = 1000)]
    rate: u32,
    /// Seconds measured in the latency case [default: 3 with --quick, else 10].
    #[arg(long)]
    seconds: Option<f64>,
    /// Where data goes [default: $TMPDIR, or ~/.cache/switchyard-bench when that is tmpfs].
    #[arg(long, value_name = "DIR")]
    data_dir: Option<std::path::PathBuf>,
}

/// The hidden child of the memory case.
#[derive(clap::Args, Debug)]
pub struct HostArgs {
    #[arg(long)]
    dir: std::path::PathBuf,
    #[arg(long)]
    services: usize,
    #[arg(long)]
    events: usize,
}

#[derive(Event, Serialize, Deserialize, Debug)]
#[event(type = "order.placed", topic = "bench.orders.v1", key = order)]
struct OrderPlaced {
    order: String,
    customer: String,
    cents: i64,
    /// Nanoseconds since the bench's epoch, just before the publish.
    sent_ns: u64,
}

#[derive(Event, Serialize, Deserialize, Debug)]
#[event(type = "order.noted", topic = "bench.notes.v1", key = order)]
struct OrderNoted {
    order: String,
    by: String,
}

fn topic(name: &str) -> Result<TopicName> {
    TopicName::new(name).map_err(|e| anyhow!("{name}: {e}"))
}

async fn open_journal(dir: &Path, durability: Durability) -> Result<FileJournal> {
    let journal = FileJournal::open(dir.join("journal")).context("opening the journal")?;
    for name in ["bench.orders.v1", "bench.notes.v1"] {
        journal
            .create_topic(
                &topic(name)?,
                TopicConfig {
                    partitions: 3,
                    durability,
                    ..TopicConfig::default()
                },
            )
            .await?;
    }
    Ok(journal)
}

/// An example-sized service: a table of its own, one row and one published event per event.
fn example_service(name: &str) -> Service<Sqlite> {
    Service::new(name).on(|ctx: Context<Sqlite>, ev: OrderPlaced| async move {
        let mut tx = ctx.tx().await?;
        sqlx::query(
            "CREATE TABLE IF NOT EXISTS orders (id TEXT PRIMARY KEY, customer TEXT, cents INTEGER)",
        )
        .execute(&mut *tx)
        .await?;
        sqlx::query("INSERT OR IGNORE INTO orders (id, customer, cents) VALUES (?, ?, ?)")
            .bind(&ev.order)
            .bind(&ev.customer)
            .bind(ev.cents)
            .execute(&mut *tx)
            .await?;
        drop(tx);
        ctx.publish(&OrderNoted {
            order: ev.order,
            by: ctx.handle().name().to_string(),
        })?;
        Ok::<(), HandlerError>(())
    })
}

fn launch(platform: &Platform, dir: &Path, name: &str) -> Launch {
    let env: BTreeMap<String, String> = [
        ("PORT".to_string(), "0".to_string()),
        (
            "DATABASE_URL".to_string(),
            format!("sqlite://{}", dir.join(format!("{name}.sqlite")).display()),
        ),
    ]
    .into_iter()
    .collect();
    Launch {
        platform: platform.clone(),
        env,
        log: Log::named(name),
        consume: Consume::Pull,
    }
}

fn event(n: usize, sent_ns: u64) -> Result<switchyard_sdk::CloudEvent> {
    Ok(Outgoing::of(&OrderPlaced {
        order: format!("ord-{n}"),
        customer: format!("customer-{}", n % 97),
        cents: (n as i64 % 500) * 100,
        sent_ns,
    })?
    .stamp(new_id(), "/bench", &Lineage::root())?)
}

/// The child: hosts the services, feeds them, waits until each handled every event, and
/// prints its peak and current resident memory as one JSON line.
pub async fn host_child(args: HostArgs) -> Result<()> {
    let journal = open_journal(&args.dir, Durability::Os).await?;
    let platform = Platform::Journal(Arc::new(journal.clone()));
    let names: Vec<String> = (1..=args.services).map(|i| format!("svc-{i:02}")).collect();
    let mut host = Host::new();
    for n in &names {
        host = host.service(example_service(n));
    }
    let mut running = Vec::new();
    for n in &names {
        running.push(host.start(n, launch(&platform, &args.dir, n))?);
    }
    for chunk in (0..args.events).collect::<Vec<_>>().chunks(50) {
        let events = chunk
            .iter()
            .map(|&n| event(n, 0))
            .collect::<Result<Vec<_>>>()?;
        platform.publish("bench.orders.v1", events, None).await?;
    }
    // Every service handled every event (and published its note).
    let want = (args.events * args.services) as u64;
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        let info = journal.describe_topic(&topic("bench.notes.v1")?).await?;
        let notes: u64 = info.partitions.iter().map(|p| p.next_offset).sum();
        if notes >= want {
            break;
        }
        if Instant::now() > deadline {
            bail!("only {notes} of {want} notes after 300 s");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let status = std::fs::read_to_string("/proc/self/status").context("/proc/self/status")?;
    let kb = |field: &str| -> Option<f64> {
        status
            .lines()
            .find_map(|l| l.strip_prefix(field))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
    };
    let peak = kb("VmHWM:").ok_or_else(|| anyhow!("no VmHWM"))? / 1024.0;
    let now = kb("VmRSS:").ok_or_else(|| anyhow!("no VmRSS"))? / 1024.0;
    println!(
        "{}",
        json!({"peak_mb": peak, "rss_mb": now, "handled": want})
    );
    for mut r in running {
        r.stop(Duration::from_secs(5)).await;
    }
    journal.close().await?;
    Ok(())
}

pub async fn run(args: Args) -> Result<()> {
    let (base, fs) = crate::env::data_base_dir(args.data_dir.as_deref())?;
    let scratch = tempfile::tempdir_in(&base).context("creating a scratch directory")?;
    let events = args.events.unwrap_or(if args.quick { 100 } else { 400 });
    say(
        args.json,
        &format!(
            "switchyard-bench sdk: data in {} ({fs}); {} services x {events} events; then \
             publish-to-handler at {}/s, durability os",
            scratch.path().display(),
            args.services,
            args.rate
        ),
    );

    // rss-15-services, in a child.
    let dir = scratch.path().join("rss");
    std::fs::create_dir_all(&dir)?;
    let t = Instant::now();
    let out = std::process::Command::new(std::env::current_exe()?)
        .arg("sdk-host")
        .arg("--dir")
        .arg(&dir)
        .args(["--services", &args.services.to_string()])
        .args(["--events", &events.to_string()])
        .stdin(std::process::Stdio::null())
        .stderr(std::process::Stdio::inherit())
        .output()
        .context("running the host child")?;
    if !out.status.success() {
        bail!("the host child failed: {}", out.status);
    }
    let stdout = String::from_utf8_lossy(&out.stdout);
    let line = stdout
        .lines()
        .rev()
        .find(|l| l.starts_with('{') && l.contains("peak_mb"))
        .ok_or_else(|| anyhow!("the host child printed no figures"))?;
    let figures: serde_json::Value = serde_json::from_str(line)?;
    let peak = figures["peak_mb"].as_f64().unwrap_or(f64::NAN);
    let case = format!("rss-{}-services", args.services);
    if args.json {
        println!("{}", json!({"suite": "sdk", "case": case, "rss_mb": peak}));
    } else {
        println!(
            "{case:24} peak RSS {peak:6.1} MB (now {:.1} MB) after {} handler runs in {:.1} s",
            figures["rss_mb"].as_f64().unwrap_or(f64::NAN),
            figures["handled"],
            t.elapsed().as_secs_f64()
        );
    }

    // publish-to-handler, in this process.
    let seconds = args.seconds.unwrap_or(if args.quick { 3.0 } else { 10.0 });
    if !(seconds.is_finite() && seconds > 0.0) {
        bail!("--seconds must be a positive number");
    }
    if args.rate == 0 {
        bail!("--rate must be at least 1");
    }
    let (p50, p99, n) = latency(&scratch.path().join("latency"), args.rate, seconds).await?;
    if args.json {
        println!(
            "{}",
            json!({"suite": "sdk", "case": "publish-to-handler", "p50_us": p50, "p99_us": p99})
        );
    } else {
        println!("publish-to-handler       p50 {p50:7.1} us  p99 {p99:7.1} us  ({n} events)");
    }
    say(
        args.json,
        &format!(
            "targets: {} services <= 50 MB peak RSS ({}), publish-to-handler p99 <= 200 us ({})",
            args.services,
            if peak <= 50.0 { "met" } else { "NOT met" },
            if p99 <= 200.0 { "met" } else { "NOT met" }
        ),
    );
    Ok(())
}

/// Events at `rate`/s for `seconds` (after a second of warm-up) into one pulling service;
/// the handler records how long after its publish it started.
async fn latency(dir: &Path, rate: u32, seconds: f64) -> Result<(f64, f64, u64)> {
    std::fs::create_dir_all(dir)?;
    let journal = open_journal(dir, Durability::Os).await?;
    let platform = Platform::Journal(Arc::new(journal.clone()));
    let epoch = Instant::now();
    let hist = Arc::new(Mutex::new(Histogram::<u64>::new(3)?));
    let recording = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let (h, rec) = (hist.clone(), recording.clone());
    let service =
        Service::<Sqlite>::new("timed").on(move |_ctx: Context<Sqlite>, ev: OrderPlaced| {
            let took = epoch.elapsed().as_nanos() as u64 - ev.sent_ns;
            if rec.load(std::sync::atomic::Ordering::Relaxed) {
                let _ = h
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .record((took / 1000).max(1));
            }
            async { Ok::<(), HandlerError>(()) }
        });
    let host = Host::new().service(service);
    let mut run = host.start("timed", launch(&platform, dir, "timed"))?;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let interval = Duration::from_secs_f64(1.0 / f64::from(rate));
    let warmup = Duration::from_secs(1);
    let total = warmup + Duration::from_secs_f64(seconds);
    let start = Instant::now();
    let mut next = tokio::time::Instant::now();
    let mut n = 0usize;
    while start.elapsed() < total {
        if start.elapsed() >= warmup {
            recording.store(true, std::sync::atomic::Ordering::Relaxed);
        }
        next += interval;
        tokio::time::sleep_until(next).await;
        let e = event(n, epoch.elapsed().as_nanos() as u64)?;
        platform.publish("bench.orders.v1", vec![e], None).await?;
        n += 1;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    recording.store(false, std::sync::atomic::Ordering::Relaxed);
    run.stop(Duration::from_secs(5)).await;
    journal.close().await?;
    let h = hist.lock().unwrap_or_else(|e| e.into_inner());
    if h.is_empty() {
        bail!("no event reached its handler");
    }
    Ok((
        h.value_at_quantile(0.5) as f64,
        h.value_at_quantile(0.99) as f64,
        h.len(),
    ))
}
