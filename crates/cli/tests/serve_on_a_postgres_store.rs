//! `switchyard serve --store postgres://...`: subscriptions, cursors and deliveries live in a
//! PostgreSQL database (no `store.sqlite` in the data directory); a subscription pushes to
//! a real HTTP receiver, and after a restart the subscription and its cursor are still
//! there and delivery goes on from it. A bad or unreachable store URL is an error naming
//! the flag or the config key, with the password redacted.

mod common;
use common::*;
use std::collections::BTreeSet;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use switchyard_store::postgres::testing::TestDatabase;

fn stop(mut child: std::process::Child) {
    let pid = child.id().to_string();
    let killed = Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .expect("kill");
    assert!(killed.success());
    assert_eq!(child.wait().expect("wait").code(), Some(0));
}

#[derive(Default)]
struct Seen(Mutex<BTreeSet<String>>);

async fn hook(
    axum::extract::State(seen): axum::extract::State<Arc<Seen>>,
    headers: axum::http::HeaderMap,
) -> axum::http::StatusCode {
    let id = headers
        .get("ce-id")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    seen.0.lock().expect("lock").insert(id);
    axum::http::StatusCode::NO_CONTENT
}

async fn publish(base: &str, ids: &[&str]) {
    let batch: Vec<serde_json::Value> = ids
        .iter()
        .map(|id| {
            serde_json::json!({"specversion": "1.0", "id": id, "source": "/t",
                "type": "order.placed", "subject": id, "data": {}})
        })
        .collect();
    let r = reqwest::Client::new()
        .post(format!("{base}/v1/topics/orders.v1/events"))
        .header("content-type", "application/cloudevents-batch+json")
        .json(&batch)
        .send()
        .await
        .expect("publish");
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap_or_default());
}

async fn wait_until(what: &str, mut check: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !check().await {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

async fn cursor(base: &str) -> Option<u64> {
    let v: serde_json::Value = reqwest::get(format!("{base}/v1/subscriptions/billing"))
        .await
        .ok()?
        .json()
        .await
        .ok()?;
    v["partitions"][0]["cursor"].as_u64()
}

#[test]
fn subscriptions_and_cursors_live_in_postgres_across_a_restart() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let Some(db) = rt.block_on(TestDatabase::create(
        "subscriptions_and_cursors_live_in_postgres",
    )) else {
        return;
    };
    let seen = Arc::new(Seen::default());
    let hook_url = rt.block_on(async {
        let app = axum::Router::new()
            .route("/hook", axum::routing::post(hook))
            .with_state(seen.clone());
        let l = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let url = format!("http://{}/hook", l.local_addr().expect("addr"));
        tokio::spawn(async move { axum::serve(l, app).await });
        url
    });
    let s = Scratch::new();
    let store = format!("{}?pool=4", db.url);
    let (server, base, _e) = start_server_with(s.data_str(), "127.0.0.1:0", &["--store", &store]);
    rt.block_on(async {
        create_topic(&base, "orders.v1", r#"{"partitions": 1}"#).await;
        let r = reqwest::Client::new()
            .put(format!("{base}/v1/subscriptions/billing"))
            .json(&serde_json::json!({"topics": ["orders.v1"], "endpoint": hook_url}))
            .send()
            .await
            .expect("subscription");
        assert_eq!(r.status(), 201, "{}", r.text().await.unwrap_or_default());
        publish(&base, &["o-1", "o-2", "o-3"]).await;
        wait_until("the three events are pushed", async || {
            seen.0.lock().expect("lock").len() == 3
        })
        .await;
        wait_until("the cursor passes them", async || {
            cursor(&base).await == Some(3)
        })
        .await;
    });
    stop(server);
    assert!(
        !s.data.join("store.sqlite").exists(),
        "the store is in PostgreSQL, not in the data directory"
    );

    let (server, base, _e) = start_server_with(s.data_str(), "127.0.0.1:0", &["--store", &store]);
    rt.block_on(async {
        let v: serde_json::Value = reqwest::get(format!("{base}/v1/subscriptions/billing"))
            .await
            .expect("get")
            .json()
            .await
            .expect("json");
        assert_eq!(v["spec"]["endpoint"], hook_url, "{v}");
        assert_eq!(v["partitions"][0]["cursor"], 3, "the cursor came back: {v}");
        publish(&base, &["o-4"]).await;
        wait_until("the new event is pushed", async || {
            seen.0.lock().expect("lock").contains("o-4")
        })
        .await;
        wait_until("the cursor passes it", async || {
            cursor(&base).await == Some(4)
        })
        .await;
    });
    stop(server);
    // What the server said is what the database holds.
    let stored: i64 = rt.block_on(async {
        use sqlx::Connection as _;
        let mut c = sqlx::PgConnection::connect(&db.url).await.expect("connect");
        sqlx::query_scalar(
            "SELECT next_offset FROM cursors WHERE subscription = 'billing' AND topic = 'orders.v1'",
        )
        .fetch_one(&mut c)
        .await
        .expect("cursor row")
    });
    assert_eq!(stored, 4);
    assert_eq!(
        seen.0.lock().expect("lock").clone(),
        ["o-1", "o-2", "o-3", "o-4"].map(String::from).into()
    );
    rt.block_on(db.drop_it());
}

#[test]
fn bad_store_urls_name_the_flag_or_key_and_hide_the_password() {
    let s = Scratch::new();
    let r = run(&[
        "serve",
        "--data",
        s.data_str(),
        "--store",
        "mysql://u:s3cret@h/db",
    ])
    .expect_code(2);
    assert!(
        r.stderr.contains("--store") && r.stderr.contains("neither `sqlite`"),
        "{}",
        r.stderr
    );
    assert!(!r.stderr.contains("s3cret"), "{}", r.stderr);
    let r = run(&[
        "serve",
        "--data",
        s.data_str(),
        "--store",
        "postgres://u:s3cret@h/db?pool=0",
    ])
    .expect_code(2);
    assert!(
        r.stderr.contains("--store") && r.stderr.contains("pool"),
        "{}",
        r.stderr
    );
    assert!(!r.stderr.contains("s3cret"), "{}", r.stderr);
    // Nothing listens there: the error names the URL, without its password.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("port")
        .port();
    let nobody = format!("postgres://u:s3cret@127.0.0.1:{port}/db");
    let r = run(&["serve", "--data", s.data_str(), "--store", &nobody]).expect_code(2);
    assert!(
        r.stderr.contains("--store")
            && r.stderr
                .contains(&format!("postgres://u:***@127.0.0.1:{port}/db"))
            && r.stderr.to_lowercase().contains("refused"),
        "{}",
        r.stderr
    );
    assert!(!r.stderr.contains("s3cret"), "{}", r.stderr);
    // The same from switchyard.toml names the key.
    let config = s.data.with_file_name("switchyard.toml");
    std::fs::write(&config, "[server]\nstore = \"sqlite3\"\n").expect("config");
    let r = run(&[
        "serve",
        "--data",
        s.data_str(),
        "--config",
        config.to_str().expect("utf-8"),
    ])
    .expect_code(2);
    assert!(r.stderr.contains("[server] store"), "{}", r.stderr);
}
