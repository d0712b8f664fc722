//! The conformance suite: one set of behaviour checks that every [`Store`] backend runs.
//!
//! Each case is a public async function that takes the store under test and a name prefix
//! unique to the call; it creates its own subscriptions under that prefix (so cases can
//! share one database, and a persistent backend can run the suite again), panics with a
//! message naming what went wrong when the backend misbehaves, and deletes its
//! subscriptions when it passes. [`run_all`] runs every case, one after the other.
//!
//! The cases only rely on what the [`Store`] trait documents. The concurrent case spawns
//! tasks, so run the suite on a multi-threaded Tokio runtime:
//!
//! ```text
//! #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
//! async fn conformance() {
//!     let store: Arc<dyn Store> = Arc::new(MyStore::new().await?);
//!     switchyard_store::conformance::run_all(store).await;
//! }
//! ```

pub mod connect;
pub mod leases;
pub mod quotas;

use crate::{
    Cursor, Delivery, DeliveryKey, Error, MAX_ERROR_LEN, MAX_OFFSET, Parked, Result, Store,
    Subscription, SubscriptionSpec,
};
use std::collections::BTreeSet;
use std::fmt::Debug;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

/// The topic most cases use.
pub const TOPIC: &str = "orders.v1";
/// A second topic.
pub const OTHER_TOPIC: &str = "payments.v1";

/// A name prefix unique to this process and call.
pub fn unique_prefix(case: &str) -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    format!("conf-{case}-{}-{nanos:x}-{n}", std::process::id())
}

/// Runs every case of the suite against `store`, each under a fresh prefix.
pub async fn run_all(store: Arc<dyn Store>) {
    subscription_lifecycle(&*store, &unique_prefix("lifecycle")).await;
    invalid_specs_are_rejected(&*store, &unique_prefix("invalid")).await;
    valid_specs_are_accepted(&*store, &unique_prefix("valid")).await;
    unknown_subscription_is_not_found(&*store, &unique_prefix("unknown")).await;
    invalid_arguments_are_rejected(&*store, &unique_prefix("badargs")).await;
    cursors_move_forward_only(&*store, &unique_prefix("cursor")).await;
    seek_moves_cursor_and_drops_in_flight(&*store, &unique_prefix("seek")).await;
    enqueue_advances_cursor_and_is_idempotent(&*store, &unique_prefix("enqueue")).await;
    enqueue_rejects_bad_batches_whole(&*store, &unique_prefix("enqbad")).await;
    due_orders_by_time_then_offset(&*store, &unique_prefix("due")).await;
    ack_is_idempotent(&*store, &unique_prefix("ack")).await;
    ack_all_removes_many_or_none(&*store, &unique_prefix("ackall")).await;
    retry_later_counts_attempts(&*store, &unique_prefix("retry")).await;
    park_unpark_discard_round_trip(&*store, &unique_prefix("park")).await;
    parked_pages_in_key_order(&*store, &unique_prefix("pages")).await;
    delete_cascades(&*store, &unique_prefix("cascade")).await;
    subscriptions_are_isolated(&*store, &unique_prefix("isolated")).await;
    concurrent_enqueue_and_ack(store.clone(), &unique_prefix("concurrent")).await;
    concurrent_duplicate_enqueues_insert_once(store.clone(), &unique_prefix("race")).await;
    event_schemas_are_replaced_whole(&*store, &unique_prefix("schemas")).await;
    connect::lane_intake_is_idempotent(&*store, &unique_prefix("intake")).await;
    connect::connect_bad_input_changes_nothing(&*store, &unique_prefix("cbad")).await;
    connect::due_messages_keep_key_order(&*store, &unique_prefix("keyorder")).await;
    connect::intake_hands_out_what_is_due(&*store, &unique_prefix("ready")).await;
    connect::failures_group_into_cases(&*store, &unique_prefix("cases")).await;
    connect::replies_are_matched_or_recorded(&*store, &unique_prefix("replies")).await;
    connect::replay_resends_or_remaps(&*store, &unique_prefix("replay")).await;
    connect::lane_states_are_kept(&*store, &unique_prefix("lanes")).await;
    leases::leases_have_one_owner_and_expire(&*store, &unique_prefix("lease")).await;
    leases::steal_fences_the_old_owner(&*store, &unique_prefix("steal")).await;
    leases::release_frees_only_for_the_owner(&*store, &unique_prefix("release")).await;
    leases::bad_lease_input_changes_nothing(&*store, &unique_prefix("leasebad")).await;
    leases::racing_owners_never_both_hold_a_lease(store.clone(), &unique_prefix("leaserace")).await;
    quotas::reservations_stop_at_the_limit(&*store, &unique_prefix("quota")).await;
    quotas::ended_windows_are_pruned(&*store, &unique_prefix("quotaprune")).await;
    quotas::bad_quota_input_changes_nothing(&*store, &unique_prefix("quotabad")).await;
    quotas::racing_reservations_never_pass_the_limit(store.clone(), &unique_prefix("quotarace"))
        .await;
}

/// Schemas per topic: put replaces them all, an empty map removes them, topics are
/// separate, and bad names or shapes change nothing.
pub async fn event_schemas_are_replaced_whole(store: &dyn Store, prefix: &str) {
    let topic = format!("{prefix}.events");
    let other = format!("{prefix}.other");
    let mut first = crate::EventSchemas::new();
    first.insert("order.placed".into(), serde_json::json!({"type": "object"}));
    first.insert("order.paid".into(), serde_json::json!(true));
    ok(
        store.put_schemas(&topic, first.clone()).await,
        "put schemas",
    );
    assert_eq!(ok(store.schemas(&topic).await, "schemas"), first);
    assert!(ok(store.schemas(&other).await, "other topic").is_empty());
    let mut second = crate::EventSchemas::new();
    second.insert(
        "order.shipped".into(),
        serde_json::json!({"required": ["id"]}),
    );
    ok(store.put_schemas(&topic, second.clone()).await, "replace");
    assert_eq!(ok(store.schemas(&topic).await, "replaced"), second);
    let mut bad = second.clone();
    bad.insert("order.lost".into(), serde_json::json!("not a schema"));
    assert_invalid(
        store.put_schemas(&topic, bad).await,
        "schemas.order.lost",
        "string schema",
    );
    let mut unnamed = crate::EventSchemas::new();
    unnamed.insert(String::new(), serde_json::json!({}));
    assert_invalid(
        store.put_schemas(&topic, unnamed).await,
        "schemas",
        "empty type",
    );
    assert_invalid(
        store
            .put_schemas("bad topic", crate::EventSchemas::new())
            .await,
        "topic",
        "bad topic",
    );
    assert_eq!(ok(store.schemas(&topic).await, "unchanged"), second);
    ok(
        store.put_schemas(&topic, crate::EventSchemas::new()).await,
        "remove",
    );
    assert!(ok(store.schemas(&topic).await, "removed").is_empty());
}

