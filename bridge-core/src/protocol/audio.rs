//! Audio payloads (PROTOCOL.md section 4): binary (GPU_BINARY) and JSON.
//!
//! Samples are interleaved and little-endian on the wire; the binary form
//! borrows them straight from the datagram.

use super::frame::EncodeError;
use super::messages::write_json;
use super::validate::{ensure, in_range, Checked, Invalid};
use super::RejectReason;
use base64::Engine as _;
use serde::{Deserialize, Serialize, Serializer};
use std::borrow::Cow;

/// Bytes before the samples in a binary audio payload.
pub const AUDIO_HEADER_LEN: usize = 20;

/// PCM sample encodings.
///
/// Thread-safe: yes. Realtime-safe: yes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SampleFormat {
    /// 16-bit signed.
    I16 = 1,
    /// 24-bit signed, 3 bytes.
    I24 = 2,
    /// 32-bit IEEE float.
    F32 = 3,
}

impl SampleFormat {
    /// From the binary payload's byte.
    pub const fn from_u8(v: u8) -> Option<Self> {
        match v {
            1 => Some(SampleFormat::I16),
            2 => Some(SampleFormat::I24),
            3 => Some(SampleFormat::F32),
            _ => None,
        }
    }

    /// Bytes per sample.
    pub const fn size(self) -> usize {
        match self {
            SampleFormat::I16 => 2,
            SampleFormat::I24 => 3,
            SampleFormat::F32 => 4,
        }
    }

    /// Name as in JSON (`i16`, `i24`, `f32`).
    pub const fn name(self) -> &'static str {
        match self {
            SampleFormat::I16 => "i16",
            SampleFormat::I24 => "i24",
            SampleFormat::F32 => "f32",
        }
    }
}

/// An audio payload. `pcm` holds `frames × channels` interleaved
/// little-endian samples: borrowed from the datagram (binary form) or owned
/// (decoded from base64).
///
/// Thread-safe: yes. Realtime-safe: the binary form yes (borrows); JSON no.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AudioPayload<'a> {
    /// Stream within the sender.
    pub stream_id: u16,
    /// 1–64 (1 for JELLIE sub-streams).
    pub channels: u8,
    /// Sample encoding.
    pub sample_format: SampleFormat,
    /// Hz.
    pub sample_rate: u32,
    /// Index of the first frame on the sender's stream (JELLIE: on the mono timeline).
    pub first_sample: u64,
    /// Frames in this payload (JELLIE: samples this sub-stream carries).
    pub frames: u16,
    /// 0 plain; 1–4 JELLIE sub-stream A–D.
    pub jellie: u8,
    /// The sample bytes, little-endian, interleaved.
    pub pcm: Cow<'a, [u8]>,
}

/// Lowest and highest sample rates accepted (as for heartbeats).
pub const SAMPLE_RATE_RANGE: (u32, u32) = (8000, 384_000);

impl<'a> AudioPayload<'a> {
    fn check(&self) -> Checked<()> {
        in_range(self.channels, 1, 64)?;
        in_range(self.sample_rate, SAMPLE_RATE_RANGE.0, SAMPLE_RATE_RANGE.1)?;
        in_range(self.jellie, 0, 4)?;
        ensure(self.jellie == 0 || self.channels == 1)?;
        ensure(self.pcm.len() == self.expected_pcm_len())
    }

    /// Check what a receiver would reject (for senders).
    pub fn check_fields(&self) -> Result<(), EncodeError> {
        self.check()
            .map_err(|_| EncodeError::InvalidField("audio payload"))
    }

    /// `frames × channels × sample size`.
    pub fn expected_pcm_len(&self) -> usize {
        usize::from(self.frames) * usize::from(self.channels) * self.sample_format.size()
    }

    /// Samples in the payload (`frames × channels`).
    pub fn sample_count(&self) -> usize {
        usize::from(self.frames) * usize::from(self.channels)
    }

    /// Parse and validate a GPU_BINARY payload; borrows the samples.
    pub fn parse_binary(p: &'a [u8]) -> Result<Self, RejectReason> {
        Self::parse_binary_checked(p).map_err(|_| RejectReason::BadPayload)
    }

    fn parse_binary_checked(p: &'a [u8]) -> Checked<Self> {
        ensure(p.len() >= AUDIO_HEADER_LEN)?;
        let payload = AudioPayload {
            stream_id: u16::from_be_bytes([p[0], p[1]]),
            channels: p[2],
            sample_format: SampleFormat::from_u8(p[3]).ok_or(Invalid)?,
            sample_rate: u32::from_be_bytes([p[4], p[5], p[6], p[7]]),
            first_sample: u64::from_be_bytes(p[8..16].try_into().map_err(|_| Invalid)?),
            frames: u16::from_be_bytes([p[16], p[17]]),
            jellie: p[18],
            pcm: Cow::Borrowed(&p[AUDIO_HEADER_LEN..]),
        };
        payload.check()?;
        Ok(payload)
    }

