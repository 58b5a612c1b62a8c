//! Session core: the peer table, heartbeat timing and reception statistics,
//! as a sans-IO state machine.
//!
//! The driver decodes each datagram and tells the [`Session`] what it was
//! ([`Session::on_frame`], [`Session::on_heartbeat`], [`Session::on_goodbye`],
//! [`Session::on_rejected`]); it asks [`Session::poll`] what to do next
//! (send a heartbeat, a goodbye, report a peer that joined or left) and
//! sleeps until [`Session::poll_at`]. Time is always a parameter (ns on the
//! session timeline).
//!
//! Rules (PROTOCOL.md §3.1): a heartbeat every 250 ms; a peer not heard for
//! 2 s is gone; `goodbye` removes it at once. Discovery latency: a newcomer
//! is answered with a heartbeat at once (rate-limited to one answer per
//! [`SessionConfig::answer_min_gap_ns`]), so both sides list each other
//! within one path delay plus that gap, not a whole heartbeat period.
//! Frames from our own id (multicast loopback) are counted and ignored.

pub mod stats;

pub use stats::{SeqStats, SeqVerdict};

use crate::protocol::{Header, Message, RejectReason};

/// Stream types of TOAST v2 (frame header `stream_type`), as indices 0–4.
pub const STREAM_TYPES: usize = 5;

/// Session timing and limits.
///
/// Thread-safe: yes (plain value). Realtime-safe: yes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionConfig {
    /// This peer's `source` id (never 0).
    pub self_id: u32,
    /// Heartbeat period, ns (PROTOCOL.md: 250 ms).
    pub heartbeat_interval_ns: u64,
    /// A peer silent this long is gone, ns (PROTOCOL.md: 2 s).
    pub peer_timeout_ns: u64,
    /// Answers to newcomers are at least this far apart, ns.
    pub answer_min_gap_ns: u64,
    /// Peers tracked at once; more are refused and counted.
    pub max_peers: usize,
}

impl SessionConfig {
    /// Defaults from PROTOCOL.md for peer `self_id`.
    pub fn new(self_id: u32) -> Self {
        SessionConfig {
            self_id,
            heartbeat_interval_ns: 250_000_000,
            peer_timeout_ns: 2_000_000_000,
            answer_min_gap_ns: 20_000_000,
            max_peers: 64,
        }
    }
}

/// Why a peer left the table.
///
/// Thread-safe: yes. Realtime-safe: yes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum LeftReason {
    /// Not heard for `peer_timeout_ns`.
    Timeout,
    /// Said goodbye.
    Goodbye,
}

/// What the driver should do or report.
///
/// Thread-safe: yes. Realtime-safe: yes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionEvent {
    /// Send our heartbeat now (the driver fills in name, port, streams).
    SendHeartbeat,
    /// A peer appeared (its first heartbeat or frame).
    PeerJoined {
        /// The peer's `source`.
        peer_id: u32,
    },
    /// A peer left.
    PeerLeft {
        /// The peer's `source`.
        peer_id: u32,
        /// Timeout or goodbye.
        reason: LeftReason,
    },
}

/// What a heartbeat said about its sender (the fields the session keeps).
///
/// Thread-safe: yes. Realtime-safe: yes.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct HeartbeatInfo {
    /// Display name.
    pub name: String,
    /// Program and version.
    pub app: String,
    /// UDP port the peer receives unicast on.
    pub port: u16,
}

/// One known peer.
///
/// Thread-safe: no. Realtime-safe: no (holds `String`s, set when a heartbeat
/// changes them).
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Peer {
    /// The peer's `source` id.
    pub peer_id: u32,
    /// Name from its last heartbeat (empty until one arrives).
    pub name: String,
    /// App from its last heartbeat.
    pub app: String,
    /// Unicast port from its last heartbeat (0 until one arrives).
    pub port: u16,
    /// When we first heard it, ns.
    pub first_heard_ns: u64,
    /// When we last heard it, ns.
    pub last_heard_ns: u64,
    /// Heartbeats received.
    pub heartbeats: u64,
    /// Reception statistics per stream type (index = `stream_type − 1`:
    /// MIDI, AUDIO, VIDEO, TRANSPORT, CONTROL).
    pub streams: [SeqStats; STREAM_TYPES],
    /// Frames from this peer dropped after the header parsed, by reason index
    /// (`protocol::RejectReason as usize` via [`Session::on_reject`]).
    pub dropped: [u64; DROP_REASONS],
}

/// Distinct drop reasons counted per peer and per session.
pub const DROP_REASONS: usize = 16;

