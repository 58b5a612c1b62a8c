//! Audio clock drift: estimate how fast the sender's sample clock runs
//! against ours, and resample so playout never under- or overruns.
//!
//! # Estimate
//! Each arrival gives `transit = arrival − first_sample / nominal_rate`. If
//! the sender's clock runs `ε` fast and ours `δ` fast, transit changes by
//! `(δ − ε)` ns per ns: a straight line under the network jitter. The
//! [`DriftEstimator`] keeps the *minimum* transit of each 1 s window (the
//! least-queued packet, so jitter mostly drops out), and fits a least-squares
//! line through the last 64 minima. The ratio "sender samples per receiver
//! sample" is `1 − slope`.
//!
//! # Compensation
//! [`DriftCompensator`] sits between the [`JitterBuffer`] and the consumer:
//! it pulls blocks from the buffer as the resampler needs them and produces
//! fixed-size output blocks through `rubato`'s asynchronous polynomial
//! resampler, at ratio `1 / (estimate × (1 + correction))`. The small
//! proportional correction (time constant 8 s, at most ±200 ppm) steers the
//! buffer's playout delay back to the middle of its no-hold/no-skip band, so
//! any residual estimation error cannot accumulate over hours.

use rubato::audioadapter_buffers::direct::InterleavedSlice;
use rubato::{
    Adjustable, Async, FixedAsync, PolynomialDegree, Resampler, SincInterpolationParameters,
    SincInterpolationType, WindowFunction,
};

use crate::conceal::Concealer;
use crate::jitter::{BlockSource, JitterBuffer};

