//! The session transport: state, commands, deterministic ordering, and
//! sample-accurate scheduling (DESIGN.md "Transport").
//!
//! * [`TransportCommand`]: the `transport` message of PROTOCOL.md 3.4 as a
//!   plain `Copy` value (so it can cross an `rtrb` ring to the audio thread).
//! * [`TransportQueue`] (worker): holds commands until they are due and
//!   resolves concurrent ones deterministically.
//! * [`scheduler::BlockScheduler`] (audio thread): fires scheduled commands on
//!   their exact sample inside a block and reports where each one landed.
//! * [`TransportState`]: play/record flags, tempo, time signature, position in
//!   ms and quarter notes, bar/beat.
//! * [`live`]: issuing, de-duplicating, scheduling and applying commands
//!   in a headless live peer (`toaster peer --transport-every-s`).
//! * [`midi_clock`]: MIDI Clock, Song Position Pointer, Start/Stop/Continue and
//!   MTC quarter frames, generated per block with sample offsets.
//!
//! # Ordering of concurrent commands
//!
//! Time is cut into slots of `conflict_window_ns` (default 50 ms, the lead: no
//! peer can have seen another's command before sending its own inside one
//! slot). Inside a slot, the commands of one sender win: the sender of the
//! command that sorts first by **(from the master first, then timestamp,
//! then `seq`, then peer id)**. All of that sender's commands in the slot are
//! applied in (timestamp, seq) order; the others are dropped and counted.
//! Slots are equivalence classes, so the result does not depend on the order
//! in which commands arrive — every peer that received the same commands
//! reaches the same state. Commands in different slots apply in timestamp order.

pub mod live;
pub mod midi_clock;
pub mod scheduler;

pub use midi_clock::{MidiClockGenerator, MidiOut, MtcRate};
pub use scheduler::{BlockScheduler, Landing, ScheduledEvent};

use crate::clock::PeerId;

/// Default lead between issuing a command and its effect, ns (50 ms).
pub const DEFAULT_LEAD_NS: u64 = 50_000_000;

/// What a transport command does.
///
/// Thread-safe: yes. Realtime-safe: yes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum TransportCommandKind {
    /// Start playing at `position`.
    Play,
    /// Stop (position as given).
    Stop,
    /// Pause at `position`.
    Pause,
    /// Play and record.
    Record,
    /// Jump to `position` (keeps playing or stopped).
    Seek,
    /// Change tempo and/or time signature.
    Tempo,
}

impl TransportCommandKind {
    /// The wire name (`PLAY`, …).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Play => "PLAY",
            Self::Stop => "STOP",
            Self::Pause => "PAUSE",
            Self::Record => "RECORD",
            Self::Seek => "SEEK",
            Self::Tempo => "TEMPO",
        }
    }

    /// Parses a wire name.
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "PLAY" => Self::Play,
            "STOP" => Self::Stop,
            "PAUSE" => Self::Pause,
            "RECORD" => Self::Record,
            "SEEK" => Self::Seek,
            "TEMPO" => Self::Tempo,
            _ => return None,
        })
    }
}

/// A time signature (numerator 1–64, denominator 1, 2, 4, 8, 16 or 32).
///
/// Thread-safe: yes. Realtime-safe: yes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct TimeSignature {
    /// Beats per bar.
    pub numerator: u8,
    /// Beat unit.
    pub denominator: u8,
}

impl TimeSignature {
    /// 4/4.
    pub const COMMON: Self = Self {
        numerator: 4,
        denominator: 4,
    };

    /// Checked constructor (PROTOCOL.md ranges).
    pub fn new(numerator: u8, denominator: u8) -> Result<Self, TransportError> {
        if !(1..=64).contains(&numerator) || ![1, 2, 4, 8, 16, 32].contains(&denominator) {
            return Err(TransportError::TimeSignature(numerator, denominator));
        }
        Ok(Self {
            numerator,
            denominator,
        })
    }

