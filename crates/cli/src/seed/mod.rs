//! `switchyard seed FILE.yaml`: puts a running server into a known state. The file lists
//! events per topic (and topics to create, and HTTP calls to make afterwards); seeding
//! appends the events the topics do not hold yet, makes the calls, and waits until every
//! subscription has caught up. Seeding the same file twice changes nothing the second time.
//!
//! `file` owns the format and its validation (all before the server is contacted),
//! `publish` the topics and events, `settle` the calls and the wait, `progress` the
//! terminal output while it runs; this module runs the steps and reports.

mod file;
mod progress;
mod publish;
mod settle;
mod yaml;

use crate::Exit;
use crate::remote::Server;
use anyhow::{Context as _, anyhow};
use clap::Args;
use serde::Serialize;
use std::io::Write as _;
use std::path::PathBuf;
use std::time::{Duration, Instant};

pub const HELP: &str = "\
The file (YAML; unknown keys are refused, and nothing is sent unless the whole file is valid):

  topics:                      # optional: created with these settings if missing
    orders.v1: {partitions: 3}
  events:                      # per topic, in order
    orders.v1:
      - type: order.placed     # required
        key: order-1           # partition key (default: subject)
        subject: order-1
        data: {total: 42}      # any YAML, sent as JSON
        # id: o-1              # default: derived from the file name, topic and content
        # source: /shop        # default: /seed/<file stem>
        # time: 2026-01-01T10:00:00Z
        # extensions: {tenant: acme}
  calls:                       # optional: made after the events, in order
    - method: PUT              # default POST
      url: http://localhost:8081/users/u-1   # or /v1/... on this server (with its token)
      headers: {authorization: 'Bearer ${USERS_TOKEN}'}   # ${VAR}: from the environment
      body: {name: Ada}
      expect: [200, 201]       # default: any 2xx

Events already in their topic (same id) are skipped, so seeding twice changes nothing.
Then it waits until every subscription has read everything and has nothing in flight
(parked deliveries count as done, with a warning).

Exit codes: 0 the state was reached; 1 it was not (a call answered another status, or the
subscriptions did not catch up in time); 2 a bad file or argument, or the server is
unreachable or refused the seed.

Examples:
  switchyard seed seeds/shop.yaml
  switchyard seed seeds/shop.yaml --server http://127.0.0.1:7400 --timeout 2m --json";

#[derive(Args, Debug)]
pub struct SeedArgs {
    /// The seed file (YAML).
    pub file: PathBuf,
    /// How long to wait for the subscriptions to catch up (also the limit for each call).
    #[arg(long, default_value = "60s", value_parser = crate::args::parse_duration)]
    pub timeout: Duration,
    /// Do not wait for the subscriptions.
    #[arg(long)]
    pub no_wait: bool,
    /// Print one JSON document instead of the report.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub server: Server,
}

#[derive(Debug, Serialize)]
struct Report {
    file: String,
    server: String,
    ok: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
    topics: Vec<TopicReport>,
    calls: Vec<settle::CallOutcome>,
    /// None with `--no-wait` or when the wait did not start.
    caught_up: Option<bool>,
    subscriptions: Vec<settle::SubState>,
    warnings: Vec<String>,
    seconds: f64,
    /// Where the time went.
    phases: Phases,
}

/// Seconds per step of the seed: reading and validating the file, appending the events
/// (topics included), the calls, and waiting for the subscriptions.
#[derive(Debug, Default, Serialize)]
struct Phases {
    read: f64,
    append: f64,
    calls: f64,
    wait: f64,
}

#[derive(Debug, Serialize)]
struct TopicReport {
    topic: String,
    created: bool,
    events: u64,
    appended: u64,
    already_there: u64,
}