/// Errors of the drift stage.
#[derive(Debug, thiserror::Error)]
pub enum DriftError {
    /// The resampler refused the configuration.
    #[error("resampler construction: {0}")]
    Construction(#[from] rubato::ResamplerConstructionError),
    /// The resampler refused a call.
    #[error("resampling: {0}")]
    Resample(#[from] rubato::ResampleError),
    /// Output block of the wrong length.
    #[error("output block must be {expected} samples, got {got}")]
    BadBlock {
        /// Samples expected.
        expected: usize,
        /// Samples given.
        got: usize,
    },
    /// The nominal rate ratio is outside 1/8..8 (or not a number): not a
    /// pair of audio sample rates.
    #[error("nominal rate ratio {0} is outside 1/8..8")]
    BadRatio(f64),
}

const WINDOWS: usize = 64;
/// Window minima needed before the ratio departs from 1.
const MIN_WINDOWS_TO_RESAMPLE: usize = 10;
/// Largest drift believed, ppm (crystals are within ±100 ppm; beyond this it is a bad estimate).
const MAX_PPM: f64 = 1000.0;

/// Estimates the sender/receiver sample clock ratio from arrivals.
///
/// Thread-safe: no (`Send`). Realtime-safe: yes (fixed arrays).
#[derive(Debug, Clone)]
pub struct DriftEstimator {
    sample_rate: f64,
    window_ns: u64,
    origin: Option<(u64, u64)>,
    win_start: u64,
    win_min: f64,
    win_min_at: f64,
    points: [(f64, f64); WINDOWS],
    n: usize,
    next: usize,
    slope: f64,
    slope_used: f64,
}

impl DriftEstimator {
    /// For a stream at `sample_rate` Hz, minima over windows of `window_ns`.
    pub fn new(sample_rate: u32, window_ns: u64) -> Self {
        DriftEstimator {
            sample_rate: sample_rate.max(1) as f64,
            window_ns: window_ns.max(1),
            origin: None,
            win_start: 0,
            win_min: f64::INFINITY,
            win_min_at: 0.0,
            points: [(0.0, 0.0); WINDOWS],
            n: 0,
            next: 0,
            slope: 0.0,
            slope_used: 0.0,
        }
    }

    /// A block whose first frame is `first_sample` arrived at `now` (ns, our clock).
    pub fn on_arrival(&mut self, now: u64, first_sample: u64) {
        let (t0, s0) = *self.origin.get_or_insert((now, first_sample));
        if now < t0 || first_sample < s0 {
            return;
        }
        if now >= self.win_start + self.window_ns {
            if self.win_min.is_finite() {
                self.points[self.next] = (self.win_min_at, self.win_min);
                self.next = (self.next + 1) % WINDOWS;
                self.n = (self.n + 1).min(WINDOWS);
                self.fit();
            }
            self.win_start = now;
            self.win_min = f64::INFINITY;
        }
        let t = (now - t0) as f64;
        let transit = t - (first_sample - s0) as f64 * 1e9 / self.sample_rate;
        if transit < self.win_min {
            self.win_min = transit;
            self.win_min_at = t;
        }
    }

    fn fit(&mut self) {
        if self.n < 3 {
            return;
        }
        let pts = &self.points[..self.n];
        let k = self.n as f64;
        let mx = pts.iter().map(|p| p.0).sum::<f64>() / k;
        let my = pts.iter().map(|p| p.1).sum::<f64>() / k;
        let sxx: f64 = pts.iter().map(|p| (p.0 - mx) * (p.0 - mx)).sum();
        let sxy: f64 = pts.iter().map(|p| (p.0 - mx) * (p.1 - my)).sum();
        if sxx > 0.0 {
            self.slope = (sxy / sxx).clamp(-MAX_PPM * 1e-6, MAX_PPM * 1e-6);
            // Only a significant slope is acted on: right after a stream
            // starts, or with bursty senders (a host handing over 10 ms
            // buffers), three to ten window minima scatter by tens of µs
            // and a plain fit reads tens of ppm of drift into two hosts on
            // the same clock; resampling by that would smear a stream that
            // needs no resampling at all. Below 3 standard errors the
            // ratio stays 1 and the compensator's delay correction handles
            // whatever small drift is really there.
            let rss: f64 = pts
                .iter()
                .map(|p| {
                    let r = p.1 - my - self.slope * (p.0 - mx);
                    r * r
                })
                .sum();
            let se = (rss / (k - 2.0).max(1.0) / sxx).sqrt();
            // And only from ten windows on: with three to five minima the
            // standard error is itself a guess (one to three degrees of
            // freedom), and two hosts on one clock read as 26 ppm apart
            // passed a 3-SE test. Ten seconds of 200 ppm is 2 ms, which
            // the delay correction absorbs meanwhile.
            self.slope_used = if self.n >= MIN_WINDOWS_TO_RESAMPLE && self.slope.abs() > 3.5 * se {
                self.slope
            } else {
                0.0
            };
        }
    }

    /// Sender samples per receiver sample to resample at: 1.0 until ten
    /// windows are in and while the fitted drift is not significant (within
    /// 3.5 standard errors of 0).
    pub fn ratio(&self) -> f64 {
        1.0 - self.slope_used
    }

    /// `ratio − 1` in parts per million (positive: the sender's clock is faster).
    pub fn ppm(&self) -> f64 {
        -self.slope * 1e6
    }
}

/// Drift stage configuration.
///
/// Thread-safe: yes (plain value). Realtime-safe: yes.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DriftConfig {
    /// Interleaved channels.
    pub channels: usize,
    /// Frames per output block (what the consumer asks for).
    pub out_frames: usize,
    /// Frames per jitter-buffer block.
    pub in_block_frames: usize,
    /// Input frames per output frame at the two ends' nominal rates: the
    /// sender's sample rate over the consumer's (1 when they match; a
    /// 44.1 kHz stream into a 48 kHz host is 0.91875). The estimate and
    /// the delay correction act on top of it, within ±1 %.
    pub nominal_ratio: f64,
    /// Interpolation quality (`Septic` is rubato's best polynomial; `Cubic` is cheaper).
    pub degree: PolynomialDegree,
    /// Time constant of the delay correction, s.
    pub correction_time_s: f64,
    /// Largest delay correction, ppm.
    pub max_correction_ppm: f64,
    /// No delay correction while the playout delay is within this of the
    /// setpoint, ns (`None`: the jitter buffer's own no-hold/no-skip band:
    /// three quarters of a buffer block below the setpoint,
    /// [`JitterBuffer::excess_band_ns`] above it). Inside that band there
    /// is nothing to protect, and every correction resamples the audio:
    /// with the dead band a stream between two hosts on the same clock stays
    /// sample-exact, and small steps of the fastest-path reference (which
    /// moves when the network's best case changes) cost nothing.
    pub dead_band_ns: Option<f64>,
}

impl DriftConfig {
    /// Defaults for `channels`, consumer blocks of `out_frames`, buffer blocks of `in_block_frames`.
    pub fn new(channels: usize, out_frames: usize, in_block_frames: usize) -> Self {
        DriftConfig {
            channels,
            out_frames,
            in_block_frames,
            nominal_ratio: 1.0,
            degree: PolynomialDegree::Septic,
            correction_time_s: 8.0,
            max_correction_ppm: 200.0,
            dead_band_ns: None,
        }
    }

