//! Typed JSON messages (PROTOCOL.md sections 2 and 3), validated field by
//! field: unknown fields are ignored, known fields are strict (type, range,
//! presence). Any failure is [`RejectReason::BadPayload`].

use super::audio::AudioPayload;
use super::frame::{EncodeError, FormatType, Frame, FrameWriter, Header, MessageKind, SessionKey};
use super::jmid::{JmidCompact, JmidEvent};
use super::validate::{
    ensure, expect_type, finite_in, in_range, lower_hex_u64, present, Checked, Invalid,
};
use super::RejectReason;
use serde::{Deserialize, Serialize, Serializer};
use std::borrow::Cow;

/// A peer id: the frame's `source`, written as 8 lowercase hex digits.
///
/// Thread-safe: yes. Realtime-safe: yes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PeerId(pub u32);

impl PeerId {
    pub(crate) fn parse(s: &str) -> Checked<Self> {
        lower_hex_u64(s, 8).map(|v| PeerId(v as u32))
    }
}

impl std::fmt::Display for PeerId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:08x}", self.0)
    }
}

impl std::str::FromStr for PeerId {
    type Err = RejectReason;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        PeerId::parse(s).map_err(|_| RejectReason::BadPayload)
    }
}

impl Serialize for PeerId {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        // Fixed-size stack formatting: no allocation.
        let mut buf = [0u8; 8];
        for (i, b) in buf.iter_mut().enumerate() {
            let nibble = (self.0 >> (28 - 4 * i)) & 0xf;
            *b = b"0123456789abcdef"[nibble as usize];
        }
        s.serialize_str(std::str::from_utf8(&buf).unwrap_or("00000000"))
    }
}

/// What a heartbeat's stream entry carries.
///
/// Thread-safe: yes. Realtime-safe: yes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum StreamKind {
    /// Audio (has channels and sample rate).
    Audio,
    /// MIDI.
    Midi,
    /// Transport.
    Transport,
}

/// Longest stream name a heartbeat carries, characters.
pub const MAX_STREAM_NAME_CHARS: usize = 64;

/// One stream a peer offers, as listed in its heartbeat.
///
/// Thread-safe: yes. Realtime-safe: no (owns its name).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StreamInfo {
    /// 0–65535.
    pub stream_id: u16,
    /// Kind of stream.
    pub kind: StreamKind,
    /// 1–64, audio only.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub channels: Option<u8>,
    /// 8000–384000, audio only.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sample_rate: Option<u32>,
    /// What the sender calls it ("Guitar DI"), at most
    /// [`MAX_STREAM_NAME_CHARS`]. A JAMNet extension: PROTOCOL.md does not
    /// list it, so every peer ignores it as an unknown field (section 3),
    /// and so do we when it is not a string of at most that many characters
    /// (the heartbeat stays valid; the name is `None`). A heartbeat without
    /// it is exactly the specified one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

impl StreamInfo {
    /// `name` trimmed and cut to at most [`MAX_STREAM_NAME_CHARS`] (what a
    /// sender puts on the wire); empty is none.
    pub fn wire_name(name: &str) -> Option<String> {
        let name: String = name.trim().chars().take(MAX_STREAM_NAME_CHARS).collect();
        (!name.is_empty()).then_some(name)
    }
}

/// `heartbeat` (section 3.1).
///
/// Thread-safe: yes. Realtime-safe: no (owns a stream list).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Heartbeat<'a> {
    /// Sender.
    pub peer_id: PeerId,
    /// Free text shown to users.
    pub name: Cow<'a, str>,
    /// Program/version.
    pub app: Cow<'a, str>,
    /// UDP port this peer receives unicast on (1–65535).
    pub port: u16,
    /// Streams it offers.
    pub streams: Vec<StreamInfo>,
}

/// `goodbye`: the peer leaves now.
///
/// Thread-safe: yes. Realtime-safe: yes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Goodbye {
    /// Leaving peer.
    pub peer_id: PeerId,
}

/// `clock_ping` (section 3.2).
///
/// Thread-safe: yes. Realtime-safe: yes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct ClockPing {
    /// Pinger.
    pub peer_id: PeerId,
    /// Ping sent, pinger's clock, ns.
    pub t1: u64,
}

