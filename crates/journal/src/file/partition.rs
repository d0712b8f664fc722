//! One partition: its segments, its writer thread (group commit) and its syncer thread.
//!
//! Appends reach the writer over a bounded channel. The writer drains every request that is
//! waiting, assigns offsets, encodes all of them into one buffer, and writes it with one
//! `write`. With `always` durability it hands the cycle's replies to the syncer, which runs
//! one `fdatasync` for everything written since the last one and only then publishes the new
//! tip and answers. While the syncer waits for the disk the writer already fills the next
//! buffer, so writing and syncing overlap and every concurrent appender shares each sync.

use super::dedup::{HashedMap, Placed, id_hash};
use super::format::{self, FRAME_HEADER_LEN, Scanned, Scanner};
use super::keys::{KeyTable, Keys};
use super::segment::{
    ScanSummary, SegIndex, SegState, Segment, open_for_read, parse_segment_file_name, path_of,
    resync_end, scan_segment,
};
use super::sidecar::{self, IndexEntry, SealedIndex, SealedKeys, SealedSummary};
use super::topic::TopicShared;
use crate::{Appended, Error, ReadBatch, ReadLimits, Result};
use std::collections::VecDeque;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};
use switchyard_types::{Durability, Expectation, Expected, Record, StoredRecord, Timestamp};
use tokio::sync::{oneshot, watch};

/// How many append requests one writer cycle takes at most.
const MAX_REQUESTS_PER_CYCLE: usize = 2048;
/// How many bytes one writer cycle encodes at most before writing.
const MAX_BYTES_PER_CYCLE: usize = 1 << 20;
/// How often the writer enforces retention and expires dedup entries when idle.
const HOUSEKEEPING_EVERY: Duration = Duration::from_millis(500);
/// How many synced bytes at the end of the active segment stay in the page cache for tail
/// readers; older synced bytes are dropped from it (as PostgreSQL does with its WAL). New
/// writes then reuse pages the kernel just freed instead of taking fresh ones: on a VM that
/// backs guest memory lazily, a fresh page costs a host fault, which tripled the write
/// syscall's cost here (`ARCHITECTURE.md`, "Performance").
const CACHED_TAIL: u64 = 16 << 20;
/// A read that starts within this many bytes of the visible end of the active segment reads
/// bytes just written (well inside [`CACHED_TAIL`], so in the page cache): it runs on the
/// caller's thread. A tail follower then costs no hand-off to the blocking pool and back,
/// which was two thread wake-ups of every publish-to-handler.
const INLINE_READ_BYTES: u64 = 256 << 10;

pub(crate) type Reply = oneshot::Sender<Result<Vec<Appended>>>;

pub(crate) struct AppendRequest {
    pub records: Vec<Record>,
    pub expectation: Option<Expectation>,
    pub reply: Reply,
    /// The records' id hashes, computed by the caller: the writer is the one serial step of
    /// an append, so work that can run beside it does.
    pub ids: RecordIds,
}

/// Each record's id hash, when the caller knew the topic dedups.
#[derive(Debug)]
pub(crate) enum RecordIds {
    Unknown,
    One(Option<u128>),
    Many(Box<[Option<u128>]>),
}

impl RecordIds {
    pub fn of(records: &[Record]) -> Self {
        let hash = |r: &Record| r.id.as_ref().map(|id| id_hash(id.as_bytes()));
        match records {
            [one] => RecordIds::One(hash(one)),
            many => RecordIds::Many(many.iter().map(hash).collect()),
        }
    }

    /// Record `i`'s id hash; computed here if the caller did not.
    fn get(&self, i: usize, r: &Record) -> Option<u128> {
        match self {
            RecordIds::One(h) if i == 0 => *h,
            RecordIds::Many(hs) if i < hs.len() => hs[i],
            _ => r.id.as_ref().map(|id| id_hash(id.as_bytes())),
        }
    }
}

pub(crate) enum Msg {
    Append(AppendRequest),
    /// Finish everything queued before this message, sync, and stop.
    Shutdown,
}

/// The readable end of a partition, published after each durability point.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Tip {
    pub next_offset: u64,
    /// The segment that holds the newest visible record, and how many of its bytes are
    /// visible. Segments after it are not visible yet.
    pub segment_base: u64,
    pub segment_len: u64,
    pub deleted: bool,
    /// The partition stopped after an I/O error: nothing more becomes readable.
    pub failed: bool,
    /// Bumped when a failed write is rolled back, to wake duplicates waiting on it.
    pub rollbacks: u64,
}

pub(crate) fn key_hash(key: &[u8]) -> u128 {
    xxhash_rust::xxh3::xxh3_128(key)
}

#[derive(Debug)]
pub(crate) struct PartitionShared {
    pub topic: Arc<TopicShared>,
    pub id: u32,
    pub dir: PathBuf,
    pub segments: RwLock<Vec<Arc<Segment>>>,
    pub tip: watch::Sender<Tip>,
    failed: Mutex<Option<String>>,
    /// Set once `failed` is: the append path checks this without taking the lock.
    is_failed: AtomicBool,
    /// The active segment's write handle, for the interval syncer.
    active_file: Mutex<Arc<File>>,
    /// The writer and the syncer change these on every cycle; they sit on their own cache
    /// line so the appenders' reads of the fields above do not miss.
    counters: CacheLine<SyncCounters>,
}

#[derive(Debug, Default)]
#[repr(align(128))]
struct CacheLine<T>(T);

impl<T> std::ops::Deref for CacheLine<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.0
    }
}

#[derive(Debug, Default)]
struct SyncCounters {
    /// Written since the last interval sync.
    dirty: AtomicBool,
    /// Sync jobs sent to the syncer and not yet answered. While any is outstanding, even an
    /// `os` cycle goes through the syncer, so the tip never passes an unsynced `always` cycle.
    outstanding: AtomicUsize,
    /// Keys the writer holds in memory for optimistic concurrency, published for tests.
    keys_in_memory: AtomicUsize,
}

