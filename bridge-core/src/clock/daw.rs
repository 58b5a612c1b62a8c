//! DAW sample clock ↔ CPU clock.
//!
//! In every `process()` the plugin reads the CPU clock (`clock_gettime`
//! through the vDSO: no syscall, no lock) and knows its running sample
//! counter (the sum of block lengths since activation — not the host's song
//! position, which jumps on seeks and loops). The pair goes to the worker
//! through a ring; [`DawClock`] fits `cpu_ns = f(sample)` with the same
//! [`ClockModel`] as every other clock (one-sided: a callback is never *early*
//! for its block, only late by a varying wake-up delay, so the upper envelope
//! is the truth plus the minimum wake-up latency). This is Link's "host time
//! filter" with a robust envelope in place of least squares.
//!
//! A session time then converts to a local time (arbiter) and to a sample
//! index (here), so a transport command lands on the same sample everywhere.

use super::model::{ClockEstimate, ClockModel, ClockModelConfig, SampleError};

/// Maps a DAW's running sample counter to the local CPU clock and back.
///
/// Thread-safe: no (worker thread). Realtime-safe: [`DawClock::on_process`]
/// does not allocate but costs O(window); feed it from the worker. The
/// conversions and [`DawClock::estimate`] are O(1) and realtime-safe.
#[derive(Debug, Clone)]
pub struct DawClock {
    sample_rate: f64,
    model: ClockModel,
    last_sample: Option<u64>,
}

impl DawClock {
    /// Window of 2048 callbacks (about 5.5 s at 128 frames, 48 kHz; longer for
    /// bigger blocks); drift estimated after 1 s.
    pub fn new(sample_rate: f64) -> Self {
        Self::with_config(
            sample_rate,
            ClockModelConfig {
                window: 2048,
                min_drift_span_ns: 1_000_000_000,
                ..ClockModelConfig::default()
            },
        )
    }

    /// With an explicit model configuration.
    pub fn with_config(sample_rate: f64, config: ClockModelConfig) -> Self {
        Self {
            sample_rate,
            model: ClockModel::new(config),
            last_sample: None,
        }
    }

    /// Nominal sample rate, Hz.
    pub fn sample_rate(&self) -> f64 {
        self.sample_rate
    }

    fn sample_ns(&self, sample: u64) -> u64 {
        (sample as f64 * 1e9 / self.sample_rate).round() as u64
    }

    /// A `process()` call whose first sample is `sample` (running counter)
    /// started at local CPU time `local_ns`. A counter that goes backwards
    /// (re-activation) restarts the fit.
    pub fn on_process(&mut self, sample: u64, local_ns: u64) -> Result<(), SampleError> {
        if self.last_sample.is_some_and(|s| sample < s) {
            self.model.reset();
        }
        self.last_sample = Some(sample);
        // Model "remote" = the sample counter in nominal ns; seen at local time.
        // The model maps local → sample-ns; its drift is the sample clock's
        // rate error against the CPU clock.
        self.model
            .add_backward(self.sample_ns(sample), local_ns)
            .map(|_| ())
    }

    /// The fitted local → sample-ns mapping.
    pub fn estimate(&self) -> Option<ClockEstimate> {
        self.model.estimate()
    }

    /// The (fractional) sample index playing at local CPU time `local_ns`.
    pub fn sample_at_local(&self, local_ns: u64) -> Option<f64> {
        let est = self.model.estimate()?;
        Some(est.to_remote_i128(local_ns) as f64 * self.sample_rate / 1e9)
    }

    /// Local CPU time of sample index `sample`.
    pub fn local_at_sample(&self, sample: f64) -> Option<u64> {
        let est = self.model.estimate()?;
        Some(est.to_local((sample * 1e9 / self.sample_rate).round() as i128))
    }

    /// Sample clock rate error against the CPU clock, ppm.
    pub fn rate_error_ppm(&self) -> Option<f64> {
        self.model.estimate().map(|e| e.drift_ppm())
    }
}

