//! A topic: its settings file, its dedup window, and its partitions.

use super::dedup::DedupWindow;
use super::partition::{self, Msg, PartitionShared, sync_dir};
use crate::{Error, PartitionInfo, Result, TopicInfo};
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};
use std::thread::JoinHandle;
use switchyard_types::{Timestamp, TopicConfig, TopicName};

pub(crate) const TOPIC_FILE: &str = "topic.json";

/// The settings file of a topic. Unknown fields are rejected.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub(crate) struct TopicFile {
    pub format: u32,
    pub name: TopicName,
    pub config: TopicConfig,
}

/// Reads and validates a topic's settings file; every error names the file.
pub(crate) fn read_topic_file(dir: &Path) -> Result<TopicFile> {
    let path = dir.join(TOPIC_FILE);
    let text = std::fs::read(&path).map_err(|e| Error::io("read", &path, e))?;
    let bad = |reason: String| Error::io("parse", &path, std::io::Error::other(reason));
    let tf: TopicFile = serde_json::from_slice(&text).map_err(|e| bad(e.to_string()))?;
    if tf.format != 1 {
        return Err(bad(format!("unknown format {}", tf.format)));
    }
    tf.config.validate().map_err(|e| bad(e.to_string()))?;
    let dir_name = dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    if tf.name.as_str() != dir_name {
        return Err(bad(format!(
            "names topic `{}` but lives in directory `{dir_name}`",
            tf.name
        )));
    }
    Ok(tf)
}

/// Writes a topic's settings file durably (temp file, fsync, rename, fsync directory).
pub(crate) fn write_topic_file(dir: &Path, name: &TopicName, config: TopicConfig) -> Result<()> {
    let path = dir.join(TOPIC_FILE);
    let tmp = dir.join("topic.json.tmp");
    let tf = TopicFile {
        format: 1,
        name: name.clone(),
        config,
    };
    let body = serde_json::to_vec_pretty(&tf)
        .map_err(|e| Error::io("encode", &path, std::io::Error::other(e)))?;
    let res = (|| {
        let mut f = File::create(&tmp)?;
        f.write_all(&body)?;
        f.sync_all()?;
        std::fs::rename(&tmp, &path)
    })();
    if let Err(e) = res {
        let _ = std::fs::remove_file(&tmp);
        return Err(Error::io("write", &path, e));
    }
    sync_dir(dir)
}

/// What every partition of a topic shares.
#[derive(Debug)]
pub(crate) struct TopicShared {
    pub name: TopicName,
    config: RwLock<TopicConfig>,
    dedup: Mutex<DedupWindow>,
}

impl TopicShared {
    pub fn config(&self) -> TopicConfig {
        *self.config.read().unwrap_or_else(|e| e.into_inner())
    }

    pub fn set_config(&self, c: TopicConfig) {
        *self.config.write().unwrap_or_else(|e| e.into_inner()) = c;
    }

    pub fn dedup(&self) -> MutexGuard<'_, DedupWindow> {
        self.dedup.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[derive(Debug)]
pub(crate) struct PartitionHandle {
    pub shared: Arc<PartitionShared>,
    pub tx: flume::Sender<Msg>,
    threads: Mutex<Vec<JoinHandle<()>>>,
}

impl PartitionHandle {
    /// Stops the writer after it has written and synced everything queued. Blocking.
    pub fn stop(&self) {
        let _ = self.tx.send(Msg::Shutdown);
        let threads: Vec<_> = self
            .threads
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .drain(..)
            .collect();
        for t in threads {
            let _ = t.join();
        }
    }

    pub fn info(&self) -> PartitionInfo {
        let tip = *self.shared.tip.borrow();
        let segs = self.shared.segments();
        let first_offset = segs
            .first()
            .map_or(tip.next_offset, |s| s.base)
            .min(tip.next_offset);
        let bytes = segs.iter().map(|s| s.state().len).sum();
        let last_timestamp = segs
            .iter()
            .rev()
            .find_map(|s| s.state().max_ts)
            .map(Timestamp);
        PartitionInfo {
            partition: self.shared.id,
            first_offset,
            next_offset: tip.next_offset,
            bytes,
            last_timestamp,
        }
    }
}

#[derive(Debug)]
pub(crate) struct TopicHandle {
    pub shared: Arc<TopicShared>,
    pub dir: PathBuf,
    pub partitions: Vec<PartitionHandle>,
    pub round_robin: AtomicU32,
}

impl TopicHandle {
    /// Opens (and recovers) every partition of the topic in `dir` and starts their writers.
    pub fn open(dir: PathBuf, name: TopicName, config: TopicConfig) -> Result<Self> {
        let shared = Arc::new(TopicShared {
            name,
            config: RwLock::new(config),
            dedup: Mutex::new(DedupWindow::default()),
        });
        let mut opened = Vec::with_capacity(config.partitions as usize);
        for p in 0..config.partitions {
            opened.push(partition::open(shared.clone(), p, dir.join(p.to_string()))?);
        }
        for o in &opened {
            o.load_dedup(config.dedup_window())?;
        }
        let mut partitions = Vec::with_capacity(opened.len());
        for o in opened {
            let shared = o.shared.clone();
            let (tx, threads) = o.start()?;
            partitions.push(PartitionHandle {
                shared,
                tx,
                threads: Mutex::new(threads),
            });
        }
        Ok(Self {
            shared,
            dir,
            partitions,
            round_robin: AtomicU32::new(0),
        })
    }

    pub fn next_round_robin(&self) -> u32 {
        self.round_robin.fetch_add(1, Ordering::Relaxed) % self.partitions.len() as u32
    }

    pub fn info(&self) -> TopicInfo {
        TopicInfo {
            name: self.shared.name.clone(),
            config: self.shared.config(),
            partitions: self.partitions.iter().map(PartitionHandle::info).collect(),
        }
    }

    pub fn stop(&self) {
        for p in &self.partitions {
            p.stop();
        }
    }

    /// Marks every partition deleted, so tails waiting on it end.
    pub fn mark_deleted(&self) {
        for p in &self.partitions {
            p.shared.tip.send_modify(|t| t.deleted = true);
        }
    }
}