    /// Quarter notes per bar.
    pub fn quarters_per_bar(self) -> f64 {
        self.numerator as f64 * 4.0 / self.denominator as f64
    }
}

/// Invalid transport values.
///
/// Thread-safe: yes. Realtime-safe: yes.
#[derive(Debug, Clone, Copy, PartialEq, thiserror::Error)]
pub enum TransportError {
    /// Time signature out of range.
    #[error("time signature {0}/{1} out of range")]
    TimeSignature(u8, u8),
    /// BPM outside 1–999.
    #[error("bpm {0} outside 1–999")]
    Bpm(f64),
    /// Negative or non-finite position.
    #[error("position {0} ms is negative or not finite")]
    Position(f64),
    /// The queue is full.
    #[error("transport queue full")]
    QueueFull,
    /// Dropped: a concurrent command of another sender won its slot.
    #[error("lost a concurrent-command conflict")]
    LostConflict,
    /// Already due before it arrived (beyond the late tolerance).
    #[error("command arrived too late")]
    TooLate,
}

/// One transport command (PROTOCOL.md 3.4) plus its sender.
///
/// Thread-safe: yes (plain `Copy` value). Realtime-safe: yes.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct TransportCommand {
    /// What it does.
    pub kind: TransportCommandKind,
    /// Session time of effect, ns.
    pub timestamp: u64,
    /// Musical position at that instant, ms (≥ 0).
    pub position_ms: f64,
    /// Tempo, 1–999.
    pub bpm: f64,
    /// Time signature.
    pub time_signature: TimeSignature,
    /// Quarter notes since zero at that instant (else derived from position and bpm).
    pub beat: Option<f64>,
    /// Sender's transport-change counter.
    pub seq: u64,
    /// The master when it was sent.
    pub master_peer: PeerId,
    /// The sender (frame `source`).
    pub from: PeerId,
}

impl TransportCommand {
    /// Checks the PROTOCOL.md ranges.
    pub fn validate(&self) -> Result<(), TransportError> {
        if !(1.0..=999.0).contains(&self.bpm) {
            return Err(TransportError::Bpm(self.bpm));
        }
        if !(self.position_ms.is_finite() && self.position_ms >= 0.0) {
            return Err(TransportError::Position(self.position_ms));
        }
        if let Some(b) = self.beat {
            if !(b.is_finite() && b >= 0.0) {
                return Err(TransportError::Position(b));
            }
        }
        TimeSignature::new(
            self.time_signature.numerator,
            self.time_signature.denominator,
        )?;
        Ok(())
    }

    /// The conflict order key: master first, then timestamp, seq, peer id.
    pub fn order_key(&self) -> (bool, u64, u64, PeerId) {
        (
            self.from != self.master_peer,
            self.timestamp,
            self.seq,
            self.from,
        )
    }

    /// Quarter notes at the command's instant.
    pub fn beat_at_effect(&self) -> f64 {
        self.beat.unwrap_or(self.position_ms * self.bpm / 60_000.0)
    }
}

/// Worker-side queue of commands waiting for their time, with deterministic
/// conflict resolution (see the module docs).
///
/// Thread-safe: no (worker). Realtime-safe: yes (fixed capacity, no allocation
/// after construction) but meant for the worker.
#[derive(Debug, Clone)]
pub struct TransportQueue {
    pending: Vec<TransportCommand>,
    capacity: usize,
    conflict_window_ns: u64,
    dropped: u64,
}

impl TransportQueue {
    /// A queue holding up to `capacity` commands, conflict slots of `conflict_window_ns`.
    pub fn new(capacity: usize, conflict_window_ns: u64) -> Self {
        Self {
            pending: Vec::with_capacity(capacity),
            capacity,
            conflict_window_ns: conflict_window_ns.max(1),
            dropped: 0,
        }
    }

    fn slot(&self, t: u64) -> u64 {
        t / self.conflict_window_ns
    }

    /// Commands dropped by conflicts so far.
    pub fn dropped(&self) -> u64 {
        self.dropped
    }

