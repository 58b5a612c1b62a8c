//! ClockDriftArbiter: clock_ping/clock_pong between peers, one
//! [`ClockModel`] per peer, a deterministic master election, and a session
//! clock that hands off between masters by slewing, never jumping.
//!
//! # Session timeline
//!
//! The session timeline is the *session clock of the master*. A peer's
//! session clock is its local clock mapped through a [`ClockEstimate`]:
//!
//! * while it follows a master: its model of the master's session clock
//!   (fitted from the master's pongs);
//! * while it is the master: a *frozen* mapping (its last model of the
//!   session at the moment it became master, or the identity for the peer
//!   that founded the session). Freezing is what makes a hand-off seamless:
//!   the new master's session clock continues the old one, at the old rate.
//!
//! Pongs carry `t2`/`t3` on the ponger's session clock (PROTOCOL.md:
//! timestamps are on the session timeline); `t1` is the pinger's own local
//! clock, echoed back, so only the pinger interprets it.
//!
//! # Master election (every peer computes the same answer)
//!
//! 1. A peer is *eligible* once it has been heard continuously for
//!    `join_grace_ns` (default 2 s: longer than a model needs to estimate
//!    drift); a peer counts itself eligible once it has
//!    run for `join_grace_ns`. Peers not heard for `peer_timeout_ns` (default
//!    2 s) or that said goodbye are gone.
//! 2. The master is the eligible peer with the **lowest peer id**.
//! 3. A peer answers pings only once it has a timeline (it is master or
//!    follows one). While no peer is eligible yet, a peer follows the
//!    lowest-id peer that answers (one settled in a running session), so that
//!    by the time it could become master it already carries the session
//!    timeline on. Peers that start together hear no answers during the
//!    grace, free-run, and then all elect the lowest id, whose clock
//!    (unchanged) becomes the timeline.
//! 4. A peer that has never had a timeline does not elect anyone while it
//!    hears a lower-id peer that is still inside its join grace: that peer
//!    will be eligible within the grace and win. (Without this, peers that
//!    start a few hundred ms apart, as on a loaded machine, each elect the
//!    lowest peer *they* already count as eligible, form two sessions, and
//!    slew together at `max_slew_ppm`: 65 ms took two minutes.)
//!
//! Every peer sees the same set of eligible peers (to within one heartbeat /
//! ping interval around joins and timeouts) and applies the same total order on
//! ids, so they agree. Like Link's "the older session wins", an arriving peer
//! never imposes its own clock: it first synchronises to the running session,
//! and only then, if its id is lower, takes over — continuing the timeline.
//!
//! # Hand-off
//!
//! When the followed source changes (a new master, or becoming master), the
//! difference between the old and new mapping at that instant is applied as a
//! correction that shrinks to zero at `max_slew_ppm` (default 500 ppm: 1 ms
//! takes 2 s). Before the first synchronisation there is nothing to preserve
//! and the clock jumps; so does a difference above `max_slew_ns` (100 ms: two
//! sessions with unrelated timelines merging). Once synchronised, a new master
//! is followed only when its model holds `min_follow_observations` exchanges;
//! new peer models start from our session drift as their prior.
//!
//! # Start-up burst
//!
//! A new peer's drift is only as good as the number of fast packets seen
//! (docs/sync.md, "Drift under jitter"), so, like NTP's `iburst`, the
//! arbiter pings at `burst_interval_ns` (default 100 Hz, the ceiling the
//! design allows) instead of `ping_interval_ns` while any peer heard for
//! less than `burst_max_ns` (default 20 s) has a drift uncertainty above
//! `burst_until_sigma_ppm` (default 0.2 ppm). On a quiet LAN that is under a
//! second; under 5 ± 2 ms of jitter it is all of the 20 s, and the drift
//! after 10 s is about 4× closer than at 20 Hz. After that the configured rate
//! (default 20 Hz) keeps the models fed.
//!
//! # Calls (driver contract)
//!
//! * [`ClockDriftArbiter::poll`]`(now)` → a [`ClockPing`] to broadcast, when due
//!   (call at least every ping interval; also re-runs the election).
//! * [`ClockDriftArbiter::on_ping`]`(now, &ping)` → the [`ClockPong`] to send
//!   back, or none during our join grace (set `t3 = session_time(send
//!   instant)` if sending is delayed).
//! * [`ClockDriftArbiter::on_pong`]`(now, &pong)` → feeds the model.
//! * [`ClockDriftArbiter::on_heard`] / [`ClockDriftArbiter::on_goodbye`]: liveness.
//! * [`ClockDriftArbiter::on_stamped`]`(now, peer, header.timestamp)` for
//!   every frame but a pong to our own ping: its sender's session time as a
//!   one-way observation (a streaming master gives ~20× more than its pings).
//! * [`ClockDriftArbiter::session_time`]`(local_now)` and
//!   [`ClockDriftArbiter::local_time_for_session`]`(session_ns)`.

