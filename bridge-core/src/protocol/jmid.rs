//! JMID: MIDI events over TOAST (PROTOCOL.md section 3.5), in both formats.
//!
//! * STANDARD_JSON: one event as a named object (`"event":"note_on"`, …).
//! * COMPACT_JSONL: one or more lines, each with the raw MIDI bytes `m`.
//!
//! Both carry the event's sounding time (`timestamp`/`ts`, session ns) and its
//! burst identity (`burst_id`/`b` as 16 lowercase hex digits, index, size):
//! a receiver delivers each (source, burst id) once.

use super::frame::EncodeError;
use super::messages::{write_json, write_json_value};
use super::validate::{
    ensure, in_range, lower_hex_bytes, lower_hex_u64, present, Checked, Invalid,
};
use super::RejectReason;
use serde::ser::SerializeMap;
use serde::{Deserialize, Serialize, Serializer};
use std::borrow::Cow;

/// Largest burst size accepted on the wire (copies of one event).
pub const MAX_BURST_SIZE: u8 = 64;

/// One MIDI message, validated. Channels are 1–16 as in the protocol.
///
/// Thread-safe: yes. Realtime-safe: yes for every variant except `Sysex`
/// (which owns its bytes).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum MidiMessage {
    /// Note on (velocity 0 is kept as sent).
    NoteOn {
        /// 1–16.
        channel: u8,
        /// 0–127.
        note: u8,
        /// 0–127.
        velocity: u8,
    },
    /// Note off.
    NoteOff {
        /// 1–16.
        channel: u8,
        /// 0–127.
        note: u8,
        /// 0–127.
        velocity: u8,
    },
    /// Control change.
    ControlChange {
        /// 1–16.
        channel: u8,
        /// 0–127.
        controller: u8,
        /// 0–127.
        value: u8,
    },
    /// Program change.
    ProgramChange {
        /// 1–16.
        channel: u8,
        /// 0–127.
        program: u8,
    },
    /// Pitch bend, −8192–8191 (0 = centre).
    PitchBend {
        /// 1–16.
        channel: u8,
        /// −8192–8191.
        value: i16,
    },
    /// Channel pressure (aftertouch).
    ChannelPressure {
        /// 1–16.
        channel: u8,
        /// 0–127.
        pressure: u8,
    },
    /// Polyphonic key pressure.
    PolyPressure {
        /// 1–16.
        channel: u8,
        /// 0–127.
        note: u8,
        /// 0–127.
        pressure: u8,
    },
    /// System exclusive: the bytes between F0 and F7.
    Sysex(Vec<u8>),
    /// System common / realtime (F1–FF except F0/F7): only in COMPACT_JSONL.
    System {
        /// Status byte and up to two data bytes.
        bytes: [u8; 3],
        /// How many of `bytes` are used (1–3).
        len: u8,
    },
}

fn data_byte(b: u8) -> Checked<u8> {
    ensure(b < 0x80).map(|_| b)
}

impl MidiMessage {
    /// Parse raw MIDI bytes (one complete message; SysEx from F0 to F7).
    pub fn from_bytes(m: &[u8]) -> Result<Self, RejectReason> {
        Self::from_bytes_checked(m).map_err(|_| RejectReason::BadPayload)
    }

