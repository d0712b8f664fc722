//! Event-sourced entities over the journal's optimistic concurrency, in process and over
//! the HTTP API (`switchyard-expected-offset`):
//!
//! - many concurrent updates of one account all land: a conflict reloads and decides again;
//! - an append on a stale load is refused with `Error::Conflict` and appends nothing;
//! - a decision that refuses appends nothing; other keys' events do not count as conflicts;
//! - an entity updated from a handler (`Context::entities`) appends with the handled event's
//!   lineage: its trace, its correlation id, and the handled event as the cause.

mod common;

use serde::{Deserialize, Serialize};
use std::sync::Arc;
use switchyard_sdk::sqlx::Sqlite;
use switchyard_sdk::{
    Client, ConflictPolicy, Entities, Entity, Error, Event, Events, HandlerError, Host, Lineage,
    Outgoing, Platform, Service, TraceParent, new_id,
};

#[derive(Event, Serialize, Deserialize, Debug, Clone)]
#[event(type = "account.deposited", topic = "accounts.v1", key = account)]
struct Deposited {
    account: String,
    cents: i64,
}

#[derive(Event, Serialize, Deserialize, Debug, Clone)]
#[event(type = "account.withdrawn", topic = "accounts.v1", key = account)]
struct Withdrawn {
    account: String,
    cents: i64,
}

#[derive(Events, Debug, Clone)]
enum AccountEvent {
    Deposited(Deposited),
    Withdrawn(Withdrawn),
}

#[derive(Default, Debug)]
struct Account {
    balance: i64,
}

impl Entity for Account {
    type Events = AccountEvent;
    fn apply(&mut self, e: &AccountEvent) {
        match e {
            AccountEvent::Deposited(d) => self.balance += d.cents,
            AccountEvent::Withdrawn(w) => self.balance -= w.cents,
        }
    }
}

fn deposit(account: &str, cents: i64) -> AccountEvent {
    AccountEvent::Deposited(Deposited {
        account: account.into(),
        cents,
    })
}

