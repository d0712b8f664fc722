//! Each key's last offset, for optimistic concurrency ("the key's last offset is X", "the
//! key has no record yet"). Owned by the partition's writer thread.
//!
//! Memory stays bounded whatever the journal's size: only the active segment's keys are in
//! a map (bounded by the segment's size). A sealed segment's keys are in its `.keys`
//! sidecar, sorted by hash and searched with positioned reads, newest segment first, until
//! one has the key. A direct-mapped cache of [`CACHE_SLOTS`] answers in front of that search
//! keeps hot keys and repeated "no record yet" checks off the disk. What is neither in the
//! active segment nor cached costs one or two `pread`s per sealed segment searched: a key
//! never seen before, every sealed segment.

use super::dedup::HashedMap;
use super::sidecar::{self, KeysError, SealedKeys};
use crate::Error;
use std::path::{Path, PathBuf};
use switchyard_types::{Partition, TopicName};

/// Answers cached in front of the sealed segments' key tables, per partition: 32 bytes
/// each, 512 KiB in all, allocated at the first lookup that reaches a sealed segment.
pub(crate) const CACHE_SLOTS: usize = 16 * 1024;

/// A sealed segment's keys.
#[derive(Debug)]
pub(crate) enum KeyTable {
    /// Its validated `.keys` sidecar.
    File(SealedKeys),
    /// Sorted by hash, when the sidecar could not be written; the next open rebuilds it.
    Mem(Box<[(u128, u64)]>),
}

impl KeyTable {
    /// Writes `sorted` (the distinct key hashes of the segment at `log`, sorted, with their
    /// last offsets) as the segment's `.keys` sidecar and opens it. If that fails the keys
    /// stay in memory: the sidecar is derived, and the next open rebuilds it from the log.
    pub fn write(
        log: &Path,
        base: u64,
        next_base: u64,
        log_len: u64,
        sorted: Vec<(u128, u64)>,
    ) -> Self {
        match sidecar::write_keys(log, base, log_len, &sorted)
            .ok()
            .and_then(|()| SealedKeys::open(log, base, next_base, log_len))
        {
            Some(file) => KeyTable::File(file),
            None => KeyTable::Mem(sorted.into_boxed_slice()),
        }
    }

    /// `base` is the segment's base offset, for the error.
    fn find(&self, base: u64, hash: u128) -> Result<Option<u64>, LookupFailed> {
        match self {
            KeyTable::File(f) => f.find(hash).map_err(|error| LookupFailed {
                path: f.path.clone(),
                segment: base,
                error,
            }),
            KeyTable::Mem(m) => Ok(m
                .binary_search_by_key(&hash, |&(h, _)| h)
                .ok()
                .map(|i| m[i].1)),
        }
    }

    fn in_memory(&self) -> usize {
        match self {
            KeyTable::File(_) => 0,
            KeyTable::Mem(m) => m.len(),
        }
    }
}

#[derive(Debug)]
struct Sealed {
    base: u64,
    table: KeyTable,
}

/// One cached answer: the key's last offset in the sealed segments, or that it has none.
#[derive(Clone, Copy, Debug, Default)]
struct Cached {
    hash: u128,
    offset: u64,
    state: CacheState,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
enum CacheState {
    #[default]
    Empty,
    NoRecord,
    Offset,
}

impl Cached {
    fn new(hash: u128, last: Option<u64>) -> Self {
        match last {
            Some(offset) => Cached {
                hash,
                offset,
                state: CacheState::Offset,
            },
            None => Cached {
                hash,
                offset: 0,
                state: CacheState::NoRecord,
            },
        }
    }

