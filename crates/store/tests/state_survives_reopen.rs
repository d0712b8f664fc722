//! Everything a store holds is still there, unchanged, after the store is closed (or just
//! dropped) and the file opened again.

use switchyard_store::sqlite::SqliteStore;
use switchyard_store::{Cursor, Delivery, DeliveryKey, Store, SubscriptionSpec};

const TOPIC: &str = "orders.v1";

/// Everything observable about one subscription.
async fn snapshot(store: &SqliteStore, name: &str) -> String {
    let sub = store.get_subscription(name).await.expect("get");
    let cursors = store.cursors(name).await.expect("cursors");
    let mut in_flight = Vec::new();
    for p in 0..3 {
        in_flight.extend(store.in_flight(name, TOPIC, p).await.expect("in_flight"));
    }
    let parked = store.parked(name, None, 1000).await.expect("parked");
    let stats = store.stats(name).await.expect("stats");
    format!("{sub:?}\n{cursors:?}\n{in_flight:?}\n{parked:?}\n{stats:?}")
}

async fn fill(store: &SqliteStore, name: &str) {
    let mut spec = SubscriptionSpec::new(name, [TOPIC], "https://svc.example/hook");
    spec.types = vec!["order.created".into()];
    spec.retry.max_attempts = 3;
    store.put_subscription(spec.clone()).await.expect("create");
    spec.concurrency = 4;
    let (sub, _) = store.put_subscription(spec).await.expect("update");
    assert_eq!(sub.generation, 2);
    for p in 0..3u32 {
        let batch = (0..10u64)
            .map(|o| {
                let key = DeliveryKey::new(name, TOPIC, p, o);
                Delivery::new(key, Some(format!("k{}", o % 4)), 1_000 + o as i64)
            })
            .collect();
        let n = store
            .enqueue(name, batch, Some(Cursor::new(TOPIC, p, 10)))
            .await
            .expect("enqueue");
        assert_eq!(n, 10);
        store
            .ack(&DeliveryKey::new(name, TOPIC, p, 0))
            .await
            .expect("ack");
        store
            .retry_later(
                &DeliveryKey::new(name, TOPIC, p, 1),
                2_000,
                3_000,
                "HTTP 503",
            )
            .await
            .expect("retry");
        store
            .park(&DeliveryKey::new(name, TOPIC, p, 2), 4_000, "HTTP 400")
            .await
            .expect("park");
    }
}

#[tokio::test]
async fn state_survives_close_and_reopen() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("store.db");
    let store = SqliteStore::open(&path).await.expect("open");
    fill(&store, "billing.worker").await;
    fill(&store, "audit").await;
    let before_a = snapshot(&store, "billing.worker").await;
    let before_b = snapshot(&store, "audit").await;
    let list_before = store.list_subscriptions().await.expect("list");
    store.close().await;

    let store = SqliteStore::open(&path).await.expect("reopen");
    assert_eq!(snapshot(&store, "billing.worker").await, before_a);
    assert_eq!(snapshot(&store, "audit").await, before_b);
    assert_eq!(store.list_subscriptions().await.expect("list"), list_before);

    // The reopened store keeps working: the state goes on from where it was.
    let stats = store.stats("audit").await.expect("stats");
    assert_eq!((stats.in_flight, stats.parked), (24, 3));
    let back = store
        .unpark(&DeliveryKey::new("audit", TOPIC, 0, 2), 5_000)
        .await
        .expect("unpark after reopen");
    assert_eq!(back.attempts, 0);
    store.close().await;
}

#[tokio::test]
async fn state_survives_drop_without_close() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("store.db");
    let before = {
        let store = SqliteStore::open(&path).await.expect("open");
        fill(&store, "s1").await;
        snapshot(&store, "s1").await
        // Dropped here without close().
    };
    let store = SqliteStore::open(&path).await.expect("reopen");
    assert_eq!(snapshot(&store, "s1").await, before);
    // A third open on top of the second (two stores on one file) sees the same state.
    let other = SqliteStore::open(&path).await.expect("second store");
    assert_eq!(snapshot(&other, "s1").await, before);
    other
        .delete_subscription("s1")
        .await
        .expect("delete through the second store");
    assert!(store.list_subscriptions().await.expect("list").is_empty());
}