impl PartitionShared {
    pub fn segments(&self) -> Vec<Arc<Segment>> {
        self.segments
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// How many keys the writer holds in memory (see [`Keys::in_memory`]), as of its last
    /// cycle: at most the active segment's.
    #[cfg(any(test, feature = "test-util"))]
    pub fn keys_in_memory(&self) -> usize {
        self.counters.keys_in_memory.load(Ordering::Acquire)
    }

    pub fn failed(&self) -> Option<String> {
        if !self.is_failed.load(Ordering::Acquire) {
            return None;
        }
        self.failed
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    fn fail(&self, reason: String) {
        let mut f = self.failed.lock().unwrap_or_else(|e| e.into_inner());
        if f.is_none() {
            *f = Some(reason);
            self.is_failed.store(true, Ordering::Release);
        }
        drop(f);
        self.tip.send_modify(|t| t.failed = true);
    }

    pub fn failed_error(&self) -> Error {
        Error::Failed {
            topic: self.topic.name.clone(),
            partition: self.id,
            reason: self.failed().unwrap_or_default(),
        }
    }

    /// Publishes a new tip unless it would move backwards.
    fn publish(&self, tip: Tip) {
        self.tip.send_if_modified(|t| {
            if tip.next_offset > t.next_offset
                || (tip.segment_base, tip.segment_len) > (t.segment_base, t.segment_len)
            {
                *t = Tip {
                    deleted: t.deleted,
                    failed: t.failed,
                    rollbacks: t.rollbacks,
                    ..tip
                };
                true
            } else {
                false
            }
        });
    }

    fn corrupt(&self, seg: &Segment, offset: u64, position: u64, reason: String) -> Error {
        Error::Corrupt {
            topic: self.topic.name.to_string(),
            partition: self.id,
            offset,
            path: seg.path.clone(),
            position,
            reason,
        }
    }

    /// Whether a read from `from` scans only the last [`INLINE_READ_BYTES`] of the visible
    /// active segment (or nothing at all), so that it may run on an async thread.
    pub fn reads_cached_tail(&self, from: u64) -> bool {
        let tip = *self.tip.borrow();
        if from >= tip.next_offset {
            return true;
        }
        let active = {
            let segs = self.segments.read().unwrap_or_else(|e| e.into_inner());
            match segs.last() {
                Some(s) if s.base == tip.segment_base && s.base <= from => s.clone(),
                _ => return false,
            }
        };
        match active.seek(|e| e.offset <= from) {
            Ok((position, _)) => tip.segment_len.saturating_sub(position) <= INLINE_READ_BYTES,
            Err(_) => false,
        }
    }

    /// Reads records at offsets `>= from` (see `Journal::read`).
    pub fn read(&self, from: u64, limits: ReadLimits) -> Result<ReadBatch> {
        let tip = *self.tip.borrow();
        let segs = self.segments();
        let first = segs.first().map_or(tip.next_offset, |s| s.base);
        let mut from = from.max(first);
        let mut out = Vec::new();
        let mut bytes = 0usize;
        if from >= tip.next_offset {
            return Ok(ReadBatch {
                records: out,
                next_offset: from,
            });
        }
        let start = segs.partition_point(|s| s.base <= from).saturating_sub(1);
        let mut prev: Option<(&Segment, u64, u64)> = None;
        for seg in &segs[start..] {
            if seg.base > tip.segment_base {
                break;
            }
            // A segment that ends short of its successor's base lost records: say so
            // rather than skip them.
            if let Some((p, end_offset, end_pos)) = prev
                && end_offset < seg.base
                && from < seg.base
            {
                let reason = format!(
                    "segment ends at offset {end_offset} but the next segment starts at {}",
                    seg.base
                );
                return self.stop_at_corruption(out, p, end_offset, end_pos, reason);
            }
            let limit = if seg.base == tip.segment_base {
                tip.segment_len
            } else {
                seg.state().len
            };
            let (mut pos, mut expected) = seg
                .seek(|e| e.offset <= from)
                .map_err(|e| Error::io("read index of", &seg.path, e))?;
            // Chunks of 64 KiB: a read of a few records must not allocate (and zero) the
            // whole byte limit; returned records share their chunk, so big ones pin memory.
            let mut scanner = Scanner::new(&seg.file, pos, limit, limits.max_bytes.min(64 << 10));
            loop {
                if out.len() >= limits.max_records || (bytes >= limits.max_bytes && !out.is_empty())
                {
                    return Ok(ReadBatch {
                        next_offset: from,
                        records: out,
                    });
                }
                let frame = match scanner.next_frame() {
                    Ok(Scanned::End) => break,
                    Ok(Scanned::Frame(f)) if f.header.base == expected => f,
                    Ok(Scanned::Frame(f)) => {
                        let reason = format!(
                            "batch starts at offset {} instead of {expected}",
                            f.header.base
                        );
                        return self.stop_at_corruption(out, seg, expected, f.position, reason);
                    }
                    Ok(Scanned::Invalid { position, reason }) => {
                        return self.stop_at_corruption(out, seg, expected, position, reason);
                    }
                    Err(e) => return Err(Error::io("read", &seg.path, e)),
                };
                pos = frame.position;
                expected = frame.header.next_offset();
                if expected <= from {
                    continue;
                }
                let before = out.len();
                let until = tip
                    .next_offset
                    .min(from.saturating_add((limits.max_records - out.len()) as u64));
                if let Err(reason) = frame.decode_into(from, until, &mut out) {
                    return self.stop_at_corruption(out, seg, frame.header.base, pos, reason);
                }
                // The byte limit holds within a batch too; the first record always goes.
                let mut keep = out.len();
                for (i, r) in out.iter().enumerate().skip(before) {
                    if i > 0 && bytes + r.payload.len() > limits.max_bytes {
                        keep = i;
                        break;
                    }
                    bytes += r.payload.len();
                }
                if keep < out.len() {
                    out.truncate(keep);
                    let next_offset = out.last().map_or(from, |l| l.offset + 1);
                    return Ok(ReadBatch {
                        next_offset,
                        records: out,
                    });
                }
                if let Some(last) = out.last() {
                    from = last.offset + 1;
                }
                if from >= tip.next_offset {
                    return Ok(ReadBatch {
                        next_offset: from,
                        records: out,
                    });
                }
            }
            prev = Some((&**seg, expected, limit));
        }
        Ok(ReadBatch {
            next_offset: from,
            records: out,
        })
    }

    fn stop_at_corruption(
        &self,
        out: Vec<StoredRecord>,
        seg: &Segment,
        offset: u64,
        position: u64,
        reason: String,
    ) -> Result<ReadBatch> {
        match out.last() {
            Some(last) => Ok(ReadBatch {
                next_offset: last.offset + 1,
                records: out,
            }),
            None => Err(self.corrupt(seg, offset, position, reason)),
        }
    }

    /// The first offset whose timestamp is `>= at` (see `Journal::offset_for_time`).
    pub fn offset_for_time(&self, at: Timestamp) -> Result<u64> {
        let tip = *self.tip.borrow();
        for seg in self.segments() {
            if seg.base > tip.segment_base {
                break;
            }
            let (max_ts, sealed_len) = {
                let st = seg.state();
                (st.max_ts, st.len)
            };
            if max_ts.is_none_or(|m| m < at.0) {
                continue;
            }
            let limit = if seg.base == tip.segment_base {
                tip.segment_len
            } else {
                sealed_len
            };
            let (pos, mut expected) = seg
                .seek(|e| e.timestamp < at.0)
                .map_err(|e| Error::io("read index of", &seg.path, e))?;
            let mut scanner = Scanner::new(&seg.file, pos, limit, 64 << 10);
            loop {
                match scanner.next_frame() {
                    Ok(Scanned::Frame(f)) if f.header.timestamp.0 >= at.0 => {
                        return Ok(f.header.base.min(tip.next_offset));
                    }
                    Ok(Scanned::Frame(f)) => expected = f.header.next_offset(),
                    Ok(Scanned::End) => break,
                    Ok(Scanned::Invalid { position, reason }) => {
                        return Err(self.corrupt(&seg, expected, position, reason));
                    }
                    Err(e) => return Err(Error::io("read", &seg.path, e)),
                }
            }
        }
        Ok(tip.next_offset)
    }

    /// Calls `each` with every visible record id at offsets `>= from` and its timestamp.
    fn each_id_from(&self, from: u64, mut each: impl FnMut(&[u8], u64, i64)) -> Result<()> {
        let limits = ReadLimits {
            max_records: 4096,
            max_bytes: 8 << 20,
        };
        let mut next = from;
        loop {
            let batch = match self.read(next, limits) {
                Ok(b) => b,
                // A corrupt record must not stop the journal from opening: skip to the
                // next segment (ids after the corruption in that segment are not deduped).
                Err(Error::Corrupt { offset, .. }) => {
                    match self.segments().iter().find(|s| s.base > offset) {
                        Some(seg) => {
                            next = seg.base;
                            continue;
                        }
                        None => return Ok(()),
                    }
                }
                Err(e) => return Err(e),
            };
            if batch.records.is_empty() {
                return Ok(());
            }
            for r in &batch.records {
                if let Some(id) = &r.id {
                    each(id.as_bytes(), r.offset, r.timestamp.0);
                }
            }
            next = batch.next_offset;
        }
    }

    /// The first segment base whose newest record is not older than `at`: a coarse time
    /// seek that reads no records, for when the exact one meets corruption.
    fn segment_for_time(&self, at: Timestamp) -> u64 {
        let segs = self.segments();
        segs.iter()
            .find(|s| s.state().max_ts.is_some_and(|m| m >= at.0))
            .or(segs.last())
            .map_or(0, |s| s.base)
    }
}

/// A partition opened and recovered, with its writer not yet started.
pub(crate) struct Opened {
    pub shared: Arc<PartitionShared>,
    writer: Writer,
}

impl Opened {
    /// Puts the partition's ids from the dedup window into the topic's dedup map.
    pub fn load_dedup(&self, window: Duration) -> Result<()> {
        if window.is_zero() {
            return Ok(());
        }
        let cutoff = Timestamp::now().saturating_sub(window);
        let from = match self.shared.offset_for_time(cutoff) {
            Ok(o) => o,
            Err(Error::Corrupt { .. }) => self.shared.segment_for_time(cutoff),
            Err(e) => return Err(e),
        };
        let mut d = self.shared.topic.dedup();
        let id = self.shared.id;
        self.shared.each_id_from(from, |rid, offset, ts| {
            d.insert(
                id_hash(rid),
                Placed {
                    partition: id,
                    offset,
                },
                ts,
            );
        })
    }

    /// Starts the writer and syncer threads.
    pub fn start(self) -> Result<(flume::Sender<Msg>, Vec<std::thread::JoinHandle<()>>)> {
        let (tx, rx) = flume::bounded(64 * 1024);
        let (sync_tx, sync_rx) = std::sync::mpsc::channel();
        let name = format!("sy-w-{}-{}", self.shared.topic.name, self.shared.id);
        let mut writer = self.writer;
        writer.rx = Some(rx);
        writer.sync_tx = Some(sync_tx);
        let shared = self.shared.clone();
        let spawn_err = |e| Error::io("spawn thread for", &shared.dir, e);
        let syncer = std::thread::Builder::new()
            .name(format!("sy-s-{}-{}", shared.topic.name, shared.id))
            .spawn({
                let shared = shared.clone();
                move || run_syncer(shared, sync_rx)
            })
            .map_err(spawn_err)?;
        let w = std::thread::Builder::new()
            .name(name)
            .spawn(move || writer.run())
            .map_err(spawn_err)?;
        Ok((tx, vec![w, syncer]))
    }
}

fn list_segments(dir: &Path) -> Result<Vec<u64>> {
    let mut bases = Vec::new();
    let rd = std::fs::read_dir(dir).map_err(|e| Error::io("list", dir, e))?;
    for entry in rd {
        let entry = entry.map_err(|e| Error::io("list", dir, e))?;
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if let Some(base) = parse_segment_file_name(&name) {
            let ft = entry
                .file_type()
                .map_err(|e| Error::io("stat", entry.path(), e))?;
            if !ft.is_file() {
                return Err(Error::io(
                    "open segment",
                    entry.path(),
                    std::io::Error::other("not a regular file"),
                ));
            }
            bases.push(base);
        } else if name.ends_with(".tmp") {
            // A derived file whose write was interrupted.
            let _ = std::fs::remove_file(entry.path());
        }
    }
    bases.sort_unstable();
    Ok(bases)
}

pub(crate) fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| Error::io("sync directory", dir, e))
}