    /// The same, converting a stream of `in_rate` Hz to a consumer at
    /// `out_rate` Hz (sample-rate conversion on top of the drift).
    pub fn with_rates(mut self, in_rate: u32, out_rate: u32) -> Self {
        self.nominal_ratio = rate_ratio(in_rate, out_rate);
        self
    }
}

/// Input frames per output frame between a stream at `in_rate` Hz and a
/// consumer at `out_rate` Hz (a rate of 0 counts as 1 Hz).
pub fn rate_ratio(in_rate: u32, out_rate: u32) -> f64 {
    f64::from(in_rate.max(1)) / f64::from(out_rate.max(1))
}

/// Counters of a [`DriftCompensator`].
///
/// Thread-safe: yes (plain value). Realtime-safe: yes.
#[derive(Debug, Clone, Copy, Default, PartialEq, serde::Serialize)]
pub struct DriftStats {
    /// Output blocks rendered.
    pub blocks_out: u64,
    /// Blocks pulled from the jitter buffer.
    pub blocks_in: u64,
    /// Last resampling ratio applied (sender samples per output sample,
    /// the nominal rate ratio included).
    pub ratio: f64,
    /// Last delay correction, ppm.
    pub correction_ppm: f64,
}

/// Resamples jitter-buffer output to the consumer's clock. See the module docs.
///
/// Thread-safe: no (`Send`). Realtime-safe: yes after construction (rubato's
/// `process_into_buffer` into preallocated buffers).
pub struct DriftCompensator {
    config: DriftConfig,
    resampler: Async<f32>,
    fifo: Box<[f32]>,
    fifo_frames: usize,
    block: Box<[f32]>,
    stats: DriftStats,
    /// The buffer is playing (not idle): the start was aligned.
    started: bool,
}

impl DriftCompensator {
    /// A compensator for `config`.
    pub fn new(config: DriftConfig) -> Result<Self, DriftError> {
        if !(config.nominal_ratio.is_finite() && (0.125..=8.0).contains(&config.nominal_ratio)) {
            return Err(DriftError::BadRatio(config.nominal_ratio));
        }
        let resampler = if config.nominal_ratio == 1.0 {
            // Drift alone: a few ppm around 1, where a polynomial through
            // the neighbouring samples is transparent and adds no delay.
            Async::<f32>::new_poly(
                1.0,
                1.01,
                config.degree,
                config.out_frames,
                config.channels,
                FixedAsync::Output,
            )?
        } else {
            // Rate conversion: a band-limited sinc, so that going down
            // (48 → 44.1 kHz) does not fold what lies above the new Nyquist
            // back into the audio, and going up adds no images. 64 taps:
            // 32 input frames of constant delay (0.7 ms at 44.1 kHz).
            let sinc = SincInterpolationParameters {
                sinc_len: 64,
                f_cutoff: None,
                oversampling_factor: 128,
                interpolation: SincInterpolationType::Cubic,
                window: WindowFunction::BlackmanHarris2,
            };
            Async::<f32>::new_sinc(
                1.0 / config.nominal_ratio,
                1.01,
                &sinc,
                config.out_frames,
                config.channels,
                FixedAsync::Output,
            )?
        };
        let max_in = resampler.input_frames_max() + config.in_block_frames;
        Ok(DriftCompensator {
            fifo: vec![0.0; max_in * config.channels].into_boxed_slice(),
            fifo_frames: 0,
            block: vec![0.0; config.in_block_frames * config.channels].into_boxed_slice(),
            resampler,
            stats: DriftStats {
                ratio: 1.0,
                ..Default::default()
            },
            config,
            started: false,
        })
    }

    /// Its configuration.
    pub fn config(&self) -> &DriftConfig {
        &self.config
    }

    /// Counters so far.
    pub fn stats(&self) -> DriftStats {
        self.stats
    }

    /// Playout delay of the next sample this stage will output: the buffer's
    /// delay plus what waits in the resampler's input FIFO (ns).
    pub fn effective_delay_ns(&self, now: u64, jb: &JitterBuffer) -> Option<f64> {
        let fifo_ns = self.fifo_frames as f64 / self.config.in_block_frames as f64 * jb.block_ns();
        jb.playout_delay_ns(now).map(|d| d + fifo_ns)
    }