// ---------------------------------------------------------------------------------------
// helpers

/// Unwraps `r`, panicking with `what` and the error.
pub fn ok<T>(r: Result<T>, what: &str) -> T {
    match r {
        Ok(v) => v,
        Err(e) => panic!("{what}: unexpected error: {e}"),
    }
}

/// Asserts that `r` is [`Error::NotFound`] about `expected_what`.
pub fn assert_not_found<T: Debug>(r: Result<T>, expected_what: &str, context: &str) {
    match r {
        Err(Error::NotFound { what, name }) => {
            assert_eq!(
                what, expected_what,
                "{context}: NotFound names `{what}` (`{name}`), expected `{expected_what}`"
            );
            assert!(!name.is_empty(), "{context}: NotFound has an empty name");
        }
        other => panic!("{context}: expected NotFound({expected_what}), got {other:?}"),
    }
}

/// Asserts that `r` is [`Error::InvalidInput`] about `expected_field`.
pub fn assert_invalid<T: Debug>(r: Result<T>, expected_field: &str, context: &str) {
    match r {
        Err(Error::InvalidInput { field, reason }) => {
            assert_eq!(
                field, expected_field,
                "{context}: InvalidInput names `{field}` ({reason}), expected `{expected_field}`"
            );
            assert!(!reason.is_empty(), "{context}: InvalidInput has no reason");
        }
        other => panic!("{context}: expected InvalidInput({expected_field}), got {other:?}"),
    }
}

/// A valid spec named `name` reading [`TOPIC`] and [`OTHER_TOPIC`].
pub fn spec(name: &str) -> SubscriptionSpec {
    SubscriptionSpec::new(name, [TOPIC, OTHER_TOPIC], "http://127.0.0.1:8080/events")
}

/// Creates the subscription `prefix.suffix` and returns its name.
pub async fn create(store: &dyn Store, prefix: &str, suffix: &str) -> String {
    let name = format!("{prefix}.{suffix}");
    let (_, created) = ok(
        store.put_subscription(spec(&name)).await,
        "put_subscription",
    );
    assert!(
        created,
        "put_subscription of new `{name}` says it was not created"
    );
    name
}

/// A key of `sub` in [`TOPIC`].
pub fn key(sub: &str, partition: u32, offset: u64) -> DeliveryKey {
    DeliveryKey::new(sub, TOPIC, partition, offset)
}

/// A fresh delivery of `key` due at `due`.
pub fn delivery(key: DeliveryKey, due: i64) -> Delivery {
    let partition_key = Some(format!("k{}", key.offset % 3));
    Delivery::new(key, partition_key, due)
}

/// Offsets of `deliveries`, in order.
pub fn offsets(deliveries: &[Delivery]) -> Vec<u64> {
    deliveries.iter().map(|d| d.key.offset).collect()
}

async fn cleanup(store: &dyn Store, names: &[&str]) {
    for name in names {
        ok(
            store.delete_subscription(name).await,
            "cleanup: delete_subscription",
        );
    }
}

// ---------------------------------------------------------------------------------------
// subscriptions

/// Create, read, update (generation), list and delete a subscription.
pub async fn subscription_lifecycle(store: &dyn Store, prefix: &str) {
    let a = format!("{prefix}.a");
    let b = format!("{prefix}.b");

    let (sub, created) = ok(store.put_subscription(spec(&a)).await, "create a");
    assert!(created, "first put must create");
    assert_eq!(sub.spec, spec(&a));
    assert_eq!(sub.generation, 1, "a new subscription has generation 1");
    assert_eq!(sub.created_at_ms, sub.updated_at_ms);
    assert!(sub.created_at_ms > 0, "created-at is a Unix time in ms");
    assert_eq!(ok(store.get_subscription(&a).await, "get a"), sub);

    // The same spec again changes nothing.
    let (again, created) = ok(store.put_subscription(spec(&a)).await, "put same spec");
    assert!(!created, "a second put must not create");
    assert_eq!(again, sub, "putting the same spec must change nothing");

    // A changed spec bumps the generation and keeps created-at.
    let mut changed = spec(&a);
    changed.concurrency = 3;
    changed.types = vec!["order.created".into()];
    changed.retry.max_attempts = 4;
    let (updated, created) = ok(store.put_subscription(changed.clone()).await, "update a");
    assert!(!created);
    assert_eq!(updated.spec, changed);
    assert_eq!(updated.generation, 2, "an update bumps the generation");
    assert_eq!(updated.created_at_ms, sub.created_at_ms);
    assert!(updated.updated_at_ms >= sub.updated_at_ms);
    assert_eq!(
        ok(store.get_subscription(&a).await, "get updated a"),
        updated
    );

    ok(store.put_subscription(spec(&b)).await, "create b");
    let listed: Vec<Subscription> = ok(store.list_subscriptions().await, "list")
        .into_iter()
        .filter(|s| s.spec.name.starts_with(prefix))
        .collect();
    let names: Vec<&str> = listed.iter().map(|s| s.spec.name.as_str()).collect();
    assert_eq!(names, [a.as_str(), b.as_str()], "list is ordered by name");
    assert_eq!(listed[0], updated);

    ok(store.delete_subscription(&a).await, "delete a");
    assert_not_found(
        store.get_subscription(&a).await,
        "subscription",
        "get deleted",
    );
    assert_not_found(
        store.delete_subscription(&a).await,
        "subscription",
        "delete twice",
    );
    let left: Vec<String> = ok(store.list_subscriptions().await, "list after delete")
        .into_iter()
        .map(|s| s.spec.name)
        .filter(|n| n.starts_with(prefix))
        .collect();
    assert_eq!(left, std::slice::from_ref(&b));

    // Re-creating a deleted name starts again at generation 1.
    let (recreated, created) = ok(store.put_subscription(spec(&a)).await, "recreate a");
    assert!(created);
    assert_eq!(recreated.generation, 1);
    cleanup(store, &[&a, &b]).await;
}