fn open_segment_file(path: &Path) -> Result<File> {
    open_for_read(path).map(|(file, _)| file)
}

/// Opens a partition directory: validates or rebuilds each sealed segment's index and key
/// table, scans the active segment and truncates a torn tail.
pub(crate) fn open(topic: Arc<TopicShared>, id: u32, dir: PathBuf) -> Result<Opened> {
    let shared_topic = topic.clone();
    let cfg = topic.config();
    if !dir.is_dir() {
        std::fs::create_dir_all(&dir).map_err(|e| Error::io("create", &dir, e))?;
        if let Some(parent) = dir.parent() {
            sync_dir(parent)?;
        }
    }
    let mut bases = list_segments(&dir)?;
    if bases.is_empty() {
        let path = path_of(&dir, 0);
        File::create(&path).map_err(|e| Error::io("create segment", &path, e))?;
        sync_dir(&dir)?;
        bases.push(0);
    }
    let interval = u64::from(cfg.index_interval_bytes);
    let mut keys = Keys::default();
    let mut segments = Vec::with_capacity(bases.len());
    let mut last_ts = i64::MIN;
    for (i, &base) in bases[..bases.len() - 1].iter().enumerate() {
        let path = path_of(&dir, base);
        let (file, len) = open_for_read(&path)?;
        let next_base = bases[i + 1];
        // Validated here (streaming through the file once) and searched on demand later:
        // no sealed segment's keys stay in memory.
        let seg_keys = SealedKeys::open(&path, base, next_base, len);
        let index = SealedIndex::open(&path, base, len)
            .filter(|ix| ix.summary.next_offset == next_base && seg_keys.is_some());
        let (index, summary) = match (index, seg_keys) {
            (Some(ix), Some(seg_keys)) => {
                let s = ix.summary;
                keys.push_sealed(base, KeyTable::File(seg_keys));
                (SegIndex::Disk(ix), s)
            }
            _ => {
                // Rebuild both sidecars from the log. A corrupt sealed segment keeps the
                // offsets its successor's name implies; reads report the bad record.
                let mut seg_keys: HashedMap<u64> = HashedMap::default();
                let scan = scan_segment(&file, base, len, interval, |f| {
                    if let Ok(ks) = f.keys() {
                        for (off, k) in ks {
                            seg_keys.insert(key_hash(&k), off);
                        }
                    }
                })
                .map_err(|e| Error::io("read", &path, e))?;
                let summary = SealedSummary {
                    log_len: len,
                    next_offset: next_base,
                    max_timestamp: scan.max_ts,
                    entries: scan.index.len() as u64,
                };
                let mut sorted: Vec<_> = seg_keys.into_iter().collect();
                sorted.sort_unstable_by_key(|&(h, _)| h);
                keys.push_sealed(base, KeyTable::write(&path, base, next_base, len, sorted));
                let index = match sidecar::write_index(&path, base, summary, &scan.index)
                    .ok()
                    .and_then(|()| SealedIndex::open(&path, base, len))
                {
                    Some(ix) => SegIndex::Disk(ix),
                    None => SegIndex::Mem(scan.index),
                };
                (index, summary)
            }
        };
        if let Some(m) = summary.max_timestamp {
            last_ts = last_ts.max(m);
        }
        let state = SegState {
            len,
            next_offset: summary.next_offset,
            max_ts: summary.max_timestamp,
            index,
        };
        segments.push(Arc::new(Segment::new(base, path, file, state)));
    }

    // The active segment: scan it all, keep the valid prefix, cut off a torn tail.
    let base = *bases.last().unwrap_or(&0);
    let path = path_of(&dir, base);
    let append = OpenOptions::new()
        .read(true)
        .append(true)
        .open(&path)
        .map_err(|e| Error::io("open segment", &path, e))?;
    let len = append
        .metadata()
        .map_err(|e| Error::io("stat", &path, e))?
        .len();
    let scan: ScanSummary = scan_segment(&append, base, len, interval, |f| {
        if let Ok(ks) = f.keys() {
            for (off, k) in ks {
                keys.insert_active(key_hash(&k), off);
            }
        }
    })
    .map_err(|e| Error::io("read", &path, e))?;
    if scan.valid_len < len {
        // A torn write leaves nothing valid behind it. Valid batches after the bad bytes
        // mean damage inside acknowledged data: keep every byte, seal the segment as it is
        // (reads report the damage as corruption) and continue in a new segment.
        let after = resync_end(&append, scan.valid_len, len, scan.next_offset)
            .map_err(|e| Error::io("read", &path, e))?;
        if let Some(next) = after {
            let new_path = path_of(&dir, next);
            File::create(&new_path).map_err(|e| Error::io("create segment", &new_path, e))?;
            sync_dir(&dir)?;
            drop(append);
            return open(shared_topic, id, dir);
        }
        append
            .set_len(scan.valid_len)
            .and_then(|()| append.sync_all())
            .map_err(|e| Error::io("truncate torn tail of", &path, e))?;
    }
    // A sidecar left by an interrupted seal of what is still the active segment is stale.
    for p in [sidecar::index_path(&path), sidecar::keys_path(&path)] {
        let _ = std::fs::remove_file(p);
    }
    if let Some(m) = scan.max_ts {
        last_ts = last_ts.max(m);
    }
    let next_offset = scan.next_offset;
    let since_index = match scan.index.last() {
        Some(e) => scan.valid_len - e.position,
        None => interval,
    };
    let state = SegState {
        len: scan.valid_len,
        next_offset,
        max_ts: scan.max_ts,
        index: SegIndex::Mem(scan.index),
    };
    let read_handle = open_segment_file(&path)?;
    let active = Arc::new(Segment::new(base, path, read_handle, state));
    segments.push(active.clone());
    let tip = Tip {
        next_offset,
        segment_base: base,
        segment_len: scan.valid_len,
        deleted: false,
        failed: false,
        rollbacks: 0,
    };
    let file = Arc::new(append);
    let shared = Arc::new(PartitionShared {
        topic,
        id,
        dir,
        segments: RwLock::new(segments),
        tip: watch::Sender::new(tip),
        failed: Mutex::new(None),
        is_failed: AtomicBool::new(false),
        active_file: Mutex::new(file.clone()),
        counters: CacheLine::default(),
    });
    shared
        .counters
        .keys_in_memory
        .store(keys.in_memory(), Ordering::Release);
    let writer = Writer {
        shared: shared.clone(),
        rx: None,
        sync_tx: None,
        file,
        active,
        len: scan.valid_len,
        next_offset,
        last_ts,
        since_index,
        keys,
        buf: Vec::with_capacity(1 << 20),
        slots: Vec::new(),
        fresh: Vec::new(),
        seen_in_batch: HashedMap::default(),
        id_hashes: Vec::new(),
        pending: VecDeque::new(),
        last_housekeeping: Instant::now(),
        trim: CacheTrim::default(),
    };
    Ok(Opened { shared, writer })
}