    /// The cached answer for `hash`, if this slot holds one.
    fn answer(&self, hash: u128) -> Option<Option<u64>> {
        (self.state != CacheState::Empty && self.hash == hash)
            .then(|| (self.state == CacheState::Offset).then_some(self.offset))
    }
}

/// A lookup in a sealed segment's key table that failed: the append cannot be checked.
#[derive(Debug)]
pub(crate) struct LookupFailed {
    path: PathBuf,
    segment: u64,
    error: KeysError,
}

impl LookupFailed {
    /// The error the append fails with. A damaged table is not rebuilt on the spot: that
    /// scans a whole segment (up to 1 GiB) on the writer thread, stalling every append of
    /// the partition, for a file that was valid at open and so was changed behind the
    /// journal's back; reopening validates and rebuilds it.
    pub fn into_error(self, topic: &TopicName, partition: Partition) -> Error {
        match self.error {
            KeysError::Io(e) => Error::io("search key table", self.path, e),
            KeysError::Damaged { position, reason } => Error::Corrupt {
                topic: topic.to_string(),
                partition,
                offset: self.segment,
                path: self.path,
                position,
                reason: format!(
                    "the key table of the segment starting at offset {} is damaged ({reason}); \
                     reopen the journal to rebuild it from the log",
                    self.segment
                ),
            },
        }
    }
}

/// Each key's last offset in the retained log.
#[derive(Debug, Default)]
pub(crate) struct Keys {
    /// The active segment's keys (128-bit hashes) and their last offsets.
    active: HashedMap<u64>,
    /// The sealed segments' key tables, oldest first.
    sealed: Vec<Sealed>,
    /// Keys held by `KeyTable::Mem` tables.
    in_mem_tables: usize,
    /// Direct-mapped by the hash's low bits; empty until a lookup reaches a sealed segment,
    /// so a topic without expectations never pays for it.
    cache: Vec<Cached>,
}

fn slot(hash: u128) -> usize {
    hash as usize & (CACHE_SLOTS - 1)
}

impl Keys {
    /// The key's last offset in the retained log, if it has a record there.
    #[inline]
    pub fn last_offset(&mut self, hash: u128) -> Result<Option<u64>, LookupFailed> {
        match self.active.get(&hash) {
            Some(&o) => Ok(Some(o)),
            None => self.last_sealed(hash),
        }
    }

    fn last_sealed(&mut self, hash: u128) -> Result<Option<u64>, LookupFailed> {
        let Some(first) = self.sealed.first().map(|s| s.base) else {
            return Ok(None);
        };
        if self.cache.is_empty() {
            self.cache = vec![Cached::default(); CACHE_SLOTS];
        }
        let cached = &mut self.cache[slot(hash)];
        if let Some(last) = cached.answer(hash) {
            // An offset before the first retained segment was removed with its segment.
            return Ok(last.filter(|&o| o >= first));
        }
        let mut last = None;
        for s in self.sealed.iter().rev() {
            last = s.table.find(s.base, hash)?;
            if last.is_some() {
                break;
            }
        }
        *cached = Cached::new(hash, last);
        Ok(last)
    }

    /// Records that the key's last offset is now `offset`, in the active segment; returns
    /// what the active segment had before, for [`Self::restore_active`].
    #[inline]
    pub fn insert_active(&mut self, hash: u128, offset: u64) -> Option<u64> {
        self.active.insert(hash, offset)
    }

    /// Undoes an [`Self::insert_active`] whose write failed. The cache only holds answers
    /// about sealed segments, which a write to the active segment does not change.
    pub fn restore_active(&mut self, hash: u128, previous: Option<u64>) {
        match previous {
            Some(o) => self.active.insert(hash, o),
            None => self.active.remove(&hash),
        };
    }

    /// The active segment's keys sorted by hash: the content of its `.keys` sidecar.
    pub fn active_sorted(&self) -> Vec<(u128, u64)> {
        let mut v: Vec<(u128, u64)> = self.active.iter().map(|(&h, &o)| (h, o)).collect();
        v.sort_unstable_by_key(|&(h, _)| h);
        v
    }

    /// Adds the key table of a sealed segment newer than every one added so far (at open,
    /// before the active segment's keys are inserted).
    pub fn push_sealed(&mut self, base: u64, table: KeyTable) {
        self.in_mem_tables += table.in_memory();
        self.sealed.push(Sealed { base, table });
    }

