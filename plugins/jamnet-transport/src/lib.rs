//! # JAMNet Transport
//!
//! Lead: publishes the host's transport (play/stop, position, tempo, time
//! signature) to the session. Follow: shows the session's transport and the
//! host's offset from it, and emits MIDI Clock / Song Position / MTC.
//!
//! `process()` copies the host transport (plus its running sample counter
//! and the local clock) into a fixed-size record and pushes it into an
//! `rtrb` ring; the worker owns the sockets.
//!
//! * Lead: the worker runs the [`publish::TransportPublisher`] state machine
//!   and sends TOAST `transport` frames.
//! * Follow: the worker receives `transport` frames through
//!   `bridge_core::net::UdpDriver` (multicast group shared with
//!   `SO_REUSEADDR`/`SO_REUSEPORT`, or the unicast port), orders and applies
//!   them ([`follow::FollowSession`]), binds each to a running sample through
//!   the DAW clock fit and sends [`follow::Anchor`]s back through a second
//!   `rtrb` ring. `process()` runs [`follow::FollowCore`]: session transport
//!   per block, MIDI Clock/SPP/Start/Stop/Continue/MTC at sample offsets.
//!
//! # MIDI output through nice-plug
//!
//! nice-plug's `NoteEvent` has no variant for MIDI system common or system
//! real-time messages (Clock F8, Start FA, Continue FB, Stop FC, SPP F2, MTC
//! quarter frame F1). Its `SysExMessage` trait works on raw MIDI bytes and
//! says system common/real-time messages may travel through it "as long as
//! the plugin API supports those", so they go out as
//! `NoteEvent::MidiSysEx` carrying the raw message ([`RawMidi`]): a CLAP host
//! receives `CLAP_EVENT_MIDI_SYSEX` events whose buffer is e.g. `[F8]`, a
//! VST3 host a `kMidiSysEx` data event with those bytes. The MTC full-frame
//! message is a real SysEx (F0 7F 7F 01 01 … F7). Hosts that only forward
//! F0…F7 buffers in SysEx events drop the others; VST3 has no event type for
//! MIDI Clock at all.

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;

use jamnet_plugin_kit::{AtomicF32Cell, RateCounter, Supervisor, WorkerError, WorkerStatus};
use nice_plug::prelude::*;
use nice_plug_egui::EguiEditorState;

pub mod editor;
pub mod follow;
pub mod params;
pub mod publish;

use bridge_core::protocol::RejectCounters;
use bridge_core::transport::MidiOut;
use follow::{Anchor, FollowCore, MidiOptions};
use params::{Mode, MtcRate, TransportParams};
use publish::HostSnapshot;

/// Anchors buffered between the worker and `process()` (follow mode).
const ANCHOR_RING: usize = 256;

/// One raw MIDI message (system common/real-time or SysEx up to 10 bytes)
/// carried through nice-plug's SysEx path (see the crate docs).
///
/// Thread-safe: yes (plain `Copy` value). Realtime-safe: yes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RawMidi(pub MidiOut);

impl SysExMessage for RawMidi {
    type Buffer = [u8; 10];

    fn from_buffer(buffer: &[u8]) -> Option<Self> {
        (!buffer.is_empty() && buffer.len() <= 10).then(|| {
            let mut bytes = [0u8; 10];
            bytes[..buffer.len()].copy_from_slice(buffer);
            RawMidi(MidiOut {
                offset: 0,
                bytes,
                len: buffer.len() as u8,
            })
        })
    }

    fn as_buffer(&self) -> (Self::Buffer, usize) {
        (self.0.bytes, self.0.len as usize)
    }
}

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
    /// This instance's TOAST source id (0 until the first worker picks
    /// one): kept across deactivate/activate, so a host that restarts the
    /// plugin (Ardour does after every export) does not look like a new
    /// master to the session.
    pub source_id: AtomicU32,
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
    /// Session position at the start of the last block, seconds (follow).
    pub session_pos_s: AtomicF32Cell,
    /// Host minus session position at the same sample, ms (follow).
    pub offset_ms: AtomicF32Cell,
    /// Host minus session position at the same sample, samples (follow).
    pub offset_samples: AtomicF32Cell,
    /// Follow: a session transport has been received.
    pub session_known: AtomicBool,
    /// Follow: `transport` frames accepted.
    pub frames_received: AtomicU64,
    /// Follow: datagrams rejected by the TOAST decoder, per reason.
    pub rejects: RejectCounters,
    /// Follow: frames of other sessions or other kinds ignored.
    pub frames_ignored: AtomicU64,
    /// Follow: commands refused by validation or lost concurrent conflicts.
    pub commands_refused: AtomicU64,
    /// Follow: session commands applied on the audio thread.
    pub commands_applied: AtomicU64,
    /// Follow: of those, applied after their sample (at a block start).
    pub commands_late: AtomicU64,
    /// Follow: MIDI messages handed to the host.
    pub midi_sent: AtomicU64,
    /// Follow: MIDI Clock (F8) messages handed to the host.
    pub midi_clocks: AtomicU64,
    /// Follow: MIDI messages the host's event buffer refused.
    pub midi_dropped: AtomicU64,
    /// Follow: anchors lost because the worker → audio ring was full.
    pub anchor_ring_full: AtomicU64,
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
    /// Audio-thread end of the anchor ring (follow; made in `activate`).
    anchors: Option<rtrb::Consumer<Anchor>>,
    /// Follow-mode audio core (also keeps the running sample counter).
    follow: FollowCore,
}

