//! A subscription with `max-batch` above 1 gets its events in the CloudEvents batch mode:
//! several events per POST, at most one per partition key, each key's events in publish
//! order across batches; a failed batch is retried whole; a bad `max-batch` is refused.

mod common;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use bytes::Bytes;
use common::{Server, event};
use serde_json::{Value, json};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// One POST: its content type and the (id, partition key) of each event it carried.
type Post = (String, Vec<(String, String)>);

#[derive(Default)]
struct Sink {
    posts: Mutex<Vec<Post>>,
    failed_once: Mutex<bool>,
}

async fn receive(State(s): State<Arc<Sink>>, headers: HeaderMap, body: Bytes) -> StatusCode {
    let ct = headers
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let events: Vec<Value> = serde_json::from_slice(&body).unwrap_or_default();
    let carried: Vec<(String, String)> = events
        .iter()
        .map(|e| {
            (
                e["id"].as_str().unwrap_or("?").to_string(),
                e["partitionkey"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect();
    let flaky = carried.iter().any(|(id, _)| id == "e-7");
    s.posts.lock().expect("lock").push((ct, carried));
    let mut failed = s.failed_once.lock().expect("lock");
    if flaky && !*failed {
        *failed = true;
        return StatusCode::INTERNAL_SERVER_ERROR;
    }
    StatusCode::NO_CONTENT
}

#[tokio::test]
async fn batches_carry_one_event_per_key_in_order_and_are_retried_whole() {
    let sink = Arc::new(Sink::default());
    let app = axum::Router::new()
        .route("/hook", axum::routing::post(receive))
        .with_state(sink.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let url = format!("http://{}/hook", listener.local_addr().expect("addr"));
    tokio::spawn(async move { axum::serve(listener, app).await });

    let bus = switchyard_bus::BusOptions {
        push_timeout: Duration::from_secs(2),
        poll: Duration::from_millis(20),
        ..Default::default()
    };
    let s = Server::with_bus(Default::default(), bus).await;
    s.topic("orders.v1", json!({"partitions": 1})).await;
    for bad in [0, 1001] {
        let r = s
            .client
            .put(s.url("/v1/subscriptions/bad"))
            .json(&json!({"topics": ["orders.v1"], "endpoint": url, "max-batch": bad}))
            .send()
            .await
            .expect("put");
        assert_eq!(r.status(), 400, "max-batch {bad}");
        let p: Value = r.json().await.expect("problem");
        assert!(p.to_string().contains("max-batch"), "{p}");
    }
    // Published before the subscription exists: a backlog, read in one go.
    let mut published = Vec::new();
    for i in 0..40 {
        let id = format!("e-{i}");
        let key = format!("k{}", i % 5);
        let mut e = event(&id, "x", json!({"i": i}));
        e["partitionkey"] = json!(key);
        let (st, _) = s.publish("orders.v1", &e).await;
        assert_eq!(st, 200);
        published.push((id, key));
    }
    let r = s
        .client
        .put(s.url("/v1/subscriptions/batched"))
        .json(&json!({
            "topics": ["orders.v1"], "endpoint": url, "max-batch": 8,
            "retry": {"initial-backoff-ms": 20, "max-backoff-ms": 100, "max-attempts": 5,
                      "max-age-ms": 60000, "multiplier": 2.0, "jitter": 0.1}
        }))
        .send()
        .await
        .expect("put");
    assert_eq!(r.status(), 201);

    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (_, v) = s.get("/v1/subscriptions/batched").await;
        if v["in-flight"] == json!(0) && v["partitions"][0]["lag"] == json!(0) {
            assert_eq!(v["parked"], json!(0), "{v}");
            break;
        }
        assert!(Instant::now() < deadline, "did not settle: {v}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let posts = sink.posts.lock().expect("lock").clone();
    assert!(
        posts
            .iter()
            .all(|(ct, _)| ct == "application/cloudevents-batch+json")
    );
    assert!(posts.iter().all(|(_, evs)| (1..=8).contains(&evs.len())));
    assert!(
        posts.iter().any(|(_, evs)| evs.len() > 1),
        "a backlog goes out in batches"
    );
    for (_, evs) in &posts {
        let mut keys: Vec<&str> = evs.iter().map(|(_, k)| k.as_str()).collect();
        keys.sort();
        keys.dedup();
        assert_eq!(
            keys.len(),
            evs.len(),
            "one event per key in a batch: {evs:?}"
        );
    }
    // The failed batch came again, whole; then every event got through, each key in order.
    let failed = posts
        .iter()
        .position(|(_, evs)| evs.iter().any(|(id, _)| id == "e-7"))
        .expect("e-7 was pushed");
    let again = posts[failed + 1..]
        .iter()
        .find(|(_, evs)| evs.iter().any(|(id, _)| id == "e-7"))
        .expect("e-7 was pushed again");
    for (id, _) in &posts[failed].1 {
        assert!(
            again.1.iter().any(|(a, _)| a == id),
            "{id} retried with its batch"
        );
    }
    for k in 0..5 {
        let key = format!("k{k}");
        let expected: Vec<&str> = published
            .iter()
            .filter(|(_, kk)| *kk == key)
            .map(|(id, _)| id.as_str())
            .collect();
        let mut got: Vec<&str> = Vec::new();
        for (_, evs) in &posts {
            for (id, kk) in evs {
                if *kk == key && got.last() != Some(&id.as_str()) && !got.contains(&id.as_str()) {
                    got.push(id);
                }
            }
        }
        assert_eq!(got, expected, "key {key}");
    }
}
