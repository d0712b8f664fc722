//! A real server on a free loopback port over a file journal in a temporary directory, and
//! a real HTTP client.
#![allow(dead_code)]

use serde_json::{Value, json};
use std::sync::Arc;
use switchyard_journal::file::FileJournal;

pub struct Server {
    pub base: String,
    pub client: reqwest::Client,
    pub journal: FileJournal,
    pub bus: Option<switchyard_bus::Bus>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<std::io::Result<()>>>,
    _dir: tempfile::TempDir,
}

impl Server {
    pub async fn start() -> Self {
        Self::with(switchyard_server::Options::default()).await
    }

    pub async fn with(options: switchyard_server::Options) -> Self {
        Self::build(options, None).await
    }

    /// With subscriptions: a SQLite store in the same directory and a running bus.
    pub async fn with_bus(
        options: switchyard_server::Options,
        bus: switchyard_bus::BusOptions,
    ) -> Self {
        Self::build(options, Some(bus)).await
    }

    async fn build(
        mut options: switchyard_server::Options,
        bus: Option<switchyard_bus::BusOptions>,
    ) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let journal = FileJournal::open(dir.path()).expect("open journal");
        if let Some(bus_options) = bus {
            let store =
                switchyard_store::sqlite::SqliteStore::open(dir.path().join("store.sqlite"))
                    .await
                    .expect("open store");
            let shared: Arc<dyn switchyard_journal::Journal> = Arc::new(journal.clone());
            let bus = switchyard_bus::Bus::start(shared, Arc::new(store), bus_options)
                .await
                .expect("start bus");
            options.bus = Some(bus);
        }
        let bus = options.bus.clone();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let base = format!("http://{}", listener.local_addr().expect("addr"));
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let shared: Arc<dyn switchyard_journal::Journal> = Arc::new(journal.clone());
        let task = tokio::spawn(switchyard_server::serve(listener, shared, options, async {
            let _ = stopped.await;
        }));
        Self {
            base,
            client: reqwest::Client::new(),
            journal,
            bus,
            stop: Some(stop),
            task: Some(task),
            _dir: dir,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// Creates `topic` with these settings (JSON), expecting 201.
    pub async fn topic(&self, topic: &str, settings: Value) {
        let r = self
            .client
            .put(self.url(&format!("/v1/topics/{topic}")))
            .json(&settings)
            .send()
            .await
            .expect("put topic");
        assert_eq!(r.status(), 201, "{}", r.text().await.unwrap_or_default());
    }

    /// Publishes one structured event; returns the response status and JSON.
    pub async fn publish(&self, topic: &str, event: &Value) -> (u16, Value) {
        self.post(topic, "application/cloudevents+json", event.to_string())
            .await
    }

    pub async fn post(&self, topic: &str, content_type: &str, body: String) -> (u16, Value) {
        let r = self
            .client
            .post(self.url(&format!("/v1/topics/{topic}/events")))
            .header("content-type", content_type)
            .body(body)
            .send()
            .await
            .expect("post");
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    pub async fn get(&self, path: &str) -> (u16, Value) {
        let r = self.client.get(self.url(path)).send().await.expect("get");
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    pub async fn stop(mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.task.take() {
            t.await.expect("join").expect("serve");
        }
        if let Some(b) = &self.bus {
            b.shutdown().await;
        }
        self.journal.close().await.expect("close");
    }
}

pub fn event(id: &str, subject: &str, data: Value) -> Value {
    json!({"specversion": "1.0", "id": id, "source": "/test", "type": "test.happened",
           "subject": subject, "data": data})
}
