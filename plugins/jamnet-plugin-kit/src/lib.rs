//! Pieces shared by the three JAMNet plugins (Send, Receive, Transport).
//!
//! Everything that *thinks* about the network lives in `bridge-core`; this
//! crate only holds what every plugin shell needs around it: the persisted
//! session settings and their parsing, a supervisor that runs a worker thread
//! so that a failing or panicking worker never takes the host down, lock-free
//! meters the audio thread writes and the editor reads, and a few egui helpers.

pub mod meter;
pub mod settings;
pub mod ui;
pub mod worker;

pub use meter::{AtomicF32Cell, PeakMeter, RateCounter};
pub use settings::{Destination, SessionSettings, SettingsError};
pub use worker::{Supervisor, WorkerCtl, WorkerError, WorkerState, WorkerStatus};
