//! `switchyard-bench connect`: what the integration gateway costs and how well its lanes
//! isolate vendors, in process (file journal, SQLite message store, fake vendors on
//! loopback).
//!
//! - **added-latency**: paired per message. Each round sends one request straight to the
//!   vendor (the time from the call to the vendor receiving it) and then one event through
//!   the gateway (the time from the append call to the vendor receiving the mapped
//!   request: the append, intake, mapping, the message store's intake commit, the sender,
//!   the HTTP call); the round's added latency is the second minus the first. p50 and p99
//!   of those differences; both distributions' own p50 and p99 are printed beside them.
//!   Pairing each message with a direct call made just before it keeps a noisy, shared
//!   machine's drift out of the difference.
//! - **isolation**: vendor B's throughput draining a backlog while vendor A (same topic,
//!   its own lane, as many messages) is down (connections refused), divided by B's
//!   throughput while A is up; and the same while A hangs (every attempt times out) and
//!   while A is slow (each answer after 200 ms).
use crate::run::RunArgs;
use anyhow::{Context as _, Result};
use serde_json::json;
use std::sync::Arc;
use std::time::{Duration, Instant};
use switchyard_connect::testing::{Behaviour, FakeVendor, Mode};
use switchyard_connect::{Connect, ConnectOptions};
use switchyard_journal::{Journal, PartitionChoice, TopicConfig, TopicName};
use switchyard_store::Store;
use switchyard_store::connect::MessageState;
use switchyard_types::{Durability, Record};

#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(flatten)]
    pub run: RunArgs,
    /// Events timed one at a time for added-latency [default: 300 with --quick, else 2000].
    #[arg(long)]
    pub latency_events: Option<usize>,
    /// Backlog per vendor for isolation [default: 1000 with --quick, else 4000].
    #[arg(long)]
    pub backlog: Option<usize>,
}

struct Rig {
    _dir: tempfile::TempDir,
    journal: Arc<dyn Journal>,
    store: Arc<dyn Store>,
    connect: Connect,
    topic: TopicName,
}

async fn rig(adapters: &str) -> Result<Rig> {
    let dir = tempfile::tempdir().context("tempdir")?;
    let journal = switchyard_journal::file::FileJournal::open(dir.path().join("journal"))?;
    let journal: Arc<dyn Journal> = Arc::new(journal);
    let topic = TopicName::new("inventory.v1")?;
    journal
        .create_topic(
            &topic,
            TopicConfig {
                partitions: 4,
                durability: Durability::Os,
                ..TopicConfig::default()
            },
        )
        .await?;
    let store =
        switchyard_store::sqlite::SqliteStore::open(dir.path().join("store.sqlite")).await?;
    let store: Arc<dyn Store> = Arc::new(store);
    let file = dir.path().join("switchyard.toml");
    std::fs::write(&file, adapters)?;
    let connect = Connect::start(
        journal.clone(),
        store.clone(),
        ConnectOptions {
            config_file: Some(file),
            ..ConnectOptions::default()
        },
    )
    .await
    .map_err(|e| anyhow::anyhow!("{e}"))?;
    Ok(Rig {
        _dir: dir,
        journal,
        store,
        connect,
        topic,
    })
}

impl Rig {
    async fn publish(&self, id: &str, sku: u64) -> Result<()> {
        let key = format!("sku-{sku}");
        let event = json!({"specversion": "1.0", "id": id, "source": "/bench", "type": "stock.low",
            "partitionkey": key, "data": {"sku": sku, "qty": 5, "note": "x".repeat(128)}});
        let key = bytes::Bytes::from(key);
        let partition = self
            .journal
            .choose_partition(&self.topic, &PartitionChoice::Key(key.clone()))
            .await?;
        let record = Record {
            id: Some(id.to_owned()),
            key: Some(key),
            headers: Vec::new(),
            payload: serde_json::to_vec(&event)?.into(),
        };
        self.journal
            .append(&self.topic, partition, vec![record], None)
            .await?;
        Ok(())
    }

    async fn delivered(&self, adapter: &str) -> Result<u64> {
        Ok(self
            .store
            .message_counts(Some(adapter))
            .await?
            .into_iter()
            .filter(|c| c.state == MessageState::Delivered)
            .map(|c| c.count)
            .sum())
    }
}

