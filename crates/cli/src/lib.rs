//! `switchyard`: the Switchyard command.
//!
//! Exit codes: 0 success; 1 the journal holds corrupt data (`journal verify` found a
//! problem, or a read met a corrupt record), or `check` found errors in the manifests; 2 bad
//! arguments or an I/O error.
//!
//! The command is also a library so that a *host binary* can be `switchyard` with Rust
//! services linked in: its `main` is [`main_with`] and a [`switchyard_sdk::Host`] of them.
//! `switchyard dev` then runs the system's `in-process` services inside the platform's
//! process, on the embedded journal (see ARCHITECTURE.md, "In-process services").

mod args;
mod chaos;
mod check;
mod connect;
mod dev;
mod host;
mod journal;
mod logging;
mod output;
mod remote;
mod seed;
mod serve;

use clap::{Parser, Subcommand};
use std::process::ExitCode;

#[derive(Parser, Debug)]
#[command(
    name = "switchyard",
    version,
    about = "Switchyard: an event-driven service platform in one binary",
    long_about = "Switchyard: an event-driven service platform in one binary.\n\n\
        Exit codes: 0 success; 1 corruption found (journal verify, or a read that met a corrupt \
        record), or errors in the manifests (check); 2 bad arguments or an I/O error.",
    after_help = "Environment:\n  \
        SWITCHYARD_LOG  what the platform logs on stderr: a level, and levels by target as \
        in RUST_LOG [default: warn]; for example info, or warn,switchyard_gateway=info, or off"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Work with a journal directory: create topics, append, read, inspect, verify.
    #[command(
        subcommand,
        after_help = "Examples:\n  \
            switchyard journal create-topic ./data orders.v1 --partitions 3 --durability always\n  \
            echo '{\"total\":42}' | switchyard journal append ./data orders.v1 --key order-1\n  \
            switchyard journal read ./data orders.v1 --from 2026-11-22T10:00:00Z --limit 10\n  \
            switchyard journal inspect ./data\n  \
            switchyard journal verify ./data"
    )]
    Journal(journal::JournalCommand),

    /// Serve the HTTP API (topics, CloudEvents publish, read, SSE and NDJSON streams) over
    /// the file journal in a data directory, or a NATS JetStream cluster, until SIGINT or
    /// SIGTERM.
    #[command(after_help = "Examples:\n  \
            switchyard serve --data ./data\n  \
            switchyard serve --journal 'nats://10.0.0.1:4222,10.0.0.2:4222?sync=always&replicas=3'\n  \
            curl -X PUT localhost:7400/v1/topics/orders.v1 -H 'content-type: application/json' -d '{\"partitions\":3}'\n  \
            curl localhost:7400/v1/topics/orders.v1/events -H 'content-type: application/cloudevents+json' \\\n    \
            -d '{\"specversion\":\"1.0\",\"id\":\"o-1\",\"source\":\"/shop\",\"type\":\"order.placed\",\"subject\":\"order-1\",\"data\":{\"total\":42}}'\n  \
            curl -N localhost:7400/v1/topics/orders.v1/stream?from=earliest\n\n\
            switchyard.toml, table [server] (every key optional): listen, data, journal, max-body-bytes, \
            max-batch-events, heartbeat-seconds, slow-client-seconds, stalled-write-seconds, and \
            [[server.tokens]] entries (name, secret-env or secret-file, scopes = publish | read | \
            admin, topics). The store (store.sqlite) lives in the data directory, and so does the \
            journal unless journal (or --journal) names a NATS cluster.")]
    Serve(serve::ServeArgs),

    /// Publish an event (or one per line of stdin) to a running server.
    #[command(after_help = "Examples:\n  \
            switchyard publish orders.v1 --type order.placed --subject order-1 --data '{\"total\":42}'\n  \
            cat events.jsonl | switchyard publish orders.v1 --type order.imported\n\n\
            The server comes from --server or SWITCHYARD_URL; a token from SWITCHYARD_TOKEN.")]
    Publish(remote::PublishArgs),

    /// Follow a topic on a running server and print its events as they come.
    #[command(after_help = "Examples:\n  \
            switchyard tail orders.v1\n  \
            switchyard tail orders.v1 --from earliest --json")]
    Tail(remote::TailArgs),

    /// Subscriptions on a running server: list, show, parked (retry, discard), seek.
    #[command(
        subcommand,
        after_help = "Examples:\n  \
            switchyard subs ls\n  \
            switchyard subs show shipping\n  \
            switchyard subs parked shipping --retry orders.v1/0@42\n  \
            switchyard subs seek shipping orders.v1 2026-11-22T10:00:00Z"
    )]
    Subs(remote::SubsCommand),

    /// The message store of a running server's integration gateway: list, show, replay.
    #[command(after_help = "Examples:\n  \
            switchyard messages --adapter bakery --state failed --since 1h\n  \
            switchyard messages show 42\n  \
            switchyard messages replay 42 43 --remap")]
    Messages(connect::MessagesArgs),

    /// Cases (failures grouped by their key) on a running server: list, show, retry all,
    /// discard all, resolve.
    #[command(after_help = "Examples:\n  \
            switchyard cases --adapter bakery --state open\n  \
            switchyard cases show 9f2c1a0b3d4e5f60\n  \
            switchyard cases retry 9f2c1a0b3d4e5f60 --remap\n  \
            switchyard cases discard 9f2c1a0b3d4e5f60")]
    Cases(connect::CasesArgs),

    /// The integration gateway's lanes on a running server: list, pause, resume, drain,
    /// reload the adapters without a restart.
    #[command(
        subcommand,
        after_help = "Examples:\n  \
            switchyard adapters ls\n  \
            switchyard adapters pause bakery\n  \
            switchyard adapters reload"
    )]
    Adapters(connect::AdaptersCommand),

    /// A fake vendor: a real HTTP server with scripted behaviour (latency, 503 with
    /// Retry-After, timeouts, resets, garbage, 429 rate limiting, down and up), for demos
    /// and tests.
    #[command(after_help = connect::FAKE_VENDOR_HELP)]
    FakeVendor(connect::FakeVendorArgs),

    /// Check a system's manifests and print every problem with its file, line and key.
    ///
    /// Reads switchyard.toml and every services/<name>/service.toml, and checks their
    /// syntax and keys, failure policies, topics and their producers, event types, schemas,
    /// ports, `run` programs and migrations folders.
    #[command(after_help = "Examples:\n  \
            switchyard check\n  \
            switchyard check ./shop --json\n\n\
            Each line: SEVERITY[CODE]: FILE:LINE:COLUMN: KEY: MESSAGE, then a summary line. \
            Exit 1 when there is an error; warnings (a topic nobody subscribes to, a published \
            type nobody consumes) do not change the exit code. Exit 2 when DIR cannot be read.")]
    Check(check::CheckArgs),

    #[command(after_help = "Examples:\n  \
            switchyard dev examples/shop\n  \
            switchyard dev examples/shop --only orders,inventory\n  \
            curl localhost:7400/v1/system/status\n\n\
            Starts the platform (journal and store in DIR/.switchyard) and every service of the \
            system as a child process, in dependency order, each once its health check answers. \
            Services get PORT, SWITCHYARD_URL, SWITCHYARD_GATEWAY_URL, SWITCHYARD_CALL_TOKEN (sent \
            as Switchyard-Call-Token on service-to-service calls), SERVICE_NAME, DATABASE_URL \
            (sqlite://PATH, migrations applied), TRACEPARENT and <DEPENDENCY>_URL for each \
            dependency. A crashed service is \
            restarted with backoff. Exit: 0 after Ctrl-C, 1 when the manifests have errors or a \
            service does not start (its last lines are shown).")]
    Dev(dev::DevArgs),

    /// Print a JWT for a route with HS256 auth, signed with the route's secret (its variable,
    /// or the development secret `switchyard dev` made), to try JWT routes with curl.
    #[command(after_help = dev::DEV_TOKEN_HELP)]
    DevToken(dev::DevTokenArgs),

    #[command(after_help = "Examples:\n  \
            switchyard reset\n  \
            switchyard reset --seed examples/shop/seed.yaml\n\n\
            Empties the journal, the store and every service database of the system, then starts \
            it again (through the running switchyard dev at SWITCHYARD_URL, or directly on \
            DIR/.switchyard when none runs).")]
    Reset(dev::ResetArgs),

    #[command(
        subcommand,
        after_help = "Examples:\n  \
            switchyard snapshot save before-bug\n  \
            switchyard snapshot restore before-bug\n  \
            switchyard snapshot ls"
    )]
    Snapshot(dev::SnapshotCommand),

    /// Inject faults for development: make a service look down, slow or flaky to calls,
    /// routes and pushes of a running `switchyard dev`, to watch failure policies work.
    #[command(subcommand, after_help = chaos::HELP)]
    Chaos(chaos::ChaosCommand),

    /// Put a running server into a known state from a YAML file: events per topic (those
    /// already there are skipped), HTTP calls, then wait for every subscription to catch up.
    #[command(after_help = seed::HELP)]
    Seed(seed::SeedArgs),

    /// Run the Rust services linked into this binary (a host binary built with
    /// switchyard-sdk and `switchyard::main_with`) against a running Switchyard over HTTP,
    /// until SIGINT or SIGTERM.
    #[command(after_help = host::HELP)]
    Host(host::HostArgs),
}

