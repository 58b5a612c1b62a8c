//! A plugin's live session: bridge-core's [`LivePeer`] core on a [`Worker`]
//! thread, linked to the plugin's audio thread by an [`AudioHandle`], and a
//! small supervisor thread that applies session-settings changes live.
//! Started from `activate`, stopped from `deactivate` (never from
//! `process()`).
//!
//! ## Live settings changes
//! The supervisor polls the plugin's settings (and the editor's
//! `settings_gen` counter) every [`POLL`]; once they have been still for
//! [`DEBOUNCE`] it stops the worker, takes its [`WorkerLink`] back
//! ([`Worker::join_keeping_link`]) and starts a new worker on the new
//! settings with the same link. The audio thread notices nothing: it keeps
//! the same [`AudioHandle`], the same rings and sample counters. While no
//! worker runs (the swap takes one worker wake-up, at most ~50 ms, or for as
//! long as the settings are invalid) Send's pushes overflow and Receive's
//! pulls underrun, both counted in [`LinkStats`]; the audio Send queued in
//! that time is dropped before the new worker starts (stale).

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bridge_core::conceal::ConcealMethod;
use bridge_core::handle::{link, AudioHandle, LinkConfig, LinkStats, WorkerLink};
use bridge_core::net::NetConfig;
use bridge_core::protocol::audio::SampleFormat;
use bridge_core::protocol::frame::SessionKey;
use bridge_core::worker::peer::{
    AudioSource, AudioTxConfig, LivePeer, PeerConfig, PeerReport, SharedReport, SharedStreamFilter,
};
use bridge_core::worker::{MonotonicClock, Worker, WorkerConfig, WORKER_REALTIME_PRIORITY};

use crate::settings::{Destination, SessionSettings};
use crate::worker::WorkerError;

/// How often the supervisor looks at the settings.
pub const POLL: Duration = Duration::from_millis(25);

/// How long settings must stay unchanged before they are applied (a burst
/// of edits restarts the worker once).
pub const DEBOUNCE: Duration = Duration::from_millis(300);

/// Frames per network block. 64 frames = 1.33 ms at 48 kHz: the sender's
/// packetisation delay stays near one host block.
pub const BLOCK_FRAMES: usize = 64;

/// Network blocks kept queued for the audio thread: one host buffer plus one
/// block of margin.
pub fn output_target_blocks(max_host_block: usize) -> usize {
    max_host_block.div_ceil(BLOCK_FRAMES).max(1) + 1
}

/// What the plugin sends, if anything.
///
/// Thread-safe: yes. Realtime-safe: no (holds an `Arc`; built outside
/// `process()`).
#[derive(Debug, Clone)]
pub struct SendSpec {
    /// Wire format.
    pub format: SampleFormat,
    /// JELLIE (mono only).
    pub jellie: bool,
    /// Copies per MIDI event.
    pub midi_burst: u8,
    /// The stream's name in our heartbeats (receivers list it), read at
    /// every worker start; the editor's Apply restarts the worker.
    pub stream_name: Arc<parking_lot::RwLock<String>>,
}

/// How the plugin plays what it receives.
///
/// Thread-safe: yes. Realtime-safe: no (holds an `Arc`).
#[derive(Debug, Clone)]
pub struct ReceiveSpec {
    /// Jitter buffer target delay, ms; 0 = adaptive (follows measured jitter).
    pub playout_delay_ms: f64,
    /// Concealment of missing audio.
    pub conceal: ConcealMethod,
    /// Which streams are played (`None`: all, mixed); the editor may change
    /// it while the worker runs.
    pub filter: Option<SharedStreamFilter>,
    /// The playout delay, ns (0 = adaptive), changeable while the worker
    /// runs (the plugin stores its parameter here from `process()`); when
    /// given it overrides `playout_delay_ms`.
    pub playout_live: Option<Arc<std::sync::atomic::AtomicU64>>,
    /// Low-latency playout ([`PeerConfig::low_latency`]), changeable while
    /// the worker runs (`None`: off).
    pub low_latency_live: Option<Arc<std::sync::atomic::AtomicBool>>,
    /// Whether received audio is played at all (`false`: only counted, see
    /// [`PeerConfig::play_received`]).
    pub play: bool,
}