fn adapter(name: &str, route: &str, url: &str, concurrency: u32) -> String {
    format!(
        r#"
[adapters.{name}]
topic = "inventory.v1"
route = "{route}"
mapping = "{{ITEM: (.data.sku | pad(6)), QTY: (.data.qty | quoted), NOTE: .data.note}}"
start = "earliest"
concurrency = {concurrency}
retry = {{ initial-backoff = "50ms", max-backoff = "1s", max-attempts = 1000 }}
writer = {{ kind = "http", url = "{url}/orders" }}
"#
    )
}

/// The `q` quantile of sorted values.
fn quantile(sorted: &[i64], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() - 1) as f64 * q).round() as usize;
    sorted[i.min(sorted.len() - 1)] as f64
}

/// Microseconds from `t0` to the vendor's receipt of its last request.
fn received_after(v: &FakeVendor, t0: Instant) -> Result<i64> {
    let at = v
        .last_received()
        .and_then(|r| r.at)
        .context("vendor timestamp")?;
    Ok(i64::try_from(at.saturating_duration_since(t0).as_micros())?)
}

struct Latency {
    /// Per message: through the gateway minus direct (p50, p99).
    paired: (f64, f64),
    direct: (f64, f64),
    gateway: (f64, f64),
}

async fn added_latency(events: usize) -> Result<Latency> {
    let vendor = FakeVendor::start_local().await?;
    let r = rig(&adapter("bakery", "true", &vendor.url(), 4)).await?;
    let client = reqwest::Client::new();
    let body = r#"{"ITEM":"000001","NOTE":"x","QTY":"5"}"#;
    let limit = Duration::from_secs(10);
    let (mut direct, mut gateway, mut added) = (Vec::new(), Vec::new(), Vec::new());
    // The first 20 rounds warm up (connections, caches).
    for i in 0..events + 20 {
        // Direct: the same request, straight to the vendor.
        let n = vendor.received_count();
        let t0 = Instant::now();
        client
            .post(format!("{}/orders", vendor.url()))
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await?;
        anyhow::ensure!(vendor.wait_received(n + 1, limit).await, "direct call lost");
        let d = received_after(&vendor, t0)?;
        // Through the gateway: from the append call.
        let t0 = Instant::now();
        r.publish(&format!("lat-{i}"), i as u64).await?;
        anyhow::ensure!(
            vendor.wait_received(n + 2, limit).await,
            "the gateway did not send event {i} within {limit:?}"
        );
        let g = received_after(&vendor, t0)?;
        if i >= 20 {
            direct.push(d);
            gateway.push(g);
            added.push(g - d);
        }
        if i % 64 == 0 {
            vendor.clear();
        }
    }
    r.connect.shutdown().await;
    for v in [&mut direct, &mut gateway, &mut added] {
        v.sort_unstable();
    }
    let pq = |v: &[i64]| (quantile(v, 0.5), quantile(v, 0.99));
    Ok(Latency {
        paired: pq(&added),
        direct: pq(&direct),
        gateway: pq(&gateway),
    })
}

/// How vendor A misbehaves while B's throughput is measured.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum AState {
    Up,
    /// Connections refused.
    Down,
    /// Never answers: every attempt runs into A's timeout (250 ms).
    Hangs,
    /// Answers 200 after 200 ms.
    Slow,
}

impl AState {
    fn name(self) -> &'static str {
        match self {
            Self::Up => "up",
            Self::Down => "down",
            Self::Hangs => "hangs",
            Self::Slow => "slow",
        }
    }
}

