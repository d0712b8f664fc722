//! The topic-wide dedup window: record id -> where it was appended.
//!
//! Memory is proportional to the ids appended within one to two windows (32-byte slots at
//! most 7/10 full: 46 to 91 bytes per id), not to the journal's size. Ids are kept as
//! 128-bit xxh3 hashes.

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

/// One entry of an [`IdTable`]: an id's hash, where it was appended, and the append time in
/// milliseconds after its generation began.
#[derive(Clone, Copy, Debug, Default)]
struct Slot {
    /// 0 marks an empty slot; a real hash of 0 is stored as 1.
    key: u128,
    offset: u64,
    partition: u32,
    after_ms: u32,
}

/// A slot as stored: 32 bytes, two per cache line. Plain integers, so a new table comes from
/// zeroed memory the kernel maps on first write instead of being filled element by element.
type Packed = [u64; 4];

impl Slot {
    fn pack(self) -> Packed {
        [
            self.key as u64,
            (self.key >> 64) as u64,
            self.offset,
            u64::from(self.partition) | (u64::from(self.after_ms) << 32),
        ]
    }

    fn unpack(p: Packed) -> Self {
        Slot {
            key: u128::from(p[0]) | (u128::from(p[1]) << 64),
            offset: p[2],
            partition: p[3] as u32,
            after_ms: (p[3] >> 32) as u32,
        }
    }
}

/// An open-addressing table (linear probing) from id hash to place, built for the writer's
/// pattern: probe every id of a cycle first, so the cache misses overlap, then look up and
/// insert into the lines those probes brought in. A general-purpose map cannot do the
/// second part: a new id's bucket is only touched when it is inserted, one miss at a time.
#[derive(Debug, Default)]
struct IdTable {
    slots: Vec<Packed>,
    len: usize,
}

impl IdTable {
    /// Grow once more than 7 in 10 slots are used: linear probing slows down sharply above.
    fn over_full(len: usize, capacity: usize) -> bool {
        len * 10 >= capacity * 7
    }

    fn stored(h: u128) -> u128 {
        h.max(1)
    }

    /// Keys are uniform hashes: their high half picks the home slot.
    fn home(&self, key: u128) -> usize {
        ((key >> 64) as usize) & (self.slots.len() - 1)
    }

    fn key_at(&self, i: usize) -> u128 {
        let p = &self.slots[i];
        u128::from(p[0]) | (u128::from(p[1]) << 64)
    }

    fn get(&self, h: u128) -> Option<Slot> {
        if self.slots.is_empty() {
            return None;
        }
        let key = Self::stored(h);
        let mut i = self.home(key);
        loop {
            match self.key_at(i) {
                k if k == key => return Some(Slot::unpack(self.slots[i])),
                0 => return None,
                _ => i = (i + 1) & (self.slots.len() - 1),
            }
        }
    }

    /// Reads `h`'s home slot only to bring it into the cache.
    fn touch(&self, h: u128) {
        if !self.slots.is_empty() {
            std::hint::black_box(self.slots[self.home(Self::stored(h))][0]);
        }
    }

    fn insert(&mut self, h: u128, value: Slot) {
        if self.slots.is_empty() || Self::over_full(self.len + 1, self.slots.len()) {
            self.grow_for(self.len + 1);
        }
        let key = Self::stored(h);
        let mask = self.slots.len() - 1;
        let mut i = self.home(key);
        loop {
            match self.key_at(i) {
                k if k == key => break,
                0 => {
                    self.len += 1;
                    break;
                }
                _ => i = (i + 1) & mask,
            }
        }
        self.slots[i] = Slot { key, ..value }.pack();
    }

    /// Removes `h` if `remove` says so, shifting later slots of its run back so every key
    /// stays reachable from its home without tombstones.
    fn remove_if(&mut self, h: u128, remove: impl FnOnce(&Slot) -> bool) {
        if self.slots.is_empty() {
            return;
        }
        let key = Self::stored(h);
        let mask = self.slots.len() - 1;
        let mut hole = self.home(key);
        loop {
            match self.key_at(hole) {
                0 => return,
                k if k == key => {
                    if !remove(&Slot::unpack(self.slots[hole])) {
                        return;
                    }
                    break;
                }
                _ => hole = (hole + 1) & mask,
            }
        }
        self.slots[hole] = Packed::default();
        self.len -= 1;
        let mut i = hole;
        loop {
            i = (i + 1) & mask;
            let k = self.key_at(i);
            if k == 0 {
                return;
            }
            // The slot may move into the hole only if the hole lies on its probe path, that
            // is cyclically between its home and where it is.
            let home = self.home(k);
            let distance_to_slot = i.wrapping_sub(home) & mask;
            let distance_to_hole = hole.wrapping_sub(home) & mask;
            if distance_to_hole < distance_to_slot {
                self.slots[hole] = self.slots[i];
                self.slots[i] = Packed::default();
                hole = i;
            }
        }
    }

    /// Makes room for `n` keys without growing again; never shrinks.
    fn grow_for(&mut self, n: usize) {
        let mut capacity = self.slots.len().max(1024);
        while Self::over_full(n, capacity) {
            capacity *= 2;
        }
        if capacity == self.slots.len() {
            return;
        }
        let old = std::mem::replace(&mut self.slots, vec![Packed::default(); capacity]);
        self.len = 0;
        for p in old.into_iter().filter(|p| p[0] | p[1] != 0) {
            let s = Slot::unpack(p);
            self.insert(s.key, s);
        }
    }

    /// Empties the table and keeps its memory for the next generation.
    fn clear(&mut self) {
        self.slots.fill(Packed::default());
        self.len = 0;
    }

