//! The embedded journal: one directory, a segmented CRC-framed log per partition.
//!
//! ```text
//! DIR/LOCK                                   exclusive lock: one process per journal
//! DIR/topics/<topic>/topic.json              settings (format, name, config)
//! DIR/topics/<topic>/<partition>/<base>.log  segments, named for their first offset
//!                                 <base>.index, <base>.keys   derived, rebuilt if missing
//! ```
//!
//! See `partition.rs` for the write path (group commit) and `format.rs` for the frame.

mod dedup;
mod format;
mod keys;
mod offline;
mod partition;
mod segment;
mod sidecar;
mod topic;

pub use offline::{
    JournalReport, PartitionReport, Problem, SegmentReport, TopicReport, VerifyReport, inspect,
    verify,
};

use crate::{Appended, Error, Journal, PartitionChoice, ReadBatch, ReadLimits, Result, TopicInfo};
use arc_swap::ArcSwap;
use async_trait::async_trait;
use partition::{AppendRequest, Msg, PartitionShared, RecordIds, sync_dir};
use std::collections::BTreeMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use switchyard_types::{
    Expectation, Offset, Partition, Record, Timestamp, TopicConfig, TopicName, partition_for_key,
};
use tokio::sync::oneshot;
use topic::{TopicHandle, read_topic_file, write_topic_file};

const TOPICS_DIR: &str = "topics";
const DELETED_PREFIX: &str = ".deleted-";
const CREATING_PREFIX: &str = ".creating-";

/// The embedded file journal. Cheap to clone; all clones share one open journal.
#[derive(Clone, Debug)]
pub struct FileJournal {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    dir: PathBuf,
    topics_dir: PathBuf,
    /// Held until `close` or drop: the OS releases the lock when the file is closed.
    lock: std::sync::Mutex<Option<File>>,
    /// Read on every call without taking a lock; replaced whole by create and delete.
    topics: ArcSwap<BTreeMap<TopicName, Arc<TopicHandle>>>,
    /// Serialises create, update and delete.
    admin: tokio::sync::Mutex<()>,
    closed: AtomicBool,
}

impl Drop for Inner {
    fn drop(&mut self) {
        let topics = self.topics.swap(Arc::default());
        for t in topics.values() {
            t.stop();
        }
    }
}

