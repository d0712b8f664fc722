//! `switchyard-bench journal`: append throughput and append-to-ack latency of the embedded
//! file journal, then of NATS JetStream file storage, with the same closed-loop workload.
//!
//! Workload: one topic (stream) with one partition; each record is a payload of the case's
//! size with a 26-character ULID-like id (NATS: the `Nats-Msg-Id` header, so both systems
//! run their dedup) and no key. `appenders` tasks each keep `in_flight` single-record appends
//! outstanding. Cases: payload 256 B and 4096 B x durability x 1 and 64 appenders.

mod file;
pub(crate) mod nats;

use crate::env;
use crate::load::{self, Load, Measured};
use crate::report::{Case, CaseResult, Reporter, thousands};
use anyhow::{Context as _, Result};
use std::path::PathBuf;
use std::time::{Duration, Instant};
use switchyard_journal::Durability;
use switchyard_journal::nats_server::{self, NatsBinary};

/// Arguments of `switchyard-bench journal`.
#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(flatten)]
    pub run: crate::run::RunArgs,

    /// Single-record appends each appender keeps in flight.
    #[arg(long, value_name = "N", default_value_t = 256)]
    pub in_flight: usize,

    /// Payload sizes to run, in bytes.
    #[arg(long, value_name = "BYTES", value_delimiter = ',', default_values_t = [256usize, 4096])]
    pub payloads: Vec<usize>,

    /// Concurrent appender counts to run.
    #[arg(long, value_name = "N", value_delimiter = ',', default_values_t = [1usize, 64])]
    pub appenders: Vec<usize>,

    /// Switchyard durabilities to run: always, os, interval(<N>ms).
    #[arg(long, value_name = "DURABILITY", value_delimiter = ',', default_values = ["always", "os"])]
    pub durability: Vec<Durability>,

    /// Run only one system.
    #[arg(long, value_enum)]
    pub only: Option<SystemArg>,

    /// Directory for benchmark data [default: $TMPDIR, or ~/.cache/switchyard-bench when
    /// $TMPDIR is tmpfs]. Must be on the disk being measured.
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,

    /// How NATS appenders connect: one shared connection (async-nats's usual shape, and the
    /// faster one here) or one connection each.
    #[arg(long, value_enum, value_name = "HOW", default_value = "shared")]
    pub nats_connections: nats::Connections,

    /// The nats-server binary [default: $SWITCHYARD_NATS_SERVER, pip's scripts directory,
    /// then $PATH; version 2.12 or later].
    #[arg(long, value_name = "PATH")]
    pub nats_server: Option<PathBuf>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum SystemArg {
    Switchyard,
    Nats,
}

const SUITE: &str = "journal";

struct Plan {
    load: Load,
    repeats: usize,
    payloads: Vec<usize>,
    appenders: Vec<usize>,
    /// Start no case after this instant (the --quick time budget).
    start_by: Option<Instant>,
}

pub async fn run(args: Args) -> Result<()> {
    anyhow::ensure!(args.in_flight >= 1, "--in-flight must be at least 1");
    anyhow::ensure!(
        args.payloads.iter().all(|&p| p >= 1),
        "--payloads: every size must be at least 1 byte"
    );
    anyhow::ensure!(
        args.appenders.iter().all(|&a| (1..=4096).contains(&a)),
        "--appenders: every count must be within 1..=4096"
    );
    // --quick must finish within 60 s: start no case after 45 s (a case takes at most ~13 s,
    // and the important ones run first).
    let timing = args
        .run
        .timing(1, args.in_flight, Duration::from_secs(45))?;
    let (warmup, measure, repeats) = (timing.load.warmup, timing.load.measure, timing.repeats);
    let plan = Plan {
        load: timing.load,
        repeats,
        payloads: args.payloads.clone(),
        appenders: args.appenders.clone(),
        start_by: timing.start_by,
    };

    let (base, fs) = env::data_base_dir(args.data_dir.as_deref())?;
    let mut out = Reporter::new(args.run.json);
    out.note(&format!(
        "switchyard-bench journal{}: {} s measured per repeat after >= {} s warm-up, median of {} \
         repeat(s); each appender keeps {} single-record appends in flight; 1 partition, \
         records with a 26-char id and no key; data in {} ({fs}); {} CPU(s)",
        if args.run.quick { " --quick" } else { "" },
        measure.as_secs_f64(),
        warmup.as_secs_f64(),
        repeats,
        args.in_flight,
        base.display(),
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1),
    ))?;

    out.note(
        "columns: events/s acknowledged; p50/p99 append-to-ack latency; cpu = CPU cores busy \
         during the window (bench process, plus the peer's server process)",
    )?;
    let driver = load::calibrate(args.in_flight).await?;
    out.note(&format!(
        "load driver alone (64 appenders, no-op appends that allocate an id): {} ops/s using \
         {:.2} CPU cores; it shares the CPUs with the system measured",
        thousands(driver.events_per_s()),
        driver.cpu_cores
    ))?;

    let mut results = Vec::new();
    if args.only != Some(SystemArg::Nats) {
        for &durability in &args.durability {
            for_each_case(&plan, &mut out, &mut results, |load, payload| {
                let base = base.clone();
                async move {
                    let r = file::run_once(&base, durability, payload, load).await?;
                    Ok(((durability.to_string(), file::SYSTEM), r))
                }
            })
            .await?;
        }
    }
    if args.only != Some(SystemArg::Switchyard) {
        match nats_server::find(args.nats_server.as_deref()) {
            Err(why) => out.note(&format!("note: skipping NATS JetStream: {why}"))?,
            Ok(bin) => {
                run_nats(
                    &plan,
                    &bin,
                    args.nats_connections,
                    &base,
                    &mut out,
                    &mut results,
                )
                .await?
            }
        }
    }
    summarize(&out, &results)?;
    Ok(())
}