/// Every bad field of a spec is rejected with its name, and nothing is stored.
pub async fn invalid_specs_are_rejected(store: &dyn Store, prefix: &str) {
    let name = format!("{prefix}.s");
    type Mutation = Box<dyn Fn(&mut SubscriptionSpec)>;
    fn m(f: impl Fn(&mut SubscriptionSpec) + 'static) -> Mutation {
        Box::new(f)
    }
    let cases: Vec<(&str, Mutation)> = vec![
        ("name", m(|s| s.name = String::new())),
        ("name", m(|s| s.name = "has space".into())),
        ("name", m(|s| s.name = "slash/name".into())),
        ("name", m(|s| s.name = "x".repeat(201))),
        ("topics", m(|s| s.topics.clear())),
        ("topics[1]", m(|s| s.topics[1] = "bad topic".into())),
        ("topics[0]", m(|s| s.topics[0] = String::new())),
        ("topics[2]", m(|s| s.topics.push(TOPIC.into()))),
        ("types[0]", m(|s| s.types = vec![String::new()])),
        ("types[1]", m(|s| s.types = vec!["a".into(), "a b".into()])),
        ("types[1]", m(|s| s.types = vec!["a".into(), "a".into()])),
        ("endpoint", m(|s| s.endpoint = String::new())),
        ("endpoint", m(|s| s.endpoint = "ftp://host/x".into())),
        ("endpoint", m(|s| s.endpoint = "http://".into())),
        ("endpoint", m(|s| s.endpoint = "http:///path".into())),
        ("endpoint", m(|s| s.endpoint = "localhost:8080".into())),
        ("endpoint", m(|s| s.endpoint = "http://host:99999/".into())),
        ("endpoint", m(|s| s.endpoint = "http://ho st/".into())),
        ("concurrency", m(|s| s.concurrency = 0)),
        ("concurrency", m(|s| s.concurrency = 1025)),
        ("max-batch", m(|s| s.max_batch = 0)),
        ("max-batch", m(|s| s.max_batch = 1001)),
        (
            "retry.initial-backoff-ms",
            m(|s| s.retry.initial_backoff_ms = 0),
        ),
        (
            "retry.max-backoff-ms",
            m(|s| {
                s.retry.initial_backoff_ms = 1000;
                s.retry.max_backoff_ms = 999;
            }),
        ),
        ("retry.multiplier", m(|s| s.retry.multiplier = 0.5)),
        ("retry.multiplier", m(|s| s.retry.multiplier = f64::NAN)),
        ("retry.jitter", m(|s| s.retry.jitter = 1.5)),
        ("retry.jitter", m(|s| s.retry.jitter = -0.1)),
        ("retry.jitter", m(|s| s.retry.jitter = f64::INFINITY)),
        ("retry.max-attempts", m(|s| s.retry.max_attempts = 0)),
        ("retry.max-age-ms", m(|s| s.retry.max_age_ms = 0)),
    ];
    for (field, mutate) in cases {
        let mut bad = spec(&name);
        mutate(&mut bad);
        let context = format!("put_subscription with a bad `{field}` ({bad:?})");
        assert_invalid(store.put_subscription(bad.clone()).await, field, &context);
    }
    assert_not_found(
        store.get_subscription(&name).await,
        "subscription",
        "a rejected spec must not be stored",
    );

    // An invalid update leaves the stored subscription as it was.
    let (stored, _) = ok(store.put_subscription(spec(&name)).await, "create");
    let mut bad = spec(&name);
    bad.concurrency = 0;
    assert_invalid(
        store.put_subscription(bad).await,
        "concurrency",
        "bad update",
    );
    assert_eq!(ok(store.get_subscription(&name).await, "get"), stored);
    cleanup(store, &[&name]).await;
}

/// Edge values that are valid are accepted and read back unchanged.
pub async fn valid_specs_are_accepted(store: &dyn Store, prefix: &str) {
    let mut names = Vec::new();
    let endpoints = [
        "https://example.com",
        "http://example.com:1/a/b?c=d#e",
        "https://user:pw@example.com/x",
        "http://[::1]:8080/hook",
        "HTTPS://EXAMPLE.COM/",
    ];
    for (i, endpoint) in endpoints.iter().enumerate() {
        let name = format!("{prefix}.e{i}");
        let mut s = spec(&name);
        s.endpoint = (*endpoint).into();
        s.concurrency = if i % 2 == 0 { 1 } else { 1024 };
        s.types = vec!["com.example.order.created".into(), "x".into()];
        s.retry.jitter = if i % 2 == 0 { 0.0 } else { 1.0 };
        s.retry.multiplier = 1.0;
        s.retry.initial_backoff_ms = 1;
        s.retry.max_backoff_ms = 1;
        s.retry.max_attempts = 1;
        s.retry.max_age_ms = 1;
        let (stored, _) = ok(
            store.put_subscription(s.clone()).await,
            &format!("valid spec with endpoint {endpoint}"),
        );
        assert_eq!(stored.spec, s);
        assert_eq!(ok(store.get_subscription(&name).await, "get").spec, s);
        names.push(name);
    }
    let long = format!("{prefix}.{}", "n".repeat(200 - prefix.len() - 1));
    assert_eq!(long.len(), 200);
    ok(
        store.put_subscription(spec(&long)).await,
        "200-character name",
    );
    names.push(long);
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    cleanup(store, &refs).await;
}

