//! The derived files next to each sealed segment: `.index` (sparse offset and time index)
//! and `.keys` (each key's last offset in the segment). Both are written when a segment is
//! sealed, validated by a trailing CRC and by the log length they were built for, and
//! rebuilt from the log when missing or stale. Nothing in them is needed for correctness.
//!
//! ```text
//! .index: "SYIX" u32 version | u64 base | u64 log_len | u64 next_offset | i64 max_ts
//!         | u64 count | count * (u32 rel_offset, u32 position, i64 timestamp) | u32 crc32c
//! .keys:  "SYKY" u32 version | u64 base | u64 log_len | u64 count
//!         | count * (u128 key hash, u64 offset) | u32 crc32c
//! ```

use std::fs::File;
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

const INDEX_MAGIC: &[u8; 4] = b"SYIX";
const KEYS_MAGIC: &[u8; 4] = b"SYKY";
const VERSION: u32 = 1;
const INDEX_HEADER: usize = 4 + 4 + 8 + 8 + 8 + 8 + 8;
const KEYS_HEADER: usize = 4 + 4 + 8 + 8 + 8;
pub(crate) const INDEX_ENTRY: usize = 16;
const KEY_ENTRY: usize = 24;

/// One sparse-index entry: the batch at `position` starts at `offset` and has `timestamp`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct IndexEntry {
    pub offset: u64,
    pub position: u64,
    pub timestamp: i64,
}

/// What a sealed segment's index header says about it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct SealedSummary {
    pub log_len: u64,
    pub next_offset: u64,
    pub max_timestamp: Option<i64>,
    pub entries: u64,
}

pub(crate) fn index_path(log: &Path) -> PathBuf {
    log.with_extension("index")
}

pub(crate) fn keys_path(log: &Path) -> PathBuf {
    log.with_extension("keys")
}

/// Writes `data` to `path` atomically (temp file + rename). Derived files are not fsynced:
/// a lost or torn one fails validation and is rebuilt.
fn write_atomic(path: &Path, data: &[u8]) -> std::io::Result<()> {
    let tmp = path.with_extension("tmp");
    let res = (|| {
        let mut f = File::create(&tmp)?;
        f.write_all(data)?;
        std::fs::rename(&tmp, path)
    })();
    if res.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    res
}

pub(crate) fn write_index(
    log: &Path,
    base: u64,
    summary: SealedSummary,
    entries: &[IndexEntry],
) -> std::io::Result<()> {
    let mut b = Vec::with_capacity(INDEX_HEADER + entries.len() * INDEX_ENTRY + 4);
    b.extend_from_slice(INDEX_MAGIC);
    b.extend_from_slice(&VERSION.to_le_bytes());
    b.extend_from_slice(&base.to_le_bytes());
    b.extend_from_slice(&summary.log_len.to_le_bytes());
    b.extend_from_slice(&summary.next_offset.to_le_bytes());
    b.extend_from_slice(&summary.max_timestamp.unwrap_or(i64::MIN).to_le_bytes());
    b.extend_from_slice(&(entries.len() as u64).to_le_bytes());
    for e in entries {
        b.extend_from_slice(&((e.offset - base) as u32).to_le_bytes());
        b.extend_from_slice(&(e.position as u32).to_le_bytes());
        b.extend_from_slice(&e.timestamp.to_le_bytes());
    }
    let crc = crc32c::crc32c(&b);
    b.extend_from_slice(&crc.to_le_bytes());
    write_atomic(&index_path(log), &b)
}

fn le_u64(b: &[u8], at: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(a)
}

/// A validated sealed index, searched with positioned reads so that no sealed segment's
/// index is held in memory.
#[derive(Debug)]
pub(crate) struct SealedIndex {
    file: File,
    base: u64,
    pub summary: SealedSummary,
}

