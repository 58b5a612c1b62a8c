//! The audio-side handle: what a plugin's `process()` holds to exchange audio,
//! MIDI and transport snapshots with its network worker.
//!
//! [`link`] builds one connected pair:
//!
//! * [`AudioHandle`] lives on the **audio thread**. Every method is
//!   realtime-safe: it touches only pre-allocated `rtrb` single-producer /
//!   single-consumer rings and atomics. No allocation, no lock, no blocking, no
//!   syscall, no logging. When a ring is full or empty the call returns at once
//!   and the shortfall is counted in [`LinkStats`].
//! * [`WorkerLink`] lives on the **worker thread** (see [`crate::worker`]),
//!   which owns the socket and the session core and is allowed to be late.
//! * [`LinkStats`] (shared through an `Arc`) is read by the editor thread
//!   with [`LinkStats::snapshot`]: atomics only, no locks on the audio side.
//!
//! ## Audio
//! Audio crosses the rings as interleaved `f32` samples, `channels` per frame.
//! The host's buffer size is free (hosts change it at will); the worker cuts
//! the send direction into fixed network blocks of `block_frames` frames and
//! writes the receive direction in whole blocks of `block_frames` (played,
//! JELLIE-rebuilt or concealed audio). The receive ring therefore also *is*
//! the output latency: the worker keeps it filled to about
//! [`LinkConfig::output_target_blocks`] blocks.
//!
//! ## Sample time
//! Both directions count frames: [`AudioHandle::input_frames`] is the index
//! of the next frame the plugin will push, [`AudioHandle::output_frames`] the
//! index of the next frame it will pull. MIDI events carry a `sample_time` on
//! the same counters, so a plugin places an event in its current buffer at
//! `event.sample_time - buffer_start` (see [`MidiEvent::offset_in`]).

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicU8, Ordering};
use std::sync::Arc;

use parking_lot::Mutex;
use rtrb::{Consumer, Producer, RingBuffer};

use crate::worker::clock::{monotonic_ns, Clock};

/// Sizes of one handle/worker link. All memory is allocated by [`link`].
///
/// Thread-safe: yes (plain value). Realtime-safe: yes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct LinkConfig {
    /// Interleaved channels per frame (1–64).
    pub channels: usize,
    /// Frames per network block (e.g. 128 at 48 kHz = 2.67 ms).
    pub block_frames: usize,
    /// Sample rate of the host, Hz.
    pub sample_rate: u32,
    /// Capacity of each audio ring, in blocks.
    pub ring_blocks: usize,
    /// How many blocks of received audio the worker keeps queued for the audio
    /// thread (output latency added by the handle, on top of the jitter buffer).
    pub output_target_blocks: usize,
    /// Capacity of each MIDI ring, in events.
    pub midi_capacity: usize,
    /// Capacity of each transport ring, in snapshots.
    pub transport_capacity: usize,
}

impl Default for LinkConfig {
    fn default() -> Self {
        Self {
            channels: 2,
            block_frames: 128,
            sample_rate: 48_000,
            ring_blocks: 32,
            output_target_blocks: 2,
            midi_capacity: 1024,
            transport_capacity: 64,
        }
    }
}

impl LinkConfig {
    /// Samples (not frames) in one network block.
    pub fn block_samples(&self) -> usize {
        self.channels * self.block_frames
    }

    /// Frames queued beyond a host buffer before the audio thread starts
    /// (or, after a shortfall, resumes) playing: one network block, and at
    /// least 3 ms, so a worker that wakes a little late on a busy machine
    /// does not cost a dropout.
    pub fn output_cushion_frames(&self) -> usize {
        self.block_frames
            .max((self.sample_rate as usize * 3).div_ceil(1000))
    }
}

/// Errors from [`link`] (only at construction: the realtime calls never fail
/// with an error, they count).
///
/// Thread-safe: yes. Realtime-safe: yes.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum LinkError {
    /// `channels` must be 1–64.
    #[error("channels must be 1..=64, got {0}")]
    BadChannels(usize),
    /// `block_frames` must be 16–4096.
    #[error("block_frames must be 16..=4096, got {0}")]
    BadBlockFrames(usize),
    /// Rings must hold at least two blocks / one event / one snapshot.
    #[error("ring capacities too small")]
    RingTooSmall,
}

/// Longest MIDI message carried inline on the realtime path (channel voice
/// messages and short system messages). Longer SysEx does not cross the
/// handle; it is rejected and counted in `midi_rejected`.
pub const MIDI_INLINE_BYTES: usize = 3;

/// One MIDI message crossing the handle.
///
/// Thread-safe: yes (plain `Copy` value). Realtime-safe: yes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub struct MidiEvent {
    /// Frame index on the handle's input counter (send side) or output counter
    /// (receive side) at which the event sounds.
    pub sample_time: u64,
    /// Session-timeline time of the event in ns (0 when unknown).
    pub timestamp_ns: u64,
    /// Number of valid bytes in `data` (1–3).
    pub len: u8,
    /// The MIDI bytes, status first.
    pub data: [u8; MIDI_INLINE_BYTES],
}

impl MidiEvent {
    /// A short MIDI message; `None` if `bytes` is empty or longer than
    /// [`MIDI_INLINE_BYTES`].
    pub fn new(sample_time: u64, timestamp_ns: u64, bytes: &[u8]) -> Option<Self> {
        if bytes.is_empty() || bytes.len() > MIDI_INLINE_BYTES {
            return None;
        }
        let mut data = [0u8; MIDI_INLINE_BYTES];
        data[..bytes.len()].copy_from_slice(bytes);
        Some(Self {
            sample_time,
            timestamp_ns,
            len: bytes.len() as u8,
            data,
        })
    }

    /// The valid MIDI bytes.
    pub fn bytes(&self) -> &[u8] {
        &self.data[..(self.len as usize).min(MIDI_INLINE_BYTES)]
    }

    /// Offset of this event in a host buffer that starts at frame
    /// `buffer_start` and holds `buffer_frames` frames. Events already due
    /// (late) are clamped to offset 0; events beyond the buffer return `None`
    /// (keep them for the next buffer).
    pub fn offset_in(&self, buffer_start: u64, buffer_frames: usize) -> Option<u32> {
        if self.sample_time < buffer_start {
            return Some(0);
        }
        let off = self.sample_time - buffer_start;
        (off < buffer_frames as u64).then_some(off as u32)
    }
}

/// A DAW transport state at one sample, in either direction.
///
/// Thread-safe: yes (plain `Copy` value). Realtime-safe: yes.
#[derive(Debug, Clone, Copy, PartialEq, Default, serde::Serialize, serde::Deserialize)]
pub struct TransportSnapshot {
    /// Frame index on the handle's input counter (outgoing) or output counter
    /// (incoming) at which this state holds.
    pub sample_time: u64,
    /// Session-timeline time in ns (0 when unknown; the worker fills it in
    /// for outgoing snapshots).
    pub session_ns: u64,
    /// Transport rolling.
    pub playing: bool,
    /// Recording armed and rolling.
    pub recording: bool,
    /// Tempo, beats per minute.
    pub bpm: f64,
    /// Musical position in quarter notes since zero.
    pub beat_position: f64,
    /// Time signature numerator.
    pub time_sig_num: u8,
    /// Time signature denominator.
    pub time_sig_den: u8,
}

/// State of the worker behind a handle, as the editor shows it.
///
/// Thread-safe: yes. Realtime-safe: yes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
#[repr(u8)]
pub enum WorkerState {
    /// Created, socket not yet open.
    Starting = 0,
    /// Running.
    Running = 1,
    /// Stopped on request.
    Stopped = 2,
    /// Failed (socket error or a caught panic); see [`LinkStats::error`].
    Failed = 3,
}

impl WorkerState {
    fn from_u8(v: u8) -> Self {
        match v {
            0 => Self::Starting,
            1 => Self::Running,
            2 => Self::Stopped,
            _ => Self::Failed,
        }
    }
}