/// Observations [`HostRate`] feeds its model at most this often (its
/// 4096-point window then spans about 20 s).
const HOST_RATE_EVERY_NS: u64 = 5_000_000;
/// [`HostRate`] applies no rate before its observations span this long: a
/// one-sided fit over a second or two of callbacks is off by hundreds of
/// ppm (measured: 450 ppm after 1 s, 20 ppm after 4 s), and a rate error
/// integrates into the output ring's fill for good; 8 s of a 200 ppm crystal
/// at the nominal rate cost 77 frames, well inside the ring's cushion.
const HOST_RATE_SETTLE_NS: u64 = 8_000_000_000;
/// A host that consumed nothing for this long stopped processing: its rate
/// is relearnt from scratch when it resumes.
const HOST_STALL_NS: u64 = 250_000_000;
/// Largest host clock rate error believed, ppm. Audio interfaces' crystals
/// are within ±100 ppm; a host rendering offline (freewheel, bounce) runs
/// many times faster than real time and must not make the worker race.
const HOST_MAX_PPM: f64 = 1_000.0;

/// How fast the host's audio thread consumes a plugin's output, against the
/// worker's clock — the rate of the audio interface's crystal, which is not
/// the CPU clock's. The worker samples the audio thread's running count of
/// frames consumed (an atomic the handle bumps, played or silence) whenever
/// it wakes; the count was reached at or before that instant, so the pairs
/// feed a one-sided [`DawClock`]. A playout clock that ticks at
/// [`HostRate::block_ns`] keeps the output ring's fill constant; one that
/// ticks at the nominal rate fills or drains it by the crystal's error
/// (200 ppm: 12 ms a minute), until it underruns or overflows.
///
/// Thread-safe: no (worker thread). Realtime-safe: no allocation;
/// [`HostRate::observe`] costs O(window) when it feeds the model.
#[derive(Debug, Clone)]
pub struct HostRate {
    clock: DawClock,
    last_count: Option<u64>,
    first_fed_ns: Option<u64>,
    last_fed_ns: u64,
    last_progress_ns: u64,
    ppm: f64,
}

impl HostRate {
    /// For a host at nominal `sample_rate`.
    pub fn new(sample_rate: f64) -> Self {
        Self {
            clock: DawClock::with_config(
                sample_rate,
                ClockModelConfig {
                    window: 4096,
                    min_drift_span_ns: HOST_RATE_SETTLE_NS,
                    ..ClockModelConfig::default()
                },
            ),
            last_count: None,
            first_fed_ns: None,
            last_fed_ns: 0,
            last_progress_ns: 0,
            ppm: 0.0,
        }
    }

    /// The host had consumed `frames` in total (running count) at or before
    /// local time `now_ns`.
    pub fn observe(&mut self, now_ns: u64, frames: u64) {
        match self.last_count {
            Some(c) if frames < c => {
                // A new counter (re-linked): start over.
                *self = Self::new(self.clock.sample_rate());
            }
            Some(c) if frames == c => {
                if now_ns.saturating_sub(self.last_progress_ns) > HOST_STALL_NS
                    && self.clock.estimate().is_some()
                {
                    // The host stopped calling process(): forget its phase.
                    *self = Self {
                        last_count: Some(c),
                        last_progress_ns: now_ns,
                        ..Self::new(self.clock.sample_rate())
                    };
                }
                return;
            }
            _ => {}
        }
        self.last_count = Some(frames);
        self.last_progress_ns = now_ns;
        if now_ns.saturating_sub(self.last_fed_ns) < HOST_RATE_EVERY_NS {
            return;
        }
        self.last_fed_ns = now_ns;
        let first = *self.first_fed_ns.get_or_insert(now_ns);
        let _ = self.clock.on_process(frames, now_ns);
        self.ppm = match self.clock.rate_error_ppm() {
            Some(p) if p.abs() <= HOST_MAX_PPM && now_ns - first >= HOST_RATE_SETTLE_NS => p,
            _ => 0.0,
        };
    }

    /// The host's rate error against the local clock, ppm (positive: it
    /// consumes faster than nominal); 0 until known, and for a host that is
    /// not running in real time.
    pub fn ppm(&self) -> f64 {
        self.ppm
    }

