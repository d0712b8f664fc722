//! Two buses (two instances) sharing one journal and one store: each dispatches only the
//! partitions it holds the lease of, they share them fairly, and when one shuts down its
//! partitions move to the other, which delivers the rest. Every published event is
//! delivered (duplicates are allowed and counted), none lost.

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use switchyard_bus::{Bus, BusOptions};
use switchyard_journal::file::FileJournal;
use switchyard_journal::{Journal, Record, TopicConfig, TopicName};
use switchyard_store::sqlite::SqliteStore;
use switchyard_store::{Store, SubscriptionSpec};

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

const PARTITIONS: u32 = 4;

async fn publish(journal: &FileJournal, topic: &TopicName, from: u32, to: u32) {
    for p in 0..PARTITIONS {
        let records = (from..to)
            .map(|i| {
                let event = serde_json::json!({
                    "specversion": "1.0", "id": format!("e{p}-{i}"), "source": "/test",
                    "type": "job", "data": i,
                });
                Record::new(serde_json::to_vec(&event).expect("json")).with_key(format!("k{i}"))
            })
            .collect();
        journal
            .append(topic, p, records, None)
            .await
            .expect("append");
    }
}

fn options(instance: &str) -> BusOptions {
    BusOptions {
        poll: Duration::from_millis(20),
        lease_ttl: Duration::from_millis(600),
        instance: instance.to_owned(),
        ..BusOptions::default()
    }
}

async fn wait_for(what: &str, secs: u64, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partitions_are_shared_fairly_and_move_when_an_instance_leaves() {
    // The bus reports a lease it could not take or renew only as a warning: a failure of
    // this test should show them.
    let _ = tracing_subscriber::fmt()
        .with_test_writer()
        .with_max_level(tracing_subscriber::filter::LevelFilter::WARN)
        .try_init();
    let dir = tempfile::tempdir().expect("tempdir");
    let journal = FileJournal::open(dir.path().join("journal")).expect("journal");
    let topic = TopicName::new("jobs.v1").expect("name");
    journal
        .create_topic(
            &topic,
            TopicConfig {
                partitions: PARTITIONS,
                ..TopicConfig::default()
            },
        )
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

    // Two processes' worth of store connections on one database file.
    let path = dir.path().join("store.sqlite");
    let store_a: Arc<dyn Store> = Arc::new(SqliteStore::open(&path).await.expect("store a"));
    let store_b: Arc<dyn Store> = Arc::new(SqliteStore::open(&path).await.expect("store b"));
    store_a
        .put_subscription(SubscriptionSpec::new("worker", ["jobs.v1"], endpoint))
        .await
        .expect("subscription");
    let shared: Arc<dyn Journal> = Arc::new(journal.clone());

    // Bad lease settings are refused, naming the option.
    let bad = Bus::start(
        shared.clone(),
        store_a.clone(),
        BusOptions {
            lease_ttl: Duration::from_millis(1),
            ..options("a")
        },
    )
    .await;
    assert!(
        matches!(&bad, Err(switchyard_bus::StoreError::InvalidInput { field, .. }) if field == "lease-ttl"),
        "a 1 ms ttl is refused"
    );
    let bad = Bus::start(shared.clone(), store_a.clone(), options("has space")).await;
    assert!(
        matches!(&bad, Err(switchyard_bus::StoreError::InvalidInput { field, .. }) if field == "instance"),
        "an instance name with a space is refused"
    );

    let a = Bus::start(shared.clone(), store_a.clone(), options("a"))
        .await
        .expect("bus a");
    // Alone, `a` takes every partition.
    assert_eq!(a.owned_partitions("worker").len(), PARTITIONS as usize);
    let b = Bus::start(shared.clone(), store_b.clone(), options("b"))
        .await
        .expect("bus b");
    // Within a few ticks `a` gives back what is beyond its share and `b` takes it.
    wait_for("a fair share", 20, || {
        a.owned_partitions("worker").len() == 2 && b.owned_partitions("worker").len() == 2
    })
    .await;
    let mut all: Vec<_> = a.owned_partitions("worker");
    all.extend(b.owned_partitions("worker"));
    all.sort();
    all.dedup();
    assert_eq!(all.len(), PARTITIONS as usize, "no partition held twice");
    let leases = store_a.leases("sub/worker/").await.expect("leases");
    assert_eq!(leases.len(), PARTITIONS as usize);

    publish(&journal, &topic, 0, 50).await;
    let total = (PARTITIONS * 50) as usize;
    wait_for("the first events", 30, || {
        seen.lock().expect("lock").len() == total
    })
    .await;

    // `a` leaves: its partitions move to `b`, which delivers what comes next.
    a.shutdown().await;
    wait_for("b holding every partition", 20, || {
        b.owned_partitions("worker").len() == PARTITIONS as usize
    })
    .await;
    publish(&journal, &topic, 50, 100).await;
    let total = (PARTITIONS * 100) as usize;
    wait_for("every event", 30, || {
        seen.lock().expect("lock").len() == total
    })
    .await;
    b.shutdown().await;
    let seen = seen.lock().expect("lock").clone();
    for p in 0..PARTITIONS {
        for i in 0..100 {
            assert!(seen.contains_key(&format!("e{p}-{i}")), "e{p}-{i} lost");
        }
    }
    let duplicates: u32 = seen.values().map(|n| n - 1).sum();
    eprintln!("duplicates: {duplicates}");
    // Shut down cleanly, both gave their leases back.
    let leases = store_b.leases("sub/worker/").await.expect("leases");
    assert!(leases.iter().all(|l| l.is_released()), "{leases:?}");
}