    fn is_empty(&self) -> bool {
        self.len == 0
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.len
    }
}

/// Two generations of ids. New ids go into `current`. Once `previous` is empty and the
/// oldest id of `current` has left the window, `current` becomes `previous`; `previous` is
/// dropped whole once its newest id has left the window. Expiry therefore costs nothing per
/// id (no queue, no random lookups), memory holds at most about two windows of ids, and a
/// lookup checks the append time, so an id is remembered for exactly the window.
#[derive(Debug)]
pub(crate) struct DedupWindow {
    current: IdTable,
    /// The append time of the first id in `current`: `Slot::after_ms` counts from it.
    current_since: i64,
    current_newest: i64,
    previous: IdTable,
    previous_since: i64,
    previous_newest: i64,
    /// Ids older than this are no longer duplicates.
    cutoff: i64,
}

impl Default for DedupWindow {
    fn default() -> Self {
        Self {
            current: IdTable::default(),
            current_since: 0,
            current_newest: i64::MIN,
            previous: IdTable::default(),
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
        let found = |e: Slot, since: i64| {
            (
                Placed {
                    partition: e.partition,
                    offset: e.offset,
                },
                since.saturating_add(i64::from(e.after_ms)),
            )
        };
        match self.current.get(h) {
            Some(e) => Some(found(e, self.current_since)),
            None => self.previous.get(h).map(|e| found(e, self.previous_since)),
        }
    }

    pub fn get(&self, h: u128) -> Option<Placed> {
        self.lookup(h)
            .filter(|&(_, ts)| ts >= self.cutoff)
            .map(|(p, _)| p)
    }

    /// Probes for `h` only to bring its buckets into the cache.
    pub fn touch(&self, h: u128) {
        self.current.touch(h);
        self.previous.touch(h);
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
        let e = Slot {
            key: h,
            offset: at.offset,
            partition: at.partition,
            after_ms: after_ms as u32,
        };
        self.current.insert(h, e);
    }

    /// Forgets an id inserted by a write that did not reach the disk.
    pub fn remove_if(&mut self, h: u128, at: Placed) {
        self.current
            .remove_if(h, |e| e.partition == at.partition && e.offset == at.offset);
    }

    /// Forgets ids appended before `cutoff` (ms).
    pub fn expire(&mut self, cutoff: i64) {
        self.cutoff = self.cutoff.max(cutoff);
        if !self.previous.is_empty() && self.previous_newest < self.cutoff {
            // Cleared, not freed: the next generation reuses its memory (growing a table
            // into fresh memory is a large part of an insert's cost).
            self.previous.clear();
        }
        if self.previous.is_empty() && !self.current.is_empty() && self.current_since < self.cutoff
        {
            let capacity = self.current.len;
            std::mem::swap(&mut self.previous, &mut self.current);
            self.previous_since = self.current_since;
            self.previous_newest = self.current_newest;
            self.current.grow_for(capacity);
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
    use rand::{Rng as _, SeedableRng as _};

    fn slot(offset: u64) -> Slot {
        Slot {
            offset,
            ..Slot::default()
        }
    }

    /// The table against `HashMap`, with many keys sharing a home slot (long runs that wrap
    /// around the end), hash 0, and removals from the middle of runs.
    #[test]
    fn the_id_table_agrees_with_a_hash_map() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let mut table = IdTable::default();
        let mut model: HashMap<u128, u64> = HashMap::new();
        let mut highs: Vec<u64> = (0..2_047).map(|_| rng.random()).collect();
        highs.push(u64::MAX);
        for step in 0..200_000u64 {
            // Up to 8 keys share each home; `u64::MAX` homes at the last slot, so its run
            // wraps around the table's end; some keys are random; one is 0.
            let key = match rng.random_range(0..20) {
                0 => 0,
                1 => rng.random::<u128>() | 2,
                _ => {
                    (u128::from(highs[rng.random_range(0..highs.len())]) << 64)
                        | u128::from(rng.random_range(2..10u64))
                }
            };
            if rng.random_bool(0.3) {
                let expected = model.get(&key).copied();
                table.remove_if(key, |s| Some(s.offset) == expected && step % 2 == 0);
                if step % 2 == 0 {
                    model.remove(&key);
                }
            } else {
                table.insert(key, slot(step));
                model.insert(key, step);
            }
            if step % 9_973 == 0 {
                assert_eq!(table.len(), model.len());
                for (k, v) in &model {
                    assert_eq!(table.get(*k).map(|s| s.offset), Some(*v), "key {k:#x}");
                }
            }
        }
        // 0 is stored as 1, so the generated keys avoid 1.
        for k in (0..5_000u128)
            .filter(|&k| k != 1)
            .chain(model.keys().copied())
        {
            assert_eq!(
                table.get(k).map(|s| s.offset),
                model.get(&k).copied(),
                "key {k}"
            );
        }
        table.clear();
        assert!(table.is_empty());
        assert!(table.get(1).is_none());
    }

    #[test]
    fn the_id_table_grows_and_keeps_every_key() {
        let mut table = IdTable::default();
        let keys: Vec<u128> = (0..100_000u128)
            .map(|i| id_hash(&i.to_le_bytes()))
            .collect();
        for (i, &k) in keys.iter().enumerate() {
            table.insert(k, slot(i as u64));
        }
        assert_eq!(table.len(), keys.len());
        assert!(!IdTable::over_full(table.len(), table.slots.len()));
        for (i, &k) in keys.iter().enumerate() {
            assert_eq!(table.get(k).map(|s| s.offset), Some(i as u64));
        }
        assert!(table.get(id_hash(b"absent")).is_none());
    }

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
