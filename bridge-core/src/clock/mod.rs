//! Clocks: one model, three uses (DESIGN.md "Clocks").
//!
//! * [`model::ClockModel`] estimates `remote = local × (1 + drift) + offset`
//!   from timestamp pairs with a robust filter, and reports a quality figure.
//! * [`arbiter::ClockDriftArbiter`] (peer ↔ peer): clock_ping/clock_pong,
//!   per-peer models, deterministic master election, slewed hand-off.
//! * [`daw::DawClock`] (host sample position ↔ CPU clock).
//! * [`gpu_bridge`] (GPU timestamps ↔ CPU clock, `sync_calibration_block`).
//! * [`wire`]: the arbiter's clock_ping/clock_pong messages (shared by
//!   every worker that runs an arbiter).
//! * [`syncsim`]: a small deterministic network simulator that runs several
//!   arbiters against each other with injected clocks (what `toaster sync`
//!   measures).
//!
//! All of it is sans-IO: every call takes the local time `now` in ns.

pub mod arbiter;
pub mod daw;
pub mod gpu_bridge;
pub mod model;
pub mod syncsim;
pub mod wire;

pub use arbiter::{ArbiterConfig, ClockDriftArbiter, PeerClockStats};
pub use daw::{DawClock, HostRate};
pub use model::{ClockEstimate, ClockModel, ClockModelConfig, Exchange};

/// A peer id: the frame header's `source` (never 0), shown as 8 lowercase hex digits.
pub type PeerId = u32;

/// A local clock derived from a reference clock (normally `CLOCK_MONOTONIC`)
/// with an injected offset and drift, so tests know the truth:
/// `local = reference × (1 + drift_ppm·1e-6) + offset_ns`.
///
/// This is what `toaster peer --clock-offset-ns O --clock-drift-ppm D` uses and
/// what the simulator gives each peer.
///
/// Thread-safe: yes (plain value). Realtime-safe: yes.
#[derive(Debug, Clone, Copy, PartialEq, Default, serde::Serialize, serde::Deserialize)]
pub struct InjectedClock {
    /// Added after scaling, ns.
    pub offset_ns: i64,
    /// Rate error in ppm (+100 runs 100 µs per second fast).
    pub drift_ppm: f64,
}

impl InjectedClock {
    /// `reference × (1 + drift) + offset`, exact to 1 ns, clamped to `u64`.
    pub fn local_from_reference(&self, reference_ns: u64) -> u64 {
        let r = reference_ns as i128;
        let scaled = (reference_ns as f64 * self.drift_ppm * 1e-6).round() as i128;
        model::clamp_u64(r + scaled + self.offset_ns as i128)
    }

    /// Inverse of [`InjectedClock::local_from_reference`] (to within 1 ns).
    pub fn reference_from_local(&self, local_ns: u64) -> u64 {
        let d = self.drift_ppm * 1e-6;
        let v = local_ns as i128 - self.offset_ns as i128;
        let corr = (v as f64 * d / (1.0 + d)).round() as i128;
        model::clamp_u64(v - corr)
    }

    /// Same as [`InjectedClock::local_from_reference`] for a fractional
    /// reference time (the simulator's true time), as f64 ns.
    pub fn local_from_reference_f64(&self, reference_ns: f64) -> f64 {
        reference_ns * (1.0 + self.drift_ppm * 1e-6) + self.offset_ns as f64
    }

    /// Reads `CLOCK_MONOTONIC` (through `std::time::Instant`'s origin: ns since
    /// `origin`) and maps it. For drivers only; the core never reads clocks.
    pub fn now_from(&self, origin: std::time::Instant, base_ns: u64) -> u64 {
        let mono = base_ns.saturating_add(origin.elapsed().as_nanos() as u64);
        self.local_from_reference(mono)
    }
}

/// Reads `CLOCK_MONOTONIC` in ns (Linux; `Instant`-based elsewhere).
/// For drivers only: the core takes time as a parameter.
pub fn monotonic_ns() -> u64 {
    #[cfg(target_os = "linux")]
    {
        let mut ts = libc_timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: `clock_gettime` writes one `timespec` into the pointer we pass,
        // which points to a live, properly laid-out struct on our stack.
        let rc = unsafe { clock_gettime(1, &mut ts) };
        if rc == 0 {
            return ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64;
        }
    }
    static ORIGIN: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();
    ORIGIN
        .get_or_init(std::time::Instant::now)
        .elapsed()
        .as_nanos() as u64
}

#[cfg(target_os = "linux")]
#[repr(C)]
struct libc_timespec {
    tv_sec: i64,
    tv_nsec: i64,
}

#[cfg(target_os = "linux")]
extern "C" {
    fn clock_gettime(clk_id: i32, tp: *mut libc_timespec) -> i32;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn injected_clock_round_trips() {
        for (o, d) in [
            (0i64, 0.0),
            (1_000_000_000, 200.0),
            (-1_000_000_000, -200.0),
            (123, 37.5),
        ] {
            let c = InjectedClock {
                offset_ns: o,
                drift_ppm: d,
            };
            for r in [2_000_000_000u64, 123_456_789_012_345, 9_000_000_000_000_000] {
                let l = c.local_from_reference(r);
                let expect = r as f64 * (1.0 + d * 1e-6) + o as f64;
                assert!(
                    (l as f64 - expect).abs() <= 1.0 + expect.abs() * 1e-15,
                    "{l} vs {expect}"
                );
                let back = c.reference_from_local(l);
                assert!((back as i128 - r as i128).abs() <= 1, "{back} vs {r}");
            }
        }
    }

    #[test]
    fn monotonic_clock_moves_forward() {
        let a = monotonic_ns();
        std::thread::sleep(std::time::Duration::from_millis(2));
        let b = monotonic_ns();
        assert!(b >= a + 1_000_000, "{a} {b}");
    }
}