/// Every operation naming an unknown subscription is NotFound (ack is idempotent instead).
pub async fn unknown_subscription_is_not_found(store: &dyn Store, prefix: &str) {
    let sub = format!("{prefix}.missing");
    let k = key(&sub, 0, 1);
    let nf = "subscription";
    assert_not_found(store.get_subscription(&sub).await, nf, "get");
    assert_not_found(store.delete_subscription(&sub).await, nf, "delete");
    assert_not_found(store.cursors(&sub).await, nf, "cursors");
    assert_not_found(store.advance_cursor(&sub, TOPIC, 0, 1).await, nf, "advance");
    assert_not_found(store.seek(&sub, TOPIC, 0, 1).await, nf, "seek");
    assert_not_found(
        store
            .enqueue(
                &sub,
                vec![delivery(k.clone(), 0)],
                Some(Cursor::new(TOPIC, 0, 2)),
            )
            .await,
        nf,
        "enqueue",
    );
    assert_not_found(store.enqueue(&sub, vec![], None).await, nf, "empty enqueue");
    assert_not_found(store.due(&sub, i64::MAX, 10).await, nf, "due");
    assert_not_found(store.in_flight(&sub, TOPIC, 0).await, nf, "in_flight");
    assert_not_found(store.retry_later(&k, 1, 2, "e").await, nf, "retry_later");
    assert_not_found(store.park(&k, 1, "r").await, nf, "park");
    assert_not_found(store.parked(&sub, None, 10).await, nf, "parked");
    assert_not_found(store.unpark(&k, 1).await, nf, "unpark");
    assert_not_found(store.discard(&k).await, nf, "discard");
    assert_not_found(store.stats(&sub).await, nf, "stats");
    assert!(
        !ok(store.ack(&k).await, "ack of an unknown subscription"),
        "ack of an unknown subscription removes nothing"
    );
    assert_not_found(
        store.get_subscription(&sub).await,
        nf,
        "no operation may create the subscription",
    );
}

/// Bad names, topics and offsets in arguments are InvalidInput naming the argument.
pub async fn invalid_arguments_are_rejected(store: &dyn Store, prefix: &str) {
    let sub = create(store, prefix, "s").await;
    let too_far = MAX_OFFSET + 1;
    assert_invalid(store.get_subscription("bad name").await, "name", "get");
    assert_invalid(store.cursors("").await, "subscription", "cursors");
    assert_invalid(
        store.advance_cursor(&sub, "bad topic", 0, 1).await,
        "topic",
        "advance bad topic",
    );
    assert_invalid(
        store.advance_cursor(&sub, TOPIC, 0, too_far).await,
        "offset",
        "advance past the largest offset",
    );
    assert_invalid(
        store.seek(&sub, TOPIC, 0, too_far).await,
        "offset",
        "seek past the largest offset",
    );
    assert_invalid(store.in_flight(&sub, "", 0).await, "topic", "in_flight");
    assert_invalid(store.ack(&key(&sub, 0, too_far)).await, "key.offset", "ack");
    assert_invalid(
        store
            .retry_later(&DeliveryKey::new(&sub, "a/b", 0, 1), 1, 2, "e")
            .await,
        "key.topic",
        "retry_later",
    );
    assert_invalid(
        store.park(&key("bad name", 0, 1), 1, "r").await,
        "key.subscription",
        "park",
    );
    assert_invalid(
        store.parked(&sub, Some(&key("other", 0, 1)), 10).await,
        "after.subscription",
        "parked after another subscription's key",
    );
    // The largest offset itself is fine.
    assert!(ok(
        store.advance_cursor(&sub, TOPIC, 0, MAX_OFFSET).await,
        "advance to the largest offset"
    ));
    assert_eq!(
        ok(store.cursors(&sub).await, "cursors"),
        [Cursor::new(TOPIC, 0, MAX_OFFSET)]
    );
    cleanup(store, &[&sub]).await;
}

// ---------------------------------------------------------------------------------------
// cursors

/// `advance_cursor` creates a cursor and only ever moves it forward.
pub async fn cursors_move_forward_only(store: &dyn Store, prefix: &str) {
    let sub = create(store, prefix, "s").await;
    assert!(ok(store.cursors(&sub).await, "cursors").is_empty());
    assert!(ok(
        store.advance_cursor(&sub, TOPIC, 0, 10).await,
        "create at 10"
    ));
    assert!(!ok(
        store.advance_cursor(&sub, TOPIC, 0, 5).await,
        "back to 5"
    ));
    assert!(!ok(
        store.advance_cursor(&sub, TOPIC, 0, 10).await,
        "same 10"
    ));
    assert!(ok(store.advance_cursor(&sub, TOPIC, 0, 11).await, "to 11"));
    assert!(ok(
        store.advance_cursor(&sub, TOPIC, 3, 0).await,
        "create p3 at 0"
    ));
    assert!(ok(
        store.advance_cursor(&sub, OTHER_TOPIC, 1, 7).await,
        "other"
    ));
    assert!(ok(
        store.advance_cursor(&sub, TOPIC, u32::MAX, 1).await,
        "max p"
    ));
    assert_eq!(
        ok(store.cursors(&sub).await, "cursors"),
        [
            Cursor::new(TOPIC, 0, 11),
            Cursor::new(TOPIC, 3, 0),
            Cursor::new(TOPIC, u32::MAX, 1),
            Cursor::new(OTHER_TOPIC, 1, 7),
        ]
        .into_iter()
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect::<Vec<_>>(),
        "cursors are ordered by topic, then partition"
    );
    cleanup(store, &[&sub]).await;
}

