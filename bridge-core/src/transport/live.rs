//! Transport commands for a headless live peer (sans-IO): issue them,
//! de-duplicate received copies, hold them in a [`TransportQueue`] until
//! their session instant, and apply them then — reporting, per command, the
//! local instant it was meant for and the local instant it was applied.
//!
//! `toaster peer --transport-every-s` drives this through
//! [`crate::worker::peer::LivePeer`]; a plugin binds commands to samples
//! instead (see `jamnet-transport`'s follow mode), but the session-time
//! handling is the same.
//!
//! * **Issuing** ([`IssueConfig`]): once the session clock is synced, every
//!   `every_ns` of local time the peer issues the next command of a fixed
//!   cycle (PLAY at a new position and tempo, then STOP), stamped for
//!   `session_now + lead_ns` ([`super::DEFAULT_LEAD_NS`] by default). The
//!   issuer queues its own command like a received one, so it applies it at
//!   the same session instant as everyone else, not when it sends it. Each
//!   command goes out `copies` times, `copy_spacing_ns` apart (the later
//!   copies carry the REDUNDANT flag): one lost datagram must not lose a
//!   command.
//! * **Receiving** ([`LiveTransport::on_received`]): copies are
//!   de-duplicated by (sender, `seq`, timestamp); a command that fails
//!   validation, arrives while our session clock is not synced (its
//!   timestamp cannot be mapped) or loses a conflict is dropped and counted.
//! * **Late commands** arrive after their session instant. As
//!   [`super::BlockScheduler`] does for late events, they are applied at
//!   once, and the [`Applied`] record says so (`late`, with the intended and
//!   actual local instants), and [`TransportCounters::late`] counts them.
//! * **Applying** ([`LiveTransport::poll`]): every command whose timestamp
//!   the session clock has reached is applied to a [`TransportState`]. Its
//!   intended local instant is `local_time_for_session(timestamp)` under the
//!   mapping at application time (a DAW would land on the sample at that
//!   instant); `local_applied_ns` is when the worker actually got there.
//!   [`LiveTransport::next_deadline_ns`] tells the worker when to wake up.

use std::collections::VecDeque;

use super::{
    TimeSignature, TransportCommand, TransportCommandKind, TransportError, TransportQueue,
    TransportState, DEFAULT_LEAD_NS,
};
use crate::clock::{ClockDriftArbiter, PeerId};

/// The session clock as transport scheduling needs it (implemented by
/// [`ClockDriftArbiter`]; tests use a plain linear map).
///
/// Thread-safe: as the implementor (the arbiter lives on one worker thread;
/// the trait needs no `Sync`). Realtime-safe: the arbiter's methods are
/// reads of its current estimate (no allocation, no locks); they are called
/// on the worker, never on the audio thread.
pub trait SessionClock {
    /// Our estimate of session time at local time `local_ns`.
    fn session_time(&self, local_ns: u64) -> u64;
    /// The local time at which the session clock reads `session_ns`.
    fn local_time_for_session(&self, session_ns: u64) -> u64;
    /// Whether the session clock carries the session (timestamps can be mapped).
    fn is_synced(&self) -> bool;
    /// The elected master.
    fn master(&self) -> Option<PeerId>;
}

impl SessionClock for ClockDriftArbiter {
    fn session_time(&self, local_ns: u64) -> u64 {
        ClockDriftArbiter::session_time(self, local_ns)
    }
    fn local_time_for_session(&self, session_ns: u64) -> u64 {
        ClockDriftArbiter::local_time_for_session(self, session_ns)
    }
    fn is_synced(&self) -> bool {
        ClockDriftArbiter::is_synced(self)
    }
    fn master(&self) -> Option<PeerId> {
        ClockDriftArbiter::master(self)
    }
}

