//! Shared by the SDK's behaviour tests: a real file journal, the real HTTP API in front of
//! it (with a bus and a store), SQLite files and PostgreSQL databases of their own.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::future::Future;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};
use switchyard_journal::file::FileJournal;
use switchyard_journal::{Journal, TopicConfig, TopicName};
use switchyard_sdk::{Consume, Launch, Log, Platform};

pub fn topic(name: &str) -> TopicName {
    TopicName::new(name).expect("topic name")
}

pub async fn create_topic(journal: &dyn Journal, name: &str, partitions: u32) {
    journal
        .create_topic(
            &topic(name),
            TopicConfig {
                partitions,
                ..TopicConfig::default()
            },
        )
        .await
        .expect("create topic");
}

pub fn open_journal(dir: &Path) -> FileJournal {
    FileJournal::open(dir).expect("open journal")
}

/// A free loopback port (bound and released).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

pub fn sqlite_url(dir: &Path, name: &str) -> String {
    format!("sqlite://{}", dir.join(format!("{name}.sqlite")).display())
}

/// What a host gives a service: its port and database, lines behind its name.
pub fn launch(platform: &Platform, port: u16, database_url: &str) -> Launch {
    let env: BTreeMap<String, String> = [
        ("PORT".to_string(), port.to_string()),
        ("DATABASE_URL".to_string(), database_url.to_string()),
    ]
    .into_iter()
    .collect();
    Launch {
        platform: platform.clone(),
        env,
        log: Log::new("test │ "),
        consume: Consume::Pull,
    }
}

/// Polls `check` until it holds or `timeout` passes; false on timeout.
pub async fn eventually<F, Fut>(timeout: Duration, mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if check().await {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The real HTTP API (with subscriptions) over a file journal, on a free loopback port.
pub struct Server {
    pub url: String,
    pub journal: FileJournal,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
    bus: switchyard_bus::Bus,
    store: Arc<switchyard_store::sqlite::SqliteStore>,
}

impl Server {
    pub async fn start(dir: &Path) -> Server {
        Self::start_on(dir, "127.0.0.1:0").await
    }

    pub async fn start_on(dir: &Path, addr: &str) -> Server {
        let journal = open_journal(&dir.join("journal"));
        let store = Arc::new(
            switchyard_store::sqlite::SqliteStore::open(dir.join("store.sqlite"))
                .await
                .expect("store"),
        );
        let bus = switchyard_bus::Bus::start(
            Arc::new(journal.clone()),
            store.clone(),
            switchyard_bus::BusOptions::default(),
        )
        .await
        .expect("bus");
        let listener = tokio::net::TcpListener::bind(addr).await.expect("bind");
        let url = format!("http://{}", listener.local_addr().expect("addr"));
        let (stop, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let options = switchyard_server::Options {
            bus: Some(bus.clone()),
            ..Default::default()
        };
        let j: Arc<dyn Journal> = Arc::new(journal.clone());
        let task = tokio::spawn(async move {
            let _ = switchyard_server::serve(listener, j, options, async move {
                let _ = stop_rx.await;
            })
            .await;
        });
        Server {
            url,
            journal,
            stop: Some(stop),
            task: Some(task),
            bus,
            store,
        }
    }

    pub async fn stop(mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.task.take() {
            let _ = t.await;
        }
        self.bus.shutdown().await;
        self.store.close().await;
        let _ = self.journal.close().await;
    }
}

/// A PostgreSQL database of its own on 127.0.0.1:5432, dropped at the end; `None` (the test
/// skips, saying why) when there is no server, unless `SWITCHYARD_REQUIRE_SERVICES=1`.
pub struct PgDatabase {
    pub url: String,
    name: String,
}

const PG_ADMIN: &str = "postgres://postgres@127.0.0.1:5432/postgres";

impl PgDatabase {
    pub async fn create(test: &str) -> Option<PgDatabase> {
        use switchyard_sdk::sqlx::{Connection as _, Executor as _};
        let mut admin = match switchyard_sdk::sqlx::PgConnection::connect(PG_ADMIN).await {
            Ok(c) => c,
            Err(e) => {
                assert!(
                    std::env::var("SWITCHYARD_REQUIRE_SERVICES").as_deref() != Ok("1"),
                    "{test}: PostgreSQL is required on 127.0.0.1:5432: {e}"
                );
                eprintln!("{test}: skipped: no PostgreSQL on 127.0.0.1:5432 ({e})");
                return None;
            }
        };
        let name = format!(
            "sdk_test_{}_{}_{:08x}",
            test.chars()
                .filter(char::is_ascii_alphanumeric)
                .take(20)
                .collect::<String>(),
            std::process::id(),
            rand::random::<u32>()
        );
        admin
            .execute(format!("CREATE DATABASE \"{name}\"").as_str())
            .await
            .expect("create database");
        Some(PgDatabase {
            url: format!("postgres://postgres@127.0.0.1:5432/{name}"),
            name,
        })
    }

    pub async fn drop_it(self) {
        use switchyard_sdk::sqlx::{Connection as _, Executor as _};
        if let Ok(mut admin) = switchyard_sdk::sqlx::PgConnection::connect(PG_ADMIN).await {
            let _ = admin
                .execute(format!("DROP DATABASE IF EXISTS \"{}\" WITH (FORCE)", self.name).as_str())
                .await;
        }
    }
}