/// Counters shared by the audio thread, the worker and the editor.
///
/// Every counter is an atomic, written with `Relaxed` ordering: they are
/// statistics, never used to synchronise data (the rings do that).
/// Thread-safe: yes. Realtime-safe: yes for every method except
/// [`LinkStats::error`] / [`LinkStats::set_error`] (they lock; never call them
/// on the audio thread).
#[derive(Debug, Default)]
pub struct LinkStats {
    // Written by the audio thread.
    /// Frames the plugin pushed towards the network.
    pub audio_frames_pushed: AtomicU64,
    /// Frames dropped because the send ring was full (worker late).
    pub audio_frames_overflow: AtomicU64,
    /// Frames the plugin pulled from the network side.
    pub audio_frames_pulled: AtomicU64,
    /// Frames the plugin had to fill with silence (worker late).
    pub audio_frames_underrun: AtomicU64,
    /// MIDI events pushed towards the network.
    pub midi_pushed: AtomicU64,
    /// MIDI events dropped because the ring was full or the message too long.
    pub midi_rejected: AtomicU64,
    /// MIDI events handed to the plugin.
    pub midi_delivered: AtomicU64,
    /// Transport snapshots dropped because the ring was full.
    pub transport_dropped: AtomicU64,

    // Written by the worker.
    worker_state: AtomicU8,
    /// The worker thread runs at real-time priority (it asked and was
    /// allowed; see `WorkerConfig::realtime_priority`).
    pub worker_realtime: AtomicBool,
    /// Peers currently in the session (not counting this one).
    pub peers: AtomicU32,
    /// Datagrams sent.
    pub frames_sent: AtomicU64,
    /// Datagrams received (before validation).
    pub frames_received: AtomicU64,
    /// Datagrams rejected (any reason: bad CRC, length, version, ...).
    pub frames_rejected: AtomicU64,
    /// Audio blocks lost (never arrived in time).
    pub audio_blocks_lost: AtomicU64,
    /// Audio blocks that arrived after their playout time.
    pub audio_blocks_late: AtomicU64,
    /// Audio blocks rebuilt from JELLIE redundancy.
    pub audio_blocks_rebuilt: AtomicU64,
    /// Audio blocks concealed (predicted or faded).
    pub audio_blocks_concealed: AtomicU64,
    /// Frames of late audio skipped to take back the latency a dropout
    /// added (see [`AudioHandle::pull_planar`]).
    pub audio_frames_repaid: AtomicU64,
    /// Current jitter estimate, microseconds.
    pub jitter_us: AtomicU64,
    /// Current playout (jitter buffer) delay, microseconds.
    pub playout_delay_us: AtomicU64,
    /// Measured one-way network delay estimate, microseconds.
    pub one_way_delay_us: AtomicU64,
    /// The output cushion the audio thread keeps, set by the worker: 0 =
    /// [`LinkConfig::output_cushion_frames`]; `n > 0` = `n − 1` frames (the
    /// low-latency playout renders on arrival and keeps none). See
    /// [`WorkerLink::set_output_cushion_frames`].
    pub output_cushion_override: AtomicU32,
    /// Written by the audio thread: the fewest frames left in the output
    /// ring after a pull since the worker last took it (`u32::MAX`: none
    /// yet). Take it with [`WorkerLink::take_output_spare_min`].
    pub output_spare_min: AtomicU32,
    /// Written by the worker: how often it queued a backlog of blocks into
    /// an empty output ring (it, or the network before it, stalled and is
    /// catching up). The audio thread then owes the dropout's silence even
    /// where it would have kept it (see [`AudioHandle::pull_planar`]).
    pub output_supply_stalls: AtomicU64,
    /// Written by the audio thread: its latest pull, stamped (a seqlock:
    /// odd while being written). See [`LinkStats::last_pull`].
    pull_seq: AtomicU64,
    pull_frames: AtomicU64,
    pull_at_ns: AtomicU64,
    error: Mutex<Option<String>>,
}

/// One pull of the plugin's audio thread: by `CLOCK_MONOTONIC` instant
/// `at_mono_ns` (read as the pull began) the host had consumed `frames` in
/// total (played or silence, this pull included).
///
/// Thread-safe: yes (a plain value). Realtime-safe: yes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HostPull {
    /// Frames the host consumed, running count.
    pub frames: u64,
    /// When the pull began, `CLOCK_MONOTONIC` ns (or, from
    /// [`WorkerLink::last_pull`], the worker's clock).
    pub at_mono_ns: u64,
}

/// A plain copy of [`LinkStats`] at one moment (for editors and JSON).
///
/// Thread-safe: yes. Realtime-safe: no (built by the editor thread).
#[allow(missing_docs)]
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct LinkStatsSnapshot {
    pub worker_state: WorkerState,
    pub worker_realtime: bool,
    pub audio_frames_pushed: u64,
    pub audio_frames_overflow: u64,
    pub audio_frames_pulled: u64,
    pub audio_frames_underrun: u64,
    pub audio_frames_repaid: u64,
    pub midi_pushed: u64,
    pub midi_rejected: u64,
    pub midi_delivered: u64,
    pub transport_dropped: u64,
    pub peers: u32,
    pub frames_sent: u64,
    pub frames_received: u64,
    pub frames_rejected: u64,
    pub audio_blocks_lost: u64,
    pub audio_blocks_late: u64,
    pub audio_blocks_rebuilt: u64,
    pub audio_blocks_concealed: u64,
    pub jitter_us: u64,
    pub playout_delay_us: u64,
    pub one_way_delay_us: u64,
    pub error: Option<String>,
}

impl LinkStats {
    /// Current worker state.
    pub fn worker_state(&self) -> WorkerState {
        WorkerState::from_u8(self.worker_state.load(Ordering::Relaxed))
    }

    /// Set the worker state (worker thread).
    pub fn set_worker_state(&self, state: WorkerState) {
        self.worker_state.store(state as u8, Ordering::Relaxed);
    }

    /// The worker's last error message, if it failed. Locks: editor/worker only.
    pub fn error(&self) -> Option<String> {
        self.error.lock().clone()
    }

    /// Record an error and mark the worker failed. Locks: worker only.
    pub fn set_error(&self, message: String) {
        *self.error.lock() = Some(message);
        self.set_worker_state(WorkerState::Failed);
    }

    /// Publish the audio thread's latest pull (audio thread only: one
    /// writer). Wait-free: the reader retries, the writer never waits.
    fn publish_pull(&self, pull: HostPull) {
        let seq = self.pull_seq.load(Ordering::Relaxed);
        self.pull_seq.store(seq.wrapping_add(1), Ordering::Relaxed);
        // The odd sequence number is visible before either field changes.
        std::sync::atomic::fence(Ordering::Release);
        self.pull_frames.store(pull.frames, Ordering::Relaxed);
        self.pull_at_ns.store(pull.at_mono_ns, Ordering::Relaxed);
        self.pull_seq.store(seq.wrapping_add(2), Ordering::Release);
    }

    /// The audio thread's latest pull (`None`: none yet, or it is writing
    /// one right now: ask again later). Any thread.
    pub fn last_pull(&self) -> Option<HostPull> {
        let before = self.pull_seq.load(Ordering::Acquire);
        if before == 0 || before % 2 == 1 {
            return None;
        }
        let frames = self.pull_frames.load(Ordering::Relaxed);
        let at_mono_ns = self.pull_at_ns.load(Ordering::Relaxed);
        // The fields are read before the sequence number is read again.
        std::sync::atomic::fence(Ordering::Acquire);
        (self.pull_seq.load(Ordering::Relaxed) == before).then_some(HostPull { frames, at_mono_ns })
    }