/// `seek` sets a cursor backwards or forwards and drops the partition's in-flight rows,
/// leaving parked rows and other partitions alone.
pub async fn seek_moves_cursor_and_drops_in_flight(store: &dyn Store, prefix: &str) {
    let sub = create(store, prefix, "s").await;
    let batch: Vec<Delivery> = (0..5).map(|o| delivery(key(&sub, 0, o), 0)).collect();
    ok(
        store
            .enqueue(&sub, batch, Some(Cursor::new(TOPIC, 0, 5)))
            .await,
        "enqueue p0",
    );
    ok(
        store
            .enqueue(
                &sub,
                vec![delivery(key(&sub, 1, 0), 0)],
                Some(Cursor::new(TOPIC, 1, 1)),
            )
            .await,
        "enqueue p1",
    );
    ok(store.park(&key(&sub, 0, 2), 10, "broken").await, "park 2");

    let removed = ok(store.seek(&sub, TOPIC, 0, 1).await, "seek back to 1");
    assert_eq!(removed, 4, "seek removes the partition's 4 in-flight rows");
    assert!(ok(store.in_flight(&sub, TOPIC, 0).await, "in_flight p0").is_empty());
    assert_eq!(
        offsets(&ok(store.in_flight(&sub, TOPIC, 1).await, "in_flight p1")),
        [0],
        "seek leaves other partitions alone"
    );
    let parked = ok(store.parked(&sub, None, 10).await, "parked");
    assert_eq!(parked.len(), 1, "seek leaves parked rows");
    let cursors = ok(store.cursors(&sub).await, "cursors");
    assert!(cursors.contains(&Cursor::new(TOPIC, 0, 1)), "{cursors:?}");

    // Re-reading from the new cursor enqueues again, except the parked record.
    let again: Vec<Delivery> = (1..5).map(|o| delivery(key(&sub, 0, o), 0)).collect();
    let inserted = ok(
        store
            .enqueue(&sub, again, Some(Cursor::new(TOPIC, 0, 5)))
            .await,
        "re-enqueue",
    );
    assert_eq!(inserted, 3, "the parked record is not enqueued again");
    assert_eq!(
        offsets(&ok(store.in_flight(&sub, TOPIC, 0).await, "in_flight")),
        [1, 3, 4]
    );

    // Seek forward, and seek on a partition without a cursor creates one.
    ok(store.seek(&sub, TOPIC, 0, 100).await, "seek forward");
    assert_eq!(ok(store.seek(&sub, TOPIC, 9, 42).await, "seek new"), 0);
    let cursors = ok(store.cursors(&sub).await, "cursors");
    assert!(cursors.contains(&Cursor::new(TOPIC, 0, 100)), "{cursors:?}");
    assert!(cursors.contains(&Cursor::new(TOPIC, 9, 42)), "{cursors:?}");
    // After a seek backwards the cursor moves forward again normally.
    ok(store.seek(&sub, TOPIC, 0, 0).await, "seek to 0");
    assert!(ok(store.advance_cursor(&sub, TOPIC, 0, 1).await, "advance"));
    cleanup(store, &[&sub]).await;
}

// ---------------------------------------------------------------------------------------
// deliveries

/// `enqueue` inserts rows and advances the cursor together; a repeat inserts nothing.
pub async fn enqueue_advances_cursor_and_is_idempotent(store: &dyn Store, prefix: &str) {
    let sub = create(store, prefix, "s").await;
    let mut batch: Vec<Delivery> = (10..15).map(|o| delivery(key(&sub, 2, o), 1000)).collect();
    // Every field round-trips, including a delivery enqueued with history.
    batch[1].partition_key = None;
    batch[2].attempts = 3;
    batch[2].first_attempt_at_ms = Some(-5);
    batch[2].last_error = Some("earlier failure ✗".into());
    batch[3].next_attempt_at_ms = i64::MIN;
    let inserted = ok(
        store
            .enqueue(&sub, batch.clone(), Some(Cursor::new(TOPIC, 2, 15)))
            .await,
        "enqueue",
    );
    assert_eq!(inserted, 5);
    assert_eq!(
        ok(store.cursors(&sub).await, "cursors"),
        [Cursor::new(TOPIC, 2, 15)]
    );
    assert_eq!(
        ok(store.in_flight(&sub, TOPIC, 2).await, "in_flight"),
        batch
    );

    // The same enqueue again (a retry after a lost reply) changes nothing.
    let again = ok(
        store
            .enqueue(&sub, batch.clone(), Some(Cursor::new(TOPIC, 2, 15)))
            .await,
        "enqueue again",
    );
    assert_eq!(again, 0, "a repeated enqueue inserts nothing");
    assert_eq!(
        ok(store.in_flight(&sub, TOPIC, 2).await, "in_flight"),
        batch
    );
    // Duplicates within one batch are inserted once.
    let dup = vec![delivery(key(&sub, 2, 20), 0), delivery(key(&sub, 2, 20), 0)];
    assert_eq!(ok(store.enqueue(&sub, dup, None).await, "dup batch"), 1);

    // A batch with only filtered-out records just moves the cursor; never backwards.
    assert_eq!(
        ok(
            store
                .enqueue(&sub, vec![], Some(Cursor::new(TOPIC, 2, 30)))
                .await,
            "empty enqueue"
        ),
        0
    );
    ok(
        store
            .enqueue(&sub, vec![], Some(Cursor::new(TOPIC, 2, 3)))
            .await,
        "enqueue behind the cursor",
    );
    ok(
        store
            .enqueue(&sub, vec![delivery(key(&sub, 0, 0), 0)], None)
            .await,
        "enqueue without a cursor",
    );
    assert_eq!(
        ok(store.cursors(&sub).await, "cursors"),
        [Cursor::new(TOPIC, 2, 30)],
        "the cursor only moves forward, and only when given"
    );
    assert_eq!(ok(store.stats(&sub).await, "stats").in_flight, 7);
    cleanup(store, &[&sub]).await;
}

/// A batch with one bad delivery is rejected whole: no rows, no cursor move.
pub async fn enqueue_rejects_bad_batches_whole(store: &dyn Store, prefix: &str) {
    let sub = create(store, prefix, "s").await;
    let other = create(store, prefix, "other").await;
    let good = delivery(key(&sub, 0, 1), 0);
    assert_invalid(
        store
            .enqueue(
                &sub,
                vec![good.clone(), delivery(key(&other, 0, 2), 0)],
                Some(Cursor::new(TOPIC, 0, 3)),
            )
            .await,
        "deliveries[1].key.subscription",
        "a delivery of another subscription",
    );
    assert_invalid(
        store
            .enqueue(
                &sub,
                vec![good.clone(), delivery(key(&sub, 0, MAX_OFFSET + 1), 0)],
                None,
            )
            .await,
        "deliveries[1].key.offset",
        "an offset too large",
    );
    assert_invalid(
        store
            .enqueue(
                &sub,
                vec![good.clone(), delivery(DeliveryKey::new(&sub, "", 0, 1), 0)],
                None,
            )
            .await,
        "deliveries[1].key.topic",
        "an empty topic",
    );
    assert_invalid(
        store
            .enqueue(&sub, vec![good], Some(Cursor::new("bad topic", 0, 3)))
            .await,
        "cursor-after.topic",
        "a bad cursor",
    );
    assert!(ok(store.in_flight(&sub, TOPIC, 0).await, "in_flight").is_empty());
    assert!(ok(store.cursors(&sub).await, "cursors").is_empty());
    assert!(ok(store.in_flight(&other, TOPIC, 0).await, "other").is_empty());
    cleanup(store, &[&sub, &other]).await;
}

