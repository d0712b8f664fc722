//! `switchyard messages`, `cases` and `adapters` (clients of a running server's
//! integration gateway) and `switchyard fake-vendor` (the scripted vendor of tests and
//! the demo).

use crate::Exit;
use crate::remote::{Server, call};
use anyhow::{Context as _, anyhow};
use clap::{Args, Subcommand};
use reqwest::Method;
use serde_json::{Value, json};
use std::io::Write as _;

#[derive(Args, Debug)]
#[command(args_conflicts_with_subcommands = true)]
pub struct MessagesArgs {
    #[command(subcommand)]
    command: Option<MessagesCommand>,
    #[command(flatten)]
    list: MessageFilter,
}

#[derive(Args, Debug)]
pub struct MessageFilter {
    /// Only this adapter's messages (`unrouted`: events no route took).
    #[arg(long)]
    adapter: Option<String>,
    /// pending, awaiting-reply, delivered, rejected, failed, discarded or unmatched.
    #[arg(long)]
    state: Option<String>,
    /// Only messages taken since then: a duration back from now (`1h`, `30m`) or an RFC
    /// 3339 time.
    #[arg(long)]
    since: Option<String>,
    /// Only the messages of this case.
    #[arg(long = "case", value_name = "CASE")]
    case: Option<String>,
    /// At most this many (1 to 10000).
    #[arg(long, default_value_t = 100)]
    limit: u32,
    /// One JSON object per line instead of the table.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    server: Server,
}

#[derive(Subcommand, Debug)]
enum MessagesCommand {
    /// One message: the event, the mapped request, every attempt.
    Show {
        id: u64,
        #[command(flatten)]
        server: Server,
    },
    /// Send messages again: the stored request, or (--remap) the event mapped again with
    /// the adapter's current version. Every id is checked first; a bad one replays none.
    Replay {
        #[arg(required = true)]
        ids: Vec<u64>,
        #[arg(long)]
        remap: bool,
        #[command(flatten)]
        server: Server,
    },
}

fn query(pairs: &[(&str, Option<String>)]) -> String {
    let kept: Vec<(&str, &str)> = pairs
        .iter()
        .filter_map(|(k, v)| v.as_deref().map(|v| (*k, v)))
        .collect();
    if kept.is_empty() {
        return String::new();
    }
    format!("?{}", serde_urlencoded::to_string(kept).unwrap_or_default())
}

fn ms_to_time(ms: &Value) -> String {
    ms.as_i64()
        .and_then(|ms| {
            time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000).ok()
        })
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_else(|| "-".into())
}

pub async fn messages(args: MessagesArgs) -> Result<u8, Exit> {
    let mut out = std::io::stdout().lock();
    match args.command {
        Some(MessagesCommand::Show { id, server }) => {
            let v = call(&server, Method::GET, &format!("/v1/messages/{id}"), None).await?;
            writeln!(out, "{}", serde_json::to_string_pretty(&v)?)?;
        }
        Some(MessagesCommand::Replay { ids, remap, server }) => {
            let mode = if remap { "remap" } else { "resend" };
            let v = call(
                &server,
                Method::POST,
                "/v1/messages/replay",
                Some(json!({"ids": ids, "mode": mode})),
            )
            .await?;
            for m in v["replayed"].as_array().into_iter().flatten() {
                writeln!(
                    out,
                    "{} {}: {}",
                    mode,
                    m["id"],
                    m["state"].as_str().unwrap_or("")
                )?;
            }
        }
        None => {
            let f = args.list;
            let path = format!(
                "/v1/messages{}",
                query(&[
                    ("adapter", f.adapter),
                    ("state", f.state),
                    ("since", f.since),
                    ("case", f.case),
                    ("limit", Some(f.limit.to_string())),
                ])
            );
            let v = call(&f.server, Method::GET, &path, None).await?;
            let list = v["messages"].as_array().cloned().unwrap_or_default();
            if f.json {
                for m in &list {
                    writeln!(out, "{m}")?;
                }
            } else {
                writeln!(
                    out,
                    "{:>8}  {:<14} {:<14} {:>8}  {:<24} {:<24} LAST ERROR",
                    "ID", "ADAPTER", "STATE", "ATTEMPTS", "TAKEN", "EVENT"
                )?;
                for m in &list {
                    writeln!(
                        out,
                        "{:>8}  {:<14} {:<14} {:>8}  {:<24} {:<24} {}",
                        m["id"].to_string(),
                        m["adapter"].as_str().unwrap_or(""),
                        m["state"].as_str().unwrap_or(""),
                        m["attempts"].to_string(),
                        ms_to_time(&m["created-at-ms"]),
                        format!(
                            "{} {}",
                            m["event-type"].as_str().unwrap_or(""),
                            m["event-id"].as_str().unwrap_or("")
                        ),
                        m["last-error"].as_str().unwrap_or("")
                    )?;
                }
                writeln!(out, "{} message(s)", list.len())?;
            }
        }
    }
    Ok(0)
}

