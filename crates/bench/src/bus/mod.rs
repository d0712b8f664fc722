//! `switchyard-bench bus`: publish throughput and publish-to-ack latency of Switchyard's HTTP
//! API (in process, over loopback), then of NATS JetStream over its own protocol, with the
//! same closed-loop workload.
//!
//! Workload: one topic (stream) with one partition; `publishers` tasks. A Switchyard
//! publisher keeps `in_flight` POSTs of `batch` CloudEvents (batch mode, each event with a
//! 26-character ULID-like id and `payload` bytes of text data) outstanding on one shared,
//! pooled HTTP/1.1 client. A NATS publisher keeps `in_flight × batch` single-message async
//! publishes of `payload` bytes pending (the same events outstanding), through the
//! `journal` suite's NATS source (`Nats-Msg-Id` set, one shared connection).
//! Durability pairs: Switchyard `always` with NATS `sync_interval: always`, Switchyard `os`
//! with NATS's default sync.

mod backend;
mod delivery;
mod http;
mod store;

use crate::env;
use crate::journal::SystemArg;
use crate::journal::nats;
use crate::load::{Load, Measured};
use crate::report::{Case, CaseResult, Reporter, thousands};
use crate::run::Timing as Plan;
use anyhow::{Context as _, Result};
use backend::JournalArg;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use switchyard_journal::Durability;
use switchyard_journal::nats_server::{self, NatsBinary};

/// Arguments of `switchyard-bench bus`.
#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(flatten)]
    pub run: crate::run::RunArgs,

    /// Concurrent publishers (the same number for every system).
    #[arg(long, value_name = "N", default_value_t = 16)]
    pub publishers: usize,

    /// Events per HTTP publish request (batch mode).
    #[arg(long, value_name = "N", default_value_t = 100)]
    pub batch: usize,

    /// HTTP publish requests each publisher keeps in flight.
    #[arg(long, value_name = "N", default_value_t = 4)]
    pub in_flight: usize,

    /// Acks each NATS publisher keeps pending [default: --in-flight × --batch, the same
    /// events outstanding as over HTTP].
    #[arg(long, value_name = "N")]
    pub nats_pending: Option<usize>,

    /// Bytes of each event's data.
    #[arg(long, value_name = "BYTES", default_value_t = 256)]
    pub payload: usize,

    /// Switchyard durabilities to run: always, os, interval(<N>ms).
    #[arg(long, value_name = "DURABILITY", value_delimiter = ',', default_values = ["always", "os"])]
    pub durability: Vec<Durability>,

    /// The journal Switchyard runs on: file, nats (a private nats-server per repeat, which
    /// the bench starts itself) or nats://host:port[,host:port...][?sync=always&replicas=3]
    /// (a cluster of yours; each repeat uses a topic of its own and deletes it).
    #[arg(long, value_name = "JOURNAL", default_value = "file")]
    pub journal: JournalArg,

    /// The store the publish-to-delivery case runs on: sqlite (in each repeat's directory)
    /// or postgres://[user[:password]@]host[:port]/database[?pool=N] (a database of yours;
    /// each repeat uses a subscription of its own and deletes it). Publishing does not
    /// touch the store.
    // Parsed after clap, whose error would repeat the URL with its password.
    #[arg(long, value_name = "STORE", default_value = "sqlite")]
    pub store: String,

    /// Run only one system.
    #[arg(long, value_enum)]
    pub only: Option<SystemArg>,

    /// Directory for benchmark data [default: $TMPDIR, or ~/.cache/switchyard-bench when
    /// $TMPDIR is tmpfs]. Must be on the disk being measured.
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,

    /// The nats-server binary [default: $SWITCHYARD_NATS_SERVER, pip's scripts directory,
    /// then $PATH; version 2.12 or later].
    #[arg(long, value_name = "PATH")]
    pub nats_server: Option<PathBuf>,
}

const SUITE: &str = "bus";

