//! Adaptive jitter buffer and playout decisions for one audio stream.
//!
//! Blocks are keyed by `first_sample` (the sender's sample index), so
//! alignment never depends on when a frame happened to arrive. The consumer
//! (the worker feeding the audio thread's ring, or a test) calls
//! [`JitterBuffer::pull`] once per block period; each pull plays exactly one
//! block and says where it came from ([`BlockSource`]): received audio,
//! JELLIE-rebuilt audio (bit-exact or one parity interpolated), or
//! concealment through a [`Concealer`].
//!
//! # Choosing the delay
//! Every arrival yields a *relative delay*: how much later than the earliest
//! arrival seen (for the same sender sample clock) it came,
//! `e = (now − first_sample / rate) − min(now − first_sample / rate)`, the
//! minimum taken over a sliding window of about 4 s so slow clock drift and
//! route changes are followed. Choices studied:
//!
//! * **NetEQ** (WebRTC) keeps a histogram of relative arrival delays with
//!   exponential forgetting and plays out at a high quantile of it.
//! * **Jamulus** simulates, for each candidate buffer size, how many blocks
//!   would have been late, and picks the smallest size under an error-rate
//!   bound.
//! * **JackTrip**'s auto mode tracks the mean and deviation of inter-arrival
//!   times and sizes the queue from them.
//!
//! We take NetEQ's histogram (0.25 ms buckets, exponential forgetting with
//! a 5 s time constant, whatever the block size)
//! with Jamulus's framing of the goal: the target delay is the smallest
//! delay at which the fraction of blocks that would arrive late is at most
//! [`JitterConfig::target_late_rate`] (default 0.1 %: a late block is a
//! JELLIE rebuild at best and a concealment otherwise, and a host handing
//! over 10 ms buffers makes seven or eight blocks late at once; at 1 % a
//! stereo stream between two busy hosts was concealed several times a
//! second). Growing is immediate
//! (one held block); shrinking needs the excess to persist and is
//! rate-limited (one dropped block per [`JitterConfig::shrink_interval_ns`]),
//! because every adjustment is an audible splice. A manual override pins the
//! target ([`JitterBuffer::set_manual_delay`]).
//!
//! # Playout
//! The current playout delay of the block about to be played is
//! `now − (cursor / rate + base)`. Below target: the buffer *holds* (plays a
//! concealed block without advancing). Above the setpoint (target + ¾
//! block) by more than [`JitterBuffer::excess_band_ns`] for longer than the
//! shrink interval: it *skips* one block.
//! Otherwise it plays the block at the cursor.
//!
//! Everything is allocation-free after construction.

pub mod conceal;

pub use conceal::RepeatFadeConcealer;

use crate::conceal::Concealer;
use crate::protocol::jellie::{self, MergeOutcome, SubStream};

/// Jitter buffer configuration.
///
/// Thread-safe: yes (plain value). Realtime-safe: yes.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct JitterConfig {
    /// Interleaved channels (JELLIE streams: 1).
    pub channels: usize,
    /// Frames per block (the sender's `frames`; JELLIE: samples per mono block).
    pub block_frames: usize,
    /// Sample rate of the stream, Hz.
    pub sample_rate: u32,
    /// Blocks the buffer can hold ahead of the playout cursor.
    pub capacity_blocks: usize,
    /// Aim: at most this fraction of blocks arrives after its playout time.
    pub target_late_rate: f64,
    /// Never target less than this, ns.
    pub min_delay_ns: u64,
    /// Never target more than this, ns.
    pub max_delay_ns: u64,
    /// At most one dropped block per this long, ns.
    pub shrink_interval_ns: u64,
}

impl JitterConfig {
    /// Defaults for a stream of `channels` × `block_frames` at `sample_rate`.
    pub fn new(channels: usize, block_frames: usize, sample_rate: u32) -> Self {
        JitterConfig {
            channels,
            block_frames,
            sample_rate,
            capacity_blocks: 64,
            target_late_rate: 0.001,
            min_delay_ns: 0,
            max_delay_ns: 120_000_000,
            shrink_interval_ns: 500_000_000,
        }
    }
}