struct SyncJob {
    /// Whether this cycle needs an `fdatasync` (durability `always`) or only has to be
    /// answered in order behind jobs that do.
    sync: bool,
    segment: Arc<Segment>,
    file: Arc<File>,
    tip: Tip,
    replies: Vec<(Reply, Answer)>,
    /// The cycle's encoded requests, dropped here so freeing them costs the writer nothing.
    spent: Vec<Vec<Record>>,
}

/// A reply to send once the cycle is durable. The common single-record case carries no
/// allocation until it is sent.
enum Answer {
    One(Appended),
    Full(Result<Vec<Appended>>),
}

impl Answer {
    fn into_result(self) -> Result<Vec<Appended>> {
        match self {
            Answer::One(a) => Ok(vec![a]),
            Answer::Full(r) => r,
        }
    }
}

/// Where one record of a request ends up, before offsets are known.
enum Slot {
    Dup(Appended),
    /// The k-th new record of the request.
    New(usize),
    /// A repeat, within the request, of the k-th new record.
    SameAs(usize),
}

enum Placement {
    Done(Answer),
    /// Does not fit this cycle; `roll` when it does not fit the active segment either.
    Later {
        roll: bool,
    },
}

/// What a cycle changed before its write, to undo if the write fails.
#[derive(Default)]
struct Undo {
    keys: Vec<(u128, Option<u64>)>,
    dedup: Vec<(u128, Placed)>,
    new_index: Vec<IndexEntry>,
}

