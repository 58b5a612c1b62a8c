//! The CPU concealment methods as [`Predictor`]s.

use super::concealer::{Predictor, MAX_GAP};
use super::core::{PnbtrModel, PnbtrScratch, PnbtrStream, HISTORY};
use super::lpc::{ar_extrapolate, burg, BurgScratch};

/// Silence. Thread-safe: no. Realtime-safe: yes.
#[derive(Debug, Default)]
pub struct ZeroPredictor;

impl Predictor for ZeroPredictor {
    fn start(&mut self, _ch: usize, _h: &[f32], _last: usize) {}
    fn extend(&mut self, _ch: usize, _h: &[f32], _from: usize, out: &mut [f32]) {
        out.fill(0.0);
    }
    fn name(&self) -> &'static str {
        "zero"
    }
}

/// Repeats the last received block over and over (fading like every method).
/// Thread-safe: no. Realtime-safe: yes.
#[derive(Debug, Default)]
pub struct RepeatPredictor {
    period: usize,
}

impl Predictor for RepeatPredictor {
    fn start(&mut self, _ch: usize, _h: &[f32], last: usize) {
        self.period = last.clamp(1, HISTORY);
    }
    fn extend(&mut self, _ch: usize, h: &[f32], from: usize, out: &mut [f32]) {
        let period = self.period.clamp(1, HISTORY);
        for (i, o) in out.iter_mut().enumerate() {
            *o = h[HISTORY - period + ((from + i) % period)];
        }
    }
    fn name(&self) -> &'static str {
        "repeat"
    }
}

/// One channel's Burg continuation in progress.
#[derive(Debug, Clone)]
struct BurgChannel {
    coeffs: Vec<f32>,
    /// The recursion's last `order` samples.
    past: Vec<f32>,
    limit: f32,
}

/// Burg AR extrapolation as JackTrip does it: fit on the newest `window`
/// samples, run the all-pole model forward.
/// Thread-safe: no. Realtime-safe: yes after construction.
#[derive(Debug, Clone)]
pub struct BurgPredictor {
    order: usize,
    window: usize,
    channels: Vec<BurgChannel>,
    scratch: BurgScratch,
    work: Vec<f32>,
    out: Vec<f32>,
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
        let mut p = Self {
            order,
            window,
            channels: Vec::new(),
            scratch: BurgScratch::new(window),
            work: vec![0.0; order + MAX_GAP],
            out: vec![0.0; MAX_GAP],
        };
        p.prepare(1);
        p
    }
}

impl Predictor for BurgPredictor {
    fn prepare(&mut self, channels: usize) {
        self.channels = vec![
            BurgChannel {
                coeffs: vec![0.0; self.order + 1],
                past: vec![0.0; self.order],
                limit: 0.0,
            };
            channels.max(1)
        ];
    }
    fn start(&mut self, ch: usize, h: &[f32], _last: usize) {
        let c = &mut self.channels[ch];
        let win = &h[HISTORY - self.window..];
        burg(win, &mut c.coeffs, &mut self.scratch);
        c.past.copy_from_slice(&h[HISTORY - self.order..]);
        // An unstable fit must never blow up the output.
        c.limit = 2.0 * win.iter().fold(0.0f32, |m, &v| m.max(v.abs()));
    }
    fn extend(&mut self, ch: usize, _h: &[f32], _from: usize, out: &mut [f32]) {
        let c = &mut self.channels[ch];
        let order = self.order;
        for chunk in out.chunks_mut(MAX_GAP) {
            let len = chunk.len();
            let raw = &mut self.out[..len];
            ar_extrapolate(&c.past, &c.coeffs, &mut self.work, raw);
            if len >= order {
                c.past.copy_from_slice(&raw[len - order..]);
            } else {
                c.past.copy_within(len.., 0);
                c.past[order - len..].copy_from_slice(raw);
            }
            for (o, &v) in chunk.iter_mut().zip(raw.iter()) {
                *o = if v.is_finite() {
                    v.clamp(-c.limit, c.limit)
                } else {
                    0.0
                };
            }
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
    max_len: usize,
    streams: Vec<Option<PnbtrStream>>,
}

impl PnbtrPredictor {
    /// With the given model, for continuations extended up to `max_len`
    /// samples per call.
    pub fn new(model: PnbtrModel, max_len: usize) -> Self {
        Self {
            model,
            scratch: PnbtrScratch::new(max_len),
            max_len: max_len.max(1),
            streams: vec![None],
        }
    }
}

impl Predictor for PnbtrPredictor {
    fn prepare(&mut self, channels: usize) {
        self.streams = vec![None; channels.max(1)];
    }
    fn start(&mut self, ch: usize, h: &[f32], _last: usize) {
        self.streams[ch] = Some(PnbtrStream::start(h, &self.model, &mut self.scratch));
    }
    fn extend(&mut self, ch: usize, h: &[f32], _from: usize, out: &mut [f32]) {
        match &mut self.streams[ch] {
            Some(st) => {
                for chunk in out.chunks_mut(self.max_len) {
                    st.extend(h, &mut self.scratch, chunk);
                }
            }
            None => out.fill(0.0),
        }
    }
    fn name(&self) -> &'static str {
        "pnbtr"
    }
}
