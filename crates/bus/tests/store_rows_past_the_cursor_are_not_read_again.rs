//! The bus commits a subscription's cursor lazily, at the low watermark of what it settled,
//! while a failed delivery gets its row in the store at once. A crash in between leaves rows
//! (in flight or parked) at or after the committed cursor. After a restart the reader must
//! not read those offsets again as fresh: a parked event stays parked (not delivered), an
//! in-flight one is delivered once, from the store; everything else once.

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use switchyard_bus::{Bus, BusOptions};
use switchyard_journal::file::FileJournal;
use switchyard_journal::{Journal, Record, TopicConfig, TopicName};
use switchyard_store::sqlite::SqliteStore;
use switchyard_store::{Delivery, DeliveryKey, Store, SubscriptionSpec};

type Seen = Arc<Mutex<HashMap<String, u32>>>;

async fn hook(State(seen): State<Seen>, headers: HeaderMap) -> StatusCode {
    let id = headers
        .get("ce-id")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    *seen.lock().expect("lock").entry(id).or_default() += 1;
    StatusCode::OK
}

#[tokio::test]
async fn rows_written_before_the_cursor_moved_are_not_delivered_as_fresh() {
    let dir = tempfile::tempdir().expect("tempdir");
    let journal = FileJournal::open(dir.path().join("journal")).expect("journal");
    let topic = TopicName::new("jobs.v1").expect("name");
    journal
        .create_topic(
            &topic,
            TopicConfig {
                partitions: 1,
                ..TopicConfig::default()
            },
        )
        .await
        .expect("topic");
    let records = (0..10)
        .map(|i| {
            let event = serde_json::json!({
                "specversion": "1.0", "id": format!("e{i}"), "source": "/test",
                "type": "job", "data": i,
            });
            Record::new(serde_json::to_vec(&event).expect("json")).with_key(format!("k{}", i % 3))
        })
        .collect();
    journal
        .append(&topic, 0, records, None)
        .await
        .expect("append");

    let seen: Seen = Arc::default();
    let app = axum::Router::new()
        .route("/hook", axum::routing::post(hook))
        .with_state(seen.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let endpoint = format!("http://{}/hook", listener.local_addr().expect("addr"));
    tokio::spawn(async move { axum::serve(listener, app).await });

    // The state a crash leaves: cursor still at 0, offset 3 parked, offset 5 in flight.
    let store = SqliteStore::open(dir.path().join("store.sqlite"))
        .await
        .expect("store");
    store
        .put_subscription(SubscriptionSpec::new("worker", ["jobs.v1"], endpoint))
        .await
        .expect("subscription");
    let key = |offset| DeliveryKey::new("worker", "jobs.v1", 0, offset);
    let rows = [3, 5]
        .map(|o| Delivery::new(key(o), Some(format!("k{}", o % 3)), 0))
        .to_vec();
    store.enqueue("worker", rows, None).await.expect("enqueue");
    store.park(&key(3), 0, "rejected").await.expect("park");

    let journal: Arc<dyn Journal> = Arc::new(journal);
    let store: Arc<dyn Store> = Arc::new(store);
    let bus = Bus::start(journal, store.clone(), BusOptions::default())
        .await
        .expect("bus");
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let cursor = store
            .cursors("worker")
            .await
            .expect("cursors")
            .first()
            .map_or(0, |c| c.offset);
        let stats = store.stats("worker").await.expect("stats");
        if cursor == 10 && stats.in_flight == 0 {
            assert_eq!(stats.parked, 1, "offset 3 stays parked");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "not caught up: cursor {cursor}, {stats:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    bus.shutdown().await;
    let seen = seen.lock().expect("lock").clone();
    assert!(
        !seen.contains_key("e3"),
        "a parked event was delivered: {seen:?}"
    );
    for i in (0..10).filter(|&i| i != 3) {
        assert_eq!(seen.get(&format!("e{i}")), Some(&1), "e{i}: {seen:?}");
    }
}
