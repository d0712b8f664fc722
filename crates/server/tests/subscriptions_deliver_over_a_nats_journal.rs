//! Push subscriptions over the NATS JetStream journal (a private nats-server): every event
//! is delivered, a failing one is retried, each key's events arrive in publish order, events
//! published after the subscription went idle wake it, and its lag reaches 0 although the
//! partitions' offsets have gaps (they are the stream's sequence).

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use serde_json::{Value, json};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use switchyard_journal::nats::{NatsJournal, NatsOptions};
use switchyard_journal::nats_server::{self, NatsServer, Sync};

#[derive(Default)]
struct Sink {
    /// (id, partition key) of every 2xx answer, in arrival order.
    delivered: Mutex<Vec<(String, String)>>,
    attempts: Mutex<HashMap<String, u32>>,
}

/// `flaky-*` fails its first attempt with 500; the rest are accepted.
async fn receive(State(s): State<Arc<Sink>>, headers: HeaderMap) -> StatusCode {
    let h = |n: &str| {
        headers
            .get(n)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string()
    };
    let id = h("ce-id");
    let attempt = {
        let mut a = s.attempts.lock().expect("lock");
        let n = a.entry(id.clone()).or_default();
        *n += 1;
        *n
    };
    if id.starts_with("flaky-") && attempt == 1 {
        return StatusCode::INTERNAL_SERVER_ERROR;
    }
    s.delivered
        .lock()
        .expect("lock")
        .push((id, h("ce-partitionkey")));
    StatusCode::OK
}

fn events(prefix: &str, n: usize) -> Vec<Value> {
    (0..n)
        .map(|i| {
            let id = if i % 9 == 4 {
                format!("flaky-{prefix}-{i:03}")
            } else {
                format!("{prefix}-{i:03}")
            };
            json!({"specversion": "1.0", "id": id, "source": "/t", "type": "t.happened",
                   "partitionkey": format!("key-{}", i % 6), "data": {"i": i}})
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscriptions_deliver_over_a_nats_journal() {
    let Some(bin) = nats_server::for_test("subscriptions_deliver_over_a_nats_journal") else {
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let nats = NatsServer::start(&bin, &dir.path().join("nats"), Sync::Always)
        .await
        .expect("nats-server");
    let options = NatsOptions::from_url(&format!("{}?sync=always", nats.url)).expect("url");
    let journal: Arc<dyn switchyard_journal::Journal> =
        Arc::new(NatsJournal::connect(options).await.expect("connect"));
    let store = switchyard_store::sqlite::SqliteStore::open(dir.path().join("store.sqlite"))
        .await
        .expect("store");
    let bus = switchyard_bus::Bus::start(journal.clone(), Arc::new(store), Default::default())
        .await
        .expect("bus");

    let sink = Arc::new(Sink::default());
    let app = axum::Router::new()
        .route("/hook", axum::routing::post(receive))
        .with_state(sink.clone());
    let hook_listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let hook = format!("http://{}/hook", hook_listener.local_addr().expect("addr"));
    tokio::spawn(async move { axum::serve(hook_listener, app).await });

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let base = format!("http://{}", listener.local_addr().expect("addr"));
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(switchyard_server::serve(
        listener,
        journal,
        switchyard_server::Options {
            bus: Some(bus.clone()),
            ..Default::default()
        },
        async {
            let _ = stopped.await;
        },
    ));
    let c = reqwest::Client::new();
    let r = c
        .put(format!("{base}/v1/topics/orders.v1"))
        .json(&json!({"partitions": 3}))
        .send()
        .await
        .expect("topic");
    assert_eq!(r.status(), 201, "{}", r.text().await.unwrap_or_default());
    let r = c
        .put(format!("{base}/v1/subscriptions/sink"))
        .json(
            &json!({"topics": ["orders.v1"], "endpoint": hook, "concurrency": 8,
                      "retry": {"initial-backoff-ms": 20, "max-backoff-ms": 100}}),
        )
        .send()
        .await
        .expect("subscription");
    assert!(
        r.status().is_success(),
        "{}",
        r.text().await.unwrap_or_default()
    );

    let mut published = Vec::new();
    for (wave, n) in [("a", 60), ("b", 30)] {
        let batch = events(wave, n);
        let r = c
            .post(format!("{base}/v1/topics/orders.v1/events"))
            .header("content-type", "application/cloudevents-batch+json")
            .body(Value::Array(batch.clone()).to_string())
            .send()
            .await
            .expect("publish");
        assert_eq!(r.status(), 200, "{}", r.text().await.unwrap_or_default());
        published.extend(batch);
        wait_until(&sink, published.len()).await;
        // The second wave comes once the subscription has gone idle: tails must wake.
        tokio::time::sleep(Duration::from_millis(300)).await;
    }

    let delivered = sink.delivered.lock().expect("lock").clone();
    let mut by_key: HashMap<String, Vec<String>> = HashMap::new();
    for (id, key) in &delivered {
        by_key.entry(key.clone()).or_default().push(id.clone());
    }
    for e in &published {
        let id = e["id"].as_str().unwrap_or("");
        assert!(delivered.iter().any(|(d, _)| d == id), "{id} delivered");
    }
    for (key, ids) in &by_key {
        let want: Vec<String> = published
            .iter()
            .filter(|e| e["partitionkey"] == key.as_str())
            .map(|e| e["id"].as_str().unwrap_or("").to_string())
            .collect();
        let mut seen = ids.clone();
        seen.dedup();
        assert_eq!(seen, want, "{key}'s events in publish order");
    }

    // Lag 0 on every partition, nothing in flight.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let v: Value = c
            .get(format!("{base}/v1/subscriptions/sink"))
            .send()
            .await
            .expect("get")
            .json()
            .await
            .expect("json");
        let lag: u64 = v["partitions"]
            .as_array()
            .map(|ps| ps.iter().filter_map(|p| p["lag"].as_u64()).sum())
            .unwrap_or(u64::MAX);
        if lag == 0 && v["in-flight"] == 0 {
            break;
        }
        assert!(Instant::now() < deadline, "lag stays {lag}: {v}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let _ = stop.send(());
    let _ = server.await;
    bus.shutdown().await;
}

async fn wait_until(sink: &Sink, n: usize) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let got = sink.delivered.lock().expect("lock").len();
        if got >= n {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{got} of {n} delivered within 30 s"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