/// Where a played block came from.
///
/// Thread-safe: yes. Realtime-safe: yes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum BlockSource {
    /// The block as received (plain, or JELLIE with A and B).
    Received,
    /// JELLIE rebuilt it bit-exactly using a redundant sub-stream (C or D).
    Rebuilt,
    /// JELLIE had one parity only; the other was interpolated.
    Interpolated,
    /// Missing: the concealer invented it.
    Concealed,
    /// The buffer held back to grow its delay (concealer output, cursor not advanced).
    Held,
    /// Nothing received yet (silence).
    Idle,
}

/// What happened to an inserted block.
///
/// Thread-safe: yes. Realtime-safe: yes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InsertOutcome {
    /// Stored for playout.
    Stored,
    /// Already had it.
    Duplicate,
    /// Its playout time has passed.
    Late,
    /// Malformed for this stream (wrong length, channels or alignment), or too far ahead.
    Rejected,
}

/// Reception and playout statistics of one stream.
///
/// Thread-safe: yes (plain value). Realtime-safe: yes.
#[derive(Debug, Clone, Copy, Default, PartialEq, serde::Serialize)]
pub struct JitterStats {
    /// Blocks (or JELLIE sub-blocks) stored.
    pub received: u64,
    /// Blocks played as received.
    pub played_received: u64,
    /// Blocks rebuilt bit-exactly by JELLIE from C/D.
    pub rebuilt: u64,
    /// Blocks with one JELLIE parity interpolated.
    pub interpolated: u64,
    /// Blocks concealed because nothing of them arrived in time.
    pub concealed: u64,
    /// Blocks missing at playout (= concealed; kept for symmetry with the session stats).
    pub lost: u64,
    /// Arrivals after their playout time.
    pub late: u64,
    /// Arrivals behind a higher `first_sample`.
    pub reordered: u64,
    /// Arrivals of data already held.
    pub duplicated: u64,
    /// Arrivals rejected as malformed or out of range.
    pub rejected: u64,
    /// Blocks held to grow the delay.
    pub holds: u64,
    /// Blocks dropped to shrink the delay.
    pub skips: u64,
    /// Blocks passed over when playout started late (the consumer's first
    /// pull came more than a block after the target delay): inaudible.
    pub start_trimmed_blocks: u64,
    /// Stream restarts (sender's `first_sample` jumped).
    pub resyncs: u64,
    /// Interarrival jitter (RFC 3550 style), ns.
    pub jitter_ns: f64,
    /// Current target playout delay above the fastest path, ns.
    pub target_delay_ns: u64,
}

const BUCKET_NS: u64 = 250_000;
const BUCKETS: usize = 512; // 128 ms of relative delay
/// Time constant of the histogram's forgetting, ns.
const HIST_MEMORY_NS: f64 = 5e9;
/// The fastest path is the minimum over this window and the one before.
pub const BASE_WINDOW_NS: u64 = 2_000_000_000;

#[derive(Clone, Copy)]
struct Slot {
    first_sample: u64,
    plain: bool,
    even: Option<SubStream>,
    odd: Option<SubStream>,
}

const EMPTY: Slot = Slot {
    first_sample: u64::MAX,
    plain: false,
    even: None,
    odd: None,
};

/// The adaptive jitter buffer. See the module docs.
///
/// Thread-safe: no (`Send`, owned by the worker). Realtime-safe: yes after
/// construction (all buffers sized in [`JitterBuffer::new`]).
pub struct JitterBuffer {
    config: JitterConfig,
    slots: Box<[Slot]>,
    /// Plain blocks: `capacity × block_frames × channels`.
    data: Box<[f32]>,
    /// JELLIE halves (mono): `capacity × ceil(block/2)` and `capacity × floor(block/2)`.
    even: Box<[f32]>,
    odd: Box<[f32]>,
    block_len: usize,
    block_ns: f64,
    /// Next `first_sample` to play (None until the first block arrives).
    cursor: Option<u64>,
    highest: Option<u64>,
    playing: bool,
    /// Windowed minimum of transit (ns): current and previous window.
    base_cur: i64,
    base_prev: i64,
    base_window_start: u64,
    hist: Box<[f64; BUCKETS]>,
    hist_total: f64,
    hist_last_ns: u64,
    last_transit: Option<i64>,
    manual_delay_ns: Option<u64>,
    target_ns: u64,
    over_since: Option<u64>,
    last_skip_ns: u64,
    out_of_range_run: u32,
    last_played: Option<u64>,
    /// Render-on-arrival playout (see [`JitterBuffer::set_direct`]).
    direct: bool,
    stats: JitterStats,
}