    /// The active segment, starting at `base`, was sealed and `table` holds its keys: they
    /// leave memory. A cached answer for one of them now is its offset in that segment.
    pub fn seal(&mut self, base: u64, table: KeyTable) {
        if !self.cache.is_empty() {
            for (&h, &o) in &self.active {
                let c = &mut self.cache[slot(h)];
                if c.answer(h).is_some() {
                    *c = Cached::new(h, Some(o));
                }
            }
        }
        // Cleared, not freed: the next segment fills it again.
        self.active.clear();
        self.push_sealed(base, table);
    }

    /// Retention removed the segments before `first`: their keys are forgotten (a key whose
    /// records were all there has no record any more).
    pub fn forget_before(&mut self, first: u64) {
        let n = self.sealed.partition_point(|s| s.base < first);
        for s in self.sealed.drain(..n) {
            self.in_mem_tables -= s.table.in_memory();
        }
    }

    /// Keys held in memory: the active segment's, plus those of sealed segments whose
    /// sidecar could not be written. (The cache has a fixed size.)
    pub fn in_memory(&self) -> usize {
        self.active.len() + self.in_mem_tables
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A table of `keys` (hash, offset) as a sealed segment at `base`, on disk.
    fn file_table(dir: &Path, base: u64, next_base: u64, keys: &[(u128, u64)]) -> KeyTable {
        let log = dir.join(super::super::segment::segment_file_name(base));
        let mut sorted = keys.to_vec();
        sorted.sort_unstable();
        let t = KeyTable::write(&log, base, next_base, 1 << 20, sorted);
        assert!(matches!(t, KeyTable::File(_)), "written: {t:?}");
        t
    }

    /// Fills the active segment with `keys` and seals it at `base`, on disk.
    fn seal(k: &mut Keys, dir: &Path, base: u64, next_base: u64, keys: &[(u128, u64)]) {
        for &(h, o) in keys {
            k.insert_active(h, o);
        }
        let sorted = k.active_sorted();
        let log = dir.join(super::super::segment::segment_file_name(base));
        let t = KeyTable::write(&log, base, next_base, 1 << 20, sorted);
        k.seal(base, t);
    }

    fn last(k: &mut Keys, h: u128) -> Option<u64> {
        k.last_offset(h).expect("lookup")
    }

    #[test]
    fn a_cache_slot_is_32_bytes() {
        assert_eq!(std::mem::size_of::<Cached>(), 32);
    }

    #[test]
    fn newest_segment_wins_and_the_active_segment_before_it() {
        let dir = tempfile::tempdir().unwrap();
        let mut k = Keys::default();
        seal(&mut k, dir.path(), 0, 10, &[(1, 2), (2, 5)]);
        seal(&mut k, dir.path(), 10, 20, &[(2, 12), (3, 15)]);
        k.insert_active(3, 21);
        assert_eq!(k.in_memory(), 1, "only the active segment's keys");
        assert_eq!(last(&mut k, 1), Some(2), "only in the oldest");
        assert_eq!(last(&mut k, 2), Some(12), "the newer sealed segment wins");
        assert_eq!(last(&mut k, 3), Some(21), "the active segment wins");
        assert_eq!(last(&mut k, 4), None);
        // Cached now; the answers stay.
        assert_eq!(last(&mut k, 1), Some(2));
        assert_eq!(last(&mut k, 4), None);
    }

    #[test]
    fn sealing_updates_cached_answers() {
        let dir = tempfile::tempdir().unwrap();
        let mut k = Keys::default();
        seal(&mut k, dir.path(), 0, 10, &[(1, 2)]);
        // 7 cached as "no record", 1 cached at 2; then both are written and sealed.
        assert_eq!(last(&mut k, 7), None);
        assert_eq!(last(&mut k, 1), Some(2));
        seal(&mut k, dir.path(), 10, 20, &[(7, 11), (1, 13)]);
        assert_eq!(k.in_memory(), 0);
        assert_eq!(last(&mut k, 7), Some(11));
        assert_eq!(last(&mut k, 1), Some(13));
        // A key sharing 7's slot does not read 7's answer.
        let other = 7 + CACHE_SLOTS as u128;
        assert_eq!(last(&mut k, other), None);
        assert_eq!(last(&mut k, 7), Some(11));
    }

    #[test]
    fn retention_forgets_keys_even_when_cached() {
        let dir = tempfile::tempdir().unwrap();
        let mut k = Keys::default();
        seal(&mut k, dir.path(), 0, 10, &[(1, 2), (2, 3)]);
        seal(&mut k, dir.path(), 10, 20, &[(2, 12)]);
        assert_eq!(last(&mut k, 1), Some(2));
        assert_eq!(last(&mut k, 2), Some(12));
        k.forget_before(10);
        assert_eq!(last(&mut k, 1), None, "its only segment is gone");
        assert_eq!(last(&mut k, 2), Some(12));
        k.forget_before(20);
        assert_eq!(last(&mut k, 2), None, "every sealed segment is gone");
        // A later seal does not bring back answers about removed segments.
        seal(&mut k, dir.path(), 20, 30, &[(3, 25)]);
        assert_eq!(last(&mut k, 1), None);
        assert_eq!(last(&mut k, 2), None);
        assert_eq!(last(&mut k, 3), Some(25));
    }

    #[test]
    fn a_failed_write_is_undone() {
        let dir = tempfile::tempdir().unwrap();
        let mut k = Keys::default();
        seal(&mut k, dir.path(), 0, 10, &[(1, 2)]);
        k.insert_active(5, 10);
        assert_eq!(last(&mut k, 1), Some(2), "cached");
        // A cycle writes 1 and 5 (again) and fails.
        let undo = [(1, k.insert_active(1, 11)), (5, k.insert_active(5, 12))];
        assert_eq!(last(&mut k, 1), Some(11));
        for &(h, prev) in undo.iter().rev() {
            k.restore_active(h, prev);
        }
        assert_eq!(last(&mut k, 1), Some(2), "back to its sealed offset");
        assert_eq!(
            last(&mut k, 5),
            Some(10),
            "back to its earlier active offset"
        );
        assert_eq!(k.in_memory(), 1);
    }

    #[test]
    fn a_table_that_could_not_be_written_stays_in_memory() {
        let dir = tempfile::tempdir().unwrap();
        let mut k = Keys::default();
        k.push_sealed(0, file_table(dir.path(), 0, 10, &[(1, 2)]));
        let missing = dir
            .path()
            .join("no-such-dir")
            .join("00000000000000000010.log");
        for (h, o) in [(2, 11), (3, 12)] {
            k.insert_active(h, o);
        }
        let t = KeyTable::write(&missing, 10, 20, 1 << 20, k.active_sorted());
        assert!(matches!(t, KeyTable::Mem(_)), "{t:?}");
        k.seal(10, t);
        assert_eq!(k.in_memory(), 2, "counted");
        assert_eq!(last(&mut k, 1), Some(2));
        assert_eq!(last(&mut k, 3), Some(12));
        assert_eq!(last(&mut k, 4), None);
        k.forget_before(20);
        assert_eq!(k.in_memory(), 0, "freed with its segment");
    }

    #[test]
    fn a_damaged_table_fails_the_lookup_and_is_not_cached() {
        let dir = tempfile::tempdir().unwrap();
        let mut k = Keys::default();
        seal(&mut k, dir.path(), 0, 10, &[(1, 2), (2, 3)]);
        let keys = sidecar::keys_path(&dir.path().join("00000000000000000000.log"));
        let f = std::fs::OpenOptions::new().write(true).open(&keys).unwrap();
        f.set_len(40).unwrap();
        let e = k.last_offset(9).expect_err("a truncated table");
        assert_eq!(e.path, keys);
        let t = TopicName::new("t").unwrap();
        let msg = e.into_error(&t, 0).to_string();
        assert!(msg.contains("reopen the journal"), "{msg}");
        assert!(
            k.last_offset(9).is_err(),
            "still an error, not a cached answer"
        );
    }
}
