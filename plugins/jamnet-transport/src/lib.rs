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
//! * Both modes: the worker runs the session clock ([`ClockDriftArbiter`],
//!   clock_ping/clock_pong through `bridge_core::clock::wire`, the same
//!   exchange and election as JAMNet Send/Receive), so timestamps are in
//!   session time (PROTOCOL.md section 5) across machines.
//! * Lead: the worker runs the [`publish::TransportPublisher`] state machine
//!   and sends TOAST `transport` frames stamped in session time.
//! * Follow: the worker receives `transport` frames through
//!   `bridge_core::net::UdpDriver` (multicast group shared with
//!   `SO_REUSEADDR`/`SO_REUSEPORT`, or the unicast port), orders and applies
//!   them ([`follow::FollowSession`]) after mapping their session time to the
//!   local clock, binds each to a running sample through
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
pub mod host_follow;
pub mod params;
pub mod publish;

use bridge_core::clock::{ArbiterConfig, ClockDriftArbiter};
use bridge_core::protocol::RejectCounters;
use bridge_core::transport::MidiOut;
use bridge_core::worker::clock::{Clock, MonotonicClock};
use follow::{Anchor, FollowCore, MidiOptions};
use host_follow::{HostFollower, HostTransport, SessionTransport};
use jamnet_plugin_kit::clap_shim::{HostLink, TransportControl};
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
    /// Datagrams rejected by the TOAST decoder, per reason (both modes:
    /// the lead receives clock messages too).
    pub rejects: RejectCounters,
    /// Frames of other sessions, or (follow) of kinds this plugin does not use, ignored.
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
    /// Host transport control: 0 unknown, 1 offered by the CLAP host, 2 a
    /// CLAP host without it, 3 not CLAP (VST3).
    pub host_control: AtomicU32,
    /// Follow: transport requests posted to the host (play/stop/locate).
    pub host_requests: AtomicU64,
    /// Follow: the host's measured time from request to change, ms (-1:
    /// not measured yet).
    pub host_reaction_ms: AtomicF32Cell,
    /// Follow: anchors lost because the worker → audio ring was full.
    pub anchor_ring_full: AtomicU64,
    /// Peers heard in the session in the last 5 s (transport or clock frames).
    pub peers: AtomicU32,
    /// Transport master: the peer the last applied command named (follow;
    /// 0: none known).
    pub master: AtomicU32,
    /// Clock master elected by the session clock arbiter (its clock is the
    /// session timeline; may be this instance; 0: none elected yet).
    pub clock_master: AtomicU32,
    /// Peers exchanging clock_ping/clock_pong with this instance.
    pub clock_peers: AtomicU32,
    /// Sync quality 0–1 of the session clock: 1 while this instance is the
    /// clock master, the clock model's quality while following one;
    /// negative (unknown) with no clock peers, where session time is simply
    /// the local clock.
    pub sync_quality: AtomicF32Cell,
    /// Session time minus the local clock, ms (0 with no clock peers).
    pub session_offset_ms: AtomicF32Cell,
    /// Transport commands not sent (lead) or dropped (follow) because
    /// their session time could not be mapped yet (clock peers known, the
    /// arbiter not synchronised; see `run_worker`).
    pub unsynced: AtomicU64,
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
    /// The CLAP host, when a CLAP host made this instance (None: VST3).
    host_link: Option<Arc<HostLink>>,
    /// Follow mode's host transport control (`Host transport control`).
    host_follower: HostFollower,
}