impl JitterBuffer {
    /// A buffer for `config` (sizes clamped to at least one block, capacity to a power of two).
    pub fn new(mut config: JitterConfig) -> Self {
        config.channels = config.channels.max(1);
        config.block_frames = config.block_frames.max(2);
        config.sample_rate = config.sample_rate.max(1);
        config.capacity_blocks = config.capacity_blocks.clamp(4, 4096).next_power_of_two();
        let block_len = config.block_frames * config.channels;
        let cap = config.capacity_blocks;
        JitterBuffer {
            slots: vec![EMPTY; cap].into_boxed_slice(),
            data: vec![0.0; cap * block_len].into_boxed_slice(),
            even: vec![0.0; cap * config.block_frames.div_ceil(2)].into_boxed_slice(),
            odd: vec![0.0; cap * (config.block_frames / 2)].into_boxed_slice(),
            block_len,
            block_ns: config.block_frames as f64 * 1e9 / config.sample_rate as f64,
            cursor: None,
            highest: None,
            playing: false,
            base_cur: i64::MAX,
            base_prev: i64::MAX,
            base_window_start: 0,
            hist: Box::new([0.0; BUCKETS]),
            hist_total: 0.0,
            hist_last_ns: 0,
            last_transit: None,
            manual_delay_ns: None,
            target_ns: config.min_delay_ns,
            over_since: None,
            last_skip_ns: 0,
            out_of_range_run: 0,
            last_played: None,
            direct: false,
            stats: JitterStats::default(),
            config,
        }
    }

    /// The configuration.
    pub fn config(&self) -> &JitterConfig {
        &self.config
    }

    /// Statistics so far.
    pub fn stats(&self) -> JitterStats {
        JitterStats {
            target_delay_ns: self.target_ns,
            ..self.stats
        }
    }

    /// Pin the target delay (ns above the fastest path), or `None` to adapt again.
    pub fn set_manual_delay(&mut self, delay_ns: Option<u64>) {
        self.manual_delay_ns = delay_ns;
        if let Some(d) = delay_ns {
            self.target_ns = d;
        }
    }

    /// Render-on-arrival playout (the low-latency mode): the caller pulls
    /// a block as soon as it is [`ready`](Self::cursor_ready), or once its
    /// playout delay reaches the target (then it is concealed); a pull
    /// never holds and never skips, and the target is only how long a
    /// missing block is waited for. The delay the audio then has is the
    /// output ring's, which the caller controls.
    pub fn set_direct(&mut self, direct: bool) {
        self.direct = direct;
    }

    /// The block at the cursor is here and whole (a plain block, or both
    /// JELLIE halves): a pull now plays it without concealment.
    pub fn cursor_ready(&self) -> bool {
        let Some(cursor) = self.cursor else {
            return false;
        };
        let slot = self.slots[self.slot_index(cursor)];
        slot.first_sample == cursor && (slot.plain || (slot.even.is_some() && slot.odd.is_some()))
    }

    /// Local time at which the cursor block's playout delay reaches the
    /// target (ns; `None` before anything arrived): when a missing block
    /// stops being waited for.
    pub fn cursor_deadline_ns(&self) -> Option<u64> {
        let cursor = self.cursor?;
        let t = self.sample_ns(cursor) + self.base() as f64 + self.target_ns as f64;
        Some(t.max(0.0) as u64)
    }

    /// `first_sample` of the block the last [`JitterBuffer::pull`] played
    /// (`None` before playout starts; unchanged by held blocks).
    pub fn last_played(&self) -> Option<u64> {
        self.last_played
    }

    /// Playout delay (ns above the fastest path) the next block would have if
    /// pulled at `now`; `None` before anything arrived. Drift control steers
    /// this towards [`JitterBuffer::setpoint_ns`].
    pub fn playout_delay_ns(&self, now: u64) -> Option<f64> {
        let cursor = self.cursor?;
        Some(now as f64 - self.sample_ns(cursor) - self.base() as f64)
    }

    /// Duration of one block, ns.
    pub fn block_ns(&self) -> f64 {
        self.block_ns
    }

