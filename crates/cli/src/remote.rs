//! `switchyard publish` and `switchyard tail`: clients of a running `switchyard serve`.

use crate::Exit;
use anyhow::{Context as _, anyhow};
use clap::Args;
use futures::StreamExt as _;
use serde_json::{Value, json};
use std::io::Write as _;

#[derive(Args, Clone, Debug)]
pub struct Server {
    /// The server's base URL.
    #[arg(long, env = "SWITCHYARD_URL", default_value = "http://127.0.0.1:7400")]
    pub server: String,
    /// Bearer token for a server that has tokens (read from the environment only, so it
    /// stays out of shell history and process lists).
    #[arg(
        long = "token-env",
        value_name = "VAR",
        default_value = "SWITCHYARD_TOKEN"
    )]
    pub token_env: String,
}

/// One HTTP client per process, so requests share its connection pool.
pub(crate) fn client() -> &'static reqwest::Client {
    static CLIENT: std::sync::OnceLock<reqwest::Client> = std::sync::OnceLock::new();
    CLIENT.get_or_init(reqwest::Client::new)
}

impl Server {
    pub(crate) fn request(
        &self,
        method: reqwest::Method,
        path: &str,
    ) -> anyhow::Result<reqwest::RequestBuilder> {
        let base = self.server.trim_end_matches('/');
        if !(base.starts_with("http://") || base.starts_with("https://")) {
            return Err(anyhow!(
                "--server {base:?} must start with http:// or https://"
            ));
        }
        let mut r = client().request(method, format!("{base}{path}"));
        if let Ok(token) = std::env::var(&self.token_env) {
            r = r.bearer_auth(token);
        }
        Ok(r)
    }
}

#[derive(Args, Debug)]
pub struct PublishArgs {
    pub topic: String,
    /// The event type (CloudEvents `type`).
    #[arg(long = "type", value_name = "TYPE")]
    pub kind: String,
    /// The event data as JSON; without it, one event per line of stdin.
    #[arg(long)]
    pub data: Option<String>,
    /// CloudEvents `source`.
    #[arg(long, default_value = "/switchyard/cli")]
    pub source: String,
    /// Event id (the dedup key). Default: a fresh one per event.
    #[arg(long)]
    pub id: Option<String>,
    /// CloudEvents `subject`.
    #[arg(long)]
    pub subject: Option<String>,
    /// Partition key (the `partitionkey` extension); default: the subject.
    #[arg(long)]
    pub key: Option<String>,
    /// Print the server's JSON answer instead of `partition P offset O`.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub server: Server,
}

#[derive(Args, Debug)]
pub struct TailArgs {
    pub topic: String,
    /// Where to start: an offset (one-partition topics), a position like 12.0.57, an RFC 3339
    /// time, `earliest` or `latest` (the default).
    #[arg(long, default_value = "latest")]
    pub from: String,
    /// Print each event's JSON line as received instead of one readable line.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub server: Server,
}

fn fresh_id() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    format!("cli-{nanos:x}-{}", std::process::id())
}

/// A problem+json answer as one line: `code: detail (pointer)`.
pub(crate) async fn problem(r: reqwest::Response) -> anyhow::Error {
    let status = r.status();
    match r.json::<Value>().await {
        Ok(p) => anyhow!(
            "{} {}: {}{}",
            status.as_u16(),
            p["code"].as_str().unwrap_or("error"),
            p["detail"].as_str().unwrap_or(""),
            p["pointer"]
                .as_str()
                .map(|ptr| format!(" (at {ptr})"))
                .unwrap_or_default()
        ),
        Err(_) => anyhow!("the server answered {status}"),
    }
}