/// Session-wide counters.
///
/// Thread-safe: yes (plain value). Realtime-safe: yes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct SessionCounters {
    /// Frames with our own source id (multicast loopback), ignored.
    pub own_frames: u64,
    /// Frames from new peers refused because the table was full.
    pub refused_peers: u64,
    /// Datagrams dropped by reason index (see [`Peer::dropped`]).
    pub dropped: [u64; DROP_REASONS],
    /// Heartbeats requested by `poll`.
    pub heartbeats_sent: u64,
}

const EVENTS_MAX: usize = 64;

/// The session state machine. See the module docs.
///
/// Thread-safe: no (`Send`, owned by the worker). Realtime-safe: no (peer
/// names are `String`s); it runs on the worker thread, never the audio thread.
pub struct Session {
    config: SessionConfig,
    peers: Vec<Peer>,
    next_heartbeat_ns: u64,
    last_answer_ns: Option<u64>,
    answer_pending: bool,
    events: [Option<SessionEvent>; EVENTS_MAX],
    events_head: usize,
    events_len: usize,
    counters: SessionCounters,
    started: bool,
    leaving: bool,
}

impl Session {
    /// A session for `config.self_id`. The first heartbeat is due at once.
    pub fn new(config: SessionConfig) -> Self {
        Session {
            peers: Vec::with_capacity(config.max_peers),
            next_heartbeat_ns: 0,
            last_answer_ns: None,
            answer_pending: false,
            events: [None; EVENTS_MAX],
            events_head: 0,
            events_len: 0,
            counters: SessionCounters::default(),
            started: false,
            leaving: false,
            config,
        }
    }

    /// The configuration.
    pub fn config(&self) -> &SessionConfig {
        &self.config
    }

    /// Peers known now.
    pub fn peers(&self) -> &[Peer] {
        &self.peers
    }

    /// One peer.
    pub fn peer(&self, peer_id: u32) -> Option<&Peer> {
        self.peers.iter().find(|p| p.peer_id == peer_id)
    }

    /// Session-wide counters.
    pub fn counters(&self) -> &SessionCounters {
        &self.counters
    }

    /// Worst recent loss over all peers for `stream_type` (1–5); what a
    /// [`crate::burst::BurstSender`] adapts to (symmetric-path assumption).
    pub fn recent_loss(&self, stream_type: u8) -> f64 {
        let idx = (stream_type as usize).wrapping_sub(1);
        self.peers
            .iter()
            .filter_map(|p| p.streams.get(idx))
            .map(|s| s.loss_recent)
            .fold(0.0, f64::max)
    }

    fn emit(&mut self, e: SessionEvent) {
        if self.events_len == EVENTS_MAX {
            // Oldest report dropped; the table itself stays right.
            self.events_head = (self.events_head + 1) % EVENTS_MAX;
            self.events_len -= 1;
        }
        self.events[(self.events_head + self.events_len) % EVENTS_MAX] = Some(e);
        self.events_len += 1;
    }

    fn touch(&mut self, now: u64, source: u32) -> Option<usize> {
        if let Some(i) = self.peers.iter().position(|p| p.peer_id == source) {
            let p = &mut self.peers[i];
            p.last_heard_ns = p.last_heard_ns.max(now);
            return Some(i);
        }
        if self.leaving {
            return None;
        }
        if self.peers.len() >= self.config.max_peers {
            self.counters.refused_peers += 1;
            return None;
        }
        self.peers.push(Peer {
            peer_id: source,
            name: String::new(),
            app: String::new(),
            port: 0,
            first_heard_ns: now,
            last_heard_ns: now,
            heartbeats: 0,
            streams: [SeqStats::default(); STREAM_TYPES],
            dropped: [0; DROP_REASONS],
        });
        self.emit(SessionEvent::PeerJoined { peer_id: source });
        // Answer the newcomer at once (rate-limited) so it lists us quickly.
        self.answer_pending = true;
        Some(self.peers.len() - 1)
    }

    /// A valid frame arrived (any kind, heartbeats included) from `source`
    /// with header `stream_type` (1–5), `sequence` and `timestamp`. Returns
    /// the sequence verdict, or `None` for our own frames and refused peers.
    pub fn on_frame(
        &mut self,
        now: u64,
        source: u32,
        stream_type: u8,
        sequence: u32,
        timestamp: u64,
    ) -> Option<SeqVerdict> {
        if source == self.config.self_id {
            self.counters.own_frames += 1;
            return None;
        }
        let i = self.touch(now, source)?;
        let idx = (stream_type as usize)
            .checked_sub(1)
            .filter(|i| *i < STREAM_TYPES)?;
        Some(self.peers[i].streams[idx].on_frame(now, sequence, timestamp))
    }

    /// A heartbeat from `source` (call [`Session::on_frame`] for its header too).
    pub fn on_heartbeat(&mut self, now: u64, source: u32, info: &HeartbeatInfo) {
        self.on_heartbeat_fields(now, source, &info.name, &info.app, info.port);
    }

