//! Follow mode's host transport control: decide, block by block, what to ask
//! the host's transport to do so that the DAW itself plays along with the
//! session (CLAP `clap.transport-control`, served by
//! `jamnet_plugin_kit::clap_shim::HostLink`).
//!
//! The rules, for a session transport known at the block's first sample:
//! - session playing, host stopped → play from where the session will be
//!   when the host starts (the host's measured reaction time ahead);
//! - session stopped, host playing → stop, then locate to the session's
//!   position;
//! - both playing and the host more than [`SEEK_MS`] off (the session
//!   seeked) → locate at once, aimed ahead by the reaction time;
//! - both playing and the host more than [`TOLERANCE_MS`] off for
//!   [`HOLD_MS`] (drift, a host at another tempo) → locate the same way: a
//!   jump is audible, so small differences are left alone (the offset
//!   display shows them);
//! - both stopped and the host elsewhere → locate.
//!
//! A request is given [`RETRY_MS`] to show in the host's transport before it
//! is asked again; the time from request to the host's change is measured
//! and used to aim the next one. Until then a request is aimed one block
//! ahead: a host acts on it between blocks at the earliest, so the next
//! block is where the quickest host starts (without this the first start
//! of a host that reacts at once came one block late).

use jamnet_plugin_kit::clap_shim::HostRequest;

/// Host position error left alone while both play, ms.
pub const TOLERANCE_MS: f64 = 20.0;
/// How long the error must last before a corrective locate, ms.
pub const HOLD_MS: f64 = 250.0;
/// An error this large is a seek: located without waiting, ms.
pub const SEEK_MS: f64 = 100.0;
/// How long a request may take to show before it is asked again, ms.
pub const RETRY_MS: f64 = 1000.0;
/// Longest believable host reaction, ms (a longer gap is not a reaction).
const MAX_REACTION_MS: f64 = 1000.0;

/// The host's transport at a block's first sample.
///
/// Thread-safe: yes (`Copy` value). Realtime-safe: yes.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct HostTransport {
    /// Rolling.
    pub playing: bool,
    /// Song position, quarter notes.
    pub beats: f64,
    /// The host's tempo (CLAP cannot set it: a host at another tempo than
    /// the session's drifts and is located again and again).
    pub bpm: f64,
}

/// The session's transport at the same sample.
///
/// Thread-safe: yes (`Copy` value). Realtime-safe: yes.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SessionTransport {
    /// Rolling.
    pub playing: bool,
    /// Session position, quarter notes.
    pub beats: f64,
    /// Session tempo.
    pub bpm: f64,
}

/// A request waiting to show in the host's transport.
#[derive(Debug, Clone, Copy, PartialEq)]
struct InFlight {
    request: HostRequest,
    /// Running sample of the block that posted it.
    at: u64,
    /// Host position then, to notice a locate.
    host_beats: f64,
}

/// Follow mode's host transport controller.
///
/// Thread-safe: no (owned by the audio thread). Realtime-safe: yes (plain
/// arithmetic on a few fields).
#[derive(Debug, Clone, Default)]
pub struct HostFollower {
    in_flight: Option<InFlight>,
    /// Measured request-to-change time, samples (None: not measured yet).
    reaction: Option<f64>,
    /// Running sample since which the host has been off while both play.
    off_since: Option<u64>,
    requests: u64,
}

impl HostFollower {
    /// Nothing requested yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Requests decided so far.
    pub fn requests(&self) -> u64 {
        self.requests
    }

    /// Measured host reaction time, ms (None until a request showed).
    pub fn reaction_ms(&self, sample_rate: f64) -> Option<f64> {
        self.reaction.map(|r| r * 1000.0 / sample_rate)
    }

    /// Forget everything (mode switched, control off, session lost).
    pub fn reset(&mut self) {
        self.in_flight = None;
        self.off_since = None;
    }