/// An error with the exit code it should produce.
#[derive(Debug)]
pub struct Exit {
    pub code: u8,
    pub error: anyhow::Error,
}

impl<E: Into<anyhow::Error>> From<E> for Exit {
    fn from(e: E) -> Self {
        let error = e.into();
        let code = if is_corruption(&error) { 1 } else { 2 };
        Exit { code, error }
    }
}

fn is_corruption(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        matches!(
            c.downcast_ref::<switchyard_journal::Error>(),
            Some(switchyard_journal::Error::Corrupt { .. })
        )
    })
}

/// The error and its causes, `: `-separated, skipping a cause whose text the message already
/// holds (library errors often print their source themselves).
fn render(error: &anyhow::Error) -> String {
    let mut msg = error.to_string();
    for cause in error.chain().skip(1) {
        let c = cause.to_string();
        if !msg.contains(&c) {
            msg.push_str(": ");
            msg.push_str(&c);
        }
    }
    msg
}

/// SQLite allocates with the C library's malloc (Rust code uses the binary's allocator),
/// and glibc gives every thread that allocates an arena of its own, up to eight per core:
/// the runner's dozen SQLite connection threads idled in about 1.8 MB of arenas. With two,
/// the idle runner was 0.4 MB smaller and seeding as fast (`switchyard-bench dev`); a
/// `MALLOC_ARENA_MAX` in the environment still decides.
#[allow(unsafe_code)] // One FFI call with no pointers: the setting has no safe interface.
fn limit_malloc_arenas() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    if std::env::var_os("MALLOC_ARENA_MAX").is_none() {
        // SAFETY: mallopt only sets one of glibc's tunables; it takes no pointers.
        unsafe {
            libc::mallopt(libc::M_ARENA_MAX, 2);
        }
    }
}

