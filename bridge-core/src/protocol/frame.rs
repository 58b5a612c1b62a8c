//! The TOAST v2 frame: header, payload, optional AUTH tag, CRC-32.

use super::{
    RejectReason, AUTH_TAG_LEN, CRC_LEN, HEADER_LEN, MAX_RECV_FRAME_LEN, MIN_FRAME_LEN, VERSION,
};
use uuid::Uuid;

/// `stream_type`: what the frame carries.
///
/// Thread-safe: yes. Realtime-safe: yes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum StreamType {
    /// MIDI (JMID).
    Midi = 1,
    /// Audio (JDAT / JELLIE).
    Audio = 2,
    /// Video (reserved; no message kind defined yet).
    Video = 3,
    /// Transport.
    Transport = 4,
    /// Control: heartbeat, goodbye, clocks.
    Control = 5,
}

impl StreamType {
    /// From the wire byte.
    pub const fn from_u8(v: u8) -> Option<Self> {
        Some(match v {
            1 => StreamType::Midi,
            2 => StreamType::Audio,
            3 => StreamType::Video,
            4 => StreamType::Transport,
            5 => StreamType::Control,
            _ => return None,
        })
    }
}

/// `format_type`: how the payload is encoded.
///
/// Thread-safe: yes. Realtime-safe: yes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum FormatType {
    /// One JSON object.
    StandardJson = 1,
    /// One or more JSON objects, one per line.
    CompactJsonl = 2,
    /// Binary (audio payloads).
    GpuBinary = 3,
}

impl FormatType {
    /// From the wire byte.
    pub const fn from_u8(v: u8) -> Option<Self> {
        Some(match v {
            1 => FormatType::StandardJson,
            2 => FormatType::CompactJsonl,
            3 => FormatType::GpuBinary,
            _ => return None,
        })
    }
}

/// The message kinds of PROTOCOL.md section 2 (bits 15–0 of `message_type`).
///
/// Thread-safe: yes. Realtime-safe: yes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u16)]
pub enum MessageKind {
    /// 0x0001
    Heartbeat = 0x0001,
    /// 0x0002
    Goodbye = 0x0002,
    /// 0x0010
    ClockPing = 0x0010,
    /// 0x0011
    ClockPong = 0x0011,
    /// 0x0012
    SyncCalibrationBlock = 0x0012,
    /// 0x0020
    Transport = 0x0020,
    /// 0x0030
    Jmid = 0x0030,
    /// 0x0040
    Audio = 0x0040,
}

impl MessageKind {
    /// From the wire value.
    pub const fn from_u16(v: u16) -> Option<Self> {
        Some(match v {
            0x0001 => MessageKind::Heartbeat,
            0x0002 => MessageKind::Goodbye,
            0x0010 => MessageKind::ClockPing,
            0x0011 => MessageKind::ClockPong,
            0x0012 => MessageKind::SyncCalibrationBlock,
            0x0020 => MessageKind::Transport,
            0x0030 => MessageKind::Jmid,
            0x0040 => MessageKind::Audio,
            _ => return None,
        })
    }

    /// The JSON `"type"` string of this kind.
    pub const fn name(self) -> &'static str {
        match self {
            MessageKind::Heartbeat => "heartbeat",
            MessageKind::Goodbye => "goodbye",
            MessageKind::ClockPing => "clock_ping",
            MessageKind::ClockPong => "clock_pong",
            MessageKind::SyncCalibrationBlock => "sync_calibration_block",
            MessageKind::Transport => "transport",
            MessageKind::Jmid => "jmid",
            MessageKind::Audio => "audio",
        }
    }

    /// The stream type this kind travels on.
    pub const fn stream_type(self) -> StreamType {
        match self {
            MessageKind::Heartbeat
            | MessageKind::Goodbye
            | MessageKind::ClockPing
            | MessageKind::ClockPong
            | MessageKind::SyncCalibrationBlock => StreamType::Control,
            MessageKind::Transport => StreamType::Transport,
            MessageKind::Jmid => StreamType::Midi,
            MessageKind::Audio => StreamType::Audio,
        }
    }

    /// Whether `format` is allowed for this kind.
    pub const fn allows_format(self, format: FormatType) -> bool {
        match self {
            MessageKind::Jmid => {
                matches!(format, FormatType::StandardJson | FormatType::CompactJsonl)
            }
            MessageKind::Audio => {
                matches!(format, FormatType::StandardJson | FormatType::GpuBinary)
            }
            _ => matches!(format, FormatType::StandardJson),
        }
    }
}

