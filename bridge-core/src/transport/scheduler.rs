//! Audio-thread side of transport scheduling: fire each command on its
//! sample.
//!
//! The worker converts a command's session time to a sample index of this
//! plugin's running sample counter (session time → local CPU time through the
//! [`crate::clock::ClockDriftArbiter`], local time → sample through the
//! [`crate::clock::DawClock`]) and sends a [`ScheduledEvent`] through an
//! `rtrb` ring. In `process()` the plugin pushes what it popped into its
//! [`BlockScheduler`] and calls [`BlockScheduler::process_block`], which
//! calls back, in sample order, for each event due in the block with its
//! offset inside the block — or at offset 0, reported late, if its sample has
//! passed already. Each callback carries the target and the landed sample,
//! so the peer can report how far off it landed.

use super::TransportCommandKind;

/// Capacity of a [`BlockScheduler`].
pub const SCHEDULER_CAPACITY: usize = 32;

/// A command bound to a sample of the plugin's running sample counter.
///
/// Thread-safe: yes (plain `Copy` value; send it through a ring). Realtime-safe: yes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ScheduledEvent {
    /// Target sample (running counter).
    pub sample: u64,
    /// What happens.
    pub command: TransportCommandKind,
    /// Session time it was scheduled for, ns (identifies the command).
    pub session_ns: u64,
}

/// An event fired inside a block.
///
/// Thread-safe: yes. Realtime-safe: yes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Landing {
    /// What happens.
    pub command: TransportCommandKind,
    /// Session time it was scheduled for, ns.
    pub session_ns: u64,
    /// Frame offset inside the block where it takes effect.
    pub offset: u32,
    /// Sample it should have landed on.
    pub target_sample: u64,
    /// Sample it landed on (`> target_sample` when it came late).
    pub landed_sample: u64,
}

/// Why an event could not be scheduled.
///
/// Thread-safe: yes. Realtime-safe: yes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ScheduleError {
    /// All slots are taken.
    #[error("scheduler full")]
    Full,
}

/// Fixed-capacity, allocation-free scheduler for the audio thread.
///
/// Thread-safe: no (owned by the audio thread). Realtime-safe: yes — no
/// allocation, no locks, O(capacity) per call.
#[derive(Debug, Clone)]
pub struct BlockScheduler {
    slots: [Option<ScheduledEvent>; SCHEDULER_CAPACITY],
    late: u64,
}

impl Default for BlockScheduler {
    fn default() -> Self {
        Self::new()
    }
}

impl BlockScheduler {
    /// Empty.
    pub const fn new() -> Self {
        Self {
            slots: [None; SCHEDULER_CAPACITY],
            late: 0,
        }
    }

    /// Adds an event. Same (session_ns, command) twice replaces the first
    /// (a rescheduled command with a refined sample).
    pub fn schedule(&mut self, ev: ScheduledEvent) -> Result<(), ScheduleError> {
        for old in self.slots.iter_mut().flatten() {
            if old.session_ns == ev.session_ns && old.command == ev.command {
                *old = ev;
                return Ok(());
            }
        }
        match self.slots.iter_mut().find(|s| s.is_none()) {
            Some(slot) => {
                *slot = Some(ev);
                Ok(())
            }
            None => Err(ScheduleError::Full),
        }
    }

    /// Events waiting.
    pub fn pending(&self) -> usize {
        self.slots.iter().filter(|s| s.is_some()).count()
    }

    /// Events that fired late so far.
    pub fn late(&self) -> u64 {
        self.late
    }

    /// Fires, in sample order, every event due before `block_start + frames`.
    pub fn process_block(&mut self, block_start: u64, frames: u32, mut fire: impl FnMut(Landing)) {
        let end = block_start + frames as u64;
        loop {
            let mut best: Option<usize> = None;
            for (i, s) in self.slots.iter().enumerate() {
                if let Some(ev) = s {
                    if ev.sample < end
                        && best.is_none_or(|b| {
                            self.slots[b].is_some_and(|e| {
                                (ev.sample, ev.session_ns) < (e.sample, e.session_ns)
                            })
                        })
                    {
                        best = Some(i);
                    }
                }
            }
            let Some(i) = best else { break };
            let Some(ev) = self.slots[i].take() else {
                break;
            };
            let landed = ev.sample.max(block_start);
            if landed > ev.sample {
                self.late += 1;
            }
            fire(Landing {
                command: ev.command,
                session_ns: ev.session_ns,
                offset: (landed - block_start) as u32,
                target_sample: ev.sample,
                landed_sample: landed,
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(sample: u64, session_ns: u64, command: TransportCommandKind) -> ScheduledEvent {
        ScheduledEvent {
            sample,
            command,
            session_ns,
        }
    }

    #[test]
    fn fires_on_the_exact_sample_in_order() {
        let mut s = BlockScheduler::new();
        s.schedule(ev(1000, 2, TransportCommandKind::Stop)).unwrap();
        s.schedule(ev(300, 1, TransportCommandKind::Play)).unwrap();
        let mut got = Vec::new();
        for b in 0..10u64 {
            s.process_block(b * 128, 128, |l| got.push((b, l)));
        }
        assert_eq!(got.len(), 2);
        assert_eq!(got[0].0, 2);
        assert_eq!(got[0].1.offset, 300 - 256);
        assert_eq!(got[0].1.landed_sample, 300);
        assert_eq!(got[1].0, 7);
        assert_eq!(got[1].1.offset, 1000 - 896);
        assert_eq!(s.late(), 0);
    }

    #[test]
    fn late_events_fire_at_block_start_and_are_reported() {
        let mut s = BlockScheduler::new();
        s.schedule(ev(100, 1, TransportCommandKind::Play)).unwrap();
        let mut got = None;
        s.process_block(512, 128, |l| got = Some(l));
        let l = got.unwrap();
        assert_eq!((l.offset, l.target_sample, l.landed_sample), (0, 100, 512));
        assert_eq!(s.late(), 1);
    }

    #[test]
    fn rescheduling_replaces_and_capacity_is_bounded() {
        let mut s = BlockScheduler::new();
        s.schedule(ev(100, 1, TransportCommandKind::Play)).unwrap();
        s.schedule(ev(105, 1, TransportCommandKind::Play)).unwrap();
        assert_eq!(s.pending(), 1);
        for i in 0..SCHEDULER_CAPACITY as u64 - 1 {
            s.schedule(ev(200 + i, 10 + i, TransportCommandKind::Seek))
                .unwrap();
        }
        assert_eq!(
            s.schedule(ev(9, 999, TransportCommandKind::Stop)),
            Err(ScheduleError::Full)
        );
    }
}