use std::collections::BTreeMap;

use super::model::{Added, ClockEstimate, ClockModel, ClockModelConfig, Exchange, SampleError};
use super::PeerId;

/// Tuning of a [`ClockDriftArbiter`].
///
/// Thread-safe: yes (plain value). Realtime-safe: yes.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ArbiterConfig {
    /// Time between pings, ns (default 50 ms = 20 Hz; 1–100 Hz allowed).
    pub ping_interval_ns: u64,
    /// Time between pings during the start-up burst, ns (default 10 ms =
    /// 100 Hz; `ping_interval_ns` or more: no burst).
    pub burst_interval_ns: u64,
    /// The burst goes on while a peer's drift uncertainty is above this, ppm.
    pub burst_until_sigma_ppm: f64,
    /// ... but only for this long after a peer is first heard, ns (a peer
    /// whose path never settles must not keep everyone at the burst rate).
    pub burst_max_ns: u64,
    /// A peer not heard for this long is gone, ns.
    pub peer_timeout_ns: u64,
    /// A peer becomes eligible for master after being heard this long, ns.
    pub join_grace_ns: u64,
    /// Hand-off slew rate limit, ppm.
    pub max_slew_ppm: f64,
    /// At most this many peers are tracked (protects against floods of ids).
    pub max_peers: usize,
    /// Once synchronised, a new master is followed only when its model holds
    /// this many exchanges (until then the current mapping carries on).
    pub min_follow_observations: usize,
    /// Hand-off differences larger than this jump instead of slewing (two
    /// sessions merging have unrelated timelines), ns.
    pub max_slew_ns: u64,
    /// Per-peer clock model tuning.
    pub model: ClockModelConfig,
}

impl Default for ArbiterConfig {
    fn default() -> Self {
        Self {
            ping_interval_ns: 50_000_000,
            burst_interval_ns: 10_000_000,
            burst_until_sigma_ppm: 0.2,
            burst_max_ns: 20_000_000_000,
            peer_timeout_ns: 2_000_000_000,
            join_grace_ns: 2_000_000_000,
            max_slew_ppm: 500.0,
            max_peers: 64,
            min_follow_observations: 8,
            max_slew_ns: 100_000_000,
            // 51.2 s of exchanges at the default 20 Hz, 20 s of the burst's 100 Hz.
            model: ClockModelConfig {
                window: 2048,
                window_ns: 51_200_000_000,
                ..ClockModelConfig::default()
            },
        }
    }
}

/// Invalid arbiter configuration.
#[derive(Debug, Clone, Copy, PartialEq, thiserror::Error)]
pub enum ArbiterConfigError {
    /// Ping rate outside 1–100 Hz.
    #[error("ping rate {0} Hz is outside 1–100 Hz")]
    PingRate(f64),
    /// Burst rate outside 1–100 Hz (0 turns the burst off).
    #[error("burst ping rate {0} Hz is outside 1–100 Hz (0: no burst)")]
    BurstRate(f64),
}

impl ArbiterConfig {
    /// Default configuration with a ping rate in Hz (1–100).
    pub fn with_rate_hz(rate_hz: f64) -> Result<Self, ArbiterConfigError> {
        Ok(Self {
            ping_interval_ns: ping_interval_ns(rate_hz)
                .ok_or(ArbiterConfigError::PingRate(rate_hz))?,
            ..Self::default()
        })
    }

    /// The same with the start-up burst at `burst_hz` (1–100; 0: no burst).
    pub fn with_burst_hz(self, burst_hz: f64) -> Result<Self, ArbiterConfigError> {
        let burst_interval_ns = if burst_hz == 0.0 {
            u64::MAX
        } else {
            ping_interval_ns(burst_hz).ok_or(ArbiterConfigError::BurstRate(burst_hz))?
        };
        Ok(Self {
            burst_interval_ns,
            ..self
        })
    }
}

/// The interval between pings at `rate_hz`, ns, if the rate is within the
/// 1–100 Hz the design allows.
fn ping_interval_ns(rate_hz: f64) -> Option<u64> {
    (1.0..=100.0)
        .contains(&rate_hz)
        .then(|| (1e9 / rate_hz).round() as u64)
}

/// A clock_ping (PROTOCOL.md 3.2): `t1` on the pinger's local clock.
///
/// Thread-safe: yes. Realtime-safe: yes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClockPing {
    /// The pinger.
    pub from: PeerId,
    /// Ping sent, pinger's local clock, ns.
    pub t1: u64,
}

