//! When the host's audio thread hands its blocks over, so the worker can
//! look for them right then.
//!
//! The audio thread cannot wake the worker (no syscalls there): the worker
//! polls the link's input ring. Polling every half block at whatever phase
//! the worker happens to run sends a block up to half a block (0.67 ms at
//! 64 frames, 48 kHz) after the host produced it. A host calls `process()`
//! on a steady clock, though, so the instants its blocks appear lie on a
//! line: block `n` appears at `a + n·P`. [`PushCadence`] learns `a` from the
//! polls that found blocks (each one an upper bound: the block was there
//! when we looked) and times the next poll for when the next host buffer
//! should be there; a poll that finds nothing yet is repeated every
//! [`STEP_NS`] until it does, and a host that stopped calling falls back to
//! the half-block polling.
//!
//! Sans-IO: it takes `now` and returns when to look next.

/// Observations kept (host buffers).
const WINDOW: usize = 32;
/// Observations older than this are forgotten, ns (a host whose clock
/// drifts against ours moves its instants: 200 ppm is 0.1 ms in 0.5 s).
const MAX_AGE_NS: u64 = 500_000_000;
/// Longest wait for a predicted buffer, blocks.
const MAX_WAIT_BLOCKS: f64 = 8.0;
/// Re-poll interval once the predicted instant has passed, ns.
pub const STEP_NS: u64 = 100_000;

/// The phase of the host's block hand-overs, learnt from polls.
///
/// Thread-safe: no (the worker's). Realtime-safe: yes (fixed arrays, no
/// allocation).
#[derive(Debug, Clone)]
pub struct PushCadence {
    block_ns: f64,
    /// Per poll that found blocks: when, the offset `now − n_last·P` (an
    /// upper bound of `a`: the block was there), and how many it found.
    found: [(u64, f64, u64); WINDOW],
    len: usize,
    head: usize,
    /// Index of the last block found.
    last: Option<u64>,
}

impl PushCadence {
    /// For blocks of `block_ns` (on our clock).
    pub fn new(block_ns: u64) -> Self {
        PushCadence {
            block_ns: block_ns.max(1) as f64,
            found: [(0, 0.0, 0); WINDOW],
            len: 0,
            head: 0,
            last: None,
        }
    }

    /// A poll at `now` found `count` blocks, the last of them block `last`
    /// (its first frame over the block length). Polls that found nothing
    /// need not be reported.
    pub fn found(&mut self, now: u64, last: u64, count: u64) {
        if count == 0 {
            return;
        }
        if self.last.is_some_and(|l| last <= l) {
            // The stream restarted (a new link or a reset): start over.
            self.len = 0;
            self.head = 0;
        }
        self.last = Some(last);
        let offset = now as f64 - last as f64 * self.block_ns;
        self.found[self.head] = (now, offset, count);
        self.head = (self.head + 1) % WINDOW;
        self.len = (self.len + 1).min(WINDOW);
    }

    /// When the next host buffer can be there at the earliest (ns on our
    /// clock), if known: the earliest recent finding's phase, a host buffer
    /// (the fewest blocks one recent poll found) after the last block.
    pub fn expected(&self, now: u64) -> Option<u64> {
        let (a, burst) = self.found[..self.len]
            .iter()
            .filter(|(t, _, _)| now.saturating_sub(*t) <= MAX_AGE_NS)
            .fold((f64::INFINITY, u64::MAX), |(a, b), &(_, o, c)| {
                (a.min(o), b.min(c))
            });
        if !a.is_finite() {
            return None;
        }
        Some((a + (self.last? + burst) as f64 * self.block_ns).max(0.0) as u64)
    }