/// How a peer issues transport commands.
///
/// Thread-safe: yes. Realtime-safe: yes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IssueConfig {
    /// Local time between commands, ns (the first one comes this long after
    /// the session clock is synced).
    pub every_ns: u64,
    /// Session time between issuing a command and its effect, ns.
    pub lead_ns: u64,
    /// Datagrams per command (1–8).
    pub copies: u8,
    /// Local time between copies, ns.
    pub copy_spacing_ns: u64,
}

impl IssueConfig {
    /// A command every `every_ns`, the default lead, 3 copies 2 ms apart.
    pub fn every(every_ns: u64) -> Self {
        Self {
            every_ns: every_ns.max(1),
            lead_ns: DEFAULT_LEAD_NS,
            copies: 3,
            copy_spacing_ns: 2_000_000,
        }
    }
}

/// One command as this peer applied it.
///
/// Thread-safe: yes. Realtime-safe: yes.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct Applied {
    /// What it did.
    pub kind: TransportCommandKind,
    /// The sender's `seq`.
    pub seq: u64,
    /// The sender.
    pub from: PeerId,
    /// Whether we issued it.
    pub own: bool,
    /// Session time of effect (the command's timestamp), ns.
    pub session_target_ns: u64,
    /// Local instant that session time maps to, under our mapping when applied.
    pub local_target_ns: u64,
    /// Local time when we applied it (≥ target; the difference is wake-up lateness).
    pub local_applied_ns: u64,
    /// It arrived after its instant and was applied at once.
    pub late: bool,
    /// The master at application time (our arbiter's view).
    pub master: Option<PeerId>,
    /// Position at the instant, ms.
    pub position_ms: f64,
    /// Tempo.
    pub bpm: f64,
}

/// Counters (every dropped command is counted under one reason).
///
/// Thread-safe: yes. Realtime-safe: yes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct TransportCounters {
    /// Commands we issued.
    pub issued: u64,
    /// Datagrams we sent (issued × copies).
    pub sent: u64,
    /// Distinct commands received and queued.
    pub received: u64,
    /// Copies of a command already seen (dropped).
    pub duplicates: u64,
    /// Commands out of the PROTOCOL.md ranges (dropped).
    pub invalid: u64,
    /// Commands received before our session clock was synced (dropped: the
    /// timestamp cannot be mapped).
    pub unsynced: u64,
    /// Commands that lost a concurrent-command conflict (dropped).
    pub conflicts: u64,
    /// Commands dropped because the queue was full.
    pub queue_full: u64,
    /// Commands that arrived after their instant (applied at once, flagged).
    pub late: u64,
    /// Commands applied (ours included).
    pub applied: u64,
}

/// Pending commands at most.
pub const QUEUE_CAPACITY: usize = 64;
/// (sender, seq, timestamp) keys remembered for de-duplication.
const SEEN: usize = 512;
/// Late arrivals remembered until applied.
const LATE_MAX: usize = 64;

/// Issues, schedules and applies transport commands for one peer.
///
/// Thread-safe: no (worker). Realtime-safe: no (bounded queues, worker only).
#[derive(Debug)]
pub struct LiveTransport {
    own: PeerId,
    issue: Option<IssueConfig>,
    queue: TransportQueue,
    state: TransportState,
    seen: VecDeque<(PeerId, u64, u64)>,
    late_keys: VecDeque<(PeerId, u64, u64)>,
    next_issue: Option<u64>,
    seq: u64,
    /// Copies still to send: (local due time, copy index, command).
    outgoing: VecDeque<(u64, u8, TransportCommand)>,
    counters: TransportCounters,
}

impl LiveTransport {
    /// A peer `own` that issues commands per `issue` (or only follows).
    pub fn new(own: PeerId, issue: Option<IssueConfig>) -> Self {
        Self {
            own,
            issue: issue.map(|mut c| {
                c.copies = c.copies.clamp(1, 8);
                c.every_ns = c.every_ns.max(1);
                c
            }),
            queue: TransportQueue::new(QUEUE_CAPACITY, DEFAULT_LEAD_NS),
            state: TransportState::default(),
            seen: VecDeque::with_capacity(SEEN),
            late_keys: VecDeque::with_capacity(LATE_MAX),
            next_issue: None,
            seq: 0,
            outgoing: VecDeque::new(),
            counters: TransportCounters::default(),
        }
    }