impl Default for JamnetTransport {
    fn default() -> Self {
        let stats = Arc::new(TransportStats::default());
        // No clock model runs in this plugin: the quality is unknown, not 0.
        stats.sync_quality.set(-1.0);
        Self {
            params: Arc::new(TransportParams::default()),
            supervisor: Supervisor::new(stats.status.clone()),
            stats,
            editor_state: editor::default_state(),
            alloc_probe: false,
            snapshots: None,
            anchors: None,
            follow: FollowCore::new(),
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

/// The socket side of one mode, rebuilt when settings or the mode change.
enum Link {
    Lead {
        socket: std::net::UdpSocket,
        dest: Vec<std::net::SocketAddr>,
    },
    Follow {
        driver: Box<bridge_core::net::UdpDriver>,
    },
}

/// The worker: drains host snapshots; in lead mode runs the publisher and
/// sends TOAST `transport` frames; in follow mode receives them, runs the
/// [`follow::FollowSession`] and hands anchors to `process()`.
/// `mode` reads the Mode parameter (a closure so tests can drive it).
fn run_worker(
    mode_of: impl Fn() -> Mode,
    params: Arc<TransportParams>,
    stats: Arc<TransportStats>,
    mut snapshots: rtrb::Consumer<HostSnapshot>,
    mut anchors: rtrb::Producer<Anchor>,
    ctl: &jamnet_plugin_kit::WorkerCtl,
) -> Result<(), WorkerError> {
    use bridge_core::protocol::frame::{
        decode_frame, Flags, FormatType, Header, MessageKind, SessionKey,
    };
    use bridge_core::protocol::messages::{
        Message, PeerId, TimeSignature, Transport as TransportMsg, TransportCommand,
    };

    let mut settings_gen = u32::MAX;
    let mut mode = mode_of();
    let mut link: Option<Link> = None;
    let mut key: Option<SessionKey> = None;
    let mut session = uuid::Uuid::nil();
    // Random per plugin instance, never 0 (PROTOCOL.md section 1).
    let fresh: u32 = (uuid::Uuid::new_v4().as_u128() as u32).max(1);
    let source =
        match stats
            .source_id
            .compare_exchange(0, fresh, Ordering::AcqRel, Ordering::Acquire)
        {
            Ok(_) => fresh,
            Err(kept) => kept,
        };
    let mut sequence: u32 = 0;
    let mut publisher =
        publish::TransportPublisher::new(params.announce_ms.value() as u64 * 1_000_000);
    let sample_rate = f64::from(stats.sample_rate.load(Ordering::Relaxed).max(1));
    let mut follower = follow::FollowSession::new(sample_rate);
    let mut received: Vec<bridge_core::transport::TransportCommand> = Vec::with_capacity(64);
    // Transport senders heard: (source, last heard ns); "peers" = heard in
    // the last 5 s. Bounded: a flood of fake sources cannot grow it.
    let mut senders: [(u32, u64); 16] = [(0, 0); 16];
    let mut buf = vec![0u8; FRAME_BUF];
    loop {
        if ctl.should_stop() {
            return Ok(());
        }
        let gen = stats.settings_gen.load(Ordering::Acquire);
        let now_mode = mode_of();
        if gen != settings_gen || now_mode != mode || link.is_none() {
            settings_gen = gen;
            mode = now_mode;
            // Close the old sockets before binding the new ones (same port).
            drop(link.take());
            let s = params.session.read().clone();
            let d = s.destination()?;
            key = s.key_bytes()?.map(SessionKey);
            session = s.session_uuid();
            let listing = d
                .addrs()
                .iter()
                .map(|a| a.to_string())
                .collect::<Vec<_>>()
                .join(", ");
            if mode == Mode::Lead {
                let sock = std::net::UdpSocket::bind(("0.0.0.0", 0))?;
                sock.set_multicast_ttl_v4(1)?;
                sock.set_multicast_loop_v4(true)?;
                link = Some(Link::Lead {
                    socket: sock,
                    dest: d.addrs().to_vec(),
                });
                ctl.running(format!("leading to {listing}"));
            } else {
                let (group, unicast_port) = match &d {
                    jamnet_plugin_kit::Destination::Multicast(std::net::SocketAddr::V4(g)) => {
                        (Some(*g), 0)
                    }
                    _ => (None, d.port()),
                };
                let net = bridge_core::net::NetConfig {
                    group,
                    unicast_port,
                    ..bridge_core::net::NetConfig::default()
                };
                let driver = bridge_core::net::UdpDriver::open(&net)
                    .map_err(|e| WorkerError::Io(e.to_string()))?;
                let at = driver
                    .local_addr()
                    .map(|a| a.to_string())
                    .unwrap_or_default();
                link = Some(Link::Follow {
                    driver: Box::new(driver),
                });
                ctl.running(match group {
                    Some(g) => format!("following: group {g} (unicast {at})"),
                    None => format!("following: listening on {at}"),
                });
            }
        }
        publisher.set_interval_ns(params.announce_ms.value() as u64 * 1_000_000);
        match link.as_mut() {
            Some(Link::Lead { socket, dest }) => {
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
                    let time_signature =
                        TimeSignature::new(u.time_signature[0], u.time_signature[1]).unwrap_or(
                            TimeSignature {
                                numerator: 4,
                                denominator: 4,
                            },
                        );
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
                            for d in dest.iter() {
                                match socket.send_to(&buf[..n], d) {
                                    Ok(_) => stats.frames_sent.add(1),
                                    Err(_) => {
                                        stats.send_errors.fetch_add(1, Ordering::Relaxed);
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
            Some(Link::Follow { driver }) => {
                while let Ok(snap) = snapshots.pop() {
                    follower.on_block(snap.running_sample, snap.local_ns);
                }
                received.clear();
                let deadline = std::time::Instant::now() + std::time::Duration::from_millis(2);
                driver
                    .poll(deadline, |_via, _from, bytes| {
                        let frame = match decode_frame(bytes, key.as_ref()) {
                            Ok(f) => f,
                            Err(r) => {
                                stats.rejects.count(r);
                                return;
                            }
                        };
                        let h = frame.header;
                        if h.session != session || h.source == source {
                            stats.frames_ignored.fetch_add(1, Ordering::Relaxed);
                            return;
                        }
                        if h.message_kind() != Some(MessageKind::Transport) {
                            stats.frames_ignored.fetch_add(1, Ordering::Relaxed);
                            return;
                        }
                        match Message::parse(&frame) {
                            Ok(Message::Transport(t)) => {
                                stats.rejects.count_accepted();
                                stats.frames_received.fetch_add(1, Ordering::Relaxed);
                                received.push(bridge_core::transport::TransportCommand::from_wire(
                                    &t, h.source,
                                ));
                            }
                            Ok(_) => {
                                stats.frames_ignored.fetch_add(1, Ordering::Relaxed);
                            }
                            Err(r) => stats.rejects.count(r),
                        }
                    })
                    .map_err(|e| WorkerError::Io(e.to_string()))?;
                let now = bridge_core::worker::clock::monotonic_ns();
                for cmd in &received {
                    let slot = senders
                        .iter()
                        .position(|&(src, _)| src == cmd.from)
                        .or_else(|| senders.iter().position(|&(_, t)| t + 5_000_000_000 < now))
                        .unwrap_or(0);
                    senders[slot] = (cmd.from, now);
                }
                let heard = senders
                    .iter()
                    .filter(|&&(src, t)| src != 0 && t + 5_000_000_000 >= now)
                    .count();
                stats.peers.store(heard as u32, Ordering::Relaxed);
                for cmd in received.drain(..) {
                    if follower.on_command(cmd).is_err() {
                        stats.commands_refused.fetch_add(1, Ordering::Relaxed);
                    }
                }
                follower.poll(now, |a| {
                    if anchors.push(a).is_err() {
                        stats.anchor_ring_full.fetch_add(1, Ordering::Relaxed);
                    }
                });
                stats.master.store(follower.master(), Ordering::Relaxed);
            }
            None => std::thread::sleep(std::time::Duration::from_millis(1)),
        }
    }
}

/// Copy what the host says about its transport into a fixed-size record.
fn snapshot(t: &Transport, block_len: u32, running_sample: u64, local_ns: u64) -> HostSnapshot {
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
        running_sample,
        local_ns,
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

    type SysExMessage = RawMidi;
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
        let (anchor_tx, anchor_rx) = rtrb::RingBuffer::new(ANCHOR_RING);
        self.anchors = Some(anchor_rx);
        // A fresh counter per activation: the worker's DAW clock fit restarts.
        self.follow = FollowCore::new();
        let (params, stats) = (self.params.clone(), self.stats.clone());
        self.supervisor.start("jamnet-transport", move |ctl| {
            let p = params.clone();
            run_worker(
                move || p.mode.value(),
                params,
                stats,
                consumer,
                anchor_tx,
                ctl,
            )
        });
        self.alloc_probe = jamnet_plugin_kit::alloc_probe_requested();
        true
    }

    fn deactivate(&mut self) {
        self.supervisor.stop();
        self.snapshots = None;
        self.anchors = None;
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
        let frames = buffer.samples() as u32;
        let running = self.follow.running_sample();
        // vDSO clock read: no syscall, no lock.
        let local_ns = bridge_core::worker::clock::monotonic_ns();
        let snap = snapshot(context.transport(), frames, running, local_ns);
        self.stats
            .host_playing
            .store(snap.playing, Ordering::Relaxed);
        self.stats.host_bpm.set(snap.tempo as f32);
        self.stats.host_pos_s.set(snap.pos_seconds as f32);
        // Both modes: lead publishes from it, follow fits the DAW clock.
        if let Some(ring) = &mut self.snapshots {
            if ring.push(snap).is_err() {
                self.stats.ring_full.fetch_add(1, Ordering::Relaxed);
            }
        }
        if let Some(ring) = &mut self.anchors {
            while let Ok(a) = ring.pop() {
                self.follow.push(a);
            }
        }
        let follow = self.params.mode.value() == Mode::Follow;
        let opts = MidiOptions {
            clock: follow && self.params.midi_clock.value(),
            spp: self.params.spp.value(),
            mtc: (follow && self.params.mtc.value()).then(|| match self.params.mtc_rate.value() {
                MtcRate::Fps24 => bridge_core::transport::MtcRate::Fps24,
                MtcRate::Fps25 => bridge_core::transport::MtcRate::Fps25,
                MtcRate::Fps2997Df => bridge_core::transport::MtcRate::Fps2997Drop,
                MtcRate::Fps30 => bridge_core::transport::MtcRate::Fps30,
            }),
        };
        let sample_rate = f64::from(snap.sample_rate);
        let stats = &*self.stats;
        let view = self.follow.process_block(frames, sample_rate, opts, |m| {
            let event = NoteEvent::MidiSysEx {
                timing: m.offset,
                message: RawMidi(m),
            };
            match context.try_send_event(event) {
                Ok(()) => {
                    stats.midi_sent.fetch_add(1, Ordering::Relaxed);
                    if m.bytes[0] == 0xF8 {
                        stats.midi_clocks.fetch_add(1, Ordering::Relaxed);
                    }
                }
                Err(_) => {
                    stats.midi_dropped.fetch_add(1, Ordering::Relaxed);
                }
            }
        });
        if view.applied > 0 {
            stats
                .commands_applied
                .fetch_add(u64::from(view.applied), Ordering::Relaxed);
            stats
                .commands_late
                .fetch_add(u64::from(view.late), Ordering::Relaxed);
        }
        if let Some(st) = view.state {
            stats.session_known.store(true, Ordering::Relaxed);
            stats.session_playing.store(st.playing, Ordering::Relaxed);
            stats.session_bpm.set(st.bpm as f32);
            stats.session_pos_s.set((st.position_ms / 1000.0) as f32);
            let (offset_ms, offset_samples) =
                follow::host_offset(snap.pos_seconds, st.position_ms, sample_rate);
            stats.offset_ms.set(offset_ms as f32);
            stats.offset_samples.set(offset_samples as f32);
        }
        if view.master != 0 {
            stats.master.store(view.master, Ordering::Relaxed);
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

#[cfg(test)]
mod tests {
    use super::*;
    use bridge_core::protocol::frame::{FormatType, Header, MessageKind};
    use bridge_core::protocol::messages::{
        Message, PeerId, TimeSignature, Transport as TransportMsg, TransportCommand,
    };
    use bridge_core::worker::clock::monotonic_ns;

    fn frame(session: uuid::Uuid, source: u32, timestamp: u64, buf: &mut [u8]) -> usize {
        let msg = Message::Transport(TransportMsg {
            command: TransportCommand::Play,
            timestamp,
            position: 1500.0,
            bpm: 120.0,
            time_signature: TimeSignature {
                numerator: 3,
                denominator: 4,
            },
            master_peer: PeerId(source),
            beat: None,
            seq: Some(1),
        });
        let header = Header::new(
            MessageKind::Transport,
            FormatType::StandardJson,
            session,
            source,
            0,
            timestamp,
        );
        msg.encode(&header, None, buf).unwrap()
    }

    /// The follow worker on real loopback UDP: a valid frame becomes an
    /// anchor bound to the running sample the host clock says; junk is
    /// counted as rejected, another session's frame as ignored.
    #[test]
    fn follow_worker_receives_real_udp_and_counts_rejects() {
        let port = std::net::UdpSocket::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let params = Arc::new(TransportParams::default());
        {
            let mut s = params.session.write();
            s.session = "follow-worker-test".into();
            s.destination = format!("127.0.0.1:{port}");
        }
        let session = params.session.read().session_uuid();
        let stats = Arc::new(TransportStats::default());
        stats.sample_rate.store(48_000, Ordering::Relaxed);
        let (mut snap_tx, snap_rx) = rtrb::RingBuffer::new(SNAPSHOT_RING);
        let (anchor_tx, mut anchor_rx) = rtrb::RingBuffer::new(ANCHOR_RING);
        let mut sup = Supervisor::new(stats.status.clone());
        let (p, s) = (params.clone(), stats.clone());
        sup.start("follow-test", move |ctl| {
            run_worker(|| Mode::Follow, p, s, snap_rx, anchor_tx, ctl)
        });

        let tx = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let dest = format!("127.0.0.1:{port}");
        let mut buf = vec![0u8; 1472];
        // Blocks of 64 samples at 48 kHz, paced in real time from t0.
        let t0 = monotonic_ns();
        let mut running = 0u64;
        let mut sent = false;
        let mut t_play = 0;
        let mut got = None;
        while monotonic_ns() < t0 + 2_000_000_000 && got.is_none() {
            let now = monotonic_ns();
            while t0 + running * 1_000_000_000 / 48_000 <= now {
                let snap = HostSnapshot {
                    playing: false,
                    recording: false,
                    tempo: 120.0,
                    ts_num: 4,
                    ts_den: 4,
                    pos_samples: 0,
                    pos_seconds: 0.0,
                    pos_beats: 0.0,
                    block_len: 64,
                    sample_rate: 48_000.0,
                    running_sample: running,
                    local_ns: t0 + running * 1_000_000_000 / 48_000,
                };
                let _ = snap_tx.push(snap);
                running += 64;
            }
            if !sent && now > t0 + 200_000_000 {
                tx.send_to(b"junk", &dest).unwrap();
                let n = frame(uuid::Uuid::from_u128(99), 5, now, &mut buf);
                tx.send_to(&buf[..n], &dest).unwrap();
                t_play = now + 50_000_000;
                let n = frame(session, 7, t_play, &mut buf);
                tx.send_to(&buf[..n], &dest).unwrap();
                sent = true;
            }
            if let Ok(a) = anchor_rx.pop() {
                got = Some(a);
            }
            std::thread::sleep(std::time::Duration::from_micros(500));
        }
        sup.stop();
        let a = got.expect("no anchor from the follow worker");
        assert_eq!(a.kind, bridge_core::transport::TransportCommandKind::Play);
        assert_eq!((a.from, a.master), (7, 7));
        assert!(a.state.playing);
        assert_eq!(a.state.bpm, 120.0);
        assert_eq!(a.state.time_signature.numerator, 3);
        assert!((a.state.beat - 3.0).abs() < 1e-9, "beat from position");
        let want = (t_play - t0) as f64 * 48_000.0 / 1e9;
        assert!(
            (a.sample - want).abs() < 2.0,
            "anchor at sample {} want {want}",
            a.sample
        );
        assert_eq!(stats.frames_received.load(Ordering::Relaxed), 1);
        assert_eq!(stats.frames_ignored.load(Ordering::Relaxed), 1);
        assert_eq!(stats.rejects.total_rejected(), 1);
        assert_eq!(stats.master.load(Ordering::Relaxed), 7);
        assert_eq!(stats.peers.load(Ordering::Relaxed), 1);
    }
}
