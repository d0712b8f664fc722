//! A service pulling a one-partition topic straight from the journal (in process):
//!
//! - each event runs once, its writes and its published event committed with the inbox row
//!   and the cursor;
//! - a key whose handler fails is retried with backoff while the other keys of the partition
//!   go on; its own later events wait, so each key's events run in order;
//! - a rejected event is parked (`switchyard_parked`) and its key moves on; a handler that
//!   panics fails only that attempt;
//! - published events carry the cause's trace, correlation id and id as causation;
//! - after a restart, and after the cursor is moved back to the start, nothing runs twice.

mod common;

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;
use switchyard_journal::{Journal, ReadLimits};
use switchyard_sdk::sqlx::{self, Sqlite};
use switchyard_sdk::{
    Backend, CloudEvent, Context, Event, HandlerError, Host, Lineage, Outgoing, Platform,
    RetryPolicy, Service, TraceParent, new_id,
};

#[derive(Event, Serialize, Deserialize, Clone)]
#[event(type = "order.placed", topic = "orders.v1", key = order)]
struct Placed {
    order: String,
    n: u32,
}

#[derive(Event, Serialize, Deserialize)]
#[event(type = "order.tallied", topic = "tallies.v1", key = order)]
struct Tallied {
    order: String,
    n: u32,
}

static BAD_KEY_FAILURES: AtomicU32 = AtomicU32::new(0);
static PANICS: AtomicU32 = AtomicU32::new(0);

async fn on_placed(ctx: Context<Sqlite>, ev: Placed) -> Result<(), HandlerError> {
    if ev.order == "poison" {
        return Err(HandlerError::reject("poison is never accepted"));
    }
    if ev.order == "bad-key" && BAD_KEY_FAILURES.fetch_add(1, Ordering::SeqCst) < 2 {
        return Err(HandlerError::retry("the database is busy (on purpose)"));
    }
    if ev.order == "panic-once" && PANICS.fetch_add(1, Ordering::SeqCst) == 0 {
        panic!("a bug in the handler (on purpose)");
    }
    let mut tx = ctx.tx().await?;
    sqlx::query("INSERT INTO seen (order_id, n) VALUES (?, ?)")
        .bind(&ev.order)
        .bind(ev.n)
        .execute(&mut *tx)
        .await?;
    drop(tx);
    ctx.publish(&Tallied {
        order: ev.order,
        n: ev.n,
    })?;
    Ok(())
}

fn service() -> Service<Sqlite> {
    Service::new("tally").on(on_placed).retry(RetryPolicy {
        initial_backoff: Duration::from_millis(60),
        max_backoff: Duration::from_millis(200),
        multiplier: 2.0,
        max_attempts: 5,
    })
}

