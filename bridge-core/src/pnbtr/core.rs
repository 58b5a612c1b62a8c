//! PNBTR's predictor: a pure function from one channel's history to a
//! continuation. This is the CPU twin of `shaders/pnbtr.wgsl`; every step and
//! every long sum is ordered as in the kernel (see [`super::lpc::lane_sum`]).
//!
//! Three candidate continuations are made from the last [`HISTORY`] samples:
//! 1. `ar`: Burg AR(32) fitted on the last 1024 samples, run forward;
//! 2. `p1`: the last pitch period repeated (period from a normalised
//!    autocorrelation search, coarse at 12 kHz then refined at 48 kHz);
//! 3. `p2`: the period before it repeated (averaging p1 and p2 cancels noise).
//!
//! and five "how predictable is this" features: the AR model's and the pitch
//! repetition's back-cast accuracy on the last 256 known samples, the pitch
//! correlation, the level stationarity, and a bias. A small learned model
//! (`weights.json`, fitted by least squares by `scripts/train/train.sh` on the
//! training half of the corpus) maps features × gap position (1, u, u²) to the
//! weight of each candidate at each output sample. Because the model is linear
//! in its parameters it trains in closed form and runs as a few multiply-adds
//! per sample; what it learns is *when* to trust which extrapolation and how
//! fast to shrink it towards silence as the gap grows (shrinkage is what keeps
//! the waveform SNR above 0 dB where the extrapolation loses phase).

use super::lpc::{ar_extrapolate, burg, lane_sum, BurgScratch};

/// Samples of history the predictor reads (newest last).
pub const HISTORY: usize = 2048;
/// Burg analysis window (the newest samples of the history).
pub const BURG_WINDOW: usize = 1024;
/// AR order of PNBTR's linear predictor.
pub const ORDER: usize = 32;
/// Back-cast length for the predictability features.
pub const BACKCAST: usize = 256;
/// Gap position scale of the time features: `u = t / GAP_SCALE`.
pub const GAP_SCALE: f32 = 2048.0;
/// Number of static features.
pub const N_STATIC: usize = 5;
/// Number of time features (1, u, u²).
pub const N_TIME: usize = 3;
/// Number of candidate continuations (ar, p1, p2).
pub const N_CAND: usize = 3;
/// Number of model weights.
pub const N_WEIGHTS: usize = N_CAND * N_STATIC * N_TIME;

const DECIM: usize = 4;
const COARSE_MIN: usize = 8;
const COARSE_MAX: usize = 256;
const COARSE_WIN: usize = 128;
const FINE_WIN: usize = 512;
const FINE_SPAN: usize = 3;
const NEG_BIG: f32 = -1.0e30;

/// The learned mixing model. Index of weight (candidate k, static j, time m)
/// is `(k * N_STATIC + j) * N_TIME + m`.
///
/// Thread-safe: yes (immutable). Realtime-safe: yes.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct PnbtrModel {
    /// Flat weights, see the type's doc.
    pub weights: Vec<f32>,
    /// Free text: how and on what the weights were fitted.
    #[serde(default)]
    pub trained_on: String,
}

/// Why a weights file was refused.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    /// Not valid JSON for [`PnbtrModel`].
    #[error("weights file is not valid JSON: {0}")]
    Json(#[from] serde_json::Error),
    /// Wrong number of weights.
    #[error("expected {expected} weights, found {found}")]
    WrongLength {
        /// Required count.
        expected: usize,
        /// Count in the file.
        found: usize,
    },
    /// A weight is NaN or infinite.
    #[error("weights must be finite")]
    NotFinite,
}

impl PnbtrModel {
    /// The committed model (`bridge-core/src/pnbtr/weights.json`).
    pub fn builtin() -> Self {
        Self::from_json(include_str!("weights.json")).expect("committed weights.json is valid")
    }

    /// Plain Burg AR continuation, no learning (the untrained starting point).
    pub fn ar_only() -> Self {
        let mut weights = vec![0.0; N_WEIGHTS];
        weights[Self::index(0, 0, 0)] = 1.0;
        Self {
            weights,
            trained_on: "none (pure AR)".into(),
        }
    }

    /// Weight index of candidate `k`, static feature `j`, time feature `m`.
    pub const fn index(k: usize, j: usize, m: usize) -> usize {
        (k * N_STATIC + j) * N_TIME + m
    }