#[derive(Args, Debug)]
#[command(args_conflicts_with_subcommands = true)]
pub struct CasesArgs {
    #[command(subcommand)]
    command: Option<CasesCommand>,
    #[command(flatten)]
    list: CaseFilter,
}

#[derive(Args, Debug)]
pub struct CaseFilter {
    #[arg(long)]
    adapter: Option<String>,
    /// open or resolved.
    #[arg(long)]
    state: Option<String>,
    #[arg(long, default_value_t = 100)]
    limit: u32,
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    server: Server,
}

#[derive(Subcommand, Debug)]
enum CasesCommand {
    /// One case: its key, counts, first and last seen, sample messages.
    Show {
        id: String,
        #[command(flatten)]
        server: Server,
    },
    /// Put every failed message of the case back in its lane (--remap: mapped again by the
    /// adapter's current version).
    Retry {
        id: String,
        #[arg(long)]
        remap: bool,
        #[command(flatten)]
        server: Server,
    },
    /// Discard every failed message of the case.
    Discard {
        id: String,
        #[command(flatten)]
        server: Server,
    },
    /// Mark the case resolved (a new failure with its key opens it again).
    Resolve {
        id: String,
        #[command(flatten)]
        server: Server,
    },
}

pub async fn cases(args: CasesArgs) -> Result<u8, Exit> {
    let mut out = std::io::stdout().lock();
    match args.command {
        Some(CasesCommand::Show { id, server }) => {
            let v = call(&server, Method::GET, &format!("/v1/cases/{id}"), None).await?;
            writeln!(out, "{}", serde_json::to_string_pretty(&v)?)?;
        }
        Some(CasesCommand::Retry { id, remap, server }) => {
            let mode = if remap { "remap" } else { "resend" };
            let v = call(
                &server,
                Method::POST,
                &format!("/v1/cases/{id}/retry"),
                Some(json!({"mode": mode})),
            )
            .await?;
            writeln!(
                out,
                "case {id}: {} message(s) put back ({mode})",
                v["retried"]
            )?;
        }
        Some(CasesCommand::Discard { id, server }) => {
            let v = call(
                &server,
                Method::POST,
                &format!("/v1/cases/{id}/discard"),
                None,
            )
            .await?;
            writeln!(out, "case {id}: {} message(s) discarded", v["discarded"])?;
        }
        Some(CasesCommand::Resolve { id, server }) => {
            call(
                &server,
                Method::POST,
                &format!("/v1/cases/{id}/resolve"),
                None,
            )
            .await?;
            writeln!(out, "case {id}: resolved")?;
        }
        None => {
            let f = args.list;
            let path = format!(
                "/v1/cases{}",
                query(&[
                    ("adapter", f.adapter),
                    ("state", f.state),
                    ("limit", Some(f.limit.to_string())),
                ])
            );
            let v = call(&f.server, Method::GET, &path, None).await?;
            let list = v["cases"].as_array().cloned().unwrap_or_default();
            if f.json {
                for c in &list {
                    writeln!(out, "{c}")?;
                }
            } else {
                writeln!(
                    out,
                    "{:<16}  {:<12} {:<9} {:<8} {:>8} {:>6}  {:<24} MESSAGE",
                    "CASE", "ADAPTER", "STATE", "STAGE", "FAILURES", "OPEN", "LAST SEEN"
                )?;
                for c in &list {
                    writeln!(
                        out,
                        "{:<16}  {:<12} {:<9} {:<8} {:>8} {:>6}  {:<24} {}{}",
                        c["id"].as_str().unwrap_or(""),
                        c["adapter"].as_str().unwrap_or(""),
                        c["state"].as_str().unwrap_or(""),
                        c["stage"].as_str().unwrap_or(""),
                        c["failures"].to_string(),
                        c["open-messages"].to_string(),
                        ms_to_time(&c["last-seen-ms"]),
                        c["status"]
                            .as_u64()
                            .map(|s| format!("[{s}] "))
                            .unwrap_or_default(),
                        c["message"].as_str().unwrap_or("")
                    )?;
                }
                writeln!(out, "{} case(s)", list.len())?;
            }
        }
    }
    Ok(0)
}

#[derive(Subcommand, Debug)]
pub enum AdaptersCommand {
    /// Every lane: state, writer, messages per state.
    Ls {
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        server: Server,
    },
    /// One lane, as JSON.
    Show {
        name: String,
        #[command(flatten)]
        server: Server,
    },
    /// Stop sending (events still enter the lane and wait).
    Pause {
        name: String,
        #[command(flatten)]
        server: Server,
    },
    /// Read and send again.
    Resume {
        name: String,
        #[command(flatten)]
        server: Server,
    },
    /// Read nothing new; send what the lane holds.
    Drain {
        name: String,
        #[command(flatten)]
        server: Server,
    },
    /// Read the adapters' files again and apply them without a restart.
    Reload {
        #[command(flatten)]
        server: Server,
    },
}

