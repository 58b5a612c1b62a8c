//! The concealer API: what fills a block that is missing at playout time.
//!
//! One concealer serves one stream (all of its channels). The playout stage
//! (jitter buffer) hands it every block it plays from real audio and asks it to
//! invent a block when none is available. Implementations (zero-fill, repeat,
//! Burg AR, PNBTR on CPU and GPU) live in [`crate::pnbtr`] and are chosen with
//! [`ConcealMethod`].
//!
//! Audio is interleaved `f32`, `channels` fixed at construction; a block's
//! length is always a multiple of `channels`.

/// Conceals missing audio for one stream.
///
/// Thread-safe: no (owned by one thread; `Send` so it can move to the worker).
/// Realtime-safe: implementations must not allocate, lock or block in
/// [`Concealer::on_received`] and [`Concealer::conceal`]; they allocate only
/// when constructed.
pub trait Concealer: Send {
    /// Channels per frame of the interleaved blocks this concealer handles.
    fn channels(&self) -> usize;

    /// A block of real (received or rebuilt) audio is about to be played.
    /// The concealer records it as history and, if the previous block(s) were
    /// concealed, cross-fades the start of `block` from its own continued
    /// prediction into the real audio (so the seam is inaudible): it may
    /// modify `block` in place.
    fn on_received(&mut self, block: &mut [f32]);

    /// A block is missing: write a prediction of it into `out` (interleaved,
    /// any multiple of `channels`). Consecutive calls continue the same gap;
    /// long gaps fade out gracefully towards silence.
    fn conceal(&mut self, out: &mut [f32]);

    /// Forget all history (stream restarted or changed format).
    fn reset(&mut self);

    /// Short stable name for stats and UIs (`zero`, `repeat`, `burg`, `pnbtr`, `pnbtr-gpu`).
    fn name(&self) -> &'static str;
}

/// Which concealment method a stream uses.
///
/// Thread-safe: yes (plain value). Realtime-safe: yes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ConcealMethod {
    /// Silence.
    Zero,
    /// Repeat the last block, fading.
    Repeat,
    /// Burg linear prediction (as JackTrip).
    Burg,
    /// PNBTR on the CPU.
    Pnbtr,
    /// PNBTR on the GPU (wgpu compute), batched across streams.
    PnbtrGpu,
}
