//! `switchyard host`: the Rust services linked into this binary, run against a platform
//! elsewhere (over HTTP). The plain `switchyard` binary has none.

use crate::Exit;
use anyhow::anyhow;
use std::sync::Arc;

pub const HELP: &str = "Examples:\n  \
    SWITCHYARD_URL=http://127.0.0.1:7400 shop-host host --services payments,notifications\n  \
    PAYMENTS_PORT=8103 PAYMENTS_DATABASE_URL=sqlite://payments.db shop-host host --services payments\n\n\
    Each service's settings come from <NAME>_PORT, <NAME>_DATABASE_URL and any <NAME>_<KEY> \
    (payments-eu: PAYMENTS_EU_...), on top of the plain environment. The services pull their \
    topics over the API's streams, or, with --push, serve POST /events to subscriptions.";

#[derive(clap::Args, Debug)]
pub struct HostArgs {
    /// The services to run (comma-separated) [default: all that are linked in].
    #[arg(long, value_delimiter = ',')]
    services: Vec<String>,
    /// Serve POST /events for push subscriptions instead of pulling the topics.
    #[arg(long)]
    push: bool,
}

pub async fn run(args: HostArgs, hosted: Option<Arc<switchyard_sdk::Host>>) -> Result<u8, Exit> {
    let Some(host) = hosted else {
        return Err(anyhow!(
            "this switchyard binary has no services linked in: `host` is for a host binary \
             (a cargo package whose main is switchyard::main_with(host), see switchyard-sdk)"
        )
        .into());
    };
    let mut sdk_args = Vec::new();
    if !args.services.is_empty() {
        sdk_args.push("--services".to_string());
        sdk_args.push(args.services.join(","));
    }
    if args.push {
        sdk_args.push("--push".to_string());
    }
    host.main_with_args(&sdk_args).await?;
    Ok(0)
}