/// `clock_pong` (section 3.2).
///
/// Thread-safe: yes. Realtime-safe: yes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct ClockPong {
    /// Ponger.
    pub peer_id: PeerId,
    /// The pinger this answers.
    pub to: PeerId,
    /// Echoed from the ping.
    pub t1: u64,
    /// Ping received, ponger's clock, ns.
    pub t2: u64,
    /// Pong sent, ponger's clock, ns.
    pub t3: u64,
}

/// `sync_calibration_block` (section 3.3).
///
/// Thread-safe: yes. Realtime-safe: yes.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct SyncCalibrationBlock {
    /// Publisher.
    pub peer_id: PeerId,
    /// GPU clock reading, ns.
    pub gpu_time_ns: u64,
    /// Matching CPU clock reading, ns.
    pub cpu_time_ns: u64,
    /// cpu − gpu after drift correction, ns.
    pub offset_ns: i64,
    /// Drift of the GPU clock against the CPU clock, ppm.
    pub drift_ppm: f64,
    /// Model quality, 0–1.
    pub quality: f64,
}

/// Transport commands (section 3.4).
///
/// Thread-safe: yes. Realtime-safe: yes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum TransportCommand {
    /// Start playing.
    Play,
    /// Stop.
    Stop,
    /// Pause (keep position).
    Pause,
    /// Start recording.
    Record,
    /// Move the position.
    Seek,
    /// Change tempo / time signature.
    Tempo,
}

/// A time signature `[numerator, denominator]`.
///
/// Thread-safe: yes. Realtime-safe: yes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TimeSignature {
    /// 1–64.
    pub numerator: u8,
    /// One of 1, 2, 4, 8, 16, 32.
    pub denominator: u8,
}

impl TimeSignature {
    /// Checked constructor.
    pub fn new(numerator: u8, denominator: u8) -> Option<Self> {
        let ok = (1..=64).contains(&numerator) && matches!(denominator, 1 | 2 | 4 | 8 | 16 | 32);
        ok.then_some(TimeSignature {
            numerator,
            denominator,
        })
    }
}

impl Serialize for TimeSignature {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        [self.numerator, self.denominator].serialize(s)
    }
}

/// `transport` (section 3.4).
///
/// Thread-safe: yes. Realtime-safe: yes.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Transport {
    /// What happens.
    pub command: TransportCommand,
    /// Session time at which it takes effect, ns (may be in the future).
    pub timestamp: u64,
    /// Musical position at that instant, ms (≥ 0).
    pub position: f64,
    /// Tempo, 1–999.
    pub bpm: f64,
    /// Time signature.
    pub time_signature: TimeSignature,
    /// The session's master peer.
    pub master_peer: PeerId,
    /// Quarter notes since zero (optional).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub beat: Option<f64>,
    /// Sender's transport-change counter, for ordering (optional).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub seq: Option<u64>,
}

/// Any TOAST v2 message, parsed and validated.
///
/// Thread-safe: yes. Realtime-safe: no (parsing may allocate, bounded by the
/// datagram size).
#[derive(Debug, Clone, PartialEq)]
pub enum Message<'a> {
    /// `heartbeat`
    Heartbeat(Heartbeat<'a>),
    /// `goodbye`
    Goodbye(Goodbye),
    /// `clock_ping`
    ClockPing(ClockPing),
    /// `clock_pong`
    ClockPong(ClockPong),
    /// `sync_calibration_block`
    SyncCalibrationBlock(SyncCalibrationBlock),
    /// `transport`
    Transport(Transport),
    /// `jmid`, STANDARD_JSON: one event.
    Jmid(JmidEvent),
    /// `jmid`, COMPACT_JSONL: one or more events.
    JmidCompact(JmidCompact),
    /// `audio`, binary or JSON.
    Audio(AudioPayload<'a>),
}

// ---- wire shapes (deserialization only; `type` checked against the kind) ----

#[derive(Deserialize)]
struct HeartbeatWire<'a> {
    #[serde(rename = "type", borrow)]
    ty: Cow<'a, str>,
    #[serde(borrow)]
    peer_id: Cow<'a, str>,
    #[serde(borrow)]
    name: Cow<'a, str>,
    #[serde(borrow)]
    app: Cow<'a, str>,
    port: u16,
    streams: Vec<StreamWire<'a>>,
}

