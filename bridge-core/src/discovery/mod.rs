//! Discovery: who is in the session, found by heartbeats on the multicast
//! group (and unicast targets), plus DNS-SD where multicast DNS works
//! (`mdns`, feature `mdns`).
//!
//! [`Discovery`] is sans-IO: it is told about heartbeats and goodbyes with the
//! time, and says when to send our own heartbeat. Fast joining (both sides
//! list each other within one round trip, not within a heartbeat period):
//!
//! * a joining peer announces itself **at once** ([`Discovery::new`] makes the
//!   first heartbeat due immediately);
//! * an existing peer that hears a **newcomer** answers **at once**, with a
//!   rate limit ([`DiscoveryConfig::answer_min_gap_ns`]): an answer that would
//!   come too soon after the previous one is deferred to the end of the gap,
//!   never dropped, so a crowd joining together costs one heartbeat per gap.
//!
//! Otherwise heartbeats go every [`DiscoveryConfig::heartbeat_interval_ns`]
//! (250 ms) and a peer is gone after [`DiscoveryConfig::timeout_ns`] (2 s) of
//! silence, or at once on `goodbye`.

#[cfg(feature = "mdns")]
pub mod mdns;

use std::collections::BTreeMap;
use std::net::SocketAddr;

use crate::protocol::{PeerId, StreamInfo};

/// Discovery timing.
///
/// Thread-safe: yes (plain value). Realtime-safe: yes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct DiscoveryConfig {
    /// Regular heartbeat period, ns (PROTOCOL.md: 250 ms).
    pub heartbeat_interval_ns: u64,
    /// Silence after which a peer is gone, ns (PROTOCOL.md: 2 s).
    pub timeout_ns: u64,
    /// Least time between two immediate answers to newcomers, ns.
    pub answer_min_gap_ns: u64,
    /// Most peers tracked (further newcomers are ignored and counted).
    pub max_peers: usize,
}

impl Default for DiscoveryConfig {
    fn default() -> Self {
        Self {
            heartbeat_interval_ns: 250_000_000,
            timeout_ns: 2_000_000_000,
            answer_min_gap_ns: 20_000_000,
            max_peers: 256,
        }
    }
}

/// One known peer.
///
/// Thread-safe: yes. Realtime-safe: no (owns strings).
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct PeerEntry {
    /// Peer id (its frames' `source`).
    pub peer_id: PeerId,
    /// Display name from its heartbeat.
    pub name: String,
    /// Program/version from its heartbeat.
    pub app: String,
    /// Where it receives unicast: the heartbeat's source IP and advertised port.
    pub addr: SocketAddr,
    /// Streams it offers.
    #[serde(skip)]
    pub streams: Vec<StreamInfo>,
    /// First heard, ns.
    pub first_seen_ns: u64,
    /// Last heard, ns.
    pub last_seen_ns: u64,
    /// Heartbeats received from it.
    pub heartbeats: u64,
}

/// Something that changed in the peer list.
///
/// Thread-safe: yes. Realtime-safe: no.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum PeerEvent {
    /// A peer appeared.
    Joined {
        /// Who.
        peer_id: PeerId,
        /// Its name.
        name: String,
        /// Its unicast address.
        addr: SocketAddr,
        /// When, ns.
        at_ns: u64,
    },
    /// A peer said goodbye.
    Left {
        /// Who.
        peer_id: PeerId,
        /// When, ns.
        at_ns: u64,
    },
    /// A peer fell silent for the timeout.
    TimedOut {
        /// Who.
        peer_id: PeerId,
        /// When, ns.
        at_ns: u64,
    },
}

/// Discovery counters.
///
/// Thread-safe: yes. Realtime-safe: yes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct DiscoveryStats {
    /// Heartbeats we were told to send.
    pub heartbeats_sent: u64,
    /// Of those, immediate answers to newcomers.
    pub answers_sent: u64,
    /// Heartbeats received from others.
    pub heartbeats_received: u64,
    /// Newcomers ignored because the table was full.
    pub table_full: u64,
}

/// The discovery state machine.
///
/// Thread-safe: no (owned by the worker's core). Realtime-safe: no.
#[derive(Debug)]
pub struct Discovery {
    config: DiscoveryConfig,
    own: PeerId,
    peers: BTreeMap<PeerId, PeerEntry>,
    next_heartbeat_ns: u64,
    last_answer_ns: Option<u64>,
    pending_answer_ns: Option<u64>,
    events: Vec<PeerEvent>,
    stats: DiscoveryStats,
}