struct Writer {
    shared: Arc<PartitionShared>,
    rx: Option<flume::Receiver<Msg>>,
    sync_tx: Option<std::sync::mpsc::Sender<SyncJob>>,
    file: Arc<File>,
    active: Arc<Segment>,
    len: u64,
    next_offset: u64,
    last_ts: i64,
    since_index: u64,
    /// Each key's last offset in the retained log: the active segment's keys in memory,
    /// the sealed segments' searched in their `.keys` sidecars.
    keys: Keys,
    /// Per-request scratch, reused so a cycle allocates only what it returns.
    slots: Vec<Slot>,
    fresh: Vec<(usize, Option<u128>)>,
    seen_in_batch: HashedMap<usize>,
    id_hashes: Vec<u128>,
    buf: Vec<u8>,
    /// Requests that did not fit the active segment: they go first after the roll.
    pending: VecDeque<AppendRequest>,
    last_housekeeping: Instant,
    /// Page-cache trimming when no sync follows a write (the syncer trims after syncs).
    trim: CacheTrim,
}

impl Writer {
    fn run(mut self) {
        let Some(rx) = self.rx.take() else { return };
        let mut stop = false;
        loop {
            let mut batch: Vec<AppendRequest> = self.pending.drain(..).collect();
            if batch.is_empty() {
                if stop {
                    break;
                }
                match rx.recv_timeout(HOUSEKEEPING_EVERY) {
                    Ok(Msg::Append(r)) => batch.push(r),
                    Ok(Msg::Shutdown) => {
                        stop = true;
                        continue;
                    }
                    Err(flume::RecvTimeoutError::Timeout) => {
                        self.housekeeping();
                        continue;
                    }
                    Err(flume::RecvTimeoutError::Disconnected) => {
                        stop = true;
                        continue;
                    }
                }
            }
            while !stop && batch.len() < MAX_REQUESTS_PER_CYCLE {
                match rx.try_recv() {
                    Ok(Msg::Append(r)) => batch.push(r),
                    Ok(Msg::Shutdown) => stop = true,
                    Err(_) => break,
                }
            }
            self.cycle(batch);
            if self.last_housekeeping.elapsed() >= HOUSEKEEPING_EVERY {
                self.housekeeping();
            }
        }
        // Closing: make everything written durable, whatever the topic's durability.
        if self.shared.failed().is_none()
            && let Err(e) = self.file.sync_data()
        {
            self.shared.fail(format!("fdatasync at close: {e}"));
        }
        drop(self.sync_tx.take());
    }

    fn housekeeping(&mut self) {
        self.last_housekeeping = Instant::now();
        let cfg = self.shared.topic.config();
        if cfg.dedup_window_ms > 0 {
            let cutoff = Timestamp::now().saturating_sub(cfg.dedup_window()).0;
            self.shared.topic.dedup().expire(cutoff);
        }
        self.enforce_retention(&cfg);
    }

    fn tip(&self) -> Tip {
        Tip {
            next_offset: self.next_offset,
            segment_base: self.active.base,
            segment_len: self.len,
            deleted: false,
            failed: false,
            rollbacks: 0,
        }
    }

