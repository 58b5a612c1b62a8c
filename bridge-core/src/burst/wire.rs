//! Burst frames on the wire (adapter between [`super::BurstFrame`] and datagrams).
//!
//! Interim format until `protocol` lands on `main`: a CRC-checked binary
//! layout with the same fields as a TOAST v2 COMPACT_JSONL jmid frame
//! (source, sequence, timestamp, and per line `m`, `ts`, `b`, `i`, `k`).
//! Only the sim harness uses it.

use super::{BurstFrame, BurstLine, MidiBytes, MidiEvent, FRAME_LINES_MAX};

/// Why a datagram was not a burst frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    /// Too short, bad CRC, or a line that does not parse.
    #[error("malformed MIDI frame")]
    Malformed,
}

/// A decoded MIDI frame.
///
/// Thread-safe: yes (plain value). Realtime-safe: yes.
#[derive(Debug, Clone)]
pub struct DecodedMidi {
    /// Sender id.
    pub source: u32,
    /// Per-source frame counter.
    pub sequence: u32,
    /// Sender's time when built, ns.
    pub timestamp: u64,
    frame: BurstFrame,
}

impl DecodedMidi {
    /// The event lines.
    pub fn lines(&self) -> &[BurstLine] {
        self.frame.lines()
    }
}

/// Encode `frame` into `out` (at least 2048 bytes); returns the datagram length.
pub fn encode_frame(
    frame: &BurstFrame,
    source: u32,
    _session: &[u8; 16],
    seq: u32,
    now: u64,
    out: &mut [u8],
) -> usize {
    let mut n = 0;
    let mut put = |b: &[u8]| {
        out[n..n + b.len()].copy_from_slice(b);
        n += b.len();
    };
    put(&source.to_be_bytes());
    put(&seq.to_be_bytes());
    put(&now.to_be_bytes());
    put(&[frame.redundant as u8, frame.lines().len() as u8]);
    for l in frame.lines() {
        put(&l.event.ts.to_be_bytes());
        put(&l.event.burst_id.to_be_bytes());
        put(&[l.index, l.size, l.event.bytes.as_slice().len() as u8]);
        put(l.event.bytes.as_slice());
    }
    let crc = crc32fast::hash(&out[..n]);
    out[n..n + 4].copy_from_slice(&crc.to_be_bytes());
    n + 4
}

/// Decode a datagram made by [`encode_frame`].
pub fn decode_frame(d: &[u8]) -> Result<DecodedMidi, WireError> {
    if d.len() < 22 {
        return Err(WireError::Malformed);
    }
    let (body, crc) = d.split_at(d.len() - 4);
    if crc32fast::hash(body).to_be_bytes() != crc {
        return Err(WireError::Malformed);
    }
    let u32_at = |i: usize| u32::from_be_bytes(body[i..i + 4].try_into().unwrap());
    let u64_at = |i: usize| -> Result<u64, WireError> {
        body.get(i..i + 8)
            .map(|b| u64::from_be_bytes(b.try_into().unwrap()))
            .ok_or(WireError::Malformed)
    };
    let mut frame = BurstFrame::default();
    frame.clear();
    frame.redundant = body[16] != 0;
    let count = body[17] as usize;
    if count > FRAME_LINES_MAX {
        return Err(WireError::Malformed);
    }
    let mut p = 18;
    for _ in 0..count {
        let ts = u64_at(p)?;
        let burst_id = u64_at(p + 8)?;
        let hdr = body.get(p + 16..p + 19).ok_or(WireError::Malformed)?;
        let (index, size, len) = (hdr[0], hdr[1], hdr[2] as usize);
        let bytes = body.get(p + 19..p + 19 + len).ok_or(WireError::Malformed)?;
        let bytes = MidiBytes::new(bytes).map_err(|_| WireError::Malformed)?;
        frame.push(BurstLine {
            event: MidiEvent {
                ts,
                bytes,
                burst_id,
            },
            index,
            size,
        });
        p += 19 + len;
    }
    Ok(DecodedMidi {
        source: u32_at(0),
        sequence: u32_at(4),
        timestamp: u64_at(8)?,
        frame,
    })
}

/// Loss estimate from sequence numbers: an exponentially weighted average
/// of "was this sequence number missing" over roughly the last 64 frames.
///
/// Thread-safe: no. Realtime-safe: yes.
#[derive(Debug, Clone, Copy, Default)]
pub struct SeqLossMeter {
    last: Option<u32>,
    loss: f64,
}

impl SeqLossMeter {
    /// A frame with sequence `seq` arrived.
    pub fn on_seq(&mut self, seq: u32) {
        const ALPHA: f64 = 1.0 / 64.0;
        if let Some(last) = self.last {
            let gap = seq.wrapping_sub(last);
            if gap == 0 || gap > 1 << 31 {
                return; // duplicate or late (reordered) frame: not a loss signal
            }
            let missing = (gap - 1).min(1000);
            for _ in 0..missing {
                self.loss += ALPHA * (1.0 - self.loss);
            }
            self.loss += ALPHA * (0.0 - self.loss);
        }
        self.last = Some(seq);
    }

    /// Estimated loss rate (0–1).
    pub fn loss(&self) -> f64 {
        self.loss
    }
}