/// A clock_pong (PROTOCOL.md 3.2): `t2`, `t3` on the ponger's session clock.
///
/// Thread-safe: yes. Realtime-safe: yes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClockPong {
    /// The ponger.
    pub from: PeerId,
    /// The pinger this answers.
    pub to: PeerId,
    /// Echo of the ping's `t1`.
    pub t1: u64,
    /// Ping received (ponger's session clock), ns.
    pub t2: u64,
    /// Pong sent (ponger's session clock), ns.
    pub t3: u64,
}

/// What happened to a received message.
///
/// Thread-safe: yes. Realtime-safe: yes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ClockMessageError {
    /// From peer id 0 or from ourselves.
    #[error("message from an invalid peer id")]
    BadPeer,
    /// The peer table is full.
    #[error("too many peers")]
    TooManyPeers,
    /// A pong whose `t1` is not a recent ping of ours.
    #[error("pong does not answer a recent ping")]
    StalePong,
    /// The exchange was inconsistent or contradicted the model.
    #[error("clock sample rejected: {0}")]
    Sample(#[from] SampleError),
}

/// Per-peer figures.
///
/// Thread-safe: yes (plain value). Realtime-safe: yes.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct PeerClockStats {
    /// The peer.
    pub peer_id: PeerId,
    /// Its session clock minus our local clock now, ns (None before any pong).
    pub offset_ns: Option<f64>,
    /// Its session clock's rate against our local clock, ppm.
    pub drift_ppm: Option<f64>,
    /// Offset error bound from the path (half the smallest round trip), ns.
    pub uncertainty_ns: Option<f64>,
    /// 0–1 sync quality (see [`ClockEstimate::quality`]).
    pub quality: f64,
    /// Exchanges in the window.
    pub observations: usize,
    /// Exchanges rejected.
    pub rejected: u64,
    /// Eligible for master (heard for the join grace).
    pub eligible: bool,
    /// The current master.
    pub is_master: bool,
}

#[derive(Debug, Clone)]
struct PeerState {
    first_heard: u64,
    last_heard: u64,
    model: ClockModel,
}

/// Who our session clock follows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Source {
    /// Not synchronised yet: the frozen mapping (identity at start).
    FreeRun,
    /// We are the elected master: the frozen mapping.
    Master,
    /// Following this peer's session clock.
    Follow(PeerId),
}

/// Peer ↔ peer clock synchronisation and master election, sans-IO.
///
/// Thread-safe: no (owned by the worker thread; `Send`). Realtime-safe: no
/// (allocates when a new peer appears; fitting is O(window)). Publish
/// [`ClockDriftArbiter::session_estimate`] (a plain value) to the audio thread.
#[derive(Debug, Clone)]
pub struct ClockDriftArbiter {
    id: PeerId,
    config: ArbiterConfig,
    started_at: u64,
    next_ping_at: u64,
    peers: BTreeMap<PeerId, PeerState>,
    source: Source,
    synced: bool,
    frozen: ClockEstimate,
    slew_start: u64,
    slew_delta: f64,
    handoffs: u64,
    last_ping_t1: u64,
    elected: Option<PeerId>,
}

impl ClockDriftArbiter {
    /// A new arbiter for peer `id` starting at local time `now`.
    pub fn new(id: PeerId, config: ArbiterConfig, now: u64) -> Self {
        Self {
            id,
            config,
            started_at: now,
            next_ping_at: now,
            peers: BTreeMap::new(),
            source: Source::FreeRun,
            synced: false,
            frozen: ClockEstimate::identity(now),
            slew_start: now,
            slew_delta: 0.0,
            handoffs: 0,
            last_ping_t1: 0,
            elected: None,
        }
    }

    /// Our peer id.
    pub fn id(&self) -> PeerId {
        self.id
    }

    /// The configuration in use.
    pub fn config(&self) -> &ArbiterConfig {
        &self.config
    }

    /// The elected master (ourselves included); `None` while nobody is eligible yet.
    pub fn master(&self) -> Option<PeerId> {
        self.elected
    }

    /// The peer whose session clock we follow now (`None`: our own frozen clock).
    pub fn following(&self) -> Option<PeerId> {
        match self.source {
            Source::Follow(p) => Some(p),
            _ => None,
        }
    }

    /// True once our session clock carries the session (following a model or master).
    pub fn is_synced(&self) -> bool {
        self.synced
    }

    /// How many times the session clock source changed after the first sync.
    pub fn handoffs(&self) -> u64 {
        self.handoffs
    }

