//! DNS-SD discovery (`_toast._udp.local.`) through the `mdns-sd` crate, for
//! networks where multicast DNS works but our own multicast group may not be
//! routed (or a peer only knows unicast).
//!
//! [`MdnsDiscovery`] registers this peer (TXT `peer_id`, `session`) and browses
//! for others of the same session. What it finds are unicast addresses; the
//! live peer sends its heartbeats there, and the heartbeat exchange does the
//! rest (peer table, stream list, fast answer). mdns-sd runs its own thread.

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr};

use mdns_sd::{Receiver, ServiceDaemon, ServiceEvent, ServiceInfo};
use uuid::Uuid;

use crate::protocol::PeerId;

/// The DNS-SD service type of TOAST peers.
pub const SERVICE_TYPE: &str = "_toast._udp.local.";

/// mDNS errors.
///
/// Thread-safe: yes. Realtime-safe: no.
#[derive(Debug, thiserror::Error)]
pub enum MdnsError {
    /// The mdns-sd daemon failed.
    #[error("mdns-sd: {0}")]
    Daemon(#[from] mdns_sd::Error),
}

/// A peer found by DNS-SD.
///
/// Thread-safe: yes. Realtime-safe: no.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct MdnsPeer {
    /// Its peer id (from TXT).
    pub peer_id: PeerId,
    /// Where it receives unicast.
    pub addr: SocketAddr,
    /// DNS-SD instance full name.
    pub fullname: String,
}

/// Registration + browsing of `_toast._udp.local.`.
///
/// Thread-safe: no (poll from one thread; `Send`). Realtime-safe: no.
pub struct MdnsDiscovery {
    daemon: ServiceDaemon,
    browse: Receiver<ServiceEvent>,
    fullname: String,
    own: PeerId,
    session: String,
    known: HashMap<String, MdnsPeer>,
}

impl MdnsDiscovery {
    /// Register `own` (reachable at `ip:port`) in `session` and start browsing.
    pub fn start(
        own: PeerId,
        session: Uuid,
        name: &str,
        ip: Ipv4Addr,
        port: u16,
    ) -> Result<Self, MdnsError> {
        let daemon = ServiceDaemon::new()?;
        let instance = format!("{name}-{own}");
        let host = format!("toast-{own}.local.");
        let props = [
            ("peer_id", own.to_string()),
            ("session", session.to_string()),
        ];
        let info = ServiceInfo::new(
            SERVICE_TYPE,
            &instance,
            &host,
            std::net::IpAddr::V4(ip),
            port,
            &props[..],
        )?;
        let fullname = info.get_fullname().to_string();
        daemon.register(info)?;
        let browse = daemon.browse(SERVICE_TYPE)?;
        Ok(Self {
            daemon,
            browse,
            fullname,
            own,
            session: session.to_string(),
            known: HashMap::new(),
        })
    }

    /// New peers of our session resolved since the last call (never ourselves).
    pub fn poll(&mut self) -> Vec<MdnsPeer> {
        let mut new = Vec::new();
        while let Ok(ev) = self.browse.try_recv() {
            match ev {
                ServiceEvent::ServiceResolved(r) => {
                    if r.fullname == self.fullname
                        || r.get_property_val_str("session") != Some(self.session.as_str())
                    {
                        continue;
                    }
                    let Some(peer_id) = r
                        .get_property_val_str("peer_id")
                        .and_then(|p| p.parse::<PeerId>().ok())
                    else {
                        continue;
                    };
                    if peer_id == self.own {
                        continue;
                    }
                    let Some(ip) = r.get_addresses_v4().into_iter().min() else {
                        continue;
                    };
                    let peer = MdnsPeer {
                        peer_id,
                        addr: SocketAddr::from((ip, r.port)),
                        fullname: r.fullname.clone(),
                    };
                    if self.known.get(&r.fullname) != Some(&peer) {
                        self.known.insert(r.fullname.clone(), peer.clone());
                        new.push(peer);
                    }
                }
                ServiceEvent::ServiceRemoved(_, fullname) => {
                    self.known.remove(&fullname);
                }
                _ => {}
            }
        }
        new
    }

    /// Every peer currently resolved.
    pub fn peers(&self) -> impl Iterator<Item = &MdnsPeer> {
        self.known.values()
    }

    /// Unregister and stop the daemon.
    pub fn stop(self) {
        let _ = self.daemon.unregister(&self.fullname);
        let _ = self.daemon.shutdown();
    }
}