impl Default for ReceiveSpec {
    fn default() -> Self {
        Self {
            playout_delay_ms: 0.0,
            conceal: ConcealMethod::Pnbtr,
            filter: None,
            playout_live: None,
            low_latency_live: None,
            play: true,
        }
    }
}

/// One running live worker (the supervisor owns it).
///
/// Thread-safe: no (`Send`). Realtime-safe: no (dropping it joins the
/// worker thread).
struct LiveLink {
    /// `None` only after [`LiveLink::stop`] took it.
    worker: Option<Worker<LivePeer>>,
    /// Local unicast address, for the editor.
    pub local: std::net::SocketAddr,
    /// The worker's report (peers and their streams, per-stream counters),
    /// refreshed ten times a second; for the editor thread only.
    pub report: SharedReport,
    /// With `JAMNET_DEBUG_REPORT`: tells the report writer to stop.
    debug_writer: Option<Arc<AtomicBool>>,
}

impl LiveLink {
    /// Stop the worker (it says goodbye) and take its link back.
    fn stop(mut self) -> Option<WorkerLink> {
        self.worker.take().and_then(|w| w.join_keeping_link().1)
    }

    /// Whether the worker thread ended on its own (an error or a caught panic).
    fn finished(&self) -> bool {
        self.worker.as_ref().is_none_or(|w| w.is_finished())
    }
}

/// Where [`LiveLink`]'s debug report for `report` goes in `dir`.
fn debug_report_path(dir: &std::ffi::OsStr, report: &PeerReport, port: u16) -> std::path::PathBuf {
    let name = format!(
        "jamnet-{}-{}-{}.json",
        report.name.replace(['/', ' '], "_"),
        std::process::id(),
        port
    );
    std::path::Path::new(dir).join(name)
}

/// Write `report` to `path` (debug aid: errors are ignored).
fn write_debug_report(path: &std::path::Path, report: &PeerReport) {
    if let Ok(json) = serde_json::to_string_pretty(report) {
        let _ = std::fs::write(path, json);
    }
}

impl Drop for LiveLink {
    /// With `JAMNET_DEBUG_REPORT=DIR` in the host's environment, each live
    /// worker keeps its report (peers, per-stream counters: holds, skips,
    /// late, concealed, drift, resampling) in
    /// `DIR/jamnet-<thread>-<pid>-<port>.json`, rewritten twice a second and
    /// a last time when the worker stops (deactivation, unload, or a
    /// settings change): a way to see inside a plugin in a host that shows
    /// no editor and may never unload it (pedalboard, DawDreamer, CI).
    fn drop(&mut self) {
        // Stop the worker first so the last report is final.
        drop(self.worker.take());
        let Some(stop) = self.debug_writer.take() else {
            return;
        };
        stop.store(true, Ordering::Relaxed);
        if let Some(dir) = std::env::var_os("JAMNET_DEBUG_REPORT") {
            let report = self.report.lock().clone();
            write_debug_report(
                &debug_report_path(&dir, &report, self.local.port()),
                &report,
            );
        }
    }
}

/// The fixed part of a plugin's live session (what `activate` knows).
///
/// Thread-safe: yes (`Send`). Realtime-safe: no.
#[derive(Debug, Clone)]
pub struct LiveConfig {
    /// Channels of the audio link.
    pub channels: usize,
    /// Host sample rate, Hz.
    pub sample_rate: u32,
    /// The host's largest buffer; sizes the output queue so a whole host
    /// buffer is ready when `process()` pulls it.
    pub max_host_block: usize,
    /// What the plugin sends, if anything.
    pub send: Option<SendSpec>,
    /// Jitter buffer, concealment and stream filter for what it receives
    /// (received audio of the streams `recv.filter` lets through is mixed
    /// into the handle's output; received MIDI goes to the handle too).
    pub recv: ReceiveSpec,
    /// Worker thread name.
    pub thread_name: String,
}

