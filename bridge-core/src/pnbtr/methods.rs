//! The CPU concealment methods as [`Predictor`]s.

use super::concealer::{Predictor, CROSSFADE, MAX_GAP};
use super::core::{predict, PnbtrModel, PnbtrScratch, HISTORY};
use super::lpc::{ar_extrapolate, burg, BurgScratch};

/// Silence. Thread-safe: no. Realtime-safe: yes.
#[derive(Debug, Default)]
pub struct ZeroPredictor;

impl Predictor for ZeroPredictor {
    fn predict(&mut self, _ch: usize, _h: &[f32], _last: usize, out: &mut [f32]) {
        out.fill(0.0);
    }
    fn name(&self) -> &'static str {
        "zero"
    }
}

/// Repeats the last received block over and over (fading like every method).
/// Thread-safe: no. Realtime-safe: yes.
#[derive(Debug, Default)]
pub struct RepeatPredictor;

impl Predictor for RepeatPredictor {
    fn predict(&mut self, _ch: usize, h: &[f32], last: usize, out: &mut [f32]) {
        let period = last.clamp(1, HISTORY);
        for (i, o) in out.iter_mut().enumerate() {
            *o = h[HISTORY - period + (i % period)];
        }
    }
    fn name(&self) -> &'static str {
        "repeat"
    }
}

/// Burg AR extrapolation as JackTrip does it: fit on the newest `window`
/// samples, run the all-pole model forward.
/// Thread-safe: no. Realtime-safe: yes after construction.
#[derive(Debug, Clone)]
pub struct BurgPredictor {
    window: usize,
    coeffs: Vec<f32>,
    scratch: BurgScratch,
    work: Vec<f32>,
}

impl BurgPredictor {
    /// Default configuration: order 32 over 1024 samples.
    pub const DEFAULT_ORDER: usize = 32;
    /// Default analysis window.
    pub const DEFAULT_WINDOW: usize = 1024;

    /// `order` is clamped to 1..=64 and `window` to `order+1..=HISTORY`.
    pub fn new(order: usize, window: usize) -> Self {
        let order = order.clamp(1, 64);
        let window = window.clamp(order + 1, HISTORY);
        Self {
            window,
            coeffs: vec![0.0; order + 1],
            scratch: BurgScratch::new(window),
            work: vec![0.0; order + MAX_GAP + CROSSFADE],
        }
    }
}

impl Predictor for BurgPredictor {
    fn predict(&mut self, _ch: usize, h: &[f32], _last: usize, out: &mut [f32]) {
        burg(
            &h[HISTORY - self.window..],
            &mut self.coeffs,
            &mut self.scratch,
        );
        let n = out.len().min(self.work.len() - (self.coeffs.len() - 1));
        ar_extrapolate(h, &self.coeffs, &mut self.work, &mut out[..n]);
        // An unstable fit must never blow up the output.
        let limit = 2.0
            * h[HISTORY - self.window..]
                .iter()
                .fold(0.0f32, |m, &v| m.max(v.abs()));
        for o in out.iter_mut() {
            *o = if o.is_finite() {
                o.clamp(-limit, limit)
            } else {
                0.0
            };
        }
    }
    fn name(&self) -> &'static str {
        "burg"
    }
}

/// PNBTR on the CPU (see [`super::core`]).
/// Thread-safe: no. Realtime-safe: yes after construction.
#[derive(Debug, Clone)]
pub struct PnbtrPredictor {
    model: PnbtrModel,
    scratch: PnbtrScratch,
}

impl PnbtrPredictor {
    /// With the given model, for continuations up to `max_len` samples.
    pub fn new(model: PnbtrModel, max_len: usize) -> Self {
        Self {
            model,
            scratch: PnbtrScratch::new(max_len),
        }
    }
}

impl Predictor for PnbtrPredictor {
    fn predict(&mut self, _ch: usize, h: &[f32], _last: usize, out: &mut [f32]) {
        predict(h, &self.model, &mut self.scratch, out);
    }
    fn name(&self) -> &'static str {
        "pnbtr"
    }
}
