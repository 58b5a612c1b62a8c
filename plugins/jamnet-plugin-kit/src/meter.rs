//! Lock-free numbers the audio thread writes and the editor reads.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::Instant;

/// An `f32` in an `AtomicU32`.
///
/// Thread-safe: yes. Realtime-safe: yes.
#[derive(Debug, Default)]
pub struct AtomicF32Cell(AtomicU32);

impl AtomicF32Cell {
    /// A cell holding `v`.
    pub fn new(v: f32) -> Self {
        Self(AtomicU32::new(v.to_bits()))
    }
    /// Read.
    pub fn get(&self) -> f32 {
        f32::from_bits(self.0.load(Ordering::Relaxed))
    }
    /// Write.
    pub fn set(&self, v: f32) {
        self.0.store(v.to_bits(), Ordering::Relaxed);
    }
    /// Write `v`, return the previous value.
    pub fn swap(&self, v: f32) -> f32 {
        f32::from_bits(self.0.swap(v.to_bits(), Ordering::Relaxed))
    }
}

/// Peak level since the editor last looked (linear, 0..).
///
/// Thread-safe: yes (one writer, the audio thread; one reader, the editor).
/// Realtime-safe: yes.
#[derive(Debug, Default)]
pub struct PeakMeter {
    peak: AtomicF32Cell,
}

impl PeakMeter {
    /// Audio thread: fold the absolute peak of `samples` in.
    pub fn observe(&self, samples: &[f32]) {
        let mut m = 0.0f32;
        for s in samples {
            m = m.max(s.abs());
        }
        if m > self.peak.get() {
            self.peak.set(m);
        }
    }

    /// Editor: the peak since the last call, resetting it.
    pub fn take(&self) -> f32 {
        self.peak.swap(0.0)
    }
}

/// An event counter with a per-second rate estimate on the reading side.
///
/// Thread-safe: yes. Realtime-safe: [`RateCounter::add`] yes.
#[derive(Debug, Default)]
pub struct RateCounter {
    count: AtomicU64,
}

impl RateCounter {
    /// Count `n` events.
    pub fn add(&self, n: u64) {
        self.count.fetch_add(n, Ordering::Relaxed);
    }
    /// Total so far.
    pub fn total(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
    }
}

/// Editor-side rate estimator over a [`RateCounter`] (or any running total).
///
/// Thread-safe: no (editor only). Realtime-safe: no (reads the clock).
#[derive(Debug, Default)]
pub struct RateEstimator {
    last: Option<(Instant, u64)>,
    rate: f64,
}

impl RateEstimator {
    /// Feed the current total; returns the rate per second, updated at most
    /// every half second.
    pub fn update(&mut self, total: u64) -> f64 {
        let now = Instant::now();
        match self.last {
            None => self.last = Some((now, total)),
            Some((t, n)) => {
                let dt = now.duration_since(t).as_secs_f64();
                if dt >= 0.5 {
                    self.rate = total.saturating_sub(n) as f64 / dt;
                    self.last = Some((now, total));
                }
            }
        }
        self.rate
    }
}

/// Linear amplitude to dBFS (−120 floor).
pub fn to_db(amp: f32) -> f32 {
    if amp <= 1e-6 {
        -120.0
    } else {
        20.0 * amp.log10()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peak_meter_keeps_max_and_resets() {
        let m = PeakMeter::default();
        m.observe(&[0.1, -0.7, 0.3]);
        m.observe(&[0.2]);
        assert_eq!(m.take(), 0.7);
        assert_eq!(m.take(), 0.0);
    }

    #[test]
    fn db_conversion() {
        assert!((to_db(1.0)).abs() < 1e-6);
        assert!((to_db(0.5) + 6.0206).abs() < 1e-3);
        assert_eq!(to_db(0.0), -120.0);
    }
}
