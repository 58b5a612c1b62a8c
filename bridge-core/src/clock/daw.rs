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
    fn counter_restart_resets() {
        let mut c = DawClock::new(48_000.0);
        c.on_process(48_000, 2_000_000_000).unwrap();
        c.on_process(48_128, 2_002_666_667).unwrap();
        c.on_process(0, 5_000_000_000).unwrap();
        assert_eq!(c.estimate().unwrap().observations, 1);
    }
}
