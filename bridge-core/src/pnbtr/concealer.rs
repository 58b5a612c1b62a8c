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

/// Continues each channel's history through a gap, a piece at a time.
///
/// At a gap start the concealer calls [`Predictor::start_all`] with every
/// channel's history (exactly [`HISTORY`] samples, newest last; zeros before
/// the stream started), then [`Predictor::extend`] per channel with
/// consecutive ranges of gap positions (`0..a`, `a..b`, …), only as far as
/// the packets played so far need. The expensive analysis belongs in
/// `start_all`; `extend` should cost a few operations per sample, so no
/// single packet pays for the whole gap.
///
/// Thread-safe: no. Realtime-safe: implementations must be, after
/// [`Predictor::prepare`].
pub trait Predictor: Send {
    /// Sizes per-channel state for `channels` channels. Called once when
    /// the concealer is built (may allocate).
    fn prepare(&mut self, channels: usize) {
        let _ = channels;
    }
    /// A gap starts on channel `channel` with this `history`.
    fn start(&mut self, channel: usize, history: &[f32], last_block: usize);
    /// A gap starts on every channel at once (the GPU predictor batches them
    /// in one dispatch); by default one channel at a time.
    fn start_all(&mut self, histories: &[Vec<f32>], last_block: usize) {
        for (ch, h) in histories.iter().enumerate() {
            self.start(ch, h, last_block);
        }
    }
    /// Writes channel `channel`'s continuation at gap positions
    /// `from..from + out.len()`. After a start, ranges come consecutively
    /// from 0 and never pass [`MAX_GAP`]. `history` is the one given at the
    /// start.
    fn extend(&mut self, channel: usize, history: &[f32], from: usize, out: &mut [f32]);
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

/// A [`Concealer`] built from a [`Predictor`]: analyses each channel's real
/// history once, when a gap starts, then extends the continuation (up to
/// [`MAX_GAP`] samples) only as far as each concealed packet and the
/// cross-fade need, so the cost is spread over the gap's packets.
///
/// Thread-safe: no (`Send`). Realtime-safe: yes after construction (no
/// allocation, locking or I/O in `on_received`/`conceal`).
pub struct PredictiveConcealer<P: Predictor> {
    channels: usize,
    predictor: P,
    /// Per channel, `HISTORY` samples, newest last.
    history: Vec<Vec<f32>>,
    /// Per channel, the history at the current gap's start (the predictor
    /// reads it; `history` itself moves on with the concealed audio).
    gap_history: Vec<Vec<f32>>,
    /// Per channel, the current gap's continuation (`MAX_GAP`), valid for
    /// gap positions below `ready`.
    continuation: Vec<Vec<f32>>,
    ready: usize,
    in_gap: bool,
    gap_pos: usize,
    last_block: usize,
}

impl<P: Predictor> PredictiveConcealer<P> {
    /// A concealer for `channels` interleaved channels (at least 1).
    pub fn new(channels: usize, mut predictor: P) -> Self {
        let channels = channels.max(1);
        predictor.prepare(channels);
        Self {
            channels,
            predictor,
            history: vec![vec![0.0; HISTORY]; channels],
            gap_history: vec![vec![0.0; HISTORY]; channels],
            continuation: vec![vec![0.0; MAX_GAP]; channels],
            ready: 0,
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

    /// Makes the continuation valid for gap positions below `upto`.
    fn ensure(&mut self, upto: usize) {
        let upto = upto.min(MAX_GAP);
        if upto <= self.ready {
            return;
        }
        for ch in 0..self.channels {
            self.predictor.extend(
                ch,
                &self.gap_history[ch],
                self.ready,
                &mut self.continuation[ch][self.ready..upto],
            );
        }
        self.ready = upto;
    }

    /// The (faded) continuation sample of channel `ch` at gap position `t`
    /// (`ensure` must have covered `t`).
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
            self.ensure(self.gap_pos.saturating_add(n));
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
            for (g, h) in self.gap_history.iter_mut().zip(&self.history) {
                g.copy_from_slice(h);
            }
            self.predictor.start_all(&self.gap_history, self.last_block);
            self.in_gap = true;
            self.gap_pos = 0;
            self.ready = 0;
        }
        self.ensure(self.gap_pos.saturating_add(frames));
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
        self.ready = 0;
        self.last_block = 0;
    }

    fn name(&self) -> &'static str {
        self.predictor.name()
    }
}