    /// Parse and validate a STANDARD_JSON audio payload (base64 samples).
    pub fn parse_json(p: &[u8]) -> Result<AudioPayload<'static>, RejectReason> {
        Self::parse_json_checked(p).map_err(|_| RejectReason::BadPayload)
    }

    fn parse_json_checked(p: &[u8]) -> Checked<AudioPayload<'static>> {
        let w: AudioWire = serde_json::from_slice(p).map_err(|_| Invalid)?;
        ensure(w.ty == "audio")?;
        // Bound the decode before allocating: base64 expands 3 bytes to 4.
        ensure(w.pcm.len() <= super::MAX_RECV_FRAME_LEN)?;
        let pcm = base64::engine::general_purpose::STANDARD
            .decode(w.pcm.as_bytes())
            .map_err(|_| Invalid)?;
        let payload = AudioPayload {
            stream_id: w.stream_id,
            channels: w.channels,
            sample_format: w.sample_format,
            sample_rate: w.sample_rate,
            first_sample: w.first_sample,
            frames: w.frames,
            jellie: w.jellie,
            pcm: Cow::Owned(pcm),
        };
        payload.check()?;
        Ok(payload)
    }

    /// Write the binary payload into `out`. Realtime-safe: yes.
    pub fn write_binary(&self, out: &mut [u8]) -> Result<usize, EncodeError> {
        self.check_fields()?;
        let n = AUDIO_HEADER_LEN + self.pcm.len();
        if out.len() < n {
            return Err(EncodeError::BufferTooSmall {
                needed: n,
                available: out.len(),
            });
        }
        write_audio_header(
            out,
            &AudioHeader {
                stream_id: self.stream_id,
                channels: self.channels,
                sample_format: self.sample_format,
                sample_rate: self.sample_rate,
                first_sample: self.first_sample,
                frames: self.frames,
                jellie: self.jellie,
            },
        );
        out[AUDIO_HEADER_LEN..n].copy_from_slice(&self.pcm);
        Ok(n)
    }

    /// Write the STANDARD_JSON payload (samples as base64). Realtime-safe: yes.
    pub fn write_json(&self, out: &mut [u8]) -> Result<usize, EncodeError> {
        write_json(out, "audio", &JsonBody(self))
    }

    /// Sample `i` (interleaved index) as an integer: i16/i24 as stored, f32
    /// not representable (returns `None`).
    pub fn sample_int(&self, i: usize) -> Option<i32> {
        read_int(self.sample_format, &self.pcm, i)
    }

    /// Sample `i` as f32 in [-1, 1) for integers, as stored for f32.
    pub fn sample_f32(&self, i: usize) -> f32 {
        read_f32(self.sample_format, &self.pcm, i)
    }

    /// Convert all samples to f32 into `out` (interleaved); returns how many.
    /// Realtime-safe: yes.
    pub fn read_into(&self, out: &mut [f32]) -> usize {
        let n = self.sample_count().min(out.len());
        decode_samples(self.sample_format, &self.pcm, &mut out[..n]);
        n
    }
}

fn read_int(format: SampleFormat, pcm: &[u8], i: usize) -> Option<i32> {
    match format {
        SampleFormat::I16 => pcm
            .get(2 * i..2 * i + 2)
            .map(|b| i32::from(i16::from_le_bytes([b[0], b[1]]))),
        SampleFormat::I24 => pcm
            .get(3 * i..3 * i + 3)
            .map(|b| i32::from_le_bytes([0, b[0], b[1], b[2]]) >> 8),
        SampleFormat::F32 => None,
    }
}