impl Default for JamnetTransport {
    fn default() -> Self {
        let stats = Arc::new(TransportStats::default());
        // Until the worker has clock peers the quality is unknown, not 0.
        stats.sync_quality.set(-1.0);
        stats.host_reaction_ms.set(-1.0);
        Self {
            params: Arc::new(TransportParams::default()),
            supervisor: Supervisor::new(stats.status.clone()),
            stats,
            editor_state: editor::default_state(),
            alloc_probe: false,
            snapshots: None,
            anchors: None,
            follow: FollowCore::new(),
            host_link: HostLink::for_new_instance(),
            host_follower: HostFollower::new(),
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

/// A sender not heard for this long no longer counts as a peer, ns.
const PEER_FORGET_NS: u64 = 5_000_000_000;

/// Senders whose addresses are remembered: unicast sessions ping them.
/// Bounded, so a flood of fake sources cannot grow it.
const PEER_SLOTS: usize = 16;

/// Clock pongs answered per worker turn (more pings than that in one turn
/// are a flood; the pingers try again at their next interval).
const PONGS_PER_TURN: usize = 64;

/// Longest the worker waits for datagrams in one turn (it also drains the
/// snapshot ring every turn).
const TURN: std::time::Duration = std::time::Duration::from_millis(1);

/// What the worker reads besides the plugin's parameters, injected so tests
/// can skew the local clock and keep multicast on loopback.
///
/// Thread-safe: yes. Realtime-safe: no (the worker's, never the audio thread's).
#[derive(Clone)]
struct WorkerEnv {
    /// The local clock. `process()` stamps snapshots with the same clock
    /// (`CLOCK_MONOTONIC` in the plugin).
    clock: Arc<dyn Clock>,
    /// Interface to join and send multicast on (0.0.0.0: the kernel's
    /// choice by route).
    multicast_interface: std::net::Ipv4Addr,
}

impl WorkerEnv {
    /// What the plugin runs with.
    fn plugin() -> Self {
        Self {
            clock: Arc::new(MonotonicClock::new()),
            multicast_interface: std::net::Ipv4Addr::UNSPECIFIED,
        }
    }
}

/// One sender heard in the session.
#[derive(Debug, Clone, Copy)]
struct HeardPeer {
    source: u32,
    addr: std::net::SocketAddr,
    last_ns: u64,
}

/// Senders heard recently (transport or clock frames): how many peers the
/// editor shows, and where a unicast session sends its pings.
///
/// Thread-safe: no (worker only). Realtime-safe: yes (fixed size).
#[derive(Debug, Default)]
struct HeardPeers([Option<HeardPeer>; PEER_SLOTS]);

impl HeardPeers {
    fn touch(&mut self, source: u32, addr: std::net::SocketAddr, now: u64) {
        let fresh = |p: &HeardPeer| p.last_ns + PEER_FORGET_NS >= now;
        let slot = self
            .0
            .iter()
            .position(|p| p.is_some_and(|p| p.source == source))
            .or_else(|| self.0.iter().position(|p| !p.is_some_and(|p| fresh(&p))))
            .unwrap_or_else(|| {
                // Full of live senders: replace the one heard longest ago.
                (0..PEER_SLOTS)
                    .min_by_key(|&i| self.0[i].map_or(0, |p| p.last_ns))
                    .unwrap_or(0)
            });
        self.0[slot] = Some(HeardPeer {
            source,
            addr,
            last_ns: now,
        });
    }

    fn forget(&mut self, source: u32) {
        for p in self.0.iter_mut() {
            if p.is_some_and(|p| p.source == source) {
                *p = None;
            }
        }
    }

    fn live(&self, now: u64) -> impl Iterator<Item = HeardPeer> + '_ {
        self.0
            .iter()
            .flatten()
            .copied()
            .filter(move |p| p.last_ns + PEER_FORGET_NS >= now)
    }
}

/// The sockets of one mode, rebuilt when settings or the mode change.
struct Link {
    driver: Box<bridge_core::net::UdpDriver>,
    /// Multicast session: clock messages go to the group.
    multicast: bool,
    /// Lead: where transport frames go (the group, or the unicast list).
    /// Follow: nothing (a follow-mode unicast destination is our own port).
    transport_dest: Vec<std::net::SocketAddr>,
}

impl Link {
    /// Send a session-wide message (clock_ping, goodbye): to the group, or
    /// to every unicast destination and every peer heard recently.
    fn send_to_session(&mut self, bytes: &[u8], heard: &HeardPeers, now: u64) {
        if self.multicast {
            self.driver.send_group(bytes);
            return;
        }
        for d in &self.transport_dest {
            self.driver.send_to(bytes, *d);
        }
        for p in heard.live(now) {
            if !self.transport_dest.contains(&p.addr) {
                self.driver.send_to(bytes, p.addr);
            }
        }
    }
}

/// The session's sync quality as the editor shows it: unknown (-1) with no
/// clock peers; 1 while this instance is the clock master (its clock is the
/// session timeline); the model's quality while following a master; 0 while
/// peers are known but not synced to.
fn sync_quality(arbiter: &ClockDriftArbiter, clock_peers: usize) -> f32 {
    if clock_peers == 0 {
        return -1.0;
    }
    if let Some(p) = arbiter.following() {
        return arbiter.peer_estimate(p).map_or(0.0, |e| e.quality as f32);
    }
    if arbiter.master() == Some(arbiter.id()) {
        1.0
    } else {
        0.0
    }
}

/// Follow: true while a received timestamp cannot be mapped: clock peers
/// are known but the arbiter has not synchronised to the session yet (the
/// first ~2 s of a session, or of joining one). Alone, session time is the
/// local clock and always usable.
fn follow_time_unsettled(arbiter: &ClockDriftArbiter, clock_peers: usize) -> bool {
    clock_peers > 0 && !arbiter.is_synced()
}

/// Follow: commands accepted while session time was simply the local clock
/// (no clock peers, not synced) were mapped by identity. Once clock peers
/// appear, that mapping may be off by the clocks' difference (a follower
/// hears a running lead's transport frames before its first ping), so the
/// commands still pending, and those received this turn, are dropped and
/// counted as `unsynced`; the lead re-announces its state.
fn leave_identity_mapping(
    mapped_by_identity: &mut bool,
    arbiter: &ClockDriftArbiter,
    clock_peers: usize,
    follower: &mut follow::FollowSession,
    received: &mut Vec<bridge_core::transport::TransportCommand>,
    stats: &TransportStats,
) {
    let identity_now = clock_peers == 0 && !arbiter.is_synced();
    if *mapped_by_identity && !identity_now {
        let stale = follower.drop_pending() + received.len();
        received.clear();
        stats.unsynced.fetch_add(stale as u64, Ordering::Relaxed);
    }
    *mapped_by_identity = identity_now;
}

/// Lead: true while another peer's clock is the elected session timeline
/// but ours is not on it yet (normally one ping round trip after the
/// election): a stamp now would be off by the clocks' difference. Before
/// any election (the join grace) the lead stamps with its own clock as
/// before, because followers that run the arbiter drop what they receive
/// until synced, and clock-less receivers (same machine) read it correctly;
/// holding frames for the whole grace would lose a short render's transport.
fn lead_time_unsettled(arbiter: &ClockDriftArbiter) -> bool {
    !arbiter.is_synced() && arbiter.master().is_some()
}

/// The worker: drains host snapshots; runs the session clock
/// ([`ClockDriftArbiter`], clock_ping/clock_pong with every peer, in both
/// modes); in lead mode runs the publisher and sends TOAST `transport`
/// frames stamped in session time; in follow mode receives them, maps their
/// session time to the local clock, runs the [`follow::FollowSession`] and
/// hands anchors to `process()`. `mode_of` reads the Mode parameter (a
/// closure so tests can drive it).
fn run_worker(
    mode_of: impl Fn() -> Mode,
    params: Arc<TransportParams>,
    stats: Arc<TransportStats>,
    mut snapshots: rtrb::Consumer<HostSnapshot>,
    mut anchors: rtrb::Producer<Anchor>,
    env: WorkerEnv,
    ctl: &jamnet_plugin_kit::WorkerCtl,
) -> Result<(), WorkerError> {
    use bridge_core::clock::wire::{due_ping, observe_stamp, on_clock_message, ClockReply};
    use bridge_core::protocol::frame::{
        decode_frame, Flags, FormatType, Header, MessageKind, SessionKey,
    };
    use bridge_core::protocol::messages::{
        Goodbye, Message, PeerId, TimeSignature, Transport as TransportMsg, TransportCommand,
    };

    let clock = env.clock.clone();
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
    let mut clock_sequence: u32 = 0;
    // The session clock; rebuilt when the session changes (a new session
    // has a new timeline), kept across mode switches.
    let mut arbiter = ClockDriftArbiter::new(source, ArbiterConfig::default(), clock.now_ns());
    let mut arbiter_session: Option<uuid::Uuid> = None;
    // Follow: received timestamps are mapped by identity (no clock peers).
    let mut mapped_by_identity = true;
    let mut publisher =
        publish::TransportPublisher::new(params.announce_ms.value() as u64 * 1_000_000);
    let sample_rate = f64::from(stats.sample_rate.load(Ordering::Relaxed).max(1));
    let mut follower = follow::FollowSession::new(sample_rate);
    let mut received: Vec<bridge_core::transport::TransportCommand> = Vec::with_capacity(64);
    let mut pongs: Vec<(
        std::net::SocketAddr,
        bridge_core::protocol::messages::ClockPong,
    )> = Vec::with_capacity(PONGS_PER_TURN);
    let mut heard = HeardPeers::default();
    let mut buf = vec![0u8; FRAME_BUF];
    loop {
        if ctl.should_stop() {
            // Say goodbye so the others' arbiters drop us now, not after
            // their peer timeout (a lost goodbye only costs that timeout).
            if let Some(l) = link.as_mut() {
                let now = clock.now_ns();
                let bye = Message::Goodbye(Goodbye {
                    peer_id: PeerId(source),
                });
                let header = Header::new(
                    bye.kind(),
                    bye.format_type(),
                    session,
                    source,
                    clock_sequence,
                    arbiter.session_time(now),
                );
                if let Ok(n) = bye.encode(&header, key.as_ref(), &mut buf) {
                    l.send_to_session(&buf[..n], &heard, now);
                }
            }
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
            if arbiter_session != Some(session) {
                arbiter = ClockDriftArbiter::new(source, ArbiterConfig::default(), clock.now_ns());
                arbiter_session = Some(session);
                heard = HeardPeers::default();
                mapped_by_identity = true;
            }
            let listing = d
                .addrs()
                .iter()
                .map(|a| a.to_string())
                .collect::<Vec<_>>()
                .join(", ");
            let group = match &d {
                jamnet_plugin_kit::Destination::Multicast(std::net::SocketAddr::V4(g)) => Some(*g),
                jamnet_plugin_kit::Destination::Multicast(a) => {
                    return Err(WorkerError::Io(format!(
                        "IPv6 multicast {a} is not supported"
                    )));
                }
                _ => None,
            };
            // Lead sends from an ephemeral port (pongs come back to it);
            // a unicast follower listens on the session's port.
            let unicast_port = match (mode, group) {
                (Mode::Follow, None) => d.port(),
                _ => 0,
            };
            let net = bridge_core::net::NetConfig {
                group,
                unicast_port,
                multicast_interface: env.multicast_interface,
                ..bridge_core::net::NetConfig::default()
            };
            let driver = bridge_core::net::UdpDriver::open(&net)
                .map_err(|e| WorkerError::Io(e.to_string()))?;
            let at = driver
                .local_addr()
                .map(|a| a.to_string())
                .unwrap_or_default();
            link = Some(Link {
                driver: Box::new(driver),
                multicast: group.is_some(),
                transport_dest: if mode == Mode::Lead {
                    d.addrs().to_vec()
                } else {
                    Vec::new()
                },
            });
            ctl.running(match (mode, group) {
                (Mode::Lead, _) => format!("leading to {listing} (from {at})"),
                (Mode::Follow, Some(g)) => format!("following: group {g} (unicast {at})"),
                (Mode::Follow, None) => format!("following: listening on {at}"),
            });
        }
        let Some(l) = link.as_mut() else {
            continue;
        };
        publisher.set_interval_ns(params.announce_ms.value() as u64 * 1_000_000);
        let now = clock.now_ns();
        if let Some(ping) = due_ping(&mut arbiter, now) {
            let header = Header::new(
                ping.kind(),
                ping.format_type(),
                session,
                source,
                clock_sequence,
                arbiter.session_time(now),
            );
            clock_sequence = clock_sequence.wrapping_add(1);
            if let Ok(n) = ping.encode(&header, key.as_ref(), &mut buf) {
                l.send_to_session(&buf[..n], &heard, now);
            }
        }
        let unsettled = lead_time_unsettled(&arbiter);
        match mode {
            Mode::Lead => {
                while let Ok(snap) = snapshots.pop() {
                    // The block's own local time: its position belongs to
                    // that instant, not to when the worker got round to it.
                    let Some(u) = publisher.on_snapshot(&snap, snap.local_ns) else {
                        continue;
                    };
                    if unsettled {
                        // A stamp we cannot map to session time would put
                        // the command seconds off on other machines; the
                        // next re-announce carries the state once synced.
                        stats.unsynced.fetch_add(1, Ordering::Relaxed);
                        continue;
                    }
                    let stamp = arbiter.session_time(snap.local_ns);
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
                        timestamp: stamp,
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
                        stamp,
                    );
                    header.flags = Flags(0);
                    sequence = sequence.wrapping_add(1);
                    match msg.encode(&header, key.as_ref(), &mut buf) {
                        Ok(n) => {
                            for d in l.transport_dest.iter() {
                                if l.driver.send_to(&buf[..n], *d) {
                                    stats.frames_sent.add(1);
                                } else {
                                    stats.send_errors.fetch_add(1, Ordering::Relaxed);
                                }
                            }
                        }
                        Err(_) => {
                            stats.send_errors.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
            }
            Mode::Follow => {
                while let Ok(snap) = snapshots.pop() {
                    follower.on_block(snap.running_sample, snap.local_ns);
                }
            }
        }
        received.clear();
        let wait = TURN.min(std::time::Duration::from_nanos(
            arbiter.next_poll_at().saturating_sub(clock.now_ns()),
        ));
        let following = mode == Mode::Follow;
        l.driver
            .poll(
                std::time::Instant::now() + wait,
                |_via, from, bytes, arrived| {
                    // The pong's t4 and the ping's t2: when the kernel got the
                    // datagram, not when this thread woke to read it.
                    let now = clock.now_ns();
                    let age = std::time::Instant::now().saturating_duration_since(arrived);
                    let at = now.saturating_sub(age.as_nanos() as u64);
                    let frame = match decode_frame(bytes, key.as_ref()) {
                        Ok(f) => f,
                        Err(r) => {
                            stats.rejects.count(r);
                            return;
                        }
                    };
                    let h = frame.header;
                    if h.source == source {
                        return; // our own multicast, looped back
                    }
                    if h.session != session {
                        stats.frames_ignored.fetch_add(1, Ordering::Relaxed);
                        return;
                    }
                    let msg = match Message::parse(&frame) {
                        Ok(m) => m,
                        Err(r) => {
                            stats.rejects.count(r);
                            return;
                        }
                    };
                    stats.rejects.count_accepted();
                    heard.touch(h.source, from, at);
                    // Every frame's header stamp observes its sender's
                    // timeline one way (only peers that already exchange
                    // pings with us are modelled).
                    observe_stamp(&mut arbiter, at, h.source, h.timestamp, &msg);
                    // Only clock_ping/clock_pong senders enter the arbiter: a
                    // peer that sends transport frames but answers no pings has
                    // no clock model and must not be elected master.
                    match on_clock_message(&mut arbiter, at, now, h.source, &msg) {
                        Ok(ClockReply::Pong(pong)) => {
                            if pongs.len() < PONGS_PER_TURN {
                                pongs.push((from, pong));
                            }
                            return;
                        }
                        Ok(ClockReply::Handled) | Err(_) => return,
                        Ok(ClockReply::NotClock) => {}
                    }
                    match msg {
                        Message::Goodbye(g) if g.peer_id.0 == h.source => {
                            arbiter.on_goodbye(at, h.source);
                            heard.forget(h.source);
                        }
                        Message::Transport(t) if following => {
                            stats.frames_received.fetch_add(1, Ordering::Relaxed);
                            let clock_peers = arbiter.peer_stats(at).count();
                            leave_identity_mapping(
                                &mut mapped_by_identity,
                                &arbiter,
                                clock_peers,
                                &mut follower,
                                &mut received,
                                &stats,
                            );
                            if follow_time_unsettled(&arbiter, clock_peers) {
                                // Its session time cannot be mapped yet; the
                                // lead re-announces its state.
                                stats.unsynced.fetch_add(1, Ordering::Relaxed);
                                return;
                            }
                            let mut cmd =
                                bridge_core::transport::TransportCommand::from_wire(&t, h.source);
                            cmd.timestamp = arbiter.local_time_for_session(cmd.timestamp);
                            received.push(cmd);
                        }
                        // Another lead's frames while we lead: not ours to apply.
                        Message::Transport(_) => {}
                        _ => {
                            stats.frames_ignored.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                },
            )
            .map_err(|e| WorkerError::Io(e.to_string()))?;
        for (to, mut pong) in pongs.drain(..) {
            // t3 is the send instant (the pinger measures our turnaround).
            let now = clock.now_ns();
            pong.t3 = arbiter.session_time(now).max(pong.t2);
            let msg = Message::ClockPong(pong);
            let header = Header::new(
                msg.kind(),
                msg.format_type(),
                session,
                source,
                clock_sequence,
                pong.t3,
            );
            clock_sequence = clock_sequence.wrapping_add(1);
            if let Ok(n) = msg.encode(&header, key.as_ref(), &mut buf) {
                l.driver.send_to(&buf[..n], to);
            }
        }
        let now = clock.now_ns();
        if following {
            let clock_peers = arbiter.peer_stats(now).count();
            leave_identity_mapping(
                &mut mapped_by_identity,
                &arbiter,
                clock_peers,
                &mut follower,
                &mut received,
                &stats,
            );
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
        stats
            .peers
            .store(heard.live(now).count() as u32, Ordering::Relaxed);
        let clock_peers = arbiter.peer_stats(now).count();
        stats
            .clock_peers
            .store(clock_peers as u32, Ordering::Relaxed);
        stats
            .clock_master
            .store(arbiter.master().unwrap_or(0), Ordering::Relaxed);
        stats.sync_quality.set(sync_quality(&arbiter, clock_peers));
        stats
            .session_offset_ms
            .set(((arbiter.session_time(now) as i128 - now as i128) as f64 / 1e6) as f32);
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
                WorkerEnv::plugin(),
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
        self.follow_host(follow, running, frames, sample_rate, &snap, view.state);
        self.stats.blocks.add(1);
        ProcessStatus::Normal
    }
}

impl JamnetTransport {
    /// Follow mode with `Host transport control` on: ask the CLAP host's
    /// transport to play, stop and locate with the session (see
    /// `host_follow`). Realtime-safe: atomics and the host's thread-safe
    /// `request_callback`.
    #[allow(clippy::too_many_arguments)]
    fn follow_host(
        &mut self,
        follow: bool,
        running: u64,
        frames: u32,
        sample_rate: f64,
        snap: &HostSnapshot,
        session: Option<bridge_core::transport::TransportState>,
    ) {
        let control = self
            .host_link
            .as_ref()
            .map_or(TransportControl::Unknown, |l| l.transport_control());
        let code = match (&self.host_link, control) {
            (None, _) => 3,
            (Some(_), TransportControl::Unknown) => 0,
            (Some(_), TransportControl::Offered) => 1,
            (Some(_), TransportControl::NotOffered) => 2,
        };
        self.stats.host_control.store(code, Ordering::Relaxed);
        let (Some(link), Some(st), true, true) = (
            &self.host_link,
            session,
            follow && self.params.host_control.value(),
            control == TransportControl::Offered,
        ) else {
            self.host_follower.reset();
            return;
        };
        let request = self.host_follower.on_block(
            running,
            u64::from(frames),
            sample_rate,
            SessionTransport {
                playing: st.playing,
                beats: st.beat,
                bpm: st.bpm,
            },
            HostTransport {
                playing: snap.playing,
                beats: snap.pos_beats,
                bpm: snap.tempo,
            },
        );
        if let Some(request) = request {
            if link.request(request) {
                self.stats.host_requests.fetch_add(1, Ordering::Relaxed);
            }
        }
        if let Some(ms) = self.host_follower.reaction_ms(sample_rate) {
            self.stats.host_reaction_ms.set(ms as f32);
        }
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

jamnet_plugin_kit::jamnet_export_clap!(JamnetTransport);
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
            run_worker(
                || Mode::Follow,
                p,
                s,
                snap_rx,
                anchor_tx,
                WorkerEnv::plugin(),
                ctl,
            )
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
        // A sender of transport frames only has no clock model: it is no
        // clock peer, and session time stayed the local clock.
        assert_eq!(stats.clock_peers.load(Ordering::Relaxed), 0);
        assert_ne!(stats.clock_master.load(Ordering::Relaxed), 7);
        assert_eq!(stats.unsynced.load(Ordering::Relaxed), 0);
    }
}

/// Lead and follow workers on real loopback multicast whose clocks
/// disagree by seconds, as two machines' `CLOCK_MONOTONIC`s do.
#[cfg(test)]
mod session_clock_tests {
    use super::*;
    use bridge_core::transport::TransportCommandKind;
    use bridge_core::worker::clock::{monotonic_ns, SkewedClock};

    /// The lead's clock: 5 s ahead of the follower's and 40 ppm fast.
    const LEAD_SKEW: SkewedClock = SkewedClock {
        offset_ns: 5_000_000_000,
        drift_ppm: 40.0,
    };
    const BLOCK: u64 = 64;
    const RATE: u64 = 48_000;

    struct Running {
        sup: Supervisor,
        stats: Arc<TransportStats>,
        snapshots: rtrb::Producer<HostSnapshot>,
        anchors: rtrb::Consumer<Anchor>,
    }

    fn start(
        mode: Mode,
        id: u32,
        destination: &str,
        clock: Arc<dyn Clock>,
        name: &'static str,
    ) -> Running {
        let params = Arc::new(TransportParams::default());
        {
            let mut s = params.session.write();
            s.session = "session-clock-test".into();
            s.destination = destination.into();
        }
        let stats = Arc::new(TransportStats::default());
        stats.sample_rate.store(RATE as u32, Ordering::Relaxed);
        stats.source_id.store(id, Ordering::Relaxed);
        let (snapshots, snap_rx) = rtrb::RingBuffer::new(SNAPSHOT_RING);
        let (anchor_tx, anchors) = rtrb::RingBuffer::new(ANCHOR_RING);
        let mut sup = Supervisor::new(stats.status.clone());
        let s = stats.clone();
        let env = WorkerEnv {
            clock,
            multicast_interface: std::net::Ipv4Addr::LOCALHOST,
        };
        sup.start(name, move |ctl| {
            run_worker(move || mode, params, s, snap_rx, anchor_tx, env, ctl)
        });
        Running {
            sup,
            stats,
            snapshots,
            anchors,
        }
    }

    /// A host block as `process()` records it: `local_ns` read from the
    /// plugin's own clock.
    fn block(running: u64, local_ns: u64, playing: bool, pos_samples: i64) -> HostSnapshot {
        HostSnapshot {
            playing,
            recording: false,
            tempo: 120.0,
            ts_num: 4,
            ts_den: 4,
            pos_samples,
            pos_seconds: pos_samples as f64 / RATE as f64,
            pos_beats: pos_samples as f64 / RATE as f64 * 2.0,
            block_len: BLOCK as u32,
            sample_rate: RATE as f32,
            running_sample: running,
            local_ns,
        }
    }

    /// What one session showed while both workers ran (`[lead, follow]`).
    #[derive(Debug)]
    struct Observed {
        /// Follower's PLAY anchor minus the block where the lead's host
        /// started playing, samples (both hosts' running samples are the
        /// same true instants).
        play_error_samples: f64,
        clock_peers: [u32; 2],
        sync_quality: [f32; 2],
        session_offset_ms: [f32; 2],
        /// The lead's clock minus the follower's then, ms (5 s plus 40 ppm
        /// of the monotonic reading: SkewedClock scales the absolute value).
        true_skew_ms: f64,
        frames_sent: u64,
        frames_received: u64,
        /// Follower's clock peers after the lead stopped (its goodbye).
        follow_clock_peers_after_goodbye: u32,
    }

    /// How the two workers reach each other.
    enum Net {
        /// A private loopback multicast group (this last octet of
        /// 239.255.77.x) so parallel tests never hear each other.
        Multicast(u8),
        /// The lead sends to 127.0.0.1:port, where the follower listens.
        Unicast,
    }

    /// Runs one session: waits for the arbiters to agree on the lower id as
    /// clock master, then the lead's host starts playing; reports what the
    /// follower made of it.
    fn play_across_skewed_clocks(lead_id: u32, follow_id: u32, net: Net) -> Observed {
        let port = std::net::UdpSocket::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let dest = match net {
            Net::Multicast(octet) => format!("239.255.77.{octet}:{port}"),
            Net::Unicast => format!("127.0.0.1:{port}"),
        };
        let mut lead = start(Mode::Lead, lead_id, &dest, Arc::new(LEAD_SKEW), "lead");
        let mut follow = start(
            Mode::Follow,
            follow_id,
            &dest,
            Arc::new(MonotonicClock::new()),
            "follow",
        );
        let want_master = lead_id.min(follow_id);
        // Both hosts run blocks of 64 samples at 48 kHz paced in real time
        // from t0: block n starts at the true instant t0 + n·64/48 kHz,
        // which the lead's clock reads as LEAD_SKEW.at(that).
        let t0 = monotonic_ns();
        let at = |running: u64| t0 + running * 1_000_000_000 / RATE;
        let mut running = 0u64;
        let mut play_from: Option<u64> = None;
        let mut synced_since: Option<u64> = None;
        let mut play_anchor = None;
        while monotonic_ns() < t0 + 12_000_000_000 && play_anchor.is_none() {
            let now = monotonic_ns();
            while at(running) <= now {
                let playing = play_from.is_some_and(|p| running >= p);
                let pos = play_from.map_or(0, |p| running.saturating_sub(p) as i64);
                let _ =
                    lead.snapshots
                        .push(block(running, LEAD_SKEW.at(at(running)), playing, pos));
                let _ = follow.snapshots.push(block(running, at(running), false, 0));
                running += BLOCK;
            }
            let agreed = [&lead.stats, &follow.stats].iter().all(|s| {
                s.clock_master.load(Ordering::Relaxed) == want_master && s.sync_quality.get() > 0.0
            });
            match (agreed, synced_since) {
                (true, None) => synced_since = Some(now),
                (false, _) if play_from.is_none() => synced_since = None,
                _ => {}
            }
            // Half a second of exchanges after agreeing, then press play.
            if play_from.is_none() && synced_since.is_some_and(|t| now > t + 500_000_000) {
                play_from = Some(running);
            }
            while let Ok(a) = follow.anchors.pop() {
                if a.kind == TransportCommandKind::Play && play_from.is_some() {
                    play_anchor = Some(a);
                }
            }
            std::thread::sleep(std::time::Duration::from_micros(500));
        }
        let both = [&lead.stats, &follow.stats];
        let mut seen = Observed {
            play_error_samples: f64::NAN,
            clock_peers: both.map(|s| s.clock_peers.load(Ordering::Relaxed)),
            sync_quality: both.map(|s| s.sync_quality.get()),
            session_offset_ms: both.map(|s| s.session_offset_ms.get()),
            true_skew_ms: {
                let m = monotonic_ns();
                (LEAD_SKEW.at(m) - m) as f64 / 1e6
            },
            frames_sent: lead.stats.frames_sent.total(),
            frames_received: follow.stats.frames_received.load(Ordering::Relaxed),
            follow_clock_peers_after_goodbye: u32::MAX,
        };
        lead.sup.stop();
        // The follower's turn is at most a millisecond.
        std::thread::sleep(std::time::Duration::from_millis(100));
        seen.follow_clock_peers_after_goodbye = follow.stats.clock_peers.load(Ordering::Relaxed);
        follow.sup.stop();
        let play_from = play_from.expect("the arbiters never agreed on the master");
        let a = play_anchor.expect("no PLAY anchor from the follower");
        assert_eq!((a.from, a.master), (lead_id, lead_id));
        seen.play_error_samples = a.sample - play_from as f64;
        seen
    }

    fn check(seen: &Observed) {
        // Read as the lead's CLOCK_MONOTONIC, the PLAY stamp would land
        // the skew (over 5 s, 240 000 samples) late; through session time it lands within
        // a millisecond (48 samples) of the instant the lead's host played.
        assert!(
            seen.play_error_samples.abs() < 48.0,
            "PLAY anchor off the true instant: {seen:?}"
        );
        assert_eq!(seen.clock_peers, [1, 1], "{seen:?}");
        assert!(seen.sync_quality.iter().all(|&q| q > 0.0), "{seen:?}");
        // One session timeline: session minus local differs between the
        // two by the lead's skew (whoever is master), to well under 1 ms.
        let gap = f64::from(seen.session_offset_ms[1] - seen.session_offset_ms[0]);
        assert!(seen.true_skew_ms > 5000.0, "{seen:?}");
        assert!((gap - seen.true_skew_ms).abs() < 1.0, "{seen:?}");
        assert!(seen.frames_sent > 0 && seen.frames_received > 0, "{seen:?}");
        assert_eq!(seen.follow_clock_peers_after_goodbye, 0, "{seen:?}");
    }

    /// The lead is the clock master: session time is the lead's skewed
    /// clock, and the follower maps it onto its own.
    #[test]
    fn play_lands_on_time_across_skewed_clocks_lead_is_master() {
        let seen = play_across_skewed_clocks(0x100, 0x200, Net::Multicast(91));
        eprintln!("lead is master: {seen:?}");
        check(&seen);
    }

    /// The follower is the clock master: the lead stamps in the follower's
    /// timeline.
    #[test]
    fn play_lands_on_time_across_skewed_clocks_follower_is_master() {
        let seen = play_across_skewed_clocks(0x300, 0x200, Net::Multicast(92));
        eprintln!("follower is master: {seen:?}");
        check(&seen);
    }

    /// Unicast session: the lead pings its destination list, the follower
    /// pings the address it heard the lead from; pongs go back to the
    /// pinger's address.
    #[test]
    fn play_lands_on_time_across_skewed_clocks_unicast() {
        let seen = play_across_skewed_clocks(0x100, 0x200, Net::Unicast);
        eprintln!("unicast, lead is master: {seen:?}");
        check(&seen);
    }

    /// A headless bridge-core `LivePeer` (what JAMNet Send/Receive and
    /// `toaster peer` run) in the tests' session on `group`.
    fn spawn_live_peer(
        id: u32,
        group: std::net::SocketAddrV4,
        clock: Arc<dyn Clock>,
    ) -> (
        bridge_core::worker::Worker<bridge_core::worker::peer::LivePeer>,
        bridge_core::worker::peer::SharedReport,
    ) {
        use bridge_core::worker::peer::{LivePeer, PeerConfig};
        use bridge_core::worker::{Worker, WorkerConfig};
        let session = {
            let p = TransportParams::default();
            p.session.write().session = "session-clock-test".into();
            let uuid = p.session.read().session_uuid();
            uuid
        };
        let (core, report) = LivePeer::new(PeerConfig {
            session,
            source: id,
            name: "live-peer".into(),
            ..PeerConfig::default()
        });
        let worker = Worker::spawn(
            WorkerConfig {
                net: bridge_core::net::NetConfig {
                    group: Some(group),
                    multicast_interface: std::net::Ipv4Addr::LOCALHOST,
                    ..bridge_core::net::NetConfig::default()
                },
                ..WorkerConfig::default()
            },
            clock,
            core,
            None,
            Arc::new(bridge_core::handle::LinkStats::default()),
        )
        .unwrap();
        (worker, report)
    }

    fn private_group(last_octet: u8) -> std::net::SocketAddrV4 {
        let port = std::net::UdpSocket::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        std::net::SocketAddrV4::new(std::net::Ipv4Addr::new(239, 255, 77, last_octet), port)
    }

    /// Interop with `LivePeer`: a LivePeer whose clock is 5 s (+40 ppm)
    /// ahead and a Transport follower elect the same clock master (the
    /// LivePeer, lower id), and the follower's session time is the
    /// LivePeer's clock.
    #[test]
    fn follower_syncs_to_a_live_peer_session_clock() {
        let group = private_group(93);
        let (live, report) = spawn_live_peer(0x100, group, Arc::new(LEAD_SKEW));
        let mut follow = start(
            Mode::Follow,
            0x200,
            &group.to_string(),
            Arc::new(MonotonicClock::new()),
            "follow",
        );
        let t0 = monotonic_ns();
        let mut synced_at = None;
        while monotonic_ns() < t0 + 8_000_000_000 {
            let s = &follow.stats;
            if s.clock_master.load(Ordering::Relaxed) == 0x100 && s.sync_quality.get() > 0.0 {
                let now = monotonic_ns();
                match synced_at {
                    None => synced_at = Some(now),
                    Some(t) if now > t + 500_000_000 => break,
                    _ => {}
                }
            }
            // Keep the follower's snapshot ring drained as a host would.
            let _ = follow.snapshots.push(block(0, monotonic_ns(), false, 0));
            std::thread::sleep(std::time::Duration::from_millis(2));
        }
        let m = monotonic_ns();
        let true_skew_ms = (LEAD_SKEW.at(m) - m) as f64 / 1e6;
        let offset_ms = f64::from(follow.stats.session_offset_ms.get());
        let clock_peers = follow.stats.clock_peers.load(Ordering::Relaxed);
        let live_clock = report.lock().clock;
        follow.sup.stop();
        drop(live.join());
        eprintln!(
            "live peer master: follower session - local {offset_ms:.3} ms, true skew \
             {true_skew_ms:.3} ms, live peer clock {live_clock:?}"
        );
        assert!(synced_at.is_some(), "follower never followed the LivePeer");
        assert_eq!(clock_peers, 1);
        assert!((offset_ms - true_skew_ms).abs() < 1.0);
        let live_clock = live_clock.expect("the LivePeer reports its clock");
        assert_eq!(live_clock.master.map(|p| p.0), Some(0x100));
    }

    /// The other way round: a Transport lead whose clock is 5 s (+40 ppm)
    /// ahead is the clock master (lower id), and a `LivePeer` on the real
    /// clock follows its timeline.
    #[test]
    fn live_peer_follows_a_transport_lead_session_clock() {
        let group = private_group(95);
        let (live, report) = spawn_live_peer(0x200, group, Arc::new(MonotonicClock::new()));
        let lead = start(
            Mode::Lead,
            0x100,
            &group.to_string(),
            Arc::new(LEAD_SKEW),
            "lead",
        );
        let t0 = monotonic_ns();
        let mut seen = None;
        while monotonic_ns() < t0 + 8_000_000_000 {
            std::thread::sleep(std::time::Duration::from_millis(50));
            let Some(c) = report.lock().clock else {
                continue;
            };
            if c.synced && c.master.map(|p| p.0) == Some(0x100) && c.estimate.observations >= 8 {
                seen = Some(c);
                break;
            }
        }
        // The report's mapping was taken at its last refresh: apply it now.
        let m = monotonic_ns();
        let true_skew_ms = (LEAD_SKEW.at(m) - m) as f64 / 1e6;
        let lead_master = lead.stats.clock_master.load(Ordering::Relaxed);
        let mut lead = lead;
        lead.sup.stop();
        drop(live.join());
        let c = seen.expect("the LivePeer never followed the Transport lead");
        let live_offset_ms = (c.estimate.to_remote_i128(m) - m as i128) as f64 / 1e6;
        eprintln!(
            "transport lead master: live peer session - local {live_offset_ms:.3} ms, \
             true skew {true_skew_ms:.3} ms"
        );
        assert_eq!(lead_master, 0x100);
        assert!((live_offset_ms - true_skew_ms).abs() < 1.0);
    }
}