    /// Counters so far.
    pub fn counters(&self) -> TransportCounters {
        TransportCounters {
            conflicts: self.queue.dropped(),
            ..self.counters
        }
    }

    /// The transport after the last applied command.
    pub fn state(&self) -> &TransportState {
        &self.state
    }

    /// A command arrived before the session clock existed (dropped, counted
    /// as unsynced).
    pub fn count_unsynced(&mut self) {
        self.counters.unsynced += 1;
    }

    /// Commands waiting for their instant.
    pub fn pending(&self) -> usize {
        self.queue.pending().len()
    }

    fn key(c: &TransportCommand) -> (PeerId, u64, u64) {
        (c.from, c.seq, c.timestamp)
    }

    fn remember(&mut self, key: (PeerId, u64, u64)) {
        if self.seen.len() == SEEN {
            self.seen.pop_front();
        }
        self.seen.push_back(key);
    }

    fn enqueue(
        &mut self,
        now: u64,
        clock: &impl SessionClock,
        cmd: TransportCommand,
    ) -> Result<(), TransportError> {
        let key = Self::key(&cmd);
        match self.queue.push(cmd) {
            Ok(()) => {}
            Err(e) => {
                match e {
                    TransportError::QueueFull => self.counters.queue_full += 1,
                    // Counted by the queue.
                    TransportError::LostConflict => {}
                    _ => self.counters.invalid += 1,
                }
                return Err(e);
            }
        }
        self.remember(key);
        if cmd.timestamp <= clock.session_time(now) {
            self.counters.late += 1;
            if self.late_keys.len() == LATE_MAX {
                self.late_keys.pop_front();
            }
            self.late_keys.push_back(key);
        }
        Ok(())
    }

    /// A command received from the network at local time `now` (`cmd.from`
    /// is the frame's source). Errors say why it was dropped (each counted).
    pub fn on_received(
        &mut self,
        now: u64,
        clock: &impl SessionClock,
        cmd: TransportCommand,
    ) -> Result<(), ReceiveError> {
        if self.seen.contains(&Self::key(&cmd)) {
            self.counters.duplicates += 1;
            return Err(ReceiveError::Duplicate);
        }
        if let Err(e) = cmd.validate() {
            self.counters.invalid += 1;
            return Err(ReceiveError::Refused(e));
        }
        if !clock.is_synced() {
            self.counters.unsynced += 1;
            return Err(ReceiveError::Unsynced);
        }
        self.enqueue(now, clock, cmd)?;
        self.counters.received += 1;
        Ok(())
    }

    /// The `n`-th command of the issuing cycle (n from 1): odd ones PLAY at
    /// a new position and tempo, even ones STOP where the PLAY left off.
    fn command(&self, n: u64, timestamp: u64, master: PeerId, every_ns: u64) -> TransportCommand {
        let play = n % 2 == 1;
        let round = n.div_ceil(2);
        let bpm = [120.0, 96.0, 140.0][(round % 3) as usize];
        let start_ms = (round * 4_000) as f64;
        let position_ms = if play {
            start_ms
        } else {
            start_ms + every_ns as f64 / 1e6
        };
        TransportCommand {
            kind: if play {
                TransportCommandKind::Play
            } else {
                TransportCommandKind::Stop
            },
            timestamp,
            position_ms,
            bpm,
            time_signature: TimeSignature::COMMON,
            beat: None,
            seq: n,
            master_peer: master,
            from: self.own,
        }
    }