/// What the worker currently does, as handed to [`LiveHooks::publish`].
///
/// Thread-safe: yes (borrowed plain values). Realtime-safe: no.
#[derive(Debug)]
pub enum LiveEvent<'a> {
    /// A worker runs on `settings`.
    Running {
        /// The settings it runs on.
        settings: &'a SessionSettings,
        /// Its local unicast address.
        local: std::net::SocketAddr,
        /// Its report (replace the editor's with it).
        report: &'a SharedReport,
    },
    /// No worker runs: the settings are invalid, a socket could not be
    /// opened, or the worker failed. The audio thread goes on (silence /
    /// dropped input, counted); a settings change retries.
    Failed(&'a WorkerError),
}

/// How the supervisor reads the plugin's settings and tells the plugin what
/// happened. Every closure runs on the supervisor thread (and, for the first
/// start, on the thread calling [`start`]); never on the audio thread.
///
/// Thread-safe: no (`Send`, moved to the supervisor). Realtime-safe: no.
pub struct LiveHooks {
    /// The persisted settings as they are now.
    pub settings: Box<dyn Fn() -> SessionSettings + Send>,
    /// The editor's settings generation (bumped on every Apply): a bump
    /// re-applies the settings even if they look unchanged (a retry).
    pub settings_gen: Box<dyn Fn() -> u32 + Send>,
    /// Called after every start, restart or failure (update the editor's
    /// status, report and address here).
    pub publish: Box<dyn Fn(LiveEvent<'_>) + Send>,
}

/// A plugin instance's live session: the supervisor thread and, through it,
/// the worker. Dropping it (in `deactivate`) stops both; that waits for the
/// worker's current wake-up (at most ~50 ms).
///
/// Thread-safe: no (`Send`; owned by the plugin's main-thread calls).
/// Realtime-safe: no (dropping it joins threads): never drop it in
/// `process()`.
pub struct LiveSession {
    stop: Arc<AtomicBool>,
    restarts: Arc<AtomicU32>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl LiveSession {
    /// How many times a settings change was applied (each one a worker
    /// stop/start or a failure report).
    pub fn restarts(&self) -> u32 {
        self.restarts.load(Ordering::Acquire)
    }
}

impl Drop for LiveSession {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(t) = self.thread.take() {
            t.thread().unpark();
            let _ = t.join();
        }
    }
}

/// Start a live session for a plugin instance: builds the audio link (the
/// one allocation of rings, here), starts a worker on the current settings
/// (a failure is published, not returned: the plugin keeps processing and a
/// settings change retries), and the supervisor that applies later changes.
/// Errors only if the link cannot be built (a bad channel count) or the
/// supervisor thread cannot start.
pub fn start(
    config: LiveConfig,
    hooks: LiveHooks,
) -> Result<(AudioHandle, Arc<LinkStats>, LiveSession), WorkerError> {
    let (handle, worker_link) = link(LinkConfig {
        channels: config.channels,
        block_frames: BLOCK_FRAMES,
        sample_rate: config.sample_rate,
        ring_blocks: (2 * output_target_blocks(config.max_host_block) + 2).max(64),
        output_target_blocks: output_target_blocks(config.max_host_block),
        ..LinkConfig::default()
    })
    .map_err(|e| WorkerError::Io(e.to_string()))?;
    let stats = handle.stats().clone();
    let mut sup = SupervisorState {
        config,
        stats: stats.clone(),
        current: None,
        spare: Some(worker_link),
        applied: None,
    };
    let settings = (hooks.settings)();
    let gen = (hooks.settings_gen)();
    sup.apply(&settings, &hooks);
    let stop = Arc::new(AtomicBool::new(false));
    let restarts = Arc::new(AtomicU32::new(0));
    let thread = std::thread::Builder::new()
        .name(format!("{}-settings", sup.config.thread_name))
        .spawn({
            let (stop, restarts) = (stop.clone(), restarts.clone());
            move || sup.run(hooks, settings, gen, &stop, &restarts)
        })?;
    Ok((
        handle,
        stats,
        LiveSession {
            stop,
            restarts,
            thread: Some(thread),
        },
    ))
}

/// The supervisor thread's state.
struct SupervisorState {
    config: LiveConfig,
    stats: Arc<LinkStats>,
    /// The running worker, if any.
    current: Option<LiveLink>,
    /// The link while no worker holds it.
    spare: Option<WorkerLink>,
    /// The settings the running worker was started with.
    applied: Option<SessionSettings>,
}

impl SupervisorState {
    fn run(
        mut self,
        hooks: LiveHooks,
        mut seen: SessionSettings,
        mut seen_gen: u32,
        stop: &AtomicBool,
        restarts: &AtomicU32,
    ) {
        let mut changed_at: Option<Instant> = None;
        let mut forced = false;
        while !stop.load(Ordering::Acquire) {
            std::thread::park_timeout(POLL);
            if stop.load(Ordering::Acquire) {
                break;
            }
            // A worker that ended on its own: report it, keep the link.
            if self.current.as_ref().is_some_and(LiveLink::finished) {
                let error = self
                    .stats
                    .error()
                    .unwrap_or_else(|| "worker stopped".into());
                self.spare = self.current.take().and_then(LiveLink::stop);
                self.applied = None;
                (hooks.publish)(LiveEvent::Failed(&WorkerError::Io(error)));
            }
            let gen = (hooks.settings_gen)();
            let settings = (hooks.settings)();
            if gen != seen_gen || settings != seen {
                forced |= gen != seen_gen;
                seen_gen = gen;
                seen = settings;
                changed_at = Some(Instant::now());
            }
            if changed_at.is_some_and(|t| t.elapsed() >= DEBOUNCE) {
                changed_at = None;
                // Unchanged settings and a healthy worker: nothing to do
                // unless the user asked (Apply) for a retry.
                let unchanged = self.applied.as_ref() == Some(&seen) && self.current.is_some();
                if !unchanged || forced {
                    self.apply(&seen, &hooks);
                    restarts.fetch_add(1, Ordering::AcqRel);
                }
                forced = false;
            }
        }
        // Stop the worker (joins it) before the thread ends.
        drop(self.current.take());
    }