async fn run_nats(
    plan: &Plan,
    bin: &NatsBinary,
    connections: nats::Connections,
    base: &std::path::Path,
    out: &mut Reporter,
    results: &mut Vec<CaseResult>,
) -> Result<()> {
    out.note(&format!(
        "NATS JetStream: {} ({}), file storage, 1 replica, a private server per repeat on a \
         free loopback port; {}; async publish with {} acks pending \
         per appender, Nats-Msg-Id set (dedup window 2 min)",
        bin.path.display(),
        bin.version,
        match connections {
            nats::Connections::Shared => "all appenders share one connection",
            nats::Connections::PerAppender => "one connection per appender",
        },
        plan.load.in_flight
    ))?;
    // `always` first: it is the comparison that matters, and the slowest to measure.
    for sync in [nats_server::Sync::Always, nats_server::Sync::Default] {
        for_each_case(plan, out, results, |load, payload| {
            let base = base.to_path_buf();
            let bin = bin.clone();
            async move {
                let r = nats::run_once(&bin, &base, sync, connections, payload, load).await?;
                Ok(((nats::durability_label(sync).to_string(), nats::SYSTEM), r))
            }
        })
        .await?;
    }
    Ok(())
}

/// Runs every payload x appenders case `plan.repeats` times with `once`, reporting medians.
async fn for_each_case<F, Fut>(
    plan: &Plan,
    out: &mut Reporter,
    results: &mut Vec<CaseResult>,
    once: F,
) -> Result<()>
where
    F: Fn(Load, usize) -> Fut,
    Fut: std::future::Future<Output = Result<((String, &'static str), Measured)>>,
{
    for &payload in &plan.payloads {
        for &appenders in &plan.appenders {
            let load = Load {
                appenders,
                ..plan.load
            };
            if plan.start_by.is_some_and(|t| Instant::now() > t) {
                out.note(&format!(
                    "note: skipped {payload} B x {appenders} appenders: over the --quick time budget"
                ))?;
                continue;
            }
            let mut runs = Vec::new();
            let mut label = (String::new(), "");
            for _ in 0..plan.repeats {
                let (l, m) = once(load, payload).await?;
                label = l;
                runs.push(m);
            }
            let (durability, system) = label;
            let case = Case {
                suite: SUITE,
                case: format!(
                    "append-{payload}B-{durability}-{appenders}x{}",
                    load.in_flight
                ),
                system,
                durability,
                payload_bytes: payload,
                appenders,
                in_flight_per_appender: load.in_flight,
                events_per_op: None,
            };
            let r = CaseResult::from_runs(case, &runs).context("a case ran no repeat")?;
            out.row(&r)?;
            results.push(r);
        }
    }
    Ok(())
}

fn summarize(out: &Reporter, results: &[CaseResult]) -> std::io::Result<()> {
    let find = |system: &str, durability: &str| {
        results.iter().find(|r| {
            r.system == system
                && r.durability == durability
                && r.payload_bytes == 256
                && r.appenders == 64
        })
    };
    let ours = find(file::SYSTEM, "always");
    let peer = find(nats::SYSTEM, "always");
    out.note("")?;
    if let Some(o) = ours {
        out.note(&format!(
            "switchyard always, 256 B, 64 appenders: {} events/s (target >= 1,000,000: {})",
            thousands(o.events_per_s),
            if o.events_per_s >= 1_000_000.0 {
                "met"
            } else {
                "NOT met"
            }
        ))?;
    }
    if let Some(p) = peer.filter(|p| p.events_per_s <= 0.0) {
        out.note(&format!(
            "nats-jetstream always, 256 B, 64 appenders: no acknowledgement inside the window \
             ({} s); ratio not computed (NATS acknowledges in bursts once its queue drains: \
             run without --quick, or on a quieter machine)",
            p.seconds.round()
        ))?;
    }
    if let (Some(o), Some(p)) = (ours, peer.filter(|p| p.events_per_s > 0.0)) {
        let ratio = o.events_per_s / p.events_per_s;
        out.note(&format!(
            "ratio switchyard / nats-jetstream (both fsync before ack), 256 B, 64 appenders: \
             {ratio:.1}x (target >= 100x: {})",
            if ratio >= 100.0 { "met" } else { "NOT met" }
        ))?;
    }
    Ok(())
}
