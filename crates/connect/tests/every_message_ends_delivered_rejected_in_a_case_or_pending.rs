//! The accounting invariant: whatever the vendor does (503 with Retry-After, 429 above a
//! rate, resets, timeouts, garbage, unknown 500s, known business errors), every event an
//! adapter takes ends in exactly one of delivered, rejected (as an event), failed in a
//! case, or still pending. None is lost; alike failures are one case with a count.

mod common;

use common::{Platform, eventually};
use serde_json::json;
use std::time::Duration;
use switchyard_connect::testing::{Behaviour, FakeVendor, Mode};
use switchyard_store::connect::{CaseState, MessageState};

fn answer(status: u16) -> Behaviour {
    Behaviour {
        status: Some(status),
        ..Behaviour::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_message_is_lost_whatever_the_vendor_does() {
    let p = Platform::new(&[("inventory.v1", 2), ("vendor.v1", 1)]).await;
    let v = FakeVendor::start_local().await.expect("vendor");
    let mut sequence = Vec::new();
    for i in 0..30 {
        sequence.push(match i % 6 {
            0 => Behaviour {
                retry_after: Some(0),
                ..answer(503)
            },
            1 => Behaviour {
                mode: Mode::Reset,
                ..Behaviour::default()
            },
            2 => Behaviour {
                mode: Mode::Hang,
                ..Behaviour::default()
            },
            3 => Behaviour {
                mode: Mode::Garbage,
                ..Behaviour::default()
            },
            4 => answer(500),
            _ => Behaviour {
                body: Some(r#"{"error":"OUT_OF_STOCK"}"#.into()),
                ..answer(409)
            },
        });
    }
    v.set(Behaviour {
        sequence,
        ..Behaviour::default()
    });
    let config = format!(
        r#"
[adapters.bakery]
topic = "inventory.v1"
mapping = ".data"
start = "earliest"
concurrency = 2
timeout = "200ms"
retry = {{ initial-backoff = "10ms", max-backoff = "50ms", max-attempts = 3 }}
writer = {{ kind = "http", url = "{}/orders" }}
classify = {{ business = [{{ status = [409], when = '.body.error == "OUT_OF_STOCK"', event-type = "restock.rejected" }}] }}
reply = {{ topic = "vendor.v1", type = "restock.confirmed", mapping = "{{ok: .body.ok, sku: .event.data.sku}}" }}
"#,
        v.url()
    );
    let connect = p.connect(&config).await;
    const N: u32 = 40;
    for i in 0..N {
        p.publish(
            "inventory.v1",
            &format!("e-{i}"),
            "stock.low",
            &format!("k{i}"),
            json!({"sku": i}),
        )
        .await;
    }
    eventually(
        Duration::from_secs(60),
        "every message to settle",
        || async {
            p.count("bakery", MessageState::Pending).await == 0
                && p.messages("bakery").await.len() == N as usize
        },
    )
    .await;
    let messages = p.messages("bakery").await;
    let mut offsets: Vec<(u32, u64)> = messages.iter().map(|m| (m.partition, m.offset)).collect();
    offsets.sort();
    offsets.dedup();
    assert_eq!(offsets.len(), N as usize, "one message per event");
    let delivered = p.count("bakery", MessageState::Delivered).await;
    let rejected = p.count("bakery", MessageState::Rejected).await;
    let failed = p.count("bakery", MessageState::Failed).await;
    assert_eq!(
        delivered + rejected + failed,
        u64::from(N),
        "every message is accounted for"
    );
    assert!(rejected >= 1, "409 OUT_OF_STOCK is a business error");
    assert!(failed >= 1, "the 500s and the garbage are unknown");

    // Rejections became events, deliveries became replies: one per message.
    let events = p.events("vendor.v1").await;
    let of = |t: &str| events.iter().filter(|e| e["type"] == t).count() as u64;
    assert_eq!(of("restock.rejected"), rejected);
    assert_eq!(of("restock.confirmed"), delivered);
    let confirmed = events
        .iter()
        .find(|e| e["type"] == "restock.confirmed")
        .expect("one");
    assert_eq!(confirmed["data"]["ok"], true);
    assert!(
        confirmed["causationid"]
            .as_str()
            .is_some_and(|c| c.starts_with("e-"))
    );

    // Alike failures group: each case counts its messages; every failed message is in one.
    let cases = connect
        .store()
        .cases(Some("bakery"), None, 100)
        .await
        .expect("cases");
    let in_cases: u64 = cases.iter().map(|c| c.open_messages).sum();
    assert_eq!(in_cases, failed);
    assert!(cases.len() < failed as usize || failed == 1, "{cases:#?}");
    let http500 = cases.iter().find(|c| c.key.status == Some(500));
    if let Some(c) = http500 {
        assert_eq!(c.key.error_class, "http-status");
        assert!(!c.samples.is_empty());
    }

    // Discard all of one case, resolve it: the accounting still holds.
    let case = &cases[0];
    let discarded = connect
        .store()
        .discard_case(&case.key.id, 1)
        .await
        .expect("discard");
    assert_eq!(discarded, case.open_messages);
    let resolved = connect
        .store()
        .resolve_case(&case.key.id, 2)
        .await
        .expect("resolve");
    assert_eq!(resolved.state, CaseState::Resolved);
    let total: u64 = connect
        .store()
        .message_counts(Some("bakery"))
        .await
        .expect("counts")
        .iter()
        .map(|c| c.count)
        .sum();
    assert_eq!(total, u64::from(N));
    connect.shutdown().await;
}
