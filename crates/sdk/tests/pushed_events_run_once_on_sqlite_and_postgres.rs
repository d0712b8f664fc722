//! A service that a real subscription pushes to (`POST /events`), with its inbox and outbox
//! on SQLite and on PostgreSQL:
//!
//! - the same event pushed twice runs once (the second is answered as a duplicate), and a
//!   subscription moved back to the start redelivers everything without effect;
//! - bad input is answered 400 with the bad attribute named; a rejection is 400, "not now"
//!   503 with `Retry-After`, a failure 500, and none of them leaves a write or an inbox row
//!   behind (the redelivery runs the handler again);
//! - what the handler published reaches the topic through the outbox, once each.

mod common;

use futures::future::BoxFuture;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use std::time::Duration;
use switchyard_sdk::{Backend, Client, Consume, Event, Host, Platform, Service, SubscriptionSpec};

#[derive(Event, Serialize, Deserialize, Debug)]
#[event(type = "thing.made", topic = "things.v1", key = thing)]
pub struct Thing {
    pub thing: String,
    pub n: i64,
}

#[derive(Event, Serialize, Deserialize, Debug)]
#[event(type = "thing.noted", topic = "notes.v1", key = thing)]
pub struct Noted {
    pub thing: String,
}

/// The same service on each database (only the SQL placeholders differ).
macro_rules! keeper {
    ($module:ident, $db:ty, $insert:literal) => {
        mod $module {
            use super::*;
            use switchyard_sdk::sqlx;
            use switchyard_sdk::{Context, HandlerError};

            async fn on_thing(ctx: Context<$db>, t: Thing) -> Result<(), HandlerError> {
                let mut tx = ctx.tx().await?;
                // Written first: a failure below must roll it back.
                sqlx::query($insert)
                    .bind(&t.thing)
                    .bind(t.n)
                    .execute(&mut *tx)
                    .await?;
                drop(tx);
                match t.n {
                    13 => return Err(HandlerError::reject("13 is never accepted")),
                    99 => return Err(HandlerError::later(Duration::from_secs(2), "not yet")),
                    500 => return Err(HandlerError::retry("flaky on purpose")),
                    _ => {}
                }
                ctx.publish(&Noted { thing: t.thing })?;
                Ok(())
            }

            pub fn service() -> Service<$db> {
                Service::new("keeper").on(on_thing)
            }

            pub fn rows(url: String) -> BoxFuture<'static, i64> {
                Box::pin(async move {
                    let pool = <$db as Backend>::connect(&url, true).await.expect("db");
                    let (n,): (i64,) = sqlx::query_as("SELECT count(*) FROM things")
                        .fetch_one(&pool)
                        .await
                        .expect("count");
                    pool.close().await;
                    n
                })
            }

            pub async fn create_table(url: &str) {
                let pool = <$db as Backend>::connect(url, true).await.expect("db");
                sqlx::query("CREATE TABLE things (thing TEXT NOT NULL, n BIGINT NOT NULL)")
                    .execute(&pool)
                    .await
                    .expect("table");
                pool.close().await;
            }
        }
    };
}

keeper!(
    on_sqlite,
    switchyard_sdk::sqlx::Sqlite,
    "INSERT INTO things (thing, n) VALUES (?, ?)"
);
keeper!(
    on_postgres,
    switchyard_sdk::sqlx::Postgres,
    "INSERT INTO things (thing, n) VALUES ($1, $2)"
);

fn binary(id: &str, ty: &str, data: &Value) -> reqwest::RequestBuilder {
    reqwest::Client::new()
        .post("http://placeholder")
        .header("ce-specversion", "1.0")
        .header("ce-id", id)
        .header("ce-source", "/test")
        .header("ce-type", ty)
        .header("content-type", "application/json")
        .body(data.to_string())
}

async fn push(port: u16, build: reqwest::RequestBuilder) -> (u16, Value, Option<String>) {
    let mut req = build.build().expect("request");
    *req.url_mut() = format!("http://127.0.0.1:{port}/events")
        .parse()
        .expect("url");
    let resp = reqwest::Client::new().execute(req).await.expect("push");
    let status = resp.status().as_u16();
    let retry_after = resp
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let body = resp.json().await.unwrap_or(Value::Null);
    (status, body, retry_after)
}