pub async fn publish(args: PublishArgs) -> Result<u8, Exit> {
    let payloads: Vec<String> = match &args.data {
        Some(d) => vec![d.clone()],
        None => std::io::stdin()
            .lines()
            .collect::<Result<Vec<_>, _>>()
            .context("reading events from stdin")?
            .into_iter()
            .filter(|l| !l.trim().is_empty())
            .collect(),
    };
    if args.id.is_some() && payloads.len() > 1 {
        return Err(anyhow!("--id names one event, but stdin held {}", payloads.len()).into());
    }
    let mut events = Vec::new();
    for (i, p) in payloads.iter().enumerate() {
        let data: Value = serde_json::from_str(p).with_context(|| {
            if args.data.is_some() {
                "--data is not JSON".to_string()
            } else {
                format!("stdin line {} is not JSON", i + 1)
            }
        })?;
        let mut e = json!({
            "specversion": "1.0",
            "id": args.id.clone().unwrap_or_else(|| format!("{}-{i}", fresh_id())),
            "source": args.source,
            "type": args.kind,
            "data": data,
        });
        if let Some(s) = &args.subject {
            e["subject"] = json!(s);
        }
        if let Some(k) = &args.key {
            e["partitionkey"] = json!(k);
        }
        events.push(e);
    }
    if events.is_empty() {
        return Err(anyhow!("nothing to publish: give --data or events on stdin").into());
    }
    let r = args
        .server
        .request(
            reqwest::Method::POST,
            &format!("/v1/topics/{}/events", args.topic),
        )?
        .header("content-type", "application/cloudevents-batch+json")
        .body(Value::Array(events).to_string())
        .send()
        .await
        .with_context(|| format!("connecting to {}", args.server.server))?;
    if !r.status().is_success() {
        return Err(problem(r).await.into());
    }
    let answer: Value = r.json().await.context("reading the server's answer")?;
    let mut out = std::io::stdout().lock();
    if args.json {
        writeln!(out, "{answer}")?;
    } else {
        for a in answer["events"].as_array().into_iter().flatten() {
            writeln!(
                out,
                "partition {} offset {}{}",
                a["partition"],
                a["offset"],
                if a["duplicate"] == json!(true) {
                    " (duplicate)"
                } else {
                    ""
                }
            )?;
        }
    }
    Ok(0)
}

pub async fn tail(args: TailArgs) -> Result<u8, Exit> {
    let r = args
        .server
        .request(
            reqwest::Method::GET,
            &format!("/v1/topics/{}/stream", args.topic),
        )?
        .query(&[("from", &args.from)])
        .header("accept", "application/x-ndjson")
        .send()
        .await
        .with_context(|| format!("connecting to {}", args.server.server))?;
    if !r.status().is_success() {
        return Err(problem(r).await.into());
    }
    let mut body = r.bytes_stream();
    let mut buf = Vec::new();
    loop {
        let chunk = tokio::select! {
            c = body.next() => c,
            _ = tokio::signal::ctrl_c() => return Ok(0),
        };
        let Some(chunk) = chunk else {
            return Ok(0);
        };
        buf.extend_from_slice(&chunk.context("reading the stream")?);
        while let Some(i) = buf.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = buf.drain(..=i).collect();
            let v: Value =
                serde_json::from_slice(&line).context("the stream sent a line that is not JSON")?;
            if v["heartbeat"] == json!(true) {
                continue;
            }
            let mut out = std::io::stdout().lock();
            if v["end"] == json!(true) {
                eprintln!(
                    "stream ended ({}): {}; resume with --from {}",
                    v["code"].as_str().unwrap_or(""),
                    v["detail"].as_str().unwrap_or(""),
                    v["position"].as_str().unwrap_or("")
                );
                return Ok(if v["code"] == json!("shutting-down") {
                    0
                } else {
                    2
                });
            }
            if args.json {
                out.write_all(&line)?;
            } else {
                writeln!(
                    out,
                    "{}  {}/{}  {}  {}  {}",
                    v["time"].as_str().unwrap_or("-"),
                    v["partition"],
                    v["sequence"].as_str().unwrap_or("-"),
                    v["type"].as_str().unwrap_or("-"),
                    v["subject"]
                        .as_str()
                        .or(v["partitionkey"].as_str())
                        .unwrap_or("-"),
                    v.get("data").map(Value::to_string).unwrap_or_default()
                )?;
            }
            out.flush()?;
        }
    }
}