/// `due` returns what is due, by time then offset, up to the limit.
pub async fn due_orders_by_time_then_offset(store: &dyn Store, prefix: &str) {
    let sub = create(store, prefix, "s").await;
    let times = [
        (0u64, 500i64),
        (1, 100),
        (2, 300),
        (3, 100),
        (4, 900),
        (5, -1),
    ];
    let batch = times
        .iter()
        .map(|&(o, t)| delivery(key(&sub, 0, o), t))
        .collect();
    ok(store.enqueue(&sub, batch, None).await, "enqueue");
    let due = ok(store.due(&sub, 500, 100).await, "due at 500");
    assert_eq!(
        offsets(&due),
        [5, 1, 3, 2, 0],
        "ordered by due time, then offset"
    );
    assert!(due.iter().all(|d| d.next_attempt_at_ms <= 500));
    assert_eq!(
        offsets(&ok(store.due(&sub, 500, 2).await, "limit 2")),
        [5, 1]
    );
    assert!(ok(store.due(&sub, 500, 0).await, "limit 0").is_empty());
    assert!(ok(store.due(&sub, -2, 10).await, "nothing due").is_empty());
    assert_eq!(ok(store.due(&sub, i64::MAX, 10).await, "all").len(), 6);
    // A retry moves a delivery later in the order.
    ok(
        store.retry_later(&key(&sub, 0, 5), 0, 950, "e").await,
        "retry",
    );
    assert_eq!(
        offsets(&ok(store.due(&sub, i64::MAX, 10).await, "after retry")),
        [1, 3, 2, 0, 4, 5]
    );
    cleanup(store, &[&sub]).await;
}

/// `ack` removes a row once and is then a no-op.
pub async fn ack_is_idempotent(store: &dyn Store, prefix: &str) {
    let sub = create(store, prefix, "s").await;
    let batch = (0..3).map(|o| delivery(key(&sub, 0, o), 0)).collect();
    ok(store.enqueue(&sub, batch, None).await, "enqueue");
    assert!(ok(store.ack(&key(&sub, 0, 1)).await, "ack 1"));
    assert!(!ok(store.ack(&key(&sub, 0, 1)).await, "ack 1 again"));
    assert!(!ok(store.ack(&key(&sub, 0, 99)).await, "ack unknown"));
    assert_eq!(
        offsets(&ok(store.in_flight(&sub, TOPIC, 0).await, "in_flight")),
        [0, 2]
    );
    // A parked delivery is not acknowledged by ack.
    ok(store.park(&key(&sub, 0, 2), 1, "r").await, "park");
    assert!(!ok(store.ack(&key(&sub, 0, 2)).await, "ack parked"));
    assert_eq!(ok(store.parked(&sub, None, 10).await, "parked").len(), 1);
    cleanup(store, &[&sub]).await;
}

/// `ack_all` removes every listed row it finds, counts them, and with one bad key removes
/// none.
pub async fn ack_all_removes_many_or_none(store: &dyn Store, prefix: &str) {
    let sub = create(store, prefix, "s").await;
    let batch = (0..5).map(|o| delivery(key(&sub, 0, o), 0)).collect();
    ok(store.enqueue(&sub, batch, None).await, "enqueue");
    let keys = [key(&sub, 0, 0), key(&sub, 0, 2), key(&sub, 0, 99)];
    assert_eq!(ok(store.ack_all(&keys).await, "ack_all"), 2);
    assert_eq!(ok(store.ack_all(&keys).await, "ack_all again"), 0);
    assert_eq!(ok(store.ack_all(&[]).await, "ack_all of nothing"), 0);
    let bad = [key(&sub, 0, 3), key(&sub, 0, u64::MAX)];
    assert!(store.ack_all(&bad).await.is_err(), "a key out of range");
    assert_eq!(
        offsets(&ok(store.in_flight(&sub, TOPIC, 0).await, "in_flight")),
        [1, 3, 4],
        "a refused ack_all removes nothing"
    );
    cleanup(store, &[&sub]).await;
}

/// `retry_later` counts attempts, keeps the first attempt's time and the last error.
pub async fn retry_later_counts_attempts(store: &dyn Store, prefix: &str) {
    let sub = create(store, prefix, "s").await;
    let k = key(&sub, 0, 7);
    ok(
        store
            .enqueue(&sub, vec![delivery(k.clone(), 0)], None)
            .await,
        "enqueue",
    );
    let d = ok(
        store.retry_later(&k, 1_000, 1_500, "HTTP 503").await,
        "retry 1",
    );
    assert_eq!(d.attempts, 1);
    assert_eq!(d.first_attempt_at_ms, Some(1_000));
    assert_eq!(d.next_attempt_at_ms, 1_500);
    assert_eq!(d.last_error.as_deref(), Some("HTTP 503"));
    let d2 = ok(
        store.retry_later(&k, 1_600, 2_600, "timeout").await,
        "retry 2",
    );
    assert_eq!(d2.attempts, 2);
    assert_eq!(
        d2.first_attempt_at_ms,
        Some(1_000),
        "first attempt time is kept"
    );
    assert_eq!(d2.next_attempt_at_ms, 2_600);
    assert_eq!(d2.last_error.as_deref(), Some("timeout"));
    assert_eq!(
        ok(store.in_flight(&sub, TOPIC, 0).await, "in_flight"),
        std::slice::from_ref(&d2),
        "retry_later returns what is stored"
    );
    assert!(ok(store.due(&sub, 2_599, 10).await, "not due yet").is_empty());
    assert_eq!(ok(store.due(&sub, 2_600, 10).await, "due"), [d2]);

    let stats = ok(store.stats(&sub).await, "stats");
    assert_eq!(stats.last_error.as_deref(), Some("timeout"));
    assert_eq!(stats.last_error_at_ms, Some(1_600));

    // Huge errors are cut, at a character boundary.
    let huge = "é".repeat(MAX_ERROR_LEN);
    let d3 = ok(store.retry_later(&k, 1, 2, &huge).await, "retry huge");
    let stored = d3.last_error.unwrap_or_default();
    assert!(stored.len() <= MAX_ERROR_LEN && stored.len() >= MAX_ERROR_LEN - 1);
    assert!(huge.starts_with(&stored));

    assert_not_found(
        store.retry_later(&key(&sub, 0, 8), 1, 2, "e").await,
        "delivery",
        "retry of a key not in flight",
    );
    // The error stays in the stats after the delivery is acknowledged.
    assert!(ok(store.ack(&k).await, "ack"));
    let stats = ok(store.stats(&sub).await, "stats after ack");
    assert_eq!(stats.in_flight, 0);
    assert!(stats.last_error.is_some());
    cleanup(store, &[&sub]).await;
}

