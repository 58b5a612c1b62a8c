//! Burst frames on the wire: [`BurstFrame`] ↔ TOAST v2 jmid frames
//! (COMPACT_JSONL, one event per line, PROTOCOL.md §3.5).
//!
//! The driver (and the sim harness) use these two functions; the state
//! machines never see bytes.

use uuid::Uuid;

use super::{BurstError, BurstFrame, BurstLine, MidiBytes, MidiEvent};
use crate::protocol::{
    self, decode_frame, EncodeError, Flags, FormatType, FrameWriter, Header, JmidEvent, Message,
    MessageKind, MidiMessage, RejectReason, SessionKey,
};

/// Bytes of a jmid frame around its payload (header, CRC, optional AUTH tag).
fn overhead(key: Option<&SessionKey>) -> usize {
    protocol::HEADER_LEN
        + protocol::CRC_LEN
        + if key.is_some() {
            protocol::AUTH_TAG_LEN
        } else {
            0
        }
}

/// Encode `frame` as one TOAST v2 jmid COMPACT_JSONL frame into `out`.
///
/// Lines are written in the frame's priority order until the next one would
/// push the frame past [`protocol::MAX_SEND_FRAME_LEN`] (1472 bytes); the
/// journal's oldest entries are the ones left out. Sets the REDUNDANT flag
/// when every line is a repeat. Returns `(frame length, lines written)`.
///
/// Realtime-safe: yes for short messages (a SysEx line allocates its body
/// once while being converted).
pub fn encode_midi_frame(
    frame: &BurstFrame,
    session: Uuid,
    source: u32,
    sequence: u32,
    now: u64,
    key: Option<&SessionKey>,
    out: &mut [u8],
) -> Result<(usize, usize), EncodeError> {
    let mut header = Header::new(
        MessageKind::Jmid,
        FormatType::CompactJsonl,
        session,
        source,
        sequence,
        now,
    );
    if frame.redundant {
        header.flags = Flags(header.flags.0 | Flags::REDUNDANT);
    }
    let limit = protocol::MAX_SEND_FRAME_LEN.min(out.len());
    let budget = limit.saturating_sub(overhead(key));
    let mut writer = FrameWriter::new(&header, &mut out[..limit])?;
    let space = writer.payload_space();
    let space_len = space.len().min(budget);
    let payload = &mut space[..space_len];
    let mut pos = 0;
    let mut lines = 0;
    for line in frame.lines() {
        let Ok(message) = MidiMessage::from_bytes(line.event.bytes.as_slice()) else {
            continue; // push() validated the bytes; unreachable in practice
        };
        let event = JmidEvent {
            message,
            timestamp: line.event.ts,
            burst_id: line.event.burst_id,
            burst_index: line.index,
            burst_size: line.size,
        };
        let sep = usize::from(lines > 0);
        if pos + sep >= payload.len() {
            break;
        }
        match protocol::jmid::write_compact_lines(
            &mut payload[pos + sep..],
            std::slice::from_ref(&event),
        ) {
            Ok(n) => {
                if sep == 1 {
                    payload[pos] = b'\n';
                }
                pos += sep + n;
                lines += 1;
            }
            Err(EncodeError::BufferTooSmall { .. }) => break,
            Err(e) => return Err(e),
        }
    }
    if lines == 0 {
        return Err(EncodeError::BufferTooSmall {
            needed: limit + 1,
            available: limit,
        });
    }
    Ok((writer.finish(pos, key)?, lines))
}

/// A jmid event as a burst line (original `ts`, `b`, `i`, `k` kept).
pub fn line_from_jmid(event: &JmidEvent) -> Result<BurstLine, BurstError> {
    let mut buf = [0u8; super::MIDI_BYTES_MAX];
    let n = event
        .message
        .write_bytes(&mut buf)
        .map_err(|_| BurstError::BadLength(super::MIDI_BYTES_MAX + 1))?;
    Ok(BurstLine {
        event: MidiEvent {
            ts: event.timestamp,
            bytes: MidiBytes::new(&buf[..n])?,
            burst_id: event.burst_id,
        },
        index: event.burst_index,
        size: event.burst_size,
    })
}

/// A decoded MIDI frame (what the sim harness needs from a datagram).
///
/// Thread-safe: yes (plain value). Realtime-safe: yes.
#[derive(Debug, Clone)]
pub struct DecodedMidi {
    /// The frame header.
    pub header: Header,
    frame: BurstFrame,
    /// Lines that parsed but do not fit a [`BurstLine`] (SysEx over 64 bytes), skipped.
    pub skipped: usize,
}

impl DecodedMidi {
    /// The event lines.
    pub fn lines(&self) -> &[BurstLine] {
        self.frame.lines()
    }
}

/// Decode a datagram that should be a jmid frame (either format).
/// Lines beyond [`super::FRAME_LINES_MAX`] are skipped and counted.
pub fn decode_midi_datagram(
    datagram: &[u8],
    key: Option<&SessionKey>,
) -> Result<DecodedMidi, RejectReason> {
    let frame = decode_frame(datagram, key)?;
    let message = Message::parse(&frame)?;
    let mut out = DecodedMidi {
        header: frame.header,
        frame: BurstFrame::default(),
        skipped: 0,
    };
    out.frame.clear();
    out.frame.redundant = frame.header.flags.0 & Flags::REDUNDANT != 0;
    let mut take = |e: &JmidEvent| match line_from_jmid(e) {
        Ok(line) if out.frame.push(line) => {}
        _ => out.skipped += 1,
    };
    match &message {
        Message::Jmid(e) => take(e),
        Message::JmidCompact(c) => c.events.iter().for_each(&mut take),
        _ => return Err(RejectReason::BadPayload),
    }
    Ok(out)
}
