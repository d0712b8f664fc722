//! `switchyard serve`: the HTTP API over the file journal in a data directory, or over a
//! NATS JetStream cluster (`--journal nats://...`), with the store in SQLite in the data
//! directory, or in a PostgreSQL database (`--store postgres://...`).

use crate::Exit;
use anyhow::{Context as _, anyhow};
use clap::Args;
use serde::Deserialize;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use switchyard_journal::file::FileJournal;
use switchyard_journal::nats::{NatsJournal, NatsOptions};
use switchyard_store::postgres::{PostgresOptions, PostgresStore};
use switchyard_store::sqlite::SqliteStore;

#[derive(Args, Debug)]
pub struct ServeArgs {
    /// Data directory (journal files, the store). Default: `server.data` from the config,
    /// else ./data.
    #[arg(long, value_name = "DIR")]
    pub data: Option<PathBuf>,
    /// Where the journal lives: `file` (in the data directory, the default) or
    /// `nats://host:port[,host:port...][?sync=always&replicas=3]`, a NATS JetStream
    /// cluster that several instances can share (`sync` says what the servers'
    /// sync_interval is: `always`, or `default` for NATS's 2 minutes, which refuses topics
    /// with durability `always`). Default: `server.journal` from the config, else `file`.
    #[arg(long, value_name = "URL")]
    pub journal: Option<String>,
    /// Where the store lives (subscriptions, cursors, in-flight and parked deliveries, the
    /// message store, cases): `sqlite` (`store.sqlite` in the data directory, the default)
    /// or `postgres://[user[:password]@]host[:port]/database[?pool=8&sslmode=...]`, a
    /// PostgreSQL database that several instances can share (`pool`: the most connections
    /// this instance opens). Default: `server.store` from the config, else `sqlite`.
    #[arg(long, value_name = "URL")]
    pub store: Option<String>,
    /// Address to listen on. Default: `server.listen` from the config, else 127.0.0.1:7400.
    /// Use port 0 for a free port (the address is printed on stderr).
    #[arg(long, value_name = "ADDR")]
    pub listen: Option<SocketAddr>,
    /// Config file. Default: ./switchyard.toml when it exists. Only its `[server]` table is
    /// read here; flags override it.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Start the integration gateway as the standby of a blue-green pair: it reads nothing,
    /// connects to no vendor and takes no reply until `POST /v1/adapters/promote`.
    #[arg(long)]
    pub standby: bool,
    /// This instance's name, the owner of its leases (subscription partitions, adapter
    /// lanes) when several instances share a store; unique among them. Default: with the
    /// file journal (one process per data directory) host and data directory, so a restart
    /// takes its leases back at once; otherwise host, process id and a random part.
    #[arg(long, value_name = "NAME")]
    pub instance: Option<String>,
    /// How long a lease lasts unless renewed, in milliseconds (300 to 3600000): when an
    /// instance dies, its partitions and lanes move after about this long. Default 10000.
    #[arg(long, value_name = "MS")]
    pub lease_ttl_ms: Option<u64>,
    /// Also run the API gateway on this address (the `[[routes]]` of the config and of the
    /// admin API `/v1/gateway/routes`). Default: `server.gateway-listen`, else no gateway.
    #[arg(long, value_name = "ADDR")]
    pub gateway_listen: Option<SocketAddr>,
    /// The API gateway's serving threads, each with its own listening socket on the
    /// gateway's port and its own upstream connections (as nginx's `worker_processes`).
    /// Default: TOKIO_WORKER_THREADS when set, else one per CPU.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u16).range(1..=1024))]
    pub gateway_threads: Option<u16>,
    /// Where a service that routes name with `service = "NAME"` listens: `NAME=http://host:port`
    /// (repeat for more services, or for more instances of one).
    #[arg(long = "service", value_name = "NAME=URL", value_parser = crate::args::parse_header)]
    pub services: Vec<(String, String)>,
    /// The environment variable holding the gateway admin API's bearer token (at least 16
    /// characters). Default: `server.gateway-admin-token-env`, else SWITCHYARD_GATEWAY_TOKEN.
    /// Without a token the admin API is open, which is allowed on loopback only.
    #[arg(long, value_name = "VAR")]
    pub gateway_admin_token_env: Option<String>,
}

