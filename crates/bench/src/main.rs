//! `switchyard-bench`: Switchyard's benchmarks, measured side by side with peers in the same
//! run. Each suite is a subcommand (`journal`, `bus`, `dev`, `connect`, `sdk`, `gateway`)
//! built from the shared pieces: the closed-loop [`load`] driver, the [`report`] table / JSON
//! lines, and peer servers (`switchyard_journal::nats_server`).

mod bus;
mod connect;
mod dev;
mod env;
mod gateway;
mod ids;
mod journal;
mod load;
mod report;
mod run;
mod sdk;

use clap::{Parser, Subcommand};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// `mi_option_purge_delay` in mimalloc.h's `mi_option_e` (libmimalloc-sys names only some).
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// Keeps memory the process freed instead of returning it to the OS, as a long-running
/// server does in steady state (its dedup generations and page cache are recycled, see
/// ARCHITECTURE.md, "Performance"). Without it, every repeat after the first would pay
/// again for first-touching memory the OS reclaimed, which on a VM that backs guest memory
/// lazily costs about 2.7 s per GiB (0.3 s once backed). The first repeat of a run still
/// starts cold; the per-repeat figures show it.
fn keep_freed_memory() {
    // SAFETY: sets one of mimalloc's documented runtime options to a valid value (-1 = never
    // purge); called before any thread starts, as mimalloc's docs ask.
    #[allow(unsafe_code)]
    unsafe {
        libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, -1);
    }
}

#[derive(Parser, Debug)]
#[command(
    name = "switchyard-bench",
    version,
    about = "Switchyard's benchmarks, measured side by side with peers in the same run",
    long_about = "Switchyard's benchmarks, measured side by side with peers in the same run.\n\n\
        Build with --release: cargo run --release -p switchyard-bench -- journal --quick"
)]
struct Cli {
    #[command(subcommand)]
    suite: Suite,
}

#[derive(Subcommand, Debug)]
enum Suite {
    /// Journal appends: throughput and append-to-ack latency (p50, p99) of the embedded file
    /// journal, then of NATS JetStream file storage (default sync and sync_interval: always),
    /// for 256 B and 4 KiB records, 1 and 64 appenders.
    Journal(journal::Args),
    /// Publish throughput and publish-to-ack latency (p50, p99) of Switchyard's HTTP API
    /// (batched CloudEvents, durability always and os), then of NATS JetStream publish over
    /// its own protocol (default sync and sync_interval: always), 256 B events, 16 publishers.
    Bus(bus::Args),
    /// The local environment: time from `switchyard dev` start to every service of the demo
    /// system healthy, the platform's idle memory, seeding 100,000 events until every
    /// subscription caught up, and reset time. Needs the `switchyard` binary built next to
    /// this one (cargo build --release -p switchyard).
    Dev(dev::Args),
    /// The integration gateway: latency it adds per message compared with calling the
    /// vendor directly (p50, p99, message store on), and vendor B's throughput while
    /// vendor A is down compared with while A is up.
    Connect(connect::Args),
    /// The Rust SDK: peak resident memory of one process hosting 15 example-sized services
    /// on the embedded journal, and in-process publish-to-handler latency (p50, p99).
    Sdk(sdk::Args),
    /// The process `sdk` measures (hosts the services and prints its memory).
    #[command(hide = true)]
    SdkHost(sdk::HostArgs),
    /// The API gateway: throughput (closed loop, keep-alive connections) and p99 through
    /// `switchyard serve`'s gateway, plain and with JWT auth and a rate limit, beside nginx
    /// as a reverse proxy and the upstream called directly; then the latency the gateway
    /// adds at a fixed 10,000 requests/s. Needs the `switchyard` binary next to this one
    /// (cargo build --release -p switchyard) and nginx (Debian's package `nginx`).
    Gateway(gateway::Args),
    /// The upstream `gateway` measures against (answers every request with a small body).
    #[command(hide = true)]
    GatewayUpstream(gateway::UpstreamArgs),
}

fn main() -> std::process::ExitCode {
    // The SDK host child is measured as a service host runs: freed memory goes back.
    if std::env::args().nth(1).as_deref() != Some("sdk-host") {
        keep_freed_memory();
    }
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: starting the tokio runtime: {e}");
            return std::process::ExitCode::from(2);
        }
    };
    let result = runtime.block_on(async {
        let suite = async {
            match cli.suite {
                Suite::Journal(args) => journal::run(args).await,
                Suite::Bus(args) => bus::run(args).await,
                Suite::Dev(args) => dev::run(args).await,
                Suite::Connect(args) => connect::run(args).await,
                Suite::Sdk(args) => sdk::run(args).await,
                Suite::SdkHost(args) => sdk::host_child(args).await,
                Suite::Gateway(args) => gateway::run(args).await,
                Suite::GatewayUpstream(args) => gateway::upstream_child(args).await,
            }
        };
        // On Ctrl-C the suite is dropped: that kills any peer server and removes its data.
        tokio::select! {
            r = suite => r,
            _ = tokio::signal::ctrl_c() => Err(anyhow::anyhow!("interrupted")),
        }
    });
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        // stdout closed early (`| head`): not a failure.
        Err(e)
            if e.chain().any(|c| {
                c.downcast_ref::<std::io::Error>()
                    .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
            }) =>
        {
            std::process::ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