    /// Where [`DriftCompensator::effective_delay_ns`] is steered: the buffer
    /// pulls a block when the FIFO holds less than a block, so the buffer's
    /// own delay at pull time lies up to a block below this; half a block
    /// above the buffer's setpoint keeps it inside its no-hold/no-skip band.
    pub fn setpoint_ns(jb: &JitterBuffer) -> f64 {
        jb.setpoint_ns() + 0.5 * jb.block_ns()
    }

    /// The buffer just started playing: the FIFO holds idle silence ahead of
    /// the first real block. Size that silence so the first real sample
    /// comes out exactly at the setpoint delay; otherwise the start lands
    /// anywhere within a block of it and the delay correction would spend
    /// the next seconds resampling the difference away.
    fn align_start(&mut self, now: u64, jb: &JitterBuffer) {
        let Some(cursor_delay) = jb.playout_delay_ns(now) else {
            return;
        };
        // The cursor already moved past the block just pulled.
        let first_delay = cursor_delay + jb.block_ns();
        let rate = self.config.in_block_frames as f64 * 1e9 / jb.block_ns();
        let want = ((Self::setpoint_ns(jb) - first_delay) * rate / 1e9).round();
        let room = self.fifo.len() / self.config.channels - self.config.in_block_frames;
        let zeros = (want.max(0.0) as usize).min(room);
        self.fifo[..zeros * self.config.channels].fill(0.0);
        self.fifo_frames = zeros;
    }

    /// Render one output block at `now`: pull what the resampler needs from
    /// `jb` (concealing through `concealer` as the buffer decides) and
    /// resample at the estimated ratio. `estimate` is sender samples per
    /// receiver sample (`None`: 1.0, no drift compensation, but the delay
    /// correction still applies).
    pub fn render(
        &mut self,
        now: u64,
        jb: &mut JitterBuffer,
        concealer: &mut dyn Concealer,
        estimate: Option<f64>,
        out: &mut [f32],
    ) -> Result<(), DriftError> {
        let ch = self.config.channels;
        let expected = self.config.out_frames * ch;
        if out.len() != expected {
            return Err(DriftError::BadBlock {
                expected,
                got: out.len(),
            });
        }
        let (dead_low, dead_high) = match self.config.dead_band_ns {
            Some(d) => (d, d),
            None => (0.75 * jb.block_ns(), jb.excess_band_ns()),
        };
        // Nothing to steer before the buffer plays (its start is aligned
        // exactly instead, see `align_start`).
        let delay = if self.started {
            self.effective_delay_ns(now, jb)
        } else {
            None
        };
        let correction = match delay {
            Some(delay) => {
                let err = delay - Self::setpoint_ns(jb);
                let excess = if err > 0.0 {
                    (err - dead_high).max(0.0)
                } else {
                    (err + dead_low).min(0.0)
                };
                let max = self.config.max_correction_ppm * 1e-6;
                (excess * 1e-9 / self.config.correction_time_s).clamp(-max, max)
            }
            None => 0.0,
        };
        let ratio = self.config.nominal_ratio * estimate.unwrap_or(1.0) * (1.0 + correction);
        // rubato's ratio is output rate over input rate.
        self.resampler.set_resample_ratio(1.0 / ratio, true)?;
        self.stats.ratio = ratio;
        self.stats.correction_ppm = correction * 1e6;
        let need = self.resampler.input_frames_next();
        while self.fifo_frames < need {
            let src = jb.pull(now, &mut self.block, concealer);
            if src == BlockSource::Idle {
                self.block.fill(0.0);
                self.started = false;
            } else if !self.started {
                self.started = true;
                self.align_start(now, jb);
            }
            let at = self.fifo_frames * ch;
            self.fifo[at..at + self.block.len()].copy_from_slice(&self.block);
            self.fifo_frames += self.config.in_block_frames;
            self.stats.blocks_in += 1;
        }
        let input = InterleavedSlice::new(&self.fifo[..], ch, self.fifo_frames).map_err(|_| {
            DriftError::BadBlock {
                expected: need * ch,
                got: self.fifo.len(),
            }
        })?;
        let mut output =
            InterleavedSlice::new_mut(out, ch, self.config.out_frames).map_err(|_| {
                DriftError::BadBlock {
                    expected,
                    got: expected,
                }
            })?;
        let (used, _produced) = self
            .resampler
            .process_into_buffer(&input, &mut output, None)?;
        self.fifo.copy_within(used * ch..self.fifo_frames * ch, 0);
        self.fifo_frames -= used;
        self.stats.blocks_out += 1;
        Ok(())
    }
}

/// Tone measurements for tests: the rate conversion here and end to end
/// through a peer (`worker::peer`).
#[cfg(test)]
pub(crate) mod tones {
    use std::f64::consts::TAU;

