//! MIDI Clock (24 PPQN), Song Position Pointer, Start/Stop/Continue and MIDI
//! Time Code quarter frames, generated from the session transport with sample
//! offsets inside each block, for hosts that can follow them.
//!
//! # Realtime use
//!
//! [`MidiClockGenerator::process`] runs on the audio thread: it never
//! allocates, locks or blocks; it writes each message through a caller
//! callback as a [`MidiOut`] (fixed 10-byte array, `Copy`). Call it once per
//! segment of a block with a constant transport: when a transport command
//! lands mid-block (see [`super::BlockScheduler`]), split the block at the
//! landing offset, apply the command to the [`super::TransportState`], and
//! call it again for the rest with `offset_base` set to the landing offset.
//!
//! # What it sends
//!
//! * Start stopped → playing at position 0: `Start` (FA), then clocks.
//! * Start stopped → playing elsewhere: `SPP` (F2, in 16th notes) then
//!   `Continue` (FB). A jump while playing: `Stop`, `SPP`, `Continue`.
//! * Playing → stopped: `Stop` (FC). A jump while stopped: `SPP`.
//! * While playing: a clock (F8) at every 1/24 quarter note, on the sample
//!   where that tick falls; MTC quarter frames (F1) at 4 per frame of the
//!   chosen rate, from the song position in seconds, plus a full-frame SysEx
//!   after every start or jump.

use super::TransportState;

/// One MIDI message at a frame offset inside the block.
///
/// Thread-safe: yes (plain `Copy` value). Realtime-safe: yes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MidiOut {
    /// Frame offset inside the block.
    pub offset: u32,
    /// Message bytes (the first `len` are valid).
    pub bytes: [u8; 10],
    /// Valid bytes.
    pub len: u8,
}

impl MidiOut {
    fn new(offset: u32, data: &[u8]) -> Self {
        let mut bytes = [0u8; 10];
        let len = data.len().min(10);
        bytes[..len].copy_from_slice(&data[..len]);
        Self {
            offset,
            bytes,
            len: len as u8,
        }
    }

    /// The valid bytes.
    pub fn data(&self) -> &[u8] {
        &self.bytes[..self.len as usize]
    }
}

/// MTC frame rate.
///
/// Thread-safe: yes. Realtime-safe: yes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum MtcRate {
    /// 24 fps.
    Fps24,
    /// 25 fps.
    Fps25,
    /// 29.97 fps drop-frame.
    Fps2997Drop,
    /// 30 fps.
    Fps30,
}

impl MtcRate {
    /// Frames per second.
    pub fn fps(self) -> f64 {
        match self {
            Self::Fps24 => 24.0,
            Self::Fps25 => 25.0,
            Self::Fps2997Drop => 30_000.0 / 1001.0,
            Self::Fps30 => 30.0,
        }
    }

    /// The rate code in the hours byte (bits 5–6).
    pub fn code(self) -> u8 {
        match self {
            Self::Fps24 => 0,
            Self::Fps25 => 1,
            Self::Fps2997Drop => 2,
            Self::Fps30 => 3,
        }
    }

    /// Timecode (h, m, s, f) of frame number `frame` (drop-frame aware).
    pub fn timecode(self, frame: u64) -> (u8, u8, u8, u8) {
        let nominal = match self {
            Self::Fps24 => 24,
            Self::Fps25 => 25,
            Self::Fps2997Drop | Self::Fps30 => 30,
        };
        let mut f = frame;
        if self == Self::Fps2997Drop {
            // Frame numbers 0 and 1 are skipped every minute except every tenth.
            let per_10min = 17_982;
            let per_min = 1_798;
            let d = f / per_10min;
            let m = f % per_10min;
            let extra = if m > 1 { 2 * ((m - 2) / per_min) } else { 0 };
            f += 18 * d + extra;
        }
        let ff = (f % nominal) as u8;
        let total_s = f / nominal;
        let ss = (total_s % 60) as u8;
        let mm = ((total_s / 60) % 60) as u8;
        let hh = ((total_s / 3600) % 24) as u8;
        (hh, mm, ss, ff)
    }
}

/// Per-segment view of the transport for the generator.
///
/// Thread-safe: yes. Realtime-safe: yes.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Segment {
    /// Transport at the segment's first frame.
    pub state: TransportState,
    /// Frames in the segment.
    pub frames: u32,
    /// Offset of the segment inside the block.
    pub offset_base: u32,
    /// Sample rate, Hz.
    pub sample_rate: f64,
    /// The position jumped at this segment's start (seek, loop).
    pub jumped: bool,
}

/// Generates MIDI Clock / SPP / Start / Stop / Continue / MTC.
///
/// Thread-safe: no (audio thread). Realtime-safe: yes (no allocation, no
/// locks; O(messages) per call).
#[derive(Debug, Clone)]
pub struct MidiClockGenerator {
    was_playing: bool,
    /// Next clock tick, in 1/24 quarter notes.
    next_tick: Option<u64>,
    /// Next MTC quarter frame index.
    next_qf: Option<u64>,
    /// MTC enabled with this rate.
    pub mtc: Option<MtcRate>,
    /// Send MIDI Clock.
    pub clock: bool,
}

