//! A variable-ratio resampler with an 8-frame delay, for the low-latency
//! playout.
//!
//! The drift stage ([`crate::drift::DriftCompensator`]) resamples with
//! rubato into fixed output blocks; its input FIFO costs half a block of
//! latency on average. The low-latency playout renders each block as it
//! arrives and pushes however many frames come out (63, 64 or 65 for 64
//! in), so it needs a resampler whose delay is a few frames: a 16-tap
//! Kaiser-windowed sinc (8 frames, 0.17 ms at 48 kHz) from a table of 1024
//! fractional phases. At a ratio of exactly 1 on an integer phase it passes
//! the input through bit-exact; at the ratios it sees (within a few hundred
//! ppm of 1) a 10 kHz sine at 48 kHz comes back above 60 dB SNR (see the
//! tests; cubic interpolation managed 27 dB).
//!
//! [`FineResampler::converting`] centres it on another nominal ratio (a
//! stream at 44.1 kHz into a 48 kHz host): the same 16 taps, the cutoff
//! lowered below the output's Nyquist when it is the lower one, so that
//! going down folds little of the top octave back (16 taps roll off
//! gently: the low-latency path trades the buffered converter's 64-tap
//! sharpness for its 8 frames of delay).

/// Filter length, frames.
const TAPS: usize = 16;
/// Frames of history kept between calls.
const HISTORY: usize = TAPS - 1;
/// Fractional phases tabulated.
const PHASES: usize = 1024;
/// Kaiser window shape.
const KAISER_BETA: f64 = 8.0;
/// Widest rate conversion, either way (4:1).
const MAX_CONVERSION: f64 = 4.0;

/// `nominal` as [`FineResampler::converting`] takes it: within 1/4..4 (not
/// a number: 1).
fn clamp_nominal(nominal: f64) -> f64 {
    if nominal.is_finite() {
        nominal.clamp(1.0 / MAX_CONVERSION, MAX_CONVERSION)
    } else {
        1.0
    }
}

/// Zeroth-order modified Bessel function of the first kind (series).
fn bessel_i0(x: f64) -> f64 {
    let mut sum = 1.0;
    let mut term = 1.0;
    let q = x * x / 4.0;
    for k in 1..64 {
        term *= q / (k * k) as f64;
        sum += term;
        if term < 1e-12 * sum {
            break;
        }
    }
    sum
}

/// Windowed-sinc resampler for interleaved audio at a ratio near 1.
///
/// Thread-safe: no (`Send`). Realtime-safe: yes after construction (fixed
/// buffers, no allocation in [`FineResampler::process`]).
#[derive(Debug, Clone)]
pub struct FineResampler {
    channels: usize,
    max_in_frames: usize,
    /// Input frames per output frame the ratio is centred on (1: drift
    /// only); [`FineResampler::process`] allows ±1 % around it.
    nominal: f64,
    /// History frames followed by the current input.
    work: Box<[f32]>,
    /// `(PHASES + 1) × TAPS` coefficients: phase `p` delays by `p / PHASES` frame.
    table: Box<[f32]>,
    /// Position of the next output frame, in frames from the start of `work`.
    pos: f64,
}

impl FineResampler {
    /// For `channels` interleaved channels and inputs of at most `max_in_frames`.
    pub fn new(channels: usize, max_in_frames: usize) -> Self {
        Self::converting(channels, max_in_frames, 1.0)
    }

    /// The same, converting at `nominal` input frames per output frame
    /// (the input's rate over the output's; clamped to 1/4..4).
    pub fn converting(channels: usize, max_in_frames: usize, nominal: f64) -> Self {
        let channels = channels.max(1);
        let nominal = clamp_nominal(nominal);
        // Relative to the input's Nyquist; below 1 only when going down,
        // then 0.9 of the output's Nyquist (16 taps roll off over several
        // kHz: at the output's Nyquist a 23 kHz tone going to 44.1 kHz
        // folded back at 0.87 of its level, at 0.9 of it 0.2; 15 kHz
        // loses 0.3 dB).
        let cutoff = if nominal > 1.0 { 0.9 / nominal } else { 1.0 };
        let half = (TAPS / 2) as f64;
        let norm = bessel_i0(KAISER_BETA);
        // Rows 0..=PHASES: the last is a whole frame on (used when the
        // cutoff is lowered; at full band that frame is passed through).
        let mut table = vec![0.0f32; (PHASES + 1) * TAPS];
        for p in 0..=PHASES {
            let frac = p as f64 / PHASES as f64;
            let row = &mut table[p * TAPS..(p + 1) * TAPS];
            let mut sum = 0.0;
            let mut coef = [0.0f64; TAPS];
            for (k, c) in coef.iter_mut().enumerate() {
                // Tap k multiplies input frame i − (half − 1) + k.
                let x = k as f64 - (half - 1.0) - frac;
                let xc = x * cutoff;
                let sinc = if xc.abs() < 1e-12 {
                    1.0
                } else {
                    (std::f64::consts::PI * xc).sin() / (std::f64::consts::PI * xc)
                };
                let r = x / half;
                let w = if r.abs() <= 1.0 {
                    bessel_i0(KAISER_BETA * (1.0 - r * r).sqrt()) / norm
                } else {
                    0.0
                };
                *c = sinc * w;
                sum += *c;
            }
            for (dst, c) in row.iter_mut().zip(coef) {
                *dst = (c / sum) as f32;
            }
        }
        FineResampler {
            channels,
            max_in_frames,
            nominal,
            work: vec![0.0; (HISTORY + max_in_frames) * channels].into_boxed_slice(),
            table: table.into_boxed_slice(),
            pos: (TAPS / 2 - 1) as f64,
        }
    }