/// The flag bits (23–16 of `message_type`). Reserved bits are kept as
/// received so a frame re-encodes byte for byte; senders write them as 0.
///
/// Thread-safe: yes. Realtime-safe: yes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Flags(pub u8);

impl Flags {
    /// A 16-byte authentication tag sits between payload and CRC.
    pub const AUTH: u8 = 0x01;
    /// This frame repeats data sent in another frame (burst copy, JELLIE C/D).
    pub const REDUNDANT: u8 = 0x02;

    /// AUTH set?
    pub const fn auth(self) -> bool {
        self.0 & Self::AUTH != 0
    }
    /// REDUNDANT set?
    pub const fn redundant(self) -> bool {
        self.0 & Self::REDUNDANT != 0
    }
    /// With REDUNDANT set or cleared.
    pub const fn with_redundant(self, on: bool) -> Self {
        if on {
            Flags(self.0 | Self::REDUNDANT)
        } else {
            Flags(self.0 & !Self::REDUNDANT)
        }
    }
}

/// A 32-byte session key for authenticated sessions (keyed BLAKE3).
///
/// Thread-safe: yes. Realtime-safe: yes.
#[derive(Clone, PartialEq, Eq)]
pub struct SessionKey(pub [u8; 32]);

impl std::fmt::Debug for SessionKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print secrets into logs.
        f.write_str("SessionKey(…)")
    }
}

impl SessionKey {
    /// Parse 64 hex digits.
    pub fn from_hex(hex: &str) -> Option<Self> {
        let bytes = hex.as_bytes();
        if bytes.len() != 64 {
            return None;
        }
        let mut key = [0u8; 32];
        for (i, pair) in bytes.chunks_exact(2).enumerate() {
            key[i] = (hex_val(pair[0])? << 4) | hex_val(pair[1])?;
        }
        Some(SessionKey(key))
    }

    /// The first 16 bytes of keyed BLAKE3 over `data`.
    pub fn tag(&self, data: &[u8]) -> [u8; AUTH_TAG_LEN] {
        let hash = blake3::keyed_hash(&self.0, data);
        let mut tag = [0u8; AUTH_TAG_LEN];
        tag.copy_from_slice(&hash.as_bytes()[..AUTH_TAG_LEN]);
        tag
    }
}

fn hex_val(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

/// Every header field of a frame. `version` is always [`VERSION`] on frames
/// that decoded; `kind` is kept raw so unknown kinds can be reported.
///
/// Thread-safe: yes. Realtime-safe: yes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// What the frame carries.
    pub stream_type: StreamType,
    /// How the payload is encoded.
    pub format_type: FormatType,
    /// Flag bits.
    pub flags: Flags,
    /// Message kind (bits 15–0 of `message_type`).
    pub kind: u16,
    /// Sender's session time when the frame was built, ns.
    pub timestamp: u64,
    /// Per (source, stream_type) counter.
    pub sequence: u32,
    /// Session UUID.
    pub session: Uuid,
    /// Sender id, never 0.
    pub source: u32,
}

impl Header {
    /// A header for `kind` on its natural stream type.
    pub fn new(
        kind: MessageKind,
        format_type: FormatType,
        session: Uuid,
        source: u32,
        sequence: u32,
        timestamp: u64,
    ) -> Self {
        Header {
            stream_type: kind.stream_type(),
            format_type,
            flags: Flags::default(),
            kind: kind as u16,
            timestamp,
            sequence,
            session,
            source,
        }
    }

    /// The message kind, if known.
    pub fn message_kind(&self) -> Option<MessageKind> {
        MessageKind::from_u16(self.kind)
    }

    /// `message_type` as on the wire (version, flags, kind).
    pub fn message_type(&self) -> u32 {
        (u32::from(VERSION) << 24) | (u32::from(self.flags.0) << 16) | u32::from(self.kind)
    }