#[derive(Deserialize)]
struct StreamWire<'a> {
    stream_id: u16,
    #[serde(borrow)]
    kind: Cow<'a, str>,
    #[serde(default, deserialize_with = "present")]
    channels: Option<u8>,
    #[serde(default, deserialize_with = "present")]
    sample_rate: Option<u32>,
    #[serde(default, deserialize_with = "extension_name")]
    name: Option<String>,
}

/// The stream-name extension: a string of at most
/// [`MAX_STREAM_NAME_CHARS`] characters, anything else ignored (an unknown
/// field to the specification, so never a reason to drop the heartbeat).
fn extension_name<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Field {
        Text(String),
        Other(serde::de::IgnoredAny),
    }
    Ok(match Field::deserialize(d)? {
        Field::Text(t) if t.chars().count() <= MAX_STREAM_NAME_CHARS => Some(t),
        _ => None,
    })
}

#[derive(Deserialize)]
struct GoodbyeWire<'a> {
    #[serde(rename = "type", borrow)]
    ty: Cow<'a, str>,
    #[serde(borrow)]
    peer_id: Cow<'a, str>,
}

#[derive(Deserialize)]
struct ClockPingWire<'a> {
    #[serde(rename = "type", borrow)]
    ty: Cow<'a, str>,
    #[serde(borrow)]
    peer_id: Cow<'a, str>,
    t1: u64,
}

#[derive(Deserialize)]
struct ClockPongWire<'a> {
    #[serde(rename = "type", borrow)]
    ty: Cow<'a, str>,
    #[serde(borrow)]
    peer_id: Cow<'a, str>,
    #[serde(borrow)]
    to: Cow<'a, str>,
    t1: u64,
    t2: u64,
    t3: u64,
}

#[derive(Deserialize)]
struct SyncCalibrationWire<'a> {
    #[serde(rename = "type", borrow)]
    ty: Cow<'a, str>,
    #[serde(borrow)]
    peer_id: Cow<'a, str>,
    gpu_time_ns: u64,
    cpu_time_ns: u64,
    offset_ns: i64,
    drift_ppm: f64,
    quality: f64,
}

#[derive(Deserialize)]
struct TransportWire<'a> {
    #[serde(rename = "type", borrow)]
    ty: Cow<'a, str>,
    command: TransportCommand,
    timestamp: u64,
    position: f64,
    bpm: f64,
    time_signature: (u8, u8),
    #[serde(borrow)]
    master_peer: Cow<'a, str>,
    #[serde(default, deserialize_with = "present")]
    beat: Option<f64>,
    #[serde(default, deserialize_with = "present")]
    seq: Option<u64>,
}

fn json<'a, T: Deserialize<'a>>(payload: &'a [u8]) -> Checked<T> {
    serde_json::from_slice(payload).map_err(|_| Invalid)
}

fn parse_heartbeat(p: &[u8]) -> Checked<Heartbeat<'_>> {
    let w: HeartbeatWire = json(p)?;
    expect_type(&w.ty, "heartbeat")?;
    in_range(w.port, 1, u16::MAX)?;
    let streams = w
        .streams
        .into_iter()
        .map(|s| {
            let kind = match &*s.kind {
                "audio" => StreamKind::Audio,
                "midi" => StreamKind::Midi,
                "transport" => StreamKind::Transport,
                _ => return Err(Invalid),
            };
            if let Some(c) = s.channels {
                in_range(c, 1, 64)?;
            }
            if let Some(r) = s.sample_rate {
                in_range(r, 8000, 384_000)?;
            }
            if kind == StreamKind::Audio {
                ensure(s.channels.is_some() && s.sample_rate.is_some())?;
            }
            Ok(StreamInfo {
                stream_id: s.stream_id,
                kind,
                channels: s.channels,
                sample_rate: s.sample_rate,
                name: s.name,
            })
        })
        .collect::<Checked<Vec<_>>>()?;
    Ok(Heartbeat {
        peer_id: PeerId::parse(&w.peer_id)?,
        name: w.name,
        app: w.app,
        port: w.port,
        streams,
    })
}

fn parse_goodbye(p: &[u8]) -> Checked<Goodbye> {
    let w: GoodbyeWire = json(p)?;
    expect_type(&w.ty, "goodbye")?;
    Ok(Goodbye {
        peer_id: PeerId::parse(&w.peer_id)?,
    })
}

fn parse_clock_ping(p: &[u8]) -> Checked<ClockPing> {
    let w: ClockPingWire = json(p)?;
    expect_type(&w.ty, "clock_ping")?;
    Ok(ClockPing {
        peer_id: PeerId::parse(&w.peer_id)?,
        t1: w.t1,
    })
}

