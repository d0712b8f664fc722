//! A mapping that fails puts the message in a case (nothing is sent); once the adapter is
//! fixed and reloaded (without a restart), retrying the case maps the stored events again
//! with the new version. A delivered message can be resent exactly as stored.

mod common;

use common::{Platform, eventually};
use serde_json::json;
use std::time::Duration;
use switchyard_connect::ReplayMode;
use switchyard_connect::testing::FakeVendor;
use switchyard_store::connect::MessageState;

fn config(url: &str, mapping: &str) -> String {
    format!(
        r#"
[adapters.bakery]
topic = "inventory.v1"
mapping = '{mapping}'
start = "earliest"
writer = {{ kind = "http", url = "{url}/orders" }}
"#
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retrying_a_case_after_the_fix_maps_again() {
    let p = Platform::new(&[("inventory.v1", 1)]).await;
    let v = FakeVendor::start_local().await.expect("vendor");
    let broken = r#"{sku: .data.sku, qty: (.data.qty // error("qty missing"))}"#;
    let connect = p.connect(&config(&v.url(), broken)).await;
    for i in 0..3 {
        p.publish(
            "inventory.v1",
            &format!("ok-{i}"),
            "stock.low",
            "k",
            json!({"sku": i, "qty": 1}),
        )
        .await;
    }
    for i in 0..5 {
        p.publish(
            "inventory.v1",
            &format!("bad-{i}"),
            "stock.low",
            "k",
            json!({"sku": 10 + i}),
        )
        .await;
    }
    eventually(Duration::from_secs(10), "3 delivered, 5 failed", || async {
        p.count("bakery", MessageState::Delivered).await == 3
            && p.count("bakery", MessageState::Failed).await == 5
    })
    .await;
    assert_eq!(
        v.received().len(),
        3,
        "a message whose mapping failed is not sent"
    );
    let cases = connect
        .store()
        .cases(Some("bakery"), None, 10)
        .await
        .expect("cases");
    assert_eq!(
        cases.len(),
        1,
        "five alike mapping failures are one case: {cases:#?}"
    );
    assert_eq!(cases[0].key.stage, "map");
    assert_eq!(cases[0].open_messages, 5);
    let old_hash = p.messages("bakery").await[0].adapter_hash.clone();

    // Fix the mapping; reload without a restart.
    p.config(&config(
        &v.url(),
        r#"{sku: .data.sku, qty: (.data.qty // 1)}"#,
    ));
    let report = connect.reload().await.expect("reload");
    assert_eq!(report.changed, vec!["bakery".to_owned()]);
    let n = connect
        .retry_case(&cases[0].key.id, ReplayMode::Remap)
        .await
        .expect("retry");
    assert_eq!(n, 5);
    eventually(Duration::from_secs(10), "all 8 delivered", || async {
        p.count("bakery", MessageState::Delivered).await == 8
    })
    .await;
    let bodies: Vec<String> = v.received().into_iter().map(|r| r.body).collect();
    assert!(
        bodies.contains(&r#"{"qty":1,"sku":10}"#.to_owned()),
        "{bodies:?}"
    );
    let remapped = p.messages("bakery").await;
    assert!(
        remapped
            .iter()
            .filter(|m| m.adapter_hash != old_hash)
            .count()
            == 5
    );

    // Resend a delivered one exactly as stored.
    let first = remapped[0].id;
    let again = connect
        .replay(first, ReplayMode::Resend)
        .await
        .expect("replay");
    assert_eq!(again.state, MessageState::Pending);
    eventually(Duration::from_secs(10), "the resend", || async {
        v.received().len() == 9
    })
    .await;
    assert_eq!(v.received()[8].body, v.received()[0].body);
    let (_, attempts) = connect.store().message(first).await.expect("message");
    assert_eq!(attempts.len(), 2);
    // While the lane is paused a replayed message waits, and is not replayed twice.
    connect
        .set_state("bakery", switchyard_store::connect::LaneState::Paused)
        .await
        .expect("pause");
    connect
        .replay(first, ReplayMode::Resend)
        .await
        .expect("replay");
    let twice = connect.replay(first, ReplayMode::Resend).await;
    assert!(
        matches!(
            twice,
            Err(switchyard_connect::Error::Store(
                switchyard_store::Error::Conflict { .. }
            ))
        ),
        "{twice:?}"
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(v.received().len(), 9, "a paused lane sends nothing");
    let lane = connect
        .set_state("bakery", switchyard_store::connect::LaneState::Running)
        .await
        .expect("resume");
    assert_eq!(lane.state, switchyard_store::connect::LaneState::Running);
    eventually(Duration::from_secs(10), "sent once resumed", || async {
        v.received().len() == 10
    })
    .await;
    connect.shutdown().await;
}
