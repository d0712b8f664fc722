//! The NATS JetStream backend, [`NatsJournal`]: a topic is a stream, a partition a subject
//! prefix, an offset the stream sequence (see `names` and ARCHITECTURE.md, "The JetStream
//! mapping"). Several Switchyard instances can share one cluster: everything that must be
//! agreed on (offsets, dedup, expectations, retention) is the server's; an instance keeps
//! only a cache of topic settings and, per partition, the highest offset it knows of.

mod api;
mod append;
mod envelope;
mod names;
mod options;
mod read;
mod watch;

pub use options::{NATS_DEFAULT_SYNC, NatsOptions, OptionsError};

use crate::{Error, Journal, PartitionChoice, ReadBatch, ReadLimits, Result, TopicInfo};
use api::Api;
use async_nats::jetstream::stream;
use async_trait::async_trait;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use switchyard_types::{
    Durability, Expectation, Offset, Partition, Record, Timestamp, TopicConfig, TopicName,
    partition_for_key,
};

/// The oldest server the backend runs on: 2.12 brought atomic batch publish.
pub const MIN_SERVER: (u64, u64) = (2, 12);

/// Where the topic's settings live in its stream's metadata.
const CONFIG_KEY: &str = "switchyard.topic-config";

/// How long a cached topic (its partition count) is trusted before it is checked again;
/// bounds how long a topic deleted and re-created by another instance looks unchanged.
const TOPIC_TTL: Duration = Duration::from_secs(2);

/// A journal on a NATS JetStream cluster. Cheap to clone; every clone shares one
/// connection.
#[derive(Clone)]
pub struct NatsJournal {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for NatsJournal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NatsJournal")
            .field("servers", &self.inner.options.servers)
            .finish_non_exhaustive()
    }
}

struct Inner {
    api: Api,
    options: NatsOptions,
    topics: Mutex<HashMap<TopicName, Arc<TopicState>>>,
}

/// What an instance knows of one topic.
pub(crate) struct TopicState {
    name: TopicName,
    stream: String,
    config: TopicConfig,
    /// The stream's creation time: a different one is a different topic of the same name.
    created: time::OffsetDateTime,
    /// The stream's replicas (dedup checks differ between one and several).
    replicas: usize,
    checked: Mutex<Instant>,
    round_robin: AtomicU32,
    /// Atomic batches this instance has in flight on the stream (the server takes 50 per
    /// stream; more are dropped as incomplete).
    batches: tokio::sync::Semaphore,
    /// Per partition, the highest offset this instance knows to exist (acknowledged here or
    /// seen by the tail watcher). Reads make sure to return records up to it, and waiters
    /// wait on it.
    marks: Vec<tokio::sync::watch::Sender<Offset>>,
    /// Set once the topic is known to be deleted: every waiter ends.
    gone: tokio::sync::watch::Sender<bool>,
    watcher: tokio::sync::OnceCell<Offset>,
}

impl TopicState {
    fn partitions(&self) -> u32 {
        self.config.partitions
    }

    fn check_partition(&self, partition: Partition) -> Result<()> {
        if partition >= self.partitions() {
            return Err(Error::PartitionOutOfRange {
                topic: self.name.clone(),
                partition,
                partitions: self.partitions(),
            });
        }
        Ok(())
    }

    /// Records that `offset` exists in `partition`.
    fn mark(&self, partition: Partition, offset: Offset) {
        if let Some(m) = self.marks.get(partition as usize) {
            m.send_if_modified(|known| {
                let newer = offset > *known;
                if newer {
                    *known = offset;
                }
                newer
            });
        }
    }

    fn known(&self, partition: Partition) -> Offset {
        self.marks
            .get(partition as usize)
            .map_or(0, |m| *m.borrow())
    }
}

impl Drop for TopicState {
    fn drop(&mut self) {
        self.gone.send_replace(true);
    }
}