    /// One block of `frames`: `running` is its first sample on the
    /// plugin's running counter; the transports are both at that sample.
    /// Returns the request to post, if any.
    pub fn on_block(
        &mut self,
        running: u64,
        frames: u64,
        sample_rate: f64,
        session: SessionTransport,
        host: HostTransport,
    ) -> Option<HostRequest> {
        if sample_rate <= 0.0 || !session.beats.is_finite() || !host.beats.is_finite() {
            return None;
        }
        let ms = |samples: f64| samples * 1000.0 / sample_rate;
        if let Some(f) = self.in_flight {
            let waited = running.saturating_sub(f.at) as f64;
            // A locate shows as a jump: the host is more than 1 ms away from
            // where its own tempo would have carried it.
            let host_beats_per_ms = host.bpm.max(1.0) / 60_000.0;
            let carried = if host.playing {
                f.host_beats + ms(waited) * host_beats_per_ms
            } else {
                f.host_beats
            };
            let moved = (host.beats - carried).abs() > host_beats_per_ms;
            let shown = match f.request {
                HostRequest::PlayFrom(_) => host.playing,
                HostRequest::StopAt(_) => !host.playing,
                HostRequest::Locate(_) => moved,
            };
            if shown {
                if ms(waited) <= MAX_REACTION_MS {
                    self.reaction = Some(waited);
                }
                self.in_flight = None;
                self.off_since = None;
            } else if ms(waited) < RETRY_MS {
                return None;
            } else {
                self.in_flight = None;
            }
        }
        // Where the session will be when the host acts on a request now
        // (not before the next block, however quick the host).
        let ahead = |s: &SessionTransport, reaction: Option<f64>| {
            if s.playing {
                s.beats + reaction.unwrap_or(frames as f64) / sample_rate * s.bpm / 60.0
            } else {
                s.beats
            }
        };
        let off_ms = (host.beats - session.beats) * 60_000.0 / session.bpm.max(1.0);
        let request = match (session.playing, host.playing) {
            (true, false) => Some(HostRequest::PlayFrom(ahead(&session, self.reaction))),
            (false, true) => Some(HostRequest::StopAt(session.beats)),
            (true, true) => {
                if off_ms.abs() <= TOLERANCE_MS {
                    self.off_since = None;
                    None
                } else {
                    let since = *self.off_since.get_or_insert(running);
                    (off_ms.abs() > SEEK_MS || ms(running.saturating_sub(since) as f64) >= HOLD_MS)
                        .then(|| HostRequest::Locate(ahead(&session, self.reaction)))
                }
            }
            (false, false) => {
                (off_ms.abs() > TOLERANCE_MS).then_some(HostRequest::Locate(session.beats))
            }
        };
        if let Some(request) = request {
            self.in_flight = Some(InFlight {
                request,
                at: running,
                host_beats: host.beats,
            });
            self.requests += 1;
        }
        request
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SR: f64 = 48_000.0;
    const BLOCK: u64 = 64;
    const BPM: f64 = 120.0;

    /// A host that acts on requests `delay` blocks after they are posted,
    /// advancing its own position while playing.
    struct FakeHost {
        t: HostTransport,
        queue: Vec<(u64, HostRequest)>,
        delay: u64,
    }

    impl FakeHost {
        /// Stopped at `beats`, playing at `bpm` once started, acting on
        /// requests `delay` blocks after they are posted.
        fn stopped(beats: f64, bpm: f64, delay: u64) -> Self {
            FakeHost {
                t: HostTransport {
                    playing: false,
                    beats,
                    bpm,
                },
                queue: Vec::new(),
                delay,
            }
        }

        fn step(&mut self, block: u64) {
            let due: Vec<HostRequest> = self
                .queue
                .iter()
                .filter(|(b, _)| *b + self.delay <= block)
                .map(|(_, r)| *r)
                .collect();
            self.queue.retain(|(b, _)| *b + self.delay > block);
            for r in due {
                match r {
                    HostRequest::PlayFrom(b) => {
                        self.t.beats = b;
                        self.t.playing = true;
                    }
                    HostRequest::StopAt(b) => {
                        self.t.playing = false;
                        self.t.beats = b;
                    }
                    HostRequest::Locate(b) => self.t.beats = b,
                }
            }
        }
        fn advance(&mut self) {
            if self.t.playing {
                self.t.beats += BLOCK as f64 / SR * BPM / 60.0;
            }
        }
    }

    /// Session plays from beat 0 at block `start`, stops at block `stop`;
    /// returns the host's offset from the session (ms) per block and the
    /// requests made.
    fn run(delay: u64, start: u64, stop: u64, blocks: u64) -> (Vec<(bool, f64)>, u64) {
        let mut f = HostFollower::new();
        let mut host = FakeHost::stopped(7.0, BPM, delay);
        let mut trace = Vec::new();
        for b in 0..blocks {
            host.step(b);
            let playing = (start..stop).contains(&b);
            let beats = (b.clamp(start, stop) - start) as f64 * BLOCK as f64 / SR * BPM / 60.0;
            let session = SessionTransport {
                playing,
                beats,
                bpm: BPM,
            };
            if let Some(r) = f.on_block(b * BLOCK, BLOCK, SR, session, host.t) {
                host.queue.push((b, r));
            }
            trace.push((
                host.t.playing,
                (host.t.beats - session.beats) * 60_000.0 / BPM,
            ));
            host.advance();
        }
        (trace, f.requests())
    }

    #[test]
    fn the_host_starts_stops_and_locates_with_the_session() {
        // 750 blocks = 1 s; a host that takes 5 blocks (6.7 ms) to react.
        let (trace, requests) = run(5, 750, 3000, 3750);
        // Stopped elsewhere (beat 7) before the session plays: located to 0.
        assert!(
            trace[700].1.abs() < 1e-9,
            "stopped host not located: {:?}",
            trace[700]
        );
        // Starts within the reaction time of the session.
        let started = trace.iter().position(|t| t.0).unwrap();
        assert!(
            (750..=757).contains(&started),
            "host started at block {started}"
        );
        // Its first start is one reaction late at most (not measured yet);
        // after that it stays within the tolerance.
        for (i, (playing, off)) in trace[started..3000].iter().enumerate() {
            assert!(
                *playing,
                "host stopped while the session played (block {i})"
            );
            assert!(
                off.abs() <= 8.0,
                "block {}: host {off:.2} ms off",
                started + i
            );
        }
        // Stopped with the session, at the session's position.
        assert!(
            !trace[3100].0 && trace[3100].1.abs() < 1e-9,
            "{:?}",
            trace[3100]
        );
        // Locate (before the start), play, stop: no request storms.
        assert!(requests <= 4, "{requests} requests");
    }

    #[test]
    fn a_host_that_acts_at_the_next_block_starts_exactly_with_the_session() {
        // Stopped where the session starts, so the start is the first
        // request and no reaction is known: aimed one block ahead, it lands
        // on the session's position, not a block behind.
        let mut f = HostFollower::new();
        let mut host = FakeHost::stopped(0.0, BPM, 1);
        let per_block = BLOCK as f64 / SR * BPM / 60.0;
        for b in 0..200u64 {
            host.step(b);
            let session = SessionTransport {
                playing: b >= 10,
                beats: b.saturating_sub(10) as f64 * per_block,
                bpm: BPM,
            };
            if let Some(r) = f.on_block(b * BLOCK, BLOCK, SR, session, host.t) {
                host.queue.push((b, r));
            }
            if b > 10 {
                assert!(host.t.playing, "block {b}: not started");
                let off = (host.t.beats - session.beats) * 60_000.0 / BPM;
                assert!(off.abs() < 1e-9, "block {b}: host {off} ms off");
            }
            host.advance();
        }
        assert_eq!(f.requests(), 1);
    }

    #[test]
    fn a_drifting_host_is_located_once_after_the_hold_with_the_measured_reaction() {
        let mut f = HostFollower::new();
        let mut host = FakeHost::stopped(0.0, BPM * 1.01, 3);
        let per_block = BLOCK as f64 / SR * BPM / 60.0;
        let mut session_beats = 0.0;
        let mut located_at = None;
        for b in 0..6000u64 {
            host.step(b);
            let session = SessionTransport {
                playing: true,
                beats: session_beats,
                bpm: BPM,
            };
            if let Some(r) = f.on_block(b * BLOCK, BLOCK, SR, session, host.t) {
                if matches!(r, HostRequest::Locate(_)) && located_at.is_none() {
                    located_at = Some(b);
                }
                host.queue.push((b, r));
            }
            // The host's tempo is 1 % above the session's.
            if host.t.playing {
                host.t.beats += per_block * 1.01;
            }
            session_beats += per_block;
        }
        assert_eq!(f.reaction_ms(SR), Some(3.0 * BLOCK as f64 * 1000.0 / SR));
        let b = located_at.expect("no corrective locate");
        // It started 2.7 ms behind (first start aimed one block ahead, the
        // host took three); 1 % takes 2.27 s (1700 blocks) to make that
        // +20 ms, then the 250 ms (188 blocks) hold.
        assert!((1850..1930).contains(&b), "located at block {b}");
        let off = (host.t.beats - session_beats) * 60_000.0 / BPM;
        assert!(
            off.abs() <= TOLERANCE_MS + 1.0,
            "host {off:.2} ms off at the end"
        );
    }

    #[test]
    fn a_session_seek_locates_the_host_at_once() {
        let mut f = HostFollower::new();
        let per_block = BLOCK as f64 / SR * BPM / 60.0;
        let mut host = FakeHost::stopped(0.0, BPM, 2);
        let mut session_beats = 0.0;
        let mut trace = Vec::new();
        for b in 0..1500u64 {
            host.step(b);
            if b == 750 {
                session_beats = 16.0;
            }
            let session = SessionTransport {
                playing: true,
                beats: session_beats,
                bpm: BPM,
            };
            if let Some(r) = f.on_block(b * BLOCK, BLOCK, SR, session, host.t) {
                host.queue.push((b, r));
            }
            trace.push((host.t.beats - session_beats) * 60_000.0 / BPM);
            host.advance();
            session_beats += per_block;
        }
        // Two blocks to react, and aimed with the reaction measured at the
        // start: exact after the seek.
        assert!(trace[751].abs() > 1000.0);
        assert!(trace[752].abs() < 1e-6, "{:?}", &trace[748..756]);
        assert!(trace[760..].iter().all(|o| o.abs() < 1e-6));
    }

    #[test]
    fn a_host_that_ignores_requests_is_asked_again_only_after_the_retry() {
        let mut f = HostFollower::new();
        let session = SessionTransport {
            playing: true,
            beats: 0.0,
            bpm: BPM,
        };
        let host = HostTransport {
            playing: false,
            beats: 0.0,
            bpm: BPM,
        };
        let mut asked = Vec::new();
        for b in 0..3000u64 {
            if f.on_block(b * BLOCK, BLOCK, SR, session, host).is_some() {
                asked.push(b);
            }
        }
        // 3000 blocks = 4 s, a retry every 1 s (750 blocks).
        assert_eq!(asked, vec![0, 750, 1500, 2250]);
        assert_eq!(f.reaction_ms(SR), None);
    }

    #[test]
    fn garbage_positions_ask_for_nothing() {
        let mut f = HostFollower::new();
        let s = SessionTransport {
            playing: true,
            beats: f64::NAN,
            bpm: BPM,
        };
        let h = HostTransport {
            playing: false,
            beats: 0.0,
            bpm: BPM,
        };
        assert_eq!(f.on_block(0, BLOCK, SR, s, h), None);
        assert_eq!(
            f.on_block(0, BLOCK, 0.0, SessionTransport { beats: 0.0, ..s }, h),
            None
        );
    }
}