pub async fn run(args: Args) -> Result<()> {
    anyhow::ensure!(
        (1..=1024).contains(&args.publishers),
        "--publishers must be within 1..=1024"
    );
    anyhow::ensure!(
        (1..=10_000).contains(&args.batch),
        "--batch must be within 1..=10000 (the server's default batch limit)"
    );
    anyhow::ensure!(args.in_flight >= 1, "--in-flight must be at least 1");
    anyhow::ensure!(args.payload >= 1, "--payload must be at least 1 byte");
    let store: store::StoreArg = args
        .store
        .parse()
        .map_err(|e| anyhow::anyhow!("--store: {e}"))?;
    let nats_pending = args.nats_pending.unwrap_or(args.in_flight * args.batch);
    anyhow::ensure!(nats_pending >= 1, "--nats-pending must be at least 1");
    // --quick must finish within 60 s: start no case after 40 s (a case takes at most ~15 s;
    // four cases normally take about 10 s together).
    let plan = args
        .run
        .timing(args.publishers, args.in_flight, Duration::from_secs(40))?;
    let (warmup, measure, repeats) = (plan.load.warmup, plan.load.measure, plan.repeats);
    let shape = http::Shape {
        batch: args.batch,
        payload: args.payload,
    };

    let (base, fs) = env::data_base_dir(args.data_dir.as_deref())?;
    let bin = nats_server::find(args.nats_server.as_deref());
    let journal_bin = match (&args.journal, &bin) {
        (JournalArg::PrivateNats, Err(why)) => anyhow::bail!("--journal nats: {why}"),
        (_, Ok(b)) => Some(b.clone()),
        _ => None,
    };
    let system = args.journal.system();
    let mut out = Reporter::new(args.run.json);
    out.note(&format!(
        "switchyard-bench bus{}: {} s measured per repeat after >= {} s warm-up, median of {} \
         repeat(s); {} publishers; {} B of data per event; 1 partition; data in {} ({fs}); \
         {} CPU(s)",
        if args.run.quick { " --quick" } else { "" },
        measure.as_secs_f64(),
        warmup.as_secs_f64(),
        repeats,
        args.publishers,
        args.payload,
        base.display(),
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1),
    ))?;
    out.note(&format!(
        "{system}: the HTTP API in this process ({}), one pooled HTTP/1.1 \
         keep-alive client; each publisher keeps {} POSTs of {} CloudEvents in flight \
         (application/cloudevents-batch+json, unique ids); events/s = acknowledged batches/s \
         x {}; p50/p99 are per request",
        args.journal.describe(),
        args.in_flight,
        args.batch,
        args.batch
    ))?;
    out.note(
        "columns: events/s acknowledged; p50/p99 publish-to-ack latency; cpu = CPU cores busy \
         during the window (bench process with the in-process server, plus the peer's server \
         process); appenders = publishers",
    )?;

    let mut results = Vec::new();
    if args.only != Some(SystemArg::Nats) {
        for &durability in &args.durability {
            let case = Case {
                suite: SUITE,
                case: format!(
                    "publish-http-{}B-{durability}-{}x{}-batch{}",
                    args.payload, args.publishers, args.in_flight, args.batch
                ),
                system,
                durability: durability.to_string(),
                payload_bytes: args.payload,
                appenders: args.publishers,
                in_flight_per_appender: args.in_flight,
                events_per_op: Some(args.batch),
            };
            let (journal, b) = (&args.journal, journal_bin.as_ref());
            measure_case(&plan, &mut out, &mut results, case, |load| {
                http::run_once(&base, journal, b, durability, shape, load)
            })
            .await?;
        }
    }
    if args.only != Some(SystemArg::Switchyard) {
        match &bin {
            Err(why) => out.note(&format!("note: skipping NATS JetStream: {why}"))?,
            Ok(bin) => {
                let nats_plan = Plan {
                    load: Load {
                        in_flight: nats_pending,
                        ..plan.load
                    },
                    ..plan
                };
                run_nats(&nats_plan, bin, &base, args.payload, &mut out, &mut results).await?
            }
        }
    }
    if args.only != Some(SystemArg::Nats) {
        out.note(
            "publish-to-delivery: single events POSTed at 1,000/s (open loop, durability \
             always), pushed by a subscription to an HTTP subscriber in this process; latency \
             from just before the POST to the subscriber's receipt",
        )?;
        out.note(&format!("publish-to-delivery store: {}", store.describe()))?;
        let case = Case {
            suite: SUITE,
            case: "publish-to-delivery".into(),
            system: store.system(system),
            durability: "always".into(),
            payload_bytes: args.payload,
            appenders: 1,
            in_flight_per_appender: 0,
            events_per_op: None,
        };
        // The publish part of each repeat, to show where the time goes.
        let publish_parts = std::sync::Mutex::new(Vec::new());
        let (base_ref, parts_ref, payload) = (&base, &publish_parts, args.payload);
        let (journal, store, b) = (&args.journal, &store, journal_bin.as_ref());
        measure_case(&plan, &mut out, &mut results, case, |load| async move {
            let run = delivery::run_once(base_ref, journal, store, b, 1_000, payload, load).await?;
            parts_ref
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(run.publish_ns);
            Ok(run.measured)
        })
        .await?;
        let parts = publish_parts
            .into_inner()
            .unwrap_or_else(|e| e.into_inner());
        if !parts.is_empty() {
            let q = |p: f64| {
                crate::report::median(
                    parts
                        .iter()
                        .map(|h| h.value_at_quantile(p) as f64 / 1000.0)
                        .collect(),
                )
            };
            out.note(&format!(
                "  of which the publish alone (POST to its answer, journal fsync included): \
                 p50 {:.0} µs, p99 {:.0} µs; the rest is the subscription's read, store \
                 writes and the push",
                q(0.5),
                q(0.99)
            ))?;
        }
    }
    summarize(&out, &results, system)?;
    if let Some(d) = results.iter().find(|r| r.case == "publish-to-delivery") {
        out.note(&format!(
            "publish-to-delivery at 1,000 events/s: p50 {:.0} µs, p99 {:.0} µs (target p99 <= \
             2,000 µs: {})",
            d.p50_us,
            d.p99_us,
            if d.p99_us <= 2_000.0 {
                "met"
            } else {
                "NOT met"
            }
        ))?;
    }
    Ok(())
}