/// park → parked → unpark → park → discard, with the counts at each step.
pub async fn park_unpark_discard_round_trip(store: &dyn Store, prefix: &str) {
    let sub = create(store, prefix, "s").await;
    let k = key(&sub, 1, 4);
    let mut d = delivery(k.clone(), 0);
    d.partition_key = Some("customer-9".into());
    ok(
        store
            .enqueue(&sub, vec![d, delivery(key(&sub, 1, 5), 0)], None)
            .await,
        "enqueue",
    );
    ok(store.retry_later(&k, 100, 200, "HTTP 500").await, "retry");

    let p = ok(store.park(&k, 300, "HTTP 400: bad payload").await, "park");
    assert_eq!(p.delivery.key, k);
    assert_eq!(p.delivery.attempts, 2, "park counts the final attempt");
    assert_eq!(p.delivery.first_attempt_at_ms, Some(100));
    assert_eq!(p.delivery.partition_key.as_deref(), Some("customer-9"));
    assert_eq!(
        p.delivery.last_error.as_deref(),
        Some("HTTP 400: bad payload")
    );
    assert_eq!(p.reason, "HTTP 400: bad payload");
    assert_eq!(p.parked_at_ms, 300);
    assert_eq!(
        ok(store.parked(&sub, None, 10).await, "parked"),
        std::slice::from_ref(&p)
    );
    assert_eq!(
        offsets(&ok(store.in_flight(&sub, TOPIC, 1).await, "in_flight")),
        [5],
        "a parked delivery is no longer in flight"
    );
    let stats = ok(store.stats(&sub).await, "stats");
    assert_eq!((stats.in_flight, stats.parked), (1, 1));
    assert_eq!(stats.last_error.as_deref(), Some("HTTP 400: bad payload"));
    assert_eq!(stats.last_error_at_ms, Some(300));

    assert_not_found(store.park(&k, 301, "again").await, "delivery", "park twice");
    assert_eq!(
        ok(
            store
                .enqueue(&sub, vec![delivery(k.clone(), 0)], None)
                .await,
            "re-enqueue"
        ),
        0,
        "a parked key is not enqueued again"
    );
    // A delivery parked on its first attempt counts one attempt.
    let first = ok(store.park(&key(&sub, 1, 5), 400, "gone").await, "park 5");
    assert_eq!(first.delivery.attempts, 1);
    assert_eq!(first.delivery.first_attempt_at_ms, Some(400));

    let back = ok(store.unpark(&k, 500).await, "unpark");
    assert_eq!(back.key, k);
    assert_eq!(back.attempts, 0);
    assert_eq!(back.first_attempt_at_ms, None);
    assert_eq!(back.next_attempt_at_ms, 500);
    assert_eq!(back.last_error, None);
    assert_eq!(back.partition_key.as_deref(), Some("customer-9"));
    assert_eq!(
        ok(store.due(&sub, 500, 10).await, "due after unpark"),
        [back]
    );
    assert_eq!(
        ok(store.parked(&sub, None, 10).await, "parked after unpark").len(),
        1
    );
    assert_not_found(
        store.unpark(&k, 501).await,
        "parked delivery",
        "unpark twice",
    );
    assert_not_found(
        store.discard(&k).await,
        "parked delivery",
        "discard in flight",
    );

    ok(store.park(&k, 600, "again").await, "park again");
    ok(store.discard(&k).await, "discard");
    ok(store.discard(&key(&sub, 1, 5)).await, "discard 5");
    assert_not_found(store.discard(&k).await, "parked delivery", "discard twice");
    assert!(ok(store.parked(&sub, None, 10).await, "none parked").is_empty());
    let stats = ok(store.stats(&sub).await, "stats at the end");
    assert_eq!((stats.in_flight, stats.parked), (0, 0));
    cleanup(store, &[&sub]).await;
}

/// `parked` pages through parked deliveries in key order, without gaps or repeats.
pub async fn parked_pages_in_key_order(store: &dyn Store, prefix: &str) {
    let sub = create(store, prefix, "s").await;
    let mut keys = Vec::new();
    for topic in [OTHER_TOPIC, TOPIC] {
        for partition in [10u32, 2] {
            for offset in [30u64, 4, 100] {
                keys.push(DeliveryKey::new(&sub, topic, partition, offset));
            }
        }
    }
    let batch = keys.iter().map(|k| delivery(k.clone(), 0)).collect();
    ok(store.enqueue(&sub, batch, None).await, "enqueue");
    for (i, k) in keys.iter().enumerate() {
        let at = i64::try_from(i).unwrap_or_default();
        ok(store.park(k, at, &format!("reason {i}")).await, "park");
    }
    keys.sort();
    let mut seen: Vec<Parked> = Vec::new();
    let mut after: Option<DeliveryKey> = None;
    loop {
        let page = ok(store.parked(&sub, after.as_ref(), 5).await, "page");
        assert!(page.len() <= 5, "a page holds at most the limit");
        let Some(last) = page.last() else { break };
        after = Some(last.delivery.key.clone());
        seen.extend(page);
    }
    let seen_keys: Vec<DeliveryKey> = seen.into_iter().map(|p| p.delivery.key).collect();
    assert_eq!(
        seen_keys, keys,
        "pages cover every parked key once, in key order"
    );
    assert!(ok(store.parked(&sub, None, 0).await, "limit 0").is_empty());
    cleanup(store, &[&sub]).await;
}