    fn from_bytes_checked(m: &[u8]) -> Checked<Self> {
        let (&status, data) = m.split_first().ok_or(Invalid)?;
        ensure(status >= 0x80)?;
        let channel = (status & 0x0f) + 1;
        let need = |n: usize| ensure(data.len() == n);
        Ok(match status & 0xf0 {
            0x80 => {
                need(2)?;
                MidiMessage::NoteOff {
                    channel,
                    note: data_byte(data[0])?,
                    velocity: data_byte(data[1])?,
                }
            }
            0x90 => {
                need(2)?;
                MidiMessage::NoteOn {
                    channel,
                    note: data_byte(data[0])?,
                    velocity: data_byte(data[1])?,
                }
            }
            0xa0 => {
                need(2)?;
                MidiMessage::PolyPressure {
                    channel,
                    note: data_byte(data[0])?,
                    pressure: data_byte(data[1])?,
                }
            }
            0xb0 => {
                need(2)?;
                MidiMessage::ControlChange {
                    channel,
                    controller: data_byte(data[0])?,
                    value: data_byte(data[1])?,
                }
            }
            0xc0 => {
                need(1)?;
                MidiMessage::ProgramChange {
                    channel,
                    program: data_byte(data[0])?,
                }
            }
            0xd0 => {
                need(1)?;
                MidiMessage::ChannelPressure {
                    channel,
                    pressure: data_byte(data[0])?,
                }
            }
            0xe0 => {
                need(2)?;
                let v = u16::from(data_byte(data[0])?) | (u16::from(data_byte(data[1])?) << 7);
                MidiMessage::PitchBend {
                    channel,
                    value: v as i16 - 8192,
                }
            }
            _ => match status {
                0xf0 => {
                    let (&last, body) = data.split_last().ok_or(Invalid)?;
                    ensure(last == 0xf7)?;
                    body.iter().try_for_each(|&b| data_byte(b).map(|_| ()))?;
                    MidiMessage::Sysex(body.to_vec())
                }
                0xf7 => return Err(Invalid),
                _ => {
                    let n = match status {
                        0xf1 | 0xf3 => 1,
                        0xf2 => 2,
                        _ => 0,
                    };
                    need(n)?;
                    data.iter().try_for_each(|&b| data_byte(b).map(|_| ()))?;
                    let mut bytes = [status, 0, 0];
                    bytes[1..1 + n].copy_from_slice(data);
                    MidiMessage::System {
                        bytes,
                        len: 1 + n as u8,
                    }
                }
            },
        })
    }

    /// Raw MIDI bytes into `out`; returns the length (SysEx includes F0 … F7).
    pub fn write_bytes(&self, out: &mut [u8]) -> Result<usize, EncodeError> {
        let mut short = [0u8; 3];
        let bytes: &[u8] = match *self {
            MidiMessage::NoteOff {
                channel,
                note,
                velocity,
            } => {
                short = [0x80 | ch(channel), note & 0x7f, velocity & 0x7f];
                &short
            }
            MidiMessage::NoteOn {
                channel,
                note,
                velocity,
            } => {
                short = [0x90 | ch(channel), note & 0x7f, velocity & 0x7f];
                &short
            }
            MidiMessage::PolyPressure {
                channel,
                note,
                pressure,
            } => {
                short = [0xa0 | ch(channel), note & 0x7f, pressure & 0x7f];
                &short
            }
            MidiMessage::ControlChange {
                channel,
                controller,
                value,
            } => {
                short = [0xb0 | ch(channel), controller & 0x7f, value & 0x7f];
                &short
            }
            MidiMessage::ProgramChange { channel, program } => {
                short[..2].copy_from_slice(&[0xc0 | ch(channel), program & 0x7f]);
                &short[..2]
            }
            MidiMessage::ChannelPressure { channel, pressure } => {
                short[..2].copy_from_slice(&[0xd0 | ch(channel), pressure & 0x7f]);
                &short[..2]
            }
            MidiMessage::PitchBend { channel, value } => {
                let v = (i32::from(value).clamp(-8192, 8191) + 8192) as u16;
                short = [0xe0 | ch(channel), (v & 0x7f) as u8, (v >> 7) as u8];
                &short
            }
            MidiMessage::System { ref bytes, len } => &bytes[..usize::from(len.clamp(1, 3))],
            MidiMessage::Sysex(ref body) => {
                let n = body.len() + 2;
                if out.len() < n {
                    return Err(EncodeError::BufferTooSmall {
                        needed: n,
                        available: out.len(),
                    });
                }
                out[0] = 0xf0;
                out[1..n - 1].copy_from_slice(body);
                out[n - 1] = 0xf7;
                return Ok(n);
            }
        };
        let n = bytes.len();
        if out.len() < n {
            return Err(EncodeError::BufferTooSmall {
                needed: n,
                available: out.len(),
            });
        }
        out[..n].copy_from_slice(bytes);
        Ok(n)
    }
}

fn ch(channel: u8) -> u8 {
    channel.clamp(1, 16) - 1
}

/// A JMID event with its timing and burst identity.
///
/// Thread-safe: yes. Realtime-safe: yes unless the message is SysEx.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct JmidEvent {
    /// The MIDI message.
    pub message: MidiMessage,
    /// When it sounds, session ns.
    pub timestamp: u64,
    /// Unique per sender: (source, burst_id) is one logical event.
    pub burst_id: u64,
    /// Index of this copy in its burst (< `burst_size`).
    pub burst_index: u8,
    /// Copies in the burst (1–[`MAX_BURST_SIZE`]).
    pub burst_size: u8,
}

