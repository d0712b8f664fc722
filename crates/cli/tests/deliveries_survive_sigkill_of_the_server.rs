//! SIGKILL `switchyard serve` while it pushes events to a slow, flaky subscriber, start it
//! again on the same data directory: every published event ends delivered at least once
//! (or parked), none is lost, and the subscription's state came back from the store.

mod common;
use common::*;
use std::collections::HashSet;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

#[derive(Default)]
struct Seen {
    ok: Mutex<HashSet<String>>,
    requests: Mutex<u64>,
}

/// Slow (20 ms per request) and flaky (every 4th request is a 500).
async fn hook(
    axum::extract::State(seen): axum::extract::State<Arc<Seen>>,
    headers: axum::http::HeaderMap,
) -> axum::http::StatusCode {
    tokio::time::sleep(Duration::from_millis(20)).await;
    let n = {
        let mut r = seen.requests.lock().expect("lock");
        *r += 1;
        *r
    };
    if n % 4 == 0 {
        return axum::http::StatusCode::INTERNAL_SERVER_ERROR;
    }
    let id = headers
        .get("ce-id")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    seen.ok.lock().expect("lock").insert(id);
    axum::http::StatusCode::OK
}

#[test]
fn deliveries_resume_after_sigkill() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let seen = Arc::new(Seen::default());
    let hook_url = rt.block_on(async {
        let app = axum::Router::new()
            .route("/hook", axum::routing::post(hook))
            .with_state(seen.clone());
        let l = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let url = format!("http://{}/hook", l.local_addr().expect("addr"));
        tokio::spawn(async move { axum::serve(l, app).await });
        url
    });
    let s = Scratch::new();
    let (mut server, base, _stderr) = start_server(s.data_str(), "127.0.0.1:0");
    let listen = base.trim_start_matches("http://").to_string();
    let n = 200;
    rt.block_on(async {
        let c = reqwest::Client::new();
        create_topic(&base, "jobs.v1", r#"{"partitions": 2}"#).await;
        let r = c
            .put(format!("{base}/v1/subscriptions/worker"))
            .json(&serde_json::json!({
                "topics": ["jobs.v1"], "endpoint": hook_url, "concurrency": 4,
                "retry": {"initial-backoff-ms": 10, "max-backoff-ms": 50, "max-attempts": 50,
                          "max-age-ms": 600000, "multiplier": 2.0, "jitter": 0.0}
            }))
            .send()
            .await
            .expect("subscription");
        assert_eq!(r.status(), 201, "{}", r.text().await.unwrap_or_default());
        let batch: Vec<serde_json::Value> = (0..n)
            .map(|i| {
                serde_json::json!({"specversion": "1.0", "id": format!("job-{i}"), "source": "/t",
                                   "type": "job.created", "partitionkey": format!("k{}", i % 7),
                                   "data": {"i": i}})
            })
            .collect();
        let r = c
            .post(format!("{base}/v1/topics/jobs.v1/events"))
            .header("content-type", "application/cloudevents-batch+json")
            .body(serde_json::Value::Array(batch).to_string())
            .send()
            .await
            .expect("publish");
        assert_eq!(r.status(), 200);
    });
    // Let delivery get going, then kill the server mid-way.
    let deadline = Instant::now() + Duration::from_secs(20);
    while seen.ok.lock().expect("lock").len() < 30 {
        assert!(Instant::now() < deadline, "delivery did not start");
        std::thread::sleep(Duration::from_millis(10));
    }
    server.kill().expect("SIGKILL");
    server.wait().expect("reap");
    let delivered_before = seen.ok.lock().expect("lock").len();
    assert!(delivered_before < n, "killed too late to prove anything");

    // Same data directory, same address (the subscriber does not care).
    let (mut server, base, _stderr2) = start_server(s.data_str(), &listen);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let status: serde_json::Value = rt.block_on(async {
            reqwest::get(format!("{base}/v1/subscriptions/worker"))
                .await
                .expect("status")
                .json()
                .await
                .expect("json")
        });
        let done = seen.ok.lock().expect("lock").len();
        if done == n && status["in-flight"] == serde_json::json!(0) {
            assert_eq!(status["parked"], serde_json::json!(0), "{status}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "after restart: {done}/{n} delivered; {status}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let ok = seen.ok.lock().expect("lock").clone();
    for i in 0..n {
        assert!(ok.contains(&format!("job-{i}")), "job-{i} was lost");
    }
    let _ = Command::new("kill")
        .args(["-TERM", &server.id().to_string()])
        .status();
    assert_eq!(server.wait().expect("wait").code(), Some(0));
}