/// Lease settings of one instance (see `--instance` and `--lease-ttl-ms`).
#[derive(Clone, Debug, Default)]
pub struct LeaseChoice {
    pub instance: Option<String>,
    pub ttl: Option<std::time::Duration>,
}

/// The default instance name: stable for a data directory with the file journal (its lock
/// allows one process), unique per process otherwise.
fn default_instance(data: &Path, journal: &JournalChoice) -> String {
    match journal {
        JournalChoice::File => {
            let dir = std::fs::canonicalize(data).unwrap_or_else(|_| data.to_path_buf());
            let mut h: u64 = 0xcbf2_9ce4_8422_2325;
            for b in dir.to_string_lossy().bytes() {
                h = (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3);
            }
            let host = std::env::var("HOSTNAME")
                .ok()
                .filter(|h| !h.is_empty() && h.bytes().all(|b| b.is_ascii_graphic()))
                .unwrap_or_else(|| "switchyard".to_owned());
            format!("{host}-{h:016x}")
        }
        JournalChoice::Nats(_) => switchyard_bus::default_instance(),
    }
}

/// The default variable of the gateway admin API's token.
pub const GATEWAY_TOKEN_ENV: &str = "SWITCHYARD_GATEWAY_TOKEN";

/// The token in `var`, when set; refused when shorter than 16 characters or with spaces.
pub fn admin_token_from_env(var: &str) -> anyhow::Result<Option<String>> {
    match std::env::var(var) {
        Err(_) => Ok(None),
        Ok(t) if t.len() < MIN_SECRET_LEN || t.chars().any(char::is_whitespace) => Err(anyhow!(
            "{var}: the gateway admin token must be at least {MIN_SECRET_LEN} characters, without spaces"
        )),
        Ok(t) => Ok(Some(t)),
    }
}

/// The `[server]` table of switchyard.toml.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
struct ServerConfig {
    listen: Option<SocketAddr>,
    data: Option<PathBuf>,
    /// `file` or `nats://host:port[,...]`, as `--journal`.
    journal: Option<String>,
    /// `sqlite` or `postgres://...`, as `--store`.
    store: Option<String>,
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
    /// The API gateway's address, as `--gateway-listen`.
    gateway_listen: Option<SocketAddr>,
    /// As `--gateway-admin-token-env`.
    gateway_admin_token_env: Option<String>,
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
    /// The gateway's routes, read by `switchyard_manifest::read_routes`.
    #[serde(skip)]
    routes: Vec<switchyard_manifest::RouteSpec>,
}

fn load_config(path: &Path) -> anyhow::Result<ConfigFile> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    // Other tables belong to the system manifest (topics, subscriptions, ...): only
    // `[server]` and `[[routes]]` are read, strictly.
    let mut file: ConfigFile =
        toml::from_str(&text).map_err(|e| anyhow!("{}: {e}", path.display()))?;
    file.routes =
        switchyard_manifest::read_routes(&path.display().to_string(), &text).map_err(|diags| {
            anyhow!(
                "{}",
                diags
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join("\n")
            )
        })?;
    Ok(file)
}

pub const DEFAULT_LISTEN: &str = "127.0.0.1:7400";

