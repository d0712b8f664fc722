//! The bus's fault hook (`switchyard chaos`): every push asks the `PushFaults` it was given
//! first. A push to a subscriber that is "down" never reaches it and is retried as a failed
//! delivery (its last error names the fault); once the fault is cleared the event is
//! delivered, once. A "slow" fault delays the push and then sends it; an injected status is
//! classified like a real answer (a 4xx parks). Real journal, store and HTTP subscriber.

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use switchyard_bus::push::{InjectedFault, PushFaults};
use switchyard_bus::{Bus, BusOptions};
use switchyard_journal::file::FileJournal;
use switchyard_journal::{Journal, Record, TopicConfig, TopicName};
use switchyard_store::sqlite::SqliteStore;
use switchyard_store::{RetryPolicy, Store, SubscriptionSpec};

type Seen = Arc<Mutex<HashMap<String, (u32, Instant)>>>;

async fn hook(State(seen): State<Seen>, headers: HeaderMap) -> StatusCode {
    let id = headers
        .get("ce-id")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    let mut seen = seen.lock().expect("lock");
    let e = seen.entry(id).or_insert((0, Instant::now()));
    e.0 += 1;
    StatusCode::OK
}

/// The fault in force, and the endpoints asked about.
#[derive(Default)]
struct Table {
    fault: Mutex<Option<InjectedFault>>,
    asked: Mutex<Vec<String>>,
}

impl PushFaults for Table {
    fn before_push(&self, endpoint: &str) -> Option<InjectedFault> {
        self.asked.lock().expect("lock").push(endpoint.to_string());
        self.fault.lock().expect("lock").clone()
    }
}

async fn wait_until<F: AsyncFnMut() -> bool>(what: &str, mut f: F) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !f().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_push_to_a_faulty_subscriber_is_retried_and_delivered_once_cleared() {
    let dir = tempfile::tempdir().expect("tempdir");
    let journal = FileJournal::open(dir.path().join("journal")).expect("journal");
    let topic = TopicName::new("jobs.v1").expect("name");
    journal
        .create_topic(&topic, TopicConfig::default())
        .await
        .expect("topic");
    let seen: Seen = Arc::default();
    let app = axum::Router::new()
        .route("/hook", axum::routing::post(hook))
        .with_state(seen.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let endpoint = format!("http://{}/hook", listener.local_addr().expect("addr"));
    tokio::spawn(async move { axum::serve(listener, app).await });

    let store = SqliteStore::open(dir.path().join("store.sqlite"))
        .await
        .expect("store");
    let mut spec = SubscriptionSpec::new("worker", ["jobs.v1"], endpoint.clone());
    spec.retry = RetryPolicy {
        initial_backoff_ms: 50,
        max_backoff_ms: 200,
        jitter: 0.0,
        max_attempts: 1000,
        ..RetryPolicy::default()
    };
    store.put_subscription(spec).await.expect("subscription");
    let journal: Arc<dyn Journal> = Arc::new(journal);
    let store: Arc<dyn Store> = Arc::new(store);
    let table = Arc::new(Table::default());
    *table.fault.lock().expect("lock") = Some(InjectedFault {
        delay: Duration::ZERO,
        fail: Some(None),
        what: "fault injected: down".into(),
    });
    let bus = Bus::start(journal.clone(), store.clone(), BusOptions::default())
        .await
        .expect("bus");
    assert!(bus.set_push_faults(table.clone()));
    assert!(!bus.set_push_faults(table.clone()), "set once");

    let append = |id: &'static str| {
        let journal = journal.clone();
        let topic = topic.clone();
        async move {
            let event = serde_json::json!({
                "specversion": "1.0", "id": id, "source": "/test", "type": "job", "data": 1,
            });
            journal
                .append(
                    &topic,
                    0,
                    vec![Record::new(serde_json::to_vec(&event).expect("json")).with_key(id)],
                    None,
                )
                .await
                .expect("append");
        }
    };
    append("e1").await;

    // Down: retried (several attempts recorded), never received.
    wait_until("several failed attempts", async || {
        let asked = table.asked.lock().expect("lock").len();
        let stats = store.stats("worker").await.expect("stats");
        asked >= 3 && stats.in_flight == 1
    })
    .await;
    let stats = store.stats("worker").await.expect("stats");
    let error = stats.last_error.unwrap_or_default();
    assert!(error.contains("fault injected: down"), "{error}");
    assert!(seen.lock().expect("lock").is_empty(), "a push went through");
    assert!(
        table
            .asked
            .lock()
            .expect("lock")
            .iter()
            .all(|e| *e == endpoint)
    );

    // Cleared: delivered, once.
    *table.fault.lock().expect("lock") = None;
    wait_until("the delivery after the fault is cleared", async || {
        let stats = store.stats("worker").await.expect("stats");
        seen.lock().expect("lock").contains_key("e1") && stats.in_flight == 0
    })
    .await;
    assert_eq!(seen.lock().expect("lock")["e1"].0, 1);

    // Slow: pushed after the delay.
    *table.fault.lock().expect("lock") = Some(InjectedFault {
        delay: Duration::from_millis(400),
        fail: None,
        what: "fault injected: slow".into(),
    });
    let appended = Instant::now();
    append("e2").await;
    wait_until("the slow push", async || {
        seen.lock().expect("lock").contains_key("e2")
    })
    .await;
    let took = seen.lock().expect("lock")["e2"].1 - appended;
    assert!(took >= Duration::from_millis(400), "{took:?}");

    // An injected 404 is the subscriber refusing the event for good: parked.
    *table.fault.lock().expect("lock") = Some(InjectedFault {
        delay: Duration::ZERO,
        fail: Some(Some(404)),
        what: "fault injected: down".into(),
    });
    append("e3").await;
    wait_until("the injected 404 to park", async || {
        store.stats("worker").await.expect("stats").parked == 1
    })
    .await;
    assert!(!seen.lock().expect("lock").contains_key("e3"));
    bus.shutdown().await;
}
