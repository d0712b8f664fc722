//! The derived files next to each sealed segment: `.index` (sparse offset and time index)
//! and `.keys` (each key's last offset in the segment). Both are written when a segment is
//! sealed, validated by a trailing CRC and by the log length they were built for, and
//! rebuilt from the log when missing or stale. Nothing in them is needed for correctness.
//!
//! ```text
//! .index: "SYIX" u32 version (1) | u64 base | u64 log_len | u64 next_offset | i64 max_ts
//!         | u64 count | count * (u32 rel_offset, u32 position, i64 timestamp) | u32 crc32c
//! .keys:  "SYKY" u32 version (2) | u64 base | u64 log_len | u64 count
//!         | count * (u128 key hash, u64 offset) | u32 crc32c
//! ```
//!
//! `.keys` entries are sorted by key hash, one per distinct key (version 1 sorted them by
//! offset: such a file is stale and rebuilt). Optimistic concurrency searches them with
//! positioned reads instead of holding sealed segments' keys in memory (`keys.rs`): the
//! hashes are uniform, so interpolation finds a key's 4 KiB block in one read, or two in a
//! table of more than some ten thousand keys.

use std::fs::File;
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

const INDEX_MAGIC: &[u8; 4] = b"SYIX";
const KEYS_MAGIC: &[u8; 4] = b"SYKY";
const INDEX_VERSION: u32 = 1;
/// Version 1 sorted the entries by offset.
const KEYS_VERSION: u32 = 2;
const INDEX_HEADER: usize = 4 + 4 + 8 + 8 + 8 + 8 + 8;
const KEYS_HEADER: usize = 4 + 4 + 8 + 8 + 8;
pub(crate) const INDEX_ENTRY: usize = 16;
const KEY_ENTRY: usize = 24;
/// Entries a key lookup reads at once: one 4 KiB block.
const KEYS_BLOCK: usize = 4096 / KEY_ENTRY;

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
    b.extend_from_slice(&INDEX_VERSION.to_le_bytes());
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
            || u32::from_le_bytes([body[4], body[5], body[6], body[7]]) != INDEX_VERSION
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