impl SealedIndex {
    /// Opens and validates the index of the segment at `log` (base `base`, `log_len` bytes).
    /// `None` when it is missing, torn, or built for a different log: rebuild it.
    pub fn open(log: &Path, base: u64, log_len: u64) -> Option<Self> {
        let file = File::open(index_path(log)).ok()?;
        let len = usize::try_from(file.metadata().ok()?.len()).ok()?;
        // At most one entry per smallest possible frame: a larger file is not ours.
        let max_entries = usize::try_from(log_len / 30 + 1).ok()?;
        if len < INDEX_HEADER + 4
            || !(len - INDEX_HEADER - 4).is_multiple_of(INDEX_ENTRY)
            || (len - INDEX_HEADER - 4) / INDEX_ENTRY > max_entries
        {
            return None;
        }
        // A sealed index is at most a few MB (one entry per >= 64 bytes of a <= 1 GiB log).
        let mut all = vec![0u8; len];
        file.read_exact_at(&mut all, 0).ok()?;
        let (body, crc) = all.split_at(len - 4);
        if crc32c::crc32c(body).to_le_bytes() != crc {
            return None;
        }
        if &body[0..4] != INDEX_MAGIC
            || u32::from_le_bytes([body[4], body[5], body[6], body[7]]) != VERSION
            || le_u64(body, 8) != base
            || le_u64(body, 16) != log_len
        {
            return None;
        }
        let next_offset = le_u64(body, 24);
        let max_ts = le_u64(body, 32) as i64;
        let entries = le_u64(body, 40);
        if entries as usize != (len - INDEX_HEADER - 4) / INDEX_ENTRY || next_offset < base {
            return None;
        }
        // Entries must point inside the log, in order, at offsets of this segment.
        let mut prev: Option<(u64, u64, i64)> = None;
        for e in body[INDEX_HEADER..].chunks_exact(INDEX_ENTRY) {
            let rel = u64::from(u32::from_le_bytes([e[0], e[1], e[2], e[3]]));
            let pos = u64::from(u32::from_le_bytes([e[4], e[5], e[6], e[7]]));
            let ts = le_u64(e, 8) as i64;
            let offset = base.checked_add(rel)?;
            if pos >= log_len || offset >= next_offset {
                return None;
            }
            if prev.is_some_and(|(o, p, t)| offset <= o || pos <= p || ts < t) {
                return None;
            }
            prev = Some((offset, pos, ts));
        }
        let summary = SealedSummary {
            log_len,
            next_offset,
            max_timestamp: (max_ts != i64::MIN).then_some(max_ts),
            entries,
        };
        Some(Self {
            file,
            base,
            summary,
        })
    }

    fn entry(&self, i: u64) -> std::io::Result<IndexEntry> {
        let mut b = [0u8; INDEX_ENTRY];
        self.file
            .read_exact_at(&mut b, INDEX_HEADER as u64 + i * INDEX_ENTRY as u64)?;
        Ok(IndexEntry {
            offset: self.base + u64::from(u32::from_le_bytes([b[0], b[1], b[2], b[3]])),
            position: u64::from(u32::from_le_bytes([b[4], b[5], b[6], b[7]])),
            timestamp: le_u64(&b, 8) as i64,
        })
    }

    /// The last entry satisfying `before` (which must be true for a prefix of entries).
    pub fn last_where(
        &self,
        before: impl Fn(&IndexEntry) -> bool,
    ) -> std::io::Result<Option<IndexEntry>> {
        let (mut lo, mut hi) = (0u64, self.summary.entries);
        let mut best = None;
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            let e = self.entry(mid)?;
            if before(&e) {
                best = Some(e);
                lo = mid + 1;
            } else {
                hi = mid;
            }
        }
        Ok(best)
    }
}

/// The last entry of an in-memory index satisfying `before` (true for a prefix).
pub(crate) fn last_where_mem(
    entries: &[IndexEntry],
    before: impl Fn(&IndexEntry) -> bool,
) -> Option<IndexEntry> {
    let n = entries.partition_point(before);
    n.checked_sub(1).map(|i| entries[i])
}

pub(crate) fn write_keys(
    log: &Path,
    base: u64,
    log_len: u64,
    keys: &[(u128, u64)],
) -> std::io::Result<()> {
    let mut b = Vec::with_capacity(KEYS_HEADER + keys.len() * KEY_ENTRY + 4);
    b.extend_from_slice(KEYS_MAGIC);
    b.extend_from_slice(&VERSION.to_le_bytes());
    b.extend_from_slice(&base.to_le_bytes());
    b.extend_from_slice(&log_len.to_le_bytes());
    b.extend_from_slice(&(keys.len() as u64).to_le_bytes());
    for (h, off) in keys {
        b.extend_from_slice(&h.to_le_bytes());
        b.extend_from_slice(&off.to_le_bytes());
    }
    let crc = crc32c::crc32c(&b);
    b.extend_from_slice(&crc.to_le_bytes());
    write_atomic(&keys_path(log), &b)
}

