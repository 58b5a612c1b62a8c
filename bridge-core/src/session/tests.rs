use super::*;
use crate::sim::{SimLink, SimLinkConfig, SimLoss};

const MS: u64 = 1_000_000;
const CONTROL: u8 = 5;

fn info(name: &str) -> HeartbeatInfo {
    HeartbeatInfo {
        name: name.into(),
        app: "test/0".into(),
        port: 47700,
    }
}

/// Two sessions joined by two simulated links; heartbeats are datagrams
/// `[source u32 | seq u32 | ts u64 | kind u8]` (kind 1 heartbeat, 2 goodbye).
struct Pair {
    s: [Session; 2],
    links: [SimLink; 2],
    seq: [u32; 2],
    joined_at: [Option<u64>; 2],
    left: Vec<(usize, u32, LeftReason)>,
    heartbeats: [u64; 2],
}

impl Pair {
    fn new(loss: SimLoss) -> Self {
        let link = |seed| {
            SimLink::new(SimLinkConfig {
                latency_ns: 2 * MS,
                jitter_ns: MS,
                loss,
                seed,
                ..Default::default()
            })
        };
        Pair {
            s: [
                Session::new(SessionConfig::new(0xA)),
                Session::new(SessionConfig::new(0xB)),
            ],
            links: [link(1), link(2)],
            seq: [0; 2],
            joined_at: [None; 2],
            left: Vec::new(),
            heartbeats: [0; 2],
        }
    }

    fn send(&mut self, from: usize, now: u64, kind: u8) {
        let mut d = Vec::new();
        d.extend_from_slice(&self.s[from].config().self_id.to_be_bytes());
        d.extend_from_slice(&self.seq[from].to_be_bytes());
        d.extend_from_slice(&now.to_be_bytes());
        d.push(kind);
        self.seq[from] += 1;
        self.links[from].send(now, &d);
    }

    fn step(&mut self, now: u64, alive: [bool; 2]) {
        for (side, up) in alive.iter().enumerate() {
            if !up {
                continue;
            }
            while let Some(e) = self.s[side].poll(now) {
                match e {
                    SessionEvent::SendHeartbeat => {
                        self.heartbeats[side] += 1;
                        self.send(side, now, 1);
                    }
                    SessionEvent::PeerJoined { .. } => {
                        self.joined_at[side].get_or_insert(now);
                    }
                    SessionEvent::PeerLeft { peer_id, reason } => {
                        self.left.push((side, peer_id, reason))
                    }
                }
            }
        }
        for from in 0..2 {
            let to = 1 - from;
            while let Some(d) = self.links[from].recv(now) {
                if !alive[to] {
                    continue;
                }
                let source = u32::from_be_bytes(d[0..4].try_into().unwrap());
                let seq = u32::from_be_bytes(d[4..8].try_into().unwrap());
                let ts = u64::from_be_bytes(d[8..16].try_into().unwrap());
                self.s[to].on_frame(now, source, CONTROL, seq, ts);
                match d[16] {
                    1 => self.s[to].on_heartbeat(now, source, &info("peer")),
                    _ => self.s[to].on_goodbye(now, source),
                }
            }
        }
    }
}

#[test]
fn peers_find_each_other_fast_and_time_out_after_2s() {
    let mut p = Pair::new(SimLoss::None);
    // B starts 100 ms after A: A answers B's first heartbeat at once.
    let mut now = 0;
    while now < 5_000 * MS {
        let alive = [true, (100 * MS..3_000 * MS).contains(&now)];
        p.step(now, alive);
        now += MS / 4;
    }
    let a_saw_b = p.joined_at[0].unwrap() - 100 * MS;
    let b_saw_a = p.joined_at[1].unwrap() - 100 * MS;
    assert!(a_saw_b <= 4 * MS, "A listed B after {a_saw_b} ns");
    assert!(
        b_saw_a <= 8 * MS,
        "B listed A after {b_saw_a} ns (answered at once, not after 250 ms)"
    );
    // B went silent at 3 s: A drops it between 5 s and 5 s... i.e. 2 s later.
    assert_eq!(p.left, vec![(0, 0xB, LeftReason::Timeout)]);
    assert!(p.s[0].peers().is_empty());
    // About 4 heartbeats a second from A over 5 s, plus one answer.
    assert!((20..=23).contains(&p.heartbeats[0]), "{}", p.heartbeats[0]);
    assert_eq!(p.s[0].counters().heartbeats_sent, p.heartbeats[0]);
}