    /// Pending commands (sorted by application order).
    pub fn pending(&self) -> &[TransportCommand] {
        &self.pending
    }

    /// Adds a command received (or issued) at session time `now`.
    pub fn push(&mut self, cmd: TransportCommand) -> Result<(), TransportError> {
        cmd.validate()?;
        let slot = self.slot(cmd.timestamp);
        // The current winner of this slot: the sender of the smallest key.
        let winner = self
            .pending
            .iter()
            .filter(|c| self.slot(c.timestamp) == slot)
            .map(|c| c.order_key())
            .min();
        if let Some(w) = winner {
            if w.3 != cmd.from {
                if w < cmd.order_key() {
                    self.dropped += 1;
                    return Err(TransportError::LostConflict);
                }
                // The new command's sender takes the slot: drop the others' commands.
                let before = self.pending.len();
                let from = cmd.from;
                let window = self.conflict_window_ns;
                self.pending
                    .retain(|c| c.timestamp / window != slot || c.from == from);
                self.dropped += (before - self.pending.len()) as u64;
            }
        }
        if self.pending.len() >= self.capacity {
            return Err(TransportError::QueueFull);
        }
        let key = (cmd.timestamp, cmd.seq, cmd.from);
        let at = self
            .pending
            .iter()
            .position(|c| (c.timestamp, c.seq, c.from) > key)
            .unwrap_or(self.pending.len());
        self.pending.insert(at, cmd);
        Ok(())
    }

    /// Removes and returns the next command with `timestamp ≤ until`
    /// (call with `session_now + horizon` to hand commands to the audio
    /// thread a little ahead of time).
    pub fn pop_due(&mut self, until: u64) -> Option<TransportCommand> {
        if self.pending.first().is_some_and(|c| c.timestamp <= until) {
            Some(self.pending.remove(0))
        } else {
            None
        }
    }
}

/// A position as bars and beats (1-based), in the current time signature.
///
/// Thread-safe: yes. Realtime-safe: yes.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct BarBeat {
    /// Bar, from 1.
    pub bar: u64,
    /// Beat in the bar (in units of the signature's denominator), from 1.
    pub beat: u32,
    /// Fraction of that beat, 0–1.
    pub fraction: f64,
}

/// The transport as a peer plays it.
///
/// Thread-safe: no (one owner; plain data, `Copy`). Realtime-safe: yes (every
/// method is O(1), no allocation).
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct TransportState {
    /// Rolling.
    pub playing: bool,
    /// Recording (implies playing).
    pub recording: bool,
    /// Tempo.
    pub bpm: f64,
    /// Time signature.
    pub time_signature: TimeSignature,
    /// Position, ms.
    pub position_ms: f64,
    /// Position, quarter notes.
    pub beat: f64,
    /// Where the current time signature took effect (quarter notes, bar index from 0).
    pub signature_origin: (f64, u64),
    /// Commands applied.
    pub applied: u64,
}

impl Default for TransportState {
    fn default() -> Self {
        Self {
            playing: false,
            recording: false,
            bpm: 120.0,
            time_signature: TimeSignature::COMMON,
            position_ms: 0.0,
            beat: 0.0,
            signature_origin: (0.0, 0),
            applied: 0,
        }
    }
}

impl TransportState {
    /// Applies a command at its instant. The command carries the whole
    /// musical state (position, tempo, signature), so every peer ends up with
    /// identical values regardless of its history.
    pub fn apply(&mut self, cmd: &TransportCommand) {
        let beat = cmd.beat_at_effect();
        if cmd.time_signature != self.time_signature {
            // Bars restart counting at the bar the change falls in.
            let bar_now = self.bar_beat_at(beat).bar.saturating_sub(1);
            self.signature_origin = (beat, bar_now);
        } else if beat < self.signature_origin.0 {
            self.signature_origin = (0.0, 0);
        }
        self.position_ms = cmd.position_ms;
        self.beat = beat;
        self.bpm = cmd.bpm;
        self.time_signature = cmd.time_signature;
        match cmd.kind {
            TransportCommandKind::Play => {
                self.playing = true;
                self.recording = false;
            }
            TransportCommandKind::Record => {
                self.playing = true;
                self.recording = true;
            }
            TransportCommandKind::Stop | TransportCommandKind::Pause => {
                self.playing = false;
                self.recording = false;
            }
            TransportCommandKind::Seek | TransportCommandKind::Tempo => {}
        }
        self.applied += 1;
    }

