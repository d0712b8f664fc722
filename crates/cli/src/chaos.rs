//! `switchyard chaos`: faults injected on purpose into a running `switchyard dev` (or
//! `serve`), through the gateway's admin API (`/v1/gateway/faults`). A development tool:
//! see `switchyard_gateway::faults` for what each fault does.

use crate::Exit;
use crate::remote::{Server, call};
use clap::{Args, Subcommand};
use reqwest::Method;
use serde_json::{Value, json};
use std::io::Write as _;
use std::time::Duration;

pub const HELP: &str = "Faults are a development tool: they make a service look down, slow or \
flaky to the platform, so you can watch the failure policies of its callers work. They apply to \
service-to-service calls (/v1/call/SERVICE/...: the caller's on-failure policy answers), to \
gateway routes and composed parts whose upstream is the service, and to push deliveries of \
subscriptions whose endpoint is the service (retried as failed deliveries). The service itself \
keeps running. Every fault expires (--for, default 10m); faults live in the platform's memory only.\n\n\
Examples:\n  \
switchyard chaos down payments\n  \
switchyard chaos down payments --status 503 --for 2m\n  \
switchyard chaos slow inventory --delay 800ms\n  \
switchyard chaos flaky orders --rate 0.3 --status 503\n  \
switchyard chaos ls\n  \
switchyard chaos clear payments\n  \
switchyard chaos clear\n\n\
The platform comes from --server or SWITCHYARD_URL; the gateway admin token, when the platform \
has one, from SWITCHYARD_GATEWAY_TOKEN (--token-env names another variable).";

#[derive(Subcommand, Debug)]
pub enum ChaosCommand {
    /// The service does not answer (as a refused connection), or answers --status.
    Down {
        service: String,
        /// Answer this status (400 to 599) instead of not answering.
        #[arg(long, value_parser = clap::value_parser!(u16).range(400..=599))]
        status: Option<u16>,
        #[command(flatten)]
        common: Common,
    },
    /// Requests to the service wait --delay more before they go on.
    Slow {
        service: String,
        /// The added delay (1ms to 5m).
        #[arg(long, default_value = "500ms", value_parser = crate::args::parse_duration)]
        delay: Duration,
        /// The fraction of requests slowed, above 0 and at most 1.
        #[arg(long, default_value_t = 1.0, value_parser = parse_rate)]
        rate: f64,
        #[command(flatten)]
        common: Common,
    },
    /// A fraction --rate of requests to the service fail: no answer, or --status.
    Flaky {
        service: String,
        /// The fraction of requests that fail, above 0 and at most 1.
        #[arg(long, default_value_t = 0.5, value_parser = parse_rate)]
        rate: f64,
        /// Answer this status (400 to 599) instead of not answering.
        #[arg(long, value_parser = clap::value_parser!(u16).range(400..=599))]
        status: Option<u16>,
        #[command(flatten)]
        common: Common,
    },
    /// Clear the fault of SERVICE, or every fault.
    Clear {
        service: Option<String>,
        #[command(flatten)]
        server: ChaosServer,
    },
    /// List the faults in force.
    Ls {
        /// One JSON object per fault and line.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        server: ChaosServer,
    },
}

#[derive(Args, Debug)]
pub struct Common {
    /// How long the fault lasts (1s to 24h).
    #[arg(long = "for", value_name = "DURATION", default_value = "10m", value_parser = crate::args::parse_duration)]
    lasts: Duration,
    #[command(flatten)]
    server: ChaosServer,
}

/// The platform's API, with the gateway admin token.
#[derive(Args, Clone, Debug)]
pub struct ChaosServer {
    /// The platform's base URL (switchyard dev's API).
    #[arg(long, env = "SWITCHYARD_URL", default_value = "http://127.0.0.1:7400")]
    server: String,
    /// The variable holding the gateway admin token, when the platform has one.
    #[arg(
        long = "token-env",
        value_name = "VAR",
        default_value = "SWITCHYARD_GATEWAY_TOKEN"
    )]
    token_env: String,
}

impl ChaosServer {
    fn remote(&self) -> Server {
        Server {
            server: self.server.clone(),
            token_env: self.token_env.clone(),
        }
    }
}

