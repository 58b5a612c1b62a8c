//! JELLIE sending (PROTOCOL.md §4) with time diversity, and audio frame
//! helpers shared by the sim tests and the UDP driver.
//!
//! [`JellieSender`] splits each mono block into A (even samples) and B (odd)
//! and sends them at once; C and D, the redundant copies, go out one block
//! later, with the next block's A and B. A loss burst shorter than a block
//! period therefore cannot take both copies of a parity. The receiving side
//! is [`crate::jitter::JitterBuffer::insert_jellie`], which rebuilds through
//! [`crate::protocol::jellie::merge`].

use uuid::Uuid;

use crate::protocol::audio::{write_binary_from_f32, AudioHeader};
use crate::protocol::jellie::{split, SubStream};
use crate::protocol::{
    EncodeError, Flags, FormatType, FrameWriter, Header, MessageKind, SampleFormat, SessionKey,
};

/// Splits mono blocks into JELLIE sub-blocks, delaying C/D by one block.
///
/// Thread-safe: no (`Send`). Realtime-safe: yes after construction.
pub struct JellieSender {
    block_frames: usize,
    delay_redundant: bool,
    even: [Box<[f32]>; 2],
    odd: [Box<[f32]>; 2],
    first: [Option<u64>; 2],
    cur: usize,
}

impl JellieSender {
    /// For mono blocks of `block_frames` samples; `delay_redundant`: send C/D one block late.
    pub fn new(block_frames: usize, delay_redundant: bool) -> Self {
        let e = block_frames.div_ceil(2);
        let o = block_frames / 2;
        JellieSender {
            block_frames,
            delay_redundant,
            even: [
                vec![0.0; e].into_boxed_slice(),
                vec![0.0; e].into_boxed_slice(),
            ],
            odd: [
                vec![0.0; o].into_boxed_slice(),
                vec![0.0; o].into_boxed_slice(),
            ],
            first: [None, None],
            cur: 0,
        }
    }

    /// Samples per block.
    pub fn block_frames(&self) -> usize {
        self.block_frames
    }

    /// Split `block` (starting at `first_sample` on the mono timeline) and
    /// call `emit(first_sample, sub_stream, samples)` for each sub-block to
    /// send now, in order: A, B of this block, then C, D of the previous one
    /// (or of this one when not delaying). Blocks of the wrong length are ignored.
    pub fn push_block(
        &mut self,
        first_sample: u64,
        block: &[f32],
        mut emit: impl FnMut(u64, SubStream, &[f32]),
    ) {
        if block.len() != self.block_frames {
            return;
        }
        let c = self.cur;
        split(block, &mut self.even[c], &mut self.odd[c]);
        self.first[c] = Some(first_sample);
        emit(first_sample, SubStream::A, &self.even[c]);
        emit(first_sample, SubStream::B, &self.odd[c]);
        let r = if self.delay_redundant { 1 - c } else { c };
        if let Some(f) = self.first[r].take() {
            emit(f, SubStream::C, &self.even[r]);
            emit(f, SubStream::D, &self.odd[r]);
        }
        if self.delay_redundant {
            self.cur = 1 - c;
        }
    }

    /// Emit the pending C/D of the last block (end of stream).
    pub fn flush(&mut self, mut emit: impl FnMut(u64, SubStream, &[f32])) {
        let r = 1 - self.cur;
        if let Some(f) = self.first[r].take() {
            emit(f, SubStream::C, &self.even[r]);
            emit(f, SubStream::D, &self.odd[r]);
        }
    }
}

/// Where an audio frame goes: the frame header fields that are not audio.
///
/// Thread-safe: yes (plain value). Realtime-safe: yes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AudioFrameMeta {
    /// Session UUID.
    pub session: Uuid,
    /// Our `source`.
    pub source: u32,
    /// AUDIO stream sequence number.
    pub sequence: u32,
    /// Session time now, ns.
    pub timestamp: u64,
}