#[derive(Deserialize)]
struct JmidWire<'a> {
    #[serde(rename = "type", borrow)]
    ty: Cow<'a, str>,
    #[serde(borrow)]
    event: Cow<'a, str>,
    #[serde(default, deserialize_with = "present")]
    channel: Option<i64>,
    #[serde(default, deserialize_with = "present")]
    note: Option<i64>,
    #[serde(default, deserialize_with = "present")]
    velocity: Option<i64>,
    #[serde(default, deserialize_with = "present")]
    controller: Option<i64>,
    #[serde(default, deserialize_with = "present")]
    value: Option<i64>,
    #[serde(default, deserialize_with = "present")]
    program: Option<i64>,
    #[serde(default, deserialize_with = "present")]
    pressure: Option<i64>,
    #[serde(borrow, default, deserialize_with = "present")]
    data: Option<Cow<'a, str>>,
    timestamp: u64,
    #[serde(borrow)]
    burst_id: Cow<'a, str>,
    burst_index: u8,
    burst_size: u8,
}

fn field7(v: Option<i64>) -> Checked<u8> {
    in_range(v.ok_or(Invalid)?, 0, 127).map(|v| v as u8)
}

fn check_burst(index: u8, size: u8) -> Checked<()> {
    ensure((1..=MAX_BURST_SIZE).contains(&size) && index < size)
}

impl JmidEvent {
    /// Parse and validate a STANDARD_JSON `jmid` payload.
    pub fn parse_json(payload: &[u8]) -> Result<Self, RejectReason> {
        Self::parse_checked(payload).map_err(|_| RejectReason::BadPayload)
    }

    fn parse_checked(payload: &[u8]) -> Checked<Self> {
        let w: JmidWire = serde_json::from_slice(payload).map_err(|_| Invalid)?;
        ensure(w.ty == "jmid")?;
        let channel =
            || -> Checked<u8> { in_range(w.channel.ok_or(Invalid)?, 1, 16).map(|c| c as u8) };
        let message = match &*w.event {
            "note_on" => MidiMessage::NoteOn {
                channel: channel()?,
                note: field7(w.note)?,
                velocity: field7(w.velocity)?,
            },
            "note_off" => MidiMessage::NoteOff {
                channel: channel()?,
                note: field7(w.note)?,
                velocity: field7(w.velocity)?,
            },
            "control_change" => MidiMessage::ControlChange {
                channel: channel()?,
                controller: field7(w.controller)?,
                value: field7(w.value)?,
            },
            "program_change" => MidiMessage::ProgramChange {
                channel: channel()?,
                program: field7(w.program)?,
            },
            "pitch_bend" => MidiMessage::PitchBend {
                channel: channel()?,
                value: in_range(w.value.ok_or(Invalid)?, -8192, 8191)? as i16,
            },
            "channel_pressure" => MidiMessage::ChannelPressure {
                channel: channel()?,
                pressure: field7(w.pressure)?,
            },
            "poly_pressure" => MidiMessage::PolyPressure {
                channel: channel()?,
                note: field7(w.note)?,
                pressure: field7(w.pressure)?,
            },
            "sysex" => {
                let data = lower_hex_bytes(w.data.as_deref().ok_or(Invalid)?)?;
                data.iter().try_for_each(|&b| data_byte(b).map(|_| ()))?;
                MidiMessage::Sysex(data)
            }
            _ => return Err(Invalid),
        };
        check_burst(w.burst_index, w.burst_size)?;
        Ok(JmidEvent {
            message,
            timestamp: w.timestamp,
            burst_id: lower_hex_u64(&w.burst_id, 16)?,
            burst_index: w.burst_index,
            burst_size: w.burst_size,
        })
    }