impl FileJournal {
    /// Opens the journal in `dir`, creating it if needed, and recovers every partition:
    /// torn tails are truncated, missing or stale indexes rebuilt. Blocking.
    pub fn open(dir: impl AsRef<Path>) -> Result<Self> {
        let dir = dir.as_ref().to_path_buf();
        let topics_dir = dir.join(TOPICS_DIR);
        std::fs::create_dir_all(&topics_dir).map_err(|e| Error::io("create", &topics_dir, e))?;
        let lock_path = dir.join("LOCK");
        let lock = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(|e| Error::io("open", &lock_path, e))?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => return Err(Error::Locked { path: dir }),
            Err(std::fs::TryLockError::Error(e)) => return Err(Error::io("lock", &lock_path, e)),
        }
        let mut topics = BTreeMap::new();
        let rd = std::fs::read_dir(&topics_dir).map_err(|e| Error::io("list", &topics_dir, e))?;
        let mut entries = Vec::new();
        for entry in rd {
            let entry = entry.map_err(|e| Error::io("list", &topics_dir, e))?;
            entries.push(entry.path());
        }
        entries.sort();
        for path in entries {
            let name = path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            if name.starts_with(DELETED_PREFIX) || name.starts_with(CREATING_PREFIX) {
                // A delete or create that was interrupted: finish or undo it.
                std::fs::remove_dir_all(&path).map_err(|e| Error::io("remove", &path, e))?;
                continue;
            }
            if !path.is_dir() {
                continue;
            }
            let tf = read_topic_file(&path)?;
            let handle = TopicHandle::open(path, tf.name.clone(), tf.config)?;
            topics.insert(tf.name, Arc::new(handle));
        }
        Ok(Self {
            inner: Arc::new(Inner {
                dir,
                topics_dir,
                lock: std::sync::Mutex::new(Some(lock)),
                topics: ArcSwap::from_pointee(topics),
                admin: tokio::sync::Mutex::new(()),
                closed: AtomicBool::new(false),
            }),
        })
    }

    pub fn dir(&self) -> &Path {
        &self.inner.dir
    }

    /// Writes and syncs everything queued, stops the writers and releases the directory
    /// lock, so the journal can be opened again. Later calls fail with [`Error::Closed`].
    pub async fn close(&self) -> Result<()> {
        if self.inner.closed.swap(true, Ordering::AcqRel) {
            return Ok(());
        }
        let topics = self.inner.topics.swap(Arc::default());
        let failed: Vec<String> = self
            .blocking(move || {
                let mut failed = Vec::new();
                for t in topics.values() {
                    t.stop();
                    t.mark_deleted();
                    for p in &t.partitions {
                        if let Some(reason) = p.shared.failed() {
                            failed.push(format!("{}/{}: {reason}", t.shared.name, p.shared.id));
                        }
                    }
                }
                Ok(failed)
            })
            .await?;
        drop(
            self.inner
                .lock
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .take(),
        );
        if let Some(first) = failed.first() {
            return Err(Error::io(
                "close",
                &self.inner.dir,
                std::io::Error::other(format!("partitions failed before close: {first}")),
            ));
        }
        Ok(())
    }

    /// How many keys partition `partition` of `topic` holds in memory for optimistic
    /// concurrency: the active segment's (see `ARCHITECTURE.md`, "Memory"). For tests.
    #[cfg(any(test, feature = "test-util"))]
    pub fn keys_in_memory(&self, topic: &TopicName, partition: Partition) -> Result<usize> {
        Ok(self.partition(topic, partition)?.keys_in_memory())
    }

    /// Whether a read of `partition` from `from` runs on the caller's thread (it scans only
    /// the cached tail of the active segment) rather than in the blocking pool. For tests.
    #[cfg(any(test, feature = "test-util"))]
    pub fn reads_inline(&self, topic: &TopicName, partition: Partition, from: u64) -> Result<bool> {
        Ok(self.partition(topic, partition)?.reads_cached_tail(from))
    }

    fn check_open(&self) -> Result<()> {
        if self.inner.closed.load(Ordering::Acquire) {
            Err(Error::Closed)
        } else {
            Ok(())
        }
    }

    fn topic(&self, name: &TopicName) -> Result<Arc<TopicHandle>> {
        self.check_open()?;
        self.inner
            .topics
            .load()
            .get(name)
            .cloned()
            .ok_or_else(|| Error::TopicNotFound(name.clone()))
    }

    fn partition(&self, topic: &TopicName, partition: Partition) -> Result<Arc<PartitionShared>> {
        let t = self.topic(topic)?;
        Ok(t.partitions[Self::partition_index(&t, partition)?]
            .shared
            .clone())
    }

    /// Runs blocking file work off the async runtime's threads.
    async fn blocking<T: Send + 'static>(
        &self,
        work: impl FnOnce() -> Result<T> + Send + 'static,
    ) -> Result<T> {
        tokio::task::spawn_blocking(work)
            .await
            .map_err(|e| blocking_failed(&self.inner.dir, e))?
    }

    fn partition_index(t: &TopicHandle, partition: Partition) -> Result<usize> {
        if (partition as usize) < t.partitions.len() {
            Ok(partition as usize)
        } else {
            Err(Error::PartitionOutOfRange {
                topic: t.shared.name.clone(),
                partition,
                partitions: t.partitions.len() as u32,
            })
        }
    }

    /// Gone while we waited: closed journal or deleted topic.
    fn gone(&self, name: &TopicName) -> Error {
        if self.inner.closed.load(Ordering::Acquire) {
            Error::Closed
        } else {
            Error::TopicNotFound(name.clone())
        }
    }
}