pub async fn run(args: SeedArgs) -> Result<u8, Exit> {
    let started = Instant::now();
    let seed = file::load(&args.file)?;
    let mut phases = Phases {
        read: started.elapsed().as_secs_f64(),
        ..Phases::default()
    };
    let mut step = Instant::now();
    let mut lap = || {
        std::mem::replace(&mut step, Instant::now())
            .elapsed()
            .as_secs_f64()
    };
    let server = &args.server;
    // One cheap request first, so an unreachable server is reported as that.
    server
        .request(reqwest::Method::GET, "/healthz")?
        .send()
        .await
        .with_context(|| {
            format!(
                "cannot reach the Switchyard server at {} (--server or SWITCHYARD_URL)",
                server.server
            )
        })?;
    let progress = progress::Progress::new();
    let states = publish::inspect(server, &seed).await?;
    let warnings: Vec<String> = seed
        .topics
        .iter()
        .zip(&states)
        .filter(|(_, s)| !s.differs.is_empty())
        .map(|(t, s)| {
            format!(
                "topic {} exists with other settings than the file's, left as it is: {}",
                t.name,
                s.differs.join("; ")
            )
        })
        .collect();
    let created = publish::create_missing(server, &seed, &states).await?;
    let outcomes = publish::append(server, &seed, &states, &progress).await?;
    phases.append = lap();
    let mut report = Report {
        file: seed.file.clone(),
        server: server.server.clone(),
        ok: true,
        error: None,
        topics: seed
            .topics
            .iter()
            .zip(outcomes)
            .zip(created)
            .map(|((t, o), created)| TopicReport {
                topic: t.name.clone(),
                created,
                events: t.events.len() as u64,
                appended: o.appended,
                already_there: o.already_there,
            })
            .collect(),
        calls: Vec::new(),
        caught_up: None,
        subscriptions: Vec::new(),
        warnings,
        seconds: 0.0,
        phases: Phases::default(),
    };

    report.calls = settle::make_calls(server, &seed.calls, args.timeout).await;
    phases.calls = lap();
    if let Some(failed) = report.calls.iter().find(|c| !c.ok) {
        report.error = Some(format!(
            "{}:{}: call {} {}: {}",
            seed.file,
            failed.line,
            failed.method,
            failed.url,
            failed.error.as_deref().unwrap_or("failed")
        ));
    } else if !args.no_wait {
        let waited = settle::wait(server, args.timeout, &progress).await?;
        if !waited.available {
            report
                .warnings
                .push("the server runs without subscriptions: nothing to wait for".into());
        }
        for s in waited.subs.iter().filter(|s| s.parked > 0) {
            report.warnings.push(format!(
                "subscription {} has {} parked deliveries{}",
                s.name,
                s.parked,
                s.last_error
                    .as_deref()
                    .map(|e| format!(" (last error: {e})"))
                    .unwrap_or_default()
            ));
        }
        if !waited.caught_up {
            let behind: Vec<&str> = waited
                .subs
                .iter()
                .filter(|s| !s.caught_up())
                .map(|s| s.name.as_str())
                .collect();
            report.error = Some(format!(
                "subscriptions did not catch up within {}: {}",
                humantime::format_duration(args.timeout),
                behind.join(", ")
            ));
        }
        report.caught_up = Some(waited.caught_up);
        report.subscriptions = waited.subs;
        phases.wait = lap();
    }
    report.ok = report.error.is_none();
    report.seconds = started.elapsed().as_secs_f64();
    report.phases = phases;

    for w in &report.warnings {
        eprintln!("warning: {w}");
    }
    let mut out = std::io::stdout().lock();
    if args.json {
        writeln!(out, "{}", serde_json::to_string(&report)?)?;
    } else {
        print_human(&mut out, &report)?;
    }
    out.flush()?;
    match report.error {
        None => Ok(0),
        Some(e) => Err(Exit {
            code: 1,
            error: anyhow!(e),
        }),
    }
}

fn print_human(out: &mut impl std::io::Write, r: &Report) -> std::io::Result<()> {
    let p = &r.phases;
    writeln!(
        out,
        "seed {} into {}: {:.2}s (read {:.2}s, append {:.2}s, calls {:.2}s, wait {:.2}s)",
        r.file, r.server, r.seconds, p.read, p.append, p.calls, p.wait
    )?;
    for t in &r.topics {
        writeln!(
            out,
            "  topic {}: appended {}, already there {}{}",
            t.topic,
            t.appended,
            t.already_there,
            if t.created { " (created)" } else { "" }
        )?;
    }
    for c in &r.calls {
        match (c.status, &c.error) {
            (Some(s), None) => writeln!(out, "  call {} {}: {s}", c.method, c.url)?,
            (_, e) => writeln!(
                out,
                "  call {} {}: FAILED {}",
                c.method,
                c.url,
                e.as_deref().unwrap_or_default()
            )?,
        }
    }
    for s in &r.subscriptions {
        let state = if s.caught_up() {
            "caught up".to_string()
        } else {
            format!(
                "NOT caught up: lag {}, in flight {}{}",
                s.lag,
                s.in_flight,
                s.last_error
                    .as_deref()
                    .map(|e| format!(", last error: {e}"))
                    .unwrap_or_default()
            )
        };
        let parked = if s.parked > 0 {
            format!(", {} parked (warning)", s.parked)
        } else {
            String::new()
        };
        writeln!(out, "  subscription {}: {state}{parked}", s.name)?;
    }
    match r.caught_up {
        Some(true) if r.subscriptions.is_empty() => writeln!(out, "  no subscriptions")?,
        Some(true) => writeln!(out, "  every subscription has caught up")?,
        _ => {}
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_example_in_help_is_a_valid_seed() {
        let start = super::HELP.find("  topics:").expect("example start");
        let end = super::HELP.find("\n\nEvents already").expect("example end");
        let example: String = super::HELP[start..end]
            .lines()
            .map(|l| format!("{}\n", l.strip_prefix("  ").unwrap_or(l)))
            .collect::<String>()
            // The variable is not set here.
            .replace("${USERS_TOKEN}", "secret");
        let seed = super::file::parse(&example, "help.yaml", "help").expect("valid example");
        assert_eq!(seed.topics.len(), 1);
        assert_eq!(seed.topics[0].events.len(), 1);
        assert_eq!(seed.calls.len(), 1);
    }
}