    /// The middle of the band in which playout neither holds nor skips, ns.
    pub fn setpoint_ns(&self) -> f64 {
        self.target_ns as f64 + 0.75 * self.block_ns
    }

    /// How far above [`JitterBuffer::setpoint_ns`] the playout delay may
    /// float before it is removed (by a skip here, by resampling in the
    /// drift stage), ns: three quarters of a block, or a quarter of the
    /// target (at most 8 ms) when that is more.
    ///
    /// Excess delay costs latency only, while removing it costs a splice or
    /// resampling. Most of it is the fastest path still being learnt: the
    /// first arrivals of a sender handing over 10 ms host buffers, or of a
    /// jittery path, are rarely the fastest, so the windowed minimum drops
    /// by a few ms in the first seconds and the delay above it rises by as
    /// much. Removing that made a stream between two hosts on one clock
    /// no longer sample-exact; tolerating it costs at most 25 % latency.
    pub fn excess_band_ns(&self) -> f64 {
        (0.25 * self.target_ns as f64)
            .min(8e6)
            .max(0.75 * self.block_ns)
    }

    /// Current target delay, ns.
    pub fn target_delay_ns(&self) -> u64 {
        self.target_ns
    }

    /// The relative-delay quantile the adaptation currently picks, ns.
    pub fn adaptive_target_ns(&self) -> u64 {
        if self.hist_total <= 0.0 {
            return self.config.min_delay_ns;
        }
        let allowed = self.config.target_late_rate * self.hist_total;
        let mut above = 0.0;
        // Walk down from the top: the smallest delay with at most `allowed` mass above it.
        for b in (0..BUCKETS).rev() {
            if above + self.hist[b] > allowed {
                let t = (b as u64 + 1) * BUCKET_NS;
                return t.clamp(self.config.min_delay_ns, self.config.max_delay_ns);
            }
            above += self.hist[b];
        }
        self.config.min_delay_ns
    }

    fn sample_ns(&self, sample: u64) -> f64 {
        sample as f64 * 1e9 / self.config.sample_rate as f64
    }

    fn base(&self) -> i64 {
        self.base_cur.min(self.base_prev)
    }

    fn slot_index(&self, first_sample: u64) -> usize {
        ((first_sample / self.config.block_frames as u64) as usize) & (self.slots.len() - 1)
    }

    fn reset(&mut self, first_sample: u64) {
        self.slots.fill(EMPTY);
        self.cursor = Some(first_sample);
        self.highest = None;
        self.playing = false;
        self.last_transit = None;
        self.over_since = None;
    }

    /// Check range and alignment and note timing; `Some(slot)` if the block belongs in the buffer.
    fn admit(&mut self, now: u64, first_sample: u64) -> Result<usize, InsertOutcome> {
        let bf = self.config.block_frames as u64;
        let cursor = match self.cursor {
            None => {
                self.reset(first_sample);
                first_sample
            }
            Some(c) => c,
        };
        if first_sample % bf != cursor % bf {
            self.stats.rejected += 1;
            return Err(InsertOutcome::Rejected);
        }
        let window = bf * self.slots.len() as u64;
        let ahead_limit = cursor.saturating_add(window);
        let far_behind = first_sample.saturating_add(window) < cursor;
        if first_sample >= ahead_limit || far_behind {
            // A run of out-of-range blocks means the sender restarted: follow it.
            self.out_of_range_run += 1;
            if self.out_of_range_run >= 8 {
                self.stats.resyncs += 1;
                self.out_of_range_run = 0;
                self.reset(first_sample);
                return self.admit(now, first_sample);
            }
            self.stats.rejected += 1;
            return Err(InsertOutcome::Rejected);
        }
        self.out_of_range_run = 0;
        // Timing: transit against the sender's sample clock.
        let transit = now as i64 - self.sample_ns(first_sample) as i64;
        if now >= self.base_window_start + BASE_WINDOW_NS {
            self.base_prev = self.base_cur;
            self.base_cur = i64::MAX;
            self.base_window_start = now;
        }
        self.base_cur = self.base_cur.min(transit);
        let rel = transit.saturating_sub(self.base()).max(0) as u64;
        // Forget by elapsed time, not per arrival: the 0.1 % quantile needs a
        // few thousand arrivals to settle, and a per-arrival factor forgot
        // in 0.7 s at 64-frame blocks, so the target shrank between two rare
        // late host buffers and grew back with a held block each time.
        let forget = (-(now.saturating_sub(self.hist_last_ns) as f64) / HIST_MEMORY_NS).exp();
        self.hist_last_ns = now;
        if forget < 1.0 {
            for h in self.hist.iter_mut() {
                *h *= forget;
            }
        }
        self.hist_total = self.hist_total * forget + 1.0;
        self.hist[((rel / BUCKET_NS) as usize).min(BUCKETS - 1)] += 1.0;
        match self.highest {
            Some(h) if first_sample < h => self.stats.reordered += 1,
            Some(h) if first_sample == h => {}
            _ => {
                if let Some(last) = self.last_transit {
                    let d = (transit - last).unsigned_abs() as f64;
                    self.stats.jitter_ns += (d - self.stats.jitter_ns) / 16.0;
                }
                self.last_transit = Some(transit);
                self.highest = Some(first_sample);
            }
        }
        if first_sample < cursor {
            self.stats.late += 1;
            return Err(InsertOutcome::Late);
        }
        let idx = self.slot_index(first_sample);
        if self.slots[idx].first_sample != first_sample {
            self.slots[idx] = Slot {
                first_sample,
                ..EMPTY
            };
        }
        Ok(idx)
    }

