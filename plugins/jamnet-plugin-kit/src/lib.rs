//! Pieces shared by the three JAMNet plugins (Send, Receive, Transport).
//!
//! Everything that *thinks* about the network lives in `bridge-core`; this
//! crate only holds what every plugin shell needs around it: the persisted
//! session settings and their parsing, a supervisor that runs a worker thread
//! so that a failing or panicking worker never takes the host down, lock-free
//! meters the audio thread writes and the editor reads, and a few egui helpers.

pub mod clap_shim;
pub mod live;
pub mod meter;
pub mod settings;
pub mod ui;
pub mod worker;

pub use meter::{AtomicF32Cell, PeakMeter, RateCounter};
pub use settings::{Destination, SessionSettings, SettingsError};
pub use worker::{Supervisor, WorkerCtl, WorkerError, WorkerState, WorkerStatus};

/// Test hook, debug builds only: when `JAMNET_DEBUG_ALLOC_IN_PROCESS=1` is set
/// at activation, the plugin allocates inside `process()` on purpose. It is
/// the negative control that proves `assert_process_allocs` is armed (the
/// host harness expects the process to abort). Always false in release.
pub fn alloc_probe_requested() -> bool {
    cfg!(debug_assertions)
        && std::env::var_os("JAMNET_DEBUG_ALLOC_IN_PROCESS").is_some_and(|v| v == "1")
}

/// Allocate on purpose (see [`alloc_probe_requested`]).
#[inline(never)]
pub fn alloc_probe() {
    std::hint::black_box(Box::new(std::hint::black_box(0u64)));
}
