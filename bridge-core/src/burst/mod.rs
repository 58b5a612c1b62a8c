//! MIDI bursts with a recovery journal, and exactly-once delivery.
//!
//! # Sending
//! [`BurstSender`] gives every MIDI event a burst id (a per-sender counter
//! starting at a random value) and transmits it `k` times (1–8), the copies
//! spread over at most [`BurstConfig::spread_ns`] (≤ 1 ms) at stratified
//! random offsets, so that copies do not sit next to each other in a loss
//! burst.
//!
//! # Recovery journal
//! Plain bursts top out at `1 − p^k`: at 66 % loss and k = 8 that is 96.4 %.
//! So, as RTP-MIDI's recovery journal (RFC 6295) and Network MIDI 2.0's FEC
//! do, every frame the sender builds carries, after the copy that is due, the
//! most recent events that are still inside the *journal horizon*
//! ([`BurstConfig::journal_horizon_ns`], default 8 ms), newest first; and while
//! any event is inside the horizon and no frame went out for
//! [`BurstConfig::journal_interval_ns`] (default 0.5 ms) the sender emits a
//! journal-only frame. One surviving frame therefore repairs every lost copy
//! of every recent event.
//!
//! *How the journal forgets.* RTP-MIDI trims its journal on receiver
//! feedback (RTCP checkpoints). TOAST v2 has no acknowledgement message, and
//! we do not invent one: the sender ages events out by time. That matches what
//! the journal is for: an event repaired after its latency budget (10 ms) is
//! too late to play on time anyway, so the horizon is the latency budget
//! minus the path's expected one-way delay. It also caps the cost: an event
//! is carried by at most `k + horizon / interval` frames (about 22 at the
//! defaults), and all live events share those frames.
//!
//! Journal lines are ordinary COMPACT_JSONL jmid lines with the event's
//! original `ts`, `b` and `k`; their `i` is the index of the last copy sent
//! (so `i < k` always holds). A frame whose every line is a repeat sets the
//! REDUNDANT flag ([`BurstFrame::redundant`]).
//!
//! # Adapting k
//! [`BurstSender::set_loss_estimate`] sets `k` to the smallest value with
//! `p^k ≤` [`BurstConfig::target_residual`], clamped to
//! [`BurstConfig::min_burst`]`..=`[`BurstConfig::max_burst`]. The estimate
//! comes from the session layer, which measures loss on the frames it
//! receives from the same peer (sequence gaps): TOAST v2 has no receiver
//! report, so the path is assumed symmetric.
//!
//! # Receiving
//! [`BurstReceiver`] delivers each `(source, burst_id)` once, with its
//! original timestamp, and ignores every further copy. It remembers ids in a
//! fixed-capacity table for [`DedupConfig::forget_after_ns`] (default 2 s,
//! far beyond horizon plus any plausible delay); when the table is full the
//! oldest id is forgotten early and counted.
//!
//! Everything here is allocation-free after construction.

mod dedup;
pub mod simrun;
pub mod wire;

pub use dedup::{DedupConfig, DedupTable};

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// Largest MIDI message (bytes, a whole SysEx including F0 … F7) one event can hold.
pub const MIDI_BYTES_MAX: usize = 64;
/// Largest burst size `k`.
pub const BURST_MAX: u8 = 8;
/// Most event lines one [`BurstFrame`] can hold (the encoder may fit fewer in an MTU).
pub const FRAME_LINES_MAX: usize = 16;

/// Errors of the burst layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum BurstError {
    /// The MIDI message is empty or longer than [`MIDI_BYTES_MAX`].
    #[error("MIDI message of {0} bytes does not fit (1..={MIDI_BYTES_MAX})")]
    BadLength(usize),
    /// Not a MIDI message: no status byte first, or a status byte inside.
    #[error("not a MIDI message")]
    NotMidi,
    /// Every journal slot holds an event that still has copies to send.
    #[error("burst journal full: too many events inside the burst window")]
    Full,
}

