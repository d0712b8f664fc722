//! Fault injection (`switchyard chaos`) through the admin API: a `down` service gets its
//! callers' `on-failure` policies (fallback, degrade) and its routes a 502 marked as a fault,
//! nothing reaching it; `--status` makes it answer that status instead; `slow` adds its
//! delay (a route whose timeout is shorter gets 504); `flaky` fails about its fraction of
//! calls; `clear` and expiry take effect at once (injected failures do not open the
//! circuit). Bad faults are refused naming the field, and change nothing.

mod common;
use common::*;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};
use switchyard_gateway::{CALL_TOKEN_HEADER, GatewayOptions};
use switchyard_manifest::{Dependency, DependencyKind, OnFailure};

const TOKEN: &str = "caller-token-0123456789abcdef";

/// Answers 200 `{"from": name}` to everything; counts requests.
async fn upstream(name: &'static str) -> (String, Arc<AtomicU32>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("test step");
    let url = format!("http://{}", listener.local_addr().expect("test step"));
    let hits = Arc::new(AtomicU32::new(0));
    let h = hits.clone();
    let app = axum::Router::new().fallback(move || {
        h.fetch_add(1, Ordering::SeqCst);
        async move { axum::Json(serde_json::json!({ "from": name })) }
    });
    tokio::spawn(async move { axum::serve(listener, app).await.expect("test step") });
    (url, hits)
}