    /// Parses and checks a weights file.
    pub fn from_json(text: &str) -> Result<Self, ModelError> {
        let model: Self = serde_json::from_str(text)?;
        if model.weights.len() != N_WEIGHTS {
            return Err(ModelError::WrongLength {
                expected: N_WEIGHTS,
                found: model.weights.len(),
            });
        }
        if !model.weights.iter().all(|w| w.is_finite()) {
            return Err(ModelError::NotFinite);
        }
        Ok(model)
    }
}

/// What the analysis of one history found.
///
/// Thread-safe: yes. Realtime-safe: yes.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Analysis {
    /// AR coefficients, `a[0] = 1`.
    pub ar: [f32; ORDER + 1],
    /// Pitch period in samples.
    pub period: usize,
    /// Static features: 1, AR back-cast gain, pitch back-cast gain, pitch
    /// correlation, level stationarity (each in 0..=1).
    pub features: [f32; N_STATIC],
    /// Twice the peak magnitude of the Burg window (output clamp).
    pub limit: f32,
}

/// Working memory for one predictor (one channel or one concealer).
///
/// Thread-safe: no. Realtime-safe: yes once constructed.
#[derive(Debug, Clone)]
pub struct PnbtrScratch {
    burg: BurgScratch,
    decim: Vec<f32>,
    back: Vec<f32>,
    ar: Vec<f32>,
    work: Vec<f32>,
}

impl PnbtrScratch {
    /// Scratch for continuations of up to `max_len` samples.
    pub fn new(max_len: usize) -> Self {
        Self {
            burg: BurgScratch::new(BURG_WINDOW),
            decim: vec![0.0; HISTORY / DECIM],
            back: vec![0.0; BACKCAST],
            ar: vec![0.0; max_len],
            work: vec![0.0; ORDER + max_len.max(BACKCAST)],
        }
    }
}

fn clamp01(x: f32) -> f32 {
    if x.is_nan() {
        0.0
    } else {
        x.clamp(0.0, 1.0)
    }
}

