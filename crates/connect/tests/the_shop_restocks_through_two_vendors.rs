//! The demo shop's restock path, with the adapters exactly as `examples/shop/switchyard.toml`
//! declares them (only Acme's address moved to a free port): a stock.low for a widget goes
//! to Acme as JSON over HTTP and its answer becomes a restock.ordered event; a stock.low
//! for a gizmo becomes a fixed-width file in Globex's folder; a SKU neither sells is
//! recorded as unmatched.

mod common;

use common::{Platform, eventually};
use serde_json::{Value, json};
use std::time::Duration;
use switchyard_connect::testing::FakeVendor;
use switchyard_store::connect::MessageState;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restock_goes_to_acme_over_http_and_to_globex_as_a_file() {
    let shop = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/shop");
    let text = std::fs::read_to_string(shop.join("switchyard.toml")).expect("the shop's config");
    assert!(
        text.contains("http://127.0.0.1:8201"),
        "Acme's address moved"
    );
    let acme = FakeVendor::start_local().await.expect("acme");
    let p = Platform::new(&[("inventory.v1", 3)]).await;
    let file = p.config(&text.replace("http://127.0.0.1:8201", &acme.url()));
    let connect = switchyard_connect::Connect::start(
        p.journal.clone(),
        p.store.clone(),
        switchyard_connect::ConnectOptions {
            config_file: Some(file),
            ..Default::default()
        },
    )
    .await
    .expect("the shop's adapters start");
    let low = |sku: &str, qty: u32| json!({"sku": sku, "available": 1, "threshold": 3, "restock_qty": qty});
    p.publish(
        "inventory.v1",
        "stock.low/widget/o-1",
        "stock.low",
        "widget",
        low("widget", 10),
    )
    .await;
    p.publish(
        "inventory.v1",
        "stock.low/gizmo/o-1",
        "stock.low",
        "gizmo",
        low("gizmo", 15),
    )
    .await;
    p.publish(
        "inventory.v1",
        "stock.low/sprocket/o-1",
        "stock.low",
        "sprocket",
        low("sprocket", 1),
    )
    .await;

    eventually(
        Duration::from_secs(30),
        "Acme's restock delivered",
        || async { p.count("acme", MessageState::Delivered).await == 1 },
    )
    .await;
    let got = acme.received();
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(got[0].method, "POST");
    assert_eq!(got[0].path, "/orders/widget");
    let body: Value = serde_json::from_str(&got[0].body).expect("JSON");
    assert_eq!(
        body,
        json!({"ITEM": "WIDGET", "QTY": "10", "REF": "stock.low/widget/o-1"})
    );
    eventually(
        Duration::from_secs(10),
        "the restock.ordered event",
        || async {
            p.events("inventory.v1")
                .await
                .iter()
                .any(|e| e["type"] == "restock.ordered")
        },
    )
    .await;
    let ordered: Vec<Value> = p
        .events("inventory.v1")
        .await
        .into_iter()
        .filter(|e| e["type"] == "restock.ordered")
        .collect();
    assert_eq!(ordered.len(), 1);
    assert_eq!(
        ordered[0]["data"],
        json!({"sku": "widget", "qty": 10, "vendor": "acme"})
    );
    assert_eq!(ordered[0]["causationid"], "stock.low/widget/o-1");

    eventually(Duration::from_secs(30), "Globex's file written", || async {
        p.count("globex", MessageState::Delivered).await == 1
    })
    .await;
    let dir = p.path().join(".switchyard/vendors/globex");
    let names: Vec<String> = std::fs::read_dir(&dir)
        .expect("Globex's folder")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(
        names,
        ["stock.low_gizmo_o-1.txt"],
        "one file, no temporary left"
    );
    let content = std::fs::read_to_string(dir.join(&names[0])).expect("read");
    let line = content.trim_end_matches('\n');
    assert_eq!(line.len(), 26, "{content:?}");
    assert_eq!(&line[..18], "GIZMO       000015", "{content:?}");
    assert!(
        line[18..].bytes().all(|b| b.is_ascii_digit()),
        "{content:?}"
    );
    assert!(line[18..].starts_with("20"), "a date: {content:?}");

    eventually(
        Duration::from_secs(10),
        "the sprocket unmatched",
        || async { p.count("unrouted", MessageState::Unmatched).await == 1 },
    )
    .await;
    assert_eq!(p.count("acme", MessageState::Pending).await, 0);
    assert_eq!(acme.received().len(), 1, "only the widget went to Acme");
    connect.shutdown().await;
}
