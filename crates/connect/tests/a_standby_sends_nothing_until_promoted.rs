//! Blue-green: an instance started as standby reads nothing, connects to no vendor and
//! takes no reply; promoted, it starts its lanes from the stored cursors, so it goes on
//! where the active side stopped. Promotion steals the lanes' leases (`lane/<adapter>`):
//! the formerly active side finds at its next renewal that it lost them, stops its lanes
//! and refuses replies.

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
            ..ConnectOptions::default()
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn promotion_moves_the_lanes_and_fences_the_old_side() {
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
    let options = |instance: &str, standby: bool| ConnectOptions {
        config_file: Some(file.clone()),
        standby,
        instance: instance.to_owned(),
        // Long enough that a lease never lapses between two steps of the test on a loaded
        // machine (a 600 ms one did, once, at load average 28); blue still learns of the
        // promotion at its next renewal, a third of it later.
        lease_ttl: Duration::from_secs(3),
    };
    let blue = Connect::start(p.journal.clone(), p.store.clone(), options("blue", false))
        .await
        .expect("start blue");
    let green = Connect::start(p.journal.clone(), p.store.clone(), options("green", true))
        .await
        .expect("start green");
    let lane = blue.lane("bakery").await.expect("lane");
    assert_eq!(lane.lease_owner.as_deref(), Some("blue"));
    p.publish("inventory.v1", "e-1", "stock.low", "k1", json!({"sku": 1}))
        .await;
    eventually(Duration::from_secs(10), "blue sends", || async {
        p.count("bakery", MessageState::AwaitingReply).await == 1
    })
    .await;

    let report = green.promote().await.expect("promote");
    assert_eq!(report.added, vec!["bakery".to_owned()]);
    let lane = green.lane("bakery").await.expect("lane");
    assert_eq!(lane.lease_owner.as_deref(), Some("green"));
    // Blue finds out at its next renewal (a third of the ttl) and stops.
    eventually(Duration::from_secs(10), "blue steps down", || async {
        blue.is_standby().await
    })
    .await;
    assert!(blue.lanes().await.expect("lanes").is_empty());
    let reply = blue
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
    // What comes next is sent by green only: exactly one request per event.
    let before = v.received().len();
    for i in 2..=5 {
        p.publish(
            "inventory.v1",
            &format!("e-{i}"),
            "stock.low",
            &format!("k{i}"),
            json!({"sku": i}),
        )
        .await;
    }
    eventually(Duration::from_secs(10), "green sends the rest", || async {
        p.count("bakery", MessageState::AwaitingReply).await == 5
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(v.received().len(), before + 4, "one send per new event");
    // Blue renewing again does not take the lane back.
    let leases = p.store.leases("lane/bakery").await.expect("leases");
    assert_eq!(leases[0].owner, "green");
    // Bad lease settings are refused, naming the option.
    let bad = Connect::start(
        p.journal.clone(),
        p.store.clone(),
        ConnectOptions {
            lease_ttl: Duration::from_millis(1),
            ..options("x", true)
        },
    )
    .await;
    assert!(
        matches!(&bad, Err(Error::InvalidInput { field, .. }) if field == "lease-ttl"),
        "{bad:?}"
    );
    green.shutdown().await;
    blue.shutdown().await;
}