impl FileJournal {
    /// A duplicate of a record still in flight on another partition is answered only once
    /// that record is as durable as this append would have been.
    /// If that record's write fails instead, its id leaves the dedup window and this append
    /// fails too, so the caller's retry writes it.
    async fn await_originals(
        &self,
        topic: &TopicName,
        partition: Partition,
        appended: &[Appended],
        ids: &[Option<u128>],
    ) -> Result<()> {
        for (a, id) in appended.iter().zip(ids) {
            let (Some(h), true) = (id, a.duplicate && a.partition != partition) else {
                continue;
            };
            let t = self.topic(topic)?;
            let original = &t.partitions[a.partition as usize].shared;
            let mut tip = original.tip.subscribe();
            let place = dedup::Placed {
                partition: a.partition,
                offset: a.offset,
            };
            loop {
                let seen = *tip.borrow_and_update();
                if seen.deleted {
                    return Err(self.gone(topic));
                }
                // A rolled-back write leaves the window; a failed partition writes nothing.
                if seen.failed || t.shared.dedup().get(*h) != Some(place) {
                    return Err(Error::Failed {
                        topic: topic.clone(),
                        partition: a.partition,
                        reason: format!(
                            "the original of a duplicate record (offset {}) was not written; \
                             retry the append",
                            a.offset
                        ),
                    });
                }
                if seen.next_offset > a.offset {
                    break;
                }
                tip.changed().await.map_err(|_| self.gone(topic))?;
            }
        }
        Ok(())
    }
}

/// How far `submit` got without waiting.
enum Submitted {
    Sent(oneshot::Receiver<Result<Vec<Appended>>>, IdHashes),
    /// The writer's queue is full: send `Msg` with backpressure.
    Full(
        oneshot::Receiver<Result<Vec<Appended>>>,
        IdHashes,
        flume::Sender<Msg>,
        Msg,
    ),
    Empty,
}

/// On a topic of several partitions, each record's id hash: a duplicate may then name a
/// record on another partition, which is checked before answering.
type IdHashes = Option<Box<[Option<u128>]>>;

impl FileJournal {
    /// Validates an append and queues it for the writer without waiting, so the hot path
    /// touches no shared reference count: the topic map is read through `ArcSwap`.
    fn submit(
        &self,
        topic: &TopicName,
        partition: Partition,
        records: Vec<Record>,
        expectation: Option<Expectation>,
    ) -> Result<Submitted> {
        self.check_open()?;
        let topics = self.inner.topics.load();
        let t = topics
            .get(topic)
            .ok_or_else(|| Error::TopicNotFound(topic.clone()))?;
        let p = &t.partitions[Self::partition_index(t, partition)?];
        let mut body = 0usize;
        for (index, r) in records.iter().enumerate() {
            body += format::validate_record(r)
                .map_err(|reason| Error::InvalidRecord { index, reason })?;
        }
        if let Some(e) = &expectation
            && e.key.len() > format::MAX_KEY_LEN
        {
            return Err(Error::InvalidRecord {
                index: 0,
                reason: format!(
                    "expectation key is longer than {} bytes",
                    format::MAX_KEY_LEN
                ),
            });
        }
        if body + format::FRAME_HEADER_LEN > format::MAX_FRAME_LEN {
            return Err(Error::InvalidRecord {
                index: 0,
                reason: format!("batch is larger than {} bytes", format::MAX_FRAME_LEN),
            });
        }
        if records.is_empty() {
            return Ok(Submitted::Empty);
        }
        if let Some(reason) = p.shared.failed() {
            return Err(Error::Failed {
                topic: topic.clone(),
                partition,
                reason,
            });
        }
        let record_ids = if t.shared.config().dedup_window_ms > 0 {
            RecordIds::of(&records)
        } else {
            RecordIds::Unknown
        };
        let ids: IdHashes = match &record_ids {
            _ if t.partitions.len() == 1 => None,
            RecordIds::One(Some(h)) => Some(Box::new([Some(*h)])),
            RecordIds::Many(hs) if hs.iter().any(Option::is_some) => Some(hs.clone()),
            RecordIds::Unknown | RecordIds::One(None) | RecordIds::Many(_) => None,
        };
        let (reply, rx) = oneshot::channel();
        match p.tx.try_send(Msg::Append(AppendRequest {
            records,
            expectation,
            reply,
            ids: record_ids,
        })) {
            Ok(()) => Ok(Submitted::Sent(rx, ids)),
            Err(flume::TrySendError::Full(msg)) => Ok(Submitted::Full(rx, ids, p.tx.clone(), msg)),
            Err(flume::TrySendError::Disconnected(_)) => Err(self.gone(topic)),
        }
    }
}

