//! Session settings every plugin persists (outside the host's parameters,
//! because they are text): which session, its key, where to send, our name.
//!
//! The text the user typed is what is persisted; it is parsed (and rejected
//! with a clear [`SettingsError`]) when a worker starts, so a bad entry never
//! corrupts a saved project.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// Default UDP port (PROTOCOL.md section 7).
pub const DEFAULT_PORT: u16 = 47700;
/// Default multicast group (PROTOCOL.md section 7).
pub const DEFAULT_GROUP: Ipv4Addr = Ipv4Addr::new(239, 255, 77, 77);
/// Domain-separation context for deriving a 32-byte session key from a passphrase.
const KEY_CONTEXT: &str = "JAMNet 2026 session key from passphrase v1";
/// Domain-separation context for deriving a session UUID from a session name.
const SESSION_CONTEXT: &str = "JAMNet 2026 session id from name v1";

/// Why a settings text was rejected.
///
/// Thread-safe: yes (plain value). Realtime-safe: no (holds a `String`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SettingsError {
    /// An entry of the destination list is neither `ip`, `ip:port` nor `[ipv6]:port`.
    #[error("destination `{0}` is not an IP address or IP:port")]
    BadDestination(String),
    /// More than one entry, and one of them is a multicast group.
    #[error("a multicast group must be the only destination")]
    MixedMulticast,
    /// The key is 64 characters of hex but does not decode.
    #[error("session key: {0}")]
    BadKey(String),
}

/// Where a plugin sends: one multicast group, or a list of unicast peers.
///
/// Thread-safe: yes (plain value). Realtime-safe: no (unicast list is a `Vec`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Destination {
    /// One multicast group and port (everyone in the session listens there).
    Multicast(SocketAddr),
    /// Explicit unicast peers.
    Unicast(Vec<SocketAddr>),
}

impl Destination {
    /// Every address a frame is sent to.
    pub fn addrs(&self) -> &[SocketAddr] {
        match self {
            Destination::Multicast(a) => std::slice::from_ref(a),
            Destination::Unicast(v) => v,
        }
    }

    /// The port this peer listens on (the destination's port; peers of one
    /// session share it).
    pub fn port(&self) -> u16 {
        self.addrs().first().map_or(DEFAULT_PORT, |a| a.port())
    }
}

/// The persisted, user-typed session settings of one plugin instance.
///
/// Thread-safe: yes (plain value; the plugins keep it in an `RwLock` that only
/// the editor and the host's state calls touch, never the audio thread).
/// Realtime-safe: no.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct SessionSettings {
    /// Session name or UUID. Peers that type the same name join the same session.
    pub session: String,
    /// Optional session key: empty (no authentication), 64 hex digits (the raw
    /// 32-byte key) or any other text (a passphrase the key is derived from).
    pub key: String,
    /// Empty (the default multicast group), a multicast `group[:port]`, or a
    /// comma/space separated list of unicast `ip[:port]` peers.
    pub destination: String,
    /// Name other peers see for this instance.
    pub peer_name: String,
}

impl Default for SessionSettings {
    fn default() -> Self {
        Self {
            session: "jamnet".to_owned(),
            key: String::new(),
            destination: String::new(),
            peer_name: "JAMNet".to_owned(),
        }
    }
}

impl SessionSettings {
    /// The session's UUID: the text itself if it is a UUID, else derived from
    /// the name (so every peer typing "Friday jam" lands in the same session).
    pub fn session_uuid(&self) -> Uuid {
        session_uuid(&self.session)
    }

    /// The 32-byte session key, if any.
    pub fn key_bytes(&self) -> Result<Option<[u8; 32]>, SettingsError> {
        parse_key(&self.key)
    }

    /// The parsed destination.
    pub fn destination(&self) -> Result<Destination, SettingsError> {
        parse_destination(&self.destination)
    }
}

/// Session UUID from a name or UUID text (trimmed).
pub fn session_uuid(text: &str) -> Uuid {
    let text = text.trim();
    if let Ok(u) = Uuid::parse_str(text) {
        return u;
    }
    let hash = blake3::derive_key(SESSION_CONTEXT, text.as_bytes());
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(&hash[..16]);
    uuid::Builder::from_random_bytes(bytes).into_uuid()
}