impl NatsJournal {
    /// Connects to the cluster, checks that it runs JetStream on a recent enough server.
    pub async fn connect(options: NatsOptions) -> Result<Self> {
        let api = Api::connect(&options).await?;
        Ok(Self {
            inner: Arc::new(Inner {
                api,
                options,
                topics: Mutex::new(HashMap::new()),
            }),
        })
    }

    /// The options this journal was connected with.
    pub fn options(&self) -> &NatsOptions {
        &self.inner.options
    }

    /// Flushes what the connection still buffers and closes it.
    pub async fn close(&self) -> Result<()> {
        let topics: Vec<_> = self.cache().drain().map(|(_, t)| t).collect();
        for t in topics {
            t.gone.send_replace(true);
        }
        self.inner.api.close().await
    }

    fn cache(&self) -> std::sync::MutexGuard<'_, HashMap<TopicName, Arc<TopicState>>> {
        self.inner.topics.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn forget(&self, name: &TopicName) {
        if let Some(t) = self.cache().remove(name) {
            t.gone.send_replace(true);
        }
    }

    /// The topic's state, from the cache while it is fresh.
    pub(crate) async fn topic(&self, name: &TopicName) -> Result<Arc<TopicState>> {
        let cached = self.cache().get(name).cloned();
        if let Some(t) = &cached
            && !*t.gone.borrow()
            && t.checked
                .lock()
                .map(|c| c.elapsed() < TOPIC_TTL)
                .unwrap_or(false)
        {
            return Ok(t.clone());
        }
        let info = match self.inner.api.stream_info(&names::stream(name)).await? {
            Some(info) => info,
            None => {
                self.forget(name);
                return Err(Error::TopicNotFound(name.clone()));
            }
        };
        if let Some(t) = cached
            && t.created == info.created
            && !*t.gone.borrow()
        {
            *t.checked.lock().unwrap_or_else(|e| e.into_inner()) = Instant::now();
            return Ok(t);
        }
        let config = stored_config(name, &info.config)?;
        let state = Arc::new(TopicState {
            name: name.clone(),
            stream: names::stream(name),
            config,
            created: info.created,
            replicas: info.config.num_replicas,
            checked: Mutex::new(Instant::now()),
            round_robin: AtomicU32::new(0),
            batches: tokio::sync::Semaphore::new(append::BATCHES_IN_FLIGHT),
            marks: (0..config.partitions)
                .map(|_| tokio::sync::watch::Sender::new(0))
                .collect(),
            gone: tokio::sync::watch::Sender::new(false),
            watcher: tokio::sync::OnceCell::new(),
        });
        if let Some(old) = self.cache().insert(name.clone(), state.clone()) {
            old.gone.send_replace(true);
        }
        Ok(state)
    }

    /// A stream's absence turns into `TopicNotFound`; anything else stays unavailable.
    pub(crate) async fn not_found_or(&self, t: &TopicState, e: Error) -> Error {
        match self.inner.api.stream_info(&t.stream).await {
            Ok(None) => {
                self.forget(&t.name);
                Error::TopicNotFound(t.name.clone())
            }
            _ => e,
        }
    }

    /// What JetStream cannot do that the file backend can: durability stronger than the
    /// servers' sync, and windows under its 100 ms minimum.
    fn check_backend(&self, config: &TopicConfig) -> Result<()> {
        let invalid = |field, reason: String| {
            Err(Error::InvalidConfig(switchyard_types::ConfigError {
                field,
                reason,
            }))
        };
        if (1..100).contains(&config.dedup_window_ms) {
            return invalid(
                "dedup-window-ms",
                format!(
                    "{} ms is under NATS JetStream's smallest dedup window, 100 ms (0 \
                     disables dedup)",
                    config.dedup_window_ms
                ),
            );
        }
        if let Some(age) = config.retention.max_age_ms
            && age < 100
        {
            return invalid(
                "retention.max-age-ms",
                format!("{age} ms is under NATS JetStream's smallest max age, 100 ms"),
            );
        }
        let server = self.inner.options.server_sync;
        if options::server_meets(server, config.durability) {
            return Ok(());
        }
        Err(Error::InvalidConfig(switchyard_types::ConfigError {
            field: "durability",
            reason: format!(
                "`{}` is stronger than what the NATS servers promise (sync {}): JetStream \
                 syncs per server, so run nats-server with `sync_interval: always` and add \
                 `?sync=always` to the journal URL, or choose a weaker durability",
                config.durability,
                match server {
                    Durability::Always => "always".to_string(),
                    Durability::Interval(d) => format!("every {}", humantime::format_duration(d)),
                    Durability::Os => "os".to_string(),
                }
            ),
        }))
    }

