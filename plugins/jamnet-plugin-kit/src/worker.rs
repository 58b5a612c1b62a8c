//! Runs a plugin's worker thread so that nothing it does can take the host
//! down: the body runs under `catch_unwind`, errors and panics become a
//! [`WorkerStatus`] the editor shows, and stopping never waits long.
//!
//! The audio thread never touches the supervisor; it is started from
//! `activate` and stopped from `deactivate` (the host's main thread).

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU8, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use crate::settings::SettingsError;

/// How long [`Supervisor::stop`] waits for the worker to notice the stop flag
/// before it detaches the thread (it then exits on its own shortly after).
const STOP_WAIT: Duration = Duration::from_millis(500);

/// What a worker can fail with.
///
/// Thread-safe: yes (plain value). Realtime-safe: no.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WorkerError {
    /// The plugin's settings do not parse.
    #[error("settings: {0}")]
    Settings(#[from] SettingsError),
    /// A socket or other OS call failed.
    #[error("network: {0}")]
    Io(String),
    /// The bridge-core engine this worker needs is not built into this version.
    #[error("engine not available: {0}")]
    EngineUnavailable(&'static str),
}

impl From<std::io::Error> for WorkerError {
    fn from(e: std::io::Error) -> Self {
        WorkerError::Io(e.to_string())
    }
}

/// Life-cycle state of a worker, as shown in the editor.
///
/// Thread-safe: yes. Realtime-safe: yes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum WorkerState {
    /// Not started (plugin not activated) or stopped.
    Stopped = 0,
    /// Thread spawned, setting up.
    Starting = 1,
    /// Working.
    Running = 2,
    /// Returned an error; the plugin keeps processing without it.
    Failed = 3,
    /// Panicked; the panic was caught, the plugin keeps processing without it.
    Panicked = 4,
    /// The engine it needs is not available in this build.
    Unavailable = 5,
}

impl WorkerState {
    fn from_u8(v: u8) -> Self {
        match v {
            1 => Self::Starting,
            2 => Self::Running,
            3 => Self::Failed,
            4 => Self::Panicked,
            5 => Self::Unavailable,
            _ => Self::Stopped,
        }
    }

    /// Short label for UIs.
    pub fn label(self) -> &'static str {
        match self {
            Self::Stopped => "stopped",
            Self::Starting => "starting",
            Self::Running => "running",
            Self::Failed => "failed",
            Self::Panicked => "crashed (caught)",
            Self::Unavailable => "engine not available",
        }
    }
}

/// A worker's state and last message, shared with the editor.
///
/// Thread-safe: yes. Realtime-safe: [`WorkerStatus::state`] yes (one atomic
/// load); the message is behind a mutex and only for the worker and editor.
#[derive(Debug, Default)]
pub struct WorkerStatus {
    state: AtomicU8,
    starts: AtomicU32,
    /// Which start the state belongs to: a detached older worker that
    /// finishes late must not overwrite a newer worker's state.
    generation: AtomicU32,
    message: Mutex<String>,
}

impl WorkerStatus {
    /// Current state.
    pub fn state(&self) -> WorkerState {
        WorkerState::from_u8(self.state.load(Ordering::Acquire))
    }

    /// Last error or informational message (empty if none).
    pub fn message(&self) -> String {
        self.message.lock().clone()
    }

    /// How many times a worker was started for this instance.
    pub fn starts(&self) -> u32 {
        self.starts.load(Ordering::Relaxed)
    }

    /// Report a state directly (for workers not run by a [`Supervisor`],
    /// e.g. bridge-core's live worker started from `activate`).
    pub fn report(&self, state: WorkerState, message: impl Into<String>) {
        self.generation.fetch_add(1, Ordering::AcqRel);
        self.set(state, Some(message.into()));
    }

    fn set_if_current(&self, generation: u32, state: WorkerState, message: Option<String>) {
        if self.generation.load(Ordering::Acquire) == generation {
            self.set(state, message);
        }
    }

    fn set(&self, state: WorkerState, message: Option<String>) {
        if let Some(m) = message {
            *self.message.lock() = m;
        }
        self.state.store(state as u8, Ordering::Release);
    }
}

/// What a worker body gets: its stop flag and its status.
///
/// Thread-safe: yes. Realtime-safe: yes (atomics).
pub struct WorkerCtl {
    stop: Arc<AtomicBool>,
    status: Arc<WorkerStatus>,
    generation: u32,
}

impl WorkerCtl {
    /// True once the plugin wants the worker gone; poll it at least every
    /// few tens of milliseconds.
    pub fn should_stop(&self) -> bool {
        self.stop.load(Ordering::Acquire)
    }

    /// Mark the worker as running, with an informational message.
    pub fn running(&self, message: impl Into<String>) {
        self.status
            .set_if_current(self.generation, WorkerState::Running, Some(message.into()));
    }

    /// Replace the informational message without changing the state.
    pub fn note(&self, message: impl Into<String>) {
        if self.status.generation.load(Ordering::Acquire) == self.generation {
            *self.status.message.lock() = message.into();
        }
    }
}