    /// Stop the current worker (if any) and start one on `settings`.
    fn apply(&mut self, settings: &SessionSettings, hooks: &LiveHooks) {
        if let Some(old) = self.current.take() {
            self.spare = old.stop();
        }
        self.applied = None;
        let Some(link) = self.spare.as_mut() else {
            let e = WorkerError::Io("the audio link was lost; re-activate the plugin".into());
            (hooks.publish)(LiveEvent::Failed(&e));
            return;
        };
        // What the plugin pushed while no worker ran is stale.
        link.discard_input_blocks();
        match spawn_worker(settings, &self.config, &mut self.spare, self.stats.clone()) {
            Ok(live) => {
                (hooks.publish)(LiveEvent::Running {
                    settings,
                    local: live.local,
                    report: &live.report,
                });
                self.applied = Some(settings.clone());
                self.current = Some(live);
            }
            Err(e) => (hooks.publish)(LiveEvent::Failed(&e)),
        }
    }
}

/// Start a worker on `settings` serving the link in `worker_link` (taken
/// on success; left there on failure, for the next try).
fn spawn_worker(
    settings: &SessionSettings,
    config: &LiveConfig,
    worker_link: &mut Option<WorkerLink>,
    stats: Arc<LinkStats>,
) -> Result<LiveLink, WorkerError> {
    let destination = settings.destination()?;
    let key = settings.key_bytes()?.map(SessionKey);
    let (channels, sample_rate, send) = (config.channels, config.sample_rate, config.send.as_ref());
    let recv = config.recv.clone();
    let (group, unicast_targets) = match &destination {
        Destination::Multicast(std::net::SocketAddr::V4(g)) => (Some(*g), Vec::new()),
        Destination::Multicast(a) => {
            return Err(WorkerError::Io(format!(
                "IPv6 multicast {a} is not supported"
            )));
        }
        Destination::Unicast(v) => (None, v.clone()),
    };
    // A unicast session listens on the port the peers send to.
    let unicast_port = match &destination {
        Destination::Unicast(_) if send.is_none() => destination.port(),
        _ => 0,
    };
    let net = NetConfig {
        group,
        unicast_port,
        ..NetConfig::default()
    };
    let audio_tx = send.map(|s| {
        (
            AudioTxConfig {
                stream_id: 1,
                channels: channels as u8,
                sample_rate,
                block_frames: BLOCK_FRAMES as u16,
                format: s.format,
                jellie: s.jellie && channels == 1,
            },
            AudioSource::Link,
        )
    });
    let seed = uuid::Uuid::new_v4().as_u128() as u64;
    let peer = PeerConfig {
        session: settings.session_uuid(),
        source: 0,
        name: settings.peer_name.clone(),
        app: concat!("jamnet-plugin/", env!("CARGO_PKG_VERSION")).into(),
        use_group: group.is_some(),
        unicast_targets,
        key,
        audio_tx,
        midi_burst: send.map_or(3, |s| s.midi_burst.clamp(1, 8)),
        stream_name: send.map_or_else(String::new, |s| s.stream_name.read().clone()),
        playout_delay_ns: match &recv.playout_live {
            Some(live) => live.load(Ordering::Relaxed),
            None => (recv.playout_delay_ms.max(0.0) * 1e6) as u64,
        },
        conceal: recv.conceal,
        play_filter: recv.filter,
        play_received: recv.play,
        playout_delay_live: recv.playout_live,
        low_latency: recv
            .low_latency_live
            .as_ref()
            .is_some_and(|l| l.load(Ordering::Relaxed)),
        low_latency_live: recv.low_latency_live,
        // The report is rebuilt ten times a second for the editor: keep it
        // small over hours (counters stay exact; the report's latency
        // percentiles cover the first 4096 blocks only; the editor shows the
        // live jitter and target delay instead).
        keep_latency_samples: 4_096,
        keep_midi_log: 0,
        // Random per worker: the source id is drawn from it (a restarted
        // worker is a new peer to the others; the old one said goodbye).
        seed,
        ..PeerConfig::default()
    };
    let (core, report) = LivePeer::new(peer);
    let worker = Worker::try_spawn(
        WorkerConfig {
            net,
            thread_name: config.thread_name.clone(),
            realtime_priority: Some(WORKER_REALTIME_PRIORITY),
            ..WorkerConfig::default()
        },
        Arc::new(MonotonicClock),
        core,
        worker_link.take(),
        stats,
    )
    .map_err(|e| {
        *worker_link = e.link;
        WorkerError::Io(e.error.to_string())
    })?;
    let local = worker.local_addr();
    Ok(LiveLink {
        worker: Some(worker),
        debug_writer: std::env::var_os("JAMNET_DEBUG_REPORT").map(|dir| {
            let stop = Arc::new(AtomicBool::new(false));
            let (flag, report, port) = (stop.clone(), report.clone(), local.port());
            let _ = std::thread::Builder::new()
                .name("jamnet-debug-report".into())
                .spawn(move || loop {
                    std::thread::sleep(Duration::from_millis(500));
                    if flag.load(Ordering::Relaxed) {
                        break;
                    }
                    let r = report.lock().clone();
                    write_debug_report(&debug_report_path(&dir, &r, port), &r);
                });
            stop
        }),
        local,
        report,
    })
}