pub async fn run(args: ServeArgs) -> Result<u8, Exit> {
    let file = match &args.config {
        Some(p) => load_config(p)?,
        None if Path::new("switchyard.toml").exists() => load_config(Path::new("switchyard.toml"))?,
        None => ConfigFile::default(),
    };
    let (mut config, routes) = (file.server, file.routes);
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
    let journal = match (&args.journal, &config.journal) {
        (Some(url), _) => JournalChoice::parse(url).map_err(|e| anyhow!("--journal: {e}"))?,
        (None, Some(url)) => {
            JournalChoice::parse(url).map_err(|e| anyhow!("[server] journal: {e}"))?
        }
        (None, None) => JournalChoice::File,
    };
    let store = match (&args.store, &config.store) {
        (Some(url), _) => StoreChoice::parse(url).map_err(|e| anyhow!("--store: {e}"))?,
        (None, Some(url)) => StoreChoice::parse(url).map_err(|e| anyhow!("[server] store: {e}"))?,
        (None, None) => StoreChoice::Sqlite,
    };
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
    let adapters_file = args
        .config
        .clone()
        .unwrap_or_else(|| PathBuf::from("switchyard.toml"));
    let gateway_listen = args.gateway_listen.or(config.gateway_listen);
    let token_var = args
        .gateway_admin_token_env
        .clone()
        .or(config.gateway_admin_token_env.clone())
        .unwrap_or_else(|| GATEWAY_TOKEN_ENV.to_string());
    let mut admin_token = admin_token_from_env(&token_var)?;
    if admin_token.is_none() && !listen.ip().is_loopback() {
        // Off loopback an open admin API is not allowed: without its token it is locked by
        // one nobody knows (every admin call answers 401).
        admin_token = Some(format!("{:032x}", rand::random::<u128>()));
    }
    let mut services = switchyard_gateway::Services::new();
    for (name, url) in &args.services {
        switchyard_manifest::check_upstream_url(url)
            .map_err(|e| anyhow!("--service {name}: {e}"))?;
        services.entry(name.clone()).or_default().push(url.clone());
    }
    if let Some(ms) = args.lease_ttl_ms
        && !(300..=3_600_000).contains(&ms)
    {
        return Err(Exit {
            code: 2,
            error: anyhow!("--lease-ttl-ms: must be 300 to 3600000 (got {ms})"),
        });
    }
    let leases = LeaseChoice {
        instance: args.instance.clone(),
        ttl: args.lease_ttl_ms.map(std::time::Duration::from_millis),
    };
    let platform = Platform::open_full(
        &data,
        &journal,
        &store,
        Some(&adapters_file),
        args.standby,
        &leases,
    )
    .await?;
    let faults = switchyard_gateway::Faults::default();
    let gateway = match switchyard_gateway::Gateway::start(
        platform.journal(),
        switchyard_gateway::GatewayOptions {
            declared: routes,
            services,
            admin_token,
            // No manifests here: no service may call another through this gateway (every
            // `/v1/call` is refused).
            dependencies: Default::default(),
            store: Some(platform.store()),
            faults: faults.clone(),
            ..Default::default()
        },
    )
    .await
    {
        Ok(g) => g,
        Err(e) => {
            platform.close().await?;
            return Err(anyhow!("starting the gateway: {e}").into());
        }
    };
    platform.bus.set_push_faults(Arc::new(PushFaultsOf(faults)));
    options.bus = Some(platform.bus.clone());
    options.connect = Some(platform.connect.clone());
    let lanes = platform.connect.lanes().await.map(|l| l.len()).unwrap_or(0);
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("listening on {listen}"))?;
    let bound = listener.local_addr().context("reading the bound address")?;
    let access = match options.tokens.len() {
        0 => "open, no tokens".to_string(),
        n => format!("{n} access token(s)"),
    };
    note(format_args!(
        "switchyard: serving http://{bound} (data in {}; journal {}; store {}; {access}; {lanes} adapter lane(s))",
        data.display(),
        journal.describe(&data),
        store.describe(&data)
    ));
    let reloader = tokio::spawn(reload_on_sighup(platform.connect.clone()));
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let signal = tokio::spawn(async move {
        shutdown_signal().await;
        let _ = stop_tx.send(true);
    });
    let stopped = |rx: tokio::sync::watch::Receiver<bool>| async move {
        let mut rx = rx;
        let _ = rx.wait_for(|&s| s).await;
    };
    let gateway_task = match gateway_listen {
        Some(addr) => {
            let gl = switchyard_gateway::bind_shared(addr)
                .with_context(|| format!("--gateway-listen {addr}"))?;
            let bound = gl
                .local_addr()
                .context("reading the gateway's bound address")?;
            let threads = args
                .gateway_threads
                .map_or_else(default_gateway_threads, usize::from);
            note(format_args!(
                "switchyard: gateway on http://{bound} ({} route(s), {threads} thread(s))",
                gateway.routes().len()
            ));
            let g = gateway.clone();
            let rx = stop_rx.clone();
            Some(tokio::spawn(async move {
                // Said when it happens: the API goes on serving without the gateway.
                if let Err(e) = g.serve_threads(gl, threads, rx).await {
                    note(format_args!("switchyard: the gateway stopped serving: {e}"));
                }
            }))
        }
        None => None,
    };
    let write_timeout = options.stalled_write_timeout;
    let app = switchyard_server::router(platform.journal(), options, stop_rx.clone())
        .merge(gateway.admin_router());
    switchyard_server::serve_router(listener, app, write_timeout, stopped(stop_rx))
        .await
        .context("serving HTTP")?;
    if let Some(t) = gateway_task {
        let _ = t.await;
    }
    signal.abort();
    gateway.shutdown().await;
    reloader.abort();
    note(format_args!(
        "switchyard: stopping: finishing deliveries in progress, flushing the journal"
    ));
    platform.close().await?;
    note(format_args!("switchyard: stopped"));
    Ok(0)
}

