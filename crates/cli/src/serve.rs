//! `switchyard serve`: the HTTP API over the file journal in a data directory.

use crate::Exit;
use anyhow::{Context as _, anyhow};
use clap::Args;
use serde::Deserialize;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use switchyard_journal::file::FileJournal;

#[derive(Args, Debug)]
pub struct ServeArgs {
    /// Data directory (journal files). Default: `server.data` from the config, else ./data.
    #[arg(long, value_name = "DIR")]
    pub data: Option<PathBuf>,
    /// Address to listen on. Default: `server.listen` from the config, else 127.0.0.1:7400.
    /// Use port 0 for a free port (the address is printed on stderr).
    #[arg(long, value_name = "ADDR")]
    pub listen: Option<SocketAddr>,
    /// Config file. Default: ./switchyard.toml when it exists. Only its `[server]` table is
    /// read here; flags override it.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
}

/// The `[server]` table of switchyard.toml.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
struct ServerConfig {
    listen: Option<SocketAddr>,
    data: Option<PathBuf>,
    /// Largest request body, in bytes.
    max_body_bytes: Option<usize>,
    /// Most events in one batch.
    max_batch_events: Option<usize>,
    /// Seconds between stream heartbeats.
    heartbeat_seconds: Option<u64>,
    /// Seconds a stream waits for a client that does not read before ending it.
    slow_client_seconds: Option<u64>,
    /// Seconds a connection's writes may stay stuck before it is closed.
    stalled_write_seconds: Option<u64>,
    /// Bearer tokens. With none, the API is open and listens on loopback only.
    #[serde(default)]
    tokens: Vec<TokenConfig>,
}

/// One `[[server.tokens]]` entry. The secret comes from an environment variable or a file,
/// never from the config itself.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
struct TokenConfig {
    name: String,
    secret_env: Option<String>,
    secret_file: Option<PathBuf>,
    scopes: Vec<switchyard_server::auth::Scope>,
    #[serde(default)]
    topics: Vec<String>,
}

/// Tokens shorter than this are refused: they would be guessable.
const MIN_SECRET_LEN: usize = 16;

fn load_tokens(configs: Vec<TokenConfig>) -> anyhow::Result<Vec<switchyard_server::auth::Token>> {
    let mut out: Vec<switchyard_server::auth::Token> = Vec::new();
    for t in configs {
        let name = t.name;
        let secret = match (&t.secret_env, &t.secret_file) {
            (Some(var), None) => std::env::var(var).map_err(|_| {
                anyhow!("token `{name}`: environment variable {var} (secret-env) is not set")
            })?,
            (None, Some(path)) => std::fs::read_to_string(path)
                .with_context(|| format!("token `{name}`: reading secret-file {}", path.display()))?
                .trim()
                .to_string(),
            _ => {
                return Err(anyhow!(
                    "token `{name}`: give exactly one of secret-env and secret-file"
                ));
            }
        };
        if secret.len() < MIN_SECRET_LEN || secret.chars().any(char::is_whitespace) {
            return Err(anyhow!(
                "token `{name}`: the secret must be at least {MIN_SECRET_LEN} characters,                  without spaces"
            ));
        }
        if t.scopes.is_empty() {
            return Err(anyhow!("token `{name}`: scopes is empty"));
        }
        if out.iter().any(|o| o.name == name) {
            return Err(anyhow!("token `{name}` is defined twice"));
        }
        if out.iter().any(|o| o.secret == secret) {
            return Err(anyhow!(
                "token `{name}` has the same secret as another token"
            ));
        }
        out.push(switchyard_server::auth::Token {
            name,
            secret,
            scopes: t.scopes,
            topics: t.topics,
        });
    }
    Ok(out)
}

#[derive(Debug, Default, Deserialize)]
struct ConfigFile {
    #[serde(default)]
    server: ServerConfig,
}

fn load_config(path: &Path) -> anyhow::Result<ServerConfig> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    // Other tables belong to the system manifest (topics, subscriptions, ...): only
    // `[server]` is read, strictly.
    let file: ConfigFile = toml::from_str(&text).map_err(|e| anyhow!("{}: {e}", path.display()))?;
    Ok(file.server)
}

pub const DEFAULT_LISTEN: &str = "127.0.0.1:7400";

