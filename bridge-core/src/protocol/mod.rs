//! TOAST v2, the wire protocol (`PROTOCOL.md`), as pure code: no I/O.
//!
//! * [`frame`]: the 42-byte header + payload + CRC-32 datagram, optional AUTH tag.
//! * [`messages`]: the typed JSON messages (heartbeat, goodbye, clock_ping,
//!   clock_pong, sync_calibration_block, transport), validated field by field.
//! * [`jmid`]: MIDI events, STANDARD_JSON and COMPACT_JSONL.
//! * [`audio`]: audio payloads, binary (GPU_BINARY) and JSON, i16/i24/f32.
//! * [`jellie`]: JELLIE split of a mono block into four sub-streams and merge.
//!
//! Receiving is two steps: [`frame::decode_frame`] checks the envelope
//! (length, CRC, version, stream/format types, AUTH) and borrows the payload;
//! [`Message::parse`] checks the payload against its kind. [`decode`] does
//! both. Every rejection is a [`RejectReason`], counted by [`RejectCounters`].
//!
//! Sending: [`frame::FrameWriter`] or [`frame::encode_frame`] write into a
//! caller's buffer and never allocate.

pub mod audio;
pub mod frame;
pub mod inspect;
pub mod jellie;
pub mod jmid;
pub mod messages;
mod validate;

use std::sync::atomic::{AtomicU64, Ordering};

pub use audio::{AudioPayload, SampleFormat};
pub use frame::{
    decode_frame, encode_frame, EncodeError, Flags, FormatType, Frame, FrameWriter, Header,
    MessageKind, SessionKey, StreamType,
};
pub use jmid::{CompactEvent, JmidCompact, JmidEvent, MidiMessage};
pub use messages::{
    ClockPing, ClockPong, Goodbye, Heartbeat, Message, PeerId, StreamInfo, StreamKind,
    SyncCalibrationBlock, TimeSignature, Transport, TransportCommand, MAX_STREAM_NAME_CHARS,
};

/// Protocol version carried in bits 31–24 of `message_type`.
pub const VERSION: u8 = 2;
/// Bytes before the payload.
pub const HEADER_LEN: usize = 42;
/// Bytes of the trailing CRC-32.
pub const CRC_LEN: usize = 4;
/// Bytes of the AUTH tag (first 16 bytes of keyed BLAKE3).
pub const AUTH_TAG_LEN: usize = 16;
/// The smallest valid frame: header + CRC, empty payload.
pub const MIN_FRAME_LEN: usize = HEADER_LEN + CRC_LEN;
/// Senders keep frames at or under this (one Ethernet MTU, no IP fragmentation).
pub const MAX_SEND_FRAME_LEN: usize = 1472;
/// Receivers accept frames up to this (the largest UDP payload over IPv4).
pub const MAX_RECV_FRAME_LEN: usize = 65507;
/// Default UDP port.
pub const DEFAULT_PORT: u16 = 47700;
/// Default IPv4 multicast group (administratively scoped).
pub const DEFAULT_GROUP: std::net::Ipv4Addr = std::net::Ipv4Addr::new(239, 255, 77, 77);
/// DNS-SD service type for discovery.
pub const DNS_SD_SERVICE: &str = "_toast._udp.local.";

/// Why a received datagram was dropped. One counter each in [`RejectCounters`].
///
/// Thread-safe: yes (plain value). Realtime-safe: yes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, thiserror::Error)]
pub enum RejectReason {
    /// Shorter than the 46-byte minimum frame.
    #[error("too_short")]
    TooShort,
    /// `frame_length` differs from the datagram's length.
    #[error("length_mismatch")]
    LengthMismatch,
    /// CRC-32 does not match.
    #[error("bad_crc")]
    BadCrc,
    /// Protocol version other than 2.
    #[error("bad_version")]
    BadVersion,
    /// `stream_type` not 1–5.
    #[error("unknown_stream_type")]
    UnknownStreamType,
    /// `format_type` not 1–3.
    #[error("unknown_format")]
    UnknownFormat,
    /// The payload does not parse or validate as its kind says (this includes
    /// unknown kinds and kinds on the wrong stream or format).
    #[error("bad_payload")]
    BadPayload,
    /// AUTH tag missing, wrong, or present without a session key.
    #[error("bad_auth")]
    BadAuth,
}

impl RejectReason {
    /// Every reason, in counter order.
    pub const ALL: [RejectReason; 8] = [
        RejectReason::TooShort,
        RejectReason::LengthMismatch,
        RejectReason::BadCrc,
        RejectReason::BadVersion,
        RejectReason::UnknownStreamType,
        RejectReason::UnknownFormat,
        RejectReason::BadPayload,
        RejectReason::BadAuth,
    ];

    /// The snake_case name used on the wire-facing tools and in the vectors.
    pub const fn as_str(self) -> &'static str {
        match self {
            RejectReason::TooShort => "too_short",
            RejectReason::LengthMismatch => "length_mismatch",
            RejectReason::BadCrc => "bad_crc",
            RejectReason::BadVersion => "bad_version",
            RejectReason::UnknownStreamType => "unknown_stream_type",
            RejectReason::UnknownFormat => "unknown_format",
            RejectReason::BadPayload => "bad_payload",
            RejectReason::BadAuth => "bad_auth",
        }
    }

    const fn index(self) -> usize {
        self as usize
    }
}

/// One counter per [`RejectReason`], plus accepted frames.
///
/// Thread-safe: yes (relaxed atomics; the worker writes, editors read).
/// Realtime-safe: yes (no allocation, no locks).
#[derive(Debug, Default)]
pub struct RejectCounters {
    accepted: AtomicU64,
    rejected: [AtomicU64; 8],
}

impl RejectCounters {
    /// New counters at zero.
    pub fn new() -> Self {
        Self::default()
    }

    /// Count one accepted frame.
    pub fn count_accepted(&self) {
        self.accepted.fetch_add(1, Ordering::Relaxed);
    }

    /// Count one rejection.
    pub fn count(&self, reason: RejectReason) {
        self.rejected[reason.index()].fetch_add(1, Ordering::Relaxed);
    }

    /// Count the outcome of a decode and pass it through.
    pub fn track<T>(&self, result: Result<T, RejectReason>) -> Result<T, RejectReason> {
        match &result {
            Ok(_) => self.count_accepted(),
            Err(reason) => self.count(*reason),
        }
        result
    }

    /// Frames accepted so far.
    pub fn accepted(&self) -> u64 {
        self.accepted.load(Ordering::Relaxed)
    }

    /// Frames rejected for `reason` so far.
    pub fn get(&self, reason: RejectReason) -> u64 {
        self.rejected[reason.index()].load(Ordering::Relaxed)
    }

    /// Frames rejected for any reason.
    pub fn total_rejected(&self) -> u64 {
        RejectReason::ALL.iter().map(|r| self.get(*r)).sum()
    }

    /// `(reason name, count)` for every reason, in a stable order.
    pub fn snapshot(&self) -> [(&'static str, u64); 8] {
        RejectReason::ALL.map(|r| (r.as_str(), self.get(r)))
    }
}

/// Decode a datagram completely: envelope, then payload.
///
/// `key`: the session key when the session is authenticated.
/// Realtime-safe: no (JSON parsing may allocate for escaped strings and
/// heartbeats' stream lists); bounded by the datagram's size.
pub fn decode<'a>(
    datagram: &'a [u8],
    key: Option<&SessionKey>,
) -> Result<(Frame<'a>, Message<'a>), RejectReason> {
    let frame = decode_frame(datagram, key)?;
    let message = Message::parse(&frame)?;
    Ok((frame, message))
}