/// Encode one GPU_BINARY audio frame (plain when `jellie` is `None`) into `out`;
/// returns its length. JELLIE C/D set the REDUNDANT flag. Realtime-safe: yes.
#[allow(clippy::too_many_arguments)]
pub fn encode_audio_frame(
    meta: &AudioFrameMeta,
    stream_id: u16,
    channels: u8,
    sample_format: SampleFormat,
    sample_rate: u32,
    first_sample: u64,
    jellie: Option<SubStream>,
    samples: &[f32],
    key: Option<&SessionKey>,
    out: &mut [u8],
) -> Result<usize, EncodeError> {
    let mut header = Header::new(
        MessageKind::Audio,
        FormatType::GpuBinary,
        meta.session,
        meta.source,
        meta.sequence,
        meta.timestamp,
    );
    if jellie.is_some_and(SubStream::is_redundant) {
        header.flags = Flags(header.flags.0 | Flags::REDUNDANT);
    }
    let frames = samples.len() / usize::from(channels.max(1));
    let ah = AudioHeader {
        stream_id,
        channels,
        sample_format,
        sample_rate,
        first_sample,
        frames: u16::try_from(frames).map_err(|_| EncodeError::InvalidField("frames > 65535"))?,
        jellie: jellie.map_or(0, |s| s as u8),
    };
    let mut w = FrameWriter::new(&header, out)?;
    let n = write_binary_from_f32(w.payload_space(), &ah, samples)?;
    w.finish(n, key)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redundant_halves_go_out_one_block_late() {
        let mut s = JellieSender::new(8, true);
        let mut sent = Vec::new();
        let block: Vec<f32> = (0..8).map(|i| i as f32).collect();
        s.push_block(0, &block, |f, sub, x| sent.push((f, sub, x.to_vec())));
        assert_eq!(sent.len(), 2, "C/D of block 0 wait for block 1");
        let block2: Vec<f32> = (8..16).map(|i| i as f32).collect();
        s.push_block(8, &block2, |f, sub, x| sent.push((f, sub, x.to_vec())));
        assert_eq!(sent.len(), 6);
        assert_eq!(sent[2].0, 8);
        assert_eq!(sent[4], (0, SubStream::C, vec![0.0, 2.0, 4.0, 6.0]));
        assert_eq!(sent[5], (0, SubStream::D, vec![1.0, 3.0, 5.0, 7.0]));
        s.flush(|f, sub, x| sent.push((f, sub, x.to_vec())));
        assert_eq!(sent[6], (8, SubStream::C, vec![8.0, 10.0, 12.0, 14.0]));
        assert_eq!(sent.len(), 8);
        // Without delay: all four at once.
        let mut now = JellieSender::new(8, false);
        let mut n = 0;
        now.push_block(0, &block, |_, _, _| n += 1);
        assert_eq!(n, 4);
    }

    #[test]
    fn audio_frame_round_trips() {
        let meta = AudioFrameMeta {
            session: Uuid::from_bytes([1; 16]),
            source: 5,
            sequence: 9,
            timestamp: 42,
        };
        let samples: Vec<f32> = (0..64).map(|i| (i as f32 / 64.0) - 0.5).collect();
        let mut buf = [0u8; 1500];
        let n = encode_audio_frame(
            &meta,
            3,
            1,
            SampleFormat::F32,
            48_000,
            4096,
            Some(SubStream::C),
            &samples,
            None,
            &mut buf,
        )
        .unwrap();
        let frame = crate::protocol::decode_frame(&buf[..n], None).unwrap();
        assert!(frame.header.flags.redundant());
        let p = crate::protocol::AudioPayload::parse_binary(frame.payload).unwrap();
        assert_eq!(
            (p.stream_id, p.first_sample, p.frames, p.jellie),
            (3, 4096, 64, 3)
        );
        let mut back = vec![0.0; 64];
        assert_eq!(p.read_into(&mut back), 64);
        assert_eq!(back, samples);
    }
}