    /// One group-commit cycle: everything in `batch` is encoded, written with one write, and
    /// answered after one durability point.
    fn cycle(&mut self, batch: Vec<AppendRequest>) {
        if self.shared.failed().is_some() {
            for r in batch {
                let _ = r.reply.send(Err(self.shared.failed_error()));
            }
            return;
        }
        let cfg = self.shared.topic.config();
        let now = Timestamp::now().0.max(self.last_ts);
        let start = (self.len, self.next_offset, self.since_index);
        self.buf.clear();
        let mut replies = Vec::with_capacity(batch.len());
        let mut spent = Vec::with_capacity(batch.len());
        let mut undo = Undo::default();
        let dedup_on = cfg.dedup_window_ms > 0
            && batch
                .iter()
                .any(|r| r.records.iter().any(|x| x.id.is_some()));
        let topic = self.shared.topic.clone();
        let mut dedup = dedup_on.then(|| topic.dedup());
        if let Some(d) = dedup.as_mut() {
            d.expire(now - cfg.dedup_window_ms as i64);
        }
        // Hash every id first and probe the window for all of them in one tight loop: the
        // probes are independent, so their cache misses overlap instead of queueing one
        // behind the other with an encode in between. The second pass finds them warm.
        let mut id_hashes = std::mem::take(&mut self.id_hashes);
        id_hashes.clear();
        if let Some(d) = dedup.as_ref() {
            for req in &batch {
                for (i, r) in req.records.iter().enumerate() {
                    if let Some(h) = req.ids.get(i, r) {
                        d.touch(h);
                        id_hashes.push(h);
                    }
                }
            }
        }
        let mut next_hash = id_hashes.iter().copied();
        let mut need_roll = false;
        let mut requests = batch.into_iter();
        while let Some(req) = requests.next() {
            // Dedup against the window and within the request; scratch vectors are reused.
            let mut slots = std::mem::take(&mut self.slots);
            let mut fresh = std::mem::take(&mut self.fresh);
            slots.clear();
            fresh.clear();
            self.seen_in_batch.clear();
            for (i, r) in req.records.iter().enumerate() {
                let h = match (dedup.as_ref(), &r.id) {
                    (Some(d), Some(id)) => {
                        let h = next_hash.next().unwrap_or_else(|| id_hash(id.as_bytes()));
                        if let Some(p) = d.get(h) {
                            slots.push(Slot::Dup(Appended {
                                partition: p.partition,
                                offset: p.offset,
                                duplicate: true,
                            }));
                            continue;
                        }
                        if req.records.len() > 1 {
                            if let Some(&k) = self.seen_in_batch.get(&h) {
                                slots.push(Slot::SameAs(k));
                                continue;
                            }
                            self.seen_in_batch.insert(h, fresh.len());
                        }
                        Some(h)
                    }
                    _ => None,
                };
                slots.push(Slot::New(fresh.len()));
                fresh.push((i, h));
            }
            let outcome = self.place(&req, &slots, &fresh, &cfg, now, &mut dedup, &mut undo);
            self.slots = slots;
            self.fresh = fresh;
            match outcome {
                Placement::Done(answer) => {
                    replies.push((req.reply, answer));
                    spent.push(req.records);
                }
                Placement::Later { roll } => {
                    need_roll = roll;
                    self.pending.push_back(req);
                    self.pending.extend(requests.by_ref());
                    break;
                }
            }
        }
        drop(dedup);
        self.id_hashes = id_hashes;
        self.publish_key_count();

        if !self.buf.is_empty() {
            if let Err(e) = (&*self.file).write_all(&self.buf) {
                self.rollback(start, &undo);
                // io::Error is not Clone: each caller gets one of the same kind and text,
                // so a full disk still reads as `StorageFull` / ENOSPC.
                for (reply, _) in replies {
                    let _ = reply.send(Err(Error::io(
                        "append to",
                        &self.active.path,
                        std::io::Error::new(e.kind(), e.to_string()),
                    )));
                }
                // Requests held back for the roll are answered in the next cycle.
                return;
            }
            self.len += self.buf.len() as u64;
            self.last_ts = now;
            let mut st = self.active.state_mut();
            st.len = self.len;
            st.next_offset = self.next_offset;
            st.max_ts = Some(now);
            if let SegIndex::Mem(v) = &mut st.index {
                v.append(&mut undo.new_index);
            }
            drop(st);
            if cfg.durability != Durability::Always {
                self.trim.after_write(&self.active, self.len);
            }
        }

        let sync = cfg.durability == Durability::Always;
        if !sync {
            self.shared.counters.dirty.store(true, Ordering::Release);
        }
        if sync || self.shared.counters.outstanding.load(Ordering::Acquire) > 0 {
            let job = SyncJob {
                sync,
                segment: self.active.clone(),
                file: self.file.clone(),
                tip: self.tip(),
                replies,
                spent,
            };
            self.shared
                .counters
                .outstanding
                .fetch_add(1, Ordering::AcqRel);
            if let Some(tx) = &self.sync_tx
                && let Err(std::sync::mpsc::SendError(job)) = tx.send(job)
            {
                self.shared
                    .counters
                    .outstanding
                    .fetch_sub(1, Ordering::AcqRel);
                for (reply, _) in job.replies {
                    let _ = reply.send(Err(Error::Closed));
                }
            }
        } else {
            self.shared.publish(self.tip());
            for (reply, answer) in replies {
                let _ = reply.send(answer.into_result());
            }
        }
        if need_roll && let Err(e) = self.roll(&cfg) {
            // The held-back requests cannot be written; answer them now.
            for r in self.pending.drain(..) {
                let _ = r.reply.send(Err(Error::io(
                    "roll segment",
                    &self.shared.dir,
                    std::io::Error::other(e.to_string()),
                )));
            }
        }
    }

    /// Checks one request's expectation and encodes its new records into the cycle's
    /// buffer, or says it must wait for the next cycle (or for a new segment).
    #[allow(clippy::too_many_arguments)]
    fn place(
        &mut self,
        req: &AppendRequest,
        slots: &[Slot],
        fresh: &[(usize, Option<u128>)],
        cfg: &switchyard_types::TopicConfig,
        now: i64,
        dedup: &mut Option<std::sync::MutexGuard<'_, super::dedup::DedupWindow>>,
        undo: &mut Undo,
    ) -> Placement {
        if fresh.is_empty() {
            let out = slots
                .iter()
                .filter_map(|s| match s {
                    Slot::Dup(a) => Some(*a),
                    Slot::New(_) | Slot::SameAs(_) => None,
                })
                .collect();
            return Placement::Done(Answer::Full(Ok(out)));
        }
        if let Some(exp) = &req.expectation {
            let actual = match self.keys.last_offset(key_hash(&exp.key)) {
                Ok(a) => a,
                // Never "no record": that would let a conflicting append through.
                Err(e) => {
                    let e = e.into_error(&self.shared.topic.name, self.shared.id);
                    return Placement::Done(Answer::Full(Err(e)));
                }
            };
            let ok = match exp.expected {
                Expected::NoRecord => actual.is_none(),
                Expected::LastOffset(o) => actual == Some(o),
            };
            if !ok {
                return Placement::Done(Answer::Full(Err(Error::Conflict {
                    topic: self.shared.topic.name.clone(),
                    partition: self.shared.id,
                    key: String::from_utf8_lossy(&exp.key).into_owned(),
                    expected: exp.expected,
                    actual,
                })));
            }
        }
        let body_len: usize = fresh
            .iter()
            .map(|&(i, _)| format::record_len(&req.records[i]))
            .sum();
        let frame_len = FRAME_HEADER_LEN + body_len;
        let written = self.len + self.buf.len() as u64;
        if written > 0 && written + frame_len as u64 > cfg.segment_bytes {
            return Placement::Later { roll: true };
        }
        if !self.buf.is_empty() && self.buf.len() + frame_len > MAX_BYTES_PER_CYCLE {
            return Placement::Later { roll: false };
        }
        let base = self.next_offset;
        if base.checked_add(fresh.len() as u64).is_none() {
            return Placement::Done(Answer::Full(Err(Error::Failed {
                topic: self.shared.topic.name.clone(),
                partition: self.shared.id,
                reason: format!(
                    "the partition's offsets are exhausted: {} more records do not fit after \
                     offset {base}",
                    fresh.len()
                ),
            })));
        }
        if self.since_index >= u64::from(cfg.index_interval_bytes) {
            undo.new_index.push(IndexEntry {
                offset: base,
                position: written,
                timestamp: now,
            });
            self.since_index = 0;
        }
        format::encode_frame(
            &mut self.buf,
            base,
            Timestamp(now),
            fresh.iter().map(|&(i, _)| &req.records[i]),
            body_len,
        );
        self.since_index += frame_len as u64;
        for (k, &(i, id)) in fresh.iter().enumerate() {
            let offset = base + k as u64;
            if let Some(key) = &req.records[i].key {
                let h = key_hash(key);
                undo.keys.push((h, self.keys.insert_active(h, offset)));
            }
            if let (Some(d), Some(h)) = (dedup.as_mut(), id) {
                let at = Placed {
                    partition: self.shared.id,
                    offset,
                };
                d.insert(h, at, now);
                undo.dedup.push((h, at));
            }
        }
        self.next_offset += fresh.len() as u64;
        let id = self.shared.id;
        if let [Slot::New(0)] = slots {
            return Placement::Done(Answer::One(Appended {
                partition: id,
                offset: base,
                duplicate: false,
            }));
        }
        let out = slots
            .iter()
            .map(|s| match *s {
                Slot::New(k) => Appended {
                    partition: id,
                    offset: base + k as u64,
                    duplicate: false,
                },
                Slot::SameAs(k) => Appended {
                    partition: id,
                    offset: base + k as u64,
                    duplicate: true,
                },
                Slot::Dup(a) => a,
            })
            .collect();
        Placement::Done(Answer::Full(Ok(out)))
    }

