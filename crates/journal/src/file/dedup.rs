//! The topic-wide dedup window: record id -> where it was appended.
//!
//! Memory is proportional to the ids appended within the window (about 80 bytes each), not
//! to the journal's size. Ids are kept as 128-bit xxh3 hashes.

use std::collections::{HashMap, VecDeque};
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

#[derive(Debug, Default)]
pub(crate) struct DedupWindow {
    by_id: HashedMap<Placed>,
    /// Insertion order for expiry: (timestamp ms, id hash, place).
    order: VecDeque<(i64, u128, Placed)>,
}

pub(crate) fn id_hash(id: &[u8]) -> u128 {
    xxhash_rust::xxh3::xxh3_128(id)
}

impl DedupWindow {
    pub fn get(&self, h: u128) -> Option<Placed> {
        self.by_id.get(&h).copied()
    }

    /// Probes for `h` only to bring its bucket into the cache.
    pub fn touch(&self, h: u128) {
        std::hint::black_box(self.by_id.contains_key(&h));
    }

    pub fn insert(&mut self, h: u128, at: Placed, timestamp: i64) {
        self.by_id.insert(h, at);
        self.order.push_back((timestamp, h, at));
    }

    /// Forgets an id inserted by a write that did not reach the disk.
    pub fn remove_if(&mut self, h: u128, at: Placed) {
        if self.by_id.get(&h) == Some(&at) {
            self.by_id.remove(&h);
        }
    }

    /// Forgets ids appended before `cutoff` (ms).
    pub fn expire(&mut self, cutoff: i64) {
        while let Some(&(ts, h, at)) = self.order.front() {
            if ts >= cutoff {
                break;
            }
            self.order.pop_front();
            self.remove_if(h, at);
        }
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.by_id.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expiry_keeps_a_newer_entry_for_the_same_id() {
        let mut d = DedupWindow::default();
        let h = id_hash(b"a");
        let first = Placed {
            partition: 0,
            offset: 1,
        };
        let second = Placed {
            partition: 1,
            offset: 9,
        };
        d.insert(h, first, 10);
        d.insert(h, second, 20);
        d.expire(15);
        assert_eq!(d.get(h), Some(second));
        d.expire(21);
        assert_eq!(d.get(h), None);
        assert_eq!(d.len(), 0);
    }
}