    fn stream_config(
        &self,
        name: &TopicName,
        config: &TopicConfig,
        replicas: usize,
    ) -> stream::Config {
        let max_age = config
            .retention
            .max_age_ms
            .map_or(Duration::ZERO, Duration::from_millis);
        let mut window = config.dedup_window();
        if !max_age.is_zero() {
            window = window.min(max_age);
        }
        stream::Config {
            name: names::stream(name),
            description: Some(format!("Switchyard topic {name}")),
            subjects: vec![names::all_subjects(name)],
            storage: stream::StorageType::File,
            num_replicas: replicas,
            retention: stream::RetentionPolicy::Limits,
            discard: stream::DiscardPolicy::Old,
            max_age,
            // JetStream limits a stream, not a subject: the topic may hold max-bytes per
            // partition in all.
            max_bytes: config.retention.max_bytes.map_or(-1, |b| {
                b.saturating_mul(u64::from(config.partitions))
                    .min(i64::MAX as u64) as i64
            }),
            max_messages: -1,
            duplicate_window: window,
            allow_direct: true,
            allow_atomic_publish: true,
            metadata: HashMap::from([(
                CONFIG_KEY.to_string(),
                serde_json::to_string(config).unwrap_or_default(),
            )]),
            ..Default::default()
        }
    }

    async fn info(&self, t: &TopicState) -> Result<TopicInfo> {
        let Some(stream) = self.inner.api.stream_info(&t.stream).await? else {
            self.forget(&t.name);
            return Err(Error::TopicNotFound(t.name.clone()));
        };
        let partitions = read::partitions(self, t, &stream.state).await?;
        for p in &partitions {
            if p.next_offset > p.first_offset {
                t.mark(p.partition, p.next_offset - 1);
            }
        }
        Ok(TopicInfo {
            name: t.name.clone(),
            config: t.config,
            partitions,
        })
    }
}

/// The topic settings kept in a stream's metadata, read strictly.
fn stored_config(name: &TopicName, config: &stream::Config) -> Result<TopicConfig> {
    let corrupt = |reason: String| Error::Corrupt {
        topic: name.to_string(),
        partition: 0,
        offset: 0,
        path: format!("nats stream {} metadata {CONFIG_KEY}", names::stream(name)).into(),
        position: 0,
        reason,
    };
    let raw = config.metadata.get(CONFIG_KEY).ok_or_else(|| {
        corrupt("the stream was not made by Switchyard (no topic settings)".into())
    })?;
    let parsed: TopicConfig = serde_json::from_str(raw)
        .map_err(|e| corrupt(format!("unreadable topic settings: {e}")))?;
    parsed
        .validate()
        .map_err(|e| corrupt(format!("stored topic settings are invalid: {e}")))?;
    Ok(parsed)
}

#[async_trait]
impl Journal for NatsJournal {
    async fn create_topic(&self, name: &TopicName, config: TopicConfig) -> Result<TopicInfo> {
        config.validate()?;
        if let Err(e) = self.check_backend(&config) {
            // An existing topic with other settings is the better answer.
            return Err(
                match self.inner.api.stream_info(&names::stream(name)).await? {
                    Some(_) => Error::TopicExists {
                        topic: name.clone(),
                    },
                    None => e,
                },
            );
        }
        let wanted = self.stream_config(name, &config, self.inner.options.replicas);
        match self.inner.api.create_stream(&wanted).await? {
            api::Created::Yes => {}
            api::Created::NameInUse => {
                let existing = match self.inner.api.stream_info(&wanted.name).await? {
                    Some(info) => info,
                    // Deleted in between: a retry of the create decides.
                    None => {
                        return Err(Error::TopicExists {
                            topic: name.clone(),
                        });
                    }
                };
                match stored_config(name, &existing.config) {
                    Ok(c) if c == config => {}
                    _ => {
                        return Err(Error::TopicExists {
                            topic: name.clone(),
                        });
                    }
                }
            }
        }
        let t = self.topic(name).await?;
        self.info(&t).await
    }

