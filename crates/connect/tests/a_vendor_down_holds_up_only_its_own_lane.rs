//! Vendor A is down for a while; vendor B's lane keeps flowing, A's messages wait in its
//! lane (nothing lost, nothing sent twice that succeeded), and flow once A is back. An
//! event no route takes is recorded as unmatched, never dropped.

mod common;

use common::{Platform, eventually};
use serde_json::json;
use std::time::Duration;
use switchyard_connect::testing::{Behaviour, FakeVendor, Mode};
use switchyard_store::connect::MessageState;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vendor_b_flows_while_vendor_a_is_down() {
    let p = Platform::new(&[("inventory.v1", 3)]).await;
    let a = FakeVendor::start_local().await.expect("vendor a");
    let b = FakeVendor::start_local().await.expect("vendor b");
    a.set(Behaviour {
        mode: Mode::Down,
        ..Behaviour::default()
    });
    let config = format!(
        r#"
[adapters.bakery]
topic = "inventory.v1"
types = ["stock.low"]
route = ".data.sku >= 200 and .data.sku < 300"
mapping = "{{ITEM_ID: (.data.sku | pad(5)), QTY: (.data.qty | quoted)}}"
start = "earliest"
timeout = "2s"
retry = {{ initial-backoff = "20ms", max-backoff = "100ms", max-attempts = 1000 }}
writer = {{ kind = "http", url = "{a}/orders" }}

[adapters.pizzeria]
topic = "inventory.v1"
types = ["stock.low"]
route = ".data.sku >= 300 and .data.sku < 400"
mapping = "{{item: .data.sku, qty: .data.qty}}"
encoding = "form"
start = "earliest"
writer = {{ kind = "http", url = "{b}/restock/{{{{ .data.sku }}}}" }}
"#,
        a = a.url(),
        b = b.url()
    );
    let connect = p.connect(&config).await;
    for i in 0..20u32 {
        p.publish(
            "inventory.v1",
            &format!("a-{i}"),
            "stock.low",
            &format!("sku-2{i:02}"),
            json!({"sku": 200 + i, "qty": 5}),
        )
        .await;
        p.publish(
            "inventory.v1",
            &format!("b-{i}"),
            "stock.low",
            &format!("sku-3{i:02}"),
            json!({"sku": 300 + i, "qty": 7}),
        )
        .await;
    }
    // Not for either vendor, and of a type neither takes: ignored. Of their type but no
    // route takes it: recorded as unmatched.
    p.publish(
        "inventory.v1",
        "other",
        "stock.reserved",
        "x",
        json!({"sku": 250}),
    )
    .await;
    p.publish(
        "inventory.v1",
        "lost",
        "stock.low",
        "sku-999",
        json!({"sku": 999}),
    )
    .await;

    eventually(
        Duration::from_secs(20),
        "vendor B to get all 20",
        || async { p.count("pizzeria", MessageState::Delivered).await == 20 },
    )
    .await;
    assert_eq!(b.received().len(), 20, "B got each exactly once");
    assert!(a.received().is_empty(), "A is down: nothing reached it");
    assert_eq!(
        p.count("bakery", MessageState::Pending).await,
        20,
        "A's wait in its lane"
    );
    let first = &b.received()[0];
    assert!(first.path.starts_with("/restock/3"), "{first:?}");
    assert!(
        first.body.starts_with("item=3") && first.body.contains("&qty=7"),
        "{first:?}"
    );

    eventually(
        Duration::from_secs(10),
        "the unmatched event to be recorded",
        || async { p.count("unrouted", MessageState::Unmatched).await == 1 },
    )
    .await;
    let unrouted = p.messages("unrouted").await;
    assert_eq!(unrouted[0].event_id, "lost");
    let case = connect
        .store()
        .case(unrouted[0].case_id.as_deref().expect("in a case"))
        .await
        .expect("case");
    assert_eq!(case.key.stage, "route");

    // A comes back: its lane drains, in order per key.
    a.set(Behaviour::default());
    eventually(
        Duration::from_secs(20),
        "vendor A to get all 20",
        || async { p.count("bakery", MessageState::Delivered).await == 20 },
    )
    .await;
    let got = a.received();
    assert_eq!(
        got.len(),
        20,
        "each exactly once: failed connections were not answers"
    );
    assert!(
        got.iter()
            .any(|r| r.body == r#"{"ITEM_ID":"00200","QTY":"5"}"#),
        "{got:?}"
    );
    let (m, attempts) = connect
        .store()
        .message(p.messages("bakery").await[0].id)
        .await
        .expect("message");
    assert_eq!(m.state, MessageState::Delivered);
    assert!(
        attempts.len() >= 2,
        "connection failures are recorded attempts"
    );
    assert!(
        attempts[0]
            .error
            .as_deref()
            .unwrap_or("")
            .starts_with("connect"),
        "{attempts:?}"
    );
    assert_eq!(attempts.last().and_then(|a| a.status), Some(200));
    let lanes = connect.lanes().await.expect("lanes");
    assert_eq!(lanes.len(), 2);
    connect.shutdown().await;
}