/// The `switchyard` command.
pub fn main() -> ExitCode {
    run(None)
}

/// The `switchyard` command with `host`'s services linked in: `switchyard dev` runs those
/// of the system marked `in-process` inside its own process, and `host` runs them against a
/// platform elsewhere.
pub fn main_with(host: switchyard_sdk::Host) -> ExitCode {
    run(Some(std::sync::Arc::new(host)))
}

fn run(hosted: Option<std::sync::Arc<switchyard_sdk::Host>>) -> ExitCode {
    limit_malloc_arenas();
    let cli = Cli::parse();
    if let Err(e) = logging::init() {
        eprintln!("error: {e}");
        return ExitCode::from(2);
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: starting the async runtime: {e}");
            return ExitCode::from(2);
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Journal(cmd) => journal::run(cmd).await,
            Command::Serve(args) => serve::run(args).await,
            Command::Publish(args) => remote::publish(args).await,
            Command::Tail(args) => remote::tail(args).await,
            Command::Subs(cmd) => remote::subs(cmd).await,
            Command::Messages(args) => connect::messages(args).await,
            Command::Cases(args) => connect::cases(args).await,
            Command::Adapters(cmd) => connect::adapters(cmd).await,
            Command::FakeVendor(args) => connect::fake_vendor(args).await,
            Command::Check(args) => check::run(args),
            Command::Dev(args) => dev::run(args, hosted).await,
            Command::DevToken(args) => dev::dev_token(args).map_err(Exit::from).map(|token| {
                println!("{token}");
                0
            }),
            Command::Reset(args) => dev::reset(args).await,
            Command::Snapshot(cmd) => dev::snapshot(cmd).await,
            Command::Seed(args) => seed::run(args).await,
            Command::Chaos(cmd) => chaos::run(cmd).await,
            Command::Host(args) => host::run(args, hosted).await,
        }
    });
    // Don't wait for a blocked stdin reader thread (append from a pipe that stays open).
    runtime.shutdown_background();
    match result {
        Ok(code) => ExitCode::from(code),
        Err(Exit { code, error }) => {
            if output::is_broken_pipe(&error) {
                return ExitCode::SUCCESS;
            }
            eprintln!("error: {}", render(&error));
            ExitCode::from(code)
        }
    }
}
