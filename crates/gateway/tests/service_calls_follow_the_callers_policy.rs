//! Service-to-service calls on the gateway itself: retries only for idempotent methods (or
//! an `Idempotency-Key`), the circuit opening after repeated failures, and `queue` putting
//! the call in its topic as a CloudEvent.

mod common;
use common::*;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;
use switchyard_gateway::{CALLER_HEADER, GatewayOptions};
use switchyard_journal::Journal as _;
use switchyard_manifest::{Dependency, DependencyKind, OnFailure};

/// Answers 503 to the first `fail_first` requests, then 200; counts them all.
async fn flaky(fail_first: u32) -> (String, Arc<AtomicU32>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("test step");
    let url = format!("http://{}", listener.local_addr().expect("test step"));
    let hits = Arc::new(AtomicU32::new(0));
    let h = hits.clone();
    let app = axum::Router::new().fallback(move || {
        let n = h.fetch_add(1, Ordering::SeqCst);
        async move {
            if n < fail_first {
                (axum::http::StatusCode::SERVICE_UNAVAILABLE, "busy")
            } else {
                (axum::http::StatusCode::OK, "fine")
            }
        }
    });
    tokio::spawn(async move { axum::serve(listener, app).await.expect("test step") });
    (url, hits)
}

fn deps(entries: &[(&str, DependencyKind, OnFailure)]) -> switchyard_gateway::Dependencies {
    let mut of_caller = BTreeMap::new();
    for (to, kind, on_failure) in entries {
        of_caller.insert(
            to.to_string(),
            Dependency {
                kind: *kind,
                on_failure: on_failure.clone(),
            },
        );
    }
    BTreeMap::from([("caller".to_string(), of_caller)])
}

#[tokio::test]
async fn retries_are_for_idempotent_calls_and_the_circuit_opens() {
    let dir = tempfile::tempdir().unwrap();
    let (retried_url, retried) = flaky(2).await;
    let (dead_url, dead) = flaky(u32::MAX).await;
    let retry = OnFailure::Retry {
        attempts: 3,
        timeout: Duration::from_secs(2),
        backoff: Duration::from_millis(5),
    };
    let mut services = switchyard_gateway::Services::new();
    services.insert("retried".into(), vec![retried_url]);
    services.insert("dead".into(), vec![dead_url.clone()]);
    let options = GatewayOptions {
        services,
        dependencies: deps(&[
            ("retried", DependencyKind::Sync, retry.clone()),
            ("dead", DependencyKind::Sync, OnFailure::Fail),
        ]),
        ..Default::default()
    };
    let gw = Running::start(dir.path(), options).await;
    let c = client();
    // GET: tried three times, the third answers.
    let r = c
        .get(format!("{}/v1/call/retried/x", gw.url))
        .header(CALLER_HEADER, "caller")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.text().await.unwrap(), "fine");
    assert_eq!(retried.load(Ordering::SeqCst), 3);
    // POST without an Idempotency-Key: one try only. (The upstream answers now; count it.)
    retried.store(0, Ordering::SeqCst);
    let (once_url, once) = flaky(1).await;
    gw.gateway.set_services({
        let mut s = switchyard_gateway::Services::new();
        s.insert("retried".into(), vec![once_url]);
        s.insert("dead".into(), vec![dead_url]);
        s
    });
    let r = c
        .post(format!("{}/v1/call/retried/x", gw.url))
        .header(CALLER_HEADER, "caller")
        .body("pay")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 503);
    let v: serde_json::Value = r.json().await.unwrap();
    assert_eq!(
        (v["code"].as_str(), v["tries"].as_u64()),
        (Some("dependency-unavailable"), Some(1))
    );
    assert_eq!(once.load(Ordering::SeqCst), 1);
    // With an Idempotency-Key it is retried.
    let r = c
        .post(format!("{}/v1/call/retried/x", gw.url))
        .header(CALLER_HEADER, "caller")
        .header("idempotency-key", "k1")
        .body("pay")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(once.load(Ordering::SeqCst), 2);

    // `dead` fails every call: after five in a row the circuit answers without trying.
    for _ in 0..5 {
        let r = c
            .get(format!("{}/v1/call/dead/x", gw.url))
            .header(CALLER_HEADER, "caller")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 503);
    }
    assert_eq!(dead.load(Ordering::SeqCst), 5);
    let r = c
        .get(format!("{}/v1/call/dead/x", gw.url))
        .header(CALLER_HEADER, "caller")
        .send()
        .await
        .unwrap();
    let v: serde_json::Value = r.json().await.unwrap();
    assert!(
        v["detail"].as_str().unwrap().contains("circuit is open"),
        "{v}"
    );
    assert_eq!(dead.load(Ordering::SeqCst), 5, "not forwarded while open");
    gw.stop().await;
}

#[tokio::test]
async fn a_queued_call_is_a_cloudevent_in_its_topic() {
    let dir = tempfile::tempdir().unwrap();
    let topic = switchyard_journal::TopicName::new("calls.v1").unwrap();
    let options = GatewayOptions {
        // No address for `notify`: it is down.
        dependencies: deps(&[(
            "notify",
            DependencyKind::Async,
            OnFailure::Queue {
                topic: topic.clone(),
            },
        )]),
        ..Default::default()
    };
    let gw = Running::start(dir.path(), options).await;
    gw.journal
        .create_topic(
            &topic,
            switchyard_journal::TopicConfig {
                partitions: 2,
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let c = client();
    let r = c
        .post(format!("{}/v1/call/notify/mail?to=ann", gw.url))
        .header(CALLER_HEADER, "caller")
        .body("hello")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    let v: serde_json::Value = r.json().await.unwrap();
    let partition = v["partition"].as_u64().unwrap() as u32;
    let batch = gw
        .journal
        .read(
            &topic,
            partition,
            0,
            switchyard_journal::ReadLimits::default(),
        )
        .await
        .unwrap();
    assert_eq!(batch.records.len(), 1);
    let record = &batch.records[0];
    assert_eq!(record.key.as_deref(), Some(&b"caller->notify"[..]));
    let event: serde_json::Value = serde_json::from_slice(&record.payload).unwrap();
    assert_eq!(event["type"], "switchyard.queued-call");
    assert_eq!(event["data"]["method"], "POST");
    assert_eq!(event["data"]["path"], "/mail?to=ann");
    assert_eq!(event["data"]["body-base64"], "aGVsbG8=");
    gw.stop().await;
}