    /// Check what a receiver would reject: channel 1–16, 7-bit data, pitch
    /// bend range, burst index < size ≤ 64.
    pub fn check_fields(&self) -> Result<(), EncodeError> {
        let ok = match &self.message {
            MidiMessage::NoteOn {
                channel,
                note: a,
                velocity: b,
            }
            | MidiMessage::NoteOff {
                channel,
                note: a,
                velocity: b,
            }
            | MidiMessage::ControlChange {
                channel,
                controller: a,
                value: b,
            }
            | MidiMessage::PolyPressure {
                channel,
                note: a,
                pressure: b,
            } => (1..=16).contains(channel) && *a < 0x80 && *b < 0x80,
            MidiMessage::ProgramChange {
                channel,
                program: a,
            }
            | MidiMessage::ChannelPressure {
                channel,
                pressure: a,
            } => (1..=16).contains(channel) && *a < 0x80,
            MidiMessage::PitchBend { channel, value } => {
                (1..=16).contains(channel) && (-8192..=8191).contains(value)
            }
            MidiMessage::Sysex(data) => data.iter().all(|b| *b < 0x80),
            MidiMessage::System { bytes, len } => {
                MidiMessage::from_bytes(&bytes[..usize::from(*len).clamp(1, 3)]).is_ok()
            }
        };
        if !ok {
            return Err(EncodeError::InvalidField("midi message"));
        }
        if check_burst(self.burst_index, self.burst_size).is_err() {
            return Err(EncodeError::InvalidField("burst_index/burst_size"));
        }
        Ok(())
    }

    /// Write the STANDARD_JSON payload. Realtime-safe: yes (SysEx data is
    /// hex-encoded on the fly).
    pub fn write_json(&self, out: &mut [u8]) -> Result<usize, EncodeError> {
        self.check_fields()?;
        write_json(out, "jmid", &StandardBody(self))
    }
}

struct StandardBody<'e>(&'e JmidEvent);

struct Hex16(u64);
impl Serialize for Hex16 {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut buf = [0u8; 16];
        for (i, b) in buf.iter_mut().enumerate() {
            *b = b"0123456789abcdef"[((self.0 >> (60 - 4 * i)) & 0xf) as usize];
        }
        s.serialize_str(std::str::from_utf8(&buf).unwrap_or("0000000000000000"))
    }
}

struct HexBytes<'b>(&'b [u8]);
impl Serialize for HexBytes<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(&format_args!("{}", HexDisplay(self.0)))
    }
}
struct HexDisplay<'b>(&'b [u8]);
impl std::fmt::Display for HexDisplay<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.iter().try_for_each(|b| write!(f, "{b:02x}"))
    }
}

impl Serialize for StandardBody<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let e = self.0;
        let mut m = s.serialize_map(None)?;
        match &e.message {
            MidiMessage::NoteOn {
                channel,
                note,
                velocity,
            }
            | MidiMessage::NoteOff {
                channel,
                note,
                velocity,
            } => {
                let name = if matches!(e.message, MidiMessage::NoteOn { .. }) {
                    "note_on"
                } else {
                    "note_off"
                };
                m.serialize_entry("event", name)?;
                m.serialize_entry("channel", channel)?;
                m.serialize_entry("note", note)?;
                m.serialize_entry("velocity", velocity)?;
            }
            MidiMessage::ControlChange {
                channel,
                controller,
                value,
            } => {
                m.serialize_entry("event", "control_change")?;
                m.serialize_entry("channel", channel)?;
                m.serialize_entry("controller", controller)?;
                m.serialize_entry("value", value)?;
            }
            MidiMessage::ProgramChange { channel, program } => {
                m.serialize_entry("event", "program_change")?;
                m.serialize_entry("channel", channel)?;
                m.serialize_entry("program", program)?;
            }
            MidiMessage::PitchBend { channel, value } => {
                m.serialize_entry("event", "pitch_bend")?;
                m.serialize_entry("channel", channel)?;
                m.serialize_entry("value", value)?;
            }
            MidiMessage::ChannelPressure { channel, pressure } => {
                m.serialize_entry("event", "channel_pressure")?;
                m.serialize_entry("channel", channel)?;
                m.serialize_entry("pressure", pressure)?;
            }
            MidiMessage::PolyPressure {
                channel,
                note,
                pressure,
            } => {
                m.serialize_entry("event", "poly_pressure")?;
                m.serialize_entry("channel", channel)?;
                m.serialize_entry("note", note)?;
                m.serialize_entry("pressure", pressure)?;
            }
            MidiMessage::Sysex(data) => {
                m.serialize_entry("event", "sysex")?;
                m.serialize_entry("data", &HexBytes(data))?;
            }
            MidiMessage::System { .. } => {
                return Err(serde::ser::Error::custom(
                    "system messages have no STANDARD_JSON form; use COMPACT_JSONL",
                ))
            }
        }
        m.serialize_entry("timestamp", &e.timestamp)?;
        m.serialize_entry("burst_id", &Hex16(e.burst_id))?;
        m.serialize_entry("burst_index", &e.burst_index)?;
        m.serialize_entry("burst_size", &e.burst_size)?;
        m.end()
    }
}

