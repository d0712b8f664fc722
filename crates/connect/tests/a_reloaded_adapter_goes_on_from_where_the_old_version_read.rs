//! A changed adapter goes on from where its old version read, even over events the old
//! version did not take (whose cursor is written lazily while the lane runs, and when it
//! stops): the new version takes only what comes after the reload.

mod common;

use common::{Platform, eventually};
use serde_json::json;
use std::time::Duration;
use switchyard_connect::testing::FakeVendor;
use switchyard_store::connect::MessageState;

fn config(url: &str, below: u32) -> String {
    format!(
        r#"
[adapters.bakery]
topic = "inventory.v1"
route = ".data.sku < {below}"
mapping = "{{sku: .data.sku}}"
start = "earliest"
writer = {{ kind = "http", url = "{url}/orders" }}
"#
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_new_version_starts_after_what_the_old_one_skipped() {
    let p = Platform::new(&[("inventory.v1", 1)]).await;
    let v = FakeVendor::start_local().await.expect("vendor");
    let connect = p.connect(&config(&v.url(), 100)).await;
    p.publish("inventory.v1", "e-1", "stock.low", "k1", json!({"sku": 1}))
        .await;
    eventually(Duration::from_secs(20), "e-1 delivered", || async {
        p.count("bakery", MessageState::Delivered).await == 1
    })
    .await;
    // In a batch of its own, which produces no message.
    p.publish(
        "inventory.v1",
        "e-150",
        "stock.low",
        "k2",
        json!({"sku": 150}),
    )
    .await;
    // e-150 was read and not taken (it is recorded as unmatched).
    eventually(Duration::from_secs(20), "e-150 unmatched", || async {
        p.count("unrouted", MessageState::Unmatched).await == 1
    })
    .await;
    // At once, before the lazy cursor's second is up: the old version's stop writes it.
    p.config(&config(&v.url(), 200));
    let report = connect.reload().await.expect("reload");
    assert_eq!(report.changed, ["bakery"]);
    p.publish(
        "inventory.v1",
        "e-160",
        "stock.low",
        "k3",
        json!({"sku": 160}),
    )
    .await;
    eventually(Duration::from_secs(20), "e-160 delivered", || async {
        p.count("bakery", MessageState::Delivered).await >= 2
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let ids: Vec<String> = p
        .messages("bakery")
        .await
        .into_iter()
        .map(|m| m.event_id)
        .collect();
    assert_eq!(ids.len(), 2, "e-150 was not taken again: {ids:?}");
    assert!(!ids.contains(&"e-150".to_owned()), "{ids:?}");
    assert_eq!(v.received_count(), 2);
    connect.shutdown().await;
}