/// B's throughput (messages/s) draining `backlog` while A (as many) is in `a_state`.
async fn b_throughput(backlog: usize, a_state: AState) -> Result<f64> {
    let a = FakeVendor::start_local().await?;
    let b = FakeVendor::start_local().await?;
    a.set(match a_state {
        AState::Up => Behaviour::default(),
        AState::Down => Behaviour {
            mode: Mode::Down,
            ..Behaviour::default()
        },
        AState::Hangs => Behaviour {
            mode: Mode::Hang,
            ..Behaviour::default()
        },
        AState::Slow => Behaviour {
            latency_ms: 200,
            ..Behaviour::default()
        },
    });
    let a_adapter = adapter("vendor-a", ".data.sku % 2 == 0", &a.url(), 8)
        .replace("concurrency = 8", "concurrency = 8\ntimeout = \"250ms\"");
    let config = format!(
        "{a_adapter}{}",
        adapter("vendor-b", ".data.sku % 2 == 1", &b.url(), 8)
    );
    let r = rig(&config).await?;
    r.connect
        .set_state("vendor-b", switchyard_store::connect::LaneState::Paused)
        .await?;
    r.connect
        .set_state("vendor-a", switchyard_store::connect::LaneState::Paused)
        .await?;
    for i in 0..backlog * 2 {
        r.publish(&format!("iso-{i}"), i as u64).await?;
    }
    // Both lanes take the backlog in, then send it at once.
    let start = Instant::now();
    while r
        .store
        .message_counts(None)
        .await?
        .iter()
        .map(|c| c.count)
        .sum::<u64>()
        < (backlog * 2) as u64
    {
        anyhow::ensure!(start.elapsed() < Duration::from_secs(60), "intake too slow");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let t0 = Instant::now();
    r.connect
        .set_state("vendor-a", switchyard_store::connect::LaneState::Running)
        .await?;
    r.connect
        .set_state("vendor-b", switchyard_store::connect::LaneState::Running)
        .await?;
    // Timed to B's receipt of the last request (polling the store would take the
    // SQLite connection from the lanes); every one is then checked delivered.
    anyhow::ensure!(
        b.wait_received(backlog, Duration::from_secs(120)).await,
        "vendor B stalled at {} of {backlog}",
        b.received_count()
    );
    let rate = backlog as f64 / t0.elapsed().as_secs_f64();
    let deadline = Instant::now() + Duration::from_secs(60);
    while r.delivered("vendor-b").await? < backlog as u64 {
        anyhow::ensure!(Instant::now() < deadline, "B's messages not all delivered");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    anyhow::ensure!(
        b.received_count() == backlog,
        "vendor B got {} requests for {backlog} messages",
        b.received_count()
    );
    r.connect.shutdown().await;
    Ok(rate)
}

pub async fn run(args: Args) -> Result<()> {
    let quick = args.run.quick;
    let events = args
        .latency_events
        .unwrap_or(if quick { 300 } else { 2000 });
    let backlog = args.backlog.unwrap_or(if quick { 1000 } else { 4000 });
    let repeats = args.run.repeats.unwrap_or(if quick { 1 } else { 3 }).max(1);
    let note = |s: String| crate::report::say(args.run.json, &s);
    let l = added_latency(events).await?;
    let (p50, p99) = l.paired;
    note(format!(
        "added-latency: {events} events, each paired with a direct call just before it; \
         journal durability os, message store on (SQLite). Direct p50 {:.0} us, p99 {:.0} us; \
         through the gateway p50 {:.0} us, p99 {:.0} us; added per message p50 {p50:.0} us, \
         p99 {p99:.0} us (target p99 <= 1000 us)",
        l.direct.0, l.direct.1, l.gateway.0, l.gateway.1
    ));
    if args.run.json {
        println!(
            "{}",
            json!({"suite": "connect", "case": "added-latency", "p50_us": p50, "p99_us": p99})
        );
    }
    let variants = [AState::Down, AState::Hangs, AState::Slow];
    let mut ratios: Vec<Vec<f64>> = vec![Vec::new(); variants.len()];
    for rep in 0..repeats {
        let up = b_throughput(backlog, AState::Up).await?;
        for (i, v) in variants.iter().enumerate() {
            let other = b_throughput(backlog, *v).await?;
            note(format!(
                "isolation (repeat {}): vendor B drains {backlog} messages at {up:.0}/s with A \
                 up, {other:.0}/s with A {}: ratio {:.3}",
                rep + 1,
                v.name(),
                other / up
            ));
            ratios[i].push(other / up);
        }
    }
    for (v, r) in variants.iter().zip(ratios) {
        let ratio = crate::report::median(r);
        note(format!(
            "isolation, A {}: ratio {ratio:.3} (median; target >= 0.95)",
            v.name()
        ));
        if args.run.json {
            let case = match v {
                AState::Down => "isolation".to_owned(),
                other => format!("isolation-a-{}", other.name()),
            };
            println!(
                "{}",
                json!({"suite": "connect", "case": case, "ratio": ratio})
            );
        }
    }
    Ok(())
}
