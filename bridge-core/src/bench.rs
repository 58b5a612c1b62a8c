//! Benchmark workloads shared by the criterion benches (`benches/`) and
//! `toaster bench`, so both measure exactly the same thing, plus a small
//! median-of-batches timer for the CLI.
//!
//! Thread-safe: no (cases own mutable buffers). Realtime-safe: no (tools only).

use crate::protocol::{
    self,
    audio::{write_binary_from_f32, AudioHeader},
    decode, decode_frame, encode_frame, FormatType, Header, JmidCompact, JmidEvent, MessageKind,
    SampleFormat, SessionKey,
};
use std::hint::black_box;
use std::time::{Duration, Instant};

/// One named workload: each call of `run` does one operation and returns a
/// value derived from it (so the optimiser cannot drop the work).
///
/// Thread-safe: no (owns a non-`Send` closure). Realtime-safe: no (tools only).
pub struct Case {
    /// Group (`encode`, `decode`, `parse`, `hash`).
    pub group: &'static str,
    /// What is measured.
    pub name: &'static str,
    /// Bytes processed per operation (for throughput).
    pub bytes: usize,
    /// One operation.
    pub run: Box<dyn FnMut() -> usize>,
}

fn header(kind: MessageKind, format: FormatType) -> Header {
    Header::new(
        kind,
        format,
        uuid::Uuid::from_u128(0x4911_61fc_503c_b89e_8bde_aca5_8a48_326f),
        0xc6b5_4a79,
        7,
        29_496_420_321_473,
    )
}

fn audio_frame(channels: u8, frames: u16, format: SampleFormat) -> Vec<u8> {
    let samples: Vec<f32> = (0..usize::from(channels) * usize::from(frames))
        .map(|i| (i as f32 * 0.01).sin() * 0.5)
        .collect();
    let h = AudioHeader {
        stream_id: 1,
        channels,
        sample_format: format,
        sample_rate: 48000,
        first_sample: 96_000,
        frames,
        jellie: 0,
    };
    let mut payload = vec![0u8; 20 + samples.len() * 4];
    let n = write_binary_from_f32(&mut payload, &h, &samples).expect("payload");
    let mut out = vec![0u8; protocol::MAX_SEND_FRAME_LEN + 64];
    let len = encode_frame(
        &header(MessageKind::Audio, FormatType::GpuBinary),
        &payload[..n],
        None,
        &mut out,
    )
    .expect("frame");
    out.truncate(len);
    out
}

/// A STANDARD_JSON note-on payload, as a peer sends it.
pub const JMID_STANDARD: &[u8] = br#"{"type":"jmid","event":"note_on","channel":1,"note":60,"velocity":100,"timestamp":29496420321473,"burst_id":"00000000000000a1","burst_index":0,"burst_size":3}"#;
/// A one-line COMPACT_JSONL note-on payload.
pub const JMID_COMPACT: &[u8] =
    br#"{"m":[144,60,100],"ts":29496420321473,"b":"00000000000000b1","i":0,"k":3}"#;
/// A transport payload.
pub const TRANSPORT: &[u8] = br#"{"type":"transport","command":"PLAY","timestamp":29496430321473,"position":1500.0,"bpm":128.5,"time_signature":[7,8],"master_peer":"c6b54a79","beat":3.2125,"seq":42}"#;

