//! A tiny concealer of our own, until PNBTR plugs in: repeat the last real
//! block with a fade towards silence, and cross-fade back into real audio.

use crate::conceal::Concealer;

/// Repeats the last real block, each repeat quieter (×0.5 per block, a linear
/// ramp inside the block so there is no step), and cross-fades from that
/// continuation into the next real block over up to 64 frames.
///
/// Thread-safe: no (`Send`). Realtime-safe: yes after construction (its
/// history buffer is sized by [`RepeatFadeConcealer::new`]; blocks longer
/// than `max_block` samples are handled with only the most recent history).
pub struct RepeatFadeConcealer {
    channels: usize,
    last: Box<[f32]>,
    last_len: usize,
    gain: f32,
    concealing: bool,
}

const FADE_PER_BLOCK: f32 = 0.5;
const CROSSFADE_FRAMES: usize = 64;

impl RepeatFadeConcealer {
    /// For `channels` interleaved channels and blocks of at most `max_block` samples.
    pub fn new(channels: usize, max_block: usize) -> Self {
        RepeatFadeConcealer {
            channels: channels.max(1),
            last: vec![0.0; max_block.max(1)].into_boxed_slice(),
            last_len: 0,
            gain: 1.0,
            concealing: false,
        }
    }

    /// The continuation sample `i` of the block (the last real block, repeated).
    fn continuation(&self, i: usize) -> f32 {
        if self.last_len == 0 {
            0.0
        } else {
            self.last[i % self.last_len]
        }
    }
}

impl Concealer for RepeatFadeConcealer {
    fn channels(&self) -> usize {
        self.channels
    }

    fn on_received(&mut self, block: &mut [f32]) {
        if self.concealing {
            let frames = block.len() / self.channels;
            let fade = CROSSFADE_FRAMES.min(frames);
            for f in 0..fade {
                let w = (f as f32 + 0.5) / fade as f32;
                for c in 0..self.channels {
                    let i = f * self.channels + c;
                    block[i] = w * block[i] + (1.0 - w) * self.gain * self.continuation(i);
                }
            }
            self.concealing = false;
        }
        self.gain = 1.0;
        let n = block.len().min(self.last.len());
        // Keep whole frames of the most recent history.
        let n = n - n % self.channels;
        self.last[..n].copy_from_slice(&block[block.len() - n..]);
        self.last_len = n;
    }

    fn conceal(&mut self, out: &mut [f32]) {
        let frames = out.len() / self.channels;
        let start = self.gain;
        let end = self.gain * FADE_PER_BLOCK;
        for f in 0..frames {
            let g = start + (end - start) * (f as f32 / frames.max(1) as f32);
            for c in 0..self.channels {
                let i = f * self.channels + c;
                out[i] = g * self.continuation(i);
            }
        }
        self.gain = end;
        self.concealing = true;
    }

    fn reset(&mut self) {
        self.last_len = 0;
        self.gain = 1.0;
        self.concealing = false;
    }

    fn name(&self) -> &'static str {
        "repeat"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repeats_fading_and_crossfades_back() {
        let mut c = RepeatFadeConcealer::new(2, 256);
        let mut real = vec![0.5f32; 128];
        c.on_received(&mut real);
        let mut out = vec![0.0f32; 128];
        c.conceal(&mut out);
        assert!((out[0] - 0.5).abs() < 1e-6);
        assert!(out[127] < 0.3 && out[127] > 0.2);
        c.conceal(&mut out);
        assert!(out[127] < 0.15);
        // Back to real audio at 1.0: the seam starts near the faded continuation, ends at 1.0.
        let mut back = vec![1.0f32; 128];
        c.on_received(&mut back);
        assert!(back[0] < 0.2, "{}", back[0]);
        assert!(back[127] > 0.99);
        assert!(back.windows(2).all(|w| w[1] >= w[0] - 1e-6));
    }
}