    /// Copy every counter (editor thread).
    pub fn snapshot(&self) -> LinkStatsSnapshot {
        let r = |a: &AtomicU64| a.load(Ordering::Relaxed);
        LinkStatsSnapshot {
            worker_state: self.worker_state(),
            worker_realtime: self.worker_realtime.load(Ordering::Relaxed),
            audio_frames_pushed: r(&self.audio_frames_pushed),
            audio_frames_overflow: r(&self.audio_frames_overflow),
            audio_frames_pulled: r(&self.audio_frames_pulled),
            audio_frames_underrun: r(&self.audio_frames_underrun),
            audio_frames_repaid: r(&self.audio_frames_repaid),
            midi_pushed: r(&self.midi_pushed),
            midi_rejected: r(&self.midi_rejected),
            midi_delivered: r(&self.midi_delivered),
            transport_dropped: r(&self.transport_dropped),
            peers: self.peers.load(Ordering::Relaxed),
            frames_sent: r(&self.frames_sent),
            frames_received: r(&self.frames_received),
            frames_rejected: r(&self.frames_rejected),
            audio_blocks_lost: r(&self.audio_blocks_lost),
            audio_blocks_late: r(&self.audio_blocks_late),
            audio_blocks_rebuilt: r(&self.audio_blocks_rebuilt),
            audio_blocks_concealed: r(&self.audio_blocks_concealed),
            jitter_us: r(&self.jitter_us),
            playout_delay_us: r(&self.playout_delay_us),
            one_way_delay_us: r(&self.one_way_delay_us),
            error: self.error(),
        }
    }
}

#[inline]
fn bump(counter: &AtomicU64, by: u64) {
    counter.fetch_add(by, Ordering::Relaxed);
}

/// The audio thread's end of a link.
///
/// Thread-safe: no (one audio thread owns it; `Send` so the plugin can move it
/// there in `activate`). Realtime-safe: **yes, every method**: rings and
/// atomics only; never allocates, locks, blocks or makes syscalls (a pull
/// reads `CLOCK_MONOTONIC` through the vDSO, as the DAW clock does).
pub struct AudioHandle {
    config: LinkConfig,
    audio_to_net: Producer<f32>,
    audio_from_net: Consumer<f32>,
    midi_to_net: Producer<MidiEvent>,
    midi_from_net: Consumer<MidiEvent>,
    transport_to_net: Producer<TransportSnapshot>,
    transport_from_net: Consumer<TransportSnapshot>,
    input_frames: u64,
    output_frames: u64,
    /// The output ring holds a cushion: whole host buffers are played from
    /// it. Cleared by a shortfall; set again once a buffer plus one network
    /// block is queued (see [`AudioHandle::pull_planar`]).
    output_primed: bool,
    /// Frames of silence played since the ring last had audio (a dropout),
    /// not yet taken back.
    owed_frames: usize,
    /// A dropout's window is open (its silence is owed).
    owing: bool,
    /// Silence played since the current (or last) dropout began, frames.
    dropout_frames: usize,
    /// `output_supply_stalls` when last looked at.
    stalls_seen: u64,
    /// Host frames since the last dropout began (the age of an open debt).
    frames_since_dropout: usize,
    /// Frames the host consumed (pulled, played or silence), running count.
    frames_consumed: u64,
    stats: Arc<LinkStats>,
}

/// The worker thread's end of a link.
///
/// Thread-safe: no (owned by the worker; `Send`). Realtime-safe: yes (rings
/// and atomics), though the worker need not be.
pub struct WorkerLink {
    config: LinkConfig,
    audio_from_plugin: Consumer<f32>,
    audio_to_plugin: Producer<f32>,
    midi_from_plugin: Consumer<MidiEvent>,
    midi_to_plugin: Producer<MidiEvent>,
    transport_from_plugin: Consumer<TransportSnapshot>,
    transport_to_plugin: Producer<TransportSnapshot>,
    output_written: u64,
    input_read: u64,
    /// The worker's clock, to put the audio thread's pull stamps on it
    /// (`None`: a link driven in virtual time; stamps are not used).
    clock: Option<Arc<dyn Clock>>,
    stats: Arc<LinkStats>,
}

/// How long (host time, ms) the audio thread keeps a dropout's silence
/// owed before forgiving it: a worker that catches up within this gets the
/// stream back on its timeline; after it (a stalled or paused stream) the
/// audio resumes later, as it did before repayment existed.
pub const REPAY_WINDOW_MS: u64 = 250;
/// A dropout that begins within this long (host time, ms) of the previous
/// one is not owed: see [`AudioHandle::pull_planar`].
pub const REPAY_RECUR_MS: u64 = 2_000;

/// Build a connected [`AudioHandle`] / [`WorkerLink`] pair. Allocates every
/// ring here, once (call it outside the audio thread, e.g. in `activate`).
pub fn link(config: LinkConfig) -> Result<(AudioHandle, WorkerLink), LinkError> {
    if !(1..=64).contains(&config.channels) {
        return Err(LinkError::BadChannels(config.channels));
    }
    if !(16..=4096).contains(&config.block_frames) {
        return Err(LinkError::BadBlockFrames(config.block_frames));
    }
    if config.ring_blocks < 2
        || config.output_target_blocks >= config.ring_blocks
        || config.midi_capacity == 0
        || config.transport_capacity == 0
    {
        return Err(LinkError::RingTooSmall);
    }
    let audio_cap = config.block_samples() * config.ring_blocks;
    let (audio_to_net, audio_from_plugin) = RingBuffer::new(audio_cap);
    let (audio_to_plugin, audio_from_net) = RingBuffer::new(audio_cap);
    let (midi_to_net, midi_from_plugin) = RingBuffer::new(config.midi_capacity);
    let (midi_to_plugin, midi_from_net) = RingBuffer::new(config.midi_capacity);
    let (transport_to_net, transport_from_plugin) = RingBuffer::new(config.transport_capacity);
    let (transport_to_plugin, transport_from_net) = RingBuffer::new(config.transport_capacity);
    let stats = Arc::new(LinkStats::default());
    stats.output_spare_min.store(u32::MAX, Ordering::Relaxed);
    Ok((
        AudioHandle {
            config,
            audio_to_net,
            audio_from_net,
            midi_to_net,
            midi_from_net,
            transport_to_net,
            transport_from_net,
            input_frames: 0,
            output_frames: 0,
            output_primed: false,
            owed_frames: 0,
            owing: false,
            dropout_frames: 0,
            stalls_seen: 0,
            frames_since_dropout: usize::MAX,
            frames_consumed: 0,
            stats: stats.clone(),
        },
        WorkerLink {
            config,
            audio_from_plugin,
            audio_to_plugin,
            midi_from_plugin,
            midi_to_plugin,
            transport_from_plugin,
            transport_to_plugin,
            output_written: 0,
            input_read: 0,
            clock: None,
            stats,
        },
    ))
}

impl AudioHandle {
    /// The link's sizes.
    pub fn config(&self) -> &LinkConfig {
        &self.config
    }

    /// Shared counters (clone the `Arc` for the editor in `initialize`, not here).
    pub fn stats(&self) -> &Arc<LinkStats> {
        &self.stats
    }

    /// Index of the next frame [`Self::push_interleaved`] / [`Self::push_planar`] will push.
    pub fn input_frames(&self) -> u64 {
        self.input_frames
    }

    /// Index of the next frame [`Self::pull_interleaved`] / [`Self::pull_planar`] will pull.
    pub fn output_frames(&self) -> u64 {
        self.output_frames
    }

    /// Frames the worker has queued for [`Self::pull_planar`] right now.
    pub fn output_frames_queued(&self) -> usize {
        self.audio_from_net.slots() / self.config.channels
    }