async fn run_nats(
    plan: &Plan,
    bin: &NatsBinary,
    base: &Path,
    payload: usize,
    out: &mut Reporter,
    results: &mut Vec<CaseResult>,
) -> Result<()> {
    out.note(&format!(
        "nats-jetstream: {} ({}), file storage, 1 replica, a private server per repeat on a \
         free loopback port; all publishers share one connection; async publish of single \
         {payload} B messages with {} acks pending per publisher, Nats-Msg-Id set (dedup \
         window 2 min)",
        bin.path.display(),
        bin.version,
        plan.load.in_flight
    ))?;
    // `always` first: the slowest to measure, and the comparison that matters most.
    for sync in [nats_server::Sync::Always, nats_server::Sync::Default] {
        let durability = nats::durability_label(sync);
        let case = Case {
            suite: SUITE,
            case: format!(
                "publish-nats-{payload}B-{durability}-{}x{}",
                plan.load.appenders, plan.load.in_flight
            ),
            system: nats::SYSTEM,
            durability: durability.to_string(),
            payload_bytes: payload,
            appenders: plan.load.appenders,
            in_flight_per_appender: plan.load.in_flight,
            events_per_op: None,
        };
        measure_case(plan, out, results, case, |load| {
            nats::run_once(bin, base, sync, nats::Connections::Shared, payload, load)
        })
        .await?;
    }
    Ok(())
}

/// Runs `case` `plan.repeats` times with `once`, reporting the medians.
async fn measure_case<F, Fut>(
    plan: &Plan,
    out: &mut Reporter,
    results: &mut Vec<CaseResult>,
    case: Case,
    once: F,
) -> Result<()>
where
    F: Fn(Load) -> Fut,
    Fut: std::future::Future<Output = Result<Measured>>,
{
    if plan.start_by.is_some_and(|t| Instant::now() > t) {
        out.note(&format!(
            "note: skipped {} ({}): over the --quick time budget",
            case.case, case.system
        ))?;
        return Ok(());
    }
    let mut runs = Vec::with_capacity(plan.repeats);
    for _ in 0..plan.repeats {
        let m = once(plan.load)
            .await
            .with_context(|| format!("{} ({})", case.case, case.system))?;
        runs.push(m);
    }
    let r = CaseResult::from_runs(case, &runs).context("a case ran no repeat")?;
    out.row(&r)?;
    results.push(r);
    Ok(())
}

/// The targets: durable publish over HTTP (Switchyard `always`) at least 2x NATS
/// JetStream with its default sync, and at least 50x NATS with `sync_interval: always`.
fn summarize(out: &Reporter, results: &[CaseResult], system: &str) -> std::io::Result<()> {
    let find = |system: &str, durability: &str| {
        results.iter().find(|r| {
            r.system == system && r.durability == durability && r.case != "publish-to-delivery"
        })
    };
    out.note("")?;
    let ratio_line = |ours: &CaseResult, peer: &CaseResult, what: &str, target: Option<f64>| {
        if peer.events_per_s <= 0.0 {
            return format!(
                "{what}: nats-jetstream {} acknowledged nothing inside the window ({:.0} s); \
                 ratio not computed (NATS acknowledges in bursts: run without --quick, or on a \
                 quieter machine)",
                peer.durability, peer.seconds
            );
        }
        let ratio = ours.events_per_s / peer.events_per_s;
        let verdict = match target {
            Some(t) => format!(
                " (target >= {t}x: {})",
                if ratio >= t { "met" } else { "NOT met" }
            ),
            None => " (no target; same durability class)".to_string(),
        };
        format!(
            "{what}: {} / {} events/s = {ratio:.2}x{verdict}",
            thousands(ours.events_per_s),
            thousands(peer.events_per_s),
        )
    };
    let durable = find(system, "always");
    let fast = find(system, "os");
    let nats_default = find(
        nats::SYSTEM,
        nats::durability_label(nats_server::Sync::Default),
    );
    let nats_always = find(
        nats::SYSTEM,
        nats::durability_label(nats_server::Sync::Always),
    );
    if let (Some(o), Some(p)) = (durable, nats_default) {
        out.note(&ratio_line(
            o,
            p,
            &format!("{system} always over HTTP vs nats-jetstream default sync"),
            Some(2.0),
        ))?;
    }
    if let (Some(o), Some(p)) = (durable, nats_always) {
        out.note(&ratio_line(
            o,
            p,
            &format!("{system} always over HTTP vs nats-jetstream sync_interval: always"),
            Some(50.0),
        ))?;
    }
    if let (Some(o), Some(p)) = (fast, nats_default) {
        out.note(&ratio_line(
            o,
            p,
            &format!("{system} os over HTTP vs nats-jetstream default sync"),
            None,
        ))?;
    }
    if durable.is_none() || (nats_default.is_none() && nats_always.is_none()) {
        out.note(
            "note: the targets need switchyard `always` and a nats-jetstream case; not all \
             were run",
        )?;
    }
    Ok(())
}