    /// Most frames one call can write for `in_frames` of input at a ratio
    /// of at least 0.99: size `out` for this.
    pub fn max_out_frames(in_frames: usize) -> usize {
        in_frames + in_frames / 64 + 2
    }

    /// The same for a resampler converting at `nominal` (see
    /// [`FineResampler::converting`]).
    pub fn max_out_frames_converting(in_frames: usize, nominal: f64) -> usize {
        (in_frames as f64 / (0.99 * clamp_nominal(nominal))).ceil() as usize + 2
    }

    /// The nominal ratio it converts at (1: drift only).
    pub fn nominal(&self) -> f64 {
        self.nominal
    }

    /// Whether [`FineResampler::converting`] takes `nominal` as it is
    /// (not clamped).
    pub fn converts(nominal: f64) -> bool {
        clamp_nominal(nominal) == nominal
    }

    /// Frames between an input frame and the output frame it becomes.
    pub const DELAY_FRAMES: usize = TAPS / 2;

    /// Forget the history (a new stream).
    pub fn reset(&mut self) {
        self.work.fill(0.0);
        self.pos = (TAPS / 2 - 1) as f64;
    }

    /// Resample `input` (whole interleaved frames, at most `max_in_frames`)
    /// at `ratio` input frames per output frame (clamped to 0.99–1.01 of
    /// the nominal ratio) into `out`; returns the frames written (about
    /// `in / ratio`).
    pub fn process(&mut self, input: &[f32], ratio: f64, out: &mut [f32]) -> usize {
        let ch = self.channels;
        let n = (input.len() / ch).min(self.max_in_frames);
        let step = ratio.clamp(0.99 * self.nominal, 1.01 * self.nominal);
        self.work[HISTORY * ch..(HISTORY + n) * ch].copy_from_slice(&input[..n * ch]);
        let total = HISTORY + n;
        let lead = TAPS / 2;
        let lag = TAPS / 2 - 1;
        let mut written = 0;
        let cap = out.len() / ch;
        while written < cap {
            let i = self.pos.floor() as usize;
            if i + lead >= total {
                break;
            }
            let frac = self.pos - i as f64;
            let phase = ((frac * PHASES as f64).round() as usize).min(PHASES);
            // On an input frame the full-band kernel is that frame (exact
            // at a ratio of 1); a lowered cutoff filters there too.
            let on_frame = self.nominal <= 1.0 && (phase == 0 || phase == PHASES);
            for c in 0..ch {
                out[written * ch + c] = if on_frame {
                    self.work[(i + phase / PHASES) * ch + c]
                } else {
                    let row = &self.table[phase * TAPS..(phase + 1) * TAPS];
                    let mut acc = 0.0f32;
                    for (k, &h) in row.iter().enumerate() {
                        acc += h * self.work[(i - lag + k) * ch + c];
                    }
                    acc
                };
            }
            written += 1;
            self.pos += step;
        }
        // Keep the last HISTORY frames; positions move back by n.
        self.work.copy_within(n * ch..total * ch, 0);
        self.pos -= n as f64;
        written
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ratio_one_passes_audio_through_exactly_eight_frames_late() {
        let mut r = FineResampler::new(2, 64);
        let mut got = Vec::new();
        let mut out = vec![0.0; FineResampler::max_out_frames(64) * 2];
        let input: Vec<f32> = (0..640).map(|i| (i as f32 * 0.37).sin()).collect();
        for block in input.chunks(128) {
            let n = r.process(block, 1.0, &mut out);
            assert_eq!(n, 64);
            got.extend_from_slice(&out[..n * 2]);
        }
        // Output frame k is input frame k − 8.
        let d = FineResampler::DELAY_FRAMES * 2;
        assert_eq!(&got[d..], &input[..input.len() - d]);
    }

    #[test]
    fn frames_out_follow_the_ratio_and_a_sine_stays_clean() {
        for ppm in [300.0, -300.0, 1000.0, -1000.0] {
            sine_through(ppm);
        }
    }

    fn sine_through(ppm: f64) {
        let rate = 48_000.0;
        let f = 10_000.0;
        let ratio = 1.0 + ppm * 1e-6;
        let mut r = FineResampler::new(1, 64);
        let mut out = vec![0.0; FineResampler::max_out_frames(64)];
        let mut got = Vec::new();
        let blocks = 2_000;
        for b in 0..blocks {
            let block: Vec<f32> = (0..64)
                .map(|i| {
                    let n = (b * 64 + i) as f64;
                    (2.0 * std::f64::consts::PI * f * n / rate).sin() as f32
                })
                .collect();
            let n = r.process(&block, ratio, &mut out);
            assert!((63..=65).contains(&n), "{n}");
            got.extend_from_slice(&out[..n]);
        }
        let expect_frames = (blocks * 64) as f64 / ratio;
        assert!(
            (got.len() as f64 - expect_frames).abs() <= 3.0,
            "{} vs {expect_frames}",
            got.len()
        );
        // Output frame k is input position 2·... : compare against the ideal
        // sine at input position (k·ratio − 2) after the start.
        let mut err = 0.0f64;
        let mut sig = 0.0f64;
        for (k, &y) in got.iter().enumerate().skip(100) {
            let pos = k as f64 * ratio - FineResampler::DELAY_FRAMES as f64;
            let ideal = (2.0 * std::f64::consts::PI * f * pos / rate).sin();
            err += (f64::from(y) - ideal).powi(2);
            sig += ideal * ideal;
        }
        let snr_db = 10.0 * (sig / err).log10();
        eprintln!("{ppm} ppm: SNR {snr_db:.1} dB");
        assert!(snr_db > 60.0, "SNR {snr_db:.1} dB");
    }

    /// `f` Hz at `in_rate` through a resampler converting to `out_rate`;
    /// returns the frames out per frame in, the SNR against the ideal sine
    /// at the output's rate (dB), and the output's amplitude (from its RMS).
    fn convert_sine(in_rate: f64, out_rate: f64, f: f64) -> (f64, f64, f64) {
        let nominal = in_rate / out_rate;
        let mut r = FineResampler::converting(1, 64, nominal);
        let mut out = vec![0.0; FineResampler::max_out_frames_converting(64, nominal)];
        let mut got = Vec::new();
        let blocks = 2_000;
        for b in 0..blocks {
            let block: Vec<f32> = (0..64)
                .map(|i| (std::f64::consts::TAU * f * (b * 64 + i) as f64 / in_rate).sin() as f32)
                .collect();
            let n = r.process(&block, nominal, &mut out);
            got.extend_from_slice(&out[..n]);
        }
        let (mut err, mut sig, mut power) = (0.0f64, 0.0f64, 0.0f64);
        for (k, &y) in got.iter().enumerate().skip(100) {
            // Output frame k is input position k·nominal − 8.
            let pos = k as f64 * nominal - FineResampler::DELAY_FRAMES as f64;
            let ideal = (std::f64::consts::TAU * f * pos / in_rate).sin();
            err += (f64::from(y) - ideal).powi(2);
            sig += ideal * ideal;
            power += f64::from(y).powi(2);
        }
        (
            got.len() as f64 / (blocks * 64) as f64,
            10.0 * (sig / err).log10(),
            (2.0 * power / (got.len() - 100) as f64).sqrt(),
        )
    }

    #[test]
    fn converting_44_1_and_48_khz_keeps_a_sine_and_stops_the_top_folding_back() {
        // Up: 1 and 10 kHz at 44.1 kHz, clean at 48 kHz.
        for f in [1_000.0, 10_000.0] {
            let (per, snr, _) = convert_sine(44_100.0, 48_000.0, f);
            eprintln!("44.1 -> 48 kHz, {f} Hz: {per:.5} out per in, SNR {snr:.1} dB");
            assert!((per - 48_000.0 / 44_100.0).abs() < 1e-3, "{per}");
            assert!(snr > 60.0, "SNR {snr:.1} dB");
        }
        // Down: 1 kHz clean; 23 kHz (above 44.1 kHz's Nyquist) held down
        // instead of folding back to 21.1 kHz at full level.
        let (per, snr, _) = convert_sine(48_000.0, 44_100.0, 1_000.0);
        eprintln!("48 -> 44.1 kHz, 1 kHz: {per:.5} out per in, SNR {snr:.1} dB");
        assert!((per - 44_100.0 / 48_000.0).abs() < 1e-3, "{per}");
        assert!(snr > 60.0, "SNR {snr:.1} dB");
        let (_, _, folded) = convert_sine(48_000.0, 44_100.0, 23_000.0);
        let (_, _, kept) = convert_sine(48_000.0, 44_100.0, 15_000.0);
        eprintln!("48 -> 44.1 kHz: 23 kHz folded back at {folded:.3}, 15 kHz kept at {kept:.3}");
        assert!(folded < 0.3, "23 kHz folded back at {folded}");
        assert!(kept > 0.94, "15 kHz at {kept}");
    }
}
