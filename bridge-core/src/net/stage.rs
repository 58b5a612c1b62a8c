//! A seeded userspace impairment stage for real sockets (tests only).
//!
//! This kernel has no `netem`, so delay, jitter, reordering and corruption on
//! real sockets come from here: every received datagram is held until
//! `arrival + delay ± jitter` (uniform, seeded), which reorders datagrams whose
//! spacing is below the jitter spread, and a seeded fraction is corrupted (one
//! byte flipped) to exercise the receiver's rejection path. Loss is left to
//! the kernel (nftables) in the namespace tests.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::net::SocketAddr;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// Impairments applied to received datagrams.
///
/// Thread-safe: yes (plain value). Realtime-safe: yes.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct StageConfig {
    /// Seed of the random stream (same seed, same impairments).
    pub seed: u64,
    /// Mean added delay, ns.
    pub delay_ns: u64,
    /// Jitter: each datagram's delay is uniform in `delay ± jitter`, ns.
    pub jitter_ns: u64,
    /// Probability (0–1) that a datagram has one byte flipped.
    pub corrupt: f64,
    /// Probability (0–1) that a datagram is dropped (for loopback tests
    /// where nftables is not used).
    pub loss: f64,
    /// Most datagrams held at once; beyond that new ones are dropped and counted.
    pub max_queued: usize,
}

impl Default for StageConfig {
    fn default() -> Self {
        Self {
            seed: 1,
            delay_ns: 0,
            jitter_ns: 0,
            corrupt: 0.0,
            loss: 0.0,
            max_queued: 4096,
        }
    }
}

/// Counters of what the stage did.
///
/// Thread-safe: yes (plain value). Realtime-safe: yes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct StageStats {
    /// Datagrams that entered the stage.
    pub entered: u64,
    /// Datagrams corrupted on purpose.
    pub corrupted: u64,
    /// Of those, released to the receiver so far (the rest are still held).
    pub corrupted_released: u64,
    /// Datagrams dropped on purpose (`loss`).
    pub dropped: u64,
    /// Datagrams dropped because the queue was full.
    pub overflow: u64,
    /// Datagrams released after their delay.
    pub released: u64,
    /// Datagrams released before one that entered earlier.
    pub reordered: u64,
}

#[derive(Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Held {
    release_ns: u64,
    order: u64,
    corrupted: bool,
    from: SocketAddr,
    bytes: Vec<u8>,
}

/// The seeded delay line.
///
/// Thread-safe: no (owned by the driver). Realtime-safe: no (allocates one
/// buffer per held datagram; it runs on the worker).
#[derive(Debug)]
pub struct ImpairmentStage {
    config: StageConfig,
    rng: ChaCha8Rng,
    queue: BinaryHeap<Reverse<Held>>,
    next_order: u64,
    last_released_order: Option<u64>,
    stats: StageStats,
}

impl ImpairmentStage {
    /// A stage with `config`.
    pub fn new(config: StageConfig) -> Self {
        Self {
            rng: ChaCha8Rng::seed_from_u64(config.seed),
            config,
            queue: BinaryHeap::new(),
            next_order: 0,
            last_released_order: None,
            stats: StageStats::default(),
        }
    }

    /// What the stage did so far.
    pub fn stats(&self) -> StageStats {
        self.stats
    }

