//! What a lane does with what its vendor asks: the outbound rate limit (GCRA, one bucket
//! per vendor, shared by its adapters), a 429 or 503 with Retry-After (in seconds and as
//! an HTTP date) that holds the lane and then lets it go on, a 429 that lowers the send
//! rate, a retry the body asks for (`retry-when`, `retry-delay`), draining a lane, and
//! cases grouped as the adapter says.
//!
//! Times here are lower bounds only (a pause must last at least what was asked), never a
//! speed the machine must reach.

mod common;

use common::{Platform, eventually};
use serde_json::json;
use std::time::{Duration, Instant};
use switchyard_connect::testing::{Behaviour, FakeVendor, Received};
use switchyard_store::connect::{LaneState, MessageState};

fn arrivals(v: &FakeVendor) -> Vec<Instant> {
    v.received().iter().filter_map(|r| r.at).collect()
}

async fn publish_n(p: &Platform, prefix: &str, n: u32) {
    for i in 0..n {
        p.publish(
            "inventory.v1",
            &format!("{prefix}-{i}"),
            "stock.low",
            &format!("{prefix}-{i}"),
            json!({"sku": i, "qty": 1}),
        )
        .await;
    }
}

fn adapter(name: &str, url: &str, extra: &str) -> String {
    format!(
        r#"
[adapters.{name}]
topic = "inventory.v1"
mapping = "{{sku: .data.sku}}"
start = "earliest"
concurrency = 1
retry = {{ initial-backoff = "20ms", max-backoff = "200ms", max-attempts = 100 }}
writer = {{ kind = "http", url = "{url}/{name}" }}
{extra}
"#
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_rate_limit_spaces_sends_and_one_vendor_shares_one_bucket() {
    let p = Platform::new(&[("inventory.v1", 2)]).await;
    let v = FakeVendor::start_local().await.expect("vendor");
    // Two adapters of one vendor; the limit declared on one applies to both.
    let config = format!(
        "{}{}",
        adapter(
            "acme-orders",
            &v.url(),
            "vendor = \"acme\"\nrate-limit = { per-second = 10, burst = 1 }"
        ),
        adapter("acme-returns", &v.url(), "vendor = \"acme\"")
    );
    let connect = p.connect(&config).await;
    publish_n(&p, "e", 10).await;
    eventually(Duration::from_secs(60), "20 requests", || async {
        v.received_count() == 20
    })
    .await;
    let at = arrivals(&v);
    let span = at[at.len() - 1].duration_since(at[0]);
    // 20 sends through one bucket of 10 a second (burst 1): 19 intervals of 100 ms. Two
    // buckets would have sent them in about half that.
    assert!(span >= Duration::from_millis(1700), "{span:?}");
    let got = v.received();
    for path in ["/acme-orders", "/acme-returns"] {
        assert_eq!(got.iter().filter(|r| r.path == path).count(), 10, "{path}");
    }
    connect.shutdown().await;
}

/// The first request is answered `first`, every later one 200; 4 events go through one
/// at a time. Returns the vendor's requests and the first message's attempts.
async fn pause_then_go(
    first: Behaviour,
    classify: &str,
) -> (
    Vec<Received>,
    Vec<switchyard_store::connect::Attempt>,
    switchyard_connect::LaneView,
) {
    let p = Platform::new(&[("inventory.v1", 1)]).await;
    let v = FakeVendor::start_local().await.expect("vendor");
    v.set(Behaviour {
        sequence: vec![first],
        ..Behaviour::default()
    });
    let connect = p.connect(&adapter("bakery", &v.url(), classify)).await;
    publish_n(&p, "e", 4).await;
    eventually(Duration::from_secs(60), "4 delivered", || async {
        p.count("bakery", MessageState::Delivered).await == 4
    })
    .await;
    let first_message = p
        .messages("bakery")
        .await
        .into_iter()
        .find(|m| m.event_id == "e-0")
        .expect("e-0");
    let (_, attempts) = connect
        .store()
        .message(first_message.id)
        .await
        .expect("message");
    let lane = connect.lane("bakery").await.expect("lane");
    connect.shutdown().await;
    (v.received(), attempts, lane)
}

fn gap(got: &[Received], i: usize) -> Duration {
    let (a, b) = (got[i].at.expect("at"), got[i + 1].at.expect("at"));
    b.duration_since(a)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_429_with_retry_after_seconds_holds_the_lane_then_it_goes_on() {
    let (got, attempts, lane) = pause_then_go(
        Behaviour {
            status: Some(429),
            retry_after: Some(2),
            body: Some("slow down".into()),
            ..Behaviour::default()
        },
        "",
    )
    .await;
    assert_eq!(got.len(), 5, "4 messages, the first twice");
    // Nothing was sent for the 2 s asked; then the same message again, and the rest.
    assert!(
        gap(&got, 0) >= Duration::from_millis(1950),
        "{:?}",
        gap(&got, 0)
    );
    assert_eq!(attempts.len(), 2);
    assert_eq!(attempts[0].status, Some(429));
    assert_eq!(attempts[0].delay_ms, Some(2000));
    assert_eq!(attempts[1].status, Some(200));
    // A 429 lowers the vendor's send rate; good answers raise it again.
    assert!(lane.counters.retried >= 1);
    assert_eq!(lane.messages.get(&MessageState::Delivered), Some(&4));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_503_with_retry_after_as_an_http_date_holds_the_lane_then_it_goes_on() {
    let (got, attempts, _) = pause_then_go(
        Behaviour {
            status: Some(503),
            retry_after: Some(3),
            retry_after_date: true,
            ..Behaviour::default()
        },
        "",
    )
    .await;
    assert_eq!(got.len(), 5);
    // An HTTP date has whole seconds: 3 s from now is at least 2 s away.
    assert!(
        gap(&got, 0) >= Duration::from_millis(1950),
        "{:?}",
        gap(&got, 0)
    );
    assert_eq!(attempts[0].status, Some(503));
    let delay = attempts[0].delay_ms.expect("the date's delay recorded");
    assert!((2000..=3000).contains(&delay), "{delay}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_body_can_ask_for_a_retry_and_its_delay() {
    let (got, attempts, _) = pause_then_go(
        Behaviour {
            status: Some(200),
            body: Some(r#"{"code":"BUSY","retry_in":1.5}"#.into()),
            ..Behaviour::default()
        },
        r#"
[adapters.bakery.classify]
retry-when = '.body.code == "BUSY"'
retry-delay = ".body.retry_in"
"#,
    )
    .await;
    assert_eq!(got.len(), 5);
    assert_eq!(attempts.len(), 2, "{attempts:?}");
    assert_eq!(attempts[0].delay_ms, Some(1500));
    assert!(
        attempts[0].error.as_deref().unwrap_or("").contains("BUSY"),
        "{attempts:?}"
    );
    assert!(
        attempts[1].at_ms - attempts[0].at_ms >= 1450,
        "{} ms",
        attempts[1].at_ms - attempts[0].at_ms
    );
    // A retry the body asks for is not the vendor pausing: the other messages went on.
    assert_eq!(got[0].body, r#"{"sku":0}"#);
    assert_ne!(got[1].body, got[0].body, "{got:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_429_lowers_the_send_rate_and_good_answers_raise_it_again() {
    let p = Platform::new(&[("inventory.v1", 1)]).await;
    let v = FakeVendor::start_local().await.expect("vendor");
    v.set(Behaviour {
        sequence: vec![Behaviour {
            status: Some(429),
            retry_after: Some(0),
            ..Behaviour::default()
        }],
        ..Behaviour::default()
    });
    let connect = p
        .connect(&adapter(
            "bakery",
            &v.url(),
            "rate-limit = { per-second = 20, burst = 1 }",
        ))
        .await;
    publish_n(&p, "e", 11).await;
    eventually(Duration::from_secs(60), "11 delivered", || async {
        p.count("bakery", MessageState::Delivered).await == 11
    })
    .await;
    let got = v.received();
    assert_eq!(got.len(), 12);
    // After the 429 the rate is 10 a second, raised 5% by each good answer: the 11
    // requests after it (10 intervals) are spread over about 0.81 s; at the configured
    // 20 a second they would take 0.5 s.
    let span = got[11]
        .at
        .expect("at")
        .duration_since(got[1].at.expect("at"));
    assert!(span >= Duration::from_millis(700), "{span:?}");
    // One halving, then 11 good answers: 10 * 1.05^11.
    let rate = connect
        .lane("bakery")
        .await
        .expect("lane")
        .send_rate
        .expect("still lowered");
    assert!((rate - 10.0 * 1.05f64.powi(11)).abs() < 1e-6, "{rate}");
    connect.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_draining_lane_sends_what_it_holds_and_takes_nothing_new() {
    let p = Platform::new(&[("inventory.v1", 2)]).await;
    let v = FakeVendor::start_local().await.expect("vendor");
    let connect = p.connect(&adapter("bakery", &v.url(), "")).await;
    connect
        .set_state("bakery", LaneState::Paused)
        .await
        .expect("pause");
    publish_n(&p, "a", 5).await;
    eventually(Duration::from_secs(30), "5 taken while paused", || async {
        p.count("bakery", MessageState::Pending).await == 5
    })
    .await;
    assert_eq!(v.received_count(), 0, "paused: nothing sent");
    let lane = connect
        .set_state("bakery", LaneState::Draining)
        .await
        .expect("drain");
    assert!(!lane.drained);
    eventually(Duration::from_secs(30), "the lane drained", || async {
        connect.lane("bakery").await.expect("lane").drained
    })
    .await;
    assert_eq!(v.received_count(), 5);
    assert_eq!(p.count("bakery", MessageState::Delivered).await, 5);
    // Draining: new events wait in the journal, not taken.
    publish_n(&p, "b", 3).await;
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert_eq!(p.messages("bakery").await.len(), 5, "nothing new taken");
    assert!(connect.lane("bakery").await.expect("lane").drained);
    // Resumed: they are taken from where the intake stopped and sent.
    connect
        .set_state("bakery", LaneState::Running)
        .await
        .expect("resume");
    eventually(Duration::from_secs(30), "8 delivered", || async {
        p.count("bakery", MessageState::Delivered).await == 8
    })
    .await;
    assert_eq!(v.received_count(), 8);
    connect.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cases_group_as_the_adapter_says() {
    let p = Platform::new(&[("inventory.v1", 1)]).await;
    let v = FakeVendor::start_local().await.expect("vendor");
    // Three different client errors, each message its own failure.
    v.set(Behaviour {
        sequence: vec![
            Behaviour {
                status: Some(400),
                body: Some("bad sku".into()),
                ..Behaviour::default()
            },
            Behaviour {
                status: Some(422),
                body: Some("missing field qty".into()),
                ..Behaviour::default()
            },
            Behaviour {
                status: Some(400),
                body: Some("unknown warehouse".into()),
                ..Behaviour::default()
            },
        ],
        ..Behaviour::default()
    });
    // By default statuses and messages split cases (the unit tests show it); this
    // adapter keeps only the stage and the vendor.
    let config = adapter(
        "coarse",
        &v.url(),
        "cases = { group-by = [\"stage\", \"vendor\"] }",
    );
    let connect = p.connect(&config).await;
    publish_n(&p, "e", 3).await;
    eventually(Duration::from_secs(30), "3 failed", || async {
        p.count("coarse", MessageState::Failed).await == 3
    })
    .await;
    let cases = connect
        .store()
        .cases(Some("coarse"), None, 100)
        .await
        .expect("cases");
    assert_eq!(
        cases.len(),
        1,
        "grouped by stage and vendor only: {cases:?}"
    );
    assert_eq!(cases[0].failures, 3);
    assert_eq!(cases[0].open_messages, 3);
    let ids: std::collections::BTreeSet<_> = p
        .messages("coarse")
        .await
        .into_iter()
        .filter_map(|m| m.case_id)
        .collect();
    assert_eq!(ids.len(), 1);
    connect.shutdown().await;
}