    /// A ping to broadcast if one is due; also re-runs the election.
    pub fn poll(&mut self, now: u64) -> Option<ClockPing> {
        self.expire(now);
        self.elect(now);
        if now < self.next_ping_at {
            return None;
        }
        let interval = self.ping_interval(now);
        self.next_ping_at = if now - self.next_ping_at > interval {
            now + interval
        } else {
            self.next_ping_at + interval
        };
        self.last_ping_t1 = now;
        Some(ClockPing {
            from: self.id,
            t1: now,
        })
    }

    /// The ping interval in force at `now`: the burst's while
    /// [`Self::is_bursting`], else the configured one.
    fn ping_interval(&self, now: u64) -> u64 {
        if self.is_bursting(now) {
            self.config
                .burst_interval_ns
                .min(self.config.ping_interval_ns)
        } else {
            self.config.ping_interval_ns
        }
    }

    /// True while a peer heard for less than `burst_max_ns` still has a
    /// drift uncertainty above `burst_until_sigma_ppm` (or no estimate).
    pub fn is_bursting(&self, now: u64) -> bool {
        let threshold = self.config.burst_until_sigma_ppm;
        self.peers.values().any(|p| {
            now.saturating_sub(p.first_heard) < self.config.burst_max_ns
                && p.model.drift_sigma_ppm().is_none_or(|s| s > threshold)
        })
    }

    /// Local time at which the next ping is due (for a driver's sleep).
    pub fn next_poll_at(&self) -> u64 {
        self.next_ping_at
    }

    /// Any frame from `peer` arrived at `now` (liveness).
    pub fn on_heard(&mut self, now: u64, peer: PeerId) -> Result<(), ClockMessageError> {
        self.touch(now, peer).map(|_| ())
    }

    /// A frame from `peer` arrived at `now` carrying header timestamp
    /// `stamp` (the peer's session time when it built the frame): a one-way
    /// observation of the peer's timeline ([`ClockModel::add_stamp`]) for a
    /// peer we already exchange pings with. It neither adds a peer nor counts
    /// as liveness (see [`ClockDriftArbiter::on_heard`]). Call it for every
    /// frame from a peer except the `clock_pong`s answering our own pings
    /// (their stamp is the exchange's `t3` again); a stamp that does not fit
    /// the peer's model is counted there as rejected.
    pub fn on_stamped(&mut self, now: u64, peer: PeerId, stamp: u64) {
        if let Some(s) = self.peers.get_mut(&peer) {
            let _ = s.model.add_stamp(stamp, now);
        }
    }

    /// `peer` said goodbye: forget it now.
    pub fn on_goodbye(&mut self, now: u64, peer: PeerId) {
        if self.source == Source::Follow(peer) {
            self.hold_over(now);
        }
        self.peers.remove(&peer);
        self.elect(now);
    }

    /// A ping arrived at `now`: the pong to send back. A peer still inside
    /// its join grace answers nothing (`Ok(None)`): its session clock is not
    /// settled yet, and nobody should model a clock that is still looking
    /// for the session (that is what keeps simultaneous starters from
    /// following each other in a loop).
    pub fn on_ping(
        &mut self,
        now: u64,
        ping: &ClockPing,
    ) -> Result<Option<ClockPong>, ClockMessageError> {
        self.touch(now, ping.from)?;
        // Answer only with a timeline: once we are master or follow one. A
        // peer still forming a session (in its join grace, or waiting for a
        // lower-id peer's grace, see `elect`) answers nothing, so nobody
        // follows its free-running clock.
        if !self.synced {
            return Ok(None);
        }
        let t = self.session_time(now);
        Ok(Some(ClockPong {
            from: self.id,
            to: ping.from,
            t1: ping.t1,
            t2: t,
            t3: t,
        }))
    }