    /// When to poll next: a step ([`STEP_NS`]) before the expected instant
    /// (a buffer that comes earlier than any recent one is found there, and
    /// teaches the earlier phase), then every step; half a block past the
    /// expected instant (a host that stopped, or knowing nothing), every
    /// half block. A steady host's buffer thus waits about one wake-up, a
    /// jittery one's at most about a step, instead of up to half a block.
    pub fn next_poll(&self, now: u64) -> u64 {
        let half = (self.block_ns / 2.0) as u64;
        let Some(at) = self.expected(now) else {
            return now + half;
        };
        let probe = at.saturating_sub(STEP_NS);
        if probe > now {
            // At most MAX_WAIT_BLOCKS ahead, in case the host changed its
            // buffer size.
            probe.min(now + (MAX_WAIT_BLOCKS * self.block_ns) as u64)
        } else if now < at {
            at
        } else if now - at < half {
            now + STEP_NS.min(half)
        } else {
            now + half
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BLOCK_NS: u64 = 1_333_333;

    /// A host handing over `per_call` blocks every `per_call` block
    /// periods, its calls `phase_ns` into our clock and late by a seeded
    /// 0–`jitter_ns`; the worker polls only when `next_poll` says (and
    /// wakes `wake_ns` late). Returns each block's wait between its hand-
    /// over and the poll that found it, and the polls made, over the last
    /// half of `blocks`.
    fn run(
        per_call: u64,
        phase_ns: u64,
        jitter_ns: u64,
        wake_ns: u64,
        blocks: u64,
    ) -> (Vec<u64>, u64) {
        use rand::{Rng, SeedableRng};
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(0x9E37_79B9_7F4A_7C15);
        let mut next_rand = move || rng.random::<u64>();
        let calls = blocks / per_call;
        let pushed_at: Vec<u64> = (0..calls)
            .map(|c| {
                let j = if jitter_ns > 0 {
                    next_rand() % jitter_ns
                } else {
                    0
                };
                phase_ns + (c + 1) * per_call * BLOCK_NS + j
            })
            .collect();
        let mut cad = PushCadence::new(BLOCK_NS);
        let mut now = 0;
        let mut taken = 0; // calls already found
        let mut waits = Vec::new();
        let mut polls = 0;
        while taken < calls {
            polls += u64::from(taken >= calls / 2);
            let mut count = 0;
            while taken < calls && pushed_at[taken as usize] <= now {
                if taken >= calls / 2 {
                    waits.push(now - pushed_at[taken as usize]);
                }
                taken += 1;
                count += per_call;
            }
            if count > 0 {
                cad.found(now, taken * per_call - 1, count);
            }
            now = cad.next_poll(now) + wake_ns;
        }
        (waits, polls)
    }

    fn max(v: &[u64]) -> u64 {
        v.iter().copied().max().unwrap_or(0)
    }

    #[test]
    fn a_steady_host_is_polled_right_after_each_hand_over() {
        for phase in [0, 200_000, 700_000, 1_300_000] {
            let (waits, polls) = run(1, phase, 0, 20_000, 2_000);
            // Half-block polling waits up to 667 µs (333 µs on average);
            // here a step plus the wake-up at most.
            assert!(
                max(&waits) <= STEP_NS + 20_000,
                "phase {phase}: waits up to {} ns",
                max(&waits)
            );
            // The probe and the finding poll: two per block, as before.
            assert!(
                polls <= 2_100,
                "phase {phase}: {polls} polls for 1000 blocks"
            );
        }
    }

    #[test]
    fn a_jittery_host_costs_a_few_steps_not_half_a_block() {
        // process() calls late by 0–300 µs, uniformly.
        let (waits, polls) = run(1, 300_000, 300_000, 20_000, 2_000);
        assert!(
            max(&waits) <= STEP_NS + 20_000,
            "waits up to {} ns",
            max(&waits)
        );
        assert!(polls <= 4_000, "{polls} polls for 1000 blocks");
    }

    #[test]
    fn large_host_buffers_are_waited_for_as_one() {
        // 256-frame host buffers: four blocks per call, 5.3 ms apart.
        let (waits, polls) = run(4, 500_000, 0, 20_000, 4_000);
        assert!(
            max(&waits) <= STEP_NS + 20_000,
            "waits up to {} ns",
            max(&waits)
        );
        // Half-block polling: eight per host call.
        assert!(polls <= 1_100, "{polls} polls for 500 host calls");
    }

    #[test]
    fn nothing_learnt_or_a_stopped_host_means_half_block_polling() {
        let mut cad = PushCadence::new(BLOCK_NS);
        assert_eq!(cad.next_poll(5), 5 + BLOCK_NS / 2);
        cad.found(1_000_000, 0, 1);
        let at = 1_000_000 + BLOCK_NS;
        assert_eq!(cad.expected(1_000_000), Some(at));
        // A step early, then at the instant, then steps, then half blocks.
        assert_eq!(cad.next_poll(1_100_000), at - STEP_NS);
        assert_eq!(cad.next_poll(at - STEP_NS), at);
        assert_eq!(cad.next_poll(at + 1), at + 1 + STEP_NS);
        assert_eq!(cad.next_poll(at + BLOCK_NS), at + BLOCK_NS + BLOCK_NS / 2);
        // Forgotten after half a second.
        assert_eq!(cad.expected(600_000_000), None);
        // A restarted stream starts over.
        cad.found(3_000_000, 0, 1);
        assert_eq!(cad.expected(3_000_000), Some(3_000_000 + BLOCK_NS));
    }
}