/// The bytes of one MIDI message, inline (no allocation).
///
/// Thread-safe: yes (plain value). Realtime-safe: yes.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct MidiBytes {
    len: u8,
    data: [u8; MIDI_BYTES_MAX],
}

impl MidiBytes {
    /// Copies `bytes` (1..=[`MIDI_BYTES_MAX`] long).
    pub fn new(bytes: &[u8]) -> Result<Self, BurstError> {
        if bytes.is_empty() || bytes.len() > MIDI_BYTES_MAX {
            return Err(BurstError::BadLength(bytes.len()));
        }
        let mut data = [0u8; MIDI_BYTES_MAX];
        data[..bytes.len()].copy_from_slice(bytes);
        Ok(MidiBytes {
            len: bytes.len() as u8,
            data,
        })
    }

    /// The message bytes.
    pub fn as_slice(&self) -> &[u8] {
        &self.data[..self.len as usize]
    }
}

impl std::fmt::Debug for MidiBytes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?}", self.as_slice())
    }
}

/// One logical MIDI event: what it is, when it sounds, and its burst id.
///
/// Thread-safe: yes (plain value). Realtime-safe: yes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MidiEvent {
    /// When the event sounds, ns on the session timeline (`ts` on the wire).
    pub ts: u64,
    /// Raw MIDI message (`m` on the wire).
    pub bytes: MidiBytes,
    /// Unique per sender (`b` on the wire, 16 hex digits).
    pub burst_id: u64,
}

/// One event line of a frame: the event plus its copy index and burst size.
///
/// Thread-safe: yes (plain value). Realtime-safe: yes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BurstLine {
    /// The event.
    pub event: MidiEvent,
    /// `i` on the wire: which copy this is (0-based, `< size`).
    pub index: u8,
    /// `k` on the wire: how many copies the burst has (1–8).
    pub size: u8,
}

/// The event lines of one MIDI frame to send (one COMPACT_JSONL payload).
///
/// Thread-safe: yes (plain value). Realtime-safe: yes (fixed capacity).
#[derive(Debug, Clone)]
pub struct BurstFrame {
    lines: [BurstLine; FRAME_LINES_MAX],
    len: usize,
    /// Every line is a repeat of something sent before: set the REDUNDANT flag.
    pub redundant: bool,
}

impl Default for BurstFrame {
    fn default() -> Self {
        let blank = BurstLine {
            event: MidiEvent {
                ts: 0,
                bytes: MidiBytes {
                    len: 0,
                    data: [0; MIDI_BYTES_MAX],
                },
                burst_id: 0,
            },
            index: 0,
            size: 1,
        };
        BurstFrame {
            lines: [blank; FRAME_LINES_MAX],
            len: 0,
            redundant: false,
        }
    }
}

impl BurstFrame {
    /// Lines in priority order: the copies that were due first, then journal
    /// entries newest first. An encoder that runs out of room drops from the end.
    pub fn lines(&self) -> &[BurstLine] {
        &self.lines[..self.len]
    }

    fn clear(&mut self) {
        self.len = 0;
        self.redundant = true;
    }

    fn push(&mut self, line: BurstLine) -> bool {
        if self.len == FRAME_LINES_MAX {
            return false;
        }
        self.lines[self.len] = line;
        self.len += 1;
        true
    }

    fn contains(&self, burst_id: u64) -> bool {
        self.lines().iter().any(|l| l.event.burst_id == burst_id)
    }
}

/// Sender configuration.
///
/// Thread-safe: yes (plain value). Realtime-safe: yes.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BurstConfig {
    /// Initial burst size `k` (1–8).
    pub burst_size: u8,
    /// Smallest `k` adaptation may choose.
    pub min_burst: u8,
    /// Largest `k` adaptation may choose (≤ 8).
    pub max_burst: u8,
    /// Adaptation aims for `loss^k ≤ target_residual` from the burst alone.
    pub target_residual: f64,
    /// Copies of one event are spread over at most this long, ns (≤ 1 ms).
    pub spread_ns: u64,
    /// Carry recent events in later frames (the recovery journal).
    pub journal: bool,
    /// An event is carried by the journal until this long after it was pushed, ns.
    pub journal_horizon_ns: u64,
    /// While the journal is not empty, a frame goes out at least this often, ns.
    pub journal_interval_ns: u64,
    /// Events the sender can hold at once (copies pending or inside the horizon).
    pub capacity: usize,
    /// Seed for copy offsets and the first burst id.
    pub seed: u64,
}