/// The codec workloads of the foundation issue.
pub fn codec_cases() -> Vec<Case> {
    let mut cases = Vec::new();
    let control = header(MessageKind::Goodbye, FormatType::StandardJson);
    let mut buf = vec![0u8; 2048];
    cases.push(Case {
        group: "encode",
        name: "control frame, 46 B",
        bytes: 46,
        run: Box::new(move || encode_frame(black_box(&control), &[], None, &mut buf).unwrap_or(0)),
    });
    let mut small = vec![0u8; 46];
    encode_frame(&control, &[], None, &mut small).expect("46-byte frame");
    cases.push(Case {
        group: "decode",
        name: "control frame, 46 B (envelope)",
        bytes: 46,
        run: Box::new(move || {
            decode_frame(black_box(&small), None)
                .map(|f| f.header.source as usize)
                .unwrap_or(0)
        }),
    });
    // 512-byte audio payload: 20-byte audio header + 123 stereo i16 frames.
    let audio512 = audio_frame(2, 123, SampleFormat::I16);
    assert_eq!(audio512.len(), 46 + 512);
    let samples: Vec<f32> = (0..246).map(|i| (i as f32 * 0.01).sin() * 0.5).collect();
    let ah = AudioHeader {
        stream_id: 1,
        channels: 2,
        sample_format: SampleFormat::I16,
        sample_rate: 48000,
        first_sample: 96_000,
        frames: 123,
        jellie: 0,
    };
    let audio_header = header(MessageKind::Audio, FormatType::GpuBinary);
    let mut out = vec![0u8; 2048];
    cases.push(Case {
        group: "encode",
        name: "audio frame, 512 B payload (f32 → i16 + frame)",
        bytes: audio512.len(),
        run: Box::new(move || {
            let mut w = match protocol::FrameWriter::new(&audio_header, &mut out) {
                Ok(w) => w,
                Err(_) => return 0,
            };
            let n = write_binary_from_f32(w.payload_space(), &ah, black_box(&samples)).unwrap_or(0);
            w.finish(n, None).unwrap_or(0)
        }),
    });
    let a = audio512.clone();
    cases.push(Case {
        group: "decode",
        name: "audio frame, 512 B payload (envelope + payload)",
        bytes: a.len(),
        run: Box::new(move || match decode(black_box(&a), None) {
            Ok((_, protocol::Message::Audio(p))) => p.sample_count(),
            _ => 0,
        }),
    });
    let a = audio512;
    let mut floats = vec![0f32; 512];
    cases.push(Case {
        group: "decode",
        name: "audio frame, 512 B payload (+ to f32)",
        bytes: a.len(),
        run: Box::new(move || match decode(black_box(&a), None) {
            Ok((_, protocol::Message::Audio(p))) => p.read_into(&mut floats),
            _ => 0,
        }),
    });
    // 1472-byte frame: 703 mono i16 frames.
    let big = audio_frame(1, 703, SampleFormat::I16);
    assert_eq!(big.len(), protocol::MAX_SEND_FRAME_LEN);
    let payload = big[42..big.len() - 4].to_vec();
    let mut out = vec![0u8; 2048];
    cases.push(Case {
        group: "encode",
        name: "1472 B frame (copy payload + CRC)",
        bytes: big.len(),
        run: Box::new(move || {
            encode_frame(&audio_header, black_box(&payload), None, &mut out).unwrap_or(0)
        }),
    });
    let b = big.clone();
    cases.push(Case {
        group: "decode",
        name: "1472 B frame (envelope + payload)",
        bytes: b.len(),
        run: Box::new(move || {
            decode(black_box(&b), None)
                .map(|(f, _)| f.payload.len())
                .unwrap_or(0)
        }),
    });
    cases.push(Case {
        group: "parse",
        name: "JMID STANDARD_JSON parse + validate",
        bytes: JMID_STANDARD.len(),
        run: Box::new(|| {
            JmidEvent::parse_json(black_box(JMID_STANDARD))
                .map(|e| e.burst_id as usize)
                .unwrap_or(0)
        }),
    });
    cases.push(Case {
        group: "parse",
        name: "JMID COMPACT_JSONL parse + validate (1 line)",
        bytes: JMID_COMPACT.len(),
        run: Box::new(|| {
            JmidCompact::parse(black_box(JMID_COMPACT))
                .map(|c| c.events.len())
                .unwrap_or(0)
        }),
    });
    cases.push(Case {
        group: "parse",
        name: "transport parse + validate",
        bytes: TRANSPORT.len(),
        run: Box::new(|| {
            protocol::messages::parse_transport(black_box(TRANSPORT))
                .map(|t| t.seq.unwrap_or(0) as usize)
                .unwrap_or(0)
        }),
    });
    let data = vec![0xa5u8; 1472];
    cases.push(Case {
        group: "hash",
        name: "CRC-32, 1472 B",
        bytes: data.len(),
        run: Box::new(move || crc32fast::hash(black_box(&data)) as usize),
    });
    let data = vec![0xa5u8; 1472];
    let key = SessionKey([0x11; 32]);
    cases.push(Case {
        group: "hash",
        name: "BLAKE3 AUTH tag, 1472 B",
        bytes: data.len(),
        run: Box::new(move || key.tag(black_box(&data))[0] as usize),
    });
    let data = vec![0xa5u8; 46];
    let key = SessionKey([0x11; 32]);
    cases.push(Case {
        group: "hash",
        name: "BLAKE3 AUTH tag, 46 B",
        bytes: data.len(),
        run: Box::new(move || key.tag(black_box(&data))[0] as usize),
    });
    cases
}

/// Timing of one case: per-operation nanoseconds over batches.
///
/// Thread-safe: yes. Realtime-safe: yes.
#[derive(Debug, Clone, Copy)]
pub struct Timing {
    /// Median of the batch means, ns per operation.
    pub median_ns: f64,
    /// 10th percentile of the batch means.
    pub p10_ns: f64,
    /// 90th percentile of the batch means.
    pub p90_ns: f64,
}

/// Time `case`: calibrate a batch to ~`batch` long, run `batches` batches,
/// report the median and spread of per-operation time.
pub fn time_case(case: &mut Case, batch: Duration, batches: usize) -> Timing {
    let mut iters = 1u64;
    loop {
        let t = Instant::now();
        for _ in 0..iters {
            black_box((case.run)());
        }
        if t.elapsed() >= batch / 4 || iters >= 1 << 30 {
            let per = t.elapsed().as_secs_f64() / iters as f64;
            iters = ((batch.as_secs_f64() / per.max(1e-12)) as u64).max(1);
            break;
        }
        iters *= 2;
    }
    let mut means: Vec<f64> = (0..batches.max(1))
        .map(|_| {
            let t = Instant::now();
            for _ in 0..iters {
                black_box((case.run)());
            }
            t.elapsed().as_secs_f64() * 1e9 / iters as f64
        })
        .collect();
    means.sort_by(f64::total_cmp);
    let at = |q: f64| means[((means.len() - 1) as f64 * q).round() as usize];
    Timing {
        median_ns: at(0.5),
        p10_ns: at(0.1),
        p90_ns: at(0.9),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn every_case_does_real_work() {
        for mut c in super::codec_cases() {
            assert!((c.run)() > 0 || c.group == "hash", "{} returned 0", c.name);
        }
    }
}
