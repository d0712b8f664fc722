//! Blue-green: an instance started as standby reads nothing, connects to no vendor and
//! takes no reply; promoted, it starts its lanes from the stored cursors, so it goes on
//! where the active side stopped. (Moving the lanes' lease between instances waits for
//! the store's lease primitive.)

mod common;

use common::{Platform, eventually};
use serde_json::json;
use std::time::Duration;
use switchyard_connect::testing::FakeVendor;
use switchyard_connect::{Answer, Connect, ConnectOptions, Error};
use switchyard_store::connect::MessageState;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_standby_waits_for_its_promotion() {
    let p = Platform::new(&[("inventory.v1", 1)]).await;
    let v = FakeVendor::start_local().await.expect("vendor");
    let file = p.config(&format!(
        r#"
[adapters.bakery]
topic = "inventory.v1"
mapping = ".data"
start = "earliest"
writer = {{ kind = "http", url = "{}/orders" }}
correlation = {{ header = "x-correlation-id", timeout = "1m" }}
"#,
        v.url()
    ));
    let standby = Connect::start(
        p.journal.clone(),
        p.store.clone(),
        ConnectOptions {
            config_file: Some(file),
            standby: true,
        },
    )
    .await
    .expect("start standby");
    assert!(standby.is_standby().await);
    p.publish("inventory.v1", "e-1", "stock.low", "k", json!({"sku": 1}))
        .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(v.received().is_empty(), "a standby sends nothing");
    assert!(standby.lanes().await.expect("lanes").is_empty());
    assert!(
        p.store
            .lane_cursors("bakery")
            .await
            .expect("cursors")
            .is_empty(),
        "a standby reads nothing"
    );
    let reply = standby
        .receive_reply(
            "bakery",
            Answer {
                status: None,
                headers: vec![("x-correlation-id".into(), "c".into())],
                body: "{}".into(),
            },
        )
        .await;
    assert!(matches!(reply, Err(Error::Standby)), "{reply:?}");
    // A reload on a standby checks the files and starts nothing.
    assert_eq!(standby.reload().await.expect("reload"), Default::default());
    assert!(v.received().is_empty());

    let report = standby.promote().await.expect("promote");
    assert_eq!(report.added, vec!["bakery".to_owned()]);
    assert!(!standby.is_standby().await);
    eventually(
        Duration::from_secs(10),
        "the promoted side sends",
        || async { p.count("bakery", MessageState::AwaitingReply).await == 1 },
    )
    .await;
    assert_eq!(v.received().len(), 1);
    assert_eq!(standby.promote().await.expect("again"), Default::default());
    standby.shutdown().await;
}