/// Where the journal lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JournalChoice {
    /// Segment files in the data directory.
    File,
    /// A NATS JetStream cluster.
    Nats(NatsOptions),
}

impl JournalChoice {
    /// `file` or `nats://...`; the error says what was expected.
    pub fn parse(text: &str) -> Result<Self, String> {
        match text.trim() {
            "file" => Ok(Self::File),
            t if t.starts_with("nats://") => NatsOptions::from_url(t)
                .map(Self::Nats)
                .map_err(|e| e.to_string()),
            other => Err(format!(
                "{other:?} is neither `file` nor nats://host:port[,host:port...]"
            )),
        }
    }

    fn describe(&self, data: &Path) -> String {
        match self {
            Self::File => format!("in {}", data.display()),
            Self::Nats(o) => format!("on NATS {}", o.servers.join(",")),
        }
    }
}

/// Where the store lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreChoice {
    /// `store.sqlite` in the data directory.
    Sqlite,
    /// A PostgreSQL database.
    Postgres(PostgresOptions),
}

impl StoreChoice {
    /// `sqlite` or `postgres://...` (`postgresql://` too); the error says what was expected
    /// and never shows a password.
    pub fn parse(text: &str) -> Result<Self, String> {
        match text.trim() {
            "sqlite" => Ok(Self::Sqlite),
            t if t.starts_with("postgres://") || t.starts_with("postgresql://") => {
                PostgresOptions::from_url(t)
                    .map(Self::Postgres)
                    .map_err(|e| match e {
                        switchyard_store::Error::InvalidInput { reason, .. } => reason,
                        other => other.to_string(),
                    })
            }
            other => Err(format!(
                "{:?} is neither `sqlite` nor postgres://[user[:password]@]host[:port]/database",
                switchyard_store::postgres::redact(other)
            )),
        }
    }

    fn describe(&self, data: &Path) -> String {
        match self {
            Self::Sqlite => format!("in {}", data.join("store.sqlite").display()),
            Self::Postgres(o) => format!("on PostgreSQL {}", o.redacted()),
        }
    }
}

/// The store backend a platform runs on.
#[derive(Clone)]
enum StoreBackend {
    Sqlite(Arc<SqliteStore>),
    Postgres(Arc<PostgresStore>),
}