    /// Push interleaved frames (any count; `samples.len()` must be a multiple
    /// of `channels`, extra samples are ignored). All or nothing: if the ring
    /// lacks room the whole buffer is dropped and counted in
    /// `audio_frames_overflow`; the input counter still advances so sample
    /// times stay aligned with the host. Returns whether it was queued.
    pub fn push_interleaved(&mut self, samples: &[f32]) -> bool {
        let ch = self.config.channels;
        let frames = samples.len() / ch;
        let n = frames * ch;
        self.input_frames += frames as u64;
        if self.audio_to_net.push_entire_slice(&samples[..n]).is_ok() {
            bump(&self.stats.audio_frames_pushed, frames as u64);
            true
        } else {
            bump(&self.stats.audio_frames_overflow, frames as u64);
            false
        }
    }

    /// Push planar channels (one slice per channel, as hosts hand them out;
    /// `&[&[f32]]` and `&[&mut [f32]]` both work). Uses the first `channels`
    /// slices and the shortest length; missing channels are sent as silence.
    /// All or nothing, like [`Self::push_interleaved`].
    pub fn push_planar<S: AsRef<[f32]>>(&mut self, channels: &[S]) -> bool {
        let ch = self.config.channels;
        let frames = channels
            .iter()
            .take(ch)
            .map(|c| c.as_ref().len())
            .min()
            .unwrap_or(0);
        self.input_frames += frames as u64;
        let n = frames * ch;
        match self.audio_to_net.write_chunk_uninit(n) {
            Ok(chunk) => {
                let mut i = 0usize;
                let written = chunk.fill_from_iter(std::iter::from_fn(|| {
                    if i >= n {
                        return None;
                    }
                    let (frame, c) = (i / ch, i % ch);
                    i += 1;
                    Some(channels.get(c).map_or(0.0, |s| s.as_ref()[frame]))
                }));
                debug_assert_eq!(written, n);
                bump(&self.stats.audio_frames_pushed, frames as u64);
                true
            }
            Err(_) => {
                bump(&self.stats.audio_frames_overflow, frames as u64);
                false
            }
        }
    }

    /// How many frames a pull of `frames` takes from the output ring: all of
    /// them or none. A partial buffer would put a gap *inside* the host's
    /// buffer and leave the ring empty, so every later buffer would tear
    /// again whenever the host's callback timing and the worker's block
    /// timing disagree by a block (pedalboard pacing 10 ms buffers did,
    /// every other buffer). Instead a shortfall plays one whole buffer of
    /// silence and keeps what is queued: the next buffer then finds a
    /// cushion of up to one host buffer, which absorbs the host's timing
    /// jitter from then on. After a shortfall (and at start) the cushion
    /// must also cover [`LinkConfig::output_cushion_frames`] before playing
    /// resumes.
    ///
    /// A dropout's silence is owed: the worker keeps rendering on its clock,
    /// so once it catches up the ring holds the blocks the host played
    /// silence for, and playing them would leave every later sample that
    /// much late, for good (CI saw a manual 1 ms buffer end 10.7 ms late
    /// after two dropouts). They are skipped instead, so the audio resumes
    /// where it would have been: one splice, at the dropout that already
    /// broke the sound. Exactly: when the ring holds the debt plus a buffer,
    /// all of it goes at once; otherwise playing resumes with the cushion
    /// and what lies beyond a buffer plus the cushion is skipped, then and
    /// on later calls, until [`REPAY_WINDOW_MS`] after the dropout. The
    /// silence before anything was played (priming) is not owed, nor that
    /// of a dropout within [`REPAY_RECUR_MS`] of the previous one (a host
    /// whose callback timing needs more cushion keeps the extra buffer, as
    /// it did before) — unless the worker says it queued a backlog into the
    /// empty ring ([`WorkerLink::note_supply_stall`]): then the supply
    /// stalled, not the host, and the silence is owed whenever the dropout
    /// began. Skipped frames count in `audio_frames_repaid`.
    fn output_take(&mut self, frames: usize) -> usize {
        let ch = self.config.channels;
        let avail = self.audio_from_net.slots() / ch;
        if frames == 0 {
            return 0;
        }
        let cushion = match self.stats.output_cushion_override.load(Ordering::Relaxed) {
            0 => self.config.output_cushion_frames(),
            n => n as usize - 1,
        };
        self.frames_since_dropout = self.frames_since_dropout.saturating_add(frames);
        let stalls = self.stats.output_supply_stalls.load(Ordering::Relaxed);
        if stalls != self.stalls_seen {
            self.stalls_seen = stalls;
            // The supply stalled (the worker woke late, or the network held
            // the stream) and is catching up: the dropout was not the
            // host's timing, whatever its timing looked like. Its silence
            // is owed after all (the rule below would keep a stall that
            // came soon after start-up dropouts: 7.5 ms for good).
            let window = self.config.sample_rate as usize * REPAY_WINDOW_MS as usize / 1000;
            if !self.owing && self.dropout_frames > 0 && self.frames_since_dropout <= window {
                self.owing = true;
                self.owed_frames = self
                    .dropout_frames
                    .min(self.config.block_frames * self.config.ring_blocks);
            }
        }
        if self.owing {
            let window = self.config.sample_rate as usize * REPAY_WINDOW_MS as usize / 1000;
            if self.frames_since_dropout > window {
                self.owed_frames = 0;
                self.owing = false;
            }
        }
        let exact =
            !self.output_primed && self.owed_frames > 0 && avail >= self.owed_frames + frames;
        let need = if self.output_primed {
            frames
        } else {
            frames + cushion
        };
        if exact || avail >= need {
            let keep = if exact { frames } else { frames + cushion };
            let skip = self.owed_frames.min(avail.saturating_sub(keep));
            if skip > 0 {
                if let Ok(chunk) = self.audio_from_net.read_chunk(skip * ch) {
                    chunk.commit_all();
                    self.owed_frames -= skip;
                    self.output_frames += skip as u64;
                    bump(&self.stats.audio_frames_repaid, skip as u64);
                }
            }
            self.output_primed = true;
            let spare = (self.audio_from_net.slots() / ch).saturating_sub(frames);
            self.stats
                .output_spare_min
                .fetch_min(spare.min(u32::MAX as usize) as u32, Ordering::Relaxed);
            frames
        } else {
            // A dropout begins when a primed ring runs short (not while
            // priming); its silence is owed until the window closes.
            if self.output_primed && self.output_frames > 0 {
                // One that recurs soon after the last is the host's timing
                // (its callbacks wobble more than the cushion covers), not a
                // stall: it is not owed, so the ring keeps the extra buffer
                // and the dropouts stop, as before repayment existed.
                let recur = self.config.sample_rate as usize * REPAY_RECUR_MS as usize / 1000;
                self.owing = self.frames_since_dropout > recur;
                self.frames_since_dropout = 0;
                self.owed_frames = 0;
                self.dropout_frames = 0;
            }
            if self.output_frames > 0 {
                self.dropout_frames = self.dropout_frames.saturating_add(frames);
            }
            if self.owing {
                // Never more than the ring could hold back.
                self.owed_frames = (self.owed_frames + frames)
                    .min(self.config.block_frames * self.config.ring_blocks);
            }
            self.output_primed = false;
            bump(&self.stats.audio_frames_underrun, frames as u64);
            0
        }
    }

    /// Pull interleaved frames into `out` (its length a multiple of
    /// `channels`). All or nothing: if the worker has not queued the whole
    /// buffer (plus, after a shortfall, one block of cushion) the buffer is
    /// silence, counted in `audio_frames_underrun`, and the queued audio
    /// waits for the next call. Returns the number of real frames (received,
    /// rebuilt or concealed by the worker): `frames` or 0.
    pub fn pull_interleaved(&mut self, out: &mut [f32]) -> usize {
        let at_mono_ns = monotonic_ns();
        let ch = self.config.channels;
        let frames = out.len() / ch;
        let real = self.output_take(frames);
        self.stamp_pull(frames, at_mono_ns);
        let (got, _) = self.audio_from_net.pop_partial_slice(&mut out[..real * ch]);
        debug_assert_eq!(got.len(), real * ch);
        out[real * ch..].fill(0.0);
        self.output_frames += real as u64;
        bump(&self.stats.audio_frames_pulled, real as u64);
        real
    }