impl Default for BurstConfig {
    fn default() -> Self {
        BurstConfig {
            burst_size: 4,
            min_burst: 2,
            max_burst: BURST_MAX,
            target_residual: 1e-3,
            spread_ns: 1_000_000,
            journal: true,
            journal_horizon_ns: 8_000_000,
            journal_interval_ns: 500_000,
            capacity: 256,
            seed: 0x6A4D_4944,
        }
    }
}

impl BurstConfig {
    /// Plain bursts: fixed `k`, no journal (the baseline the benches compare against).
    pub fn plain(k: u8) -> Self {
        let k = k.clamp(1, BURST_MAX);
        BurstConfig {
            burst_size: k,
            min_burst: k,
            max_burst: k,
            journal: false,
            ..Default::default()
        }
    }
}

#[derive(Clone, Copy)]
struct Entry {
    event: MidiEvent,
    pushed_at: u64,
    k: u8,
    copies_sent: u8,
    copy_due: [u64; BURST_MAX as usize],
}

/// Counters of a [`BurstSender`].
///
/// Thread-safe: yes (plain value). Realtime-safe: yes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BurstTxStats {
    /// Events pushed.
    pub events: u64,
    /// Frames built.
    pub frames: u64,
    /// Event lines put into frames (copies and journal repeats).
    pub lines: u64,
    /// Events refused because the journal was full.
    pub refused_full: u64,
}

/// Sans-IO MIDI burst sender with a recovery journal. See the module docs.
///
/// Thread-safe: no (`Send`, owned by the worker). Realtime-safe: yes after
/// construction (fixed-capacity ring, no allocation in `push`/`poll`).
pub struct BurstSender {
    config: BurstConfig,
    /// Ring of events, oldest at `head`.
    entries: Box<[Entry]>,
    head: usize,
    len: usize,
    next_id: u64,
    k: u8,
    rng: ChaCha8Rng,
    next_journal_at: u64,
    stats: BurstTxStats,
}

impl BurstSender {
    /// A sender with this configuration (values are clamped to their documented ranges).
    pub fn new(mut config: BurstConfig) -> Self {
        config.max_burst = config.max_burst.clamp(1, BURST_MAX);
        config.min_burst = config.min_burst.clamp(1, config.max_burst);
        config.burst_size = config.burst_size.clamp(config.min_burst, config.max_burst);
        config.spread_ns = config.spread_ns.min(1_000_000);
        config.capacity = config.capacity.max(1);
        config.journal_interval_ns = config.journal_interval_ns.max(50_000);
        let mut rng = ChaCha8Rng::seed_from_u64(config.seed);
        let blank = Entry {
            event: BurstFrame::default().lines[0].event,
            pushed_at: 0,
            k: 0,
            copies_sent: 0,
            copy_due: [0; BURST_MAX as usize],
        };
        // Start ids at a random 48-bit value so restarted senders do not reuse ids.
        let next_id = rng.random::<u64>() >> 16;
        BurstSender {
            entries: vec![blank; config.capacity].into_boxed_slice(),
            head: 0,
            len: 0,
            next_id,
            k: config.burst_size,
            rng,
            next_journal_at: u64::MAX,
            stats: BurstTxStats::default(),
            config,
        }
    }

    /// The configuration in force.
    pub fn config(&self) -> &BurstConfig {
        &self.config
    }

    /// Current burst size `k`.
    pub fn burst_size(&self) -> u8 {
        self.k
    }

    /// Counters so far.
    pub fn stats(&self) -> BurstTxStats {
        self.stats
    }

