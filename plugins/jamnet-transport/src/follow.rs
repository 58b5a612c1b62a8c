//! Follow mode, sans-IO.
//!
//! * Worker side ([`FollowSession`]): takes decoded TOAST `transport`
//!   messages, orders them with [`TransportQueue`] (master first, then
//!   timestamp, seq, peer id), applies them to a [`TransportState`] and binds
//!   each applied command to a sample of the plugin's running sample counter
//!   through the [`DawClock`] (session time → local CPU time → sample). The
//!   result is an [`Anchor`]: "at running sample `sample`, the session
//!   transport is `state`" — a small `Copy` record sent to the audio thread
//!   through an `rtrb` ring.
//! * Audio side ([`FollowCore`]): per block, applies the anchors whose sample
//!   falls inside the block at their exact offset (splitting the block),
//!   extrapolates the session transport to every segment, and drives the
//!   [`MidiClockGenerator`] (MIDI Clock, SPP, Start/Stop/Continue, MTC) with
//!   sample offsets. It also reports the session position at the block's
//!   first sample, so the plugin can show the host's offset from the session.
//!
//! Session time: the lead stamps its commands in session time (PROTOCOL.md
//! section 5). The plugin's worker runs the session clock arbiter and maps
//! each received timestamp to this host's `CLOCK_MONOTONIC` before
//! [`FollowSession::on_command`], so everything in this module works in
//! local time: command timestamps, `on_block`'s `local_ns` and `poll`'s
//! `now_ns`. With no clock peers session time is the local clock (see
//! docs/plugins.md, "Session time").

use bridge_core::clock::DawClock;
use bridge_core::transport::midi_clock::Segment;
use bridge_core::transport::{
    MidiClockGenerator, MidiOut, MtcRate, TransportCommand, TransportCommandKind, TransportError,
    TransportQueue, TransportState,
};

/// A jump larger than this (ms of song position) between where the session
/// transport was heading and where a new command puts it is a seek: MIDI
/// Clock followers get Stop/SPP/Continue. Smaller differences (re-announce
/// jitter, clock mapping refinements) are absorbed silently.
pub const JUMP_TOLERANCE_MS: f64 = 20.0;

/// Commands handed to the audio thread this long before they are due.
pub const HAND_OFF_HORIZON_NS: u64 = 200_000_000;

/// Pending anchors the audio thread holds (each fires on its own sample).
pub const PENDING_ANCHORS: usize = 16;

/// The session transport bound to the plugin's running sample counter.
///
/// Thread-safe: yes (plain `Copy` value, sent through an `rtrb` ring).
/// Realtime-safe: yes.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Anchor {
    /// Running sample (since activation) where `state` holds (fractional).
    pub sample: f64,
    /// The session transport at that sample.
    pub state: TransportState,
    /// The command that produced it.
    pub kind: TransportCommandKind,
    /// Master peer id the command named.
    pub master: u32,
    /// Sender of the command.
    pub from: u32,
}

impl Anchor {
    /// The session transport at running sample `sample`, extrapolated from
    /// the anchor (no change while stopped).
    pub fn state_at(&self, sample: f64, sample_rate: f64) -> TransportState {
        let mut st = self.state;
        if st.playing && sample_rate > 0.0 {
            let secs = (sample - self.sample) / sample_rate;
            st.position_ms += secs * 1000.0;
            st.beat += secs * st.bpm / 60.0;
        }
        st
    }
}

/// Why the worker did not take a command.
///
/// Thread-safe: yes. Realtime-safe: yes.
#[derive(Debug, Clone, Copy, PartialEq, thiserror::Error)]
pub enum FollowError {
    /// The command failed validation or lost a conflict.
    #[error("transport command refused: {0}")]
    Refused(#[from] TransportError),
}

/// Worker half of follow mode.
///
/// Thread-safe: no (owned by the worker). Realtime-safe: no (the queue may
/// shift elements; it never runs on the audio thread).
#[derive(Debug)]
pub struct FollowSession {
    queue: TransportQueue,
    state: TransportState,
    daw: DawClock,
    /// Latest (running sample, local ns) pair, used until the DAW clock fit
    /// has an estimate.
    last_block: Option<(u64, u64)>,
    sample_rate: f64,
    master: u32,
    /// Conflicts counted by queues dropped with [`FollowSession::drop_pending`].
    conflicts_before: u64,
}

impl FollowSession {
    /// A follower for a host running at `sample_rate`.
    pub fn new(sample_rate: f64) -> Self {
        Self {
            queue: Self::new_queue(),
            conflicts_before: 0,
            state: TransportState::default(),
            daw: DawClock::new(sample_rate),
            last_block: None,
            sample_rate,
            master: 0,
        }
    }

