//! Two services in one host process: one of them panics (in a background task) a moment
//! after it starts. It is restarted on its own, with its restart counted, and handles its
//! events afterwards; the other one handles every one of its events throughout.

mod common;

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;
use switchyard_sdk::sqlx::{self, Sqlite};
use switchyard_sdk::{
    Backend, Context, Event, HandlerError, Host, Lineage, Outgoing, Platform, Service, new_id,
};

#[derive(Event, Serialize, Deserialize, Debug)]
#[event(type = "ping", topic = "pings.v1", key = n)]
struct Ping {
    n: u32,
}

static STARTS: AtomicU32 = AtomicU32::new(0);

async fn record(ctx: Context<Sqlite>, p: Ping) -> Result<(), HandlerError> {
    let mut tx = ctx.tx().await?;
    sqlx::query("CREATE TABLE IF NOT EXISTS pings (n INTEGER PRIMARY KEY)")
        .execute(&mut *tx)
        .await?;
    sqlx::query("INSERT INTO pings (n) VALUES (?)")
        .bind(p.n)
        .execute(&mut *tx)
        .await?;
    Ok(())
}

async fn pings(url: &str) -> i64 {
    let pool = Sqlite::connect(url, true).await.expect("db");
    let n = sqlx::query_as::<_, (i64,)>("SELECT count(*) FROM pings")
        .fetch_one(&pool)
        .await
        .map_or(0, |r| r.0);
    pool.close().await;
    n
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_service_restarts_alone() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let journal = common::open_journal(&tmp.path().join("journal"));
    common::create_topic(&journal, "pings.v1", 2).await;
    let platform = Platform::Journal(Arc::new(journal.clone()));
    let steady_db = common::sqlite_url(tmp.path(), "steady");
    let flaky_db = common::sqlite_url(tmp.path(), "flaky");
    let host = Arc::new(
        Host::new()
            .service(Service::<Sqlite>::new("steady").on(record))
            .service(Service::<Sqlite>::new("flaky").on(record).task(|_h| async {
                if STARTS.fetch_add(1, Ordering::SeqCst) == 0 {
                    tokio::time::sleep(Duration::from_millis(150)).await;
                    panic!("boom (on purpose)");
                }
                std::future::pending::<()>().await;
                Ok(())
            })),
    );
    let launches: BTreeMap<_, _> = [
        (
            "steady".to_string(),
            common::launch(&platform, common::free_port(), &steady_db),
        ),
        (
            "flaky".to_string(),
            common::launch(&platform, common::free_port(), &flaky_db),
        ),
    ]
    .into_iter()
    .collect();
    let (stop, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let h = host.clone();
    let running = tokio::spawn(async move {
        h.run(launches, Duration::from_secs(5), async move {
            let _ = stop_rx.await;
        })
        .await
    });
    // Pings at a steady pace, across the panic and the restart.
    for n in 0..40u32 {
        let ce = Outgoing::of(&Ping { n })
            .and_then(|o| o.stamp(new_id(), "/test", &Lineage::root()))
            .expect("event");
        platform
            .publish("pings.v1", vec![ce], None)
            .await
            .expect("publish");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert!(
        common::eventually(Duration::from_secs(20), || async {
            pings(&steady_db).await == 40 && pings(&flaky_db).await == 40
        })
        .await,
        "steady {} flaky {}",
        pings(&steady_db).await,
        pings(&flaky_db).await
    );
    let states = host.states();
    assert_eq!(states["steady"].restarts, 0, "{states:?}");
    assert_eq!(states["flaky"].restarts, 1, "{states:?}");
    assert!(
        states["flaky"]
            .last_exit
            .as_deref()
            .is_some_and(|e| e.contains("panicked") && e.contains("boom")),
        "{states:?}"
    );
    assert_eq!(STARTS.load(Ordering::SeqCst), 2);
    let _ = stop.send(());
    running.await.expect("join").expect("host ran");
    assert_eq!(host.states()["flaky"].state, "stopped");
    journal.close().await.expect("close");
}