/// Analyses a history of exactly [`HISTORY`] samples.
pub fn analyse(h: &[f32], s: &mut PnbtrScratch) -> Analysis {
    assert_eq!(h.len(), HISTORY);
    let win = &h[HISTORY - BURG_WINDOW..];
    let mut ar = [0.0f32; ORDER + 1];
    burg(win, &mut ar, &mut s.burg);
    let peak = win.iter().fold(0.0f32, |m, &v| m.max(v.abs()));

    // Coarse pitch at 12 kHz: one lag per GPU thread, serial sums.
    let nd = HISTORY / DECIM;
    for (m, d) in s.decim.iter_mut().enumerate() {
        let i = m * DECIM;
        *d = (h[i] + h[i + 1] + h[i + 2] + h[i + 3]) * 0.25;
    }
    let d = &s.decim;
    let base = nd - COARSE_WIN;
    // Each lag's sums run serially over m, as one GPU thread does. The
    // window energy e0 is the same sum for every lag (computed once), and
    // LAG_BLOCK lags are summed side by side: each accumulator still adds
    // its terms in the same order (bit-identical to one lag at a time), but
    // the independent chains overlap instead of waiting on each other.
    const LAG_BLOCK: usize = 8;
    let mut e0 = 0.0f32;
    for &x in &d[base..base + COARSE_WIN] {
        e0 += x * x;
    }
    let (mut best_r, mut best_l) = (NEG_BIG, COARSE_MIN);
    let mut lag0 = COARSE_MIN;
    while lag0 <= COARSE_MAX {
        let lanes = LAG_BLOCK.min(COARSE_MAX + 1 - lag0);
        let mut num = [0.0f32; LAG_BLOCK];
        let mut el = [0.0f32; LAG_BLOCK];
        if lanes == LAG_BLOCK {
            for m in 0..COARSE_WIN {
                let x = d[base + m];
                // ys[k] = d[base + m - (lag0 + k)].
                let top = base + m - lag0;
                let ys = &d[top + 1 - LAG_BLOCK..=top];
                for k in 0..LAG_BLOCK {
                    let y = ys[LAG_BLOCK - 1 - k];
                    num[k] += x * y;
                    el[k] += y * y;
                }
            }
        } else {
            for m in 0..COARSE_WIN {
                let x = d[base + m];
                for k in 0..lanes {
                    let y = d[base + m - lag0 - k];
                    num[k] += x * y;
                    el[k] += y * y;
                }
            }
        }
        for k in 0..lanes {
            let r = num[k] / (e0 * el[k] + 1e-12).sqrt();
            if r > best_r {
                best_r = r;
                best_l = lag0 + k;
            }
        }
        lag0 += LAG_BLOCK;
    }
    // Refine at full rate around the coarse lag.
    let centre = best_l * DECIM;
    let fbase = HISTORY - FINE_WIN;
    let (mut rho, mut period) = (NEG_BIG, centre);
    for t in centre - FINE_SPAN..=centre + FINE_SPAN {
        let (mut num, mut e0, mut et) = (0.0f32, 0.0f32, 0.0f32);
        for i in 0..FINE_WIN {
            let x = h[fbase + i];
            let y = h[fbase + i - t];
            num += x * y;
            e0 += x * x;
            et += y * y;
        }
        let r = num / (e0 * et + 1e-12).sqrt();
        if r > rho {
            rho = r;
            period = t;
        }
    }

    // Back-casts over the last BACKCAST known samples.
    let cut = HISTORY - BACKCAST;
    ar_extrapolate(&h[..cut], &ar, &mut s.work, &mut s.back);
    let (mut e_ar, mut e_p, mut e_x) = (0.0f32, 0.0f32, 0.0f32);
    for i in 0..BACKCAST {
        let x = h[cut + i];
        let pa = s.back[i] - x;
        let pp = h[cut - period + (i % period)] - x;
        e_ar += pa * pa;
        e_p += pp * pp;
        e_x += x * x;
    }
    let g_ar = clamp01(1.0 - e_ar / (e_x + 1e-9));
    let g_p = clamp01(1.0 - e_p / (e_x + 1e-9));
    let half = BURG_WINDOW / 2;
    let e_new = lane_sum(half, |i| h[HISTORY - half + i] * h[HISTORY - half + i]);
    let e_old = lane_sum(half, |i| {
        h[HISTORY - 2 * half + i] * h[HISTORY - 2 * half + i]
    });
    let hi = e_new.max(e_old);
    let lvl = if hi > 1e-12 {
        e_new.min(e_old) / hi
    } else {
        0.0
    };
    Analysis {
        ar,
        period,
        features: [1.0, g_ar, g_p, clamp01(rho), lvl],
        limit: 2.0 * peak,
    }
}

/// Candidate `k` (0 = ar from `ar_buf`, 1 = p1, 2 = p2) at output sample `i`.
#[inline]
fn candidate(h: &[f32], period: usize, ar_buf: &[f32], k: usize, i: usize) -> f32 {
    let p1 = h[HISTORY - period + (i % period)];
    match k {
        0 => ar_buf[i],
        1 => p1,
        _ => {
            if 2 * period <= HISTORY {
                h[HISTORY - 2 * period + (i % period)]
            } else {
                p1
            }
        }
    }
}

/// The three candidates for `out.len()` samples, for training:
/// `out[i] = [ar, p1, p2]`.
pub fn candidates(h: &[f32], an: &Analysis, s: &mut PnbtrScratch, out: &mut [[f32; N_CAND]]) {
    let len = out.len();
    ar_extrapolate(h, &an.ar, &mut s.work, &mut s.ar[..len]);
    for (i, o) in out.iter_mut().enumerate() {
        for (k, v) in o.iter_mut().enumerate() {
            *v = candidate(h, an.period, &s.ar, k, i);
        }
    }
}

/// Time features at gap position `i`.
#[inline]
pub fn time_features(i: usize) -> [f32; N_TIME] {
    let u = i as f32 / GAP_SCALE;
    [1.0, u, u * u]
}