fn parse_clock_pong(p: &[u8]) -> Checked<ClockPong> {
    let w: ClockPongWire = json(p)?;
    expect_type(&w.ty, "clock_pong")?;
    Ok(ClockPong {
        peer_id: PeerId::parse(&w.peer_id)?,
        to: PeerId::parse(&w.to)?,
        t1: w.t1,
        t2: w.t2,
        t3: w.t3,
    })
}

fn parse_sync_calibration(p: &[u8]) -> Checked<SyncCalibrationBlock> {
    let w: SyncCalibrationWire = json(p)?;
    expect_type(&w.ty, "sync_calibration_block")?;
    Ok(SyncCalibrationBlock {
        peer_id: PeerId::parse(&w.peer_id)?,
        gpu_time_ns: w.gpu_time_ns,
        cpu_time_ns: w.cpu_time_ns,
        offset_ns: w.offset_ns,
        drift_ppm: finite_in(w.drift_ppm, -1e6, 1e6)?,
        quality: finite_in(w.quality, 0.0, 1.0)?,
    })
}

/// Parse and validate a `transport` payload (exposed for benchmarks and
/// tools; [`Message::parse`] is the usual entry).
pub fn parse_transport(p: &[u8]) -> Result<Transport, RejectReason> {
    parse_transport_checked(p).map_err(|_| RejectReason::BadPayload)
}

fn parse_transport_checked(p: &[u8]) -> Checked<Transport> {
    let w: TransportWire = json(p)?;
    expect_type(&w.ty, "transport")?;
    let (num, den) = w.time_signature;
    Ok(Transport {
        command: w.command,
        timestamp: w.timestamp,
        position: finite_in(w.position, 0.0, f64::MAX)?,
        bpm: finite_in(w.bpm, 1.0, 999.0)?,
        time_signature: TimeSignature::new(num, den).ok_or(Invalid)?,
        master_peer: PeerId::parse(&w.master_peer)?,
        beat: match w.beat {
            Some(b) => Some(finite_in(b, f64::MIN, f64::MAX)?),
            None => None,
        },
        seq: w.seq,
    })
}