pub async fn adapters(cmd: AdaptersCommand) -> Result<u8, Exit> {
    let mut out = std::io::stdout().lock();
    match cmd {
        AdaptersCommand::Ls { json, server } => {
            let v = call(&server, Method::GET, "/v1/adapters", None).await?;
            let list = v["adapters"].as_array().cloned().unwrap_or_default();
            if json {
                for a in &list {
                    writeln!(out, "{a}")?;
                }
            } else {
                writeln!(
                    out,
                    "{:<14} {:<9} {:<6} {:<16} {:>9} MESSAGES",
                    "ADAPTER", "STATE", "WRITER", "TOPIC", "IN FLIGHT"
                )?;
                for a in &list {
                    let counts: Vec<String> = a["messages"]
                        .as_object()
                        .into_iter()
                        .flatten()
                        .map(|(k, v)| format!("{k} {v}"))
                        .collect();
                    writeln!(
                        out,
                        "{:<14} {:<9} {:<6} {:<16} {:>9} {}",
                        a["name"].as_str().unwrap_or(""),
                        a["state"].as_str().unwrap_or(""),
                        a["writer"].as_str().unwrap_or(""),
                        a["topic"].as_str().unwrap_or(""),
                        a["in-flight"].to_string(),
                        counts.join(", ")
                    )?;
                }
            }
        }
        AdaptersCommand::Show { name, server } => {
            let v = call(&server, Method::GET, &format!("/v1/adapters/{name}"), None).await?;
            writeln!(out, "{}", serde_json::to_string_pretty(&v)?)?;
        }
        AdaptersCommand::Pause { name, server } => state(&mut out, &server, &name, "pause").await?,
        AdaptersCommand::Resume { name, server } => {
            state(&mut out, &server, &name, "resume").await?
        }
        AdaptersCommand::Drain { name, server } => state(&mut out, &server, &name, "drain").await?,
        AdaptersCommand::Reload { server } => {
            let v = call(&server, Method::POST, "/v1/adapters/reload", None).await?;
            for what in ["added", "changed", "removed", "unchanged"] {
                let names: Vec<&str> = v[what]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(Value::as_str)
                    .collect();
                writeln!(
                    out,
                    "{what}: {}",
                    if names.is_empty() {
                        "-".to_owned()
                    } else {
                        names.join(", ")
                    }
                )?;
            }
        }
    }
    Ok(0)
}

async fn state(
    out: &mut impl std::io::Write,
    server: &Server,
    name: &str,
    action: &str,
) -> anyhow::Result<()> {
    let v = call(
        server,
        Method::POST,
        &format!("/v1/adapters/{name}/{action}"),
        None,
    )
    .await?;
    writeln!(out, "{name}: {}", v["state"].as_str().unwrap_or(""))?;
    Ok(())
}

#[derive(Args, Debug)]
pub struct FakeVendorArgs {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:9001")]
    listen: std::net::SocketAddr,
    /// The behaviour to start with, as JSON (see --help); change it later with
    /// `PUT /_vendor/behaviour`.
    #[arg(long, value_name = "JSON")]
    behaviour: Option<String>,
}

pub async fn fake_vendor(args: FakeVendorArgs) -> Result<u8, Exit> {
    use switchyard_connect::testing::{Behaviour, FakeVendor};
    let behaviour: Option<Behaviour> = match &args.behaviour {
        Some(text) => Some(
            serde_json::from_str(text)
                .map_err(|e| anyhow!("--behaviour is not a behaviour: {e}"))?,
        ),
        None => None,
    };
    let vendor = FakeVendor::start(args.listen)
        .await
        .with_context(|| format!("listening on {}", args.listen))?;
    if let Some(b) = behaviour {
        vendor.set(b);
    }
    eprintln!("switchyard fake-vendor: listening on {}", vendor.url());
    vendor.run_until(crate::serve::shutdown_signal()).await;
    Ok(0)
}

pub const FAKE_VENDOR_HELP: &str = "Examples:\n  \
    switchyard fake-vendor --listen 127.0.0.1:9001\n  \
    switchyard fake-vendor --behaviour '{\"status\": 503, \"retry-after\": 5}'\n  \
    curl -X PUT localhost:9001/_vendor/behaviour -d '{\"mode\": \"down\"}'\n  \
    curl localhost:9001/_vendor/requests\n\n\
    A behaviour (JSON, every key optional): mode (answer | hang | reset | garbage | down), \
    status (200), body, retry-after (seconds), latency-ms, rate-limit (requests per second \
    above which it answers 429), sequence (behaviours for the next requests, one each), \
    callback ({url, header, delay-ms, body}: an asynchronous vendor's reply, carrying the \
    request's header back).";