    /// Take a datagram that arrived at `now_ns`.
    pub fn push(&mut self, now_ns: u64, from: SocketAddr, bytes: &[u8]) {
        self.stats.entered += 1;
        if self.config.loss > 0.0 && self.rng.random_bool(self.config.loss.clamp(0.0, 1.0)) {
            self.stats.dropped += 1;
            return;
        }
        if self.queue.len() >= self.config.max_queued {
            self.stats.overflow += 1;
            return;
        }
        let mut bytes = bytes.to_vec();
        let mut corrupted = false;
        if !bytes.is_empty()
            && self.config.corrupt > 0.0
            && self.rng.random_bool(self.config.corrupt.clamp(0.0, 1.0))
        {
            let i = self.rng.random_range(0..bytes.len());
            let flip = self.rng.random_range(1..=255u8);
            bytes[i] ^= flip;
            self.stats.corrupted += 1;
            corrupted = true;
        }
        let j = self.config.jitter_ns.min(self.config.delay_ns);
        let delay = if j > 0 {
            self.rng
                .random_range(self.config.delay_ns - j..=self.config.delay_ns + j)
        } else {
            self.config.delay_ns
        };
        let order = self.next_order;
        self.next_order += 1;
        self.queue.push(Reverse(Held {
            release_ns: now_ns + delay,
            order,
            corrupted,
            from,
            bytes,
        }));
    }

    /// When the next held datagram is due, if any.
    pub fn next_release_ns(&self) -> Option<u64> {
        self.queue.peek().map(|h| h.0.release_ns)
    }

    /// Release every datagram due at `now_ns`, in release order, with the
    /// time it was due (its arrival on the emulated path, ns).
    pub fn release(&mut self, now_ns: u64, mut deliver: impl FnMut(u64, SocketAddr, &[u8])) {
        while self.queue.peek().is_some_and(|h| h.0.release_ns <= now_ns) {
            let Reverse(held) = self.queue.pop().expect("peeked");
            if self.last_released_order.is_some_and(|o| held.order < o) {
                self.stats.reordered += 1;
            } else {
                self.last_released_order = Some(held.order);
            }
            self.stats.released += 1;
            self.stats.corrupted_released += u64::from(held.corrupted);
            deliver(held.release_ns, held.from, &held.bytes);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr() -> SocketAddr {
        "127.0.0.1:9".parse().unwrap()
    }

    #[test]
    fn delays_within_bounds_and_reorders() {
        let mut st = ImpairmentStage::new(StageConfig {
            seed: 7,
            delay_ns: 5_000_000,
            jitter_ns: 2_000_000,
            ..Default::default()
        });
        for i in 0..1000u64 {
            st.push(i * 100_000, addr(), &i.to_be_bytes());
        }
        assert_eq!(st.release_count_before(2_999_999), 0);
        let mut got = Vec::new();
        let mut t = 0;
        while st.next_release_ns().is_some() {
            t += 50_000;
            st.release(t, |_, _, b| {
                let i = u64::from_be_bytes(b.try_into().unwrap());
                let sent = i * 100_000;
                assert!(t >= sent + 3_000_000, "released too early");
                assert!(t <= sent + 7_000_000 + 50_000, "released too late");
                got.push(i);
            });
        }
        assert_eq!(got.len(), 1000);
        assert!(st.stats().reordered > 100, "{:?}", st.stats());
        got.sort();
        assert_eq!(got, (0..1000).collect::<Vec<_>>());
    }

    #[test]
    fn same_seed_same_corruption() {
        let run = |seed| {
            let mut st = ImpairmentStage::new(StageConfig {
                seed,
                corrupt: 0.1,
                ..Default::default()
            });
            let mut out = Vec::new();
            for i in 0..1000u32 {
                st.push(0, addr(), &i.to_be_bytes());
            }
            st.release(0, |_, _, b| out.push(b.to_vec()));
            (st.stats().corrupted, out)
        };
        let (c1, o1) = run(3);
        let (c2, o2) = run(3);
        assert_eq!(o1, o2);
        assert_eq!(c1, c2);
        assert!((60..=140).contains(&c1), "corrupted {c1}");
        let changed = o1
            .iter()
            .enumerate()
            .filter(|(i, b)| b[..] != (*i as u32).to_be_bytes())
            .count();
        assert_eq!(changed as u64, c1);
        assert_eq!(c1, run(3).0);
    }

    impl ImpairmentStage {
        fn release_count_before(&self, t: u64) -> usize {
            self.queue.iter().filter(|h| h.0.release_ns <= t).count()
        }
    }
}