impl<'a> Message<'a> {
    /// Parse and validate a frame's payload as its kind, stream type and
    /// format say.
    pub fn parse(frame: &Frame<'a>) -> Result<Message<'a>, RejectReason> {
        Self::parse_checked(frame).map_err(|_| RejectReason::BadPayload)
    }

    fn parse_checked(frame: &Frame<'a>) -> Checked<Message<'a>> {
        let h = &frame.header;
        let kind = h.message_kind().ok_or(Invalid)?;
        ensure(kind.stream_type() == h.stream_type && kind.allows_format(h.format_type))?;
        let p = frame.payload;
        Ok(match kind {
            MessageKind::Heartbeat => Message::Heartbeat(parse_heartbeat(p)?),
            MessageKind::Goodbye => Message::Goodbye(parse_goodbye(p)?),
            MessageKind::ClockPing => Message::ClockPing(parse_clock_ping(p)?),
            MessageKind::ClockPong => Message::ClockPong(parse_clock_pong(p)?),
            MessageKind::SyncCalibrationBlock => {
                Message::SyncCalibrationBlock(parse_sync_calibration(p)?)
            }
            MessageKind::Transport => Message::Transport(parse_transport_checked(p)?),
            MessageKind::Jmid => match h.format_type {
                FormatType::CompactJsonl => {
                    Message::JmidCompact(JmidCompact::parse(p).map_err(|_| Invalid)?)
                }
                _ => Message::Jmid(JmidEvent::parse_json(p).map_err(|_| Invalid)?),
            },
            MessageKind::Audio => Message::Audio(match h.format_type {
                FormatType::GpuBinary => AudioPayload::parse_binary(p).map_err(|_| Invalid)?,
                _ => AudioPayload::parse_json(p).map_err(|_| Invalid)?,
            }),
        })
    }

    /// This message's kind.
    pub fn kind(&self) -> MessageKind {
        match self {
            Message::Heartbeat(_) => MessageKind::Heartbeat,
            Message::Goodbye(_) => MessageKind::Goodbye,
            Message::ClockPing(_) => MessageKind::ClockPing,
            Message::ClockPong(_) => MessageKind::ClockPong,
            Message::SyncCalibrationBlock(_) => MessageKind::SyncCalibrationBlock,
            Message::Transport(_) => MessageKind::Transport,
            Message::Jmid(_) | Message::JmidCompact(_) => MessageKind::Jmid,
            Message::Audio(_) => MessageKind::Audio,
        }
    }

    /// The format this message is encoded in by [`Message::encode`]
    /// (audio: binary; use [`AudioPayload::write_json`] for JSON audio).
    pub fn format_type(&self) -> FormatType {
        match self {
            Message::JmidCompact(_) => FormatType::CompactJsonl,
            Message::Audio(_) => FormatType::GpuBinary,
            _ => FormatType::StandardJson,
        }
    }

    /// Check the fields a receiver would reject (ranges, non-finite floats,
    /// which JSON cannot carry), so a sender never emits an invalid frame.
    pub fn check_fields(&self) -> Result<(), EncodeError> {
        let bad = |cond: bool, field: &'static str| {
            if cond {
                Err(EncodeError::InvalidField(field))
            } else {
                Ok(())
            }
        };
        match self {
            Message::Heartbeat(h) => {
                bad(h.port == 0, "port")?;
                for s in &h.streams {
                    bad(
                        s.channels.is_some_and(|c| !(1..=64).contains(&c)),
                        "channels",
                    )?;
                    bad(
                        s.sample_rate
                            .is_some_and(|r| !(8000..=384_000).contains(&r)),
                        "sample_rate",
                    )?;
                    bad(
                        s.kind == StreamKind::Audio
                            && (s.channels.is_none() || s.sample_rate.is_none()),
                        "audio stream needs channels and sample_rate",
                    )?;
                }
                Ok(())
            }
            Message::SyncCalibrationBlock(c) => {
                bad(
                    !c.drift_ppm.is_finite() || c.drift_ppm.abs() > 1e6,
                    "drift_ppm",
                )?;
                bad(!(0.0..=1.0).contains(&c.quality), "quality")
            }
            Message::Transport(t) => {
                bad(!t.position.is_finite() || t.position < 0.0, "position")?;
                bad(!(1.0..=999.0).contains(&t.bpm), "bpm")?;
                bad(
                    TimeSignature::new(t.time_signature.numerator, t.time_signature.denominator)
                        .is_none(),
                    "time_signature",
                )?;
                bad(t.beat.is_some_and(|b| !b.is_finite()), "beat")
            }
            Message::Jmid(e) => e.check_fields(),
            Message::JmidCompact(c) => {
                bad(c.events.is_empty(), "events")?;
                c.events.iter().try_for_each(JmidEvent::check_fields)
            }
            Message::Audio(a) => a.check_fields(),
            Message::Goodbye(_) | Message::ClockPing(_) | Message::ClockPong(_) => Ok(()),
        }
    }

    /// Write the payload bytes into `out`; returns their length.
    /// Realtime-safe: yes for every kind (serde_json into a slice).
    pub fn write_payload(&self, out: &mut [u8]) -> Result<usize, EncodeError> {
        self.check_fields()?;
        match self {
            Message::Heartbeat(m) => write_json(out, "heartbeat", m),
            Message::Goodbye(m) => write_json(out, "goodbye", m),
            Message::ClockPing(m) => write_json(out, "clock_ping", m),
            Message::ClockPong(m) => write_json(out, "clock_pong", m),
            Message::SyncCalibrationBlock(m) => write_json(out, "sync_calibration_block", m),
            Message::Transport(m) => write_json(out, "transport", m),
            Message::Jmid(m) => m.write_json(out),
            Message::JmidCompact(m) => m.write_jsonl(out),
            Message::Audio(m) => m.write_binary(out),
        }
    }

    /// Encode a whole frame: `header`'s session, source, sequence, timestamp
    /// and REDUNDANT flag are used; stream type, format and kind are set from
    /// the message. Returns the frame length. Realtime-safe: yes.
    pub fn encode(
        &self,
        header: &Header,
        key: Option<&SessionKey>,
        out: &mut [u8],
    ) -> Result<usize, EncodeError> {
        let kind = self.kind();
        let header = Header {
            stream_type: kind.stream_type(),
            format_type: self.format_type(),
            kind: kind as u16,
            ..*header
        };
        let mut writer = FrameWriter::new(&header, out)?;
        let n = self.write_payload(writer.payload_space())?;
        writer.finish(n, key)
    }
}

/// `{"type": NAME, ...fields of T}`.
#[derive(Serialize)]
struct Tagged<'t, T> {
    #[serde(rename = "type")]
    ty: &'static str,
    #[serde(flatten)]
    inner: &'t T,
}