async fn seen(url: &str) -> Vec<(i64, String, i64)> {
    let pool = Sqlite::connect(url, true).await.expect("db");
    let rows = sqlx::query_as("SELECT seq, order_id, n FROM seen ORDER BY seq")
        .fetch_all(&pool)
        .await
        .expect("seen");
    pool.close().await;
    rows
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pulled_events_run_once_in_key_order() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let journal = common::open_journal(&tmp.path().join("journal"));
    common::create_topic(&journal, "orders.v1", 1).await;
    common::create_topic(&journal, "tallies.v1", 1).await;
    let platform = Platform::Journal(Arc::new(journal.clone()));
    let url = common::sqlite_url(tmp.path(), "tally");
    {
        let pool = Sqlite::connect(&url, true).await.expect("db");
        sqlx::query(
            "CREATE TABLE seen (seq INTEGER PRIMARY KEY AUTOINCREMENT, order_id TEXT, n INTEGER)",
        )
        .execute(&pool)
        .await
        .expect("table");
        pool.close().await;
    }

    let trace = TraceParent::parse("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
        .expect("traceparent");
    let lineage = Lineage {
        traceparent: trace,
        tracestate: None,
        correlation_id: Some("checkout-7".into()),
        causation_id: None,
    };
    let mut events = Vec::new();
    for n in 1..=5 {
        for order in ["bad-key", "a", "b"] {
            events.push(Placed {
                order: order.into(),
                n,
            });
        }
    }
    events.insert(
        4,
        Placed {
            order: "poison".into(),
            n: 1,
        },
    );
    events.insert(
        7,
        Placed {
            order: "panic-once".into(),
            n: 1,
        },
    );
    let mut ids = BTreeMap::new();
    for e in &events {
        let ce = Outgoing::of(e)
            .and_then(|o| o.stamp(new_id(), "/test", &lineage))
            .expect("event");
        ids.insert(ce.id().to_string(), (e.order.clone(), e.n));
        platform
            .publish("orders.v1", vec![ce], None)
            .await
            .expect("publish");
    }

    let host = Host::new().service(service());
    let port = common::free_port();
    let mut run = host
        .start("tally", common::launch(&platform, port, &url))
        .expect("start");
    let expected = 16; // a, b, bad-key x5 and panic-once; poison is parked
    assert!(
        common::eventually(Duration::from_secs(20), || async {
            seen(&url).await.len() >= expected
        })
        .await,
        "handled: {:?}",
        seen(&url).await
    );
    let rows = seen(&url).await;
    assert_eq!(rows.len(), expected, "each event once: {rows:?}");
    for order in ["a", "b", "bad-key"] {
        let ns: Vec<i64> = rows.iter().filter(|r| r.1 == order).map(|r| r.2).collect();
        assert_eq!(ns, vec![1, 2, 3, 4, 5], "{order} in order");
    }
    // The failing key held up only itself: every event of the others ran before its first.
    let first_bad = rows.iter().find(|r| r.1 == "bad-key").map(|r| r.0);
    let last_a = rows.iter().filter(|r| r.1 == "a").map(|r| r.0).max();
    assert!(last_a < first_bad, "a did not wait for bad-key: {rows:?}");
    assert_eq!(BAD_KEY_FAILURES.load(Ordering::SeqCst), 2 + 5);

    let pool = Sqlite::connect(&url, true).await.expect("db");
    let parked: Vec<(String, String, i64)> =
        sqlx::query_as("SELECT event_id, error, attempts FROM switchyard_parked")
            .fetch_all(&pool)
            .await
            .expect("parked");
    assert_eq!(parked.len(), 1, "{parked:?}");
    assert_eq!(ids[&parked[0].0].0, "poison");
    assert!(parked[0].1.contains("never accepted"), "{parked:?}");
    assert_eq!(parked[0].2, 1, "a rejection is parked at once");
    pool.close().await;

    // What it published carries the lineage of what caused it.
    assert!(
        common::eventually(Duration::from_secs(10), || async {
            tallies(&journal).await.len() >= expected
        })
        .await
    );
    let tallies = tallies(&journal).await;
    assert_eq!(tallies.len(), expected);
    for t in &tallies {
        let cause = t.causation_id().expect("causationid");
        assert!(ids.contains_key(cause), "caused by one of ours: {cause}");
        assert_eq!(t.correlation_id(), Some("checkout-7"));
        let tp = TraceParent::parse(t.traceparent().expect("traceparent")).expect("valid");
        assert_eq!(tp.trace_id, trace.trace_id, "same trace");
        assert_ne!(tp.parent_id, trace.parent_id, "a span of its own");
        assert_eq!(t.source(), "/tally");
    }

    // Restart, and replay from the start: nothing runs twice; a new event runs once.
    assert_eq!(
        run.stop(Duration::from_secs(5)).await,
        switchyard_sdk::Exit::Stopped
    );
    let pool = Sqlite::connect(&url, true).await.expect("db");
    sqlx::query("UPDATE switchyard_cursors SET next_offset = 0")
        .execute(&pool)
        .await
        .expect("rewind");
    pool.close().await;
    let mut run = host
        .start("tally", common::launch(&platform, port, &url))
        .expect("start again");
    let ce = Outgoing::of(&Placed {
        order: "a".into(),
        n: 6,
    })
    .and_then(|o| o.stamp(new_id(), "/test", &lineage))
    .expect("event");
    platform
        .publish("orders.v1", vec![ce], None)
        .await
        .expect("publish");
    assert!(
        common::eventually(Duration::from_secs(10), || async {
            seen(&url).await.len() > expected
        })
        .await
    );
    // Give a replayed duplicate the chance to show up.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let rows = seen(&url).await;
    assert_eq!(rows.len(), expected + 1, "{rows:?}");
    assert_eq!(rows.last().map(|r| (r.1.as_str(), r.2)), Some(("a", 6)));
    assert_eq!(
        run.stop(Duration::from_secs(5)).await,
        switchyard_sdk::Exit::Stopped
    );
    journal.close().await.expect("close");
}

async fn tallies(journal: &dyn Journal) -> Vec<CloudEvent> {
    let batch = journal
        .read(&common::topic("tallies.v1"), 0, 0, ReadLimits::default())
        .await
        .expect("read");
    batch
        .records
        .iter()
        .map(|r| CloudEvent::from_record(r, 0))
        .collect()
}
