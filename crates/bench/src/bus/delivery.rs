//! Publish-to-push-delivery latency: single events published over HTTP at a steady rate
//! (open loop, durability `always`), pushed by a subscription to an HTTP subscriber in this
//! process; the latency of each event runs from just before its POST to its arrival at the
//! subscriber.

use super::backend::{self, JournalArg};
use super::store::{self, StoreArg};
use crate::load::{Load, Measured, cpu_seconds};
use anyhow::{Context as _, Result, bail};
use hdrhistogram::Histogram;
use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use switchyard_journal::Durability;
use switchyard_journal::nats_server::NatsBinary;

const TOPIC: &str = "bench.delivery.v1";

#[derive(Default)]
struct Clock {
    /// Send time of each event id published inside the measured window.
    sent: Mutex<HashMap<String, Instant>>,
    latency_ns: Mutex<Option<Histogram<u64>>>,
    /// POST-to-answer of the same events: the publish (journal fsync included) alone.
    publish_ns: Mutex<Option<Histogram<u64>>>,
    delivered: Mutex<u64>,
}

/// What one delivery run measured: the delivery latencies, and the publish part of them.
pub struct DeliveryRun {
    pub measured: Measured,
    pub publish_ns: Histogram<u64>,
}

async fn receive(
    axum::extract::State(clock): axum::extract::State<Arc<Clock>>,
    headers: axum::http::HeaderMap,
) -> axum::http::StatusCode {
    let now = Instant::now();
    let id = headers
        .get("ce-id")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    if let Some(sent) = clock
        .sent
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .remove(id)
    {
        if let Some(h) = clock
            .latency_ns
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_mut()
        {
            let _ = h.record((now - sent).as_nanos().max(1) as u64);
        }
        *clock.delivered.lock().unwrap_or_else(|e| e.into_inner()) += 1;
    }
    axum::http::StatusCode::NO_CONTENT
}

