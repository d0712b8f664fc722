//! The conformance suite on the PostgreSQL backend, each test in a database of its own
//! (`sy_test_<random>`, created and dropped on the server `SWITCHYARD_TEST_POSTGRES` names,
//! default `postgres://postgres@127.0.0.1:5432/postgres`); two stores on one database
//! (two instances) racing on the same rows; rows that do not parse; URLs that do not lead
//! to a store. Skipped, saying why, without a server, unless `SWITCHYARD_REQUIRE_SERVICES=1`.

use sqlx::{Connection as _, Executor as _, PgConnection};
use std::sync::Arc;
use switchyard_store::connect::{
    Attempt, AttemptOutcome, MessageState, NewMessage, NewReply, OutboundRequest, ReplyDisposition,
};
use switchyard_store::postgres::testing::TestDatabase;
use switchyard_store::postgres::{PostgresOptions, PostgresStore};
use switchyard_store::{Cursor, Delivery, DeliveryKey, Error, Store, SubscriptionSpec};

const TOPIC: &str = "orders.v1";

async fn open(db: &TestDatabase, pool: u32) -> PostgresStore {
    PostgresStore::open(&db.options(pool))
        .await
        .unwrap_or_else(|e| panic!("open {}: {e}", db.name))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conformance_on_postgres() {
    let Some(db) = TestDatabase::create("conformance_on_postgres").await else {
        return;
    };
    let store = open(&db, 8).await;
    let shared: Arc<dyn Store> = Arc::new(store.clone());
    switchyard_store::conformance::run_all(shared.clone()).await;
    // Every case cleans up after itself.
    assert!(shared.list_subscriptions().await.expect("list").is_empty());
    store.close().await;
    // Reopened (the migrations find the schema current), the suite runs again beside the
    // first run's messages.
    let again = open(&db, 2).await;
    switchyard_store::conformance::run_all(Arc::new(again.clone())).await;
    again.close().await;
    db.drop_it().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn instances_opening_one_database_at_once_migrate_it_once() {
    let Some(db) = TestDatabase::create("instances_opening_at_once").await else {
        return;
    };
    let opts = db.options(2);
    let opens: Vec<_> = (0..4)
        .map(|_| {
            let o = opts.clone();
            tokio::spawn(async move { PostgresStore::open(&o).await })
        })
        .collect();
    for o in opens {
        let store = o.await.expect("task").expect("open");
        store.close().await;
    }
    db.drop_it().await;
}

fn request() -> OutboundRequest {
    OutboundRequest {
        target: "http://127.0.0.1:9/orders".into(),
        method: Some("POST".into()),
        headers: vec![],
        content_type: "application/json".into(),
        body: "{}".into(),
    }
}

fn new_message(adapter: &str, offset: u64) -> NewMessage {
    NewMessage {
        adapter: adapter.into(),
        adapter_hash: "h1".into(),
        topic: "inventory.v1".into(),
        partition: 0,
        offset,
        event_id: format!("e-{offset}"),
        event_type: "stock.low".into(),
        partition_key: None,
        event: serde_json::json!({"id": format!("e-{offset}")}),
        request: Some(request()),
        correlation_id: Some(format!("{adapter}-c{offset}")),
        state: MessageState::Pending,
        failure: None,
    }
}

fn attempt() -> Attempt {
    Attempt {
        n: 0,
        at_ms: 1,
        request: request(),
        status: Some(202),
        response_body: None,
        latency_us: 10,
        delay_ms: None,
        error: None,
        outcome: String::new(),
    }
}

/// Two stores on one database are two Switchyard instances. Whatever they race on, the
/// invariants hold: a batch enqueued by both is inserted once; a key parked by one while
/// the other enqueues it again is in exactly one table; one attempt of a message is
/// recorded, the other instance's is refused; one reply settles a message, the other is
/// late; one of them holds a lease both want; a quota counter both reserve from grants its
/// limit in all.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_racing_on_one_database_keep_every_invariant() {
    let Some(db) = TestDatabase::create("two_instances_racing").await else {
        return;
    };
    let a: Arc<dyn Store> = Arc::new(open(&db, 4).await);
    let b: Arc<dyn Store> = Arc::new(open(&db, 4).await);
    let sub = "racing";
    let spec = SubscriptionSpec::new(sub, [TOPIC], "http://127.0.0.1:9/hook");
    // Both create the subscription at once: one creates it, the other finds it equal.
    let (ra, rb) = tokio::join!(a.put_subscription(spec.clone()), b.put_subscription(spec));
    let (ra, rb) = (ra.expect("put on a"), rb.expect("put on b"));
    assert!(
        ra.1 ^ rb.1,
        "exactly one instance created it: {ra:?} {rb:?}"
    );
    assert_eq!(ra.0.generation, 1);
    assert_eq!(rb.0.generation, 1);

    // The same batches from both instances, over and over.
    for round in 0..10u64 {
        let batch: Vec<Delivery> = (round * 20..round * 20 + 20)
            .map(|o| Delivery::new(DeliveryKey::new(sub, TOPIC, 0, o), None, 0))
            .collect();
        let cursor = Some(Cursor::new(TOPIC, 0, round * 20 + 20));
        let (na, nb) = tokio::join!(
            a.enqueue(sub, batch.clone(), cursor.clone()),
            b.enqueue(sub, batch, cursor)
        );
        assert_eq!(na.expect("a") + nb.expect("b"), 20, "round {round}");
    }
    assert_eq!(
        a.in_flight(sub, TOPIC, 0).await.expect("in flight").len(),
        200
    );

    // a parks every key while b enqueues them all again: each key ends parked, or in
    // flight, never both.
    let keys: Vec<DeliveryKey> = (0..200)
        .map(|o| DeliveryKey::new(sub, TOPIC, 0, o))
        .collect();
    let parker = {
        let (a, keys) = (a.clone(), keys.clone());
        tokio::spawn(async move {
            for k in &keys {
                a.park(k, 5, "given up").await.expect("park");
            }
        })
    };
    let enqueuer = {
        let b = b.clone();
        tokio::spawn(async move {
            for chunk in (0..200u64).collect::<Vec<_>>().chunks(10) {
                let batch = chunk
                    .iter()
                    .map(|&o| Delivery::new(DeliveryKey::new(sub, TOPIC, 0, o), None, 0))
                    .collect();
                b.enqueue(sub, batch, None).await.expect("enqueue again");
            }
        })
    };
    parker.await.expect("parker");
    enqueuer.await.expect("enqueuer");
    let in_flight = a.in_flight(sub, TOPIC, 0).await.expect("in flight");
    let mut parked = Vec::new();
    let mut after = None;
    loop {
        let page = a.parked(sub, after.as_ref(), 100).await.expect("parked");
        let Some(last) = page.last() else { break };
        after = Some(last.delivery.key.clone());
        parked.extend(page.into_iter().map(|p| p.delivery.key.offset));
    }
    assert_eq!(parked.len(), 200, "every key was parked once");
    for d in &in_flight {
        assert!(
            !parked.contains(&d.key.offset),
            "{} is both parked and in flight",
            d.key
        );
    }
    a.delete_subscription(sub).await.expect("delete");

    // One message, attempted by both instances at once: one attempt is recorded.
    let adapter = "racing-vendor";
    a.lane_intake(adapter, vec![new_message(adapter, 0)], None, 1)
        .await
        .expect("intake");
    let id = a
        .due_messages(adapter, 10, &[], 10)
        .await
        .expect("due")
        .first()
        .map(|m| m.id)
        .expect("a due message");
    let await_reply = AttemptOutcome::AwaitReply { deadline_ms: 1_000 };
    let (fa, fb) = tokio::join!(
        a.finish_attempt(id, attempt(), await_reply.clone(), 2),
        b.finish_attempt(id, attempt(), await_reply, 2)
    );
    let recorded = [&fa, &fb].iter().filter(|r| r.is_ok()).count();
    assert_eq!(recorded, 1, "one attempt wins: {fa:?} {fb:?}");
    for r in [&fa, &fb] {
        if let Err(e) = r {
            assert!(
                matches!(e, Error::Conflict { .. }),
                "the other is a conflict: {e}"
            );
        }
    }
    let (m, attempts) = a.message(id).await.expect("message");
    assert_eq!(m.state, MessageState::AwaitingReply);
    assert_eq!(attempts.len(), 1);

    // Its reply, arriving at both instances at once: one settles it, one is late.
    let reply = NewReply {
        adapter: adapter.into(),
        correlation_id: Some(format!("{adapter}-c0")),
        received_at_ms: 3,
        headers: vec![],
        body: "ok".into(),
    };
    let (ya, yb) = tokio::join!(
        a.record_reply(reply.clone(), None, 3),
        b.record_reply(reply, None, 3)
    );
    let mut dispositions = vec![ya.expect("a").disposition, yb.expect("b").disposition];
    dispositions.sort_by_key(|d| d.as_str());
    assert_eq!(
        dispositions,
        [ReplyDisposition::Late, ReplyDisposition::Matched]
    );
    assert_eq!(
        a.message(id).await.expect("message").0.state,
        MessageState::Delivered
    );

    // A lease both instances want, fresh and then expired: one holder each time, and the
    // epoch grows when it changes hands.
    for (round, now) in [(1u64, 1_000i64), (2, 10_000)] {
        let name = "sub/racing/orders.v1/0";
        let (la, lb) = tokio::join!(
            a.acquire_lease(name, "instance-a", now, 5_000),
            b.acquire_lease(name, "instance-b", now, 5_000)
        );
        let (la, lb) = (la.expect("a"), lb.expect("b"));
        assert!(la.is_some() ^ lb.is_some(), "round {round}: {la:?} {lb:?}");
        let held = la.or(lb).expect("a holder");
        if round == 1 {
            assert_eq!(held.epoch, 1);
        } else {
            // The first holder renewing keeps the epoch; the other taking it adds one.
            assert!(held.epoch == 1 || held.epoch == 2, "{held:?}");
        }
    }

    // One quota counter both reserve from, a unit at a time: the limit in all, no more.
    let key = "gateway/racing/day/ann";
    let reserve = |s: Arc<dyn Store>| async move {
        let mut got = 0;
        for _ in 0..30 {
            got += s
                .reserve_quota(key, 0, 86_400_000, 40, 1)
                .await
                .expect("reserve")
                .granted;
        }
        got
    };
    let (ga, gb) = tokio::join!(reserve(a.clone()), reserve(b.clone()));
    assert_eq!(ga + gb, 40, "{ga} + {gb}");
    assert_eq!(a.quotas(key).await.expect("quotas")[0].used, 40);
    db.drop_it().await;
}

fn expect_corrupt<T: std::fmt::Debug>(
    result: Result<T, Error>,
    table: &str,
    key_part: &str,
    column: &str,
) {
    match result {
        Err(e @ Error::Corrupt { .. }) => {
            let Error::Corrupt {
                table: t,
                key,
                reason,
            } = &e
            else {
                unreachable!()
            };
            assert_eq!(*t, table, "{e}");
            assert!(key.contains(key_part), "the key names the row: {e}");
            assert!(reason.contains(column), "the reason names the column: {e}");
        }
        other => panic!("expected Error::Corrupt in `{table}`, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rows_that_do_not_parse_are_reported_with_table_and_key() {
    let Some(db) = TestDatabase::create("rows_that_do_not_parse").await else {
        return;
    };
    let store = open(&db, 2).await;
    let spec = SubscriptionSpec::new("billing", [TOPIC], "http://h/");
    store.put_subscription(spec.clone()).await.expect("put");
    let batch = (0..3)
        .map(|o| Delivery::new(DeliveryKey::new("billing", TOPIC, 1, o), None, 0))
        .collect();
    store
        .enqueue("billing", batch, Some(Cursor::new(TOPIC, 1, 3)))
        .await
        .expect("enqueue");
    store
        .park(&DeliveryKey::new("billing", TOPIC, 1, 0), 5, "r")
        .await
        .expect("park");
    store
        .lane_intake("bakery", vec![new_message("bakery", 7)], None, 1)
        .await
        .expect("intake");
    let mut raw = PgConnection::connect(&db.url)
        .await
        .expect("raw connection");
    let mut exec = async |sql: &str| {
        raw.execute(sql)
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
    };

    exec("UPDATE subscriptions SET spec = '{not json' WHERE name = 'billing'").await;
    expect_corrupt(
        store.get_subscription("billing").await,
        "subscriptions",
        "billing",
        "spec",
    );
    expect_corrupt(
        store.list_subscriptions().await,
        "subscriptions",
        "billing",
        "spec",
    );
    // Putting a good spec repairs the row (and counts as a change).
    let (repaired, created) = store.put_subscription(spec.clone()).await.expect("repair");
    assert!(!created);
    assert_eq!(repaired.generation, 2);

    exec("UPDATE deliveries SET attempts = 5000000000 WHERE record_offset = 2").await;
    expect_corrupt(
        store.in_flight("billing", TOPIC, 1).await,
        "deliveries",
        "orders.v1/1@2",
        "attempts",
    );
    expect_corrupt(
        store
            .retry_later(&DeliveryKey::new("billing", TOPIC, 1, 2), 1, 2, "e")
            .await,
        "deliveries",
        "orders.v1/1@2",
        "attempts",
    );
    exec("UPDATE deliveries SET attempts = 0, record_offset = -7 WHERE record_offset = 2").await;
    expect_corrupt(
        store.due("billing", i64::MAX, 10).await,
        "deliveries",
        "orders.v1/1@-7",
        "record_offset",
    );
    exec("DELETE FROM deliveries WHERE record_offset = -7").await;
    assert_eq!(
        store
            .in_flight("billing", TOPIC, 1)
            .await
            .expect("fixed")
            .len(),
        1
    );

    exec("UPDATE cursors SET partition_no = 99999999999").await;
    expect_corrupt(
        store.cursors("billing").await,
        "cursors",
        "orders.v1/99999999999",
        "partition_no",
    );

    exec("UPDATE parked SET attempts = -1").await;
    expect_corrupt(
        store
            .unpark(&DeliveryKey::new("billing", TOPIC, 1, 0), 9)
            .await,
        "parked",
        "orders.v1/1@0",
        "attempts",
    );
    // The failed unpark changed nothing: the row is still parked (and still damaged).
    let parked: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM parked")
        .fetch_one(&mut raw)
        .await
        .expect("count");
    assert_eq!(parked, 1);

    let mut exec = async |sql: &str| {
        raw.execute(sql)
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
    };
    exec("UPDATE messages SET state = 'lost' WHERE adapter = 'bakery'").await;
    let id = sqlx::query_scalar::<_, i64>("SELECT id FROM messages WHERE adapter = 'bakery'")
        .fetch_one(&mut raw)
        .await
        .expect("id");
    expect_corrupt(
        store.message(u64::try_from(id).expect("id")).await,
        "messages",
        &id.to_string(),
        "state",
    );
    let mut exec = async |sql: &str| {
        raw.execute(sql)
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
    };
    exec("UPDATE messages SET state = 'pending', event = '{\"id\": ' WHERE adapter = 'bakery'")
        .await;
    expect_corrupt(
        store.due_messages("bakery", i64::MAX, &[], 10).await,
        "messages",
        &id.to_string(),
        "event",
    );
    exec("INSERT INTO lanes (lane, state, updated_at_ms) VALUES ('bakery', 'asleep', 0)").await;
    expect_corrupt(store.lane_states().await, "lanes", "bakery", "state");
    exec(
        "INSERT INTO event_schemas (topic, event_type, schema_json) \
         VALUES ('orders.v1', 'order.placed', '{oops')",
    )
    .await;
    expect_corrupt(
        store.schemas(TOPIC).await,
        "event_schemas",
        "order.placed",
        "schema_json",
    );

    // Deleting the subscription still works, and clears its damaged rows.
    store.delete_subscription("billing").await.expect("delete");
    let _ = raw.close().await;
    store.close().await;
    db.drop_it().await;
}

/// PostgreSQL text cannot hold NUL: a vendor's reply or an attempt's body with one is
/// recorded (with U+FFFD in its place), not refused, and a correlation id with one still
/// matches.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nul_characters_from_outside_are_recorded() {
    let Some(db) = TestDatabase::create("nul_characters").await else {
        return;
    };
    let store = open(&db, 2).await;
    let adapter = "nul-vendor";
    let mut m = new_message(adapter, 0);
    m.correlation_id = Some("c\0rr".into());
    m.partition_key = Some("k\0".into());
    let intake = store
        .lane_intake(adapter, vec![m], None, 1)
        .await
        .expect("intake with NUL in its keys");
    let due = store.due_messages(adapter, 10, &[], 10).await.expect("due");
    assert_eq!(intake.ready, due, "handed out as stored, U+FFFD for NUL");
    let id = due[0].id;
    let mut a = attempt();
    a.response_body = Some("bad\0body".into());
    a.error = Some("vendor said \0".into());
    store
        .finish_attempt(id, a, AttemptOutcome::AwaitReply { deadline_ms: 100 }, 2)
        .await
        .expect("attempt with NUL in its body");
    let reply = store
        .record_reply(
            NewReply {
                adapter: adapter.into(),
                correlation_id: Some("c\0rr".into()),
                received_at_ms: 3,
                headers: vec![("x-nul".into(), "\0".into())],
                body: "reply\0body".into(),
            },
            None,
            3,
        )
        .await
        .expect("reply with NUL");
    assert_eq!(reply.disposition, ReplyDisposition::Matched);
    let (_, attempts) = store.message(id).await.expect("message");
    assert_eq!(
        attempts[0].response_body.as_deref(),
        Some("bad\u{FFFD}body")
    );
    let stored = store.replies(adapter, None, 10).await.expect("replies");
    assert_eq!(stored[0].body, "reply\u{FFFD}body");
    store.close().await;
    db.drop_it().await;
}

fn expect_open_error(result: Result<PostgresStore, Error>, names: &str, says: &str) {
    match result {
        Err(e @ Error::Open { .. }) => {
            let message = e.to_string();
            eprintln!("{message}");
            assert!(
                message.contains(names),
                "the error names {names}: {message}"
            );
            assert!(
                message.to_lowercase().contains(says),
                "the error says `{says}`: {message}"
            );
            assert!(
                !message.contains("s3cret"),
                "the password is shown: {message}"
            );
        }
        Err(other) => panic!("expected Error::Open, got {other:?}"),
        Ok(_) => panic!("opening must fail"),
    }
}

#[tokio::test]
async fn urls_that_lead_to_no_store_are_clear_errors_without_the_password() {
    // Nothing listens on this port (bound, then released).
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("port")
        .port();
    let url = format!("postgres://sy:s3cret@127.0.0.1:{port}/sy");
    let opts = PostgresOptions::from_url(&url).expect("a well-formed URL");
    expect_open_error(
        PostgresStore::open(&opts).await,
        &format!("postgres://sy:***@127.0.0.1:{port}/sy"),
        "connection refused",
    );
    for bad in ["mysql://sy:s3cret@h/db", "postgres://sy:s3cret@h/db?pool=0"] {
        match PostgresOptions::from_url(bad) {
            Err(e @ Error::InvalidInput { .. }) => {
                assert!(!e.to_string().contains("s3cret"), "{e}");
            }
            other => panic!("{bad}: expected InvalidInput, got {other:?}"),
        }
    }

    // A server that answers, with a database that does not exist.
    let Some(db) = TestDatabase::create("urls_that_lead_to_no_store").await else {
        return;
    };
    let missing = format!("{}_missing", db.url);
    let opts = PostgresOptions::from_url(&missing).expect("well-formed");
    expect_open_error(
        PostgresStore::open(&opts).await,
        &format!("{}_missing", db.name),
        "does not exist",
    );
    db.drop_it().await;
}

#[tokio::test]
async fn a_newer_schema_and_a_foreign_database_are_reported_at_open() {
    let Some(db) = TestDatabase::create("a_newer_schema").await else {
        return;
    };
    open(&db, 1).await.close().await;
    let mut raw = PgConnection::connect(&db.url).await.expect("raw");
    raw.execute(
        "INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time) \
         VALUES (9999, 'from the future', TRUE, '\\x00'::bytea, 0)",
    )
    .await
    .expect("fake a newer migration");
    let _ = raw.close().await;
    expect_open_error(PostgresStore::open(&db.options(1)).await, &db.name, "9999");
    db.drop_it().await;

    // Another application's tables under our names.
    let Some(db) = TestDatabase::create("a_foreign_database").await else {
        return;
    };
    let mut raw = PgConnection::connect(&db.url).await.expect("raw");
    raw.execute("CREATE TABLE subscriptions (id BIGINT PRIMARY KEY, email TEXT)")
        .await
        .expect("create table");
    let _ = raw.close().await;
    expect_open_error(
        PostgresStore::open(&db.options(1)).await,
        &db.name,
        "schema",
    );
    db.drop_it().await;
}