    /// The sine and cosine components of `hz` in one second of `y` at
    /// `rate` (an integer number of cycles: integer-Hz tones are
    /// orthogonal over it).
    fn components(y: &[f32], rate: u32, hz: f64) -> (f64, f64) {
        let n = rate as usize;
        let (a, b) = y[..n]
            .iter()
            .enumerate()
            .fold((0.0, 0.0), |(a, b), (i, &v)| {
                let w = TAU * hz * i as f64 / f64::from(rate);
                (a + f64::from(v) * w.sin(), b + f64::from(v) * w.cos())
            });
        (2.0 * a / n as f64, 2.0 * b / n as f64)
    }

    /// Amplitude of `hz` in one second of `y` at `rate`.
    pub fn amplitude(y: &[f32], rate: u32, hz: f64) -> f64 {
        let (a, b) = components(y, rate, hz);
        a.hypot(b)
    }

    /// What is left of one second of `y` after taking out `tones`, against
    /// its power, dB (lower is cleaner).
    pub fn residual_db(y: &[f32], rate: u32, tones: &[f64]) -> f64 {
        let n = rate as usize;
        let mut res: Vec<f64> = y[..n].iter().map(|&v| f64::from(v)).collect();
        for &hz in tones {
            let (a, b) = components(y, rate, hz);
            for (i, r) in res.iter_mut().enumerate() {
                let w = TAU * hz * i as f64 / f64::from(rate);
                *r -= a * w.sin() + b * w.cos();
            }
        }
        let power: f64 = y[..n].iter().map(|&v| f64::from(v).powi(2)).sum();
        10.0 * (res.iter().map(|r| r * r).sum::<f64>() / power).log10()
    }
}

#[cfg(test)]
mod tests {
    use super::tones::{amplitude, residual_db};
    use super::*;
    use crate::jitter::{JitterConfig, RepeatFadeConcealer};
    use crate::sim::SimClock;
    use rand::{Rng, SeedableRng};

    struct Run {
        est_ppm: f64,
        holds: u64,
        skips: u64,
        concealed: u64,
        late: u64,
        max_delay_err_ms: f64,
        blocks_out: u64,
    }