    /// Undoes a cycle whose write failed: cut the file back and forget what it assigned.
    fn rollback(&mut self, start: (u64, u64, u64), undo: &Undo) {
        let (len, next, since) = start;
        if let Err(e) = self.file.set_len(len) {
            self.shared
                .fail(format!("could not cut back a failed write: {e}"));
        }
        self.len = len;
        self.next_offset = next;
        self.since_index = since;
        for &(h, prev) in undo.keys.iter().rev() {
            self.keys.restore_active(h, prev);
        }
        let mut d = self.shared.topic.dedup();
        for &(h, at) in &undo.dedup {
            d.remove_if(h, at);
        }
        drop(d);
        self.publish_key_count();
        // Wake duplicates waiting on a record that will now never be written.
        self.shared.tip.send_modify(|t| t.rollbacks += 1);
    }

    /// Before any reply of the cycle is sent, so a caller that got one sees the count.
    fn publish_key_count(&self) {
        self.shared
            .counters
            .keys_in_memory
            .store(self.keys.in_memory(), Ordering::Release);
    }

    /// Seals the active segment (sync, write its sidecars) and starts a new one.
    fn roll(&mut self, cfg: &switchyard_types::TopicConfig) -> Result<()> {
        let path = self.active.path.clone();
        let base = self.active.base;
        if let Err(e) = self.file.sync_data() {
            self.shared
                .fail(format!("fdatasync {}: {e}", path.display()));
            return Err(Error::io("sync segment", &path, e));
        }
        let entries = match &self.active.state().index {
            SegIndex::Mem(v) => v.clone(),
            SegIndex::Disk(_) => Vec::new(),
        };
        let summary = SealedSummary {
            log_len: self.len,
            next_offset: self.next_offset,
            max_timestamp: self.active.state().max_ts,
            entries: entries.len() as u64,
        };
        // Sidecars are derived: if writing them fails, the next open rebuilds them (until
        // then the index and the keys stay in memory).
        let disk = sidecar::write_index(&path, base, summary, &entries)
            .ok()
            .and_then(|()| SealedIndex::open(&path, base, self.len));
        let keys = KeyTable::write(
            &path,
            base,
            self.next_offset,
            self.len,
            self.keys.active_sorted(),
        );
        let new_base = self.next_offset;
        let new_path = path_of(&self.shared.dir, new_base);
        let file = OpenOptions::new()
            .read(true)
            .append(true)
            .create_new(true)
            .open(&new_path)
            .map_err(|e| Error::io("create segment", &new_path, e))?;
        // Past this point a failure must not leave the new file behind: it would become
        // the active segment on the next open and hide records appended to the old one.
        let opened =
            open_segment_file(&new_path).and_then(|read| sync_dir(&self.shared.dir).map(|()| read));
        match opened {
            Ok(read) => {
                // Sealed: its keys leave memory (before retention may remove the segment).
                self.keys.seal(base, keys);
                self.install_segment(new_base, new_path, read, file, disk, cfg);
                Ok(())
            }
            Err(e) => {
                self.abandon_segment(&new_path);
                Err(e)
            }
        }
    }

    /// Removes a segment file whose creation could not be completed.
    fn abandon_segment(&self, new_path: &Path) {
        let cleaned = std::fs::remove_file(new_path)
            .map_err(|e| Error::io("remove", new_path, e))
            .and_then(|()| sync_dir(&self.shared.dir));
        if let Err(c) = cleaned {
            self.shared
                .fail(format!("a failed roll left {}: {c}", new_path.display()));
        }
    }

    /// Makes a freshly created segment the active one (after its directory entry is durable).
    fn install_segment(
        &mut self,
        new_base: u64,
        new_path: PathBuf,
        read_handle: File,
        file: File,
        disk: Option<SealedIndex>,
        cfg: &switchyard_types::TopicConfig,
    ) {
        {
            let mut st = self.active.state_mut();
            if let Some(ix) = disk {
                st.index = SegIndex::Disk(ix);
            }
        }
        self.publish_key_count();
        let state = SegState {
            len: 0,
            next_offset: new_base,
            max_ts: None,
            index: SegIndex::Mem(Vec::new()),
        };
        let seg = Arc::new(Segment::new(new_base, new_path, read_handle, state));
        self.shared
            .segments
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .push(seg.clone());
        self.active = seg;
        self.file = Arc::new(file);
        *self
            .shared
            .active_file
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = self.file.clone();
        self.len = 0;
        self.since_index = u64::from(cfg.index_interval_bytes);
        self.enforce_retention(cfg);
    }

