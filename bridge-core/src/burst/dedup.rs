//! Fixed-capacity "seen recently" set of `(source, burst_id)` with time expiry.
//!
//! An open-addressing hash table (linear probing, backward-shift deletion, so
//! no tombstones and no rehashing) indexes a FIFO ring of entries in insertion
//! order. Entries leave the ring, and the table, when they are older than
//! `forget_after_ns`, or (counted) when the ring is full.

/// How long and how many ids a [`DedupTable`] remembers.
///
/// Thread-safe: yes (plain value). Realtime-safe: yes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DedupConfig {
    /// Ids remembered at once.
    pub capacity: usize,
    /// An id is forgotten this long after it was first seen, ns.
    pub forget_after_ns: u64,
}

impl Default for DedupConfig {
    fn default() -> Self {
        DedupConfig {
            capacity: 4096,
            forget_after_ns: 2_000_000_000,
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
struct Key {
    source: u32,
    id: u64,
}

#[derive(Clone, Copy)]
struct RingEntry {
    key: Key,
    seen_at: u64,
}

const EMPTY: u32 = u32::MAX;

/// See the module docs.
///
/// Thread-safe: no (`Send`). Realtime-safe: yes after construction.
pub struct DedupTable {
    config: DedupConfig,
    ring: Box<[RingEntry]>,
    head: usize,
    len: usize,
    /// Hash slots holding ring indices (`EMPTY` when free); length a power of two ≥ 2 × capacity.
    slots: Box<[u32]>,
    mask: usize,
    forgotten_early: u64,
}

fn hash(key: Key) -> u64 {
    // splitmix64 finaliser over the packed key: cheap and well mixed.
    let mut z = key.id ^ ((key.source as u64) << 32 | key.source as u64).rotate_left(17);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

impl DedupTable {
    /// An empty table (capacity clamped to 1..=2^30).
    pub fn new(mut config: DedupConfig) -> Self {
        config.capacity = config.capacity.clamp(1, 1 << 30);
        let slots = (config.capacity * 2).next_power_of_two();
        DedupTable {
            ring: vec![
                RingEntry {
                    key: Key { source: 0, id: 0 },
                    seen_at: 0
                };
                config.capacity
            ]
            .into_boxed_slice(),
            head: 0,
            len: 0,
            slots: vec![EMPTY; slots].into_boxed_slice(),
            mask: slots - 1,
            forgotten_early: 0,
            config,
        }
    }

    /// Ids currently remembered.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Nothing remembered.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Ids dropped before `forget_after_ns` because the table was full.
    pub fn forgotten_early(&self) -> u64 {
        self.forgotten_early
    }

    fn find(&self, key: Key) -> Result<usize, usize> {
        let mut pos = hash(key) as usize & self.mask;
        loop {
            let r = self.slots[pos];
            if r == EMPTY {
                return Err(pos);
            }
            if self.ring[r as usize].key == key {
                return Ok(pos);
            }
            pos = (pos + 1) & self.mask;
        }
    }

    fn remove_slot(&mut self, mut hole: usize) {
        // Backward-shift deletion keeps every probe chain unbroken.
        self.slots[hole] = EMPTY;
        let mut pos = (hole + 1) & self.mask;
        while self.slots[pos] != EMPTY {
            let r = self.slots[pos];
            let home = hash(self.ring[r as usize].key) as usize & self.mask;
            // Move r into the hole if its home is not cyclically in (hole, pos].
            let dist_pos = pos.wrapping_sub(home) & self.mask;
            let dist_hole = pos.wrapping_sub(hole) & self.mask;
            if dist_pos >= dist_hole {
                self.slots[hole] = r;
                self.slots[pos] = EMPTY;
                hole = pos;
            }
            pos = (pos + 1) & self.mask;
        }
    }

    fn pop_oldest(&mut self) {
        let key = self.ring[self.head].key;
        if let Ok(slot) = self.find(key) {
            self.remove_slot(slot);
        }
        self.head = (self.head + 1) % self.ring.len();
        self.len -= 1;
    }

    /// Forget ids older than `forget_after_ns` at `now`.
    pub fn expire(&mut self, now: u64) {
        while self.len > 0
            && now.saturating_sub(self.ring[self.head].seen_at) >= self.config.forget_after_ns
        {
            self.pop_oldest();
        }
    }

    /// Whether `(source, id)` is remembered.
    pub fn contains(&self, source: u32, id: u64) -> bool {
        self.find(Key { source, id }).is_ok()
    }

    /// Remember `(source, id)` seen at `now`. `true` if it was new.
    pub fn insert(&mut self, now: u64, source: u32, id: u64) -> bool {
        self.expire(now);
        let key = Key { source, id };
        if self.find(key).is_ok() {
            return false;
        }
        if self.len == self.ring.len() {
            self.pop_oldest();
            self.forgotten_early += 1;
        }
        let idx = (self.head + self.len) % self.ring.len();
        self.ring[idx] = RingEntry { key, seen_at: now };
        self.len += 1;
        match self.find(key) {
            Err(free) => self.slots[free] = idx as u32,
            Ok(_) => unreachable!("key checked absent above"),
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remembers_forgets_and_stays_bounded() {
        let mut t = DedupTable::new(DedupConfig {
            capacity: 64,
            forget_after_ns: 1000,
        });
        assert!(t.insert(0, 1, 10));
        assert!(!t.insert(5, 1, 10));
        assert!(
            t.insert(5, 2, 10),
            "other source, same id is a different event"
        );
        assert!(!t.insert(999, 1, 10));
        assert!(t.insert(1000, 1, 10), "forgotten after forget_after_ns");
        // Fill beyond capacity within the time window: bounded, oldest forgotten early.
        for id in 0..200u64 {
            assert!(t.insert(2000, 7, id));
        }
        assert_eq!(t.len(), 64);
        assert_eq!(
            t.forgotten_early(),
            200 - 64,
            "the two earlier ids expired on time"
        );
        for id in 136..200u64 {
            assert!(t.contains(7, id));
        }
        assert!(!t.contains(7, 135));
    }

    #[test]
    fn matches_a_reference_set_under_churn() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(11);
        let cap = 50;
        let forget = 10_000;
        let mut t = DedupTable::new(DedupConfig {
            capacity: cap,
            forget_after_ns: forget,
        });
        let mut reference: std::collections::VecDeque<(u32, u64, u64)> = Default::default();
        let mut now = 0u64;
        for _ in 0..100_000 {
            now += rng.random_range(0..400);
            let (s, id) = (rng.random_range(0..3u32), rng.random_range(0..80u64));
            while reference.front().is_some_and(|e| now - e.2 >= forget) {
                reference.pop_front();
            }
            let known = reference.iter().any(|e| e.0 == s && e.1 == id);
            assert_eq!(t.insert(now, s, id), !known);
            if !known {
                if reference.len() == cap {
                    reference.pop_front();
                }
                reference.push_back((s, id, now));
            }
        }
    }
}