/// Session key from its text form (see [`SessionSettings::key`]).
pub fn parse_key(text: &str) -> Result<Option<[u8; 32]>, SettingsError> {
    let text = text.trim();
    if text.is_empty() {
        return Ok(None);
    }
    if text.len() == 64 && text.bytes().all(|b| b.is_ascii_hexdigit()) {
        let mut key = [0u8; 32];
        for (i, out) in key.iter_mut().enumerate() {
            *out = u8::from_str_radix(&text[2 * i..2 * i + 2], 16)
                .map_err(|e| SettingsError::BadKey(e.to_string()))?;
        }
        return Ok(Some(key));
    }
    Ok(Some(blake3::derive_key(KEY_CONTEXT, text.as_bytes())))
}

/// Destination from its text form (see [`SessionSettings::destination`]).
/// Only literal addresses are accepted: resolving names would block.
pub fn parse_destination(text: &str) -> Result<Destination, SettingsError> {
    let entries: Vec<&str> = text
        .split(|c: char| c == ',' || c.is_whitespace())
        .filter(|s| !s.is_empty())
        .collect();
    if entries.is_empty() {
        return Ok(Destination::Multicast(SocketAddr::new(
            IpAddr::V4(DEFAULT_GROUP),
            DEFAULT_PORT,
        )));
    }
    let mut addrs = Vec::with_capacity(entries.len());
    for e in &entries {
        let addr = if let Ok(a) = e.parse::<SocketAddr>() {
            a
        } else if let Ok(ip) = e.parse::<IpAddr>() {
            SocketAddr::new(ip, DEFAULT_PORT)
        } else {
            return Err(SettingsError::BadDestination((*e).to_owned()));
        };
        if addr.port() == 0 {
            return Err(SettingsError::BadDestination((*e).to_owned()));
        }
        addrs.push(addr);
    }
    let multicast = addrs.iter().filter(|a| a.ip().is_multicast()).count();
    match (multicast, addrs.len()) {
        (0, _) => Ok(Destination::Unicast(addrs)),
        (1, 1) => Ok(Destination::Multicast(addrs[0])),
        _ => Err(SettingsError::MixedMulticast),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_destination_is_default_group() {
        let d = parse_destination("  ").unwrap();
        assert_eq!(
            d,
            Destination::Multicast("239.255.77.77:47700".parse().unwrap())
        );
    }

    #[test]
    fn unicast_list_and_default_port() {
        let d = parse_destination("10.0.0.2, 10.0.0.3:5000 [::1]:6000").unwrap();
        assert_eq!(
            d,
            Destination::Unicast(vec![
                "10.0.0.2:47700".parse().unwrap(),
                "10.0.0.3:5000".parse().unwrap(),
                "[::1]:6000".parse().unwrap(),
            ])
        );
        assert_eq!(d.port(), 47700);
    }

    #[test]
    fn bad_destinations_are_rejected() {
        assert!(matches!(
            parse_destination("studio.local"),
            Err(SettingsError::BadDestination(_))
        ));
        assert!(matches!(
            parse_destination("239.1.1.1, 10.0.0.1"),
            Err(SettingsError::MixedMulticast)
        ));
        assert!(matches!(
            parse_destination("10.0.0.1:0"),
            Err(SettingsError::BadDestination(_))
        ));
    }

    #[test]
    fn session_uuid_from_name_is_stable_and_uuid_text_is_kept() {
        let a = session_uuid("Friday jam");
        assert_eq!(a, session_uuid(" Friday jam "));
        assert_ne!(a, session_uuid("friday jam"));
        let u = "6f1c1b8e-2d44-4a39-9d7c-0e0b7f8a9c11";
        assert_eq!(session_uuid(u).to_string(), u);
    }

    #[test]
    fn keys_hex_passphrase_and_none() {
        assert_eq!(parse_key("").unwrap(), None);
        let hex = "00".repeat(31) + "ff";
        let k = parse_key(&hex).unwrap().unwrap();
        assert_eq!(k[31], 0xff);
        assert_eq!(k[0], 0);
        let p1 = parse_key("open sesame").unwrap().unwrap();
        assert_eq!(p1, parse_key("open sesame").unwrap().unwrap());
        assert_ne!(p1, parse_key("open sesame!").unwrap().unwrap());
    }

    #[test]
    fn settings_round_trip_through_json() {
        let s = SessionSettings {
            session: "x".into(),
            key: "k".into(),
            destination: "10.0.0.1".into(),
            peer_name: "Studio A".into(),
        };
        let j = serde_json::to_string(&s).unwrap();
        assert_eq!(serde_json::from_str::<SessionSettings>(&j).unwrap(), s);
        // Missing fields (older saves) fall back to defaults.
        let d: SessionSettings = serde_json::from_str("{}").unwrap();
        assert_eq!(d, SessionSettings::default());
    }
}
