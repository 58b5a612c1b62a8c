//! The shared concealer frame: per-channel history, gap bookkeeping, fade-out
//! of long gaps and the cross-fade back into real audio. Methods differ only
//! in how they continue one channel's history ([`Predictor`]).

use super::core::HISTORY;
use crate::conceal::Concealer;

/// Samples (per channel) a gap is predicted for; after this it is silence.
pub const MAX_GAP: usize = 2048;
/// Concealment is at full level for this many samples, then fades (raised
/// cosine) to silence at [`MAX_GAP`]: long gaps end quietly, never in a buzz.
pub const FADE_START: usize = 1024;
/// Cross-fade length from the prediction into returning real audio.
pub const CROSSFADE: usize = 64;

/// Continues one channel: given `history` (exactly [`HISTORY`] samples,
/// newest last; zeros before the stream started) write `out.len()` samples.
///
/// Thread-safe: no. Realtime-safe: implementations must be.
pub trait Predictor: Send {
    /// Predicts the continuation of `history` into `out` (`out.len()` ≤ [`MAX_GAP`] + [`CROSSFADE`]).
    fn predict(&mut self, channel: usize, history: &[f32], last_block: usize, out: &mut [f32]);
    /// Predicts every channel at once (the GPU predictor batches them in
    /// one dispatch); by default one channel at a time.
    fn predict_all(&mut self, histories: &[Vec<f32>], last_block: usize, outs: &mut [Vec<f32>]) {
        for (ch, (h, o)) in histories.iter().zip(outs.iter_mut()).enumerate() {
            self.predict(ch, h, last_block, o);
        }
    }
    /// Stable method name.
    fn name(&self) -> &'static str;
}

/// Gain of the concealment at gap position `t` (samples).
#[inline]
pub fn fade_gain(t: usize) -> f32 {
    if t < FADE_START {
        1.0
    } else if t >= MAX_GAP {
        0.0
    } else {
        let x = (t - FADE_START) as f32 / (MAX_GAP - FADE_START) as f32;
        0.5 * (1.0 + (std::f32::consts::PI * x).cos())
    }
}

/// A [`Concealer`] built from a [`Predictor`]: predicts each channel's whole
/// gap (up to [`MAX_GAP`] samples) once, when the gap starts, from real
/// history only, then plays it out block by block.
///
/// Thread-safe: no (`Send`). Realtime-safe: yes after construction (no
/// allocation, locking or I/O in `on_received`/`conceal`).
pub struct PredictiveConcealer<P: Predictor> {
    channels: usize,
    predictor: P,
    /// Per channel, `HISTORY` samples, newest last.
    history: Vec<Vec<f32>>,
    /// Per channel, the current gap's continuation (`MAX_GAP + CROSSFADE`).
    continuation: Vec<Vec<f32>>,
    in_gap: bool,
    gap_pos: usize,
    last_block: usize,
}

impl<P: Predictor> PredictiveConcealer<P> {
    /// A concealer for `channels` interleaved channels (at least 1).
    pub fn new(channels: usize, predictor: P) -> Self {
        let channels = channels.max(1);
        Self {
            channels,
            predictor,
            history: vec![vec![0.0; HISTORY]; channels],
            continuation: vec![vec![0.0; MAX_GAP + CROSSFADE]; channels],
            in_gap: false,
            gap_pos: 0,
            last_block: 0,
        }
    }

    fn push_history(&mut self, block: &[f32]) {
        let frames = block.len() / self.channels;
        for (ch, h) in self.history.iter_mut().enumerate() {
            if frames >= HISTORY {
                for (i, v) in h.iter_mut().enumerate() {
                    *v = block[(frames - HISTORY + i) * self.channels + ch];
                }
            } else {
                h.copy_within(frames.., 0);
                for i in 0..frames {
                    h[HISTORY - frames + i] = block[i * self.channels + ch];
                }
            }
        }
    }

    /// The (faded) continuation sample of channel `ch` at gap position `t`.
    #[inline]
    fn continued(&self, ch: usize, t: usize) -> f32 {
        if t >= MAX_GAP {
            0.0
        } else {
            self.continuation[ch][t] * fade_gain(t)
        }
    }
}

impl<P: Predictor> Concealer for PredictiveConcealer<P> {
    fn channels(&self) -> usize {
        self.channels
    }

    fn on_received(&mut self, block: &mut [f32]) {
        let frames = block.len() / self.channels;
        if self.in_gap {
            let n = frames.min(CROSSFADE);
            for i in 0..n {
                // Raised-cosine from prediction (w = 0) to real audio (w = 1).
                let w = 0.5 - 0.5 * (std::f32::consts::PI * (i as f32 + 0.5) / n as f32).cos();
                for ch in 0..self.channels {
                    let p = self.continued(ch, self.gap_pos + i);
                    let x = &mut block[i * self.channels + ch];
                    *x = w * *x + (1.0 - w) * p;
                }
            }
            self.in_gap = false;
        }
        self.last_block = frames;
        self.push_history(block);
    }

    fn conceal(&mut self, out: &mut [f32]) {
        let frames = out.len() / self.channels;
        if !self.in_gap {
            self.predictor
                .predict_all(&self.history, self.last_block, &mut self.continuation);
            self.in_gap = true;
            self.gap_pos = 0;
        }
        for i in 0..frames {
            for ch in 0..self.channels {
                out[i * self.channels + ch] = self.continued(ch, self.gap_pos + i);
            }
        }
        self.gap_pos = self.gap_pos.saturating_add(frames);
        // Keep the history continuous in time so the next gap's prediction
        // (and the pitch search) sees no jump.
        self.push_history(out);
    }

    fn reset(&mut self) {
        for h in &mut self.history {
            h.fill(0.0);
        }
        self.in_gap = false;
        self.gap_pos = 0;
        self.last_block = 0;
    }

    fn name(&self) -> &'static str {
        self.predictor.name()
    }
}