/// One repeat at `rate` events/s: warm up for `load.warmup`, measure events sent during
/// `load.measure`, then wait (up to 30 s) for every measured event to arrive.
pub async fn run_once(
    base: &Path,
    journal: &JournalArg,
    store_arg: &StoreArg,
    bin: Option<&NatsBinary>,
    rate: u32,
    payload: usize,
    load: Load,
) -> Result<DeliveryRun> {
    let dir = tempfile::Builder::new()
        .prefix("switchyard-bench-delivery-")
        .tempdir_in(base)
        .with_context(|| format!("creating a temporary directory in {}", base.display()))?;
    let opened = backend::open(journal, base, bin, Durability::Always, TOPIC).await?;
    let topic = opened.topic.to_string();
    let server_pid = opened.server_pid;
    let store = store::Opened::open(store_arg, dir.path()).await?;
    // A name of this repeat's own: a shared PostgreSQL store may hold earlier runs' rows.
    let subscription = format!(
        "bench-{}-{:x}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0)
    );
    let shared = opened.journal.clone();
    let bus = switchyard_bus::Bus::start(shared.clone(), store.shared(), Default::default())
        .await
        .context("starting the subscriptions")?;

    let clock = Arc::new(Clock::default());
    let app = axum::Router::new()
        .route("/hook", axum::routing::post(receive))
        .with_state(clock.clone());
    let hook_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let hook = format!("http://{}/hook", hook_listener.local_addr()?);
    let hook_task = tokio::spawn(async move { axum::serve(hook_listener, app).await });

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let api = format!("http://{}", listener.local_addr()?);
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(switchyard_server::serve(
        listener,
        shared,
        switchyard_server::Options {
            bus: Some(bus.clone()),
            ..Default::default()
        },
        async {
            let _ = stopped.await;
        },
    ));

    let client = reqwest::Client::builder()
        .tcp_nodelay(true)
        .build()
        .context("building the HTTP client")?;
    let put = |path: String, body: serde_json::Value| {
        client.put(format!("{api}{path}")).json(&body).send()
    };
    let r = put(
        format!("/v1/topics/{topic}"),
        serde_json::json!({"durability": "always"}),
    )
    .await?;
    if !r.status().is_success() {
        bail!("creating the topic answered {}", r.status());
    }
    let r = put(
        format!("/v1/subscriptions/{subscription}"),
        serde_json::json!({"topics": [topic], "endpoint": hook, "concurrency": 16}),
    )
    .await?;
    if !r.status().is_success() {
        bail!("creating the subscription answered {}", r.status());
    }

    let data = "x".repeat(payload);
    let url = format!("{api}/v1/topics/{topic}/events");
    let period = Duration::from_secs_f64(1.0 / f64::from(rate.max(1)));
    let mut tick = tokio::time::interval(period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let started = Instant::now();
    let (measure_from, measure_to) = (started + load.warmup, started + load.warmup + load.measure);
    let mut measured_sent = 0u64;
    let mut cpu_at_start = None;
    let mut seq = 0u64;
    let mut publishes = tokio::task::JoinSet::new();
    loop {
        tick.tick().await;
        let now = Instant::now();
        if now >= measure_to {
            break;
        }
        let id = format!("d-{seq}");
        seq += 1;
        if now >= measure_from {
            if cpu_at_start.is_none() {
                cpu_at_start = cpu_seconds(server_pid).map(|c| (c, Instant::now()));
                *clock.latency_ns.lock().unwrap_or_else(|e| e.into_inner()) =
                    Some(Histogram::new_with_bounds(1, 600_000_000_000, 3)?);
                *clock.publish_ns.lock().unwrap_or_else(|e| e.into_inner()) =
                    Some(Histogram::new_with_bounds(1, 600_000_000_000, 3)?);
            }
            clock
                .sent
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(id.clone(), Instant::now());
            measured_sent += 1;
        }
        let body = format!(
            r#"{{"specversion":"1.0","id":"{id}","source":"/bench","type":"bench.delivered","datacontenttype":"text/plain","data":"{data}"}}"#
        );
        let req = client
            .post(&url)
            .header("content-type", "application/cloudevents+json")
            .body(body)
            .send();
        let (clock2, measured) = (clock.clone(), now >= measure_from);
        let start = Instant::now();
        publishes.spawn(async move {
            let r = req.await?;
            if !r.status().is_success() {
                bail!("publish answered {}", r.status());
            }
            if measured
                && let Some(h) = clock2
                    .publish_ns
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .as_mut()
            {
                let _ = h.record(start.elapsed().as_nanos().max(1) as u64);
            }
            Ok(())
        });
        while let Some(done) = publishes.try_join_next() {
            done.context("a publish task panicked")??;
        }
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    while *clock.delivered.lock().unwrap_or_else(|e| e.into_inner()) < measured_sent {
        if Instant::now() > deadline {
            bail!(
                "only {} of {measured_sent} measured events were delivered within 30 s",
                clock.delivered.lock().unwrap_or_else(|e| e.into_inner())
            );
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    while let Some(done) = publishes.join_next().await {
        done.context("a publish task panicked")??;
    }
    let cpu_cores = match (cpu_at_start, cpu_seconds(server_pid)) {
        (Some((c0, t0)), Some(c1)) => (c1 - c0) / t0.elapsed().as_secs_f64(),
        _ => f64::NAN,
    };
    let latency_ns = clock
        .latency_ns
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .take()
        .context("nothing was measured")?;

    let _ = stop.send(());
    let _ = tokio::time::timeout(Duration::from_secs(30), server).await;
    bus.shutdown().await;
    store.close(&subscription).await?;
    hook_task.abort();
    opened.close().await?;
    let publish_ns = clock
        .publish_ns
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .take()
        .context("no publish was measured")?;
    Ok(DeliveryRun {
        measured: Measured {
            events: measured_sent,
            seconds: load.measure.as_secs_f64(),
            latency_ns,
            cpu_cores,
        },
        publish_ns,
    })
}
