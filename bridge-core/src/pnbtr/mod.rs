//! Packet-loss concealment methods behind [`crate::conceal::Concealer`]:
//! zero-fill, repeat-last, Burg AR (as JackTrip) and PNBTR (predictive neural
//! buffered transient recovery) on the CPU and, batched, on the GPU.
//!
//! Build one with [`make_concealer`]. The method and its evaluation are
//! described in `docs/plc.md`.

pub mod concealer;
pub mod core;
#[cfg(feature = "gpu")]
pub mod gpu;
pub mod lpc;
pub mod methods;

pub use concealer::{fade_gain, PredictiveConcealer, Predictor, CROSSFADE, FADE_START, MAX_GAP};
pub use methods::{BurgPredictor, PnbtrPredictor, RepeatPredictor, ZeroPredictor};

use crate::conceal::{ConcealMethod, Concealer};

/// Why a concealer could not be built.
#[derive(Debug, thiserror::Error)]
pub enum MakeConcealerError {
    /// The GPU path was asked for but there is no usable adapter (or the
    /// crate was built without the `gpu` feature). Callers fall back to
    /// [`ConcealMethod::Pnbtr`].
    #[error("GPU concealment unavailable: {0}")]
    GpuUnavailable(String),
    /// Zero channels or a sample rate of 0.
    #[error("invalid stream format: {channels} channels at {sample_rate} Hz")]
    BadFormat {
        /// Channels asked for.
        channels: usize,
        /// Rate asked for.
        sample_rate: u32,
    },
}

/// Builds the concealer for one stream. `sample_rate` is checked but the
/// methods are tuned for 48 kHz (they work at any rate; the pitch range and
/// gap lengths scale with it).
///
/// Not realtime-safe (allocates; the GPU variant also creates a device):
/// call it when a stream is set up, not on the audio thread.
pub fn make_concealer(
    method: ConcealMethod,
    channels: usize,
    sample_rate: u32,
) -> Result<Box<dyn Concealer>, MakeConcealerError> {
    if channels == 0 || sample_rate == 0 {
        return Err(MakeConcealerError::BadFormat {
            channels,
            sample_rate,
        });
    }
    Ok(match method {
        ConcealMethod::Zero => Box::new(PredictiveConcealer::new(channels, ZeroPredictor)),
        ConcealMethod::Repeat => Box::new(PredictiveConcealer::new(
            channels,
            RepeatPredictor::default(),
        )),
        ConcealMethod::Burg => Box::new(PredictiveConcealer::new(
            channels,
            BurgPredictor::new(BurgPredictor::DEFAULT_ORDER, BurgPredictor::DEFAULT_WINDOW),
        )),
        ConcealMethod::Pnbtr => Box::new(PredictiveConcealer::new(
            channels,
            PnbtrPredictor::new(core::PnbtrModel::builtin(), MAX_GAP),
        )),
        ConcealMethod::PnbtrGpu => make_gpu(channels)?,
    })
}

#[cfg(feature = "gpu")]
fn make_gpu(channels: usize) -> Result<Box<dyn Concealer>, MakeConcealerError> {
    let engine = gpu::GpuPnbtr::new(core::PnbtrModel::builtin(), channels, MAX_GAP)
        .map_err(|e| MakeConcealerError::GpuUnavailable(e.to_string()))?;
    Ok(Box::new(PredictiveConcealer::new(
        channels,
        gpu::GpuPredictor::new(engine),
    )))
}

#[cfg(not(feature = "gpu"))]
fn make_gpu(_channels: usize) -> Result<Box<dyn Concealer>, MakeConcealerError> {
    Err(MakeConcealerError::GpuUnavailable(
        "bridge-core built without the `gpu` feature".into(),
    ))
}

#[cfg(test)]
mod tests;