    /// `hours` of mono audio at 16 kHz from a sender clock at `tx_ppm` to a
    /// receiver clock at `rx_ppm`, 3–4 ms path delay with 1 ms uniform jitter.
    fn run(tx_ppm: f64, rx_ppm: f64, hours: f64, compensate: bool) -> Run {
        const RATE: u32 = 16_000;
        const BLOCK: usize = 128;
        let tx = SimClock {
            offset_ns: 0,
            ppm: tx_ppm,
        };
        let rx = SimClock {
            offset_ns: 123_456_789,
            ppm: rx_ppm,
        };
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(5);
        let mut jb = JitterBuffer::new(JitterConfig::new(1, BLOCK, RATE));
        let mut conceal = RepeatFadeConcealer::new(1, BLOCK);
        let mut est = DriftEstimator::new(RATE, 1_000_000_000);
        let mut cfg = DriftConfig::new(1, BLOCK, BLOCK);
        cfg.degree = PolynomialDegree::Cubic;
        let mut dc = DriftCompensator::new(cfg).unwrap();
        let mut out = [0f32; BLOCK];
        let block: Vec<f32> = (0..BLOCK).map(|i| (i as f32 * 0.1).sin()).collect();
        let total_true_ns = (hours * 3600e9) as u64;
        let mut n_tx = 0u64; // next block the sender sends
        let mut n_rx = 0u64; // next block the receiver renders
        let mut pending: std::collections::VecDeque<(u64, u64)> = Default::default(); // (local arrival, first_sample)
        let mut warm = false;
        let mut max_err = 0f64;
        let mut before_warm = (0, 0, 0, 0);
        loop {
            let send_true = tx.true_ns_of_sample(n_tx * BLOCK as u64 + BLOCK as u64, RATE);
            // Receiver's audio clock is its local clock: it renders block m at local time m × block.
            let render_local =
                rx.offset_ns as u64 + n_rx * BLOCK as u64 * 1_000_000_000 / RATE as u64;
            let next_arrival = pending.front().map(|p| p.0).unwrap_or(u64::MAX);
            let send_local = rx.local_ns(send_true + 3_000_000 + rng.random_range(0..1_000_000));
            if send_true > total_true_ns {
                break;
            }
            if send_local.min(next_arrival) < render_local {
                if next_arrival <= send_local {
                    let (at, first) = pending.pop_front().unwrap();
                    est.on_arrival(at, first);
                    jb.insert(at, first, &block);
                } else {
                    // A block is complete on the sender: it arrives at `send_local`.
                    let first = n_tx * BLOCK as u64;
                    let pos = pending
                        .iter()
                        .position(|p| p.0 > send_local)
                        .unwrap_or(pending.len());
                    pending.insert(pos, (send_local, first));
                    n_tx += 1;
                }
            } else {
                if !warm && render_local - rx.offset_ns as u64 > 120_000_000_000 {
                    warm = true;
                    let s = jb.stats();
                    before_warm = (s.holds, s.skips, s.concealed, s.late);
                }
                if warm {
                    if let Some(d) = dc.effective_delay_ns(render_local, &jb) {
                        let err = (d - DriftCompensator::setpoint_ns(&jb)).abs() / 1e6;
                        max_err = max_err.max(err);
                    }
                }
                let e = compensate.then(|| est.ratio());
                if !compensate {
                    dc.config.max_correction_ppm = 0.0;
                }
                dc.render(render_local, &mut jb, &mut conceal, e, &mut out)
                    .unwrap();
                n_rx += 1;
            }
        }
        let s = jb.stats();
        Run {
            est_ppm: est.ppm(),
            holds: s.holds - before_warm.0,
            skips: s.skips - before_warm.1,
            concealed: s.concealed - before_warm.2,
            late: s.late - before_warm.3,
            max_delay_err_ms: max_err,
            blocks_out: dc.stats().blocks_out,
        }
    }

    #[test]
    fn two_hours_at_plus_minus_50ppm_never_under_or_overrun() {
        for (tx, rx) in [(50.0, -50.0), (-50.0, 50.0)] {
            let r = run(tx, rx, 2.0, true);
            let expect = (1.0 + tx * 1e-6) / (1.0 + rx * 1e-6) * 1e6 - 1e6;
            assert!(
                (r.est_ppm - expect).abs() < 2.0,
                "estimated {} ppm, true {expect}",
                r.est_ppm
            );
            assert_eq!(
                (r.holds, r.skips, r.concealed),
                (0, 0, 0),
                "tx {tx} rx {rx}"
            );
            assert!(r.late < 10, "late {}", r.late);
            // The servo lets the delay float inside its dead band (three
            // quarters of an 8 ms block) and holds it there.
            assert!(
                r.max_delay_err_ms < 7.0,
                "delay wandered {} ms",
                r.max_delay_err_ms
            );
            assert!(r.blocks_out > 400_000);
        }
    }

    #[test]
    fn without_compensation_the_buffer_slips() {
        // Same ±50 ppm for 20 minutes with neither the estimate nor the delay
        // correction: the 100 ppm difference (1.6 samples/s) must slip blocks.
        let r = run(50.0, -50.0, 0.33, false);
        assert!(
            r.holds + r.skips > 0,
            "expected slips without the drift estimate"
        );
    }