pub async fn run(args: ServeArgs) -> Result<u8, Exit> {
    let mut config = match &args.config {
        Some(p) => load_config(p)?,
        None if Path::new("switchyard.toml").exists() => load_config(Path::new("switchyard.toml"))?,
        None => ServerConfig::default(),
    };
    let listen = args
        .listen
        .or(config.listen)
        .unwrap_or_else(|| DEFAULT_LISTEN.parse().expect("static address"));
    let tokens = load_tokens(std::mem::take(&mut config.tokens))?;
    if !listen.ip().is_loopback() && tokens.is_empty() {
        return Err(anyhow!(
            "refusing to listen on {listen}: off loopback the API needs access tokens; add \
             [[server.tokens]] to switchyard.toml, or listen on 127.0.0.1"
        )
        .into());
    }
    let data = args
        .data
        .or(config.data)
        .unwrap_or_else(|| PathBuf::from("data"));
    let mut options = switchyard_server::Options {
        tokens,
        ..Default::default()
    };
    if let Some(v) = config.max_body_bytes {
        options.max_body_bytes = v;
    }
    if let Some(v) = config.max_batch_events {
        options.max_batch_events = v;
    }
    if let Some(v) = config.heartbeat_seconds {
        options.heartbeat = Duration::from_secs(v.max(1));
    }
    if let Some(v) = config.slow_client_seconds {
        options.slow_client_timeout = Duration::from_secs(v.max(1));
    }
    if let Some(v) = config.stalled_write_seconds {
        options.stalled_write_timeout = Duration::from_secs(v.max(1));
    }
    let platform = Platform::open(&data).await?;
    options.bus = Some(platform.bus.clone());
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("listening on {listen}"))?;
    let bound = listener.local_addr().context("reading the bound address")?;
    let access = match options.tokens.len() {
        0 => "open, no tokens".to_string(),
        n => format!("{n} access token(s)"),
    };
    note(format_args!(
        "switchyard: serving http://{bound} (data in {}; {access})",
        data.display()
    ));
    switchyard_server::serve(listener, platform.journal(), options, shutdown_signal())
        .await
        .context("serving HTTP")?;
    note(format_args!(
        "switchyard: stopping: finishing deliveries in progress, flushing the journal"
    ));
    platform.close().await?;
    note(format_args!("switchyard: stopped"));
    Ok(0)
}

/// The journal, the store and the subscriptions of one data directory: what `serve` runs
/// and what `dev` runs (and restarts on reset and restore).
pub struct Platform {
    journal: FileJournal,
    store: Arc<switchyard_store::sqlite::SqliteStore>,
    pub bus: switchyard_bus::Bus,
}

impl Platform {
    /// Opens the journal in `data` and the store `data/store.sqlite`, and starts the
    /// subscriptions' dispatchers.
    pub async fn open(data: &Path) -> anyhow::Result<Self> {
        let journal = FileJournal::open(data)
            .with_context(|| format!("opening the journal in {}", data.display()))?;
        let store_path = data.join("store.sqlite");
        let store = switchyard_store::sqlite::SqliteStore::open(&store_path)
            .await
            .with_context(|| format!("opening the store {}", store_path.display()))?;
        let store = Arc::new(store);
        let bus = switchyard_bus::Bus::start(
            Arc::new(journal.clone()),
            store.clone(),
            switchyard_bus::BusOptions::default(),
        )
        .await
        .context("starting the subscriptions")?;
        Ok(Self {
            journal,
            store,
            bus,
        })
    }

    pub fn journal(&self) -> Arc<dyn switchyard_journal::Journal> {
        Arc::new(self.journal.clone())
    }

    /// Stops the dispatchers (attempts in progress record their outcome), checkpoints the
    /// store and flushes the journal.
    pub async fn close(self) -> anyhow::Result<()> {
        self.bus.shutdown().await;
        self.store.close().await;
        self.journal.close().await.context("closing the journal")
    }
}

/// A progress line on stderr; a closed stderr must not stop the server.
fn note(line: std::fmt::Arguments<'_>) {
    use std::io::Write as _;
    let _ = writeln!(std::io::stderr(), "{line}");
}

/// SIGINT or SIGTERM.
pub(crate) async fn shutdown_signal() {
    switchyard_sdk::shutdown_signal().await;
}