    /// A plain block (`frames × channels` interleaved samples) starting at `first_sample` arrived at `now`.
    pub fn insert(&mut self, now: u64, first_sample: u64, samples: &[f32]) -> InsertOutcome {
        if samples.len() != self.block_len {
            self.stats.rejected += 1;
            return InsertOutcome::Rejected;
        }
        let idx = match self.admit(now, first_sample) {
            Ok(i) => i,
            Err(o) => return o,
        };
        if self.slots[idx].plain {
            self.stats.duplicated += 1;
            return InsertOutcome::Duplicate;
        }
        self.data[idx * self.block_len..(idx + 1) * self.block_len].copy_from_slice(samples);
        self.slots[idx].plain = true;
        self.stats.received += 1;
        InsertOutcome::Stored
    }

    /// A JELLIE sub-block (mono stream) arrived: `samples` are the even (A/C)
    /// or odd (B/D) samples of the block at `first_sample`.
    pub fn insert_jellie(
        &mut self,
        now: u64,
        first_sample: u64,
        sub: SubStream,
        samples: &[f32],
    ) -> InsertOutcome {
        if self.config.channels != 1 || samples.len() != sub.len_for(self.config.block_frames) {
            self.stats.rejected += 1;
            return InsertOutcome::Rejected;
        }
        let idx = match self.admit(now, first_sample) {
            Ok(i) => i,
            Err(o) => return o,
        };
        let slot = &mut self.slots[idx];
        let (have, buf, half) = if sub.is_odd() {
            (&mut slot.odd, &mut self.odd, self.config.block_frames / 2)
        } else {
            (
                &mut slot.even,
                &mut self.even,
                self.config.block_frames.div_ceil(2),
            )
        };
        if have.is_some() {
            self.stats.duplicated += 1;
            return InsertOutcome::Duplicate;
        }
        buf[idx * half..(idx + 1) * half].copy_from_slice(samples);
        *have = Some(sub);
        self.stats.received += 1;
        InsertOutcome::Stored
    }