    /// A host that delivers 480-frame buffers every 10 ms with up to 3 ms of
    /// wake-up jitter (two sleep()-paced processes on one machine, the
    /// pedalboard test), cut into 64-frame network blocks; same sample
    /// clock on both sides. The receiver renders a 64-frame block every
    /// 1.333 ms. Returns the rendered signal, the input, and the counters.
    fn bursty_same_clock(seconds: f64, manual_ms: Option<f64>) -> (Vec<f32>, Vec<f32>, u64, u64) {
        const RATE: u32 = 48_000;
        const BLOCK: usize = 64;
        const HOST: usize = 480;
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(11);
        let total = (seconds * RATE as f64) as usize / HOST * HOST;
        let input: Vec<f32> = (0..total)
            .map(|i| ((i as f32 * 0.013).sin() + (i as f32 * 0.0071).cos()) * 0.4)
            .collect();
        // Each host buffer is processed at a jittered time; a network block
        // leaves (and arrives 0.2 ms later) with the host buffer that
        // completes it (480 is not a multiple of 64: the sender's link keeps
        // the remainder for the next buffer).
        let host_ns: Vec<u64> = (0..total / HOST)
            .map(|k| 1_000_000_000 + k as u64 * 10_000_000 + rng.random_range(0..3_000_000))
            .collect();
        let mut arrivals: Vec<(u64, u64)> = (0..total as u64 - BLOCK as u64)
            .step_by(BLOCK)
            .map(|first| {
                let host_k = (first + BLOCK as u64 - 1) / HOST as u64;
                (host_ns[host_k as usize] + 200_000, first)
            })
            .collect();
        arrivals.sort();
        let mut jb = JitterBuffer::new(JitterConfig::new(1, BLOCK, RATE));
        jb.set_manual_delay(manual_ms.map(|ms| (ms * 1e6) as u64));
        let mut conceal = RepeatFadeConcealer::new(1, BLOCK);
        let mut est = DriftEstimator::new(RATE, 1_000_000_000);
        let mut dc = DriftCompensator::new(DriftConfig::new(1, BLOCK, BLOCK)).unwrap();
        let mut out_all = Vec::new();
        let mut out = [0f32; BLOCK];
        let mut i = 0;
        let block_ns = BLOCK as f64 * 1e9 / RATE as f64;
        let mut m = 0u64;
        loop {
            let t = 1_000_000_000 + (m as f64 * block_ns) as u64;
            if t > 1_000_000_000 + (seconds * 1e9) as u64 + 100_000_000 {
                break;
            }
            while i < arrivals.len() && arrivals[i].0 <= t {
                let (at, first) = arrivals[i];
                est.on_arrival(at, first);
                jb.insert(at, first, &input[first as usize..first as usize + BLOCK]);
                i += 1;
            }
            dc.render(t, &mut jb, &mut conceal, Some(est.ratio()), &mut out)
                .unwrap();
            out_all.extend_from_slice(&out);
            m += 1;
        }
        let s = jb.stats();
        (out_all, input, s.holds, s.skips)
    }

    #[test]
    fn bursty_host_on_the_same_clock_plays_through_unchanged() {
        // Manual delay from the start; adaptive after its 2 s of learning
        // (growing at start is its job). From then on the played audio must
        // be the input, sample for sample (no resampling, no splices).
        for (manual, settle) in [(Some(30.0), 0usize), (None, 96_000)] {
            let (out, input, holds, skips) = bursty_same_clock(8.0, manual);
            let probe = &input[settle..settle + 9_600];
            let mut best = (0usize, f32::INFINITY);
            for lag in settle..out.len() - input.len() / 2 {
                let e: f32 = probe
                    .iter()
                    .zip(&out[lag..])
                    .map(|(a, b)| (a - b).abs())
                    .sum();
                if e < best.1 {
                    best = (lag, e);
                }
            }
            let lag = best.0 - settle;
            let n = (out.len() - lag).min(input.len()) - 4_800;
            let worst = input[settle..n]
                .iter()
                .zip(&out[lag + settle..lag + n])
                .map(|(a, b)| (a - b).abs())
                .fold(0f32, f32::max);
            assert!(
                worst < 1e-3,
                "manual {manual:?}: played audio departs from the input by {worst} \
                 (holds {holds}, skips {skips}, lag {lag})"
            );
            if manual.is_some() {
                assert_eq!((holds, skips), (0, 0));
            }
        }
    }

    #[test]
    fn estimator_sees_drift_through_jitter() {
        let mut e = DriftEstimator::new(48_000, 1_000_000_000);
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(1);
        let ppm = 37.0;
        for n in 0..(48_000 * 120 / 128) {
            let first = n as u64 * 128;
            let true_ns = first as f64 * 1e9 / 48_000.0 / (1.0 + ppm * 1e-6);
            e.on_arrival(
                true_ns as u64 + 2_000_000 + rng.random_range(0..3_000_000),
                first,
            );
        }
        assert!((e.ppm() - ppm).abs() < 1.5, "{}", e.ppm());
    }