fn blocking_failed(dir: &Path, e: tokio::task::JoinError) -> Error {
    Error::io("run a blocking task on", dir, std::io::Error::other(e))
}

#[async_trait]
impl Journal for FileJournal {
    async fn create_topic(&self, name: &TopicName, config: TopicConfig) -> Result<TopicInfo> {
        config.validate()?;
        let _admin = self.inner.admin.lock().await;
        self.check_open()?;
        if let Ok(t) = self.topic(name) {
            return if t.shared.config() == config {
                Ok(t.info())
            } else {
                Err(Error::TopicExists {
                    topic: name.clone(),
                })
            };
        }
        let topics_dir = self.inner.topics_dir.clone();
        let name2 = name.clone();
        let handle = self
            .blocking(move || -> Result<TopicHandle> {
                // Build the topic under a temporary name, then rename it into place.
                let tmp = topics_dir.join(format!("{CREATING_PREFIX}{name2}"));
                let _ = std::fs::remove_dir_all(&tmp);
                std::fs::create_dir_all(&tmp).map_err(|e| Error::io("create", &tmp, e))?;
                let built = write_topic_file(&tmp, &name2, config).and_then(|()| {
                    let dir = topics_dir.join(name2.as_str());
                    std::fs::rename(&tmp, &dir).map_err(|e| Error::io("create", &dir, e))?;
                    sync_dir(&topics_dir)?;
                    Ok(dir)
                });
                let dir = match built {
                    Ok(d) => d,
                    Err(e) => {
                        let _ = std::fs::remove_dir_all(&tmp);
                        return Err(e);
                    }
                };
                TopicHandle::open(dir, name2, config)
            })
            .await?;
        let info = handle.info();
        let handle = Arc::new(handle);
        self.inner.topics.rcu(|m| {
            let mut m = BTreeMap::clone(m);
            m.insert(name.clone(), handle.clone());
            m
        });
        Ok(info)
    }

    async fn update_topic(&self, name: &TopicName, config: TopicConfig) -> Result<TopicInfo> {
        config.validate()?;
        let _admin = self.inner.admin.lock().await;
        let t = self.topic(name)?;
        let old = t.shared.config();
        if old.partitions != config.partitions {
            return Err(Error::InvalidConfig(switchyard_types::ConfigError {
                field: "partitions",
                reason: format!(
                    "cannot change from {} to {}: keys would move between partitions",
                    old.partitions, config.partitions
                ),
            }));
        }
        let dir = t.dir.clone();
        let name2 = name.clone();
        self.blocking(move || write_topic_file(&dir, &name2, config))
            .await?;
        t.shared.set_config(config);
        Ok(t.info())
    }

    async fn describe_topic(&self, name: &TopicName) -> Result<TopicInfo> {
        Ok(self.topic(name)?.info())
    }

    async fn list_topics(&self) -> Result<Vec<TopicName>> {
        self.check_open()?;
        Ok(self.inner.topics.load().keys().cloned().collect())
    }