    /// Removes whole sealed segments, oldest first, that are past the age or size limit.
    fn enforce_retention(&mut self, cfg: &switchyard_types::TopicConfig) {
        let r = cfg.retention;
        if r.max_age_ms.is_none() && r.max_bytes.is_none() {
            return;
        }
        let segs = self.shared.segments();
        let now = Timestamp::now().0;
        let mut total: u64 = segs.iter().map(|s| s.state().len).sum();
        let mut remove = 0;
        for s in &segs[..segs.len().saturating_sub(1)] {
            let (len, max_ts) = {
                let st = s.state();
                (st.len, st.max_ts)
            };
            let too_old = r.max_age_ms.is_some_and(|a| {
                let age = i64::try_from(a).unwrap_or(i64::MAX);
                max_ts.is_some_and(|t| t < now.saturating_sub(age))
            });
            let too_big = r.max_bytes.is_some_and(|b| total > b);
            if !(too_old || too_big) {
                break;
            }
            total -= len;
            remove += 1;
        }
        if remove == 0 {
            return;
        }
        let removed: Vec<Arc<Segment>> = self
            .shared
            .segments
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .drain(..remove)
            .collect();
        let first = self
            .shared
            .segments()
            .first()
            .map_or(self.next_offset, |s| s.base);
        self.keys.forget_before(first);
        self.publish_key_count();
        for s in removed {
            // Readers that hold the segment keep their open handle; the name goes now.
            let _ = std::fs::remove_file(&s.path);
            let _ = std::fs::remove_file(sidecar::index_path(&s.path));
            let _ = std::fs::remove_file(sidecar::keys_path(&s.path));
        }
    }
}

/// Drops written bytes from the page cache once [`CACHED_TAIL`] newer bytes follow them.
#[derive(Default)]
struct CacheTrim {
    /// The active segment and how far into it the advice reached.
    active: Option<(Arc<Segment>, u64)>,
    /// The segment before it, dropped whole once the active one holds `CACHED_TAIL`.
    previous: Option<Arc<Segment>>,
}

impl CacheTrim {
    const PAGE: u64 = 4096;
    /// Without syncs (`os`, `interval`) the advice is repeated every this many bytes.
    const UNSYNCED_STEP: u64 = 8 << 20;

    fn switch_to(&mut self, segment: &Arc<Segment>) {
        if self
            .active
            .as_ref()
            .is_none_or(|(s, _)| s.base != segment.base)
        {
            // Anything older than the previous segment was dropped with it or is gone.
            self.previous = self.active.take().map(|(s, _)| s);
            self.active = Some((segment.clone(), 0));
        }
    }

    fn behind_tail(len: u64) -> u64 {
        len.saturating_sub(CACHED_TAIL) & !(Self::PAGE - 1)
    }

    /// `synced_len` bytes of `segment` are durable (and so clean in the page cache).
    fn after_sync(&mut self, segment: &Arc<Segment>, synced_len: u64) {
        self.switch_to(segment);
        if synced_len >= CACHED_TAIL
            && let Some(previous) = self.previous.take()
        {
            drop_cached(&previous, 0, None);
        }
        let Some((active, dropped)) = &mut self.active else {
            return;
        };
        let upto = Self::behind_tail(synced_len);
        if let Some(len) = std::num::NonZeroU64::new(upto.saturating_sub(*dropped)) {
            drop_cached(active, *dropped, Some(len));
            *dropped = upto;
        }
    }

    /// `len` bytes of `segment` are written, maybe not synced (`os`, `interval`). The advice
    /// starts writeback of dirty pages and drops the clean ones, so it covers everything
    /// behind the tail again every [`Self::UNSYNCED_STEP`] bytes: pages still dirty last
    /// time are clean by then.
    fn after_write(&mut self, segment: &Arc<Segment>, len: u64) {
        self.switch_to(segment);
        let Some((active, advised)) = &mut self.active else {
            return;
        };
        let upto = Self::behind_tail(len);
        if upto < *advised + Self::UNSYNCED_STEP {
            return;
        }
        drop_cached(active, 0, std::num::NonZeroU64::new(upto));
        *advised = upto;
        if let Some(previous) = &self.previous {
            drop_cached(previous, 0, None);
            if upto >= CACHED_TAIL {
                self.previous = None;
            }
        }
    }
}

/// Advice only: if the kernel refuses, the pages just stay cached.
fn drop_cached(segment: &Segment, from: u64, len: Option<std::num::NonZeroU64>) {
    let _ = rustix::fs::fadvise(&segment.file, from, len, rustix::fs::Advice::DontNeed);
}

fn run_syncer(shared: Arc<PartitionShared>, rx: std::sync::mpsc::Receiver<SyncJob>) {
    use std::sync::mpsc::RecvTimeoutError;
    let mut trim = CacheTrim::default();
    loop {
        let wait = match shared.topic.config().durability {
            Durability::Interval(d) => d,
            _ => HOUSEKEEPING_EVERY,
        };
        match rx.recv_timeout(wait) {
            Ok(job) => {
                let mut jobs = vec![job];
                while let Ok(j) = rx.try_recv() {
                    jobs.push(j);
                }
                // A partition that failed acknowledges nothing more: after a failed sync a
                // second sync of the same file may report success for lost pages.
                let mut failed = shared.failed().is_some();
                let mut synced: Vec<*const File> = Vec::new();
                for j in jobs.iter().filter(|j| j.sync) {
                    let p = Arc::as_ptr(&j.file);
                    if failed || synced.contains(&p) {
                        continue;
                    }
                    if let Err(e) = j.file.sync_data() {
                        shared.fail(format!("fdatasync {}: {e}", j.segment.path.display()));
                        failed = true;
                    }
                    synced.push(p);
                }
                // The writer may have failed the partition meanwhile (a failed sync at roll).
                failed |= shared.failed().is_some();
                let n = jobs.len();
                if !failed && let Some(last) = jobs.last() {
                    shared.publish(last.tip);
                    // Every job here was written before the syncs above began.
                    if let Some(j) = jobs.iter().rev().find(|j| {
                        synced.contains(&Arc::as_ptr(&j.file))
                            && j.tip.segment_base == j.segment.base
                    }) {
                        trim.after_sync(&j.segment, j.tip.segment_len);
                    }
                }
                for j in jobs {
                    for (reply, answer) in j.replies {
                        let res = if failed {
                            Err(shared.failed_error())
                        } else {
                            answer.into_result()
                        };
                        let _ = reply.send(res);
                    }
                    drop(j.spent);
                }
                shared.counters.outstanding.fetch_sub(n, Ordering::AcqRel);
            }
            Err(RecvTimeoutError::Timeout) => {
                if matches!(shared.topic.config().durability, Durability::Interval(_))
                    && shared.counters.dirty.swap(false, Ordering::AcqRel)
                {
                    let f = shared
                        .active_file
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .clone();
                    if let Err(e) = f.sync_data() {
                        shared.fail(format!("periodic fdatasync of the active segment: {e}"));
                    }
                }
            }
            Err(RecvTimeoutError::Disconnected) => return,
        }
    }
}