fn read_f32(format: SampleFormat, pcm: &[u8], i: usize) -> f32 {
    match format {
        SampleFormat::I16 => read_int(format, pcm, i).unwrap_or(0) as f32 / 32768.0,
        SampleFormat::I24 => read_int(format, pcm, i).unwrap_or(0) as f32 / 8_388_608.0,
        SampleFormat::F32 => pcm
            .get(4 * i..4 * i + 4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .unwrap_or(0.0),
    }
}

/// Decode little-endian samples of `format` from `pcm` into floats.
/// Realtime-safe: yes.
pub fn decode_samples(format: SampleFormat, pcm: &[u8], out: &mut [f32]) {
    match format {
        SampleFormat::I16 => {
            for (o, b) in out.iter_mut().zip(pcm.chunks_exact(2)) {
                *o = f32::from(i16::from_le_bytes([b[0], b[1]])) / 32768.0;
            }
        }
        SampleFormat::I24 => {
            for (o, b) in out.iter_mut().zip(pcm.chunks_exact(3)) {
                *o = (i32::from_le_bytes([0, b[0], b[1], b[2]]) >> 8) as f32 / 8_388_608.0;
            }
        }
        SampleFormat::F32 => {
            for (o, b) in out.iter_mut().zip(pcm.chunks_exact(4)) {
                *o = f32::from_le_bytes([b[0], b[1], b[2], b[3]]);
            }
        }
    }
}

/// Encode float samples as little-endian `format` into `out`; integers are
/// rounded and clipped. Returns bytes written. Realtime-safe: yes.
pub fn encode_samples(format: SampleFormat, samples: &[f32], out: &mut [u8]) -> usize {
    let n = samples.len() * format.size();
    let out = &mut out[..n];
    match format {
        SampleFormat::I16 => {
            for (s, o) in samples.iter().zip(out.chunks_exact_mut(2)) {
                let v = round_to_int(s * 32768.0, 32767.0) as i16;
                o.copy_from_slice(&v.to_le_bytes());
            }
        }
        SampleFormat::I24 => {
            for (s, o) in samples.iter().zip(out.chunks_exact_mut(3)) {
                // f64: f32 cannot hold 8388607.5 exactly.
                let x = (f64::from(*s) * 8_388_608.0).clamp(-8_388_608.0, 8_388_607.0);
                let v = (x + 0.5f64.copysign(x)) as i32;
                o.copy_from_slice(&v.to_le_bytes()[..3]);
            }
        }
        SampleFormat::F32 => {
            for (s, o) in samples.iter().zip(out.chunks_exact_mut(4)) {
                o.copy_from_slice(&s.to_le_bytes());
            }
        }
    }
    n
}

/// Round half away from zero and clip to `[-(max+1), max]`. Written out
/// rather than `f32::round` (a libm call on baseline x86-64) because it runs
/// per sample; the float→int cast saturates and maps NaN to 0.
#[inline]
fn round_to_int(x: f32, max: f32) -> i32 {
    (x.clamp(-max - 1.0, max) + 0.5f32.copysign(x)) as i32
}

/// The fields of a binary audio payload header, for writing frames in place.
///
/// Thread-safe: yes. Realtime-safe: yes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AudioHeader {
    /// Stream within the sender.
    pub stream_id: u16,
    /// 1–64.
    pub channels: u8,
    /// Sample encoding.
    pub sample_format: SampleFormat,
    /// Hz.
    pub sample_rate: u32,
    /// First frame index.
    pub first_sample: u64,
    /// Frames.
    pub frames: u16,
    /// 0 or JELLIE sub-stream 1–4.
    pub jellie: u8,
}

/// Write a 20-byte binary audio header into `out[..20]`.
pub fn write_audio_header(out: &mut [u8], h: &AudioHeader) {
    out[0..2].copy_from_slice(&h.stream_id.to_be_bytes());
    out[2] = h.channels;
    out[3] = h.sample_format as u8;
    out[4..8].copy_from_slice(&h.sample_rate.to_be_bytes());
    out[8..16].copy_from_slice(&h.first_sample.to_be_bytes());
    out[16..18].copy_from_slice(&h.frames.to_be_bytes());
    out[18] = h.jellie;
    out[19] = 0;
}

/// Write a whole binary audio payload from float samples straight into `out`
/// (header + encoded samples); returns its length. Realtime-safe: yes.
pub fn write_binary_from_f32(
    out: &mut [u8],
    h: &AudioHeader,
    samples: &[f32],
) -> Result<usize, EncodeError> {
    if samples.len() != usize::from(h.frames) * usize::from(h.channels) {
        return Err(EncodeError::InvalidField("samples != frames × channels"));
    }
    let n = AUDIO_HEADER_LEN + samples.len() * h.sample_format.size();
    if out.len() < n {
        return Err(EncodeError::BufferTooSmall {
            needed: n,
            available: out.len(),
        });
    }
    write_audio_header(out, h);
    encode_samples(h.sample_format, samples, &mut out[AUDIO_HEADER_LEN..]);
    Ok(n)
}

#[derive(Deserialize)]
struct AudioWire<'a> {
    #[serde(rename = "type", borrow)]
    ty: Cow<'a, str>,
    stream_id: u16,
    channels: u8,
    sample_format: SampleFormat,
    sample_rate: u32,
    first_sample: u64,
    frames: u16,
    jellie: u8,
    #[serde(borrow)]
    pcm: Cow<'a, str>,
}

struct JsonBody<'p, 'a>(&'p AudioPayload<'a>);

struct Base64<'b>(&'b [u8]);
impl Serialize for Base64<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(&base64::display::Base64Display::new(
            self.0,
            &base64::engine::general_purpose::STANDARD,
        ))
    }
}

impl Serialize for JsonBody<'_, '_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let a = self.0;
        let mut m = s.serialize_map(Some(8))?;
        m.serialize_entry("stream_id", &a.stream_id)?;
        m.serialize_entry("channels", &a.channels)?;
        m.serialize_entry("sample_format", &a.sample_format)?;
        m.serialize_entry("sample_rate", &a.sample_rate)?;
        m.serialize_entry("first_sample", &a.first_sample)?;
        m.serialize_entry("frames", &a.frames)?;
        m.serialize_entry("jellie", &a.jellie)?;
        m.serialize_entry("pcm", &Base64(&a.pcm))?;
        m.end()
    }
}