/// One COMPACT_JSONL line: raw bytes plus timing and burst identity.
/// Same content as [`JmidEvent`]; kept as a type alias for clarity at call sites.
pub type CompactEvent = JmidEvent;

/// A COMPACT_JSONL `jmid` payload: one or more events, one per line.
///
/// Thread-safe: yes. Realtime-safe: no (owns its event list).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct JmidCompact {
    /// The events, in line order.
    pub events: Vec<JmidEvent>,
}

#[derive(Deserialize)]
struct CompactWire<'a> {
    m: Vec<u8>,
    ts: u64,
    #[serde(borrow)]
    b: Cow<'a, str>,
    i: u8,
    k: u8,
}

/// Most lines one COMPACT_JSONL payload may hold (bounded work per datagram).
pub const MAX_COMPACT_LINES: usize = 1024;

impl JmidCompact {
    /// Parse and validate: every line must be a valid event (empty lines are
    /// skipped; at least one event).
    pub fn parse(payload: &[u8]) -> Result<Self, RejectReason> {
        Self::parse_checked(payload).map_err(|_| RejectReason::BadPayload)
    }

    fn parse_checked(payload: &[u8]) -> Checked<Self> {
        let text = std::str::from_utf8(payload).map_err(|_| Invalid)?;
        let mut events = Vec::new();
        for line in text.split('\n') {
            let line = line.strip_suffix('\r').unwrap_or(line);
            if line.trim().is_empty() {
                continue;
            }
            ensure(events.len() < MAX_COMPACT_LINES)?;
            events.push(parse_compact_line(line)?);
        }
        ensure(!events.is_empty())?;
        Ok(JmidCompact { events })
    }

    /// Write the COMPACT_JSONL payload (lines joined by `\n`). Realtime-safe: yes.
    pub fn write_jsonl(&self, out: &mut [u8]) -> Result<usize, EncodeError> {
        write_compact_lines(out, &self.events)
    }
}

fn parse_compact_line(line: &str) -> Checked<JmidEvent> {
    let w: CompactWire = serde_json::from_str(line).map_err(|_| Invalid)?;
    check_burst(w.i, w.k)?;
    Ok(JmidEvent {
        message: MidiMessage::from_bytes_checked(&w.m)?,
        timestamp: w.ts,
        burst_id: lower_hex_u64(&w.b, 16)?,
        burst_index: w.i,
        burst_size: w.k,
    })
}

/// Write events as COMPACT_JSONL lines into `out`. Realtime-safe: yes.
pub fn write_compact_lines(out: &mut [u8], events: &[JmidEvent]) -> Result<usize, EncodeError> {
    let mut pos = 0;
    for (n, e) in events.iter().enumerate() {
        if n > 0 {
            *out.get_mut(pos).ok_or(EncodeError::BufferTooSmall {
                needed: pos + 1,
                available: pos,
            })? = b'\n';
            pos += 1;
        }
        pos += write_json_value(&mut out[pos..], &CompactLine(e))?;
    }
    Ok(pos)
}

struct CompactLine<'e>(&'e JmidEvent);

impl Serialize for CompactLine<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let e = self.0;
        let mut m = s.serialize_map(Some(5))?;
        m.serialize_entry("m", &RawMidi(&e.message))?;
        m.serialize_entry("ts", &e.timestamp)?;
        m.serialize_entry("b", &Hex16(e.burst_id))?;
        m.serialize_entry("i", &e.burst_index)?;
        m.serialize_entry("k", &e.burst_size)?;
        m.end()
    }
}

struct RawMidi<'m>(&'m MidiMessage);

impl Serialize for RawMidi<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeSeq;
        if let MidiMessage::Sysex(body) = self.0 {
            let mut seq = s.serialize_seq(Some(body.len() + 2))?;
            seq.serialize_element(&0xf0u8)?;
            for b in body {
                seq.serialize_element(b)?;
            }
            seq.serialize_element(&0xf7u8)?;
            return seq.end();
        }
        let mut buf = [0u8; 3];
        let n = self
            .0
            .write_bytes(&mut buf)
            .map_err(serde::ser::Error::custom)?;
        buf[..n].serialize(s)
    }
}