async fn scenario<DB: Backend>(
    service: Service<DB>,
    db_url: &str,
    rows: fn(String) -> BoxFuture<'static, i64>,
) {
    let tmp = tempfile::tempdir().expect("tempdir");
    let server = common::Server::start(tmp.path()).await;
    let client = Client::new(&server.url).expect("client");
    for t in ["things.v1", "notes.v1"] {
        client
            .put_topic(t, &json!({"partitions": 2}))
            .await
            .expect("topic");
    }
    let platform = Platform::Http(client.clone());
    let port = common::free_port();
    let mut launch = common::launch(&platform, port, db_url);
    launch.consume = Consume::Push;
    let host = Host::new().service(service);
    let mut run = host.start("keeper", launch).expect("start");
    assert!(
        common::eventually(Duration::from_secs(10), || async {
            reqwest::get(format!("http://127.0.0.1:{port}/healthz"))
                .await
                .is_ok_and(|r| r.status().is_success())
        })
        .await,
        "healthy"
    );
    let count = || rows(db_url.to_string());

    // The same event twice: once.
    let data = json!({"thing": "t1", "n": 1});
    let (s, b, _) = push(port, binary("e-1", "thing.made", &data)).await;
    assert_eq!((s, &b["handled"]), (200, &json!(1)), "{b}");
    let (s, b, _) = push(port, binary("e-1", "thing.made", &data)).await;
    assert_eq!((s, &b["duplicates"]), (200, &json!(1)), "{b}");
    assert_eq!(count().await, 1);

    // Bad input, named.
    let (s, b, _) = push(
        port,
        binary("e-2", "thing.made", &data).header("ce-specversion", "0.3"),
    )
    .await;
    assert_eq!((s, b["code"].as_str()), (400, Some("invalid-event")), "{b}");
    let batch = json!([
        {"specversion": "1.0", "id": "b1", "source": "/t", "type": "thing.made", "data": data},
        {"specversion": "1.0", "id": "", "source": "/t", "type": "thing.made"}
    ]);
    let (s, b, _) = push(
        port,
        reqwest::Client::new()
            .post("http://placeholder")
            .header("content-type", "application/cloudevents-batch+json")
            .body(batch.to_string()),
    )
    .await;
    assert_eq!((s, b["pointer"].as_str()), (400, Some("/1/id")), "{b}");
    let (s, b, _) = push(port, binary("e-3", "thing.made", &json!({"thing": 7}))).await;
    assert_eq!((s, b["code"].as_str()), (400, Some("rejected")), "{b}");
    assert!(
        b["detail"].as_str().is_some_and(|d| d.contains("data")),
        "{b}"
    );
    let (s, b, _) = push(port, binary("e-4", "other.type", &data)).await;
    assert_eq!(
        (s, b["code"].as_str()),
        (400, Some("unhandled-type")),
        "{b}"
    );

    // Refusals and failures leave nothing behind.
    let (s, _, _) = push(
        port,
        binary("e-13", "thing.made", &json!({"thing": "t", "n": 13})),
    )
    .await;
    assert_eq!(s, 400);
    let (s, _, after) = push(
        port,
        binary("e-99", "thing.made", &json!({"thing": "t", "n": 99})),
    )
    .await;
    assert_eq!((s, after.as_deref()), (503, Some("2")));
    for _ in 0..2 {
        let (s, b, _) = push(
            port,
            binary("e-500", "thing.made", &json!({"thing": "t", "n": 500})),
        )
        .await;
        assert_eq!(
            s, 500,
            "runs again each time: the inbox did not keep it: {b}"
        );
    }
    assert_eq!(count().await, 1, "rolled back");

    // A real subscription, then a replay of everything: each runs once.
    client
        .put_subscription(
            "keeper.things.v1",
            &SubscriptionSpec {
                topics: vec!["things.v1".into()],
                endpoint: format!("http://127.0.0.1:{port}/events"),
                ..Default::default()
            },
        )
        .await
        .expect("subscription");
    let events: Vec<_> = (1..=5)
        .map(|i| {
            switchyard_sdk::Outgoing::of(&Thing {
                thing: format!("s{i}"),
                n: i,
            })
            .and_then(|o| o.stamp(format!("s-{i}"), "/test", &switchyard_sdk::Lineage::root()))
            .expect("event")
        })
        .collect();
    client
        .publish("things.v1", &events, None)
        .await
        .expect("publish");
    assert!(common::eventually(Duration::from_secs(20), || async { count().await == 6 }).await);
    let seek = reqwest::Client::new()
        .post(format!(
            "{}/v1/subscriptions/keeper.things.v1/seek",
            server.url
        ))
        .json(&json!({"topic": "things.v1", "to": "earliest"}))
        .send()
        .await
        .expect("seek");
    assert!(seek.status().is_success());
    assert!(
        common::eventually(Duration::from_secs(20), || async {
            let sub = client.subscription("keeper.things.v1").await.expect("sub");
            let lag: u64 = sub["partitions"]
                .as_array()
                .map(|ps| ps.iter().filter_map(|p| p["lag"].as_u64()).sum())
                .unwrap_or(1);
            lag == 0 && sub["in-flight"] == json!(0)
        })
        .await
    );
    assert_eq!(count().await, 6, "the replay changed nothing");

    // The outbox published one note per handled thing.
    assert!(
        common::eventually(Duration::from_secs(10), || async {
            client
                .read("notes.v1", None, "earliest", 100)
                .await
                .is_ok_and(|p| p.events.len() == 6)
        })
        .await
    );
    let notes = client
        .read("notes.v1", None, "earliest", 100)
        .await
        .expect("read");
    assert!(notes.events.iter().all(|e| e.source() == "/keeper"));
    run.stop(Duration::from_secs(5)).await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pushed_events_run_once_on_sqlite() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let url = common::sqlite_url(tmp.path(), "keeper");
    on_sqlite::create_table(&url).await;
    scenario(on_sqlite::service(), &url, on_sqlite::rows).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pushed_events_run_once_on_postgres() {
    let Some(db) = common::PgDatabase::create("pushed_events").await else {
        return;
    };
    on_postgres::create_table(&db.url).await;
    scenario(on_postgres::service(), &db.url, on_postgres::rows).await;
    db.drop_it().await;
}
