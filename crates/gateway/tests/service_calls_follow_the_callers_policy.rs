//! Service-to-service calls on the gateway itself: the caller proven by its call token (a
//! forged or missing one refused, the token never passed on), retries only for idempotent
//! methods (or an `Idempotency-Key`), the circuit opening after repeated failures, and
//! `queue` putting the call in its topic as a CloudEvent that only the gateway's own record
//! can make (a forged push is refused).

mod common;
use common::*;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;
use switchyard_gateway::{CALL_TOKEN_HEADER, CALLER_HEADER, GatewayOptions};
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

/// The call tokens of `caller` and `other` (a service that declares nothing).
fn tokens() -> switchyard_gateway::CallTokens {
    BTreeMap::from([
        (
            "caller".to_string(),
            "caller-token-0123456789abcdef".to_string(),
        ),
        (
            "other".to_string(),
            "other-token-0123456789abcdef".to_string(),
        ),
    ])
}

const TOKEN: &str = "caller-token-0123456789abcdef";

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
    BTreeMap::from([
        ("caller".to_string(), of_caller),
        ("other".to_string(), BTreeMap::new()),
    ])
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
        call_tokens: tokens(),
        ..Default::default()
    };
    let gw = Running::start(dir.path(), options).await;
    let c = client();
    // GET: tried three times, the third answers.
    let r = c
        .get(format!("{}/v1/call/retried/x", gw.url))
        .header(CALL_TOKEN_HEADER, TOKEN)
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
        .header(CALL_TOKEN_HEADER, TOKEN)
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
        .header(CALL_TOKEN_HEADER, TOKEN)
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
            .header(CALL_TOKEN_HEADER, TOKEN)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 503);
    }
    assert_eq!(dead.load(Ordering::SeqCst), 5);
    let r = c
        .get(format!("{}/v1/call/dead/x", gw.url))
        .header(CALL_TOKEN_HEADER, TOKEN)
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
        call_tokens: tokens(),
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
        .header(CALL_TOKEN_HEADER, TOKEN)
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
    assert!(
        !event.to_string().contains(TOKEN),
        "the call token is not stored: {event}"
    );

    // The push of that record (as the bus makes it) is taken: `notify` is still down, so
    // 503 for the bus to retry, not a refusal.
    let push = |partition: u32, sequence: u64, id: &str, data: serde_json::Value| {
        c.post(format!("{}/v1/queued-calls", gw.url))
            .header("ce-partition", partition.to_string())
            .header("ce-sequence", sequence.to_string())
            .header("ce-id", id)
            .json(&data)
            .send()
    };
    let id = event["id"].as_str().unwrap();
    let r = push(partition, record.offset, id, event["data"].clone())
        .await
        .unwrap();
    assert_eq!(r.status(), 503);
    // Forged pushes: no record named, another event's id, a record published from outside
    // (without the gateway's mark), a record that does not exist.
    let forged = |what: &'static str, r: reqwest::Response| async move {
        assert_eq!(r.status(), 403, "{what}");
        let v: serde_json::Value = r.json().await.unwrap();
        assert_eq!(v["code"], "forged-queued-call", "{what}: {v}");
    };
    let r = c
        .post(format!("{}/v1/queued-calls", gw.url))
        .json(&event["data"])
        .send()
        .await
        .unwrap();
    forged("no record named", r).await;
    let r = push(partition, record.offset, "other-id", event["data"].clone())
        .await
        .unwrap();
    forged("another id", r).await;
    let outside = gw
        .journal
        .append(
            &topic,
            partition,
            vec![switchyard_journal::Record::new(record.payload.clone())],
            None,
        )
        .await
        .unwrap();
    let r = push(partition, outside[0].offset, id, event["data"].clone())
        .await
        .unwrap();
    forged("published from outside", r).await;
    let r = push(partition, 999, id, event["data"].clone())
        .await
        .unwrap();
    forged("no such record", r).await;
    gw.stop().await;
}

#[tokio::test]
async fn the_caller_is_proven_by_its_token() {
    let dir = tempfile::tempdir().unwrap();
    let echo = Echo::start("dependency").await;
    let mut services = switchyard_gateway::Services::new();
    services.insert("dep".into(), vec![echo.url()]);
    let options = GatewayOptions {
        services,
        dependencies: deps(&[("dep", DependencyKind::Sync, OnFailure::Fail)]),
        call_tokens: tokens(),
        ..Default::default()
    };
    let gw = Running::start(dir.path(), options).await;
    let c = client();
    let call = |headers: &[(&str, &str)]| {
        let mut r = c.get(format!("{}/v1/call/dep/x", gw.url));
        for (n, v) in headers {
            r = r.header(*n, *v);
        }
        async move {
            let r = r.send().await.unwrap();
            let s = r.status().as_u16();
            (s, r.json::<serde_json::Value>().await.unwrap_or_default())
        }
    };
    // The token's service calls: the dependency learns who, and never sees the token.
    let (s, v) = call(&[(CALL_TOKEN_HEADER, TOKEN)]).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["headers"][CALLER_HEADER], "caller");
    assert!(v["headers"].get(CALL_TOKEN_HEADER).is_none(), "{v}");
    // The caller's own name beside its token is fine.
    let (s, _) = call(&[(CALL_TOKEN_HEADER, TOKEN), (CALLER_HEADER, "caller")]).await;
    assert_eq!(s, 200);
    // Forged: a name without a token, an unknown token, someone else's name.
    for (headers, status, code) in [
        (vec![(CALLER_HEADER, "caller")], 401, "missing-call-token"),
        (vec![], 401, "missing-call-token"),
        (
            vec![(CALL_TOKEN_HEADER, "caller-token-0123456789abcdeX")],
            401,
            "invalid-call-token",
        ),
        (
            vec![
                (CALL_TOKEN_HEADER, "other-token-0123456789abcdef"),
                (CALLER_HEADER, "caller"),
            ],
            403,
            "caller-mismatch",
        ),
        // `other` with its own token: it declares no dependency on `dep`.
        (
            vec![(CALL_TOKEN_HEADER, "other-token-0123456789abcdef")],
            403,
            "undeclared-dependency",
        ),
    ] {
        let (s, v) = call(&headers).await;
        assert_eq!(
            (s, v["code"].as_str()),
            (status, Some(code)),
            "{headers:?}: {v}"
        );
    }
    gw.stop().await;
}
