//! `switchyard reset` and `switchyard snapshot`: ask the running `switchyard dev` (which
//! stops, works on the files and starts again), or, when none runs, work on the state
//! directory directly.

use super::state::StateDir;
use crate::Exit;
use crate::remote::Server;
use anyhow::{Context as _, anyhow};
use clap::{Args, Subcommand};
use serde_json::Value;
use std::path::PathBuf;

#[derive(Args, Debug)]
pub struct Where {
    #[command(flatten)]
    server: Server,
    /// The system directory, for when no `switchyard dev` runs.
    #[arg(long, default_value = ".")]
    dir: PathBuf,
    /// The state directory, for when no `switchyard dev` runs. Default: DIR/.switchyard
    #[arg(long)]
    state: Option<PathBuf>,
    /// Print the result as JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Args, Debug)]
pub struct ResetArgs {
    #[command(flatten)]
    at: Where,
    /// Then seed the system from this file (as `switchyard seed FILE` does), waiting until
    /// every subscription has caught up.
    #[arg(long, value_name = "FILE")]
    seed: Option<PathBuf>,
    /// With --seed: how long to wait for the subscriptions to catch up.
    #[arg(long, default_value = "60s", value_parser = crate::args::parse_duration)]
    timeout: std::time::Duration,
}

#[derive(Subcommand, Debug)]
pub enum SnapshotCommand {
    /// Saves the whole state (journal, store, service databases) as NAME (replacing one
    /// of that name).
    Save {
        name: String,
        #[command(flatten)]
        at: Where,
    },
    /// Puts the whole state back to snapshot NAME.
    Restore {
        name: String,
        #[command(flatten)]
        at: Where,
    },
    /// Lists the snapshots.
    Ls {
        #[command(flatten)]
        at: Where,
    },
}

/// What a running dev answered, or `None` when nothing listens there.
async fn ask_running(
    at: &Where,
    method: reqwest::Method,
    path: &str,
) -> anyhow::Result<Option<Value>> {
    let resp = match at.server.request(method, path)?.send().await {
        Ok(r) => r,
        Err(e) if e.is_connect() => return Ok(None),
        Err(e) => return Err(e).context(format!("asking {}", at.server.server)),
    };
    let status = resp.status();
    let body: Value = resp.json().await.unwrap_or(Value::Null);
    if status == reqwest::StatusCode::NOT_FOUND {
        return Err(anyhow!(
            "{} answers, but is not `switchyard dev` (no /v1/system routes): reset and \
             snapshots work with `switchyard dev` only",
            at.server.server
        ));
    }
    if !status.is_success() {
        let detail = body.get("detail").and_then(Value::as_str).unwrap_or("");
        return Err(anyhow!("{status}: {detail}"));
    }
    Ok(Some(body))
}

fn offline(at: &Where) -> anyhow::Result<StateDir> {
    // PostgreSQL databases are the runner's to drop and copy (it knows the server).
    if let Ok(loaded) = switchyard_manifest::load(&at.dir) {
        let pg: Vec<&str> = super::pg_services(&loaded.system)
            .into_iter()
            .map(|s| s.name.as_str())
            .collect();
        if !pg.is_empty() {
            return Err(anyhow!(
                "no switchyard dev answers at {}, and services {} keep their data in \
                 PostgreSQL: start `switchyard dev` and run this again",
                at.server.server,
                pg.join(", ")
            ));
        }
    }
    let state = StateDir::new(
        at.state
            .clone()
            .unwrap_or_else(|| at.dir.join(".switchyard")),
    );
    // A journal lock held means something (a dev runner on another address) uses it.
    let data = state.data();
    if data.exists() {
        let j = switchyard_journal::file::FileJournal::open(&data).with_context(|| {
            format!(
                "no switchyard dev answers at {}, and {} is in use",
                at.server.server,
                data.display()
            )
        })?;
        drop(j);
    }
    Ok(state)
}

fn print(at: &Where, what: &str, v: &Value) {
    if at.json {
        println!("{v}");
    } else {
        let ms = v.get("ms").and_then(Value::as_u64);
        match ms {
            Some(ms) => println!("{what}; the system is running again ({ms} ms)"),
            None => println!("{what}"),
        }
    }
}

pub async fn reset(args: ResetArgs) -> Result<u8, Exit> {
    let at = &args.at;
    match ask_running(at, reqwest::Method::POST, "/v1/system/reset").await? {
        Some(v) => {
            print(
                at,
                "reset: journal, store and service databases emptied",
                &v,
            );
            if let Some(file) = args.seed {
                return crate::seed::run(crate::seed::SeedArgs {
                    file,
                    timeout: args.timeout,
                    no_wait: false,
                    json: at.json,
                    server: at.server.clone(),
                })
                .await;
            }
        }
        None if args.seed.is_some() => {
            return Err(anyhow!(
                "no switchyard dev answers at {}: --seed needs the system running (start \
                 `switchyard dev`, then reset again)",
                at.server.server
            )
            .into());
        }
        None => {
            offline(at)?.wipe()?;
            print(
                at,
                "reset: journal, store and service databases removed (no switchyard dev was running)",
                &serde_json::json!({"reset": true}),
            );
        }
    }
    Ok(0)
}

pub async fn snapshot(cmd: SnapshotCommand) -> Result<u8, Exit> {
    match cmd {
        SnapshotCommand::Save { name, at } => {
            super::state::check_snapshot_name(&name)?;
            let path = format!("/v1/system/snapshots/{name}");
            let v = match ask_running(&at, reqwest::Method::PUT, &path).await? {
                Some(v) => v,
                None => serde_json::json!({ "saved": offline(&at)?.save(&name)? }),
            };
            print(&at, &format!("saved snapshot {name}"), &v);
        }
        SnapshotCommand::Restore { name, at } => {
            super::state::check_snapshot_name(&name)?;
            let path = format!("/v1/system/snapshots/{name}/restore");
            let v = match ask_running(&at, reqwest::Method::POST, &path).await? {
                Some(v) => v,
                None => serde_json::json!({ "restored": offline(&at)?.restore(&name)? }),
            };
            print(&at, &format!("restored snapshot {name}"), &v);
        }
        SnapshotCommand::Ls { at } => {
            let v = match ask_running(&at, reqwest::Method::GET, "/v1/system/snapshots").await? {
                Some(v) => v,
                None => serde_json::json!({ "snapshots": offline(&at)?.list()? }),
            };
            if at.json {
                println!("{v}");
            } else {
                let list = v["snapshots"].as_array().cloned().unwrap_or_default();
                if list.is_empty() {
                    println!("no snapshots");
                }
                for s in list {
                    println!(
                        "{:30} {:>12} bytes",
                        s["name"].as_str().unwrap_or("?"),
                        s["bytes"].as_u64().unwrap_or(0)
                    );
                }
            }
        }
    }
    Ok(0)
}