impl Default for MidiClockGenerator {
    fn default() -> Self {
        Self::new(true, Some(MtcRate::Fps25))
    }
}

impl MidiClockGenerator {
    /// A generator; `clock` sends MIDI Clock/SPP/Start/Stop/Continue, `mtc` quarter frames.
    pub fn new(clock: bool, mtc: Option<MtcRate>) -> Self {
        Self {
            was_playing: false,
            next_tick: None,
            next_qf: None,
            mtc,
            clock,
        }
    }

    /// Generates the messages of one segment (see the module docs), in offset order.
    pub fn process(&mut self, seg: &Segment, mut out: impl FnMut(MidiOut)) {
        let st = &seg.state;
        let base = seg.offset_base;
        let spp = |beat: f64| {
            let sixteenths = ((beat * 4.0).floor().max(0.0) as u64).min(16_383) as u16;
            [
                0xF2,
                (sixteenths & 0x7F) as u8,
                ((sixteenths >> 7) & 0x7F) as u8,
            ]
        };
        let starting = st.playing && !self.was_playing;
        let stopping = !st.playing && self.was_playing;
        if self.clock {
            if stopping {
                out(MidiOut::new(base, &[0xFC]));
            }
            if starting {
                if st.beat <= 0.0 {
                    out(MidiOut::new(base, &[0xFA]));
                } else {
                    out(MidiOut::new(base, &spp(st.beat)));
                    out(MidiOut::new(base, &[0xFB]));
                }
            } else if seg.jumped {
                if st.playing {
                    out(MidiOut::new(base, &[0xFC]));
                    out(MidiOut::new(base, &spp(st.beat)));
                    out(MidiOut::new(base, &[0xFB]));
                } else {
                    out(MidiOut::new(base, &spp(st.beat)));
                }
            }
        }
        if starting || seg.jumped || !st.playing {
            self.next_tick = None;
            self.next_qf = None;
        }
        self.was_playing = st.playing;
        if !st.playing || seg.sample_rate <= 0.0 || st.bpm <= 0.0 {
            return;
        }
        let frames_per_beat = seg.sample_rate * 60.0 / st.bpm;
        // Merge clock ticks and MTC quarter frames in time order.
        let mut tick = *self
            .next_tick
            .get_or_insert_with(|| (st.beat * 24.0 - 1e-9).ceil().max(0.0) as u64);
        let secs0 = st.position_ms / 1000.0;
        let mut qf = match self.mtc {
            Some(rate) => {
                let q = *self.next_qf.get_or_insert_with(|| {
                    // Quarter frames restart on an even frame (a full cycle
                    // spans two frames); announce the position with a full frame.
                    let exact = secs0 * rate.fps();
                    let (h, m, s, f) = rate.timecode((exact + 1e-6).floor().max(0.0) as u64);
                    let frame = (exact - 1e-6).ceil().max(0.0) as u64;
                    let frame = frame + (frame & 1);
                    out(MidiOut::new(
                        base,
                        &[
                            0xF0,
                            0x7F,
                            0x7F,
                            0x01,
                            0x01,
                            h | (rate.code() << 5),
                            m,
                            s,
                            f,
                            0xF7,
                        ],
                    ));
                    frame * 4
                });
                Some((rate, q))
            }
            None => None,
        };
        loop {
            let tick_off = if self.clock {
                ((tick as f64 / 24.0 - st.beat) * frames_per_beat).round()
            } else {
                f64::INFINITY
            };
            let qf_off = match qf {
                Some((rate, q)) => {
                    ((q as f64 / (4.0 * rate.fps()) - secs0) * seg.sample_rate).round()
                }
                None => f64::INFINITY,
            };
            let next = tick_off.min(qf_off);
            if next.is_nan() || next >= seg.frames as f64 {
                break;
            }
            let off = base + next.max(0.0) as u32;
            if tick_off <= qf_off {
                out(MidiOut::new(off, &[0xF8]));
                tick += 1;
            } else if let Some((rate, q)) = qf.as_mut() {
                let piece = (*q % 8) as u8;
                let (h, m, s, f) = rate.timecode((*q / 8) * 2);
                let value = match piece {
                    0 => f & 0x0F,
                    1 => f >> 4,
                    2 => s & 0x0F,
                    3 => s >> 4,
                    4 => m & 0x0F,
                    5 => m >> 4,
                    6 => h & 0x0F,
                    _ => ((h >> 4) & 0x01) | (rate.code() << 1),
                };
                out(MidiOut::new(off, &[0xF1, (piece << 4) | value]));
                *q += 1;
            }
        }
        self.next_tick = Some(tick);
        self.next_qf = qf.map(|(_, q)| q);
    }
}