    /// Run at local time `now`: issue a command if one is due, and apply
    /// every command whose instant has come (each through `applied`).
    pub fn poll(&mut self, now: u64, clock: &impl SessionClock, mut applied: impl FnMut(Applied)) {
        if let Some(cfg) = self.issue {
            if clock.is_synced() {
                let at = *self
                    .next_issue
                    .get_or_insert(now.saturating_add(cfg.every_ns));
                if now >= at {
                    self.seq += 1;
                    let ts = clock.session_time(now).saturating_add(cfg.lead_ns);
                    let master = clock.master().unwrap_or(self.own);
                    let cmd = self.command(self.seq, ts, master, cfg.every_ns);
                    self.counters.issued += 1;
                    if self.enqueue(now, clock, cmd).is_ok() {
                        for k in 0..cfg.copies {
                            let due = now.saturating_add(k as u64 * cfg.copy_spacing_ns);
                            self.outgoing.push_back((due, k, cmd));
                        }
                    }
                    // Keep the cadence; skip periods missed while stalled.
                    let mut next = at.saturating_add(cfg.every_ns);
                    while next <= now {
                        next = next.saturating_add(cfg.every_ns);
                    }
                    self.next_issue = Some(next);
                }
            }
        }
        let session_now = clock.session_time(now);
        while let Some(cmd) = self.queue.pop_due(session_now) {
            self.state.apply(&cmd);
            self.counters.applied += 1;
            let key = Self::key(&cmd);
            let late = match self.late_keys.iter().position(|k| *k == key) {
                Some(i) => {
                    self.late_keys.remove(i);
                    true
                }
                None => false,
            };
            applied(Applied {
                kind: cmd.kind,
                seq: cmd.seq,
                from: cmd.from,
                own: cmd.from == self.own,
                session_target_ns: cmd.timestamp,
                local_target_ns: clock.local_time_for_session(cmd.timestamp),
                local_applied_ns: now,
                late,
                master: clock.master(),
                position_ms: cmd.position_ms,
                bpm: cmd.bpm,
            });
        }
    }

    /// Copies due by `now`, in order: (command, copy index; 0 is the
    /// original, later ones are REDUNDANT).
    pub fn pop_outgoing(&mut self, now: u64) -> Option<(TransportCommand, u8)> {
        if self.outgoing.front().is_some_and(|(due, _, _)| *due <= now) {
            let (_, k, cmd) = self.outgoing.pop_front()?;
            self.counters.sent += 1;
            Some((cmd, k))
        } else {
            None
        }
    }

    /// When [`LiveTransport::poll`] / [`LiveTransport::pop_outgoing`] must
    /// run next (local ns; `u64::MAX`: nothing pending).
    pub fn next_deadline_ns(&self, clock: &impl SessionClock) -> u64 {
        let apply = self
            .queue
            .pending()
            .first()
            .map_or(u64::MAX, |c| clock.local_time_for_session(c.timestamp));
        let copy = self.outgoing.front().map_or(u64::MAX, |(due, _, _)| *due);
        let issue = match (self.issue, self.next_issue) {
            (Some(_), Some(at)) => at,
            _ => u64::MAX,
        };
        apply.min(copy).min(issue)
    }
}