    /// A `process()` block whose first running sample is `sample` started at
    /// local time `local_ns`.
    pub fn on_block(&mut self, sample: u64, local_ns: u64) {
        // A rejected pair (e.g. a counter restart) only resets the fit.
        let _ = self.daw.on_process(sample, local_ns);
        self.last_block = Some((sample, local_ns));
    }

    /// Running sample playing at local time `local_ns` (the DAW clock fit,
    /// else the latest block's start extrapolated at the nominal rate).
    pub fn sample_at(&self, local_ns: u64) -> Option<f64> {
        if let Some(s) = self.daw.sample_at_local(local_ns) {
            return Some(s);
        }
        let (s, t) = self.last_block?;
        Some(s as f64 + (local_ns as f64 - t as f64) * self.sample_rate / 1e9)
    }

    /// A received command.
    pub fn on_command(&mut self, cmd: TransportCommand) -> Result<(), FollowError> {
        self.queue.push(cmd)?;
        Ok(())
    }

    /// Commands dropped by conflicts so far.
    pub fn conflicts(&self) -> u64 {
        self.conflicts_before + self.queue.dropped()
    }

    /// Drops every command not applied yet and returns how many: their
    /// timestamps were mapped to local time with a session-clock mapping
    /// the worker no longer trusts (the sender re-announces its state).
    pub fn drop_pending(&mut self) -> usize {
        let n = self.queue.pending().len();
        self.conflicts_before += self.queue.dropped();
        self.queue = Self::new_queue();
        n
    }

    fn new_queue() -> TransportQueue {
        TransportQueue::new(64, bridge_core::transport::DEFAULT_LEAD_NS)
    }

    /// The session transport after the last applied command.
    pub fn state(&self) -> &TransportState {
        &self.state
    }

    /// Master peer named by the last applied command (0: none yet).
    pub fn master(&self) -> u32 {
        self.master
    }

    /// Applies every command due before `now_ns + horizon` and returns their
    /// anchors in time order through `out`. Commands are only bound to
    /// samples once the host has run at least one block.
    pub fn poll(&mut self, now_ns: u64, mut out: impl FnMut(Anchor)) {
        if self.last_block.is_none() {
            return;
        }
        while let Some(cmd) = self
            .queue
            .pop_due(now_ns.saturating_add(HAND_OFF_HORIZON_NS))
        {
            self.state.apply(&cmd);
            self.master = cmd.master_peer;
            let Some(sample) = self.sample_at(cmd.timestamp) else {
                continue;
            };
            out(Anchor {
                sample,
                state: self.state,
                kind: cmd.kind,
                master: cmd.master_peer,
                from: cmd.from,
            });
        }
    }
}

/// The host's offset from the session at one sample: host song position
/// minus session position, in ms and in samples (positive: the host is
/// ahead). Realtime-safe: yes.
pub fn host_offset(host_pos_s: f64, session_pos_ms: f64, sample_rate: f64) -> (f64, f64) {
    let ms = host_pos_s * 1000.0 - session_pos_ms;
    (ms, ms * sample_rate / 1000.0)
}

/// Which messages the audio thread emits.
///
/// Thread-safe: yes. Realtime-safe: yes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MidiOptions {
    /// MIDI Clock + Start/Stop/Continue.
    pub clock: bool,
    /// Song Position Pointer on start and seek (only with `clock`).
    pub spp: bool,
    /// MTC quarter frames at this rate.
    pub mtc: Option<MtcRate>,
}

