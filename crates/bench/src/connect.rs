//! `switchyard-bench connect`: what the integration gateway costs and how well its lanes
//! isolate vendors, in process (file journal, SQLite message store, fake vendors on
//! loopback).
//!
//! - **added-latency**: one event at a time, the time from its append being acknowledged to
//!   the vendor receiving the request (intake, mapping, the message store's intake commit,
//!   the sender, the HTTP call), against the time from sending the same request directly to
//!   the vendor receiving it. p50 and p99 of the difference of the two distributions.
//! - **isolation**: vendor B's throughput draining a backlog while vendor A (same topic,
//!   its own lane, as many messages) is down, divided by B's throughput while A is up.

use crate::run::RunArgs;
use anyhow::{Context as _, Result};
use hdrhistogram::Histogram;
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

async fn wait_received(v: &FakeVendor, n: usize, limit: Duration) -> Result<()> {
    let start = Instant::now();
    while v.received().len() < n {
        anyhow::ensure!(
            start.elapsed() < limit,
            "the vendor got {} of {n}",
            v.received().len()
        );
        tokio::time::sleep(Duration::from_micros(200)).await;
    }
    Ok(())
}

fn hist() -> Result<Histogram<u64>> {
    Histogram::new_with_bounds(1, 60_000_000, 3).context("histogram")
}

async fn added_latency(events: usize) -> Result<(f64, f64, f64, f64)> {
    let vendor = FakeVendor::start_local().await?;
    let r = rig(&adapter("bakery", "true", &vendor.url(), 4)).await?;
    // Direct: the same request, straight to the vendor.
    let client = reqwest::Client::new();
    let body = r#"{"ITEM":"000001","NOTE":"x","QTY":"5"}"#;
    let mut direct = hist()?;
    for i in 0..events + 20 {
        let before = vendor.received().len();
        let t0 = Instant::now();
        client
            .post(format!("{}/orders", vendor.url()))
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await?;
        let got = vendor.received();
        let at = got
            .get(before)
            .and_then(|r| r.at)
            .context("vendor timestamp")?;
        if i >= 20 {
            direct.record(u64::try_from(at.duration_since(t0).as_micros())?.max(1))?;
        }
    }
    vendor.clear();
    // Through the gateway, one event at a time (the first 20 warm it up).
    let mut gateway = hist()?;
    for i in 0..events + 20 {
        let before = vendor.received().len();
        r.publish(&format!("lat-{i}"), i as u64).await?;
        let t0 = Instant::now();
        wait_received(&vendor, before + 1, Duration::from_secs(10)).await?;
        let at = vendor.received()[before].at.context("vendor timestamp")?;
        if i >= 20 {
            gateway.record(u64::try_from(at.saturating_duration_since(t0).as_micros())?.max(1))?;
        }
    }
    r.connect.shutdown().await;
    let q = |h: &Histogram<u64>, p: f64| h.value_at_quantile(p) as f64;
    Ok((
        q(&gateway, 0.5) - q(&direct, 0.5),
        q(&gateway, 0.99) - q(&direct, 0.99),
        q(&direct, 0.5),
        q(&gateway, 0.5),
    ))
}

/// B's throughput (messages/s) draining `backlog` while A (as many) is up or down.
async fn b_throughput(backlog: usize, a_down: bool) -> Result<f64> {
    let a = FakeVendor::start_local().await?;
    let b = FakeVendor::start_local().await?;
    if a_down {
        a.set(Behaviour {
            mode: Mode::Down,
            ..Behaviour::default()
        });
    }
    let config = format!(
        "{}{}",
        adapter("vendor-a", ".data.sku % 2 == 0", &a.url(), 8),
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
    while r.delivered("vendor-b").await? < backlog as u64 {
        anyhow::ensure!(t0.elapsed() < Duration::from_secs(120), "vendor B stalled");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let rate = backlog as f64 / t0.elapsed().as_secs_f64();
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
    let note = |s: String| {
        if args.run.json {
            eprintln!("{s}");
        } else {
            println!("{s}");
        }
    };
    let (p50, p99, direct50, gateway50) = added_latency(events).await?;
    note(format!(
        "added-latency: {events} events one at a time, journal durability os, message store on \
         (SQLite): direct call p50 {direct50:.0} us, through the gateway p50 {gateway50:.0} us; \
         added p50 {p50:.0} us, p99 {p99:.0} us (target p99 <= 1000 us)"
    ));
    if args.run.json {
        println!(
            "{}",
            json!({"suite": "connect", "case": "added-latency", "p50_us": p50, "p99_us": p99})
        );
    }
    let mut ratios = Vec::new();
    for rep in 0..repeats {
        let up = b_throughput(backlog, false).await?;
        let down = b_throughput(backlog, true).await?;
        note(format!(
            "isolation (repeat {}): vendor B drains {backlog} messages at {up:.0}/s with A up, \
             {down:.0}/s with A down: ratio {:.3}",
            rep + 1,
            down / up
        ));
        ratios.push(down / up);
    }
    let ratio = crate::report::median(ratios);
    note(format!(
        "isolation: ratio {ratio:.3} (median; target >= 0.95)"
    ));
    if args.run.json {
        println!(
            "{}",
            json!({"suite": "connect", "case": "isolation", "ratio": ratio})
        );
    }
    Ok(())
}