/// Why a received command was dropped.
///
/// Thread-safe: yes. Realtime-safe: yes.
#[derive(Debug, Clone, Copy, PartialEq, thiserror::Error)]
pub enum ReceiveError {
    /// A copy of a command already taken.
    #[error("duplicate transport command")]
    Duplicate,
    /// Our session clock is not synced: its timestamp cannot be mapped.
    #[error("session clock not synced")]
    Unsynced,
    /// Invalid, lost a conflict, or the queue is full.
    #[error(transparent)]
    Refused(#[from] TransportError),
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: u64 = 1_000_000;

    /// session = local × (1 + ppm·1e-6) + offset.
    struct Linear {
        offset: i64,
        ppm: f64,
        synced: bool,
        master: PeerId,
    }

    impl SessionClock for Linear {
        fn session_time(&self, l: u64) -> u64 {
            (l as f64 * (1.0 + self.ppm * 1e-6) + self.offset as f64).round() as u64
        }
        fn local_time_for_session(&self, s: u64) -> u64 {
            ((s as f64 - self.offset as f64) / (1.0 + self.ppm * 1e-6)).round() as u64
        }
        fn is_synced(&self) -> bool {
            self.synced
        }
        fn master(&self) -> Option<PeerId> {
            Some(self.master)
        }
    }

    fn clock(offset: i64, ppm: f64) -> Linear {
        Linear {
            offset,
            ppm,
            synced: true,
            master: 1,
        }
    }

    fn issuer() -> LiveTransport {
        LiveTransport::new(1, Some(IssueConfig::every(1_000 * MS)))
    }

    /// Runs `t` from `from` to `to` in 100 µs steps; returns applied records
    /// and the copies sent.
    fn run(
        t: &mut LiveTransport,
        c: &Linear,
        from: u64,
        to: u64,
    ) -> (Vec<Applied>, Vec<(TransportCommand, u8)>) {
        let (mut applied, mut sent) = (Vec::new(), Vec::new());
        let mut now = from;
        while now < to {
            t.poll(now, c, |a| applied.push(a));
            while let Some(x) = t.pop_outgoing(now) {
                sent.push(x);
            }
            now += 100_000;
        }
        (applied, sent)
    }

    #[test]
    fn issuer_applies_its_own_command_at_the_session_instant_not_when_sent() {
        let c = clock(5_000 * MS as i64, 40.0);
        let mut t = issuer();
        let (applied, sent) = run(&mut t, &c, 0, 2_500 * MS);
        // Issued at 1 s and 2 s (local), 3 copies each.
        assert_eq!(t.counters().issued, 2);
        assert_eq!(sent.len(), 6);
        assert_eq!(
            sent.iter().map(|s| s.1).collect::<Vec<_>>(),
            [0, 1, 2, 0, 1, 2]
        );
        assert_eq!(applied.len(), 2);
        for (a, (cmd, _)) in applied.iter().zip(sent.iter().step_by(3)) {
            assert!(a.own);
            assert_eq!(a.session_target_ns, cmd.timestamp);
            assert_eq!(a.seq, cmd.seq);
            // Stamped a lead ahead of the session time at issue.
            let issued_local = c.local_time_for_session(cmd.timestamp - DEFAULT_LEAD_NS);
            assert!((issued_local as i64 - (1_000 * MS * a.seq) as i64).abs() < 1_000);
            // Applied at the instant (within one 100 µs step), not when issued.
            assert_eq!(a.local_target_ns, c.local_time_for_session(cmd.timestamp));
            assert!(a.local_applied_ns >= a.local_target_ns);
            assert!(a.local_applied_ns - a.local_target_ns <= 100_000);
            assert!(!a.late);
        }
        assert_eq!(applied[0].kind, TransportCommandKind::Play);
        assert_eq!(applied[1].kind, TransportCommandKind::Stop);
        assert!(!t.state().playing);
        assert_eq!(t.counters().applied, 2);
    }

    #[test]
    fn nothing_is_issued_before_the_clock_is_synced() {
        let mut c = clock(0, 0.0);
        c.synced = false;
        let mut t = issuer();
        let (applied, sent) = run(&mut t, &c, 0, 3_000 * MS);
        assert!(applied.is_empty() && sent.is_empty());
        assert_eq!(t.next_deadline_ns(&c), u64::MAX);
    }

    #[test]
    fn receiver_lands_on_the_same_session_instant_once_despite_copies() {
        let ci = clock(0, 0.0);
        // The receiver's local clock: session = local × (1 − 25 ppm) + 7 ms.
        let cr = clock(7 * MS as i64, -25.0);
        let mut tx = issuer();
        let mut rx = LiveTransport::new(2, None);
        let (mine, sent) = run(&mut tx, &ci, 0, 1_010 * MS);
        assert!(mine.is_empty(), "still in its lead");
        assert_eq!(sent.len(), 3);
        // Copies arrive 5 ms later each (receiver local time of that session time).
        let arrive = cr.local_time_for_session(1_005 * MS);
        for (cmd, _) in &sent {
            let _ = rx.on_received(arrive, &cr, *cmd);
        }
        assert_eq!(rx.counters().received, 1);
        assert_eq!(rx.counters().duplicates, 2);
        assert_eq!(rx.pending(), 1);
        let target = cr.local_time_for_session(sent[0].0.timestamp);
        assert_eq!(rx.next_deadline_ns(&cr), target);
        // Nothing before the instant, exactly one application at it.
        let mut got = Vec::new();
        rx.poll(target - 1_000, &cr, |a| got.push(a));
        assert!(got.is_empty());
        rx.poll(target + 300, &cr, |a| got.push(a));
        rx.poll(target + 50 * MS, &cr, |a| got.push(a));
        assert_eq!(got.len(), 1);
        let a = got[0];
        assert!(!a.own && !a.late);
        assert_eq!(a.local_target_ns, target);
        assert_eq!(a.local_applied_ns, target + 300);
        // A copy arriving after application is still a duplicate, not a new command.
        assert!(matches!(
            rx.on_received(target + 60 * MS, &cr, sent[2].0),
            Err(ReceiveError::Duplicate)
        ));
        assert_eq!(rx.counters().applied, 1);
        assert!(rx.state().playing);
    }

    #[test]
    fn late_unsynced_and_invalid_commands_are_counted() {
        let c = clock(0, 0.0);
        let mut rx = LiveTransport::new(2, None);
        let mut cmd = issuer().command(1, 100 * MS, 1, 1_000 * MS);
        cmd.from = 1;
        // Arrives 3 ms after its instant: applied at once, flagged late.
        rx.on_received(103 * MS, &c, cmd).unwrap();
        assert_eq!(rx.counters().late, 1);
        let mut got = Vec::new();
        rx.poll(103 * MS + 10, &c, |a| got.push(a));
        assert_eq!(got.len(), 1);
        assert!(got[0].late);
        assert_eq!(got[0].local_target_ns, 100 * MS);
        assert_eq!(
            got[0].local_applied_ns - got[0].local_target_ns,
            3 * MS + 10
        );
        // Not synced: dropped.
        let mut u = clock(0, 0.0);
        u.synced = false;
        let mut c2 = cmd;
        c2.seq = 2;
        c2.timestamp = 500 * MS;
        assert_eq!(rx.on_received(0, &u, c2), Err(ReceiveError::Unsynced));
        // Out of range: dropped, never queued.
        let mut bad = c2;
        bad.bpm = 0.0;
        assert!(matches!(
            rx.on_received(0, &c, bad),
            Err(ReceiveError::Refused(TransportError::Bpm(_)))
        ));
        let n = rx.counters();
        assert_eq!((n.unsynced, n.invalid, n.received, n.applied), (1, 1, 1, 1));
        assert_eq!(rx.pending(), 0);
        // A later valid copy of the unsynced one is still taken (it was never queued).
        rx.on_received(0, &c, c2).unwrap();
        assert_eq!(rx.pending(), 1);
    }

    #[test]
    fn a_stalled_issuer_keeps_its_cadence() {
        let c = clock(0, 0.0);
        let mut t = issuer();
        t.poll(0, &c, |_| {});
        // Wakes up 3.5 s later: one command, the next on the 1 s grid.
        t.poll(3_500 * MS, &c, |_| {});
        assert_eq!(t.counters().issued, 1);
        assert_eq!(t.next_deadline_ns(&c).min(4_000 * MS), 3_500 * MS);
        while t.pop_outgoing(4_000 * MS).is_some() {}
        t.poll(3_600 * MS, &c, |_| {});
        assert_eq!(t.next_deadline_ns(&c), 4_000 * MS);
    }
}