    /// Play one block at `now` into `out` (`block_frames × channels` samples).
    pub fn pull(
        &mut self,
        now: u64,
        out: &mut [f32],
        concealer: &mut dyn Concealer,
    ) -> BlockSource {
        let Some(cursor) = self.cursor else {
            out.fill(0.0);
            return BlockSource::Idle;
        };
        if out.len() != self.block_len {
            out.fill(0.0);
            return BlockSource::Idle;
        }
        self.target_ns = match self.manual_delay_ns {
            Some(manual) => manual,
            None => {
                // Hysteresis with headroom: the tail quantile of a few
                // thousand arrivals still wobbles (bursty senders spread the
                // relative delays over a whole host buffer, and a busy host
                // hands one over late now and then), and every growth is a
                // held block. Grow only when the quantile passes the
                // target, then above it by a quarter of the quantile (the
                // tail's uncertainty scales with its spread; at least a
                // quarter block or 0.5 ms, whichever is less); shrink only
                // when it sits more than two blocks below.
                let q = self.adaptive_target_ns() as f64;
                let t = self.target_ns as f64;
                let headroom = (0.25 * self.block_ns).min(500_000.0).max(0.25 * q);
                if !self.playing || q > t || q + 2.0 * self.block_ns < t {
                    ((q + headroom) as u64).min(self.config.max_delay_ns)
                } else {
                    self.target_ns
                }
            }
        };
        // Playout delay of the cursor block if played now, relative to the fastest path.
        let mut delay = now as f64 - self.sample_ns(cursor) - self.base() as f64;
        // Render-on-arrival: the caller decided this block's time has come.
        let target = if self.direct {
            f64::NEG_INFINITY
        } else {
            self.target_ns as f64
        };
        let mut cursor = cursor;
        if !self.playing {
            if delay < target {
                out.fill(0.0);
                return BlockSource::Idle;
            }
            self.playing = true;
            // Start at the target, not wherever the first pull found us: a
            // consumer that came late (a slow first tick, a burst of queued
            // datagrams) would otherwise start blocks above it and spend
            // many seconds skipping or resampling the excess away. Nothing
            // has been heard yet, so moving the start is inaudible.
            let excess = ((delay - target) / self.block_ns).floor();
            if excess >= 1.0 && !self.direct {
                let n = (excess as u64).min(self.slots.len() as u64);
                for _ in 0..n {
                    let idx = self.slot_index(cursor);
                    self.slots[idx] = EMPTY;
                    cursor = cursor.saturating_add(self.config.block_frames as u64);
                }
                self.cursor = Some(cursor);
                delay -= n as f64 * self.block_ns;
                self.stats.start_trimmed_blocks += n;
            }
        } else if delay < target {
            self.over_since = None;
            self.stats.holds += 1;
            concealer.conceal(out);
            return BlockSource::Held;
        }
        if delay > self.setpoint_ns() + self.excess_band_ns() && !self.direct {
            let since = *self.over_since.get_or_insert(now);
            if now - since >= self.config.shrink_interval_ns
                && now.saturating_sub(self.last_skip_ns) >= self.config.shrink_interval_ns
            {
                // Drop the cursor block (counted as a skip, not as loss).
                let idx = self.slot_index(cursor);
                self.slots[idx] = EMPTY;
                cursor = cursor.saturating_add(self.config.block_frames as u64);
                self.stats.skips += 1;
                self.last_skip_ns = now;
                self.over_since = None;
            }
        } else {
            self.over_since = None;
        }
        let idx = self.slot_index(cursor);
        let slot = self.slots[idx];
        self.slots[idx] = EMPTY;
        self.last_played = Some(cursor);
        self.cursor = Some(cursor.saturating_add(self.config.block_frames as u64));
        let source = if slot.first_sample != cursor {
            BlockSource::Concealed
        } else if slot.plain {
            out.copy_from_slice(&self.data[idx * self.block_len..(idx + 1) * self.block_len]);
            BlockSource::Received
        } else {
            let he = self.config.block_frames.div_ceil(2);
            let ho = self.config.block_frames / 2;
            let even = slot.even.map(|_| &self.even[idx * he..(idx + 1) * he]);
            let odd = slot.odd.map(|_| &self.odd[idx * ho..(idx + 1) * ho]);
            match jellie::merge(even, odd, None, None, out) {
                MergeOutcome::Exact => {
                    if slot.even == Some(SubStream::A) && slot.odd == Some(SubStream::B) {
                        BlockSource::Received
                    } else {
                        BlockSource::Rebuilt
                    }
                }
                MergeOutcome::InterpolatedOdd | MergeOutcome::InterpolatedEven => {
                    BlockSource::Interpolated
                }
                MergeOutcome::NeedConcealment => BlockSource::Concealed,
            }
        };
        match source {
            BlockSource::Concealed => {
                self.stats.concealed += 1;
                self.stats.lost += 1;
                concealer.conceal(out);
            }
            _ => {
                match source {
                    BlockSource::Received => self.stats.played_received += 1,
                    BlockSource::Rebuilt => self.stats.rebuilt += 1,
                    _ => self.stats.interpolated += 1,
                }
                concealer.on_received(out);
            }
        }
        source
    }
}

#[cfg(test)]
mod tests;