    /// Local time one block of `frames` at `sample_rate` lasts for the host, ns.
    pub fn block_ns(&self, frames: usize, sample_rate: u32) -> f64 {
        frames as f64 * 1e9 / f64::from(sample_rate.max(1)) / (1.0 + self.ppm * 1e-6)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::InjectedClock;
    use rand::{Rng, SeedableRng};

    #[test]
    fn maps_samples_to_cpu_time_within_a_sample_despite_wakeup_jitter() {
        let cpu = InjectedClock {
            offset_ns: 777_000_000,
            drift_ppm: -60.0,
        };
        let fs = 48_000.0;
        let audio_ppm = 35.0; // the sound card's crystal
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(9);
        let mut clock = DawClock::new(fs);
        let t0 = 3.0e12;
        let sample_time = |s: f64| t0 + s * 1e9 / (fs * (1.0 + audio_ppm * 1e-6));
        for k in 0..4000u64 {
            let s = k * 128;
            let wake = 50_000.0 + rng.random_range(0.0..800_000.0);
            let local = cpu.local_from_reference_f64(sample_time(s as f64) + wake);
            clock.on_process(s, local.round() as u64).unwrap();
        }
        // Expected drift: samples per CPU-ns relative rate.
        let expect_ppm = ((1.0 + audio_ppm * 1e-6) / (1.0 + cpu.drift_ppm * 1e-6) - 1.0) * 1e6;
        let got = clock.rate_error_ppm().unwrap();
        assert!((got - expect_ppm).abs() < 1.0, "rate {got} vs {expect_ppm}");
        // A future instant maps to the right sample (minus the 50 µs minimum wake-up).
        let s_true = 4000.0 * 128.0 + 4321.0;
        let local = cpu.local_from_reference_f64(sample_time(s_true) + 50_000.0);
        let s_est = clock.sample_at_local(local.round() as u64).unwrap();
        assert!((s_est - s_true).abs() < 1.0, "{s_est} vs {s_true}");
        let back = clock.local_at_sample(s_est).unwrap();
        assert!((back as f64 - local).abs() < 100.0);
    }

    #[test]
    fn host_rate_learns_an_audio_interface_crystal_from_a_sampled_counter() {
        // A host pulling 64-frame buffers from a crystal 180 ppm slow; the
        // worker samples the counter at irregular wake-ups.
        let fs = 48_000.0;
        let ppm = -180.0;
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(3);
        let mut rate = HostRate::new(fs);
        let period = 64.0 * 1e9 / (fs * (1.0 + ppm * 1e-6));
        let mut now = 1.0e12;
        let start = now;
        while now - start < 20e9 {
            now += rng.random_range(100_000.0..1_400_000.0);
            let pulls = ((now - start) / period).floor() as u64;
            rate.observe(now as u64, pulls * 64);
            if now - start < 7.5e9 {
                // Not before its observations span 8 s (a short fit is
                // hundreds of ppm off, and the error would stay in the ring).
                assert_eq!(rate.ppm(), 0.0);
            }
        }
        assert!((rate.ppm() - ppm).abs() < 2.0, "learnt {} ppm", rate.ppm());
        let want = 64.0 * 1e9 / fs / (1.0 + ppm * 1e-6);
        assert!((rate.block_ns(64, 48_000) - want).abs() < 0.01 * 1e3);
        // The host stops calling (transport-less pause): after the stall the
        // rate is unknown again, and a fresh counter restarts too.
        rate.observe(
            now as u64 + 300_000_000,
            (((now - start) / period).floor() as u64) * 64,
        );
        rate.observe(
            now as u64 + 600_000_000,
            (((now - start) / period).floor() as u64) * 64,
        );
        assert_eq!(rate.ppm(), 0.0);
    }

    #[test]
    fn host_rate_ignores_an_offline_render() {
        // Freewheeling: 20 times real time.
        let mut rate = HostRate::new(48_000.0);
        for k in 0..2_000u64 {
            rate.observe(1_000_000 + k * 25_000_000, k * 24_000);
        }
        assert_eq!(rate.ppm(), 0.0);
    }

    #[test]
    fn counter_restart_resets() {
        let mut c = DawClock::new(48_000.0);
        c.on_process(48_000, 2_000_000_000).unwrap();
        c.on_process(48_128, 2_002_666_667).unwrap();
        c.on_process(0, 5_000_000_000).unwrap();
        assert_eq!(c.estimate().unwrap().observations, 1);
    }
}