/// Owns at most one worker thread of a plugin instance.
///
/// Thread-safe: no (the plugin's main-thread calls own it). Realtime-safe: no
/// (spawns and joins threads) — never call it from `process()`.
pub struct Supervisor {
    status: Arc<WorkerStatus>,
    stop: Arc<AtomicBool>,
    done: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Supervisor {
    /// A supervisor reporting into `status`.
    pub fn new(status: Arc<WorkerStatus>) -> Self {
        Self {
            status,
            stop: Arc::new(AtomicBool::new(false)),
            done: Arc::new(AtomicBool::new(true)),
            thread: None,
        }
    }

    /// The shared status.
    pub fn status(&self) -> &Arc<WorkerStatus> {
        &self.status
    }

    /// True while a worker thread exists and has not finished.
    pub fn is_alive(&self) -> bool {
        self.thread.is_some() && !self.done.load(Ordering::Acquire)
    }

    /// Stop any running worker, then start `body` on a new thread named `name`.
    /// `body` returning `Err` or panicking leaves the state `Failed`/`Panicked`
    /// with the reason as message; returning `Ok` leaves it `Stopped`.
    pub fn start<F>(&mut self, name: &str, body: F)
    where
        F: FnOnce(&WorkerCtl) -> Result<(), WorkerError> + Send + 'static,
    {
        self.stop();
        let stop = Arc::new(AtomicBool::new(false));
        let done = Arc::new(AtomicBool::new(false));
        self.stop = stop.clone();
        self.done = done.clone();
        self.status.starts.fetch_add(1, Ordering::Relaxed);
        let generation = self.status.generation.fetch_add(1, Ordering::AcqRel) + 1;
        self.status.set(WorkerState::Starting, Some(String::new()));
        let status = self.status.clone();
        let spawned = std::thread::Builder::new()
            .name(name.to_owned())
            .spawn(move || {
                let ctl = WorkerCtl {
                    stop,
                    status: status.clone(),
                    generation,
                };
                match catch_unwind(AssertUnwindSafe(|| body(&ctl))) {
                    Ok(Ok(())) => status.set_if_current(generation, WorkerState::Stopped, None),
                    Ok(Err(WorkerError::EngineUnavailable(what))) => status.set_if_current(
                        generation,
                        WorkerState::Unavailable,
                        Some(format!("engine not available: {what}")),
                    ),
                    Ok(Err(e)) => {
                        status.set_if_current(generation, WorkerState::Failed, Some(e.to_string()))
                    }
                    Err(payload) => {
                        let what = payload
                            .downcast_ref::<&str>()
                            .map(|s| (*s).to_owned())
                            .or_else(|| payload.downcast_ref::<String>().cloned())
                            .unwrap_or_else(|| "unknown panic".to_owned());
                        status.set_if_current(
                            generation,
                            WorkerState::Panicked,
                            Some(format!("worker panicked: {what}")),
                        );
                    }
                }
                done.store(true, Ordering::Release);
            });
        match spawned {
            Ok(h) => self.thread = Some(h),
            Err(e) => {
                self.done.store(true, Ordering::Release);
                self.status.set(
                    WorkerState::Failed,
                    Some(format!("could not start worker thread: {e}")),
                );
            }
        }
    }

    /// Ask the worker to stop and wait for it up to half a second; a worker
    /// that does not stop in time is detached (it still exits on its own).
    pub fn stop(&mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(h) = self.thread.take() {
            let deadline = Instant::now() + STOP_WAIT;
            while !self.done.load(Ordering::Acquire) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(2));
            }
            if self.done.load(Ordering::Acquire) {
                let _ = h.join();
            }
            if self.status.state() == WorkerState::Running
                || self.status.state() == WorkerState::Starting
            {
                self.status.set(WorkerState::Stopped, None);
            }
        }
    }
}

impl Drop for Supervisor {
    fn drop(&mut self) {
        self.stop();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wait_for(status: &WorkerStatus, want: WorkerState) {
        let t0 = Instant::now();
        while status.state() != want {
            assert!(
                t0.elapsed() < Duration::from_secs(5),
                "stuck in {:?}",
                status.state()
            );
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    #[test]
    fn panic_is_caught_and_reported() {
        let status = Arc::new(WorkerStatus::default());
        let mut sup = Supervisor::new(status.clone());
        sup.start("t-panic", |_| panic!("boom at {}", 42));
        wait_for(&status, WorkerState::Panicked);
        assert!(
            status.message().contains("boom at 42"),
            "{}",
            status.message()
        );
        // A fresh start after a crash works.
        sup.start("t-ok", |ctl| {
            ctl.running("up");
            while !ctl.should_stop() {
                std::thread::sleep(Duration::from_millis(1));
            }
            Ok(())
        });
        wait_for(&status, WorkerState::Running);
        assert_eq!(status.message(), "up");
        assert_eq!(status.starts(), 2);
        sup.stop();
        assert_eq!(status.state(), WorkerState::Stopped);
        assert!(!sup.is_alive());
    }

    #[test]
    fn errors_are_reported() {
        let status = Arc::new(WorkerStatus::default());
        let mut sup = Supervisor::new(status.clone());
        sup.start("t-err", |_| Err(WorkerError::Io("no route".into())));
        wait_for(&status, WorkerState::Failed);
        assert_eq!(status.message(), "network: no route");
        sup.start("t-un", |_| {
            Err(WorkerError::EngineUnavailable("live audio"))
        });
        wait_for(&status, WorkerState::Unavailable);
    }

    #[test]
    fn a_stuck_worker_does_not_block_stop() {
        let status = Arc::new(WorkerStatus::default());
        let mut sup = Supervisor::new(status.clone());
        sup.start("t-stuck", |_| {
            std::thread::sleep(Duration::from_secs(2));
            Ok(())
        });
        let t0 = Instant::now();
        sup.stop();
        assert!(t0.elapsed() < Duration::from_millis(1500));
    }
}