    fn write_into(&self, out: &mut [u8], frame_length: u32, flags: Flags) {
        out[0..4].copy_from_slice(&frame_length.to_be_bytes());
        out[4] = self.stream_type as u8;
        out[5] = self.format_type as u8;
        let message_type =
            (u32::from(VERSION) << 24) | (u32::from(flags.0) << 16) | u32::from(self.kind);
        out[6..10].copy_from_slice(&message_type.to_be_bytes());
        out[10..18].copy_from_slice(&self.timestamp.to_be_bytes());
        out[18..22].copy_from_slice(&self.sequence.to_be_bytes());
        out[22..38].copy_from_slice(self.session.as_bytes());
        out[38..42].copy_from_slice(&self.source.to_be_bytes());
    }
}

/// A frame whose envelope checked out; borrows the datagram.
///
/// Thread-safe: yes (immutable borrow). Realtime-safe: yes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Frame<'a> {
    /// The header.
    pub header: Header,
    /// The payload bytes (without AUTH tag and CRC).
    pub payload: &'a [u8],
}

/// Check a datagram's envelope and borrow its payload.
///
/// Checks, in order: length ≥ 46, `frame_length`, CRC, version, stream type,
/// format type, AUTH (with `key`: tag present and right; without: no tag).
/// The payload is not parsed here (see [`super::Message::parse`]).
///
/// Realtime-safe: yes (no allocation); O(len) for CRC and tag.
pub fn decode_frame<'a>(
    datagram: &'a [u8],
    key: Option<&SessionKey>,
) -> Result<Frame<'a>, RejectReason> {
    let len = datagram.len();
    if len < MIN_FRAME_LEN {
        return Err(RejectReason::TooShort);
    }
    let frame_length = u32::from_be_bytes(datagram[0..4].try_into().unwrap_or_default());
    if frame_length as usize != len || len > MAX_RECV_FRAME_LEN {
        return Err(RejectReason::LengthMismatch);
    }
    let body_end = len - CRC_LEN;
    let crc = u32::from_be_bytes(datagram[body_end..].try_into().unwrap_or_default());
    if crc32fast::hash(&datagram[..body_end]) != crc {
        return Err(RejectReason::BadCrc);
    }
    let message_type = u32::from_be_bytes(datagram[6..10].try_into().unwrap_or_default());
    if (message_type >> 24) as u8 != VERSION {
        return Err(RejectReason::BadVersion);
    }
    let stream_type = StreamType::from_u8(datagram[4]).ok_or(RejectReason::UnknownStreamType)?;
    let format_type = FormatType::from_u8(datagram[5]).ok_or(RejectReason::UnknownFormat)?;
    let flags = Flags((message_type >> 16) as u8);
    let payload_end = match (flags.auth(), key) {
        (true, Some(key)) => {
            if body_end < HEADER_LEN + AUTH_TAG_LEN {
                return Err(RejectReason::BadAuth);
            }
            let tag_start = body_end - AUTH_TAG_LEN;
            let expected = key.tag(&datagram[..tag_start]);
            if !constant_time_eq(&expected, &datagram[tag_start..body_end]) {
                return Err(RejectReason::BadAuth);
            }
            tag_start
        }
        (false, None) => body_end,
        // A keyed receiver needs a tag; an unkeyed one cannot check one.
        (true, None) | (false, Some(_)) => return Err(RejectReason::BadAuth),
    };
    let mut session = [0u8; 16];
    session.copy_from_slice(&datagram[22..38]);
    let header = Header {
        stream_type,
        format_type,
        flags,
        kind: message_type as u16,
        timestamp: u64::from_be_bytes(datagram[10..18].try_into().unwrap_or_default()),
        sequence: u32::from_be_bytes(datagram[18..22].try_into().unwrap_or_default()),
        session: Uuid::from_bytes(session),
        source: u32::from_be_bytes(datagram[38..42].try_into().unwrap_or_default()),
    };
    Ok(Frame {
        header,
        payload: &datagram[HEADER_LEN..payload_end],
    })
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Why a frame could not be encoded.
///
/// Thread-safe: yes. Realtime-safe: yes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum EncodeError {
    /// The output buffer is too small for the frame.
    #[error("output buffer too small: need {needed} bytes, have {available}")]
    BufferTooSmall {
        /// Bytes the frame needs (at least).
        needed: usize,
        /// Bytes available.
        available: usize,
    },
    /// The frame would exceed the 65507-byte UDP limit.
    #[error("frame of {0} bytes exceeds the UDP maximum")]
    TooLarge(usize),
    /// A field value cannot be represented on the wire.
    #[error("invalid field: {0}")]
    InvalidField(&'static str),
}

