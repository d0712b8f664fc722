//! Composed routes against real upstreams: the parts are called in parallel and merged with
//! jq (`$params`, `$parts`); a part that is slow past its timeout, down, answers an error or
//! something that is not JSON makes the answer partial (200, `"partial": true`, the part's
//! status, `Switchyard-Partial`); a required part's failure is `part-failed` with its 4xx or
//! 502/504; every part failing is `composition-failed`; a merge failing on the data is 500.
//! Faults injected on a part's service count as its failure. Bad composed routes are
//! refused by the admin API naming the field.

mod common;
use common::*;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use switchyard_gateway::GatewayOptions;

/// The shop's upstream: `/orders/{id}` (404 for `missing`), `/payments/{id}` (after
/// `delay` ms), `/notes` (not JSON), `/count` (how many requests came).
async fn shop(delay: Arc<AtomicU64>) -> String {
    use axum::extract::Path;
    use axum::routing::get;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("test step");
    let url = format!("http://{}", listener.local_addr().expect("test step"));
    let app = axum::Router::new()
        .route(
            "/orders/{id}",
            get(
                |Path(id): Path<String>, headers: axum::http::HeaderMap| async move {
                    if id == "missing" {
                        return (
                            axum::http::StatusCode::NOT_FOUND,
                            axum::Json(serde_json::json!({"error": "no such order"})),
                        );
                    }
                    let user = headers
                        .get("x-request-id")
                        .map(|v| v.to_str().unwrap_or("").to_string());
                    (
                        axum::http::StatusCode::OK,
                        axum::Json(serde_json::json!({"id": id, "total": 42, "request-id": user})),
                    )
                },
            ),
        )
        .route(
            "/payments/{id}",
            get(move |Path(id): Path<String>| {
                let delay = delay.clone();
                async move {
                    tokio::time::sleep(Duration::from_millis(delay.load(Ordering::SeqCst))).await;
                    axum::Json(serde_json::json!({"order": id, "state": "paid"}))
                }
            }),
        )
        .route("/notes", get(|| async { "not json" }));
    tokio::spawn(async move { axum::serve(listener, app).await.expect("test step") });
    url
}

/// A loopback port nothing listens on.
async fn closed_port() -> String {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("test step");
    let url = format!("http://{}", l.local_addr().expect("test step"));
    drop(l);
    url
}

const OVERVIEW: &str = r#"
name = "overview"
path = "/api/orders/{id}/overview"
timeout = "2s"
[compose]
merge = '{order: .order, payment: .payment, notes: .notes, id: $params.id, paid: ($parts.payment.status == 200)}'
[[compose.parts]]
name = "order"
service = "orders"
path = "/orders/{id}"
required = true
[[compose.parts]]
name = "payment"
service = "payments"
path = "/payments/{id}"
timeout = "300ms"
[[compose.parts]]
name = "notes"
service = "notifications"
path = "/notes?order={id}"
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parts_are_merged_and_failures_make_a_partial_answer() {
    let dir = tempfile::tempdir().expect("test step");
    let delay = Arc::new(AtomicU64::new(0));
    let shop_url = shop(delay.clone()).await;
    let mut services = switchyard_gateway::Services::new();
    services.insert("orders".into(), vec![shop_url.clone()]);
    services.insert("payments".into(), vec![shop_url.clone()]);
    services.insert("notifications".into(), vec![closed_port().await]);
    let options = GatewayOptions {
        declared: vec![route(OVERVIEW)],
        services,
        ..Default::default()
    };
    let gw = Running::start(dir.path(), options).await;
    let c = client();
    let overview = |id: &str| {
        c.get(format!("{}/api/orders/{id}/overview", gw.url))
            .header("x-request-id", "req-1")
            .send()
    };

    // notifications is down (refused): partial, with the statuses.
    let r = overview("7").await.expect("test step");
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["switchyard-partial"], "notes");
    let v: serde_json::Value = r.json().await.expect("test step");
    assert_eq!(v["partial"], true);
    assert_eq!(v["data"]["order"]["id"], "7");
    assert_eq!(
        v["data"]["order"]["request-id"], "req-1",
        "parts carry the request id"
    );
    assert_eq!(
        v["data"]["payment"],
        serde_json::json!({"order": "7", "state": "paid"})
    );
    assert_eq!(v["data"]["notes"], serde_json::Value::Null);
    assert_eq!(v["data"]["id"], "7");
    assert_eq!(v["data"]["paid"], true);
    assert_eq!(v["parts"]["order"]["status"], 200);
    assert_eq!(v["parts"]["notes"]["status"], "unavailable");
    assert!(v["parts"]["notes"]["error"].is_string());

    // notifications answers, but not JSON; payments is slower than its 300ms: both named,
    // and the answer does not wait for payments past its timeout.
    gw.gateway.set_services({
        let mut s = switchyard_gateway::Services::new();
        s.insert("orders".into(), vec![shop_url.clone()]);
        s.insert("payments".into(), vec![shop_url.clone()]);
        s.insert("notifications".into(), vec![shop_url.clone()]);
        s
    });
    delay.store(3000, Ordering::SeqCst);
    let started = Instant::now();
    let r = overview("8").await.expect("test step");
    let took = started.elapsed();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["switchyard-partial"], "payment,notes");
    let v: serde_json::Value = r.json().await.expect("test step");
    assert!(took < Duration::from_millis(2500), "{took:?}");
    assert_eq!(v["parts"]["payment"]["status"], "timeout");
    assert_eq!(v["parts"]["notes"]["status"], "invalid-json");
    assert_eq!(v["data"]["paid"], false);
    assert_eq!(v["data"]["order"]["total"], 42);
    delay.store(0, Ordering::SeqCst);

    // The required part is missing: its 404, with the statuses.
    let r = overview("missing").await.expect("test step");
    assert_eq!(r.status(), 404);
    let v: serde_json::Value = r.json().await.expect("test step");
    assert_eq!(v["code"], "part-failed");
    assert_eq!(v["part"], "order");
    assert_eq!(v["parts"]["payment"]["status"], 200);

    // A fault on orders (the required part's service): 502; on payments: partial.
    let put_fault = |service: &str, kind: &str| {
        c.put(format!("{}/v1/gateway/faults/{service}", gw.admin))
            .json(&serde_json::json!({"kind": kind}))
            .send()
    };
    put_fault("orders", "down").await.expect("test step");
    let r = overview("9").await.expect("test step");
    assert_eq!(r.status(), 502);
    let v: serde_json::Value = r.json().await.expect("test step");
    assert_eq!(
        (v["code"].as_str(), v["parts"]["order"]["status"].as_str()),
        (Some("part-failed"), Some("unavailable"))
    );
    c.delete(format!("{}/v1/gateway/faults", gw.admin))
        .send()
        .await
        .expect("test step");
    put_fault("payments", "down").await.expect("test step");
    let r = overview("9").await.expect("test step");
    assert_eq!(r.status(), 200);
    let v: serde_json::Value = r.json().await.expect("test step");
    assert_eq!(v["parts"]["payment"]["status"], "unavailable");
    assert_eq!(v["partial"], true);
    c.delete(format!("{}/v1/gateway/faults", gw.admin))
        .send()
        .await
        .expect("test step");

    // Only GET and HEAD: a POST has no route.
    let r = c
        .post(format!("{}/api/orders/1/overview", gw.url))
        .send()
        .await
        .expect("test step");
    assert_eq!(r.status(), 404);

    // Every part failing, none required: composition-failed.
    let all_down = r#"