/// What one block saw, for the editor.
///
/// Thread-safe: yes. Realtime-safe: yes.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BlockView {
    /// Session transport at the block's first sample (None: nothing received yet).
    pub state: Option<TransportState>,
    /// Master peer.
    pub master: u32,
    /// Anchors applied in this block.
    pub applied: u32,
    /// Of which landed after their sample (applied at the block start).
    pub late: u32,
}

/// Audio-thread half of follow mode.
///
/// Thread-safe: no (owned by the audio thread). Realtime-safe: yes — fixed
/// arrays, no allocation, no locks, O(pending + messages) per block.
#[derive(Debug, Clone)]
pub struct FollowCore {
    current: Option<Anchor>,
    pending: [Option<Anchor>; PENDING_ANCHORS],
    generator: MidiClockGenerator,
    running: u64,
    overflow: u64,
}

impl Default for FollowCore {
    fn default() -> Self {
        Self::new()
    }
}

impl FollowCore {
    /// Nothing received yet.
    pub fn new() -> Self {
        Self {
            current: None,
            pending: [None; PENDING_ANCHORS],
            generator: MidiClockGenerator::new(true, None),
            running: 0,
            overflow: 0,
        }
    }

    /// The running sample of the next block's first frame.
    pub fn running_sample(&self) -> u64 {
        self.running
    }

    /// Anchors dropped because the pending slots were full.
    pub fn overflow(&self) -> u64 {
        self.overflow
    }

    /// Queue an anchor from the worker.
    pub fn push(&mut self, a: Anchor) {
        match self.pending.iter_mut().find(|s| s.is_none()) {
            Some(slot) => *slot = Some(a),
            None => self.overflow += 1,
        }
    }

    /// The earliest pending anchor with a sample before `end`.
    fn next_due(&self, end: f64) -> Option<usize> {
        let mut best: Option<(usize, f64)> = None;
        for (i, s) in self.pending.iter().enumerate() {
            if let Some(a) = s {
                if a.sample.round() < end && best.is_none_or(|(_, b)| a.sample < b) {
                    best = Some((i, a.sample));
                }
            }
        }
        best.map(|(i, _)| i)
    }

    /// Run one block of `frames` at `sample_rate`: apply due anchors on
    /// their sample, emit MIDI through `out` (offsets inside the block, in
    /// order), advance the running counter.
    pub fn process_block(
        &mut self,
        frames: u32,
        sample_rate: f64,
        opts: MidiOptions,
        mut out: impl FnMut(MidiOut),
    ) -> BlockView {
        self.generator.clock = opts.clock;
        self.generator.mtc = opts.mtc;
        let start = self.running as f64;
        let end = start + frames as f64;
        let mut view = BlockView {
            state: self.current.map(|a| a.state_at(start, sample_rate)),
            master: self.current.map_or(0, |a| a.master),
            applied: 0,
            late: 0,
        };
        let mut offset = 0u32;
        loop {
            let next = self.next_due(end);
            // Where the next anchor takes effect (the nearest sample; one
            // that is already past lands at the current offset, late).
            let at = next.and_then(|i| self.pending[i]).map(|a| {
                let rel = (a.sample - start).round();
                if rel < offset as f64 {
                    (offset, true)
                } else {
                    ((rel as u32).min(frames), false)
                }
            });
            let seg_end = at.map_or(frames, |(o, _)| o);
            if seg_end > offset {
                if let Some(cur) = self.current {
                    let seg = Segment {
                        state: cur.state_at(start + offset as f64, sample_rate),
                        frames: seg_end - offset,
                        offset_base: offset,
                        sample_rate,
                        jumped: false,
                    };
                    self.emit(&seg, opts, &mut out);
                }
                offset = seg_end;
            }
            let (Some(i), Some((o, late))) = (next, at) else {
                break;
            };
            let Some(mut anchor) = self.pending[i].take() else {
                break;
            };
            let here = start + o as f64;
            if !late {
                // On time: the command's state holds on its landing sample
                // exactly (a command at position 0 must give Start, not
                // Continue at 1e-8 beats).
                anchor.sample = here;
            }
            let new_state = anchor.state_at(here, sample_rate);
            let jumped = match self.current {
                None => false,
                Some(cur) => {
                    let old = cur.state_at(here, sample_rate);
                    anchor.kind == TransportCommandKind::Seek
                        || (old.position_ms - new_state.position_ms).abs() > JUMP_TOLERANCE_MS
                }
            };
            self.current = Some(anchor);
            view.applied += 1;
            view.late += late as u32;
            view.master = anchor.master;
            if o == 0 {
                view.state = Some(new_state);
            }
            // A zero-length segment at the landing offset carries the
            // Start/Stop/SPP/Continue of the change.
            if o < frames {
                let seg = Segment {
                    state: new_state,
                    frames: 0,
                    offset_base: o,
                    sample_rate,
                    jumped,
                };
                self.emit(&seg, opts, &mut out);
            }
        }
        self.running += frames as u64;
        view
    }

