//! NATS JetStream file storage, the same workload over loopback.

use crate::ids::ulid_like;
use crate::load::{self, Load, Measured, OpSource, static_payload};
use anyhow::{Context as _, Result};
use async_nats::jetstream::{self, message::PublishMessage, stream};
use bytes::Bytes;
use futures::future::BoxFuture;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use switchyard_journal::nats_server::{NatsBinary, NatsServer, Sync};

pub const SYSTEM: &str = "nats-jetstream";
const SUBJECT: &str = "bench.events";

/// How a sync setting is labelled in the report's `durability` column.
pub fn durability_label(sync: Sync) -> &'static str {
    match sync {
        Sync::Default => "default",
        Sync::Always => "always",
    }
}

/// How appenders reach the server.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Connections {
    /// Each appender has its own connection (like separate producer processes).
    PerAppender,
    /// All appenders share one connection (one client process, async-nats's usual shape).
    Shared,
}

struct Publishes {
    /// The JetStream context (and connection) of each appender.
    contexts: Vec<jetstream::Context>,
    payload: Bytes,
    millis: u64,
}

impl OpSource for Publishes {
    type Op = BoxFuture<'static, Result<()>>;

    fn op(self: &Arc<Self>, appender: usize, seq: u64) -> Self::Op {
        let this = self.clone();
        Box::pin(async move {
            let msg = PublishMessage::build()
                .payload(this.payload.clone())
                .message_id(ulid_like(this.millis, appender as u64, seq));
            let ack = this.contexts[appender].send_publish(SUBJECT, msg).await?;
            ack.await?;
            Ok(())
        })
    }
}

/// One repeat: a private server with a fresh store under `base`, killed afterwards.
pub async fn run_once(
    bin: &NatsBinary,
    base: &Path,
    sync: Sync,
    connections: Connections,
    payload: usize,
    load: Load,
) -> Result<Measured> {
    let dir = tempfile::Builder::new()
        .prefix("switchyard-bench-nats-")
        .tempdir_in(base)
        .with_context(|| format!("creating a temporary directory in {}", base.display()))?;
    let server = NatsServer::start(bin, dir.path(), sync).await?;
    let connect = |in_flight: usize| {
        let url = server.url.clone();
        async move {
            let client = async_nats::connect(&url)
                .await
                .with_context(|| format!("connecting to {url}"))?;
            anyhow::Ok(
                jetstream::context::ContextBuilder::new()
                    .max_ack_inflight(in_flight)
                    .timeout(Duration::from_secs(60))
                    .build(client),
            )
        }
    };
    let contexts = match connections {
        Connections::PerAppender => {
            let mut v = Vec::with_capacity(load.appenders);
            for _ in 0..load.appenders {
                v.push(connect(load.in_flight).await?);
            }
            v
        }
        Connections::Shared => {
            vec![connect(load.in_flight * load.appenders).await?; load.appenders]
        }
    };
    contexts[0]
        .create_stream(stream::Config {
            name: "BENCH".to_string(),
            subjects: vec![format!("{SUBJECT}")],
            storage: stream::StorageType::File,
            num_replicas: 1,
            duplicate_window: Duration::from_secs(120),
            ..Default::default()
        })
        .await
        .context("creating the JetStream stream")?;
    let millis = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0);
    let source = Arc::new(Publishes {
        contexts,
        payload: static_payload(payload),
        millis,
    });
    // Acks still pending when the window closes are dropped: the server is killed next.
    let measured = load::run(
        Load {
            drain: false,
            ..load
        },
        source,
        server.pid(),
    )
    .await;
    drop(server);
    dir.close().context("removing the benchmark directory")?;
    measured
}