name = "all-down"
path = "/down/{id}"
[compose]
[[compose.parts]]
name = "a"
url = "DOWN"
path = "/a/{id}"
[[compose.parts]]
name = "b"
url = "DOWN"
path = "/b"
"#
    .replace("DOWN", &closed_port().await);
    let spec = route(&all_down);
    let r = c
        .put(format!("{}/v1/gateway/routes/all-down", gw.admin))
        .json(&spec)
        .send()
        .await
        .expect("test step");
    assert_eq!(r.status(), 201);
    let (s, v) = get_json(&c, &format!("{}/down/1", gw.url)).await;
    assert_eq!(
        (s, v["code"].as_str()),
        (502, Some("composition-failed")),
        "{v}"
    );
    assert_eq!(v["parts"]["a"]["status"], "unavailable");

    // A merge that fails on the data: 500, with the statuses.
    let failing = r#"
name = "failing"
path = "/failing/{id}"
[compose]
merge = 'if .order.total == 42 then error("total is 42") else . end'
[[compose.parts]]
name = "order"
url = "SHOP"
path = "/orders/{id}"
"#
    .replace("SHOP", &shop_url);
    let r = c
        .put(format!("{}/v1/gateway/routes/failing", gw.admin))
        .json(&route(&failing))
        .send()
        .await
        .expect("test step");
    assert_eq!(r.status(), 201);
    let (s, v) = get_json(&c, &format!("{}/failing/1", gw.url)).await;
    assert_eq!((s, v["code"].as_str()), (500, Some("merge-failed")), "{v}");
    assert!(
        v["detail"]
            .as_str()
            .expect("detail")
            .contains("total is 42")
    );

    // Bad composed routes through the admin API: refused naming the field, nothing written.
    for (body, pointer) in [
        (
            serde_json::json!({"path": "/x/{id}", "compose": {"merge": "{a: .a", "parts": [{"name": "a", "url": shop_url, "path": "/a"}]}}),
            "/compose/merge",
        ),
        (
            serde_json::json!({"path": "/x/{id}", "compose": {"parts": [{"name": "a", "service": "nowhere", "path": "/a"}]}}),
            "/compose/parts/0/service",
        ),
        (
            serde_json::json!({"path": "/x/{id}", "compose": {"parts": [{"name": "a", "url": shop_url, "path": "/a/{nope}"}]}}),
            "/compose/parts/0/path",
        ),
        (
            serde_json::json!({"path": "/x/{id}", "service": "orders", "compose": {"parts": [{"name": "a", "url": shop_url, "path": "/a"}]}}),
            "/service",
        ),
        (
            serde_json::json!({"path": "/x/{id}", "compose": {"parts": []}}),
            "/compose/parts",
        ),
    ] {
        let r = c
            .put(format!("{}/v1/gateway/routes/bad", gw.admin))
            .json(&body)
            .send()
            .await
            .expect("test step");
        assert_eq!(r.status(), 422, "{body}");
        let v: serde_json::Value = r.json().await.expect("test step");
        assert_eq!(v["pointer"], pointer, "{body}: {v}");
    }
    let (_, v) = get_json(&c, &format!("{}/v1/gateway/routes/bad", gw.admin)).await;
    assert_eq!(v["code"], "not-found");
    gw.stop().await;
}
