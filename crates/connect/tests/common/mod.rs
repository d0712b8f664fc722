//! What the connect tests share: a real file journal and SQLite store in a temporary
//! directory, events published as the server stores them, and waiting for a condition.
#![allow(dead_code)]

use serde_json::{Value, json};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};
use switchyard_connect::{Connect, ConnectOptions};
use switchyard_journal::file::FileJournal;
use switchyard_journal::{Journal, PartitionChoice, TopicConfig, TopicName};
use switchyard_store::Store;
use switchyard_store::connect::{MessageFilter, MessageState};
use switchyard_store::sqlite::SqliteStore;
use switchyard_types::Record;

pub struct Platform {
    /// Where the journal, store and switchyard.toml are.
    pub root: std::path::PathBuf,
    pub dir: tempfile::TempDir,
    pub journal: Arc<dyn Journal>,
    pub file_journal: FileJournal,
    pub store: Arc<dyn Store>,
    pub sqlite: SqliteStore,
}

impl Platform {
    pub async fn new(topics: &[(&str, u32)]) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        Self::open(dir, topics).await
    }

    pub async fn open(dir: tempfile::TempDir, topics: &[(&str, u32)]) -> Self {
        let mut p = Self::open_at(dir.path(), topics).await;
        p.dir = dir;
        p
    }

    /// On files in `path` (which outlive the platform).
    pub async fn open_at(path: &Path, topics: &[(&str, u32)]) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let file_journal = FileJournal::open(path.join("journal")).expect("journal");
        let journal: Arc<dyn Journal> = Arc::new(file_journal.clone());
        for (t, partitions) in topics {
            let config = TopicConfig {
                partitions: *partitions,
                ..TopicConfig::default()
            };
            journal
                .create_topic(&TopicName::new(*t).expect("topic"), config)
                .await
                .expect("create topic");
        }
        let sqlite = SqliteStore::open(path.join("store.sqlite"))
            .await
            .expect("store");
        let store: Arc<dyn Store> = Arc::new(sqlite.clone());
        Self {
            root: path.to_path_buf(),
            dir,
            journal,
            file_journal,
            store,
            sqlite,
        }
    }

    /// Writes `text` as the system's switchyard.toml and starts the gateway on it.
    pub async fn connect(&self, text: &str) -> Connect {
        let file = self.config(text);
        Connect::start(
            self.journal.clone(),
            self.store.clone(),
            ConnectOptions {
                config_file: Some(file),
                ..ConnectOptions::default()
            },
        )
        .await
        .expect("start connect")
    }

    pub fn config(&self, text: &str) -> std::path::PathBuf {
        let file = self.root.join("switchyard.toml");
        std::fs::write(&file, text).expect("write config");
        file
    }

    pub fn path(&self) -> &Path {
        &self.root
    }

    /// Publishes a CloudEvent the way the server stores it.
    pub async fn publish(&self, topic: &str, id: &str, event_type: &str, key: &str, data: Value) {
        let event = json!({
            "specversion": "1.0", "id": id, "source": "/test", "type": event_type,
            "partitionkey": key, "data": data,
        });
        let topic = TopicName::new(topic).expect("topic");
        let key = bytes::Bytes::copy_from_slice(key.as_bytes());
        let partition = self
            .journal
            .choose_partition(&topic, &PartitionChoice::Key(key.clone()))
            .await
            .expect("partition");
        let record = Record {
            id: Some(id.to_owned()),
            key: Some(key),
            headers: Vec::new(),
            payload: serde_json::to_vec(&event).expect("json").into(),
        };
        self.journal
            .append(&topic, partition, vec![record], None)
            .await
            .expect("append");
    }

    pub async fn count(&self, adapter: &str, state: MessageState) -> u64 {
        self.store
            .message_counts(Some(adapter))
            .await
            .expect("counts")
            .into_iter()
            .filter(|c| c.state == state)
            .map(|c| c.count)
            .sum()
    }

    pub async fn messages(&self, adapter: &str) -> Vec<switchyard_store::connect::Message> {
        self.store
            .messages(&MessageFilter {
                adapter: Some(adapter.to_owned()),
                limit: 10_000,
                ..MessageFilter::default()
            })
            .await
            .expect("messages")
    }

    /// Every event of a topic (all partitions), as JSON.
    pub async fn events(&self, topic: &str) -> Vec<Value> {
        let topic = TopicName::new(topic).expect("topic");
        let info = self.journal.describe_topic(&topic).await.expect("describe");
        let mut out = Vec::new();
        for p in info.partitions {
            let batch = self
                .journal
                .read(
                    &topic,
                    p.partition,
                    0,
                    switchyard_journal::ReadLimits::default(),
                )
                .await
                .expect("read");
            for r in batch.records {
                out.push(serde_json::from_slice(&r.payload).expect("event json"));
            }
        }
        out
    }
}

/// Waits until `check` holds, up to `limit`; panics with `what` otherwise.
pub async fn eventually<F, Fut>(limit: Duration, what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = Instant::now();
    while !check().await {
        assert!(start.elapsed() < limit, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
