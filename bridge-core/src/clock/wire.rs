//! The wire side of a [`ClockDriftArbiter`], sans-IO: turns a due ping into
//! a TOAST [`Message`] and handles received `clock_ping` / `clock_pong`
//! messages, returning the pong to send back.
//!
//! Shared by [`crate::worker::peer::LivePeer`] and the JAMNet Transport
//! plugin's worker so that every peer speaks the same exchange (PROTOCOL.md
//! 3.2) and runs the same election. Framing, encryption and sockets stay
//! with the caller: a pong goes back by unicast to the address the ping came
//! from, a ping goes to the group or to every known peer.

use super::arbiter::{ClockDriftArbiter, ClockMessageError};
use crate::protocol::messages::{self, Message};

/// What the caller should do after [`on_clock_message`].
///
/// Thread-safe: yes (plain value). Realtime-safe: yes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClockReply {
    /// Not a `clock_ping` / `clock_pong`: the arbiter was not touched.
    NotClock,
    /// Taken by the arbiter; nothing to send.
    Handled,
    /// Send this `clock_pong` to the address the ping came from. Refresh
    /// `t3` with [`ClockDriftArbiter::session_time`] if it leaves later
    /// than right away (it was stamped at the receive instant).
    Pong(messages::ClockPong),
}

/// A `clock_ping` message if one is due at local time `now` (also re-runs
/// the election: call at least every ping interval, see
/// [`ClockDriftArbiter::next_poll_at`]).
pub fn due_ping(arbiter: &mut ClockDriftArbiter, now: u64) -> Option<Message<'static>> {
    arbiter
        .poll(now)
        .map(|ping| Message::ClockPing(messages::ClockPing::from(&ping)))
}

/// Feed the frame header's `stamp` of a message from `source` that arrived
/// at local time `arrived` to the arbiter as a one-way observation
/// ([`ClockDriftArbiter::on_stamped`]), unless it is a pong answering one of
/// our own pings (its stamp is that exchange's `t3` again, and counting it
/// twice would overstate the backward side). Call it for every accepted
/// frame, before [`on_clock_message`].
pub fn observe_stamp(
    arbiter: &mut ClockDriftArbiter,
    arrived: u64,
    source: u32,
    stamp: u64,
    message: &Message<'_>,
) {
    if !matches!(message, Message::ClockPong(p) if p.to.0 == arbiter.id()) {
        arbiter.on_stamped(arrived, source, stamp);
    }
}

/// Hand a message from frame source `source`, which arrived at local time
/// `arrived` and is handled at `now` (≥ `arrived`), to the arbiter if it is
/// a clock message. A pong answering a ping carries `t2` = the arrival and
/// `t3` = `now`: the time the ping waited for this thread is the ponger's,
/// not the path's.
///
/// A clock message whose `peer_id` is not the frame's source is refused
/// ([`ClockMessageError::BadPeer`]): one peer must not speak for another.
/// Errors are the arbiter's (stale pong, rejected sample, peer table full);
/// they are not fatal to the session.
pub fn on_clock_message(
    arbiter: &mut ClockDriftArbiter,
    arrived: u64,
    now: u64,
    source: u32,
    message: &Message<'_>,
) -> Result<ClockReply, ClockMessageError> {
    match message {
        Message::ClockPing(p) => {
            if p.peer_id.0 != source {
                return Err(ClockMessageError::BadPeer);
            }
            Ok(match arbiter.on_ping(arrived, &p.into())? {
                Some(mut pong) => {
                    pong.t3 = pong.t3.max(arbiter.session_time(now.max(arrived)));
                    ClockReply::Pong((&pong).into())
                }
                None => ClockReply::Handled,
            })
        }
        Message::ClockPong(p) => {
            if p.peer_id.0 != source {
                return Err(ClockMessageError::BadPeer);
            }
            arbiter.on_pong(arrived, &p.into())?;
            Ok(ClockReply::Handled)
        }
        _ => Ok(ClockReply::NotClock),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::ArbiterConfig;
    use crate::protocol::messages::PeerId;

    /// Two arbiters talking only through wire messages agree on the master
    /// and on session time; a ping claiming another peer's id is refused.
    #[test]
    fn wire_exchange_syncs_two_arbiters() {
        let cfg = ArbiterConfig::default();
        let (oa, ob) = (5_000_000_000_000u64, 1_000_000_000u64);
        let mut a = ClockDriftArbiter::new(0x10, cfg, oa);
        let mut b = ClockDriftArbiter::new(0x20, cfg, ob);
        // `me` pings, `other` answers 100 µs later, the pong lands 200 µs after the ping.
        fn step(
            me: &mut ClockDriftArbiter,
            other: &mut ClockDriftArbiter,
            t: u64,
            o_me: u64,
            o_other: u64,
        ) {
            let Some(ping) = due_ping(me, t + o_me) else {
                return;
            };
            let reply = on_clock_message(
                other,
                t + 100_000 + o_other,
                t + 100_000 + o_other,
                me.id(),
                &ping,
            )
            .unwrap();
            if let ClockReply::Pong(pong) = reply {
                let pong = Message::ClockPong(pong);
                // A sample the model rejects (e.g. across a hand-off) is
                // an error of the exchange, not of the wire.
                if let Ok(r) = on_clock_message(
                    me,
                    t + 200_000 + o_me,
                    t + 200_000 + o_me,
                    other.id(),
                    &pong,
                ) {
                    assert_eq!(r, ClockReply::Handled);
                }
            }
        }
        for ms in 0..4000u64 {
            let t = ms * 1_000_000;
            step(&mut a, &mut b, t, oa, ob);
            step(&mut b, &mut a, t, ob, oa);
        }
        assert_eq!((a.master(), b.master()), (Some(0x10), Some(0x10)));
        let t = 4_000_000_000u64;
        let (sa, sb) = (a.session_time(t + oa), b.session_time(t + ob));
        assert!((sa as i128 - sb as i128).abs() < 2_000, "{sa} {sb}");
        let forged = Message::ClockPing(messages::ClockPing {
            peer_id: PeerId(0x30),
            t1: 1,
        });
        assert_eq!(
            on_clock_message(&mut a, t + oa, t + oa, 0x40, &forged),
            Err(ClockMessageError::BadPeer)
        );
        let other = Message::Goodbye(messages::Goodbye {
            peer_id: PeerId(0x20),
        });
        assert_eq!(
            on_clock_message(&mut a, t + oa, t + oa, 0x20, &other),
            Ok(ClockReply::NotClock)
        );
    }
}