impl StoreBackend {
    fn shared(&self) -> Arc<dyn switchyard_store::Store> {
        match self {
            Self::Sqlite(s) => s.clone(),
            Self::Postgres(s) => s.clone(),
        }
    }

    async fn close(&self) {
        match self {
            Self::Sqlite(s) => s.close().await,
            Self::Postgres(s) => s.close().await,
        }
    }
}

/// The journal backend a platform runs on.
#[derive(Clone)]
enum Backend {
    File(FileJournal),
    Nats(NatsJournal),
}

/// SIGHUP reads the adapters again and applies them (a bad file changes nothing).
async fn reload_on_sighup(connect: switchyard_connect::Connect) {
    let Ok(mut hup) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) else {
        return;
    };
    while hup.recv().await.is_some() {
        match connect.reload().await {
            Ok(r) => note(format_args!(
                "switchyard: adapters reloaded: added {:?}, changed {:?}, removed {:?}",
                r.added, r.changed, r.removed
            )),
            Err(e) => note(format_args!(
                "switchyard: adapters not reloaded (nothing changed): {e}"
            )),
        }
    }
}

/// The journal, the store, the subscriptions and the integration gateway of one data
/// directory: what `serve` runs and what `dev` runs (and restarts on reset and restore).
pub struct Platform {
    journal: Backend,
    store: StoreBackend,
    pub bus: switchyard_bus::Bus,
    pub connect: switchyard_connect::Connect,
}

impl Platform {
    /// Opens the journal in `data` and the store `data/store.sqlite`, and starts the
    /// subscriptions' dispatchers and the lanes of the adapters declared in `adapters`
    /// (a `switchyard.toml`; a missing file declares none).
    pub async fn open(data: &Path, adapters: Option<&Path>, standby: bool) -> anyhow::Result<Self> {
        Self::open_with(
            data,
            &JournalChoice::File,
            &StoreChoice::Sqlite,
            adapters,
            standby,
        )
        .await
    }

    /// As [`Platform::open`], with the journal where `journal` says and the store where
    /// `store` says.
    pub async fn open_with(
        data: &Path,
        journal: &JournalChoice,
        store: &StoreChoice,
        adapters: Option<&Path>,
        standby: bool,
    ) -> anyhow::Result<Self> {
        Self::open_full(
            data,
            journal,
            store,
            adapters,
            standby,
            &LeaseChoice::default(),
        )
        .await
    }

    /// As [`Platform::open_with`], with the lease settings of `leases`.
    pub async fn open_full(
        data: &Path,
        journal: &JournalChoice,
        store: &StoreChoice,
        adapters: Option<&Path>,
        standby: bool,
        leases: &LeaseChoice,
    ) -> anyhow::Result<Self> {
        std::fs::create_dir_all(data)
            .with_context(|| format!("creating the data directory {}", data.display()))?;
        let instance = leases
            .instance
            .clone()
            .unwrap_or_else(|| default_instance(data, journal));
        let lease_ttl = leases.ttl.unwrap_or(std::time::Duration::from_secs(10));
        let journal = match journal {
            JournalChoice::File => Backend::File(
                FileJournal::open(data)
                    .with_context(|| format!("opening the journal in {}", data.display()))?,
            ),
            JournalChoice::Nats(options) => Backend::Nats(
                NatsJournal::connect(options.clone())
                    .await
                    .context("--journal: connecting to NATS")?,
            ),
        };
        std::fs::create_dir_all(data)
            .with_context(|| format!("creating the data directory {}", data.display()))?;
        let store = match store {
            StoreChoice::Sqlite => {
                let store_path = data.join("store.sqlite");
                let store = SqliteStore::open(&store_path)
                    .await
                    .with_context(|| format!("opening the store {}", store_path.display()));
                match store {
                    Ok(s) => StoreBackend::Sqlite(Arc::new(s)),
                    Err(e) => {
                        close_journal(&journal).await;
                        return Err(e);
                    }
                }
            }
            StoreChoice::Postgres(options) => match PostgresStore::open(options).await {
                Ok(s) => StoreBackend::Postgres(Arc::new(s)),
                Err(e) => {
                    close_journal(&journal).await;
                    return Err(anyhow!("--store: {e}"));
                }
            },
        };
        let shared: Arc<dyn switchyard_journal::Journal> = match &journal {
            Backend::File(j) => Arc::new(j.clone()),
            Backend::Nats(j) => Arc::new(j.clone()),
        };
        let bus = match switchyard_bus::Bus::start(
            shared.clone(),
            store.shared(),
            switchyard_bus::BusOptions {
                instance: instance.clone(),
                lease_ttl,
                ..switchyard_bus::BusOptions::default()
            },
        )
        .await
        {
            Ok(b) => b,
            Err(e) => {
                store.close().await;
                close_journal(&journal).await;
                return Err(anyhow!(
                    "starting the subscriptions (--instance, --lease-ttl-ms): {e}"
                ));
            }
        };
        let connect = match switchyard_connect::Connect::start(
            shared.clone(),
            store.shared(),
            switchyard_connect::ConnectOptions {
                config_file: adapters.map(Path::to_path_buf),
                standby,
                instance,
                lease_ttl,
            },
        )
        .await
        {
            Ok(c) => c,
            Err(e) => {
                bus.shutdown().await;
                store.close().await;
                close_journal(&journal).await;
                return Err(anyhow!("starting the integration gateway: {e}"));
            }
        };
        Ok(Self {
            journal,
            store,
            bus,
            connect,
        })
    }