impl Discovery {
    /// Start discovering as `own` at `now_ns`: our first heartbeat is due now.
    pub fn new(config: DiscoveryConfig, own: PeerId, now_ns: u64) -> Self {
        Self {
            config,
            own,
            peers: BTreeMap::new(),
            next_heartbeat_ns: now_ns,
            last_answer_ns: None,
            pending_answer_ns: None,
            events: Vec::new(),
            stats: DiscoveryStats::default(),
        }
    }

    /// Our peer id.
    pub fn own(&self) -> PeerId {
        self.own
    }

    /// Known peers, by id.
    pub fn peers(&self) -> impl Iterator<Item = &PeerEntry> {
        self.peers.values()
    }

    /// One peer.
    pub fn peer(&self, id: PeerId) -> Option<&PeerEntry> {
        self.peers.get(&id)
    }

    /// Number of known peers.
    pub fn len(&self) -> usize {
        self.peers.len()
    }

    /// Whether no peer is known.
    pub fn is_empty(&self) -> bool {
        self.peers.is_empty()
    }

    /// Counters.
    pub fn stats(&self) -> DiscoveryStats {
        self.stats
    }

    /// Take the peer events since the last call.
    pub fn drain_events(&mut self) -> std::vec::Drain<'_, PeerEvent> {
        self.events.drain(..)
    }

    /// A heartbeat from `peer_id` arrived at `now_ns` from `from` (the
    /// datagram's source address), advertising unicast `port`.
    #[allow(clippy::too_many_arguments)]
    pub fn on_heartbeat(
        &mut self,
        now_ns: u64,
        peer_id: PeerId,
        name: &str,
        app: &str,
        from: SocketAddr,
        port: u16,
        streams: &[StreamInfo],
    ) {
        if peer_id == self.own {
            return; // our own multicast, looped back
        }
        self.stats.heartbeats_received += 1;
        let mut addr = from;
        addr.set_port(port);
        if let Some(p) = self.peers.get_mut(&peer_id) {
            p.last_seen_ns = now_ns;
            p.heartbeats += 1;
            p.addr = addr;
            if p.name != name {
                p.name = name.to_string();
            }
            if p.streams != streams {
                p.streams = streams.to_vec();
            }
            return;
        }
        if self.peers.len() >= self.config.max_peers {
            self.stats.table_full += 1;
            return;
        }
        self.peers.insert(
            peer_id,
            PeerEntry {
                peer_id,
                name: name.to_string(),
                app: app.to_string(),
                addr,
                streams: streams.to_vec(),
                first_seen_ns: now_ns,
                last_seen_ns: now_ns,
                heartbeats: 1,
            },
        );
        self.events.push(PeerEvent::Joined {
            peer_id,
            name: name.to_string(),
            addr,
            at_ns: now_ns,
        });
        // A newcomer: answer at once, or at the end of the rate-limit gap.
        let earliest = self
            .last_answer_ns
            .map_or(now_ns, |t| (t + self.config.answer_min_gap_ns).max(now_ns));
        self.pending_answer_ns = Some(self.pending_answer_ns.map_or(earliest, |p| p.min(earliest)));
    }

    /// Any datagram from a known peer proves it is alive.
    pub fn on_activity(&mut self, now_ns: u64, peer_id: PeerId) {
        if let Some(p) = self.peers.get_mut(&peer_id) {
            p.last_seen_ns = p.last_seen_ns.max(now_ns);
        }
    }

    /// `goodbye` from `peer_id`: gone at once.
    pub fn on_goodbye(&mut self, now_ns: u64, peer_id: PeerId) {
        if self.peers.remove(&peer_id).is_some() {
            self.events.push(PeerEvent::Left {
                peer_id,
                at_ns: now_ns,
            });
        }
    }

    /// Expire silent peers and say whether to send our heartbeat now.
    /// When it returns true, the caller sends one heartbeat (group and unicast
    /// targets) and the next regular one is scheduled.
    pub fn poll(&mut self, now_ns: u64) -> bool {
        let timeout = self.config.timeout_ns;
        let gone: Vec<PeerId> = self
            .peers
            .values()
            .filter(|p| now_ns.saturating_sub(p.last_seen_ns) > timeout)
            .map(|p| p.peer_id)
            .collect();
        for peer_id in gone {
            self.peers.remove(&peer_id);
            self.events.push(PeerEvent::TimedOut {
                peer_id,
                at_ns: now_ns,
            });
        }
        let answer_due = self.pending_answer_ns.is_some_and(|t| t <= now_ns);
        if answer_due || now_ns >= self.next_heartbeat_ns {
            if answer_due {
                self.stats.answers_sent += 1;
                self.last_answer_ns = Some(now_ns);
                self.pending_answer_ns = None;
            }
            self.stats.heartbeats_sent += 1;
            self.next_heartbeat_ns = now_ns + self.config.heartbeat_interval_ns;
            return true;
        }
        false
    }

    /// When [`Self::poll`] next has something to do, ns.
    pub fn next_deadline_ns(&self) -> u64 {
        let expiry = self
            .peers
            .values()
            .map(|p| p.last_seen_ns + self.config.timeout_ns + 1)
            .min()
            .unwrap_or(u64::MAX);
        self.next_heartbeat_ns
            .min(self.pending_answer_ns.unwrap_or(u64::MAX))
            .min(expiry)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: u64 = 1_000_000;

    fn addr(p: u16) -> SocketAddr {
        SocketAddr::from(([10, 0, 0, 1], p))
    }

    #[test]
    fn announces_at_once_then_every_interval() {
        let mut d = Discovery::new(DiscoveryConfig::default(), PeerId(1), 1000);
        assert!(d.poll(1000));
        assert!(!d.poll(1000 + 100 * MS));
        assert_eq!(d.next_deadline_ns(), 1000 + 250 * MS);
        assert!(d.poll(1000 + 250 * MS));
    }

    #[test]
    fn newcomer_gets_an_immediate_answer_rate_limited() {
        let mut d = Discovery::new(DiscoveryConfig::default(), PeerId(1), 0);
        assert!(d.poll(0));
        d.on_heartbeat(10 * MS, PeerId(2), "b", "t", addr(9), 5000, &[]);
        assert_eq!(d.next_deadline_ns(), 10 * MS);
        assert!(d.poll(10 * MS), "answer at once");
        // A second newcomer 5 ms later: deferred to the end of the 20 ms gap.
        d.on_heartbeat(15 * MS, PeerId(3), "c", "t", addr(9), 5001, &[]);
        assert!(!d.poll(15 * MS));
        assert_eq!(d.next_deadline_ns(), 30 * MS);
        assert!(d.poll(30 * MS));
        // A known peer's heartbeat triggers nothing.
        d.on_heartbeat(40 * MS, PeerId(2), "b", "t", addr(9), 5000, &[]);
        assert!(!d.poll(40 * MS));
        assert_eq!(d.stats().answers_sent, 2);
        let joined: Vec<_> = d.drain_events().collect();
        assert_eq!(joined.len(), 2);
        assert_eq!(
            d.peer(PeerId(3)).unwrap().addr,
            SocketAddr::from(([10, 0, 0, 1], 5001))
        );
    }

    #[test]
    fn own_heartbeats_are_ignored_goodbye_and_timeout_remove() {
        let mut d = Discovery::new(DiscoveryConfig::default(), PeerId(1), 0);
        d.on_heartbeat(0, PeerId(1), "me", "t", addr(1), 1, &[]);
        assert!(d.is_empty());
        d.on_heartbeat(0, PeerId(2), "b", "t", addr(1), 1, &[]);
        d.on_heartbeat(0, PeerId(3), "c", "t", addr(1), 1, &[]);
        d.on_goodbye(5 * MS, PeerId(2));
        assert_eq!(d.len(), 1);
        d.poll(2000 * MS);
        assert_eq!(d.len(), 1, "not yet: exactly the timeout");
        d.poll(2001 * MS);
        assert!(d.is_empty());
        let ev: Vec<_> = d.drain_events().collect();
        assert!(matches!(
            ev[2],
            PeerEvent::Left {
                peer_id: PeerId(2),
                ..
            }
        ));
        assert!(matches!(
            ev[3],
            PeerEvent::TimedOut {
                peer_id: PeerId(3),
                ..
            }
        ));
    }

    #[test]
    fn table_is_bounded() {
        let cfg = DiscoveryConfig {
            max_peers: 2,
            ..Default::default()
        };
        let mut d = Discovery::new(cfg, PeerId(1), 0);
        for i in 2..10 {
            d.on_heartbeat(0, PeerId(i), "x", "t", addr(1), 1, &[]);
        }
        assert_eq!(d.len(), 2);
        assert_eq!(d.stats().table_full, 6);
    }
}