/// Writes the `.keys` sidecar of the segment at `log`: `keys` are its distinct key hashes,
/// sorted, each with its last offset in the segment.
pub(crate) fn write_keys(
    log: &Path,
    base: u64,
    log_len: u64,
    keys: &[(u128, u64)],
) -> std::io::Result<()> {
    debug_assert!(keys.windows(2).all(|w| w[0].0 < w[1].0), "sorted by hash");
    let mut b = Vec::with_capacity(KEYS_HEADER + keys.len() * KEY_ENTRY + 4);
    b.extend_from_slice(KEYS_MAGIC);
    b.extend_from_slice(&KEYS_VERSION.to_le_bytes());
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

fn key_entry(b: &[u8], i: usize) -> (u128, u64) {
    let e = &b[i * KEY_ENTRY..(i + 1) * KEY_ENTRY];
    let mut h = [0u8; 16];
    h.copy_from_slice(&e[..16]);
    (u128::from_le_bytes(h), le_u64(e, 16))
}

/// What a lookup in a sealed key table met instead of an answer. Never "no record": that
/// would let an append through that conflicts with a record the table could not show.
#[derive(Debug)]
pub(crate) enum KeysError {
    Io(std::io::Error),
    /// The file no longer holds what was validated at open; `position` is the byte.
    Damaged {
        position: u64,
        reason: String,
    },
}

fn damaged(entry: u64, reason: &str) -> KeysError {
    KeysError::Damaged {
        position: KEYS_HEADER as u64 + entry * KEY_ENTRY as u64,
        reason: reason.to_string(),
    }
}

/// A sealed segment's validated `.keys`, searched with positioned reads on a handle kept
/// open (as [`SealedIndex`]), so no sealed segment's keys are held in memory.
#[derive(Debug)]
pub(crate) struct SealedKeys {
    file: File,
    pub path: PathBuf,
    base: u64,
    next_base: u64,
    count: u64,
}

impl SealedKeys {
    /// Opens and validates the key table of the segment at `log` (base `base`, `log_len`
    /// bytes, followed by the segment at `next_base`), streaming through it once: CRC, hashes
    /// strictly increasing, offsets inside the segment. `None` when it is missing, torn, of
    /// an older version, or built for a different log: rebuild it.
    pub fn open(log: &Path, base: u64, next_base: u64, log_len: u64) -> Option<Self> {
        let path = keys_path(log);
        let file = File::open(&path).ok()?;
        let len = file.metadata().ok()?.len();
        // At most one key per smallest possible record: a larger file is not ours.
        let max_len = KEYS_HEADER as u64 + 4 + KEY_ENTRY as u64 * (log_len / 10 + 1);
        let (header_len, entry_len) = (KEYS_HEADER as u64, KEY_ENTRY as u64);
        if len > max_len
            || len < header_len + 4
            || !(len - header_len - 4).is_multiple_of(entry_len)
        {
            return None;
        }
        let count = (len - header_len - 4) / entry_len;
        let mut header = [0u8; KEYS_HEADER];
        file.read_exact_at(&mut header, 0).ok()?;
        if &header[0..4] != KEYS_MAGIC
            || u32::from_le_bytes([header[4], header[5], header[6], header[7]]) != KEYS_VERSION
            || le_u64(&header, 8) != base
            || le_u64(&header, 16) != log_len
            || le_u64(&header, 24) != count
        {
            return None;
        }
        let mut crc = crc32c::crc32c(&header);
        let mut chunk = vec![0u8; KEY_ENTRY * 2048];
        let mut prev: Option<u128> = None;
        let (mut at, end) = (header_len, len - 4);
        while at < end {
            let n = usize::try_from(end - at).ok()?.min(chunk.len());
            let chunk = &mut chunk[..n];
            file.read_exact_at(chunk, at).ok()?;
            crc = crc32c::crc32c_append(crc, chunk);
            for i in 0..n / KEY_ENTRY {
                let (h, offset) = key_entry(chunk, i);
                if prev.is_some_and(|p| h <= p) || offset < base || offset >= next_base {
                    return None;
                }
                prev = Some(h);
            }
            at += n as u64;
        }
        let mut stored = [0u8; 4];
        file.read_exact_at(&mut stored, end).ok()?;
        (crc.to_le_bytes() == stored).then_some(Self {
            file,
            path,
            base,
            next_base,
            count,
        })
    }

    /// The key's last offset in this segment, if it has a record here. Usually one `pread`.
    pub fn find(&self, hash: u128) -> Result<Option<u64>, KeysError> {
        let found = search(self.count, hash, |first, block| {
            let at = KEYS_HEADER as u64 + first * KEY_ENTRY as u64;
            self.file.read_exact_at(block, at).map_err(|e| {
                if e.kind() == std::io::ErrorKind::UnexpectedEof {
                    damaged(first, "the file is shorter than when it was opened")
                } else {
                    KeysError::Io(e)
                }
            })
        })?;
        match found {
            Some((i, offset)) if offset < self.base || offset >= self.next_base => Err(damaged(
                i,
                &format!(
                    "offset {offset} lies outside the segment ({}..{})",
                    self.base, self.next_base
                ),
            )),
            Some((_, offset)) => Ok(Some(offset)),
            None => Ok(None),
        }
    }
}

/// Where `hash` should sit among the entries `lo..hi`, whose hashes lie between `lo_h` and
/// `hi_h`, if hashes are uniform. For the whole table that is `(hash >> 64) * count / 2^64`.
fn interpolate(hash: u128, lo: u64, hi: u64, lo_h: u128, hi_h: u128) -> u64 {
    let span = hi_h.saturating_sub(lo_h).max(1);
    // Both factors below 2^64, so that their product fits.
    let shift = 64u32.saturating_sub(span.leading_zeros());
    let at = (hash.saturating_sub(lo_h) >> shift) * u128::from(hi - lo) / (span >> shift).max(1);
    lo + u64::try_from(at).unwrap_or(u64::MAX).min(hi - lo - 1)
}

/// Finds `hash` in a table of `count` entries sorted by hash, reading blocks of at most
/// [`KEYS_BLOCK`] entries with `read(first entry, buffer)`. Returns the entry's index and
/// offset.
///
/// Each block is centred on the interpolated slot and holds the hash or proves it absent
/// unless the hash lies outside it; the search then continues on the side that can hold it.
/// With uniform hashes a slot is off by about `sqrt(count) / 2` entries, so one read
/// suffices up to some ten thousand keys and two nearly always beyond (the second
/// interpolation, between known neighbours, is off by far less). Every third probe bisects
/// instead, so a table whose hashes are not uniform still takes O(log n) reads. Hashes out
/// of order in what was read are damage.
fn search(
    count: u64,
    hash: u128,
    mut read: impl FnMut(u64, &mut [u8]) -> Result<(), KeysError>,
) -> Result<Option<(u64, u64)>, KeysError> {
    let mut buf = [0u8; KEYS_BLOCK * KEY_ENTRY];
    // Only entries `lo..hi` can hold `hash`; their hashes lie strictly between the bounds
    // (the hashes of the entries just outside, once read).
    let (mut lo, mut hi) = (0u64, count);
    let (mut lo_h, mut hi_h): (Option<u128>, Option<u128>) = (None, None);
    let mut probes = 0u32;
    while lo < hi {
        let n = (hi - lo).min(KEYS_BLOCK as u64);
        let guess = if probes % 3 != 2 {
            interpolate(hash, lo, hi, lo_h.unwrap_or(0), hi_h.unwrap_or(u128::MAX))
        } else {
            lo + (hi - lo) / 2
        };
        probes += 1;
        let start = guess.saturating_sub(n / 2).clamp(lo, hi - n);
        let block = &mut buf[..n as usize * KEY_ENTRY];
        read(start, block)?;
        let mut prev = lo_h;
        for i in 0..n as usize {
            let (h, _) = key_entry(block, i);
            if prev.is_some_and(|p| h <= p) || hi_h.is_some_and(|q| h >= q) {
                return Err(damaged(start + i as u64, "key hashes are out of order"));
            }
            prev = Some(h);
        }
        let (first, _) = key_entry(block, 0);
        let (last, _) = key_entry(block, n as usize - 1);
        if hash < first {
            (hi, hi_h) = (start, Some(first));
        } else if hash > last {
            (lo, lo_h) = (start + n, Some(last));
        } else {
            let (mut a, mut b) = (0usize, n as usize);
            while a < b {
                let mid = a + (b - a) / 2;
                let (h, offset) = key_entry(block, mid);
                match h.cmp(&hash) {
                    std::cmp::Ordering::Less => a = mid + 1,
                    std::cmp::Ordering::Greater => b = mid,
                    std::cmp::Ordering::Equal => return Ok(Some((start + mid as u64, offset))),
                }
            }
            return Ok(None);
        }
    }
    Ok(None)
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

    use rand::{Rng, SeedableRng};

    /// `n` distinct random hashes, sorted, each with an offset.
    fn sorted_keys(rng: &mut impl Rng, n: usize, hash: impl Fn(u128) -> u128) -> Vec<(u128, u64)> {
        let mut hs: Vec<u128> = (0..n).map(|_| hash(rng.random())).collect();
        hs.sort_unstable();
        hs.dedup();
        hs.into_iter()
            .enumerate()
            .map(|(i, h)| (h, 1000 + i as u64))
            .collect()
    }

    fn encode(keys: &[(u128, u64)]) -> Vec<u8> {
        let mut b = Vec::with_capacity(keys.len() * KEY_ENTRY);
        for (h, o) in keys {
            b.extend_from_slice(&h.to_le_bytes());
            b.extend_from_slice(&o.to_le_bytes());
        }
        b
    }

    /// `search` over an in-memory table; also returns how many blocks it read.
    fn search_mem(entries: &[u8], hash: u128) -> (Result<Option<(u64, u64)>, KeysError>, u32) {
        let mut reads = 0;
        let count = (entries.len() / KEY_ENTRY) as u64;
        let res = search(count, hash, |first, block| {
            reads += 1;
            assert!(block.len() <= KEYS_BLOCK * KEY_ENTRY, "one block at most");
            let at = first as usize * KEY_ENTRY;
            block.copy_from_slice(&entries[at..at + block.len()]);
            Ok(())
        });
        (res, reads)
    }

    /// The answer of a linear scan.
    fn model(keys: &[(u128, u64)], hash: u128) -> Option<(u64, u64)> {
        keys.iter()
            .position(|&(h, _)| h == hash)
            .map(|i| (i as u64, keys[i].1))
    }

    fn check_against_model(keys: &[(u128, u64)], queries: impl IntoIterator<Item = u128>) -> u32 {
        let table = encode(keys);
        let mut max_reads = 0;
        for q in queries {
            let (got, reads) = search_mem(&table, q);
            let got = got.unwrap_or_else(|e| panic!("{} keys, hash {q:#x}: {e:?}", keys.len()));
            assert_eq!(got, model(keys, q), "{} keys, hash {q:#x}", keys.len());
            max_reads = max_reads.max(reads);
        }
        max_reads
    }

    /// Every stored hash, its neighbours (absent unless stored), the extremes and random
    /// hashes: found and absent alike agree with a linear scan.
    fn every_query(rng: &mut impl Rng, keys: &[(u128, u64)]) -> Vec<u128> {
        let mut q = vec![0, 1, u128::MAX, u128::MAX - 1, 1 << 127];
        for &(h, _) in keys {
            q.extend([h, h.wrapping_sub(1), h.wrapping_add(1)]);
        }
        q.extend((0..500).map(|_| rng.random::<u128>()));
        q
    }

    #[test]
    fn search_agrees_with_a_linear_scan() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        // Empty, one entry, exactly one block, one past it, several blocks and their edges.
        let b = KEYS_BLOCK;
        for n in [0, 1, 2, 3, b - 1, b, b + 1, 2 * b, 2 * b + 1, 1000, 5000] {
            let keys = sorted_keys(&mut rng, n, |h| h);
            let queries = every_query(&mut rng, &keys);
            check_against_model(&keys, queries);
        }
    }

    #[test]
    fn search_of_one_entry_and_of_the_extremes() {
        assert_eq!(search_mem(&[], 5).0.unwrap(), None, "empty");
        for h in [0, 1, 1 << 64, u128::MAX] {
            let keys = [(h, 42)];
            let q = [0, 1, 2, 1 << 64, u128::MAX - 1, u128::MAX];
            check_against_model(&keys, q);
        }
        let keys = [(0, 1), (u128::MAX, 2)];
        check_against_model(&keys, [0, 1, u128::MAX - 1, u128::MAX, 1 << 127]);
    }

    /// The smallest and largest hash of a table many blocks long, and hashes on both sides
    /// of every block boundary a search could land on.
    #[test]
    fn search_across_block_boundaries() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(11);
        let keys = sorted_keys(&mut rng, 10 * KEYS_BLOCK + 7, |h| h);
        let mut q = vec![keys[0].0, keys[keys.len() - 1].0];
        for i in
            (0..keys.len()).filter(|i| i % (KEYS_BLOCK / 2) < 2 || i % KEYS_BLOCK > KEYS_BLOCK - 3)
        {
            q.extend([
                keys[i].0,
                keys[i].0.wrapping_add(1),
                keys[i].0.wrapping_sub(1),
            ]);
        }
        check_against_model(&keys, q);
    }

    /// Uniform hashes (what xxh3 gives): about one read for a table of ten thousand keys,
    /// at most two nearly always for a quarter million (a 64 MiB segment of small records).
    #[test]
    fn search_of_uniform_hashes_reads_one_or_two_blocks() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(3);
        for (n, mean_at_most, worst_at_most) in [(10_000, 1.2, 2), (250_000, 2.0, 3)] {
            let keys = sorted_keys(&mut rng, n, |h| h);
            let table = encode(&keys);
            let (mut total, mut worst) = (0u32, 0u32);
            let lookups = 2000;
            for i in 0..lookups {
                // Half present, half absent.
                let q = if i % 2 == 0 {
                    keys[rng.random_range(0..keys.len())].0
                } else {
                    rng.random()
                };
                let (got, reads) = search_mem(&table, q);
                assert_eq!(got.unwrap(), model(&keys, q));
                total += reads;
                worst = worst.max(reads);
            }
            let mean = f64::from(total) / f64::from(lookups);
            assert!(
                mean <= mean_at_most,
                "{n} keys: mean reads per lookup {mean}"
            );
            assert!(
                worst <= worst_at_most,
                "{n} keys: worst reads per lookup {worst}"
            );
        }
    }

    /// Hashes that are far from uniform (all in a sliver of the space, or growing
    /// geometrically) cost more reads but stay logarithmic, and stay right.
    #[test]
    fn search_of_skewed_hashes_stays_logarithmic() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(5);
        let n = 50_000;
        let bound = 3 * ((n / KEYS_BLOCK).ilog2() + 1) + 2;
        let sliver = sorted_keys(&mut rng, n, |h| (h >> 100) + (1 << 90));
        let geometric: Vec<(u128, u64)> = (0..120u32)
            .flat_map(|e| (0..400u128).map(move |k| (1u128 << e) + k))
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .enumerate()
            .map(|(i, h)| (h, i as u64))
            .collect();
        for keys in [sliver, geometric] {
            let mut q: Vec<u128> = (0..300)
                .map(|_| keys[rng.random_range(0..keys.len())].0)
                .collect();
            q.extend((0..300).map(|_| rng.random::<u128>() >> rng.random_range(0..128)));
            let worst = check_against_model(&keys, q);
            assert!(worst <= bound, "{worst} reads, more than {bound}");
        }
    }

    #[test]
    fn search_reports_hashes_out_of_order() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(9);
        let mut keys = sorted_keys(&mut rng, 100, |h| h);
        keys.swap(10, 90);
        let (got, _) = search_mem(&encode(&keys), keys[50].0);
        assert!(matches!(got, Err(KeysError::Damaged { .. })), "{got:?}");
    }

    #[test]
    fn keys_round_trip_and_stale_old_or_damaged_files_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("00000000000000000100.log");
        let mut rng = rand::rngs::StdRng::seed_from_u64(1);
        // Several validation chunks long; offsets 1000.. inside the segment 100..1_000_000.
        let keys = sorted_keys(&mut rng, 5000, |h| h);
        let log_len = 200_000;
        write_keys(&log, 100, log_len, &keys).unwrap();
        let open = |next_base, log_len| SealedKeys::open(&log, 100, next_base, log_len);
        let k = open(1_000_000, log_len).expect("valid");
        for &(h, o) in &keys {
            assert_eq!(k.find(h).unwrap(), Some(o));
        }
        assert_eq!(k.find(keys[0].0 - 1).unwrap(), None);
        assert!(open(1_000_000, log_len + 1).is_none(), "stale log length");
        assert!(open(5000, log_len).is_none(), "an offset past the segment");
        assert!(
            SealedKeys::open(&log, 101, 1_000_000, log_len).is_none(),
            "other base"
        );
        let p = keys_path(&log);
        let good = std::fs::read(&p).unwrap();
        let rewrite = |edit: &dyn Fn(&mut Vec<u8>)| {
            let mut b = good[..good.len() - 4].to_vec();
            edit(&mut b);
            let crc = crc32c::crc32c(&b);
            b.extend_from_slice(&crc.to_le_bytes());
            std::fs::write(&p, b).unwrap();
        };
        // Version 1: the same entries sorted by offset, with a valid CRC.
        rewrite(&|b| b[4..8].copy_from_slice(&1u32.to_le_bytes()));
        assert!(open(1_000_000, log_len).is_none(), "version 1");
        // Two entries swapped, with a valid CRC.
        rewrite(&|b| {
            let (x, y) = (KEYS_HEADER + 3 * KEY_ENTRY, KEYS_HEADER + 4000 * KEY_ENTRY);
            let ex: Vec<u8> = b[x..x + KEY_ENTRY].to_vec();
            b.copy_within(y..y + KEY_ENTRY, x);
            b[y..y + KEY_ENTRY].copy_from_slice(&ex);
        });
        assert!(open(1_000_000, log_len).is_none(), "out of order");
        let mut flipped = good.clone();
        flipped[KEYS_HEADER + 2500 * KEY_ENTRY + 3] ^= 0x10;
        std::fs::write(&p, &flipped).unwrap();
        assert!(open(1_000_000, log_len).is_none(), "a flipped byte");
        std::fs::write(&p, &good[..good.len() - KEY_ENTRY]).unwrap();
        assert!(open(1_000_000, log_len).is_none(), "truncated");
        std::fs::remove_file(&p).unwrap();
        assert!(open(1_000_000, log_len).is_none(), "missing");
    }

    /// A table damaged after it was opened fails the lookup; it never reads as "absent".
    #[test]
    fn keys_damaged_after_open_fail_the_lookup() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("00000000000000000000.log");
        let mut rng = rand::rngs::StdRng::seed_from_u64(2);
        let keys = sorted_keys(&mut rng, 50, |h| h);
        write_keys(&log, 0, 100_000, &keys).unwrap();
        let k = SealedKeys::open(&log, 0, 10_000, 100_000).unwrap();
        let p = keys_path(&log);
        // In place, so the open handle sees it.
        let f = std::fs::OpenOptions::new().write(true).open(&p).unwrap();
        f.set_len((KEYS_HEADER + 10 * KEY_ENTRY) as u64).unwrap();
        let absent = keys[25].0 + 1;
        assert!(
            matches!(k.find(absent), Err(KeysError::Damaged { .. })),
            "truncated"
        );
        // Back to full length, but an entry's offset outside the segment.
        let mut b = encode(&keys);
        b[25 * KEY_ENTRY + 16..26 * KEY_ENTRY].copy_from_slice(&u64::MAX.to_le_bytes());
        f.write_all_at(&b, KEYS_HEADER as u64).unwrap();
        assert!(
            matches!(k.find(keys[25].0), Err(KeysError::Damaged { .. })),
            "offset outside the segment"
        );
    }
}
