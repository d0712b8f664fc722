//! `shop-host dev examples/shop`: the whole shop with payments and notifications running
//! inside the platform's process on the embedded journal. An order placed with the Python
//! orders service is reserved by the Python inventory, charged by the Rust payments and
//! notified by the Rust notifications; the runner's status shows the two as in-process.
//! Then `seed.yaml` puts the shop into its known state, and when `seed` returns that state is
//! there already, in the Rust services too: seed waits for in-process consumers as it does
//! for subscriptions.

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_order_goes_through_the_rust_services() {
    let state = tempfile::tempdir().expect("tempdir");
    let system = common::system();
    let shop = common::Shop::start(state.path());
    let api = shop.api.clone();
    let http = reqwest::Client::new();
    let placed: serde_json::Value = http
        .post("http://127.0.0.1:8101/orders")
        .json(&serde_json::json!({"customer": "ada", "items": [{"sku": "widget", "qty": 2}]}))
        .send()
        .await
        .expect("POST /orders")
        .json()
        .await
        .expect("json");
    let order = placed["order"].as_str().expect("order id").to_string();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let o: serde_json::Value = http
            .get(format!("http://127.0.0.1:8101/orders/{order}"))
            .send()
            .await
            .expect("GET order")
            .json()
            .await
            .expect("json");
        if o["state"] == "confirmed" {
            break;
        }
        assert!(Instant::now() < deadline, "not confirmed: {o}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let payments: serde_json::Value = http
        .get("http://127.0.0.1:8103/payments")
        .send()
        .await
        .expect("payments")
        .json()
        .await
        .expect("json");
    assert_eq!(payments["payments"][0]["order_id"], order.as_str());
    assert_eq!(payments["payments"][0]["state"], "captured");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let n: serde_json::Value = http
            .get("http://127.0.0.1:8104/notifications")
            .send()
            .await
            .expect("notifications")
            .json()
            .await
            .expect("json");
        let sent = n["notifications"].as_array().is_some_and(|a| {
            a.iter().any(|m| {
                m["recipient"] == "ada"
                    && m["message"]
                        .as_str()
                        .is_some_and(|t| t.contains("is confirmed"))
            })
        });
        if sent {
            break;
        }
        assert!(Instant::now() < deadline, "not notified: {n}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let status: serde_json::Value = http
        .get(format!("{api}/v1/system/status"))
        .send()
        .await
        .expect("status")
        .json()
        .await
        .expect("json");
    for s in status["services"].as_array().expect("services") {
        let rust = s["name"] == "payments" || s["name"] == "notifications";
        assert_eq!(s["in-process"], rust, "{s}");
        assert_eq!(s["pid"].is_null(), rust, "{s}");
        assert_eq!(s["state"], "healthy", "{s}");
    }
    let subs: serde_json::Value = http
        .get(format!("{api}/v1/subscriptions"))
        .send()
        .await
        .expect("subscriptions")
        .json()
        .await
        .expect("json");
    let names: Vec<&str> = subs["subscriptions"]
        .as_array()
        .expect("names")
        .iter()
        .filter_map(|v| v.as_str())
        .collect();
    assert!(
        names
            .iter()
            .all(|n| !n.starts_with("payments.") && !n.starts_with("notifications.")),
        "in-process services read the journal themselves: {names:?}"
    );

    // The known state: seed returns once every consumer, in-process ones included, has
    // caught up, so everything the file's header promises is there when it does.
    let seeded = Command::new(env!("CARGO_BIN_EXE_shop-host"))
        .arg("seed")
        .arg(system.join("seed.yaml"))
        .args(["--json", "--timeout", "60s"])
        .env("SWITCHYARD_URL", &api)
        .stdin(Stdio::null())
        .output()
        .expect("run seed");
    let report = String::from_utf8_lossy(&seeded.stdout);
    assert!(
        seeded.status.success(),
        "seed: {report} {}",
        String::from_utf8_lossy(&seeded.stderr)
    );
    let report: serde_json::Value = serde_json::from_str(&report).expect("seed --json");
    let waited: Vec<&str> = report["subscriptions"]
        .as_array()
        .expect("subscriptions in the report")
        .iter()
        .filter_map(|s| s["name"].as_str())
        .collect();
    for consumer in ["payments (in process)", "notifications (in process)"] {
        assert!(
            waited.iter().any(|n| n.starts_with(consumer)),
            "seed waited for {consumer}: {waited:?}"
        );
    }
    let get = |url: String| {
        let http = http.clone();
        async move {
            http.get(url)
                .send()
                .await
                .expect("GET")
                .json::<serde_json::Value>()
                .await
                .expect("json")
        }
    };
    let n = get("http://127.0.0.1:8104/notifications".into()).await;
    let notes: Vec<&str> = n["notifications"]
        .as_array()
        .expect("notifications")
        .iter()
        .filter_map(|m| m["message"].as_str())
        .collect();
    for (order, outcome) in [
        ("ord-seed-1", "is confirmed"),
        ("ord-seed-2", "was cancelled: not enough gizmo"),
        ("ord-seed-3", "was cancelled"),
        ("ord-seed-4", "is confirmed"),
    ] {
        assert!(
            notes
                .iter()
                .any(|m| m.contains(order) && m.contains(outcome)),
            "{order} {outcome}, notified by the time seed returned: {notes:?}"
        );
    }
    assert!(
        notes.iter().any(|m| m.starts_with("Restock gadget")),
        "gadget ran low: {notes:?}"
    );
    let p = get("http://127.0.0.1:8103/payments".into()).await;
    let declined = p["payments"]
        .as_array()
        .expect("payments")
        .iter()
        .any(|x| x["order_id"] == "ord-seed-3" && x["state"] != "captured");
    assert!(declined, "broke-carl's card declined: {p}");
    let stock = get("http://127.0.0.1:8102/stock".into()).await;
    let available = |sku: &str| {
        stock["stock"]
            .as_array()
            .expect("stock")
            .iter()
            .find(|r| r["sku"] == sku)
            .map(|r| r["available"].clone())
    };
    // The order placed above took 2 widgets before the seed's ada took 2 more.
    for (sku, n) in [
        ("widget", 21),
        ("gadget", 2),
        ("gizmo", 2),
        ("doohickey", 8),
    ] {
        assert_eq!(available(sku), Some(n.into()), "{sku}: {stock}");
    }
    let status = get(format!("{api}/v1/system/status")).await;
    let consumers = status["consumers"].as_array().expect("consumers");
    assert!(!consumers.is_empty(), "{status}");
    for c in consumers {
        assert_eq!(c["lag"], 0, "{c}");
        assert_eq!(c["in-flight"], 0, "{c}");
    }

    shop.stop();
}