    /// Pull into planar channels (`&mut [&mut [f32]]` as hosts hand them out).
    /// Channels beyond the link's get silence; the link's channels beyond the
    /// slices are discarded. All or nothing, as [`Self::pull_interleaved`].
    /// Returns the number of real frames.
    pub fn pull_planar<S: AsMut<[f32]>>(&mut self, channels: &mut [S]) -> usize {
        let ch = self.config.channels;
        let frames = channels
            .iter_mut()
            .map(|c| c.as_mut().len())
            .min()
            .unwrap_or(0);
        let at_mono_ns = monotonic_ns();
        let real = self.output_take(frames);
        self.stamp_pull(frames, at_mono_ns);
        if let Ok(chunk) = self.audio_from_net.read_chunk(real * ch) {
            let (a, b) = chunk.as_slices();
            for (i, &s) in a.iter().chain(b.iter()).enumerate() {
                let (frame, c) = (i / ch, i % ch);
                if let Some(dst) = channels.get_mut(c) {
                    dst.as_mut()[frame] = s;
                }
            }
            chunk.commit_all();
        }
        for (c, dst) in channels.iter_mut().enumerate() {
            let dst = dst.as_mut();
            if c >= ch {
                dst[..frames].fill(0.0);
            } else {
                dst[real..frames].fill(0.0);
            }
        }
        self.output_frames += real as u64;
        bump(&self.stats.audio_frames_pulled, real as u64);
        real
    }

    /// Tell the worker when the host consumed `frames` more (so it learns
    /// the host's rate from exact instants, not from when it happened to
    /// look).
    fn stamp_pull(&mut self, frames: usize, at_mono_ns: u64) {
        if frames == 0 {
            return;
        }
        self.frames_consumed += frames as u64;
        self.stats.publish_pull(HostPull {
            frames: self.frames_consumed,
            at_mono_ns,
        });
    }

    /// Queue a MIDI event for the network. Returns false (and counts it) if
    /// the ring is full.
    pub fn push_midi(&mut self, event: MidiEvent) -> bool {
        if event.len == 0 || event.len as usize > MIDI_INLINE_BYTES {
            bump(&self.stats.midi_rejected, 1);
            return false;
        }
        match self.midi_to_net.push(event) {
            Ok(()) => {
                bump(&self.stats.midi_pushed, 1);
                true
            }
            Err(_) => {
                bump(&self.stats.midi_rejected, 1);
                false
            }
        }
    }

    /// The next received MIDI event whose `sample_time` is before
    /// `before_sample` (use `output_frames() + buffer_frames`), in arrival
    /// order. Events for later buffers stay queued.
    pub fn pop_midi_before(&mut self, before_sample: u64) -> Option<MidiEvent> {
        match self.midi_from_net.peek() {
            Ok(ev) if ev.sample_time < before_sample => {
                bump(&self.stats.midi_delivered, 1);
                self.midi_from_net.pop().ok()
            }
            _ => None,
        }
    }

    /// Publish the host transport state. Returns false (counted) if the ring is full.
    pub fn push_transport(&mut self, snapshot: TransportSnapshot) -> bool {
        if self.transport_to_net.push(snapshot).is_ok() {
            true
        } else {
            bump(&self.stats.transport_dropped, 1);
            false
        }
    }

    /// The next transport snapshot received from the session, oldest first.
    pub fn pop_transport(&mut self) -> Option<TransportSnapshot> {
        self.transport_from_net.pop().ok()
    }

    /// Whether the worker end has been dropped (worker gone: play silence).
    pub fn worker_gone(&self) -> bool {
        self.audio_to_net.is_abandoned()
    }
}

impl WorkerLink {
    /// The link's sizes.
    pub fn config(&self) -> &LinkConfig {
        &self.config
    }

    /// Shared counters.
    pub fn stats(&self) -> &Arc<LinkStats> {
        &self.stats
    }

    /// The worker's clock (the worker sets it when it takes the link), so
    /// [`Self::last_pull`] can stamp on it.
    pub fn set_clock(&mut self, clock: Arc<dyn Clock>) {
        self.clock = Some(clock);
    }

    /// The audio thread's latest pull, stamped on the worker's clock
    /// (`None`: no pull yet, one being written, or no clock that maps
    /// `CLOCK_MONOTONIC`, such as a virtual one).
    pub fn last_pull(&self) -> Option<HostPull> {
        let clock = self.clock.as_ref()?;
        let pull = self.stats.last_pull()?;
        Some(HostPull {
            frames: pull.frames,
            at_mono_ns: clock.at_monotonic(pull.at_mono_ns)?,
        })
    }

    /// Whole network blocks of plugin audio waiting to be sent.
    pub fn input_blocks_ready(&self) -> usize {
        self.audio_from_plugin.slots() / self.config.block_samples()
    }

    /// Take one network block of interleaved plugin audio into `block`
    /// (`block_samples()` long). Returns the frame index of its first frame,
    /// or `None` if a whole block is not there yet.
    pub fn pop_input_block(&mut self, block: &mut [f32]) -> Option<u64> {
        let n = self.config.block_samples();
        if block.len() < n
            || self
                .audio_from_plugin
                .pop_entire_slice(&mut block[..n])
                .is_err()
        {
            return None;
        }
        let first = self.input_read;
        self.input_read += self.config.block_frames as u64;
        Some(first)
    }

    /// Drop every whole block of plugin audio waiting to be sent (a new
    /// worker taking over this link does this: what queued up while no
    /// worker ran is stale). Block alignment and the frame counter stay
    /// consistent with the audio thread's. Returns the blocks dropped.
    pub fn discard_input_blocks(&mut self) -> usize {
        let n = self.config.block_samples();
        let blocks = self.audio_from_plugin.slots() / n;
        if let Ok(chunk) = self.audio_from_plugin.read_chunk(blocks * n) {
            chunk.commit_all();
            self.input_read += (blocks * self.config.block_frames) as u64;
            blocks
        } else {
            0
        }
    }

    /// Blocks queued towards the audio thread (its output latency).
    pub fn output_blocks_queued(&self) -> usize {
        self.output_frames_queued() / self.config.block_frames
    }

    /// Frames queued towards the audio thread.
    pub fn output_frames_queued(&self) -> usize {
        (self.audio_to_plugin.buffer().capacity() - self.audio_to_plugin.slots())
            / self.config.channels
    }

    /// Blocks the worker should produce now to keep the output ring at its target.
    pub fn output_blocks_wanted(&self) -> usize {
        self.config
            .output_target_blocks
            .saturating_sub(self.output_blocks_queued())
    }

    /// Frame index (on the audio thread's output counter) that the next
    /// block pushed by [`Self::push_output_block`] will start at.
    pub fn output_written(&self) -> u64 {
        self.output_written
    }

    /// The cushion the audio thread keeps beyond a host buffer (`None`:
    /// [`LinkConfig::output_cushion_frames`]); takes effect at its next pull.
    pub fn set_output_cushion_frames(&self, frames: Option<usize>) {
        let v = frames.map_or(0, |f| f.min(u32::MAX as usize - 1) as u32 + 1);
        self.stats
            .output_cushion_override
            .store(v, Ordering::Relaxed);
    }

    /// The fewest frames the output ring held beyond a host pull since the
    /// last call (`None`: no pull played since). The margin the host's
    /// timing left: more than a block of it for long is latency nobody needs.
    pub fn take_output_spare_min(&self) -> Option<usize> {
        match self
            .stats
            .output_spare_min
            .swap(u32::MAX, Ordering::Relaxed)
        {
            u32::MAX => None,
            n => Some(n as usize),
        }
    }