fn dependency(on_failure: OnFailure) -> Dependency {
    Dependency {
        kind: DependencyKind::Sync,
        on_failure,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn faults_meet_calls_and_routes_until_cleared_or_expired() {
    let dir = tempfile::tempdir().expect("test step");
    let (orders_url, orders_hits) = upstream("orders").await;
    let (payments_url, payments_hits) = upstream("payments").await;
    let mut services = switchyard_gateway::Services::new();
    services.insert("orders".into(), vec![orders_url]);
    services.insert("payments".into(), vec![payments_url]);
    let dependencies = BTreeMap::from([(
        "caller".to_string(),
        BTreeMap::from([
            (
                "orders".to_string(),
                dependency(OnFailure::Fallback {
                    status: 200,
                    body: "{\"stub\":true}".into(),
                    content_type: "application/json".into(),
                }),
            ),
            (
                "payments".to_string(),
                dependency(OnFailure::Degrade {
                    header: "X-Degraded".into(),
                }),
            ),
        ]),
    )]);
    let options = GatewayOptions {
        declared: vec![
            route(
                "name = \"orders\"\npath = \"/api/orders/{*rest}\"\nstrip-prefix = true\nservice = \"orders\"",
            ),
            route(
                "name = \"payments-quick\"\npath = \"/api/payments/{*rest}\"\nstrip-prefix = true\nservice = \"payments\"\ntimeout = \"200ms\"",
            ),
        ],
        services,
        dependencies,
        call_tokens: BTreeMap::from([("caller".to_string(), TOKEN.to_string())]),
        ..Default::default()
    };
    let gw = Running::start(dir.path(), options).await;
    let c = client();
    let call = |service: &str| {
        c.get(format!("{}/v1/call/{service}/x", gw.url))
            .header(CALL_TOKEN_HEADER, TOKEN)
            .send()
    };
    let put = |service: &str, body: serde_json::Value| {
        c.put(format!("{}/v1/gateway/faults/{service}", gw.admin))
            .json(&body)
            .send()
    };

    // Bad faults: refused naming the field; nothing set.
    for (service, body, status, pointer) in [
        ("nowhere", serde_json::json!({"kind": "down"}), 404, None),
        (
            "orders",
            serde_json::json!({"kind": "down", "rate": 0.3}),
            422,
            Some("/rate"),
        ),
        (
            "orders",
            serde_json::json!({"kind": "flaky", "rate": 1.5}),
            422,
            Some("/rate"),
        ),
        (
            "orders",
            serde_json::json!({"kind": "slow", "status": 503}),
            422,
            Some("/status"),
        ),
        (
            "orders",
            serde_json::json!({"kind": "down", "status": 200}),
            422,
            Some("/status"),
        ),
        (
            "orders",
            serde_json::json!({"kind": "down", "for": "2d"}),
            422,
            Some("/for"),
        ),
        (
            "orders",
            serde_json::json!({"kind": "slow", "delay": "soon"}),
            422,
            None,
        ),
        ("orders", serde_json::json!({"kind": "gone"}), 422, None),
    ] {
        let r = put(service, body.clone()).await.expect("test step");
        assert_eq!(r.status().as_u16(), status, "{body}");
        let v: serde_json::Value = r.json().await.expect("test step");
        if let Some(p) = pointer {
            assert_eq!(v["pointer"], p, "{body}: {v}");
        }
        if service == "nowhere" {
            assert!(v["detail"].as_str().expect("detail").contains("orders"));
        }
    }
    let r = c
        .put(format!("{}/v1/gateway/faults/orders", gw.admin))
        .body("{nope")
        .send()
        .await
        .expect("test step");
    assert_eq!(r.status(), 400);
    let (_, v) = get_json(&c, &format!("{}/v1/gateway/faults", gw.admin)).await;
    assert_eq!(v["faults"], serde_json::json!([]));

    // Down: the fallback answers, the route says it is a fault, nothing reaches orders.
    let r = put("orders", serde_json::json!({"kind": "down"}))
        .await
        .expect("test step");
    assert_eq!(r.status(), 200);
    let r = call("orders").await.expect("test step");
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["switchyard-fallback"], "orders");
    assert_eq!(r.text().await.expect("test step"), "{\"stub\":true}");
    let r = c
        .get(format!("{}/api/orders/x", gw.url))
        .send()
        .await
        .expect("test step");
    assert_eq!(r.status(), 502);
    assert_eq!(r.headers()["switchyard-fault"], "down");
    assert_eq!(orders_hits.load(Ordering::SeqCst), 0);
    // Payments down with a 503: the caller's degrade policy answers.
    put(
        "payments",
        serde_json::json!({"kind": "down", "status": 503}),
    )
    .await
    .expect("test step");
    let r = call("payments").await.expect("test step");
    assert_eq!(r.status(), 503);
    assert_eq!(r.headers()["x-degraded"], "payments");
    let v: serde_json::Value = r.json().await.expect("test step");
    assert_eq!(v["code"], "dependency-degraded");
    assert_eq!(payments_hits.load(Ordering::SeqCst), 0);
    // A status that is not "down" as the manifest defines it reaches the caller as is.
    put(
        "payments",
        serde_json::json!({"kind": "down", "status": 500}),
    )
    .await
    .expect("test step");
    let r = call("payments").await.expect("test step");
    assert_eq!(r.status(), 500);
    assert_eq!(r.headers()["switchyard-fault"], "down");
    let (_, v) = get_json(&c, &format!("{}/v1/gateway/faults", gw.admin)).await;
    let listed: Vec<&str> = v["faults"]
        .as_array()
        .expect("list")
        .iter()
        .map(|f| f["service"].as_str().expect("service"))
        .collect();
    assert_eq!(listed, ["orders", "payments"]);
    assert_eq!(v["faults"][0]["injected"], 2);

    // Clear one: calls go through at once (the circuit never opened).
    let r = c
        .delete(format!("{}/v1/gateway/faults/orders", gw.admin))
        .send()
        .await
        .expect("test step");
    assert_eq!(r.status(), 200);
    let r = call("orders").await.expect("test step");
    assert_eq!(r.status(), 200);
    assert!(!r.headers().contains_key("switchyard-fallback"));
    assert_eq!(orders_hits.load(Ordering::SeqCst), 1);
    let r = c
        .delete(format!("{}/v1/gateway/faults/orders", gw.admin))
        .send()
        .await
        .expect("test step");
    assert_eq!(r.status(), 404, "no fault left to clear");

    // Slow: the delay is added; a route whose timeout is shorter times out.
    put(
        "orders",
        serde_json::json!({"kind": "slow", "delay": "300ms"}),
    )
    .await
    .expect("test step");
    let started = Instant::now();
    let r = call("orders").await.expect("test step");
    assert_eq!(r.status(), 200);
    assert!(started.elapsed() >= Duration::from_millis(300));
    let started = Instant::now();
    let r = c
        .get(format!("{}/api/orders/x", gw.url))
        .send()
        .await
        .expect("test step");
    assert_eq!(r.status(), 200);
    assert!(started.elapsed() >= Duration::from_millis(300));
    put(
        "payments",
        serde_json::json!({"kind": "slow", "delay": "1s"}),
    )
    .await
    .expect("test step");
    let r = c
        .get(format!("{}/api/payments/x", gw.url))
        .send()
        .await
        .expect("test step");
    assert_eq!(r.status(), 504, "the route's 200ms timeout");
    let before = payments_hits.load(Ordering::SeqCst);
    assert_eq!(before, 0);

    // Flaky: about the given fraction of calls fail (here: the fallback answers).
    put("orders", serde_json::json!({"kind": "flaky", "rate": 0.3}))
        .await
        .expect("test step");
    let calls = 400;
    let mut fell_back = 0;
    for _ in 0..calls / 20 {
        let batch: Vec<_> = (0..20).map(|_| call("orders")).collect();
        for r in futures::future::join_all(batch).await {
            let r = r.expect("test step");
            assert_eq!(r.status(), 200);
            if r.headers().contains_key("switchyard-fallback") {
                fell_back += 1;
            }
        }
    }
    let rate = f64::from(fell_back) / f64::from(calls);
    assert!((0.18..=0.42).contains(&rate), "{fell_back} of {calls}");

    // Expiry: a fault set for 1s is gone after it.
    put("orders", serde_json::json!({"kind": "down", "for": "1s"}))
        .await
        .expect("test step");
    let r = call("orders").await.expect("test step");
    assert!(r.headers().contains_key("switchyard-fallback"));
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let r = call("orders").await.expect("test step");
        if !r.headers().contains_key("switchyard-fallback") {
            break;
        }
        assert!(Instant::now() < deadline, "the fault did not expire");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (_, v) = get_json(&c, &format!("{}/v1/gateway/faults", gw.admin)).await;
    let listed: Vec<&str> = v["faults"]
        .as_array()
        .expect("list")
        .iter()
        .map(|f| f["service"].as_str().expect("service"))
        .collect();
    assert_eq!(listed, ["payments"]);
    // Clear all.
    let r = c
        .delete(format!("{}/v1/gateway/faults", gw.admin))
        .send()
        .await
        .expect("test step");
    let v: serde_json::Value = r.json().await.expect("test step");
    assert_eq!(v["cleared"], 1);
    let r = c
        .get(format!("{}/api/payments/x", gw.url))
        .send()
        .await
        .expect("test step");
    assert_eq!(r.status(), 200);
    gw.stop().await;
}