/// One channel's PNBTR continuation in progress: the analysis of the gap
/// start's history plus the AR recursion's state, so the continuation can be
/// produced a packet at a time ([`PnbtrStream::extend`]) instead of all at the
/// gap start. Extending in pieces gives bit-identical samples to one call for
/// the whole length ([`predict`]): every sample is computed by the same
/// operations in the same order.
///
/// Thread-safe: yes (plain data). Realtime-safe: yes.
#[derive(Debug, Clone, Copy)]
pub struct PnbtrStream {
    an: Analysis,
    /// Per-candidate weight polynomials in u: c_k(u) = q0 + q1 u + q2 u².
    q: [[f32; N_TIME]; N_CAND],
    p1_start: usize,
    p2_start: usize,
    /// Position within the pitch period of the next sample.
    phase: usize,
    /// Gap position of the next sample.
    pos: usize,
    /// The AR recursion's last ORDER samples (history, then its own output).
    past: [f32; ORDER],
}

impl PnbtrStream {
    /// Analyses the history `h` (exactly [`HISTORY`] samples, newest last)
    /// at a gap start. This is the expensive part (Burg fit, pitch search,
    /// back-casts); the continuation itself costs a few multiply-adds per
    /// sample.
    pub fn start(h: &[f32], model: &PnbtrModel, s: &mut PnbtrScratch) -> Self {
        let an = analyse(h, s);
        let mut q = [[0.0f32; N_TIME]; N_CAND];
        for (k, qk) in q.iter_mut().enumerate() {
            for (m, qkm) in qk.iter_mut().enumerate() {
                let mut acc = 0.0f32;
                for j in 0..N_STATIC {
                    acc += model.weights[PnbtrModel::index(k, j, m)] * an.features[j];
                }
                *qkm = acc;
            }
        }
        let period = an.period;
        let p1_start = HISTORY - period;
        let p2_start = if 2 * period <= HISTORY {
            HISTORY - 2 * period
        } else {
            p1_start
        };
        let mut past = [0.0f32; ORDER];
        past.copy_from_slice(&h[HISTORY - ORDER..]);
        Self {
            an,
            q,
            p1_start,
            p2_start,
            phase: 0,
            pos: 0,
            past,
        }
    }

    /// What the analysis found.
    pub fn analysis(&self) -> &Analysis {
        &self.an
    }

    /// Samples produced so far.
    pub fn position(&self) -> usize {
        self.pos
    }

    /// Writes the next `out.len()` samples of the continuation. `h` must be
    /// the same history given to [`PnbtrStream::start`] (the pitch
    /// candidates read it); `out.len()` must not exceed the scratch's
    /// `max_len`.
    pub fn extend(&mut self, h: &[f32], s: &mut PnbtrScratch, out: &mut [f32]) {
        let len = out.len();
        if len == 0 {
            return;
        }
        ar_extrapolate(&self.past, &self.an.ar, &mut s.work, &mut s.ar[..len]);
        if len >= ORDER {
            self.past.copy_from_slice(&s.ar[len - ORDER..len]);
        } else {
            self.past.copy_within(len.., 0);
            self.past[ORDER - len..].copy_from_slice(&s.ar[..len]);
        }
        // The pitch candidates read h[start + phase], phase = i mod period,
        // kept as a counter (a division per sample would cost more than the
        // maths).
        let period = self.an.period;
        let limit = self.an.limit;
        let (h1, h2) = (&h[self.p1_start..], &h[self.p2_start..]);
        let mut phase = self.phase;
        for (i, o) in out.iter_mut().enumerate() {
            let u = (self.pos + i) as f32 / GAP_SCALE;
            let cand = [s.ar[i], h1[phase], h2[phase]];
            phase += 1;
            if phase == period {
                phase = 0;
            }
            let mut y = 0.0f32;
            for (qk, ck) in self.q.iter().zip(cand) {
                let c = qk[0] + u * (qk[1] + u * qk[2]);
                y += c * ck;
            }
            *o = if y.is_finite() {
                y.clamp(-limit, limit)
            } else {
                0.0
            };
        }
        self.phase = phase;
        self.pos += len;
    }
}

/// Predicts `out.len()` samples following the history `h` (exactly
/// [`HISTORY`] samples, newest last) in one go: the CPU twin of the GPU
/// kernel (which also computes the whole continuation at once).
/// `out.len()` must not exceed the scratch's `max_len`. Realtime-safe.
/// Returns the analysis (for stats and training).
pub fn predict(h: &[f32], model: &PnbtrModel, s: &mut PnbtrScratch, out: &mut [f32]) -> Analysis {
    let mut stream = PnbtrStream::start(h, model, s);
    stream.extend(h, s, out);
    stream.an
}