    /// Advances by `frames` at `sample_rate` (no-op when stopped).
    pub fn advance(&mut self, frames: u32, sample_rate: f64) {
        if self.playing && sample_rate > 0.0 {
            let secs = frames as f64 / sample_rate;
            self.position_ms += secs * 1000.0;
            self.beat += secs * self.bpm / 60.0;
        }
    }

    /// Bars/beats at quarter-note position `beat`.
    pub fn bar_beat_at(&self, beat: f64) -> BarBeat {
        let (origin_beat, origin_bar) = self.signature_origin;
        let qpb = self.time_signature.quarters_per_bar();
        // A hair of tolerance: positions accumulated block by block land a
        // few ulps short of exact bar lines.
        let rel = (beat - origin_beat + 1e-9).max(0.0);
        let bars = (rel / qpb).floor();
        let in_bar_quarters = rel - bars * qpb;
        let unit = 4.0 / self.time_signature.denominator as f64;
        let beats = in_bar_quarters / unit;
        BarBeat {
            bar: origin_bar + bars as u64 + 1,
            beat: beats.floor() as u32 + 1,
            fraction: beats - beats.floor(),
        }
    }

    /// Bars/beats now.
    pub fn bar_beat(&self) -> BarBeat {
        self.bar_beat_at(self.beat)
    }
}

#[cfg(test)]
mod tests;

impl From<crate::protocol::messages::TransportCommand> for TransportCommandKind {
    fn from(c: crate::protocol::messages::TransportCommand) -> Self {
        use crate::protocol::messages::TransportCommand as W;
        match c {
            W::Play => Self::Play,
            W::Stop => Self::Stop,
            W::Pause => Self::Pause,
            W::Record => Self::Record,
            W::Seek => Self::Seek,
            W::Tempo => Self::Tempo,
        }
    }
}

impl From<TransportCommandKind> for crate::protocol::messages::TransportCommand {
    fn from(c: TransportCommandKind) -> Self {
        use crate::protocol::messages::TransportCommand as W;
        match c {
            TransportCommandKind::Play => W::Play,
            TransportCommandKind::Stop => W::Stop,
            TransportCommandKind::Pause => W::Pause,
            TransportCommandKind::Record => W::Record,
            TransportCommandKind::Seek => W::Seek,
            TransportCommandKind::Tempo => W::Tempo,
        }
    }
}

impl TransportCommand {
    /// From a parsed `transport` message and the frame's `source`.
    pub fn from_wire(m: &crate::protocol::messages::Transport, from: PeerId) -> Self {
        Self {
            kind: m.command.into(),
            timestamp: m.timestamp,
            position_ms: m.position,
            bpm: m.bpm,
            time_signature: TimeSignature {
                numerator: m.time_signature.numerator,
                denominator: m.time_signature.denominator,
            },
            beat: m.beat,
            seq: m.seq.unwrap_or(0),
            master_peer: m.master_peer.0,
            from,
        }
    }

    /// The wire message.
    pub fn to_wire(&self) -> crate::protocol::messages::Transport {
        use crate::protocol::messages as w;
        w::Transport {
            command: self.kind.into(),
            timestamp: self.timestamp,
            position: self.position_ms,
            bpm: self.bpm,
            time_signature: w::TimeSignature {
                numerator: self.time_signature.numerator,
                denominator: self.time_signature.denominator,
            },
            master_peer: w::PeerId(self.master_peer),
            beat: self.beat,
            seq: Some(self.seq),
        }
    }
}