#[derive(clap::Subcommand, Debug)]
pub enum SubsCommand {
    /// List subscriptions.
    Ls {
        #[command(flatten)]
        server: Server,
    },
    /// A subscription: its spec, in-flight and parked counts, last error, cursors and lag.
    Show {
        name: String,
        #[command(flatten)]
        server: Server,
    },
    /// Parked deliveries; `--retry` or `--discard` one of them by TOPIC/PARTITION@OFFSET.
    Parked {
        name: String,
        /// Put this parked delivery back in flight (TOPIC/PARTITION@OFFSET).
        #[arg(long, value_name = "KEY", conflicts_with = "discard")]
        retry: Option<String>,
        /// Drop this parked delivery for good (TOPIC/PARTITION@OFFSET).
        #[arg(long, value_name = "KEY")]
        discard: Option<String>,
        #[command(flatten)]
        server: Server,
    },
    /// Move a subscription's position in a topic: replay or skip.
    Seek {
        name: String,
        topic: String,
        /// An offset (with --partition), a position, an RFC 3339 time, earliest or latest.
        to: String,
        #[arg(long)]
        partition: Option<u32>,
        #[command(flatten)]
        server: Server,
    },
}

/// `TOPIC/PARTITION@OFFSET` as a JSON key body.
fn parse_key(s: &str) -> anyhow::Result<Value> {
    let bad = || anyhow!("{s:?} is not TOPIC/PARTITION@OFFSET (for example orders.v1/0@42)");
    let (topic, rest) = s.rsplit_once('/').ok_or_else(bad)?;
    let (p, o) = rest.split_once('@').ok_or_else(bad)?;
    let partition: u32 = p.parse().map_err(|_| bad())?;
    let offset: u64 = o.parse().map_err(|_| bad())?;
    Ok(json!({"topic": topic, "partition": partition, "offset": offset}))
}

pub(crate) async fn call(
    server: &Server,
    method: reqwest::Method,
    path: &str,
    body: Option<Value>,
) -> anyhow::Result<Value> {
    let mut r = server.request(method, path)?;
    if let Some(b) = body {
        r = r.json(&b);
    }
    let r = r
        .send()
        .await
        .with_context(|| format!("connecting to {}", server.server))?;
    if !r.status().is_success() {
        return Err(problem(r).await);
    }
    if r.status() == reqwest::StatusCode::NO_CONTENT {
        return Ok(Value::Null);
    }
    r.json().await.context("reading the server's answer")
}

pub async fn subs(cmd: SubsCommand) -> Result<u8, Exit> {
    let mut out = std::io::stdout().lock();
    match cmd {
        SubsCommand::Ls { server } => {
            let v = call(&server, reqwest::Method::GET, "/v1/subscriptions", None).await?;
            for n in v["subscriptions"].as_array().into_iter().flatten() {
                writeln!(out, "{}", n.as_str().unwrap_or_default())?;
            }
        }
        SubsCommand::Show { name, server } => {
            let v = call(
                &server,
                reqwest::Method::GET,
                &format!("/v1/subscriptions/{name}"),
                None,
            )
            .await?;
            writeln!(
                out,
                "{}",
                serde_json::to_string_pretty(&v).unwrap_or_default()
            )?;
        }
        SubsCommand::Parked {
            name,
            retry,
            discard,
            server,
        } => {
            let action = match (&retry, &discard) {
                (Some(k), _) => Some(("retry", k)),
                (_, Some(k)) => Some(("discard", k)),
                _ => None,
            };
            if let Some((what, key)) = action {
                call(
                    &server,
                    reqwest::Method::POST,
                    &format!("/v1/subscriptions/{name}/parked/{what}"),
                    Some(parse_key(key)?),
                )
                .await?;
                writeln!(out, "{what}: {key}")?;
            } else {
                let v = call(
                    &server,
                    reqwest::Method::GET,
                    &format!("/v1/subscriptions/{name}/parked"),
                    None,
                )
                .await?;
                for p in v["parked"].as_array().into_iter().flatten() {
                    writeln!(
                        out,
                        "{}/{}@{}  attempts {}  {}",
                        p["key"]["topic"].as_str().unwrap_or_default(),
                        p["key"]["partition"],
                        p["key"]["offset"],
                        p["attempts"],
                        p["reason"].as_str().unwrap_or_default()
                    )?;
                }
            }
        }
        SubsCommand::Seek {
            name,
            topic,
            to,
            partition,
            server,
        } => {
            let mut body = json!({"topic": topic, "to": to});
            if let Some(p) = partition {
                body["partition"] = json!(p);
            }
            let v = call(
                &server,
                reqwest::Method::POST,
                &format!("/v1/subscriptions/{name}/seek"),
                Some(body),
            )
            .await?;
            writeln!(out, "{v}")?;
        }
    }
    Ok(0)
}