    pub fn journal(&self) -> Arc<dyn switchyard_journal::Journal> {
        match &self.journal {
            Backend::File(j) => Arc::new(j.clone()),
            Backend::Nats(j) => Arc::new(j.clone()),
        }
    }

    /// The store (the gateway counts its quotas there).
    pub fn store(&self) -> Arc<dyn switchyard_store::Store> {
        self.store.shared()
    }

    /// Stops the lanes and the dispatchers (attempts in progress record their outcome),
    /// checkpoints the store and flushes the journal.
    pub async fn close(self) -> anyhow::Result<()> {
        self.connect.shutdown().await;
        self.bus.shutdown().await;
        self.store.close().await;
        match &self.journal {
            Backend::File(j) => j.close().await,
            Backend::Nats(j) => j.close().await,
        }
        .context("closing the journal")
    }
}

/// The gateway's fault table as the bus's push hook (`switchyard chaos`): a push to a
/// service's address meets that service's fault.
pub(crate) struct PushFaultsOf(pub switchyard_gateway::Faults);

impl switchyard_bus::push::PushFaults for PushFaultsOf {
    fn before_push(&self, endpoint: &str) -> Option<switchyard_bus::push::InjectedFault> {
        let (service, i) = self.0.for_url(endpoint)?;
        Some(switchyard_bus::push::InjectedFault {
            delay: i.delay,
            fail: i.fail,
            what: format!(
                "fault injected on `{service}`: `switchyard chaos {}`",
                i.kind.as_str()
            ),
        })
    }
}

/// Closes a journal that a failed start opened (its error is the lesser one).
async fn close_journal(journal: &Backend) {
    let _ = match journal {
        Backend::File(j) => j.close().await,
        Backend::Nats(j) => j.close().await,
    };
}

/// A progress line on stderr; a closed stderr must not stop the server.
fn note(line: std::fmt::Arguments<'_>) {
    use std::io::Write as _;
    let _ = writeln!(std::io::stderr(), "{line}");
}

pub(crate) use switchyard_sdk::shutdown_signal;

/// The API gateway's serving threads unless `--gateway-threads` says: `TOKIO_WORKER_THREADS`
/// when set (as for the runtime's own workers), else one per CPU.
fn default_gateway_threads() -> usize {
    std::env::var("TOKIO_WORKER_THREADS")
        .ok()
        .and_then(|v| v.trim().parse::<usize>().ok())
        .filter(|&n| n > 0)
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
}