    /// A pong arrived at `now`. Pongs addressed to other peers only count as liveness.
    pub fn on_pong(&mut self, now: u64, pong: &ClockPong) -> Result<(), ClockMessageError> {
        self.touch(now, pong.from)?;
        if pong.to != self.id {
            return Ok(());
        }
        if pong.t1 > now
            || now - pong.t1 > self.config.peer_timeout_ns
            || pong.t1 > self.last_ping_t1
        {
            return Err(ClockMessageError::StalePong);
        }
        let ex = Exchange {
            t1: pong.t1,
            t2: pong.t2,
            t3: pong.t3,
            t4: now,
        };
        let peer = self
            .peers
            .get_mut(&pong.from)
            .ok_or(ClockMessageError::BadPeer)?;
        let res = peer.model.add_exchange(ex);
        self.elect(now);
        match res {
            Ok(Added::Used) | Ok(Added::StepRestart) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    fn touch(&mut self, now: u64, peer: PeerId) -> Result<(), ClockMessageError> {
        if peer == 0 || peer == self.id {
            return Err(ClockMessageError::BadPeer);
        }
        if let Some(s) = self.peers.get_mut(&peer) {
            if now.saturating_sub(s.last_heard) > self.config.peer_timeout_ns {
                // Came back after being gone: a fresh join.
                s.first_heard = now;
                s.model.reset();
            }
            s.last_heard = s.last_heard.max(now);
            return Ok(());
        }
        if self.peers.len() >= self.config.max_peers {
            return Err(ClockMessageError::TooManyPeers);
        }
        let mut model = ClockModel::new(self.config.model);
        if self.synced {
            // Every settled peer's session clock runs at the session rate:
            // our own session drift is the best prior for a new peer's model.
            model.set_prior_drift(self.raw_estimate().drift);
        }
        self.peers.insert(
            peer,
            PeerState {
                first_heard: now,
                last_heard: now,
                model,
            },
        );
        Ok(())
    }

    fn expire(&mut self, now: u64) {
        let timeout = self.config.peer_timeout_ns;
        if let Source::Follow(p) = self.source {
            if self
                .peers
                .get(&p)
                .is_some_and(|s| now.saturating_sub(s.last_heard) > timeout)
            {
                self.hold_over(now);
            }
        }
        self.peers
            .retain(|_, s| now.saturating_sub(s.last_heard) <= timeout);
    }

    /// The followed peer vanished: keep running on the mapping we had.
    fn hold_over(&mut self, now: u64) {
        self.frozen = self.session_estimate(now);
        self.slew_delta = 0.0;
        self.slew_start = now;
        self.source = Source::FreeRun;
    }

    /// Run the election at `now` and switch the session clock source if needed.
    fn elect(&mut self, now: u64) {
        let grace = self.config.join_grace_ns;
        let timeout = self.config.peer_timeout_ns;
        let alive = |s: &PeerState| now.saturating_sub(s.last_heard) <= timeout;
        let self_eligible = now.saturating_sub(self.started_at) >= grace;
        let lowest_eligible_peer = self
            .peers
            .iter()
            .find(|(_, s)| alive(s) && now.saturating_sub(s.first_heard) >= grace)
            .map(|(id, _)| *id);
        let master = match (self_eligible, lowest_eligible_peer) {
            (true, Some(p)) if p < self.id => Some(p),
            (true, _) => Some(self.id),
            (false, p) => p,
        };
        // Forming a session (never synced): a lower-id peer we hear that is
        // still inside its join grace becomes eligible within the grace and
        // will win then. Electing anyone above it now would give this peer a
        // timeline of its own for that second or two, and peers that started
        // a few hundred ms apart (a loaded machine) would form two sessions
        // that then have to slew together at `max_slew_ppm`. So wait: stay
        // free-running (following a peer that answers, if any) until it is
        // eligible or gone. Synced peers never wait: a newcomer joins their
        // session first.
        let master = match master {
            Some(m)
                if !self.synced
                    && self.peers.iter().any(|(id, s)| {
                        *id < m && alive(s) && now.saturating_sub(s.first_heard) < grace
                    }) =>
            {
                None
            }
            m => m,
        };
        if let (Some(prev), Some(m)) = (self.elected, master) {
            if m != prev && m != self.id && self.synced {
                // A hand-off: until now `m` stamped its pongs with its own
                // model of the old master (refitted, and maybe slewing);
                // from its election on, with its frozen mapping. Mixing the
                // two regimes in one window bends the drift fit for a whole
                // window length, so `m`'s model restarts here, from our
                // session drift as the prior (the new master continues the
                // old timeline at the old rate). Until it holds
                // `min_follow_observations` exchanges we keep our mapping.
                let prior = self.raw_estimate().drift;
                if let Some(s) = self.peers.get_mut(&m) {
                    s.model.reset();
                    s.model.set_prior_drift(prior);
                }
            }
        }
        self.elected = master;
        let want = match master {
            Some(m) if m == self.id => Source::Master,
            Some(m) => Source::Follow(m),
            // Nobody eligible yet: follow the lowest peer that answers
            // (answering means it is settled in a running session).
            None => match self
                .peers
                .iter()
                .find(|(_, s)| alive(s) && s.model.estimate().is_some())
                .map(|(id, _)| *id)
            {
                Some(p) => Source::Follow(p),
                None => Source::FreeRun,
            },
        };
        // Can't follow a peer we have no (good enough) model of yet.
        let min_obs = if self.synced {
            self.config.min_follow_observations
        } else {
            1
        };
        let want = match want {
            Source::Follow(p)
                if self
                    .peers
                    .get(&p)
                    .and_then(|s| s.model.estimate())
                    .is_none_or(|e| e.observations < min_obs) =>
            {
                if self.source == Source::Master || self.synced {
                    // Keep what we have until the new master's model exists.
                    self.source
                } else {
                    Source::FreeRun
                }
            }
            w => w,
        };
        if want == self.source {
            return;
        }
        let before = self.session_time_f64(now);
        let was_synced = self.synced;
        if want == Source::Master {
            // Freeze the current mapping: the timeline continues, at the same rate.
            let drift = self.raw_estimate().drift;
            let value = before;
            self.frozen = ClockEstimate {
                ref_local_ns: now,
                ref_remote_ns: value.round() as i128,
                drift,
                uncertainty_ns: 0.0,
                quality: 1.0,
                observations: 0,
                span_ns: 0,
            };
            self.slew_delta = 0.0;
            self.slew_start = now;
        }
        self.source = want;
        if want != Source::FreeRun {
            self.synced = true;
        }
        if want != Source::Master {
            let after = self.raw_estimate().to_remote_i128(now) as f64;
            self.slew_start = now;
            let delta = before - after;
            self.slew_delta = if was_synced && delta.abs() <= self.config.max_slew_ns as f64 {
                delta
            } else {
                0.0
            };
        }
        if was_synced {
            self.handoffs += 1;
        }
    }

    /// The mapping local → session of the current source, without slew.
    fn raw_estimate(&self) -> ClockEstimate {
        match self.source {
            Source::FreeRun | Source::Master => self.frozen,
            Source::Follow(p) => self
                .peers
                .get(&p)
                .and_then(|s| s.model.estimate())
                .unwrap_or(self.frozen),
        }
    }

    fn slew_correction(&self, local: u64) -> f64 {
        if self.slew_delta == 0.0 || local <= self.slew_start {
            return self.slew_delta;
        }
        let done = (local - self.slew_start) as f64 * self.config.max_slew_ppm * 1e-6;
        if done >= self.slew_delta.abs() {
            0.0
        } else {
            self.slew_delta - self.slew_delta.signum() * done
        }
    }

    fn session_time_f64(&self, local: u64) -> f64 {
        self.raw_estimate().to_remote_i128(local) as f64 + self.slew_correction(local)
    }

    /// Our estimate of the session clock at local time `local_now`, ns.
    pub fn session_time(&self, local_now: u64) -> u64 {
        let v = self.raw_estimate().to_remote_i128(local_now)
            + self.slew_correction(local_now).round() as i128;
        super::model::clamp_u64(v)
    }

    /// The local time at which the session clock will read `session_ns`
    /// (to schedule a transport command), ignoring any slew in progress.
    pub fn local_time_for_session(&self, session_ns: u64) -> u64 {
        let est = self.raw_estimate();
        let corr = self.slew_correction(est.to_local(session_ns as i128)) as i128;
        est.to_local(session_ns as i128 - corr)
    }

    /// The current local → session mapping (slew folded into the reference
    /// point at `local_now`): a plain value to hand to the audio thread.
    pub fn session_estimate(&self, local_now: u64) -> ClockEstimate {
        let mut est = self.raw_estimate();
        est.ref_remote_ns = self.session_time(local_now) as i128;
        est.ref_local_ns = local_now;
        est
    }

    /// Figures for every tracked peer at `now`.
    pub fn peer_stats(&self, now: u64) -> impl Iterator<Item = PeerClockStats> + '_ {
        let master = self.master();
        self.peers.iter().map(move |(id, s)| {
            let est = s.model.estimate();
            PeerClockStats {
                peer_id: *id,
                offset_ns: est.map(|e| e.offset_at(now)),
                drift_ppm: est.map(|e| e.drift_ppm()),
                uncertainty_ns: est.map(|e| e.uncertainty_ns),
                quality: est.map_or(0.0, |e| e.quality),
                observations: est.map_or(0, |e| e.observations),
                rejected: s.model.rejected(),
                eligible: now.saturating_sub(s.first_heard) >= self.config.join_grace_ns,
                is_master: master == Some(*id),
            }
        })
    }

    /// The model of one peer's session clock.
    pub fn peer_estimate(&self, peer: PeerId) -> Option<ClockEstimate> {
        self.peers.get(&peer).and_then(|s| s.model.estimate())
    }
}

// Conversions to and from the wire messages (PROTOCOL.md 3.2).
impl From<&crate::protocol::messages::ClockPing> for ClockPing {
    fn from(m: &crate::protocol::messages::ClockPing) -> Self {
        Self {
            from: m.peer_id.0,
            t1: m.t1,
        }
    }
}

impl From<&ClockPing> for crate::protocol::messages::ClockPing {
    fn from(m: &ClockPing) -> Self {
        Self {
            peer_id: crate::protocol::messages::PeerId(m.from),
            t1: m.t1,
        }
    }
}

impl From<&crate::protocol::messages::ClockPong> for ClockPong {
    fn from(m: &crate::protocol::messages::ClockPong) -> Self {
        Self {
            from: m.peer_id.0,
            to: m.to.0,
            t1: m.t1,
            t2: m.t2,
            t3: m.t3,
        }
    }
}

impl From<&ClockPong> for crate::protocol::messages::ClockPong {
    fn from(m: &ClockPong) -> Self {
        use crate::protocol::messages::PeerId as WireId;
        Self {
            peer_id: WireId(m.from),
            to: WireId(m.to),
            t1: m.t1,
            t2: m.t2,
            t3: m.t3,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair() -> (ClockDriftArbiter, ClockDriftArbiter) {
        let cfg = ArbiterConfig::default();
        (
            ClockDriftArbiter::new(0x20, cfg, 1_000_000_000_000),
            ClockDriftArbiter::new(0x10, cfg, 7_000_000_000_000),
        )
    }

    #[test]
    fn rate_is_checked() {
        assert!(ArbiterConfig::with_rate_hz(0.5).is_err());
        assert!(ArbiterConfig::with_rate_hz(101.0).is_err());
        assert_eq!(
            ArbiterConfig::with_rate_hz(100.0).unwrap().ping_interval_ns,
            10_000_000
        );
        let cfg = ArbiterConfig::default();
        assert!(cfg.with_burst_hz(101.0).is_err());
        assert!(cfg.with_burst_hz(0.5).is_err());
        assert_eq!(
            cfg.with_burst_hz(50.0).unwrap().burst_interval_ns,
            20_000_000
        );
        assert_eq!(cfg.with_burst_hz(0.0).unwrap().burst_interval_ns, u64::MAX);
    }

    /// Intervals between the pings `poll` gave, in ms, with the time of each.
    fn ping_gaps(times: &[u64]) -> Vec<(u64, u64)> {
        times
            .windows(2)
            .map(|w| (w[1] / 1_000_000, (w[1] - w[0]) / 1_000_000))
            .collect()
    }

    /// Whether every gap ending within `at_ms` is `gap_ms` long.
    fn all_gaps(gaps: &[(u64, u64)], at_ms: impl std::ops::RangeBounds<u64>, gap_ms: u64) -> bool {
        gaps.iter()
            .filter(|(at, _)| at_ms.contains(at))
            .all(|(_, g)| *g == gap_ms)
    }

    #[test]
    fn the_burst_pings_at_100_hz_until_the_drift_is_known() {
        // Two peers on a clean 100 µs path, 150 ppm apart: the drift is
        // known within a fraction of a second of the first pongs, which
        // come once the master's join grace (2 s) is over.
        let cfg = ArbiterConfig::default();
        let b_local = |t: u64| t + t * 150 / 1_000_000 + 5_000_000_000;
        let mut a = ClockDriftArbiter::new(0x20, cfg, 0);
        let mut b = ClockDriftArbiter::new(0x10, cfg, b_local(0));
        let mut a_pings = Vec::new();
        for us in (0..6_000_000u64).step_by(100) {
            let t = us * 1000;
            if let Some(ping) = a.poll(t) {
                a_pings.push(t);
                if let Ok(Some(pong)) = b.on_ping(b_local(t + 100_000), &ping) {
                    a.on_pong(t + 200_000, &pong).ok();
                }
            }
            if let Some(ping) = b.poll(b_local(t)) {
                if let Ok(Some(pong)) = a.on_ping(t + 100_000, &ping) {
                    b.on_pong(b_local(t + 200_000), &pong).ok();
                }
            }
        }
        let gaps = ping_gaps(&a_pings);
        // Alone at first: 50 ms. Then, joining and the first fits: every 10 ms.
        assert_eq!(gaps[0], (50, 50));
        assert!(all_gaps(&gaps[1..], ..2_000, 10), "{gaps:?}");
        // Then the configured 50 ms, within a second of the first pongs.
        let last_burst = gaps
            .iter()
            .filter(|(_, g)| *g == 10)
            .map(|(at, _)| *at)
            .max()
            .unwrap();
        assert!(
            (2_000..3_000).contains(&last_burst),
            "burst until {last_burst} ms"
        );
        assert!(all_gaps(&gaps, last_burst + 51.., 50), "{gaps:?}");
        assert!(!a.is_bursting(6_000_000_000));
        assert_eq!(a.following(), Some(0x10));
        let st: Vec<_> = a.peer_stats(6_000_000_000).collect();
        let drift = st[0].drift_ppm.unwrap();
        assert!((drift - 150.0).abs() < 0.1, "{drift}");
    }

    /// Times of the pings of an arbiter polled every ms for `ms` ms that
    /// hears one peer every 100 ms (heartbeats, pings) that never pongs.
    fn pings_beside_a_silent_peer(cfg: ArbiterConfig, ms: u64) -> Vec<u64> {
        let mut a = ClockDriftArbiter::new(0x20, cfg, 0);
        let mut pings = Vec::new();
        for t in (0..ms).map(|ms| ms * 1_000_000) {
            if t % 100_000_000 == 0 {
                a.on_heard(t, 0x30).unwrap();
            }
            if a.poll(t).is_some() {
                pings.push(t);
            }
        }
        pings
    }

    #[test]
    fn a_peer_that_never_answers_ends_the_burst_after_burst_max() {
        let cfg = ArbiterConfig::default();
        let gaps = ping_gaps(&pings_beside_a_silent_peer(cfg, 25_000));
        let burst_ms = cfg.burst_max_ns / 1_000_000;
        assert!(all_gaps(&gaps, ..=burst_ms, 10), "{gaps:?}");
        assert!(all_gaps(&gaps, burst_ms + 11.., 50), "{gaps:?}");
        assert!(gaps.iter().any(|(at, _)| *at > burst_ms + 1_000));
    }

    #[test]
    fn no_burst_when_turned_off() {
        let cfg = ArbiterConfig::default().with_burst_hz(0.0).unwrap();
        let gaps = ping_gaps(&pings_beside_a_silent_peer(cfg, 3_000));
        assert!(gaps.len() > 50 && all_gaps(&gaps, .., 50), "{gaps:?}");
    }

    #[test]
    fn two_peers_elect_the_lowest_id_and_agree_on_session_time() {
        let (mut a, mut b) = pair();
        // a's local = t + 1e12, b's local = t + 7e12; 100 µs each way.
        let (oa, ob) = (1_000_000_000_000u64, 7_000_000_000_000u64);
        for ms in 0..6000u64 {
            let t = ms * 1_000_000;
            fn step(
                me: &mut ClockDriftArbiter,
                other: &mut ClockDriftArbiter,
                t: u64,
                o_me: u64,
                o_other: u64,
            ) {
                if let Some(ping) = me.poll(t + o_me) {
                    if let Ok(Some(pong)) = other.on_ping(t + 100_000 + o_other, &ping) {
                        me.on_pong(t + 200_000 + o_me, &pong).ok();
                    }
                }
            }
            step(&mut a, &mut b, t, oa, ob);
            step(&mut b, &mut a, t, ob, oa);
        }
        assert_eq!(a.master(), Some(0x10));
        assert_eq!(b.master(), Some(0x10));
        let t = 6_000_000_000u64;
        let sa = a.session_time(t + oa) as i128;
        let sb = b.session_time(t + ob) as i128;
        assert!((sa - sb).abs() < 2_000, "{sa} {sb}");
        // b founded the timeline: its session clock is its local clock.
        assert_eq!(sb, (t + ob) as i128);
        let st: Vec<_> = a.peer_stats(t + oa).collect();
        assert_eq!(st.len(), 1);
        assert!(st[0].is_master && st[0].quality > 0.5, "{st:?}");
    }

    #[test]
    fn hostile_messages_are_rejected_not_fatal() {
        let (mut a, _) = pair();
        let now = 1_000_000_000_000;
        assert_eq!(a.on_heard(now, 0), Err(ClockMessageError::BadPeer));
        assert_eq!(a.on_heard(now, 0x20), Err(ClockMessageError::BadPeer));
        let pong = ClockPong {
            from: 0x30,
            to: 0x20,
            t1: now + 5,
            t2: 1,
            t3: 0,
        };
        assert_eq!(a.on_pong(now, &pong), Err(ClockMessageError::StalePong));
        // A flood of ids is bounded.
        for id in 1..1000u32 {
            let _ = a.on_heard(now, id + 0x100);
        }
        assert_eq!(
            a.peer_stats(now).count(),
            ArbiterConfig::default().max_peers
        );
    }

    #[test]
    fn wire_conversions_round_trip() {
        let p = ClockPong {
            from: 1,
            to: 2,
            t1: 3,
            t2: 4,
            t3: 5,
        };
        let w: crate::protocol::messages::ClockPong = (&p).into();
        assert_eq!(ClockPong::from(&w), p);
        let q = ClockPing { from: 9, t1: 10 };
        let w: crate::protocol::messages::ClockPing = (&q).into();
        assert_eq!(ClockPing::from(&w), q);
    }
}