    /// Feed the measured loss rate (0–1) of the path; `k` follows it.
    pub fn set_loss_estimate(&mut self, loss: f64) {
        self.k = burst_size_for_loss(loss, &self.config);
    }

    fn slot(&self, i: usize) -> usize {
        (self.head + i) % self.entries.len()
    }

    fn entry_done(&self, e: &Entry, now: u64) -> bool {
        e.copies_sent >= e.k
            && (!self.config.journal
                || now >= e.pushed_at.saturating_add(self.config.journal_horizon_ns))
    }

    fn retire(&mut self, now: u64) {
        while self.len > 0 {
            let e = self.entries[self.head];
            if !self.entry_done(&e, now) {
                break;
            }
            self.head = (self.head + 1) % self.entries.len();
            self.len -= 1;
        }
    }

    /// Queue an event that sounds at `ts` (session ns) with MIDI `bytes`; the
    /// first copy is due at once. Returns its burst id.
    pub fn push(&mut self, now: u64, ts: u64, bytes: &[u8]) -> Result<u64, BurstError> {
        let bytes = MidiBytes::new(bytes)?;
        let raw = bytes.as_slice();
        let is_sysex = raw[0] == 0xf0 && raw.len() >= 2 && raw[raw.len() - 1] == 0xf7;
        let data = if is_sysex {
            &raw[1..raw.len() - 1]
        } else {
            &raw[1..]
        };
        if raw[0] < 0x80 || data.iter().any(|b| *b >= 0x80) {
            return Err(BurstError::NotMidi);
        }
        self.retire(now);
        if self.len == self.entries.len() {
            // Oldest may still be inside the journal horizon but with every copy
            // sent: dropping it from the journal is acceptable, dropping pending
            // copies is not.
            let oldest = self.entries[self.head];
            if oldest.copies_sent < oldest.k {
                self.stats.refused_full += 1;
                return Err(BurstError::Full);
            }
            self.head = (self.head + 1) % self.entries.len();
            self.len -= 1;
        }
        let burst_id = self.next_id;
        self.next_id = self.next_id.wrapping_add(1);
        let k = self.k;
        let mut copy_due = [u64::MAX; BURST_MAX as usize];
        copy_due[0] = now;
        // Stratified offsets: copy i lands somewhere in the i-th slice of the spread.
        if k > 1 {
            let slice = self.config.spread_ns / (k as u64 - 1);
            for (i, due) in copy_due.iter_mut().enumerate().take(k as usize).skip(1) {
                let jitter = if slice > 0 {
                    self.rng.random_range(0..slice)
                } else {
                    0
                };
                *due = now + (i as u64 - 1) * slice + jitter;
            }
        }
        let slot = self.slot(self.len);
        self.entries[slot] = Entry {
            event: MidiEvent {
                ts,
                bytes,
                burst_id,
            },
            pushed_at: now,
            k,
            copies_sent: 0,
            copy_due,
        };
        self.len += 1;
        self.stats.events += 1;
        Ok(burst_id)
    }

    /// The earliest time at which [`BurstSender::poll`] has something to send
    /// (`None`: nothing pending). A driver sleeps until then.
    pub fn poll_at(&self) -> Option<u64> {
        let mut at = u64::MAX;
        let mut journal_live = false;
        for i in 0..self.len {
            let e = &self.entries[self.slot(i)];
            if e.copies_sent < e.k {
                at = at.min(e.copy_due[e.copies_sent as usize]);
            }
            // Still inside the horizon when the journal timer fires?
            if self.config.journal
                && e.copies_sent > 0
                && e.pushed_at.saturating_add(self.config.journal_horizon_ns) > self.next_journal_at
            {
                journal_live = true;
            }
        }
        if journal_live {
            at = at.min(self.next_journal_at);
        }
        (at != u64::MAX).then_some(at)
    }