#[test]
fn goodbye_removes_at_once_and_own_frames_are_ignored() {
    let mut p = Pair::new(SimLoss::None);
    let mut now = 0;
    while now < 600 * MS {
        p.step(now, [true, true]);
        now += MS;
    }
    assert_eq!(p.s[0].peers().len(), 1);
    assert_eq!(p.s[0].peer(0xB).unwrap().name, "peer");
    p.s[1].leave();
    p.send(1, now, 2);
    let bye_at = now;
    while p.s[0].peer(0xB).is_some() {
        now += MS / 4;
        p.step(now, [true, true]);
    }
    assert!(now - bye_at <= 4 * MS);
    p.step(now, [true, true]);
    assert_eq!(p.left, vec![(0, 0xB, LeftReason::Goodbye)]);
    assert_eq!(p.s[0].on_frame(now, 0xA, CONTROL, 0, 0), None);
    assert_eq!(p.s[0].counters().own_frames, 1);
}

#[test]
fn lossy_heartbeats_keep_the_peer_and_measure_loss() {
    let mut p = Pair::new(SimLoss::Iid(0.3));
    let mut now = 0;
    while now < 60_000 * MS {
        p.step(now, [true, true]);
        now += MS;
    }
    // 30 % loss of 4 Hz heartbeats never leaves 2 s (8 in a row) of silence... almost never:
    // 0.3^8 = 6.6e-5 per window, so over a minute a spurious timeout is possible but not with this seed.
    assert!(p.left.is_empty(), "{:?}", p.left);
    let st = p.s[0].peer(0xB).unwrap().streams[CONTROL as usize - 1];
    assert!((st.loss_fraction() - 0.3).abs() < 0.05, "{st:?}");
    assert!(st.jitter_ns > 0.0);
    assert!(st.min_delay_ns >= MS as i64 && st.min_delay_ns <= 3 * MS as i64);
}

#[test]
fn table_is_bounded() {
    let mut s = Session::new(SessionConfig {
        max_peers: 3,
        ..SessionConfig::new(1)
    });
    for id in 2..10u32 {
        s.on_frame(0, id, CONTROL, 0, 0);
    }
    assert_eq!(s.peers().len(), 3);
    assert_eq!(s.counters().refused_peers, 5);
    s.on_rejected(Some(2), 3);
    s.on_rejected(None, 99);
    assert_eq!(s.peer(2).unwrap().dropped[3], 1);
    assert_eq!(s.counters().dropped[DROP_REASONS - 1], 1);
}

#[test]
fn real_heartbeat_and_goodbye_frames() {
    use crate::protocol::{
        decode_frame, FormatType, Goodbye, Header, Heartbeat, Message, MessageKind, PeerId,
    };
    let session = uuid::Uuid::from_bytes([5; 16]);
    let mut s = Session::new(SessionConfig::new(0x11));
    let mut buf = [0u8; 1500];
    let hb = Message::Heartbeat(Heartbeat {
        peer_id: PeerId(0x22),
        name: "Studio B".into(),
        app: "toaster/0.1.0".into(),
        port: 47701,
        streams: vec![],
    });
    for seq in [0u32, 1, 3] {
        let h = Header::new(
            MessageKind::Heartbeat,
            FormatType::StandardJson,
            session,
            0x22,
            seq,
            seq as u64 * 250 * MS,
        );
        let n = hb.encode(&h, None, &mut buf).unwrap();
        let f = decode_frame(&buf[..n], None).unwrap();
        let m = Message::parse(&f).unwrap();
        s.on_message(seq as u64 * 250 * MS + MS, &f.header, &m);
    }
    let p = s.peer(0x22).unwrap();
    assert_eq!(
        (p.name.as_str(), p.app.as_str(), p.port, p.heartbeats),
        ("Studio B", "toaster/0.1.0", 47701, 3)
    );
    let ctl = p.streams[CONTROL as usize - 1];
    assert_eq!((ctl.received, ctl.lost), (3, 1));
    assert_eq!(s.poll(MS), Some(SessionEvent::PeerJoined { peer_id: 0x22 }));
    s.on_reject(Some(0x22), crate::protocol::RejectReason::BadCrc);
    assert_eq!(
        s.peer(0x22).unwrap().dropped[crate::protocol::RejectReason::BadCrc as usize],
        1
    );
    // Goodbye from an unknown peer adds nothing; from a known one removes it.
    let bye = |src: u32| {
        let h = Header::new(
            MessageKind::Goodbye,
            FormatType::StandardJson,
            session,
            src,
            9,
            0,
        );
        let mut b = [0u8; 200];
        let n = Message::Goodbye(Goodbye {
            peer_id: PeerId(src),
        })
        .encode(&h, None, &mut b)
        .unwrap();
        b[..n].to_vec()
    };
    for src in [0x33u32, 0x22] {
        let d = bye(src);
        let f = decode_frame(&d, None).unwrap();
        s.on_message(2_000 * MS, &f.header, &Message::parse(&f).unwrap());
    }
    assert!(s.peers().is_empty());
    assert_eq!(
        s.poll(2_000 * MS),
        Some(SessionEvent::PeerLeft {
            peer_id: 0x22,
            reason: LeftReason::Goodbye
        })
    );
}