/// Encode a frame from a header and raw payload bytes into `out`; returns the
/// frame's length. With `key`, sets AUTH and appends the tag; without, clears
/// AUTH. Other flag bits are written as given.
///
/// Realtime-safe: yes (no allocation).
pub fn encode_frame(
    header: &Header,
    payload: &[u8],
    key: Option<&SessionKey>,
    out: &mut [u8],
) -> Result<usize, EncodeError> {
    let mut writer = FrameWriter::new(header, out)?;
    writer.payload_mut(payload.len())?.copy_from_slice(payload);
    writer.finish(payload.len(), key)
}

/// Writes a frame in place: header first, then the caller (or a serializer)
/// fills the payload directly in the output buffer, then [`FrameWriter::finish`]
/// adds length, tag and CRC. No copies, no allocation.
///
/// Thread-safe: no (borrows the buffer mutably). Realtime-safe: yes.
pub struct FrameWriter<'b> {
    header: Header,
    out: &'b mut [u8],
}

impl<'b> FrameWriter<'b> {
    /// Start a frame in `out`.
    pub fn new(header: &Header, out: &'b mut [u8]) -> Result<Self, EncodeError> {
        if out.len() < MIN_FRAME_LEN {
            return Err(EncodeError::BufferTooSmall {
                needed: MIN_FRAME_LEN,
                available: out.len(),
            });
        }
        Ok(FrameWriter {
            header: *header,
            out,
        })
    }

    /// The whole space available for the payload (before tag and CRC room is
    /// reserved); write into it, then call `finish` with the length used.
    pub fn payload_space(&mut self) -> &mut [u8] {
        let end = self.out.len().saturating_sub(CRC_LEN);
        &mut self.out[HEADER_LEN..end.max(HEADER_LEN)]
    }

    /// Exactly `len` payload bytes to fill.
    pub fn payload_mut(&mut self, len: usize) -> Result<&mut [u8], EncodeError> {
        let needed = HEADER_LEN + len + CRC_LEN;
        if needed > self.out.len() {
            return Err(EncodeError::BufferTooSmall {
                needed,
                available: self.out.len(),
            });
        }
        Ok(&mut self.out[HEADER_LEN..HEADER_LEN + len])
    }

    /// Finish a frame whose payload occupies `payload_len` bytes.
    pub fn finish(
        self,
        payload_len: usize,
        key: Option<&SessionKey>,
    ) -> Result<usize, EncodeError> {
        let tag_len = if key.is_some() { AUTH_TAG_LEN } else { 0 };
        let total = HEADER_LEN + payload_len + tag_len + CRC_LEN;
        if total > MAX_RECV_FRAME_LEN {
            return Err(EncodeError::TooLarge(total));
        }
        if total > self.out.len() {
            return Err(EncodeError::BufferTooSmall {
                needed: total,
                available: self.out.len(),
            });
        }
        let flags = if key.is_some() {
            Flags(self.header.flags.0 | Flags::AUTH)
        } else {
            Flags(self.header.flags.0 & !Flags::AUTH)
        };
        self.header.write_into(self.out, total as u32, flags);
        let mut end = HEADER_LEN + payload_len;
        if let Some(key) = key {
            let tag = key.tag(&self.out[..end]);
            self.out[end..end + AUTH_TAG_LEN].copy_from_slice(&tag);
            end += AUTH_TAG_LEN;
        }
        let crc = crc32fast::hash(&self.out[..end]);
        self.out[end..end + CRC_LEN].copy_from_slice(&crc.to_be_bytes());
        Ok(total)
    }
}