async fn scenario(platform: Platform) {
    let entities = Entities::new(platform, "/bank");
    let policy = ConflictPolicy {
        attempts: 50,
        backoff: std::time::Duration::from_millis(1),
    };
    // 12 concurrent deposits of 1 into one account: each loads, decides, appends.
    let tasks: Vec<_> = (0..12)
        .map(|_| {
            let e = entities.clone();
            tokio::spawn(async move {
                e.update::<Account, _, ()>("acc-1", policy, |_| Ok(vec![deposit("acc-1", 1)]))
                    .await
            })
        })
        .collect();
    let mut conflicts = 0;
    for t in tasks {
        let updated = t.await.expect("task").expect("no error").expect("decided");
        conflicts += updated.tries - 1;
    }
    let acc = entities.load::<Account>("acc-1").await.expect("load");
    assert_eq!(acc.state.balance, 12, "every deposit landed once");
    assert_eq!(acc.events, 12);
    eprintln!("12 concurrent updates took {conflicts} retries after conflicts");

    // A stale load: refused, nothing appended.
    let stale = entities.load::<Account>("acc-1").await.expect("load");
    entities
        .append(&stale, &[deposit("acc-1", 5)])
        .await
        .expect("fresh append");
    match entities.append(&stale, &[deposit("acc-1", 7)]).await {
        Err(Error::Conflict { actual, .. }) => {
            assert!(actual > stale.version, "{actual:?} vs {:?}", stale.version)
        }
        other => panic!("a stale append must conflict: {other:?}"),
    }
    assert_eq!(
        entities
            .load::<Account>("acc-1")
            .await
            .expect("load")
            .state
            .balance,
        17
    );

    // A refusal appends nothing; a new key starts from "no record yet".
    let refused = entities
        .update::<Account, _, &str>("acc-2", policy, |a| {
            if a.balance < 10 {
                Err("insufficient funds")
            } else {
                Ok(vec![AccountEvent::Withdrawn(Withdrawn {
                    account: "acc-2".into(),
                    cents: 10,
                })])
            }
        })
        .await
        .expect("no error");
    assert_eq!(refused.err(), Some("insufficient funds"));
    let fresh = entities.load::<Account>("acc-2").await.expect("load");
    assert_eq!((fresh.version, fresh.events), (None, 0));
    // Another key's appends are not a conflict for this one.
    entities
        .append(&fresh, &[deposit("acc-2", 3)])
        .await
        .expect("first event of acc-2");
    // An event of another key in the batch is refused before anything is sent.
    match entities.append(&fresh, &[deposit("acc-3", 1)]).await {
        Err(Error::InvalidEvent { field, .. }) => assert_eq!(field, "partitionkey"),
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        entities.load::<Account>("").await,
        Err(Error::InvalidEvent { .. })
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn entities_in_process() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let journal = common::open_journal(tmp.path());
    common::create_topic(&journal, "accounts.v1", 3).await;
    scenario(Platform::Journal(Arc::new(journal.clone()))).await;
    journal.close().await.expect("close");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn entities_over_http() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let server = common::Server::start(tmp.path()).await;
    let client = Client::new(&server.url).expect("client");
    client
        .put_topic("accounts.v1", &serde_json::json!({"partitions": 3}))
        .await
        .expect("topic");
    scenario(Platform::Http(client)).await;
    server.stop().await;
}

#[derive(Event, Serialize, Deserialize, Debug, Clone)]
#[event(type = "payout.requested", topic = "payouts.v1", key = account)]
struct PayoutRequested {
    account: String,
    cents: i64,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_handler_updates_an_entity_with_its_events_lineage() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let journal = common::open_journal(&tmp.path().join("journal"));
    common::create_topic(&journal, "accounts.v1", 3).await;
    common::create_topic(&journal, "payouts.v1", 1).await;
    let platform = Platform::Journal(Arc::new(journal.clone()));
    let service = Service::<Sqlite>::new("payouts").on(|ctx, p: PayoutRequested| async move {
        let policy = ConflictPolicy::default();
        ctx.entities()
            .update::<Account, _, ()>(&p.account, policy, |_| {
                Ok(vec![deposit(&p.account, p.cents)])
            })
            .await
            .map_err(|e| HandlerError::Retry(e.to_string()))?
            .map_err(|()| HandlerError::Reject("refused".into()))?;
        Ok(())
    });
    let trace = TraceParent::root();
    let mut lineage = Lineage::root();
    lineage.traceparent = trace;
    lineage.correlation_id = Some("checkout-9".into());
    let cause = Outgoing::of(&PayoutRequested {
        account: "acc-9".into(),
        cents: 42,
    })
    .and_then(|o| o.stamp(new_id(), "/test", &lineage))
    .expect("event");
    platform
        .publish("payouts.v1", vec![cause.clone()], None)
        .await
        .expect("publish");
    let host = Host::new().service(service);
    let url = common::sqlite_url(tmp.path(), "payouts");
    let mut run = host
        .start(
            "payouts",
            common::launch(&platform, common::free_port(), &url),
        )
        .expect("start");
    let entities = Entities::new(platform.clone(), "/test");
    assert!(
        common::eventually(std::time::Duration::from_secs(20), || async {
            entities
                .load::<Account>("acc-9")
                .await
                .is_ok_and(|a| a.state.balance == 42)
        })
        .await,
        "the handler deposited"
    );
    let partition = platform
        .partition_of("accounts.v1", "acc-9")
        .await
        .expect("partition");
    let (events, _) = platform
        .read("accounts.v1", partition, 0, 10)
        .await
        .expect("read");
    assert_eq!(events.len(), 1, "{events:?}");
    let e = &events[0];
    assert_eq!(e.causation_id(), Some(cause.id()));
    assert_eq!(e.correlation_id(), Some("checkout-9"));
    let tp = TraceParent::parse(e.traceparent().expect("traceparent")).expect("valid");
    assert_eq!(tp.trace_id, trace.trace_id, "the handled event's trace");
    assert_eq!(e.source(), "/payouts");
    run.stop(std::time::Duration::from_secs(5)).await;
    journal.close().await.expect("close");
}