    /// The ring was empty and we are about to queue a backlog (several
    /// blocks due at once): the supply stalled. Call it before queueing
    /// them, so the audio thread knows the dropout it played was not its
    /// host's timing and takes the backlog's latency back.
    pub fn note_supply_stall(&self) {
        self.stats
            .output_supply_stalls
            .fetch_add(1, Ordering::Relaxed);
    }

    /// Queue whole interleaved frames (`channels` samples each; any count
    /// up to the free space) for the audio thread: all or nothing. Returns
    /// false if they do not fit.
    pub fn push_output_frames(&mut self, samples: &[f32]) -> bool {
        let ch = self.config.channels;
        let n = samples.len() / ch * ch;
        if n == 0
            || self
                .audio_to_plugin
                .push_entire_slice(&samples[..n])
                .is_err()
        {
            return n == 0;
        }
        self.output_written += (n / ch) as u64;
        true
    }

    /// Queue one block (`block_samples()` interleaved) for the audio thread.
    /// Returns false if the ring is full (the audio thread stopped pulling).
    pub fn push_output_block(&mut self, block: &[f32]) -> bool {
        let n = self.config.block_samples();
        block.len() >= n && self.push_output_frames(&block[..n])
    }

    /// Next MIDI event from the plugin.
    pub fn pop_midi(&mut self) -> Option<MidiEvent> {
        self.midi_from_plugin.pop().ok()
    }

    /// Hand a received MIDI event to the plugin (set `sample_time` on the
    /// output counter first). Returns false if the ring is full.
    pub fn push_midi(&mut self, event: MidiEvent) -> bool {
        self.midi_to_plugin.push(event).is_ok()
    }

    /// Next transport snapshot from the plugin.
    pub fn pop_transport(&mut self) -> Option<TransportSnapshot> {
        self.transport_from_plugin.pop().ok()
    }

    /// Hand a session transport state to the plugin. Returns false if full.
    pub fn push_transport(&mut self, snapshot: TransportSnapshot) -> bool {
        self.transport_to_plugin.push(snapshot).is_ok()
    }