    async fn update_topic(&self, name: &TopicName, config: TopicConfig) -> Result<TopicInfo> {
        config.validate()?;
        let Some(existing) = self.inner.api.stream_info(&names::stream(name)).await? else {
            self.forget(name);
            return Err(Error::TopicNotFound(name.clone()));
        };
        let current = stored_config(name, &existing.config)?;
        if config.partitions != current.partitions {
            return Err(Error::InvalidConfig(switchyard_types::ConfigError {
                field: "partitions",
                reason: format!(
                    "the partition count cannot change ({} -> {})",
                    current.partitions, config.partitions
                ),
            }));
        }
        self.check_backend(&config)?;
        let wanted = self.stream_config(name, &config, existing.config.num_replicas);
        if !self.inner.api.update_stream(&wanted).await? {
            self.forget(name);
            return Err(Error::TopicNotFound(name.clone()));
        }
        self.forget(name);
        let t = self.topic(name).await?;
        self.info(&t).await
    }

    async fn describe_topic(&self, name: &TopicName) -> Result<TopicInfo> {
        let t = self.topic(name).await?;
        self.info(&t).await
    }

    async fn list_topics(&self) -> Result<Vec<TopicName>> {
        let mut out: Vec<TopicName> = self
            .inner
            .api
            .stream_names()
            .await?
            .iter()
            .filter_map(|s| names::topic_of_stream(s))
            .collect();
        out.sort();
        out.dedup();
        Ok(out)
    }

    async fn delete_topic(&self, name: &TopicName) -> Result<()> {
        let deleted = self.inner.api.delete_stream(&names::stream(name)).await?;
        self.forget(name);
        if deleted {
            Ok(())
        } else {
            Err(Error::TopicNotFound(name.clone()))
        }
    }

    async fn choose_partition(
        &self,
        topic: &TopicName,
        choice: &PartitionChoice,
    ) -> Result<Partition> {
        let t = self.topic(topic).await?;
        match choice {
            PartitionChoice::Explicit(p) => {
                t.check_partition(*p)?;
                Ok(*p)
            }
            PartitionChoice::Key(k) => Ok(partition_for_key(k, t.partitions())),
            PartitionChoice::RoundRobin => {
                Ok(t.round_robin.fetch_add(1, Ordering::Relaxed) % t.partitions())
            }
        }
    }

    async fn append(
        &self,
        topic: &TopicName,
        partition: Partition,
        records: Vec<Record>,
        expectation: Option<Expectation>,
    ) -> Result<Vec<crate::Appended>> {
        let t = self.topic(topic).await?;
        t.check_partition(partition)?;
        append::append(self, &t, partition, records, expectation).await
    }

    async fn read(
        &self,
        topic: &TopicName,
        partition: Partition,
        from: Offset,
        limits: ReadLimits,
    ) -> Result<ReadBatch> {
        let t = self.topic(topic).await?;
        t.check_partition(partition)?;
        read::read(self, &t, partition, from, limits).await
    }

    async fn offset_for_time(
        &self,
        topic: &TopicName,
        partition: Partition,
        at: Timestamp,
    ) -> Result<Offset> {
        let t = self.topic(topic).await?;
        t.check_partition(partition)?;
        read::offset_for_time(self, &t, partition, at).await
    }

    async fn wait_for(
        &self,
        topic: &TopicName,
        partition: Partition,
        offset: Offset,
    ) -> Result<Offset> {
        let t = self.topic(topic).await?;
        t.check_partition(partition)?;
        watch::wait_for(self, &t, partition, offset).await
    }
}