    fn on_heartbeat_fields(&mut self, now: u64, source: u32, name: &str, app: &str, port: u16) {
        if source == self.config.self_id {
            return;
        }
        let Some(i) = self.touch(now, source) else {
            return;
        };
        let p = &mut self.peers[i];
        p.heartbeats += 1;
        // Allocates only when the name or app changes.
        if p.name != name {
            p.name.clear();
            p.name.push_str(name);
        }
        if p.app != app {
            p.app.clear();
            p.app.push_str(app);
        }
        p.port = port;
    }

    /// A decoded, valid frame: updates the sequence statistics of its
    /// stream, and the table for heartbeats and goodbyes. The usual entry
    /// point for a driver (the lower-level `on_frame`/`on_heartbeat`/
    /// `on_goodbye` remain for tests and other transports).
    pub fn on_message(
        &mut self,
        now: u64,
        header: &Header,
        message: &Message<'_>,
    ) -> Option<SeqVerdict> {
        if let Message::Goodbye(_) = message {
            // Not `on_frame` first: a goodbye from an unknown peer must not add it.
            if header.source != self.config.self_id {
                self.on_goodbye(now, header.source);
            }
            return None;
        }
        let verdict = self.on_frame(
            now,
            header.source,
            header.stream_type as u8,
            header.sequence,
            header.timestamp,
        );
        if let Message::Heartbeat(hb) = message {
            self.on_heartbeat_fields(now, header.source, &hb.name, &hb.app, hb.port);
        }
        verdict
    }

    /// A datagram was dropped by the codec (`source` when its header was readable).
    pub fn on_reject(&mut self, source: Option<u32>, reason: RejectReason) {
        self.on_rejected(source, reason as usize);
    }

    /// `source` said goodbye: it leaves the table at once.
    pub fn on_goodbye(&mut self, _now: u64, source: u32) {
        if let Some(i) = self.peers.iter().position(|p| p.peer_id == source) {
            self.peers.swap_remove(i);
            self.emit(SessionEvent::PeerLeft {
                peer_id: source,
                reason: LeftReason::Goodbye,
            });
        }
    }

    /// A datagram was dropped for reason index `reason` (< [`DROP_REASONS`]);
    /// `source` when the header was readable.
    pub fn on_rejected(&mut self, source: Option<u32>, reason: usize) {
        let r = reason.min(DROP_REASONS - 1);
        self.counters.dropped[r] += 1;
        if let Some(p) = source.and_then(|s| self.peers.iter_mut().find(|p| p.peer_id == s)) {
            p.dropped[r] += 1;
        }
    }

    /// We are leaving: stop answering; the driver sends `goodbye` itself.
    pub fn leave(&mut self) {
        self.leaving = true;
    }

    /// Next thing to do or report at `now`; call until `None`.
    pub fn poll(&mut self, now: u64) -> Option<SessionEvent> {
        // Expire silent peers.
        let timeout = self.config.peer_timeout_ns;
        let mut i = 0;
        while i < self.peers.len() {
            if now.saturating_sub(self.peers[i].last_heard_ns) >= timeout {
                let gone = self.peers.swap_remove(i);
                self.emit(SessionEvent::PeerLeft {
                    peer_id: gone.peer_id,
                    reason: LeftReason::Timeout,
                });
            } else {
                i += 1;
            }
        }
        if self.events_len > 0 {
            let e = self.events[self.events_head].take();
            self.events_head = (self.events_head + 1) % EVENTS_MAX;
            self.events_len -= 1;
            return e;
        }
        if self.leaving {
            return None;
        }
        let answer_due = self.answer_pending
            && self
                .last_answer_ns
                .is_none_or(|t| now >= t.saturating_add(self.config.answer_min_gap_ns));
        if !self.started || now >= self.next_heartbeat_ns || answer_due {
            self.started = true;
            if answer_due {
                self.answer_pending = false;
                self.last_answer_ns = Some(now);
            }
            self.next_heartbeat_ns = now + self.config.heartbeat_interval_ns;
            self.counters.heartbeats_sent += 1;
            return Some(SessionEvent::SendHeartbeat);
        }
        None
    }

    /// When `poll` next has something to do (heartbeat, answer, or a peer timeout), ns.
    pub fn poll_at(&self) -> u64 {
        if self.events_len > 0 || !self.started {
            return 0;
        }
        let mut at = if self.leaving {
            u64::MAX
        } else {
            self.next_heartbeat_ns
        };
        if self.answer_pending && !self.leaving {
            let t = self
                .last_answer_ns
                .map_or(0, |t| t.saturating_add(self.config.answer_min_gap_ns));
            at = at.min(t);
        }
        for p in &self.peers {
            at = at.min(p.last_heard_ns.saturating_add(self.config.peer_timeout_ns));
        }
        at
    }
}

#[cfg(test)]
mod tests;