/// Serialize `{"type": ty, ..value}` into `out` without allocating.
pub(crate) fn write_json<T: Serialize>(
    out: &mut [u8],
    ty: &'static str,
    value: &T,
) -> Result<usize, EncodeError> {
    write_json_value(out, &Tagged { ty, inner: value })
}

pub(crate) fn write_json_value<T: Serialize>(
    out: &mut [u8],
    value: &T,
) -> Result<usize, EncodeError> {
    let available = out.len();
    let mut cursor = std::io::Cursor::new(out);
    serde_json::to_writer(&mut cursor, value).map_err(|_| EncodeError::BufferTooSmall {
        needed: available + 1,
        available,
    })?;
    Ok(cursor.position() as usize)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::{decode_frame, FormatType, Header, MessageKind};

    fn heartbeat(streams: &str) -> Vec<u8> {
        format!(
            r#"{{"type":"heartbeat","peer_id":"00000022","name":"Studio B","app":"x","port":47701,"streams":{streams}}}"#
        )
        .into_bytes()
    }

    fn parsed_names(payload: &[u8]) -> Vec<Option<String>> {
        match parse_heartbeat(payload) {
            Ok(h) => h.streams.into_iter().map(|s| s.name).collect(),
            Err(_) => panic!("rejected: {}", String::from_utf8_lossy(payload)),
        }
    }

    #[test]
    fn stream_names_round_trip_and_anything_else_is_ignored_not_rejected() {
        let hb = Message::Heartbeat(Heartbeat {
            peer_id: PeerId(0x22),
            name: "Studio B".into(),
            app: "toaster/0.1.0".into(),
            port: 47701,
            streams: vec![StreamInfo {
                stream_id: 1,
                kind: StreamKind::Audio,
                channels: Some(2),
                sample_rate: Some(48_000),
                name: StreamInfo::wire_name("  Gitarre \"DI\" ✓  "),
            }],
        });
        let h = Header::new(
            MessageKind::Heartbeat,
            FormatType::StandardJson,
            uuid::Uuid::from_bytes([5; 16]),
            0x22,
            0,
            0,
        );
        let mut buf = [0u8; 1500];
        let n = hb.encode(&h, None, &mut buf).unwrap();
        let f = decode_frame(&buf[..n], None).unwrap();
        let Ok(Message::Heartbeat(back)) = Message::parse(&f) else {
            panic!("not a heartbeat")
        };
        assert_eq!(back.streams[0].name.as_deref(), Some("Gitarre \"DI\" ✓"));

        // Without a name: the specified heartbeat, byte for byte (no field).
        let plain = StreamInfo {
            name: None,
            ..back.streams[0].clone()
        };
        assert!(!serde_json::to_string(&plain).unwrap().contains("name"));

        // To PROTOCOL.md the field is unknown: a wrong type or an
        // over-long name leaves the heartbeat valid and the name unset.
        let long = "x".repeat(MAX_STREAM_NAME_CHARS + 1);
        let exact = "é".repeat(MAX_STREAM_NAME_CHARS);
        let cases = [
            (r#""name":"Keys""#.to_owned(), Some("Keys".to_owned())),
            (r#""name":7"#.to_owned(), None),
            (r#""name":null"#.to_owned(), None),
            (r#""name":["a"]"#.to_owned(), None),
            (r#""name":{"a":1}"#.to_owned(), None),
            (format!(r#""name":"{long}""#), None),
            (format!(r#""name":"{exact}""#), Some(exact.clone())),
        ];
        for (field, want) in cases {
            let p = heartbeat(&format!(
                r#"[{{"stream_id":1,"kind":"audio","channels":2,"sample_rate":48000,{field}}}]"#
            ));
            assert_eq!(parsed_names(&p), vec![want], "{field}");
        }
        // Senders cut long names to the limit, by characters.
        assert_eq!(
            StreamInfo::wire_name(&"ü".repeat(100)).map(|n| n.chars().count()),
            Some(MAX_STREAM_NAME_CHARS)
        );
        assert_eq!(StreamInfo::wire_name("   "), None);
    }
}