    /// Whether the audio end has been dropped (plugin deactivated).
    pub fn plugin_gone(&self) -> bool {
        self.audio_to_plugin.is_abandoned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> LinkConfig {
        LinkConfig {
            channels: 2,
            block_frames: 16,
            ring_blocks: 4,
            output_target_blocks: 2,
            ..LinkConfig::default()
        }
    }

    #[test]
    fn rejects_bad_config() {
        let mut c = cfg();
        c.channels = 0;
        assert_eq!(link(c).err(), Some(LinkError::BadChannels(0)));
        let mut c = cfg();
        c.block_frames = 3;
        assert_eq!(link(c).err(), Some(LinkError::BadBlockFrames(3)));
        let mut c = cfg();
        c.output_target_blocks = 4;
        assert_eq!(link(c).err(), Some(LinkError::RingTooSmall));
    }

    #[test]
    fn discarding_input_keeps_block_alignment() {
        let (mut h, mut w) = link(cfg()).unwrap();
        // 2.5 blocks queued: two whole blocks go, the half block stays.
        let buf: Vec<f32> = (0..80).map(|i| i as f32).collect();
        assert!(h.push_interleaved(&buf));
        assert_eq!(w.discard_input_blocks(), 2);
        assert_eq!(w.input_blocks_ready(), 0);
        let more: Vec<f32> = (80..112).map(|i| i as f32).collect();
        assert!(h.push_interleaved(&more));
        let mut block = vec![0.0; 32];
        // The next block starts at frame 32 and holds frames 32..48.
        assert_eq!(w.pop_input_block(&mut block), Some(32));
        assert_eq!(block[0], 64.0);
        assert_eq!(block[31], 95.0);
    }

    #[test]
    fn audio_crosses_in_order_and_is_cut_into_blocks() {
        let (mut h, mut w) = link(cfg()).unwrap();
        // Host buffers of 10 frames, network blocks of 16.
        let mut next = 0.0f32;
        for _ in 0..4 {
            let buf: Vec<f32> = (0..20)
                .map(|_| {
                    next += 1.0;
                    next
                })
                .collect();
            assert!(h.push_interleaved(&buf));
        }
        assert_eq!(h.input_frames(), 40);
        assert_eq!(w.input_blocks_ready(), 2);
        let mut block = vec![0.0; 32];
        assert_eq!(w.pop_input_block(&mut block), Some(0));
        assert_eq!(block[0], 1.0);
        assert_eq!(block[31], 32.0);
        assert_eq!(w.pop_input_block(&mut block), Some(16));
        assert_eq!(block[0], 33.0);
        assert_eq!(w.pop_input_block(&mut block), None);
    }

    #[test]
    fn push_overflow_is_counted_and_all_or_nothing() {
        let (mut h, _w) = link(cfg()).unwrap();
        let buf = vec![0.5f32; 2 * 16 * 3];
        assert!(h.push_interleaved(&buf));
        assert!(!h.push_interleaved(&buf)); // 6 blocks > 4
        let s = h.stats().snapshot();
        assert_eq!(s.audio_frames_pushed, 48);
        assert_eq!(s.audio_frames_overflow, 48);
        assert_eq!(h.input_frames(), 96);
    }

    #[test]
    fn planar_round_trip_and_underrun() {
        // At 4 kHz the 3 ms cushion floor (12 frames) is below one block (16).
        let (mut h, mut w) = link(LinkConfig {
            sample_rate: 4_000,
            ..cfg()
        })
        .unwrap();
        let l: Vec<f32> = (0..16).map(|i| i as f32).collect();
        let r: Vec<f32> = (0..16).map(|i| -(i as f32)).collect();
        assert!(h.push_planar(&[&l[..], &r[..]]));
        let mut block = vec![0.0; 32];
        w.pop_input_block(&mut block).unwrap();
        assert_eq!(&block[..4], &[0.0, -0.0, 1.0, -1.0]);
        assert!(w.push_output_block(&block));
        assert_eq!(w.output_blocks_queued(), 1);
        assert_eq!(w.output_blocks_wanted(), 1);
        // 16 frames queued: a 12-frame buffer needs 12 + one block (16) of
        // cushion before the first play, so it is silence and keeps the audio.
        let mut ol = [9.0; 12];
        let mut or = [9.0; 12];
        assert_eq!(h.pull_planar(&mut [&mut ol[..], &mut or[..]]), 0);
        assert_eq!(ol, [0.0; 12]);
        assert_eq!(h.stats().snapshot().audio_frames_underrun, 12);
        assert_eq!(h.output_frames(), 0);
        assert!(w.push_output_block(&block));
        // 32 queued >= 12 + 16: plays whole buffers, in order, from the cushion.
        assert_eq!(h.pull_planar(&mut [&mut ol[..], &mut or[..]]), 12);
        assert_eq!(ol[..], l[..12]);
        assert_eq!(or[..], r[..12]);
        assert_eq!(h.pull_planar(&mut [&mut ol[..], &mut or[..]]), 12);
        assert_eq!(ol[..4], l[12..]);
        assert_eq!(ol[4..], l[..8]);
        // 8 left, primed: a 12-frame buffer is short, so silence, nothing taken.
        assert_eq!(h.pull_planar(&mut [&mut ol[..], &mut or[..]]), 0);
        assert_eq!(ol, [0.0; 12]);
        let s = h.stats().snapshot();
        assert_eq!(s.audio_frames_underrun, 24);
        assert_eq!(s.audio_frames_pulled, 24);
        assert_eq!(h.output_frames(), 24);
    }

    #[test]
    fn jittery_host_pulls_do_not_tear_the_stream() {
        // The worker queues a 16-frame block every "tick"; the host pulls 40
        // frames every 2.5 ticks on average but with jitter (2 or 3 ticks).
        // Played audio must be the queued sequence without gaps once playing
        // started, except whole silent buffers.
        let (mut h, mut w) = link(LinkConfig {
            ring_blocks: 64,
            sample_rate: 4_000,
            ..cfg()
        })
        .unwrap();
        let mut next = 0.0f32;
        let mut played = Vec::new();
        let mut interleaved = vec![0.0f32; 80];
        let pattern = [2usize, 3, 3, 2, 2, 3, 2, 3, 3, 2];
        for (i, &ticks) in pattern.iter().cycle().take(400).enumerate() {
            for _ in 0..ticks {
                let block: Vec<f32> = (0..16)
                    .flat_map(|_| {
                        next += 1.0;
                        [next, -next]
                    })
                    .collect();
                assert!(w.push_output_block(&block), "ring overflow at {i}");
            }
            if h.pull_interleaved(&mut interleaved) == 40 {
                played.extend(interleaved.chunks(2).map(|f| f[0]));
            }
        }
        assert!(played.len() > 390 * 40, "{} frames played", played.len());
        for w in played.windows(2) {
            assert_eq!(w[1], w[0] + 1.0, "gap in played audio");
        }
    }

    #[test]
    fn midi_is_held_until_its_buffer() {
        let (mut h, mut w) = link(cfg()).unwrap();
        assert!(w.push_midi(MidiEvent::new(100, 5, &[0x90, 60, 100]).unwrap()));
        assert_eq!(h.pop_midi_before(64), None);
        let ev = h.pop_midi_before(128).unwrap();
        assert_eq!(ev.bytes(), &[0x90, 60, 100]);
        assert_eq!(ev.offset_in(64, 64), Some(36));
        assert_eq!(ev.offset_in(128, 64), Some(0));
        assert_eq!(ev.offset_in(0, 64), None);
        assert!(MidiEvent::new(0, 0, &[0xF0, 1, 2, 0xF7]).is_none());
        assert!(h.push_midi(MidiEvent::new(3, 0, &[0x80, 60, 0]).unwrap()));
        assert_eq!(w.pop_midi().unwrap().sample_time, 3);
    }

    #[test]
    fn stats_snapshot_and_error() {
        let (h, w) = link(cfg()).unwrap();
        assert_eq!(h.stats().worker_state(), WorkerState::Starting);
        w.stats().set_error("boom".into());
        let s = h.stats().snapshot();
        assert_eq!(s.worker_state, WorkerState::Failed);
        assert_eq!(s.error.as_deref(), Some("boom"));
        drop(w);
        assert!(h.worker_gone());
    }

    /// A mono link of 64-frame blocks at 48 kHz.
    fn mono_link(ring_blocks: usize) -> (AudioHandle, WorkerLink) {
        link(LinkConfig {
            channels: 1,
            block_frames: 64,
            ring_blocks,
            ..LinkConfig::default()
        })
        .unwrap()
    }

    /// The worker can set the cushion (the low-latency playout keeps
    /// none) and read the fewest frames a pull left behind.
    #[test]
    fn cushion_override_and_spare_frames() {
        let (mut h, mut w) = mono_link(16);
        assert_eq!(w.take_output_spare_min(), None);
        w.set_output_cushion_frames(Some(0));
        assert!(w.push_output_frames(&[0.5; 64]));
        let mut out = [0.0f32; 64];
        // No cushion: one block is enough to start.
        assert_eq!(h.pull_interleaved(&mut out), 64);
        assert_eq!(w.take_output_spare_min(), Some(0));
        assert_eq!(w.take_output_spare_min(), None);
        push_all(&mut w, &[0.25; 64 * 3]);
        assert_eq!(h.pull_interleaved(&mut out), 64);
        assert_eq!(h.pull_interleaved(&mut out), 64);
        assert_eq!(w.take_output_spare_min(), Some(64));
        // Back to the default: a shortfall then waits for a buffer plus
        // the 3 ms cushion again.
        w.set_output_cushion_frames(None);
        assert_eq!(h.pull_interleaved(&mut out), 64);
        assert_eq!(h.pull_interleaved(&mut out), 0);
        push_all(&mut w, &[0.25; 64 * 3]);
        assert_eq!(h.pull_interleaved(&mut out), 64);
    }

    fn push_all(w: &mut WorkerLink, blocks: &[f32]) {
        for b in blocks.chunks_exact(w.config().block_samples()) {
            assert!(w.push_output_block(b));
        }
    }

    /// Worker and host in lock-step (one 64-frame block per 64-frame host
    /// buffer, each block holding its index), then a worker stall of
    /// `stall` buffers and a catch-up. Returns how many blocks behind the
    /// host plays before the stall and after it, and the frames repaid.
    fn stall_and_catch_up(stall: usize) -> (i64, i64, u64) {
        let (mut h, mut w) = mono_link(32);
        let mut next = 0u32;
        let mut out = [0.0f32; 64];
        let (mut before, mut after) = (None, None);
        for cycle in 0..200i64 {
            if !(100..100 + stall as i64).contains(&cycle) {
                // The tick after a stall renders every block that came due.
                let n = if cycle == 100 + stall as i64 {
                    stall + 1
                } else {
                    1
                } as u32;
                let v: Vec<f32> = (0..n * 64).map(|i| (next + i / 64) as f32).collect();
                next += n;
                push_all(&mut w, &v);
            }
            if h.pull_interleaved(&mut out) == 64 {
                let lag = cycle - out[0] as i64;
                if cycle < 100 {
                    before = Some(lag);
                } else {
                    after = Some(lag);
                }
            }
        }
        let repaid = h.stats().snapshot().audio_frames_repaid;
        (before.unwrap(), after.unwrap(), repaid)
    }

    #[test]
    fn a_dropout_from_a_late_worker_does_not_add_latency() {
        // Without repayment each buffer of silence would delay every later
        // sample for good: `after` would be `before` + the dropout.
        for stall in [4, 6, 12] {
            let (before, after, repaid) = stall_and_catch_up(stall);
            assert!(repaid > 0, "stall {stall}: nothing repaid");
            assert_eq!(
                after, before,
                "stall {stall}: played {before} blocks behind, then {after} (repaid {repaid})"
            );
        }
    }

    #[test]
    fn pulls_are_stamped_on_the_workers_clock() {
        let (mut h, mut w) = mono_link(32);
        let mut out = [0.0f32; 64];
        h.pull_interleaved(&mut out);
        // No clock: a link driven in virtual time has no use for stamps.
        assert_eq!(w.last_pull(), None);
        w.set_clock(Arc::new(crate::worker::clock::SkewedClock::new(
            5_000_000_000,
            0.0,
        )));
        let before = monotonic_ns();
        h.pull_interleaved(&mut out);
        let mut planar = [[0.0f32; 32]];
        h.pull_planar(&mut planar);
        let after = monotonic_ns();
        h.pull_planar(&mut [[0.0f32; 0]]); // nothing consumed: no stamp
        let pull = w.last_pull().expect("a stamped pull");
        assert_eq!(pull.frames, 64 + 64 + 32, "silence counts as consumed");
        assert!(
            (before + 5_000_000_000..=after + 5_000_000_000).contains(&pull.at_mono_ns),
            "{pull:?} not within {before}..{after} plus the clock's offset"
        );
        // A clock that is not a function of CLOCK_MONOTONIC maps nothing.
        w.set_clock(Arc::new(crate::worker::clock::ElapsedClock::default()));
        assert_eq!(w.last_pull(), None);
    }

    #[test]
    fn a_reader_never_sees_half_of_a_pull() {
        // The seqlock under contention: every pair read must be one that
        // was written (frames and stamp from the same pull).
        let stats = Arc::new(LinkStats::default());
        let writer = {
            let stats = stats.clone();
            std::thread::spawn(move || {
                for k in 1..=200_000u64 {
                    stats.publish_pull(HostPull {
                        frames: k * 64,
                        at_mono_ns: k * 1_333_333,
                    });
                }
            })
        };
        let (mut seen, mut last) = (0u32, 0u64);
        while !writer.is_finished() || seen == 0 {
            if let Some(p) = stats.last_pull() {
                assert_eq!(p.at_mono_ns, p.frames / 64 * 1_333_333, "torn read {p:?}");
                assert!(p.frames >= last, "went back: {p:?}");
                (seen, last) = (seen + 1, p.frames);
            }
        }
        writer.join().unwrap();
        assert_eq!(stats.last_pull().unwrap().frames, 200_000 * 64);
        assert!(seen > 0);
    }

    #[test]
    fn a_stall_the_worker_reports_is_repaid_even_soon_after_another_dropout() {
        // Lock-step as in `stall_and_catch_up`, with three worker stalls
        // within 2 s: one buffer at 20 (owed: repaid), one buffer at 40
        // (soon after: kept, a block more latency: the host's timing, as far
        // as the audio thread can tell), six at 60, which the worker reports
        // (`note_supply_stall`) before queueing its backlog: repaid. Before,
        // the third was kept too and left its blocks of latency for good.
        let (mut h, mut w) = mono_link(32);
        // No cushion (the low-latency playout's): every stall is a dropout.
        w.set_output_cushion_frames(Some(0));
        let stalls = [(20i64, 1i64), (40, 1), (60, 6)];
        let mut next = 0u32;
        let mut out = [0.0f32; 64];
        let mut lag_after = Vec::new();
        for cycle in 0..120i64 {
            let asleep = stalls.iter().any(|&(at, n)| (at..at + n).contains(&cycle));
            if !asleep {
                let owed = stalls
                    .iter()
                    .find(|&&(at, n)| at + n == cycle)
                    .map_or(0, |&(_, n)| n);
                let n = 1 + owed as u32;
                if owed > 1 {
                    w.note_supply_stall();
                }
                let v: Vec<f32> = (0..n * 64).map(|i| (next + i / 64) as f32).collect();
                next += n;
                push_all(&mut w, &v);
            }
            if h.pull_interleaved(&mut out) == 64 {
                lag_after.push((cycle, cycle - out[0] as i64));
            }
        }
        let lag_at = |c: i64| lag_after.iter().find(|(p, _)| *p >= c).unwrap().1;
        let (start, after_first, after_second, end) =
            (lag_at(10), lag_at(30), lag_at(50), lag_at(100));
        assert_eq!(after_first, start, "{lag_after:?}");
        assert_eq!(after_second, start + 1, "{lag_after:?}");
        assert_eq!(end, after_second, "{lag_after:?}");
        // The first buffer, and five of the six (the kept block covered one).
        assert_eq!(
            h.stats().snapshot().audio_frames_repaid,
            6 * 64,
            "{lag_after:?}"
        );
    }

    #[test]
    fn a_dropout_is_repaid_when_the_host_finds_it_after_the_catch_up_tick() {
        // Host and worker stall together (the whole process was descheduled);
        // on waking the host calls process() back to back to catch up, and
        // the worker's catch-up tick lands in the middle of that burst, so
        // some of the underruns are counted only after it.
        for (stall, split) in [(6, 2), (12, 5), (12, 12), (20, 3)] {
            let (mut h, mut w) = mono_link(64);
            let (mut next, mut pulls) = (0u32, 0i64);
            let mut out = [0.0f32; 64];
            let mut lags = Vec::new();
            let mut pull = |h: &mut AudioHandle, lags: &mut Vec<(i64, i64)>| {
                if h.pull_interleaved(&mut out) == 64 {
                    lags.push((pulls, pulls - out[0] as i64));
                }
                pulls += 1;
            };
            let mut tick = |w: &mut WorkerLink, n: u32| {
                let v: Vec<f32> = (0..n * 64).map(|i| (next + i / 64) as f32).collect();
                next += n;
                push_all(w, &v);
            };
            for _ in 0..100 {
                tick(&mut w, 1);
                pull(&mut h, &mut lags);
            }
            let resume = 100 + stall as i64;
            for _ in 0..split {
                pull(&mut h, &mut lags);
            }
            tick(&mut w, stall as u32 + 1);
            for _ in split..=stall {
                pull(&mut h, &mut lags);
            }
            for _ in resume + 1..resume + 60 {
                tick(&mut w, 1);
                pull(&mut h, &mut lags);
            }
            let lag_at = |from: i64| lags.iter().find(|(p, _)| *p >= from).unwrap().1;
            let (before, after) = (lag_at(90), lags.last().unwrap().1);
            assert!(
                (after - before).abs() <= 1,
                "stall {stall}, split {split}: {before} blocks behind, then {after} ({:?})",
                h.stats().snapshot()
            );
        }
    }

    #[test]
    fn silence_before_a_stream_resumes_is_not_owed() {
        let (mut h, mut w) = mono_link(32);
        let mut out = [0.0f32; 64];
        let block = [0.25f32; 64];
        for _ in 0..50 {
            push_all(&mut w, &block);
            h.pull_interleaved(&mut out);
        }
        // The sender pauses for a second: the host plays silence throughout.
        for _ in 0..750 {
            h.pull_interleaved(&mut out);
        }
        // It resumes, the first tick bringing a few blocks at once: they
        // all queue (the pause was no dropout to take back).
        push_all(&mut w, &[0.25; 6 * 64]);
        for _ in 0..20 {
            push_all(&mut w, &block);
            h.pull_interleaved(&mut out);
        }
        assert_eq!(h.stats().snapshot().audio_frames_repaid, 0);
    }

    #[test]
    fn a_host_whose_timing_needs_more_cushion_keeps_it() {
        // Every 50 ticks the host calls eight times in one tick, then not for
        // the next seven (a callback schedule that wobbles by 9 ms): more
        // than the 3 ms cushion. The first dropout is repaid; the next, soon
        // after, is the host's timing and is not, so the ring keeps the
        // extra buffer and the dropouts stop.
        let (mut h, mut w) = mono_link(32);
        let mut out = [0.0f32; 64];
        let (mut dropouts, mut was_playing) = (0, false);
        let mut pull = |h: &mut AudioHandle| {
            let playing = h.pull_interleaved(&mut out) == 64;
            if was_playing && !playing {
                dropouts += 1;
            }
            was_playing = playing;
        };
        for tick in 0..2_000 {
            push_all(&mut w, &[0.5; 64]);
            match tick % 50 {
                0 if tick > 0 => (0..8).for_each(|_| pull(&mut h)),
                1..=7 if tick > 50 => {}
                _ => pull(&mut h),
            }
        }
        let repaid = h.stats().snapshot().audio_frames_repaid;
        assert!(
            dropouts <= 3,
            "{dropouts} dropouts (repaid {repaid} frames)"
        );
        // Only the first dropout's silence (at most the burst) is repaid;
        // repaying every one gave 39 dropouts and 9984 frames skipped.
        assert!(repaid > 0 && repaid <= 8 * 64, "repaid {repaid} frames");
    }

    #[test]
    fn priming_and_a_host_that_pulls_early_drop_nothing() {
        let (mut h, mut w) = mono_link(32);
        let mut out = [0.0f32; 64];
        // Priming: the host pulls silence before anything is queued, then a
        // tick brings several blocks at once: all of them queue.
        for _ in 0..5 {
            assert_eq!(h.pull_interleaved(&mut out), 0);
        }
        push_all(&mut w, &[0.5; 4 * 64]);
        assert_eq!(w.output_blocks_queued(), 4);
        // The host plays, then pulls early (twice in one block's time) and
        // finds the ring short: the next single-block tick drops nothing.
        while h.pull_interleaved(&mut out) == 64 {}
        assert!(h.stats().snapshot().audio_frames_underrun > 5 * 64);
        push_all(&mut w, &[0.5; 64]);
        push_all(&mut w, &[0.5; 2 * 64]);
        assert_eq!(w.output_blocks_queued(), 3);
        assert_eq!(h.stats().snapshot().audio_frames_repaid, 0);
    }
}