    async fn delete_topic(&self, name: &TopicName) -> Result<()> {
        let _admin = self.inner.admin.lock().await;
        let t = self.topic(name)?;
        self.inner.topics.rcu(|m| {
            let mut m = BTreeMap::clone(m);
            m.remove(name);
            m
        });
        let topics_dir = self.inner.topics_dir.clone();
        self.blocking(move || -> Result<()> {
            t.stop();
            t.mark_deleted();
            let nanos = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or(0);
            let doomed = topics_dir.join(format!("{DELETED_PREFIX}{}-{nanos}", t.shared.name));
            std::fs::rename(&t.dir, &doomed).map_err(|e| Error::io("delete", &t.dir, e))?;
            sync_dir(&topics_dir)?;
            std::fs::remove_dir_all(&doomed).map_err(|e| Error::io("remove", &doomed, e))
        })
        .await
    }

    async fn choose_partition(
        &self,
        topic: &TopicName,
        choice: &PartitionChoice,
    ) -> Result<Partition> {
        let t = self.topic(topic)?;
        match choice {
            PartitionChoice::Explicit(p) => Self::partition_index(&t, *p).map(|i| i as u32),
            PartitionChoice::Key(k) => Ok(partition_for_key(k, t.partitions.len() as u32)),
            PartitionChoice::RoundRobin => Ok(t.next_round_robin()),
        }
    }

    async fn append(
        &self,
        topic: &TopicName,
        partition: Partition,
        records: Vec<Record>,
        expectation: Option<Expectation>,
    ) -> Result<Vec<Appended>> {
        // The common path keeps only the reply receiver alive across its await: with
        // thousands of appends in flight, a small future is a future that stays in cache.
        let (rx, ids) = match self.submit(topic, partition, records, expectation)? {
            Submitted::Sent(rx, ids) => (rx, ids),
            Submitted::Full(rx, ids, tx, msg) => {
                Box::pin(async move { tx.send_async(msg).await.map(|()| (rx, ids)) })
                    .await
                    .map_err(|_| self.gone(topic))?
            }
            Submitted::Empty => return Ok(Vec::new()),
        };
        let appended = rx.await.map_err(|_| self.gone(topic))??;
        if let Some(ids) = ids
            && appended
                .iter()
                .any(|a| a.duplicate && a.partition != partition)
        {
            Box::pin(self.await_originals(topic, partition, &appended, &ids)).await?;
        }
        Ok(appended)
    }

    async fn read(
        &self,
        topic: &TopicName,
        partition: Partition,
        from: Offset,
        limits: ReadLimits,
    ) -> Result<ReadBatch> {
        let p = self.partition(topic, partition)?;
        let limits = ReadLimits {
            max_records: limits.max_records.max(1),
            max_bytes: limits.max_bytes.max(1),
        };
        if p.reads_cached_tail(from) {
            return p.read(from, limits);
        }
        self.blocking(move || p.read(from, limits)).await
    }

    async fn offset_for_time(
        &self,
        topic: &TopicName,
        partition: Partition,
        at: Timestamp,
    ) -> Result<Offset> {
        let p = self.partition(topic, partition)?;
        self.blocking(move || p.offset_for_time(at)).await
    }

    async fn wait_for(
        &self,
        topic: &TopicName,
        partition: Partition,
        offset: Offset,
    ) -> Result<Offset> {
        let p = self.partition(topic, partition)?;
        let mut tip = p.tip.subscribe();
        let t = *tip
            .wait_for(|t| t.next_offset > offset || t.deleted || t.failed)
            .await
            .map_err(|_| self.gone(topic))?;
        if t.deleted {
            return Err(self.gone(topic));
        }
        if t.next_offset <= offset {
            // Failed: nothing more becomes readable until the journal is reopened.
            return Err(p.failed_error());
        }
        Ok(t.next_offset)
    }
}