/// Deleting a subscription deletes its cursors, in-flight and parked rows.
pub async fn delete_cascades(store: &dyn Store, prefix: &str) {
    let sub = create(store, prefix, "s").await;
    let batch = (0..4).map(|o| delivery(key(&sub, 0, o), 0)).collect();
    ok(
        store
            .enqueue(&sub, batch, Some(Cursor::new(TOPIC, 0, 4)))
            .await,
        "enqueue",
    );
    ok(store.park(&key(&sub, 0, 0), 1, "r").await, "park");
    ok(
        store.retry_later(&key(&sub, 0, 1), 1, 2, "e").await,
        "retry",
    );
    ok(store.delete_subscription(&sub).await, "delete");

    // The same name again starts from nothing.
    ok(store.put_subscription(spec(&sub)).await, "recreate");
    assert!(ok(store.cursors(&sub).await, "cursors").is_empty());
    assert!(ok(store.in_flight(&sub, TOPIC, 0).await, "in_flight").is_empty());
    assert!(ok(store.parked(&sub, None, 10).await, "parked").is_empty());
    let stats = ok(store.stats(&sub).await, "stats");
    assert_eq!(
        (stats.in_flight, stats.parked, stats.last_error),
        (0, 0, None)
    );
    assert!(!ok(
        store.ack(&key(&sub, 0, 2)).await,
        "ack of a deleted row"
    ));
    cleanup(store, &[&sub]).await;
}

/// Operations on one subscription leave another with the same topics alone.
pub async fn subscriptions_are_isolated(store: &dyn Store, prefix: &str) {
    let a = create(store, prefix, "a").await;
    let b = create(store, prefix, "b").await;
    for sub in [&a, &b] {
        let batch = (0..3).map(|o| delivery(key(sub, 0, o), 0)).collect();
        ok(
            store
                .enqueue(sub, batch, Some(Cursor::new(TOPIC, 0, 3)))
                .await,
            "enqueue",
        );
    }
    ok(store.park(&key(&a, 0, 0), 1, "r").await, "park a");
    ok(store.seek(&a, TOPIC, 0, 0).await, "seek a");
    assert!(
        !ok(store.ack(&key(&a, 0, 1)).await, "ack a"),
        "the seek removed a's in-flight rows"
    );
    ok(store.delete_subscription(&a).await, "delete a");
    assert_eq!(
        offsets(&ok(store.in_flight(&b, TOPIC, 0).await, "b in flight")),
        [0, 1, 2]
    );
    assert_eq!(
        ok(store.cursors(&b).await, "b cursors"),
        [Cursor::new(TOPIC, 0, 3)]
    );
    assert!(ok(store.parked(&b, None, 10).await, "b parked").is_empty());
    cleanup(store, &[&b]).await;
}

// ---------------------------------------------------------------------------------------
// concurrency

/// Several tasks enqueue (advancing their partition's cursor) and ack at once; at the end
/// every count and cursor adds up.
pub async fn concurrent_enqueue_and_ack(store: Arc<dyn Store>, prefix: &str) {
    const TASKS: u32 = 8;
    const BATCHES: u64 = 10;
    const PER_BATCH: u64 = 10;
    let sub = create(&*store, prefix, "s").await;
    let mut handles = Vec::new();
    for partition in 0..TASKS {
        let store = store.clone();
        let sub = sub.clone();
        handles.push(tokio::spawn(async move {
            for b in 0..BATCHES {
                let first = b * PER_BATCH;
                let batch = (first..first + PER_BATCH)
                    .map(|o| delivery(key(&sub, partition, o), 0))
                    .collect();
                let cursor = Cursor::new(TOPIC, partition, first + PER_BATCH);
                let n = ok(store.enqueue(&sub, batch, Some(cursor)).await, "enqueue");
                assert_eq!(n, PER_BATCH);
                // Ack the even offsets of this batch; the odd ones stay in flight.
                for o in (first..first + PER_BATCH).filter(|o| o % 2 == 0) {
                    assert!(ok(store.ack(&key(&sub, partition, o)).await, "ack"));
                }
            }
        }));
    }
    for h in handles {
        if let Err(e) = h.await {
            panic!("a concurrent task failed: {e}");
        }
    }
    let total = BATCHES * PER_BATCH;
    for partition in 0..TASKS {
        let in_flight = ok(store.in_flight(&sub, TOPIC, partition).await, "in_flight");
        let expected: Vec<u64> = (0..total).filter(|o| o % 2 == 1).collect();
        assert_eq!(offsets(&in_flight), expected, "partition {partition}");
    }
    let cursors = ok(store.cursors(&sub).await, "cursors");
    let expected: Vec<Cursor> = (0..TASKS).map(|p| Cursor::new(TOPIC, p, total)).collect();
    assert_eq!(cursors, expected);
    let stats = ok(store.stats(&sub).await, "stats");
    assert_eq!(stats.in_flight, u64::from(TASKS) * total / 2);
    cleanup(&*store, &[&sub]).await;
}

/// The same batch enqueued by several tasks at once is inserted exactly once.
pub async fn concurrent_duplicate_enqueues_insert_once(store: Arc<dyn Store>, prefix: &str) {
    const TASKS: usize = 6;
    let sub = create(&*store, prefix, "s").await;
    let batch: Vec<Delivery> = (0..50).map(|o| delivery(key(&sub, 0, o), 0)).collect();
    let mut handles = Vec::new();
    for _ in 0..TASKS {
        let store = store.clone();
        let sub = sub.clone();
        let batch = batch.clone();
        handles.push(tokio::spawn(async move {
            ok(
                store
                    .enqueue(&sub, batch, Some(Cursor::new(TOPIC, 0, 50)))
                    .await,
                "enqueue",
            )
        }));
    }
    let mut inserted = 0;
    for h in handles {
        match h.await {
            Ok(n) => inserted += n,
            Err(e) => panic!("a concurrent task failed: {e}"),
        }
    }
    assert_eq!(
        inserted, 50,
        "every delivery is inserted by exactly one enqueue"
    );
    assert_eq!(
        ok(store.in_flight(&sub, TOPIC, 0).await, "in_flight"),
        batch
    );
    assert_eq!(
        ok(store.cursors(&sub).await, "cursors"),
        [Cursor::new(TOPIC, 0, 50)]
    );
    cleanup(&*store, &[&sub]).await;
}