    /// Build the next frame due at `now` into `out`; `false` when nothing is
    /// due. Call until it returns `false`.
    pub fn poll(&mut self, now: u64, out: &mut BurstFrame) -> bool {
        self.retire(now);
        out.clear();
        // 1. Copies that are due, oldest event first, one copy per event per frame.
        for i in 0..self.len {
            let slot = self.slot(i);
            let e = &mut self.entries[slot];
            if e.copies_sent < e.k && e.copy_due[e.copies_sent as usize] <= now {
                let line = BurstLine {
                    event: e.event,
                    index: e.copies_sent,
                    size: e.k,
                };
                if !out.push(line) {
                    break;
                }
                if e.copies_sent == 0 {
                    out.redundant = false;
                }
                e.copies_sent += 1;
            }
        }
        let any_copy = out.len > 0;
        // 2. The journal: live events, newest first.
        let journal_due = self.config.journal && now >= self.next_journal_at;
        if self.config.journal && (any_copy || journal_due) {
            for i in (0..self.len).rev() {
                let e = self.entries[self.slot(i)];
                if e.copies_sent == 0
                    || now >= e.pushed_at.saturating_add(self.config.journal_horizon_ns)
                {
                    continue;
                }
                if out.contains(e.event.burst_id) {
                    continue;
                }
                let line = BurstLine {
                    event: e.event,
                    index: e.copies_sent.min(e.k) - 1,
                    size: e.k,
                };
                if !out.push(line) {
                    break;
                }
            }
        }
        if out.len == 0 {
            if journal_due {
                self.next_journal_at = u64::MAX;
            }
            return false;
        }
        self.next_journal_at = if self.config.journal {
            now + self.config.journal_interval_ns
        } else {
            u64::MAX
        };
        self.stats.frames += 1;
        self.stats.lines += out.len as u64;
        true
    }
}

/// The burst size the adaptation picks for a measured `loss`.
pub fn burst_size_for_loss(loss: f64, config: &BurstConfig) -> u8 {
    let (lo, hi) = (config.min_burst.max(1), config.max_burst.min(BURST_MAX));
    if loss.is_nan() || loss <= 0.0 {
        return lo;
    }
    if loss >= 1.0 {
        return hi;
    }
    let k = (config.target_residual.ln() / loss.ln()).ceil();
    if !k.is_finite() {
        return hi;
    }
    (k.max(lo as f64).min(hi as f64)) as u8
}

/// Counters of a [`BurstReceiver`].
///
/// Thread-safe: yes (plain value). Realtime-safe: yes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BurstRxStats {
    /// Event lines seen (every copy and journal repeat).
    pub lines: u64,
    /// Events delivered (first copy of each id).
    pub delivered: u64,
    /// Copies ignored because their id was already delivered.
    pub duplicates: u64,
    /// Ids forgotten before their time because the table was full.
    pub forgotten_early: u64,
}

/// Sans-IO exactly-once MIDI receiver for every source of a session.
///
/// Thread-safe: no (`Send`, owned by the worker). Realtime-safe: yes after
/// construction (fixed-capacity de-duplication table).
pub struct BurstReceiver {
    table: DedupTable,
    stats: BurstRxStats,
}

impl BurstReceiver {
    /// A receiver remembering ids as `config` says.
    pub fn new(config: DedupConfig) -> Self {
        BurstReceiver {
            table: DedupTable::new(config),
            stats: BurstRxStats::default(),
        }
    }

    /// A line from `source` arrived at `now`: returns the event if it is the
    /// first copy of its `(source, burst_id)`, `None` for every further copy.
    pub fn on_line(&mut self, now: u64, source: u32, line: &BurstLine) -> Option<MidiEvent> {
        self.stats.lines += 1;
        if self.table.insert(now, source, line.event.burst_id) {
            self.stats.delivered += 1;
            Some(line.event)
        } else {
            self.stats.duplicates += 1;
            None
        }
    }

    /// Counters so far.
    pub fn stats(&self) -> BurstRxStats {
        BurstRxStats {
            forgotten_early: self.table.forgotten_early(),
            ..self.stats
        }
    }
}

#[cfg(test)]
mod tests;
