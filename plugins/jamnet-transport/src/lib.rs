//! # JAMNet Transport
//!
//! Lead: publishes the host's transport (play/stop, position, tempo, time
//! signature) to the session. Follow: shows the session's transport and the
//! host's offset from it, and emits MIDI Clock / Song Position / MTC.
//!
//! `process()` only copies the host transport into a fixed-size record and
//! pushes it into an `rtrb` ring; the worker owns the socket and the
//! [`publish::TransportPublisher`] state machine.

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;

use jamnet_plugin_kit::{AtomicF32Cell, RateCounter, Supervisor, WorkerError, WorkerStatus};
use nice_plug::prelude::*;
use nice_plug_egui::EguiEditorState;

pub mod editor;
pub mod params;
pub mod publish;

use params::{Mode, TransportParams};
use publish::HostSnapshot;

/// Snapshots buffered between `process()` and the worker (~2.7 s of 64-sample
/// blocks at 48 kHz; the worker drains it every millisecond).
const SNAPSHOT_RING: usize = 2048;

/// What the editor shows about one Transport instance.
///
/// Thread-safe: yes (atomics). Realtime-safe: the counters are.
#[derive(Debug, Default)]
pub struct TransportStats {
    /// Worker state and message.
    pub status: Arc<WorkerStatus>,
    /// Blocks `process()` handled.
    pub blocks: RateCounter,
    /// Snapshots dropped because the worker was not draining the ring.
    pub ring_full: AtomicU64,
    /// Transport frames sent (lead).
    pub frames_sent: RateCounter,
    /// Send errors (lead).
    pub send_errors: AtomicU64,
    /// Host transport as last seen by `process()`.
    pub host_playing: AtomicBool,
    /// Host tempo, BPM.
    pub host_bpm: AtomicF32Cell,
    /// Host position, seconds.
    pub host_pos_s: AtomicF32Cell,
    /// Session transport (follow): playing.
    pub session_playing: AtomicBool,
    /// Session tempo, BPM (follow).
    pub session_bpm: AtomicF32Cell,
    /// Host minus session position, ms (follow).
    pub offset_ms: AtomicF32Cell,
    /// Peers seen in the session.
    pub peers: AtomicU32,
    /// Master peer id (0: none known).
    pub master: AtomicU32,
    /// Sync quality 0–1 (clock model), negative if unknown.
    pub sync_quality: AtomicF32Cell,
    /// Bumped by the editor when settings changed; the worker reloads them.
    pub settings_gen: AtomicU32,
    /// Sample rate the host activated us with (Hz).
    pub sample_rate: AtomicU32,
}

/// The JAMNet Transport plugin.
///
/// Thread-safe: no (host-serialised). Realtime-safe: `process()` is.
pub struct JamnetTransport {
    params: Arc<TransportParams>,
    stats: Arc<TransportStats>,
    supervisor: Supervisor,
    editor_state: Arc<EguiEditorState>,
    /// Debug-only negative control for the allocation checker.
    alloc_probe: bool,
    /// Audio-thread end of the snapshot ring (made in `activate`).
    snapshots: Option<rtrb::Producer<HostSnapshot>>,
}

impl Default for JamnetTransport {
    fn default() -> Self {
        let stats = Arc::new(TransportStats::default());
        Self {
            params: Arc::new(TransportParams::default()),
            supervisor: Supervisor::new(stats.status.clone()),
            stats,
            editor_state: editor::default_state(),
            alloc_probe: false,
            snapshots: None,
        }
    }
}

impl JamnetTransport {
    /// Shared statistics (for tests and the editor).
    pub fn stats(&self) -> &Arc<TransportStats> {
        &self.stats
    }
}

/// Largest transport frame (JSON payload is ~200 bytes).
const FRAME_BUF: usize = 1472;

