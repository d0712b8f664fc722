//! The topic-wide dedup window: record id -> where it was appended.
//!
//! Memory is proportional to the ids appended within one to two windows (about 40 bytes
//! each), not to the journal's size. Ids are kept as 128-bit xxh3 hashes.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

/// A hasher for keys that already are uniformly distributed 128-bit hashes: it keeps
/// their low 64 bits instead of hashing them again.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct PreHashed(u64);

impl Hasher for PreHashed {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        // Only reached for keys other than u128; fold them in so it stays a hash.
        for &b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(b);
        }
    }
    fn write_u128(&mut self, v: u128) {
        self.0 = v as u64;
    }
}

/// A map keyed by a 128-bit hash.
pub(crate) type HashedMap<V> = HashMap<u128, V, BuildHasherDefault<PreHashed>>;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Placed {
    pub partition: u32,
    pub offset: u64,
}

/// A map value: the place, and the append time in milliseconds after the generation began
/// (so the value stays 16 bytes).
#[derive(Clone, Copy, Debug)]
struct Entry {
    offset: u64,
    partition: u32,
    after_ms: u32,
}

/// Two generations of ids. New ids go into `current`. Once `previous` is empty and the
/// oldest id of `current` has left the window, `current` becomes `previous`; `previous` is
/// dropped whole once its newest id has left the window. Expiry therefore costs nothing per
/// id (no queue, no random lookups), memory holds at most about two windows of ids, and a
/// lookup checks the append time, so an id is remembered for exactly the window.
#[derive(Debug)]
pub(crate) struct DedupWindow {
    current: HashedMap<Entry>,
    /// The append time of the first id in `current`: `Entry::after_ms` counts from it.
    current_since: i64,
    current_newest: i64,
    previous: HashedMap<Entry>,
    previous_since: i64,
    previous_newest: i64,
    /// Ids older than this are no longer duplicates.
    cutoff: i64,
}

impl Default for DedupWindow {
    fn default() -> Self {
        Self {
            current: HashedMap::default(),
            current_since: 0,
            current_newest: i64::MIN,
            previous: HashedMap::default(),
            previous_since: 0,
            previous_newest: i64::MIN,
            cutoff: i64::MIN,
        }
    }
}

pub(crate) fn id_hash(id: &[u8]) -> u128 {
    xxhash_rust::xxh3::xxh3_128(id)
}

impl DedupWindow {
    fn lookup(&self, h: u128) -> Option<(Placed, i64)> {
        let found = |e: &Entry, since: i64| {
            (
                Placed {
                    partition: e.partition,
                    offset: e.offset,
                },
                since.saturating_add(i64::from(e.after_ms)),
            )
        };
        match self.current.get(&h) {
            Some(e) => Some(found(e, self.current_since)),
            None => self.previous.get(&h).map(|e| found(e, self.previous_since)),
        }
    }

    pub fn get(&self, h: u128) -> Option<Placed> {
        self.lookup(h)
            .filter(|&(_, ts)| ts >= self.cutoff)
            .map(|(p, _)| p)
    }

    /// Probes for `h` only to bring its buckets into the cache.
    pub fn touch(&self, h: u128) {
        std::hint::black_box(self.current.contains_key(&h) || self.previous.contains_key(&h));
    }

    pub fn insert(&mut self, h: u128, at: Placed, timestamp: i64) {
        if self.current.is_empty() {
            self.current_since = timestamp;
        }
        self.current_newest = self.current_newest.max(timestamp);
        // An id appended (on another partition) a moment before the generation began is
        // stored as of its start: remembered a little longer, never shorter.
        let after_ms = timestamp
            .saturating_sub(self.current_since)
            .clamp(0, i64::from(u32::MAX));
        let e = Entry {
            offset: at.offset,
            partition: at.partition,
            after_ms: after_ms as u32,
        };
        self.current.insert(h, e);
    }

    /// Forgets an id inserted by a write that did not reach the disk.
    pub fn remove_if(&mut self, h: u128, at: Placed) {
        if self
            .current
            .get(&h)
            .is_some_and(|e| e.partition == at.partition && e.offset == at.offset)
        {
            self.current.remove(&h);
        }
    }

    /// Forgets ids appended before `cutoff` (ms).
    pub fn expire(&mut self, cutoff: i64) {
        self.cutoff = self.cutoff.max(cutoff);
        if !self.previous.is_empty() && self.previous_newest < self.cutoff {
            self.previous = HashedMap::default();
        }
        if self.previous.is_empty() && !self.current.is_empty() && self.current_since < self.cutoff
        {
            let capacity = self.current.len();
            self.previous = std::mem::take(&mut self.current);
            self.previous_since = self.current_since;
            self.previous_newest = self.current_newest;
            self.current.reserve(capacity);
            self.current_newest = i64::MIN;
        }
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.current.len() + self.previous.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_id_is_remembered_for_exactly_the_window() {
        let mut d = DedupWindow::default();
        let (a, b) = (id_hash(b"a"), id_hash(b"b"));
        let first = Placed {
            partition: 0,
            offset: 1,
        };
        d.insert(a, first, 1_000);
        d.expire(500);
        assert_eq!(d.get(a), Some(first));
        d.insert(
            b,
            Placed {
                partition: 1,
                offset: 9,
            },
            1_500,
        );
        // `a` leaves the window at 1001, `b` at 1501, whatever the generations hold.
        d.expire(1_001);
        assert_eq!(d.get(a), None);
        assert_eq!(
            d.get(b),
            Some(Placed {
                partition: 1,
                offset: 9
            })
        );
        d.expire(1_501);
        assert_eq!(d.get(b), None);
        // Two rotations later both generations are gone.
        d.insert(id_hash(b"c"), first, 3_000);
        d.expire(3_001);
        d.insert(id_hash(b"d"), first, 5_000);
        d.expire(5_001);
        assert_eq!(d.len(), 1);
    }

    /// A rotation followed by a cycle with nothing new (only duplicates) must not drop the
    /// ids that are still in the window.
    #[test]
    fn a_rotation_keeps_ids_still_in_the_window() {
        let mut d = DedupWindow::default();
        let (a, b) = (id_hash(b"a"), id_hash(b"b"));
        let pa = Placed {
            partition: 0,
            offset: 1,
        };
        let pb = Placed {
            partition: 0,
            offset: 2,
        };
        d.insert(a, pa, 1_000);
        d.insert(b, pb, 1_900);
        d.expire(1_001); // rotates: `a` has left the window, `b` has not
        assert_eq!(d.get(a), None);
        assert_eq!(d.get(b), Some(pb));
        d.expire(1_002); // a later cycle that inserted nothing
        d.expire(1_500);
        assert_eq!(d.get(b), Some(pb));
        d.insert(id_hash(b"c"), pa, 1_950);
        d.expire(1_901);
        assert_eq!(d.get(b), None);
        assert_eq!(d.get(id_hash(b"c")), Some(pa));
    }

    #[test]
    fn a_newer_entry_for_the_same_id_replaces_the_old_one() {
        let mut d = DedupWindow::default();
        let h = id_hash(b"a");
        let second = Placed {
            partition: 1,
            offset: 9,
        };
        d.insert(
            h,
            Placed {
                partition: 0,
                offset: 1,
            },
            10,
        );
        d.expire(11);
        d.insert(h, second, 20);
        assert_eq!(d.get(h), Some(second));
        d.remove_if(h, second);
        assert_eq!(d.get(h), None);
    }
}