/// Reads a sealed segment's key table; `None` when missing, torn or stale.
/// `next_base` is the next segment's base: every offset in the table must lie before it.
pub(crate) fn read_keys(
    log: &Path,
    base: u64,
    next_base: u64,
    log_len: u64,
) -> Option<Vec<(u128, u64)>> {
    // At most one key per smallest possible record: a larger file is not ours.
    let max_len = KEYS_HEADER as u64 + 4 + KEY_ENTRY as u64 * (log_len / 10 + 1);
    if std::fs::metadata(keys_path(log)).ok()?.len() > max_len {
        return None;
    }
    let all = std::fs::read(keys_path(log)).ok()?;
    let len = all.len();
    if len < KEYS_HEADER + 4 || !(len - KEYS_HEADER - 4).is_multiple_of(KEY_ENTRY) {
        return None;
    }
    let (body, crc) = all.split_at(len - 4);
    if crc32c::crc32c(body).to_le_bytes() != crc
        || &body[0..4] != KEYS_MAGIC
        || le_u64(body, 8) != base
        || le_u64(body, 16) != log_len
        || le_u64(body, 24) as usize != (len - KEYS_HEADER - 4) / KEY_ENTRY
    {
        return None;
    }
    let mut out = Vec::with_capacity((len - KEYS_HEADER - 4) / KEY_ENTRY);
    for e in body[KEYS_HEADER..].chunks_exact(KEY_ENTRY) {
        let mut h = [0u8; 16];
        h.copy_from_slice(&e[..16]);
        let offset = le_u64(e, 16);
        if offset < base || offset >= next_base {
            return None;
        }
        out.push((u128::from_le_bytes(h), offset));
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn index_round_trips_and_rejects_stale_or_torn_files() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("00000000000000000100.log");
        let entries: Vec<_> = (0..50)
            .map(|i| IndexEntry {
                offset: 100 + i * 10,
                position: i * 4096,
                timestamp: 1000 + i as i64,
            })
            .collect();
        let s = SealedSummary {
            log_len: 300_000,
            next_offset: 700,
            max_timestamp: Some(2000),
            entries: 50,
        };
        write_index(&log, 100, s, &entries).unwrap();
        let idx = SealedIndex::open(&log, 100, 300_000).unwrap();
        assert_eq!(idx.summary, s);
        assert_eq!(
            idx.last_where(|e| e.offset <= 255).unwrap().unwrap().offset,
            250
        );
        assert_eq!(idx.last_where(|e| e.offset <= 99).unwrap(), None);
        assert_eq!(
            idx.last_where(|e| e.timestamp < 1003)
                .unwrap()
                .unwrap()
                .timestamp,
            1002
        );
        assert!(
            SealedIndex::open(&log, 100, 299_999).is_none(),
            "stale log length"
        );
        assert!(
            SealedIndex::open(&log, 101, 300_000).is_none(),
            "other base"
        );
        let p = index_path(&log);
        let mut b = std::fs::read(&p).unwrap();
        b[60] ^= 1;
        std::fs::write(&p, &b).unwrap();
        assert!(SealedIndex::open(&log, 100, 300_000).is_none(), "bad crc");
        std::fs::write(&p, &b[..30]).unwrap();
        assert!(SealedIndex::open(&log, 100, 300_000).is_none(), "torn");
    }

    #[test]
    fn keys_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("00000000000000000000.log");
        let keys = vec![(1u128 << 100, 5u64), (7, 9)];
        write_keys(&log, 0, 10, &keys).unwrap();
        assert_eq!(read_keys(&log, 0, 10, 10).unwrap(), keys);
        assert!(read_keys(&log, 0, 10, 11).is_none(), "stale log length");
        assert!(
            read_keys(&log, 0, 9, 10).is_none(),
            "offset past the segment"
        );
    }
}