/// The lead worker: drains host snapshots, runs the publisher, encodes
/// TOAST `transport` frames and sends them to the session's destination.
/// Follow mode receives nothing yet (the session transport core and MIDI
/// clock generator are not wired into this plugin): it says so.
fn run_worker(
    params: Arc<TransportParams>,
    stats: Arc<TransportStats>,
    mut snapshots: rtrb::Consumer<HostSnapshot>,
    ctl: &jamnet_plugin_kit::WorkerCtl,
) -> Result<(), WorkerError> {
    use bridge_core::protocol::frame::{Flags, FormatType, Header, MessageKind, SessionKey};
    use bridge_core::protocol::messages::{
        Message, PeerId, TimeSignature, Transport as TransportMsg, TransportCommand,
    };

    let mut settings_gen = u32::MAX;
    let mut socket: Option<std::net::UdpSocket> = None;
    let mut dest = Vec::new();
    let mut key: Option<SessionKey> = None;
    let mut session = uuid::Uuid::nil();
    // Random per running peer, never 0 (PROTOCOL.md section 1).
    let source: u32 = (uuid::Uuid::new_v4().as_u128() as u32).max(1);
    let mut sequence: u32 = 0;
    let mut publisher =
        publish::TransportPublisher::new(params.announce_ms.value() as u64 * 1_000_000);
    let mut buf = vec![0u8; FRAME_BUF];
    loop {
        if ctl.should_stop() {
            return Ok(());
        }
        let gen = stats.settings_gen.load(Ordering::Acquire);
        if gen != settings_gen {
            settings_gen = gen;
            let s = params.session.read().clone();
            let d = s.destination()?;
            key = s.key_bytes()?.map(SessionKey);
            session = s.session_uuid();
            let sock = std::net::UdpSocket::bind(("0.0.0.0", 0))?;
            sock.set_multicast_ttl_v4(1)?;
            sock.set_multicast_loop_v4(true)?;
            dest = d.addrs().to_vec();
            socket = Some(sock);
            ctl.running(format!(
                "{} to {}",
                if params.mode.value() == Mode::Lead {
                    "leading"
                } else {
                    "follow: receiving not wired yet"
                },
                dest.iter()
                    .map(|a| a.to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }
        publisher.set_interval_ns(params.announce_ms.value() as u64 * 1_000_000);
        let mut any = false;
        while let Ok(snap) = snapshots.pop() {
            any = true;
            let now = bridge_core::worker::clock::monotonic_ns();
            let Some(u) = publisher.on_snapshot(&snap, now) else {
                continue;
            };
            let command = match u.command {
                publish::Command::Play => TransportCommand::Play,
                publish::Command::Stop => TransportCommand::Stop,
                publish::Command::Record => TransportCommand::Record,
                publish::Command::Seek => TransportCommand::Seek,
                publish::Command::Tempo => TransportCommand::Tempo,
            };
            let time_signature = TimeSignature::new(u.time_signature[0], u.time_signature[1])
                .unwrap_or(TimeSignature {
                    numerator: 4,
                    denominator: 4,
                });
            let msg = Message::Transport(TransportMsg {
                command,
                timestamp: u.timestamp_ns,
                position: u.position_ms,
                bpm: u.bpm,
                time_signature,
                master_peer: PeerId(source),
                beat: Some(u.beat.max(0.0)),
                seq: Some(u.seq),
            });
            let mut header = Header::new(
                MessageKind::Transport,
                FormatType::StandardJson,
                session,
                source,
                sequence,
                u.timestamp_ns,
            );
            header.flags = Flags(0);
            sequence = sequence.wrapping_add(1);
            match msg.encode(&header, key.as_ref(), &mut buf) {
                Ok(n) => {
                    if let Some(sock) = &socket {
                        for d in &dest {
                            match sock.send_to(&buf[..n], d) {
                                Ok(_) => stats.frames_sent.add(1),
                                Err(_) => {
                                    stats.send_errors.fetch_add(1, Ordering::Relaxed);
                                }
                            }
                        }
                    }
                }
                Err(_) => {
                    stats.send_errors.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
        if !any {
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
    }
}

/// Copy what the host says about its transport into a fixed-size record.
fn snapshot(t: &Transport, block_len: u32) -> HostSnapshot {
    let tempo = t.tempo.unwrap_or(120.0);
    HostSnapshot {
        playing: t.playing,
        recording: t.recording,
        tempo,
        ts_num: t.time_sig_numerator.unwrap_or(4).clamp(1, 64) as u8,
        ts_den: t.time_sig_denominator.unwrap_or(4).clamp(1, 32) as u8,
        pos_samples: t.pos_samples().unwrap_or(0),
        pos_seconds: t.pos_seconds().unwrap_or(0.0),
        pos_beats: t.pos_beats().unwrap_or(0.0),
        block_len,
        sample_rate: t.sample_rate,
    }
}

impl Plugin for JamnetTransport {
    const NAME: &'static str = "JAMNet Transport";
    const VENDOR: &'static str = "JAMNet";
    const URL: &'static str = "https://example.invalid/jamnet";
    const EMAIL: &'static str = "jamnet@example.invalid";
    const VERSION: &'static str = env!("CARGO_PKG_VERSION");

    // Audio passes through: some hosts refuse MIDI-only plugins.
    const AUDIO_IO_LAYOUTS: &'static [AudioIOLayout] = &[
        AudioIOLayout {
            main_input_channels: NonZeroU32::new(2),
            main_output_channels: NonZeroU32::new(2),
            ..AudioIOLayout::const_default()
        },
        AudioIOLayout {
            main_input_channels: NonZeroU32::new(1),
            main_output_channels: NonZeroU32::new(1),
            ..AudioIOLayout::const_default()
        },
    ];
    const MIDI_OUTPUT: MidiConfig = MidiConfig::Basic;

    type SysExMessage = ();
    type BackgroundTask = ();
    type Editor = nice_plug_egui::EguiEditor<editor::TransportEditor>;

    fn params(&self) -> Arc<dyn Params> {
        self.params.clone()
    }

    fn editor(&mut self, _async_executor: AsyncExecutor<Self>) -> Option<Self::Editor> {
        editor::create(
            self.params.clone(),
            self.stats.clone(),
            self.editor_state.clone(),
        )
    }

    fn activate(
        &mut self,
        _audio_io_layout: &AudioIOLayout,
        buffer_config: &BufferConfig,
        _context: &mut impl ActivateContext<Self>,
    ) -> bool {
        self.stats
            .sample_rate
            .store(buffer_config.sample_rate as u32, Ordering::Relaxed);
        let (producer, consumer) = rtrb::RingBuffer::new(SNAPSHOT_RING);
        self.snapshots = Some(producer);
        let (params, stats) = (self.params.clone(), self.stats.clone());
        self.supervisor.start("jamnet-transport", move |ctl| {
            run_worker(params, stats, consumer, ctl)
        });
        self.alloc_probe = jamnet_plugin_kit::alloc_probe_requested();
        true
    }

    fn deactivate(&mut self) {
        self.supervisor.stop();
        self.snapshots = None;
    }

    fn process(
        &mut self,
        buffer: &mut Buffer,
        _aux: &mut AuxiliaryBuffers,
        context: &mut impl ProcessContext<Self>,
    ) -> ProcessStatus {
        if self.alloc_probe {
            jamnet_plugin_kit::alloc_probe();
        }
        let snap = snapshot(context.transport(), buffer.samples() as u32);
        self.stats
            .host_playing
            .store(snap.playing, Ordering::Relaxed);
        self.stats.host_bpm.set(snap.tempo as f32);
        self.stats.host_pos_s.set(snap.pos_seconds as f32);
        if self.params.mode.value() == Mode::Lead {
            if let Some(ring) = &mut self.snapshots {
                if ring.push(snap).is_err() {
                    self.stats.ring_full.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
        self.stats.blocks.add(1);
        ProcessStatus::Normal
    }
}

impl ClapPlugin for JamnetTransport {
    const CLAP_ID: &'static str = "net.jamnet.transport";
    const CLAP_DESCRIPTION: Option<&'static str> =
        Some("Publishes or follows a JAMNet session's transport");
    const CLAP_MANUAL_URL: Option<&'static str> = None;
    const CLAP_SUPPORT_URL: Option<&'static str> = None;
    const CLAP_FEATURES: &'static [ClapFeature] = &[
        ClapFeature::AudioEffect,
        ClapFeature::Utility,
        ClapFeature::Stereo,
    ];
}

impl Vst3Plugin for JamnetTransport {
    const VST3_CLASS_ID: [u8; 16] = *b"JAMNetTransport1";
    const VST3_SUBCATEGORIES: &'static [Vst3SubCategory] =
        &[Vst3SubCategory::Fx, Vst3SubCategory::Network];
}

nice_export_clap!(JamnetTransport);
nice_export_vst3!(JamnetTransport);