    /// `seconds` of `tones` (Hz, amplitude) at `in_rate`, sent in 64-frame
    /// blocks (0.2–1.2 ms path) and rendered in 64-frame blocks at
    /// `out_rate` through a compensator converting between them, both ends
    /// on one clock. Returns the output and the buffer's holds + skips
    /// + concealed blocks after its start.
    fn convert(in_rate: u32, out_rate: u32, tones: &[(f64, f64)], seconds: f64) -> (Vec<f32>, u64) {
        const BLOCK: usize = 64;
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(3);
        let total = (seconds * f64::from(in_rate)) as usize;
        let input: Vec<f32> = (0..total)
            .map(|i| {
                let t = i as f64 / f64::from(in_rate);
                tones
                    .iter()
                    .map(|&(f, a)| a * (2.0 * std::f64::consts::PI * f * t).sin())
                    .sum::<f64>() as f32
            })
            .collect();
        let in_block_ns = BLOCK as f64 * 1e9 / f64::from(in_rate);
        let out_block_ns = BLOCK as f64 * 1e9 / f64::from(out_rate);
        let mut jb = JitterBuffer::new(JitterConfig::new(1, BLOCK, in_rate));
        jb.set_manual_delay(Some(5_000_000));
        let mut conceal = RepeatFadeConcealer::new(1, BLOCK);
        let mut est = DriftEstimator::new(in_rate, 1_000_000_000);
        let mut dc =
            DriftCompensator::new(DriftConfig::new(1, BLOCK, BLOCK).with_rates(in_rate, out_rate))
                .unwrap();
        let (mut out_all, mut out) = (Vec::new(), [0f32; BLOCK]);
        let (mut k, mut m) = (0usize, 0u64);
        let start = 1_000_000_000u64;
        loop {
            let t = start + (m as f64 * out_block_ns) as u64;
            if (k + 1) * BLOCK > total {
                break;
            }
            loop {
                let at = start
                    + ((k + 1) as f64 * in_block_ns) as u64
                    + rng.random_range(200_000..1_200_000);
                if at > t || (k + 1) * BLOCK > total {
                    break;
                }
                let first = (k * BLOCK) as u64;
                est.on_arrival(at, first);
                jb.insert(at, first, &input[k * BLOCK..(k + 1) * BLOCK]);
                k += 1;
            }
            dc.render(t, &mut jb, &mut conceal, Some(est.ratio()), &mut out)
                .unwrap();
            out_all.extend_from_slice(&out);
            m += 1;
        }
        let s = jb.stats();
        (out_all, s.holds + s.skips + s.concealed)
    }

    #[test]
    fn a_44_1_khz_stream_plays_at_pitch_in_a_48_khz_host_and_back() {
        // Up: 1 kHz and 9 kHz at 44.1 kHz come out at 1 and 9 kHz at
        // 48 kHz (an unconverted stream would play 8.8 % sharp, and run
        // the buffer dry 61 blocks a second), with nothing else in them.
        let (y, trouble) = convert(44_100, 48_000, &[(1_000.0, 0.3), (9_000.0, 0.2)], 6.0);
        let second = &y[3 * 48_000..];
        let (a1, a9) = (
            amplitude(second, 48_000, 1_000.0),
            amplitude(second, 48_000, 9_000.0),
        );
        let res = residual_db(second, 48_000, &[1_000.0, 9_000.0]);
        eprintln!("44.1 -> 48 kHz: 1 kHz at {a1:.4}, 9 kHz at {a9:.4}, residual {res:.1} dB, {trouble} holds/skips/concealed");
        assert_eq!(trouble, 0);
        assert!(
            (a1 - 0.3).abs() < 3e-3 && (a9 - 0.2).abs() < 3e-3,
            "{a1} {a9}"
        );
        assert!(res < -60.0, "residual {res} dB");
        // Down: 1 kHz passes; 23 kHz, above 44.1 kHz's Nyquist, must not
        // fold back to 21.1 kHz.
        let (y, trouble) = convert(48_000, 44_100, &[(1_000.0, 0.3), (23_000.0, 0.3)], 6.0);
        let second = &y[3 * 44_100..];
        let a1 = amplitude(second, 44_100, 1_000.0);
        let folded = amplitude(second, 44_100, 21_100.0);
        let res = residual_db(second, 44_100, &[1_000.0]);
        eprintln!("48 -> 44.1 kHz: 1 kHz at {a1:.4}, 23 kHz folded to 21.1 kHz at {folded:.2e}, residual {res:.1} dB, {trouble} holds/skips/concealed");
        assert_eq!(trouble, 0);
        assert!((a1 - 0.3).abs() < 3e-3, "{a1}");
        assert!(folded < 3e-4, "23 kHz folded back at {folded}");
    }
}
