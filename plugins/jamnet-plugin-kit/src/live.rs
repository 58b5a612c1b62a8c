//! Starting a plugin's live-session worker: bridge-core's [`LivePeer`] core
//! on a [`Worker`] thread, linked to the plugin's audio thread by an
//! [`AudioHandle`]. Called from `activate` (never from `process()`).

use std::sync::Arc;

use bridge_core::conceal::ConcealMethod;
use bridge_core::handle::{link, AudioHandle, LinkConfig, LinkStats};
use bridge_core::net::NetConfig;
use bridge_core::protocol::audio::SampleFormat;
use bridge_core::protocol::frame::SessionKey;
use bridge_core::worker::peer::{
    AudioSource, AudioTxConfig, LivePeer, PeerConfig, PeerReport, SharedReport, SharedStreamFilter,
};
use bridge_core::worker::{MonotonicClock, Worker, WorkerConfig};

use crate::settings::{Destination, SessionSettings};
use crate::worker::WorkerError;

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
/// Thread-safe: yes (plain value). Realtime-safe: yes.
#[derive(Debug, Clone, Copy)]
pub struct SendSpec {
    /// Wire format.
    pub format: SampleFormat,
    /// JELLIE (mono only).
    pub jellie: bool,
    /// Copies per MIDI event.
    pub midi_burst: u8,
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
            play: true,
        }
    }
}

/// A running live worker and the audio thread's handle to it.
///
/// Thread-safe: no. Realtime-safe: no (dropping it joins the worker thread;
/// do that in `deactivate`, not in `process()`).
pub struct LiveLink {
    /// Keeps the worker running; dropped (stopped and joined) on deactivate.
    pub worker: Worker<LivePeer>,
    /// Local unicast address, for the editor.
    pub local: std::net::SocketAddr,
    /// The worker's report (peers and their streams, per-stream counters),
    /// refreshed ten times a second; for the editor thread only.
    pub report: SharedReport,
    /// With `JAMNET_DEBUG_REPORT`: tells the report writer to stop.
    debug_writer: Option<Arc<std::sync::atomic::AtomicBool>>,
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
    /// a last time when the plugin deactivates or unloads: a way to see
    /// inside a plugin in a host that shows no editor and may never unload
    /// it (pedalboard, DawDreamer, CI).
    fn drop(&mut self) {
        let Some(stop) = self.debug_writer.take() else {
            return;
        };
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        if let Some(dir) = std::env::var_os("JAMNET_DEBUG_REPORT") {
            let report = self.report.lock().clone();
            write_debug_report(
                &debug_report_path(&dir, &report, self.local.port()),
                &report,
            );
        }
    }
}

/// Start a live peer for a plugin instance: `channels` at `sample_rate`,
/// sending if `send` is given, always receiving (received audio of the
/// streams `recv.filter` lets through is mixed into the handle's output;
/// received MIDI goes to the handle too). `recv` sets the jitter buffer and
/// concealment;
/// `max_host_block` (the host's largest buffer) sizes the output queue so a
/// whole host buffer is ready when `process()` pulls it.
pub fn start(
    settings: &SessionSettings,
    channels: usize,
    sample_rate: u32,
    max_host_block: usize,
    send: Option<SendSpec>,
    recv: ReceiveSpec,
    thread_name: &str,
) -> Result<(AudioHandle, Arc<LinkStats>, LiveLink), WorkerError> {
    let destination = settings.destination()?;
    let key = settings.key_bytes()?.map(SessionKey);
    let (handle, worker_link) = link(LinkConfig {
        channels,
        block_frames: BLOCK_FRAMES,
        sample_rate,
        ring_blocks: (2 * output_target_blocks(max_host_block) + 2).max(64),
        output_target_blocks: output_target_blocks(max_host_block),
        ..LinkConfig::default()
    })
    .map_err(|e| WorkerError::Io(e.to_string()))?;
    let stats = handle.stats().clone();
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
        playout_delay_ns: match &recv.playout_live {
            Some(live) => live.load(std::sync::atomic::Ordering::Relaxed),
            None => (recv.playout_delay_ms.max(0.0) * 1e6) as u64,
        },
        conceal: recv.conceal,
        play_filter: recv.filter,
        play_received: recv.play,
        playout_delay_live: recv.playout_live,
        // The report is rebuilt ten times a second for the editor: keep it
        // small over hours (counters stay exact; the report's latency
        // percentiles cover the first 4096 blocks only; the editor shows the
        // live jitter and target delay instead).
        keep_latency_samples: 4_096,
        keep_midi_log: 0,
        // Random per instance: the source id is drawn from it.
        seed,
        ..PeerConfig::default()
    };
    let (core, report) = LivePeer::new(peer);
    let worker = Worker::spawn(
        WorkerConfig {
            net,
            thread_name: thread_name.to_owned(),
            ..WorkerConfig::default()
        },
        Arc::new(MonotonicClock),
        core,
        Some(worker_link),
        stats.clone(),
    )
    .map_err(|e| WorkerError::Io(e.to_string()))?;
    let local = worker.local_addr();
    Ok((
        handle,
        stats,
        LiveLink {
            worker,
            debug_writer: std::env::var_os("JAMNET_DEBUG_REPORT").map(|dir| {
                let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
                let (flag, report, port) = (stop.clone(), report.clone(), local.port());
                let _ = std::thread::Builder::new()
                    .name("jamnet-debug-report".into())
                    .spawn(move || loop {
                        std::thread::sleep(std::time::Duration::from_millis(500));
                        if flag.load(std::sync::atomic::Ordering::Relaxed) {
                            break;
                        }
                        let r = report.lock().clone();
                        write_debug_report(&debug_report_path(&dir, &r, port), &r);
                    });
                stop
            }),
            local,
            report,
        },
    ))
}