    fn emit(&mut self, seg: &Segment, opts: MidiOptions, out: &mut impl FnMut(MidiOut)) {
        self.generator.process(seg, |m| {
            // SPP is optional: drop it (keep Stop/Continue) when disabled.
            if !opts.spp && m.len == 3 && m.bytes[0] == 0xF2 {
                return;
            }
            out(m)
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bridge_core::transport::TimeSignature;

    const SR: f64 = 48_000.0;

    fn cmd(
        kind: TransportCommandKind,
        t_ns: u64,
        pos_ms: f64,
        bpm: f64,
        seq: u64,
    ) -> TransportCommand {
        TransportCommand {
            kind,
            timestamp: t_ns,
            position_ms: pos_ms,
            bpm,
            time_signature: TimeSignature::COMMON,
            beat: None,
            seq,
            master_peer: 7,
            from: 7,
        }
    }

    const OPTS: MidiOptions = MidiOptions {
        clock: true,
        spp: true,
        mtc: None,
    };

    /// Drive worker and audio halves block by block in simulated real time
    /// (block k starts at local time t0 + k·block/SR), collecting the MIDI
    /// with absolute running-sample positions.
    struct Rig {
        session: FollowSession,
        core: FollowCore,
        t0: u64,
        block: u32,
        midi: Vec<(u64, Vec<u8>)>,
    }

    impl Rig {
        fn new(block: u32) -> Self {
            Self {
                session: FollowSession::new(SR),
                core: FollowCore::new(),
                t0: 5_000_000_000,
                block,
                midi: Vec::new(),
            }
        }
        fn local_ns(&self, sample: u64) -> u64 {
            self.t0 + (sample as f64 * 1e9 / SR).round() as u64
        }
        fn run_blocks(&mut self, n: u32, opts: MidiOptions) -> Vec<BlockView> {
            let mut views = Vec::new();
            for _ in 0..n {
                let s = self.core.running_sample();
                let now = self.local_ns(s);
                self.session.on_block(s, now);
                let core = &mut self.core;
                self.session.poll(now, |a| core.push(a));
                let midi = &mut self.midi;
                views.push(self.core.process_block(self.block, SR, opts, |m| {
                    midi.push((s + m.offset as u64, m.data().to_vec()))
                }));
            }
            views
        }
    }

    #[test]
    fn play_at_120_bpm_gives_48_clocks_per_second_on_exact_samples() {
        let mut rig = Rig::new(64);
        rig.run_blocks(10, OPTS);
        // Play from 0 at sample 48_000 (1 s after t0), 120 BPM: a tick every
        // 1/48 s = 1000 samples.
        let t_play = rig.local_ns(48_000);
        rig.session
            .on_command(cmd(TransportCommandKind::Play, t_play, 0.0, 120.0, 1))
            .unwrap();
        rig.run_blocks(48_000 * 3 / 64, OPTS); // to sample 144_640
        let starts: Vec<_> = rig.midi.iter().filter(|m| m.1 == [0xFA]).collect();
        assert_eq!(starts.len(), 1);
        assert_eq!(starts[0].0, 48_000, "Start lands on its sample");
        let ticks: Vec<u64> = rig
            .midi
            .iter()
            .filter(|m| m.1 == [0xF8])
            .map(|m| m.0)
            .collect();
        // Samples 48_000 ..= 144_639: ticks at 48_000 + 1000·k for k = 0..=96.
        assert_eq!(ticks.len(), 97, "{:?}", &ticks[..4]);
        for (k, t) in ticks.iter().enumerate() {
            assert_eq!(*t, 48_000 + 1000 * k as u64, "tick {k}");
        }
        // Start comes before the first clock on the same sample.
        let i_start = rig.midi.iter().position(|m| m.1 == [0xFA]).unwrap();
        let i_tick = rig.midi.iter().position(|m| m.1 == [0xF8]).unwrap();
        assert!(i_start < i_tick);
    }

    #[test]
    fn reannounces_keep_the_clock_steady_and_seek_sends_spp() {
        let mut rig = Rig::new(128);
        rig.run_blocks(4, OPTS);
        let t = |s: u64| rig.local_ns(s);
        let (t1, t2, t3) = (t(1_000), t(25_000), t(49_000));
        rig.session
            .on_command(cmd(TransportCommandKind::Play, t1, 0.0, 90.0, 1))
            .unwrap();
        // Re-announces of the same state (a few ms of mapping error absorbed).
        rig.session
            .on_command(cmd(TransportCommandKind::Play, t2, 500.0 + 0.3, 90.0, 1))
            .unwrap();
        // Seek to 8 s (beat 12 at 90 BPM: 16th note 48).
        rig.session
            .on_command(cmd(TransportCommandKind::Seek, t3, 8000.0, 90.0, 2))
            .unwrap();
        rig.run_blocks(600, OPTS); // to sample 604·128 = 77_312
        let at = |bytes: &[u8]| -> Vec<u64> {
            rig.midi
                .iter()
                .filter(|m| m.1 == bytes)
                .map(|m| m.0)
                .collect()
        };
        assert_eq!(at(&[0xFA]), vec![1_000]);
        // The seek: Stop, SPP(48 sixteenths), Continue, all on sample 49_000.
        assert_eq!(at(&[0xFC]), vec![49_000]);
        assert_eq!(at(&[0xF2, 48, 0]), vec![49_000]);
        assert_eq!(at(&[0xFB]), vec![49_000]);
        // 90 BPM: 36 ticks/s = a tick every 1333.33 samples, from 1000. The
        // re-announce at 25_000 is 0.3 ms (14.4 samples) ahead of the grid:
        // absorbed without Stop/SPP, the grid moves by 14 samples, no gap or
        // double tick; that shift fits one more tick (48_986) before 49_000.
        let ticks = at(&[0xF8]);
        let before: Vec<u64> = ticks.iter().copied().filter(|&s| s < 49_000).collect();
        assert_eq!(before.len(), 37, "{before:?}");
        assert_eq!(before[18], 25_000);
        assert_eq!(before[19], 26_319);
        for w in before.windows(2) {
            let d = w[1] - w[0];
            assert!((1318..=1334).contains(&d), "tick spacing {d} in {before:?}");
        }
        // After the seek the ticks restart on the beat grid at 8 s (beat 12 exactly).
        let after: Vec<u64> = ticks.iter().copied().filter(|&s| s >= 49_000).collect();
        assert_eq!(after[0], 49_000);
        let span = 77_312 - 49_000;
        let expect = (span as f64 / (SR * 60.0 / 90.0 / 24.0)).ceil() as usize;
        assert_eq!(after.len(), expect);
    }

    #[test]
    fn stop_sends_stop_and_no_more_clocks_and_spp_can_be_disabled() {
        let mut rig = Rig::new(64);
        rig.run_blocks(2, OPTS);
        let t1 = rig.local_ns(0);
        rig.session
            .on_command(cmd(TransportCommandKind::Play, t1, 2000.0, 120.0, 1))
            .unwrap();
        let t2 = rig.local_ns(20_000);
        rig.session
            .on_command(cmd(
                TransportCommandKind::Stop,
                t2,
                2000.0 + 20_000.0 / 48.0,
                120.0,
                2,
            ))
            .unwrap();
        let no_spp = MidiOptions { spp: false, ..OPTS };
        rig.run_blocks(600, no_spp);
        // Started mid-song at block 2 (sample 128, the anchor at sample 0 is late):
        // Continue without SPP (disabled), then ticks, then Stop on 20_000.
        assert!(rig.midi.iter().all(|m| m.1[0] != 0xF2));
        let cont: Vec<_> = rig.midi.iter().filter(|m| m.1 == [0xFB]).collect();
        assert_eq!(cont.len(), 1);
        assert_eq!(cont[0].0, 128);
        let stop: Vec<_> = rig.midi.iter().filter(|m| m.1 == [0xFC]).collect();
        assert_eq!(stop.len(), 1);
        assert_eq!(stop[0].0, 20_000);
        assert!(rig
            .midi
            .iter()
            .filter(|m| m.1 == [0xF8])
            .all(|m| m.0 < 20_000));
    }

    #[test]
    fn host_offset_is_host_minus_session() {
        assert_eq!(host_offset(2.0, 1990.0, 48_000.0), (10.0, 480.0));
        assert_eq!(host_offset(0.0, 250.0, 44_100.0), (-250.0, -11_025.0));
    }

    #[test]
    fn block_view_reports_session_position_for_the_offset() {
        let mut rig = Rig::new(256);
        rig.run_blocks(1, OPTS);
        let t = rig.local_ns(256);
        rig.session
            .on_command(cmd(TransportCommandKind::Play, t, 1000.0, 120.0, 1))
            .unwrap();
        let views = rig.run_blocks(10, OPTS);
        // Block 10 starts at sample 2560: 2304 samples after the anchor.
        let last = views.last().unwrap().state.unwrap();
        let want = 1000.0 + (2560.0 - 256.0) / 48.0;
        assert!(
            (last.position_ms - want).abs() < 1e-6,
            "{}",
            last.position_ms
        );
        assert_eq!(views.last().unwrap().master, 7);
    }

    #[test]
    fn mtc_quarter_frames_every_480_samples_at_25_fps() {
        let mut rig = Rig::new(64);
        rig.run_blocks(1, OPTS);
        let t = rig.local_ns(4_800);
        rig.session
            .on_command(cmd(TransportCommandKind::Play, t, 0.0, 120.0, 1))
            .unwrap();
        let opts = MidiOptions {
            clock: false,
            spp: true,
            mtc: Some(MtcRate::Fps25),
        };
        rig.run_blocks(48_000 / 64, opts); // to sample 48_064
        assert!(rig.midi.iter().all(|m| m.1[0] != 0xF8 && m.1[0] != 0xFA));
        let full: Vec<_> = rig.midi.iter().filter(|m| m.1[0] == 0xF0).collect();
        assert_eq!(full.len(), 1);
        assert_eq!(full[0].0, 4_800);
        // 25 fps rate code 1 in the hours byte, 00:00:00:00.
        assert_eq!(
            full[0].1,
            [0xF0, 0x7F, 0x7F, 0x01, 0x01, 0x20, 0, 0, 0, 0xF7]
        );
        let qf: Vec<_> = rig.midi.iter().filter(|m| m.1[0] == 0xF1).collect();
        // Samples 4_800 ..< 48_064: one every 480 = 91 quarter frames.
        assert_eq!(qf.len(), 91);
        for (k, m) in qf.iter().enumerate() {
            assert_eq!(m.0, 4_800 + 480 * k as u64, "quarter frame {k}");
            assert_eq!(m.1[1] >> 4, (k % 8) as u8, "piece order");
        }
    }

    /// Commands mapped with a session-clock mapping the worker dropped
    /// never fire; later ones do.
    #[test]
    fn drop_pending_forgets_commands_not_applied_yet() {
        let mut f = FollowSession::new(SR);
        f.on_block(0, 1_000_000_000);
        // Mapped by identity from a lead whose clock is 5 s ahead.
        f.on_command(cmd(
            TransportCommandKind::Stop,
            6_000_000_000,
            0.0,
            120.0,
            1,
        ))
        .unwrap();
        assert_eq!(f.drop_pending(), 1);
        f.on_command(cmd(
            TransportCommandKind::Play,
            1_010_000_000,
            0.0,
            120.0,
            2,
        ))
        .unwrap();
        let mut anchors = Vec::new();
        f.poll(7_000_000_000, |a| anchors.push(a));
        assert_eq!(anchors.len(), 1);
        assert_eq!(anchors[0].kind, TransportCommandKind::Play);
        assert!(f.state().playing);
        assert_eq!(f.drop_pending(), 0);
    }
}