fn parse_rate(s: &str) -> Result<f64, String> {
    match s.trim().parse::<f64>() {
        Ok(r) if r > 0.0 && r <= 1.0 => Ok(r),
        _ => Err(format!(
            "expected a fraction above 0 and at most 1 (0.3 fails about 3 in 10), got {s:?}"
        )),
    }
}

fn duration(d: Duration) -> String {
    humantime::format_duration(d).to_string()
}

fn path(service: &str) -> String {
    format!("/v1/gateway/faults/{service}")
}

pub async fn run(cmd: ChaosCommand) -> Result<u8, Exit> {
    let mut out = std::io::stdout().lock();
    let (service, body, common) = match cmd {
        ChaosCommand::Down {
            service,
            status,
            common,
        } => {
            let mut b = json!({"kind": "down", "for": duration(common.lasts)});
            if let Some(s) = status {
                b["status"] = json!(s);
            }
            (service, b, common)
        }
        ChaosCommand::Slow {
            service,
            delay,
            rate,
            common,
        } => (
            service,
            json!({"kind": "slow", "delay": duration(delay), "rate": rate, "for": duration(common.lasts)}),
            common,
        ),
        ChaosCommand::Flaky {
            service,
            rate,
            status,
            common,
        } => {
            let mut b = json!({"kind": "flaky", "rate": rate, "for": duration(common.lasts)});
            if let Some(s) = status {
                b["status"] = json!(s);
            }
            (service, b, common)
        }
        ChaosCommand::Clear { service, server } => {
            let v = match &service {
                Some(s) => call(&server.remote(), Method::DELETE, &path(s), None).await,
                None => call(&server.remote(), Method::DELETE, "/v1/gateway/faults", None).await,
            }?;
            writeln!(
                out,
                "cleared {} fault(s){}",
                v["cleared"].as_u64().unwrap_or(0),
                service.map(|s| format!(" on {s}")).unwrap_or_default()
            )?;
            return Ok(0);
        }
        ChaosCommand::Ls { json, server } => {
            let v = call(&server.remote(), Method::GET, "/v1/gateway/faults", None).await?;
            let faults = v["faults"].as_array().cloned().unwrap_or_default();
            if json {
                for f in &faults {
                    writeln!(out, "{f}")?;
                }
            } else {
                writeln!(
                    out,
                    "{:<20} {:<6} {:>8} {:>6} {:>6} {:>10} {:>9}",
                    "SERVICE", "KIND", "DELAY", "RATE", "STATUS", "EXPIRES IN", "INJECTED"
                )?;
                for f in &faults {
                    writeln!(out, "{}", row(f))?;
                }
                writeln!(out, "{} fault(s)", faults.len())?;
            }
            return Ok(0);
        }
    };
    let v = call(
        &common.server.remote(),
        Method::PUT,
        &path(&service),
        Some(body),
    )
    .await?;
    writeln!(out, "{}", describe(&v))?;
    Ok(0)
}

fn text(v: &Value) -> String {
    match v {
        Value::Null => "-".into(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn row(f: &Value) -> String {
    format!(
        "{:<20} {:<6} {:>8} {:>6} {:>6} {:>10} {:>9}",
        text(&f["service"]),
        text(&f["kind"]),
        text(&f["delay"]),
        text(&f["rate"]),
        text(&f["status"]),
        crate::args::human_ms(f["expires-in-ms"].as_u64().unwrap_or(0) / 1000 * 1000),
        text(&f["injected"]),
    )
}

/// `payments is down (no answer) for 10m`
fn describe(f: &Value) -> String {
    let service = text(&f["service"]);
    let lasts = crate::args::human_ms(f["expires-in-ms"].as_u64().unwrap_or(0) / 1000 * 1000);
    let failing = match f["status"].as_u64() {
        Some(s) => format!("answers {s}"),
        None => "no answer".to_string(),
    };
    match f["kind"].as_str() {
        Some("down") => format!("{service} is down ({failing}) for {lasts}"),
        Some("slow") => format!(
            "{service} is slow (+{} on {}% of requests) for {lasts}",
            text(&f["delay"]),
            (f["rate"].as_f64().unwrap_or(1.0) * 100.0).round()
        ),
        _ => format!(
            "{service} is flaky ({failing} on {}% of requests) for {lasts}",
            (f["rate"].as_f64().unwrap_or(0.0) * 100.0).round()
        ),
    }
}
