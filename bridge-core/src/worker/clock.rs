//! Clocks the worker reads (injected, so tests and `toaster peer
//! --clock-offset-ns/--clock-drift-ppm` can skew them).

use std::time::Instant;

/// A source of "now" in nanoseconds, monotonic.
///
/// Thread-safe: yes (`Send + Sync`). Realtime-safe: implementations should be
/// (a vDSO clock read), but the audio thread never needs one.
pub trait Clock: Send + Sync {
    /// Now, ns.
    fn now_ns(&self) -> u64;

    /// This clock's reading at the instant `CLOCK_MONOTONIC` read
    /// `mono_ns` (`None`: this clock is not a function of it, e.g. a
    /// virtual one). Lets the worker use stamps the audio thread took.
    fn at_monotonic(&self, mono_ns: u64) -> Option<u64> {
        let _ = mono_ns;
        None
    }
}

/// `CLOCK_MONOTONIC` in ns (the kernel's, so several processes on one host
/// read the same timeline, which one-way latency measurements rely on).
///
/// Thread-safe: yes. Realtime-safe: yes (vDSO).
#[derive(Debug, Clone, Copy, Default)]
pub struct MonotonicClock;

impl MonotonicClock {
    /// The clock.
    pub fn new() -> Self {
        Self
    }
}

/// Read `CLOCK_MONOTONIC` in ns.
pub fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec; CLOCK_MONOTONIC always
    // exists on Linux, so the call cannot fail with these arguments.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

impl Clock for MonotonicClock {
    fn now_ns(&self) -> u64 {
        monotonic_ns()
    }

    fn at_monotonic(&self, mono_ns: u64) -> Option<u64> {
        Some(mono_ns)
    }
}

/// An injected local clock: `local = CLOCK_MONOTONIC × (1 + drift_ppm·1e-6) + offset_ns`,
/// for simulating a peer whose clock is off and runs fast or slow.
///
/// Thread-safe: yes. Realtime-safe: yes.
#[derive(Debug, Clone, Copy)]
pub struct SkewedClock {
    /// Added offset, ns (may be negative; the result saturates at 0).
    pub offset_ns: i64,
    /// Rate error, parts per million.
    pub drift_ppm: f64,
}

impl SkewedClock {
    /// A skewed clock (the formula is applied to the raw monotonic reading,
    /// exactly as written above, so other tools can reproduce it).
    pub fn new(offset_ns: i64, drift_ppm: f64) -> Self {
        Self {
            offset_ns,
            drift_ppm,
        }
    }

    /// The skewed reading for a given monotonic reading.
    pub fn at(&self, mono_ns: u64) -> u64 {
        let skew = (mono_ns as f64 * self.drift_ppm * 1e-6) as i128;
        (mono_ns as i128 + skew + self.offset_ns as i128).max(0) as u64
    }
}

impl Clock for SkewedClock {
    fn now_ns(&self) -> u64 {
        self.at(monotonic_ns())
    }

    fn at_monotonic(&self, mono_ns: u64) -> Option<u64> {
        Some(self.at(mono_ns))
    }
}

/// A clock that starts at zero when created (handy in tests).
///
/// Thread-safe: yes. Realtime-safe: yes.
#[derive(Debug, Clone, Copy)]
pub struct ElapsedClock(Instant);

impl Default for ElapsedClock {
    fn default() -> Self {
        Self(Instant::now())
    }
}

impl Clock for ElapsedClock {
    fn now_ns(&self) -> u64 {
        self.0.elapsed().as_nanos() as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn skewed_clock_applies_offset_and_drift() {
        let c = SkewedClock::new(1_000_000, 100.0);
        assert_eq!(c.at(0), 1_000_000);
        // 1 s at +100 ppm: 100 µs extra.
        assert_eq!(c.at(1_000_000_000), 1_000_000_000 + 100_000 + 1_000_000);
        let neg = SkewedClock::new(-5, -50.0);
        assert_eq!(neg.at(1_000_000_000), 1_000_000_000 - 50_000 - 5);
        assert_eq!(neg.at(0), 0);
        let m1 = MonotonicClock.now_ns();
        let m2 = MonotonicClock.now_ns();
        assert!(m2 >= m1);
    }
}
