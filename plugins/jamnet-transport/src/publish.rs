//! Lead mode, sans-IO: turns the host transport, as `process()` saw it block
//! by block, into TOAST `transport` updates (PROTOCOL.md 3.4): a change of
//! play state, tempo, time signature or a jump in position is announced at
//! once; an unchanged state is re-announced every `interval` so late joiners
//! and lost datagrams recover. Time is a parameter.

/// The host transport at the start of one `process()` block.
///
/// Thread-safe: yes (plain `Copy` value, sent through an `rtrb` ring).
/// Realtime-safe: yes.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct HostSnapshot {
    /// Host says it is playing.
    pub playing: bool,
    /// Host says it is recording.
    pub recording: bool,
    /// Tempo in BPM (120 if the host gives none).
    pub tempo: f64,
    /// Time signature numerator.
    pub ts_num: u8,
    /// Time signature denominator.
    pub ts_den: u8,
    /// Position of the block's first sample, in samples.
    pub pos_samples: i64,
    /// Position of the block's first sample, in seconds.
    pub pos_seconds: f64,
    /// Position of the block's first sample, in quarter notes.
    pub pos_beats: f64,
    /// Samples in the block.
    pub block_len: u32,
    /// Host sample rate.
    pub sample_rate: f32,
    /// The plugin's running sample counter at the block's first sample
    /// (sum of block lengths since activation; never jumps).
    pub running_sample: u64,
    /// Local `CLOCK_MONOTONIC` (ns) when `process()` started the block.
    pub local_ns: u64,
}

/// What a transport update says (PROTOCOL.md 3.4 `command`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    /// Playing (from `position`).
    Play,
    /// Stopped (at `position`).
    Stop,
    /// Recording.
    Record,
    /// Position jumped.
    Seek,
    /// Tempo or time signature changed.
    Tempo,
}

impl Command {
    /// Wire spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Command::Play => "PLAY",
            Command::Stop => "STOP",
            Command::Record => "RECORD",
            Command::Seek => "SEEK",
            Command::Tempo => "TEMPO",
        }
    }
}

/// One transport update to publish.
///
/// Thread-safe: yes (plain value). Realtime-safe: yes.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TransportUpdate {
    /// What happened.
    pub command: Command,
    /// Time (ns, on the clock `on_snapshot` was given) the update refers to.
    pub timestamp_ns: u64,
    /// Musical position at that instant, ms (≥ 0).
    pub position_ms: f64,
    /// Position in quarter notes.
    pub beat: f64,
    /// Tempo, BPM (1–999).
    pub bpm: f64,
    /// Time signature.
    pub time_signature: [u8; 2],
    /// Sender's transport-change counter.
    pub seq: u64,
    /// Host is playing (the state behind `command`).
    pub playing: bool,
}

/// Lead-mode publisher state.
///
/// Thread-safe: no (owned by the worker). Realtime-safe: yes (no allocation).
#[derive(Debug)]
pub struct TransportPublisher {
    last: Option<HostSnapshot>,
    last_sent_ns: Option<u64>,
    /// Host position (s) of the last update: offline renders run faster
    /// than real time, so "due" also counts host time.
    last_sent_pos_s: f64,
    interval_ns: u64,
    seq: u64,
}

impl TransportPublisher {
    /// A publisher re-announcing every `interval_ns` while nothing changes.
    pub fn new(interval_ns: u64) -> Self {
        Self {
            last: None,
            last_sent_ns: None,
            last_sent_pos_s: 0.0,
            interval_ns: interval_ns.max(1),
            seq: 0,
        }
    }

    /// Change the re-announce interval.
    pub fn set_interval_ns(&mut self, interval_ns: u64) {
        self.interval_ns = interval_ns.max(1);
    }

    /// Feed one block's snapshot at time `now_ns` (any monotonic clock: the
    /// worker passes the block's local time and maps the update's
    /// `timestamp_ns` to session time itself); returns the
    /// update to publish, if any.
    pub fn on_snapshot(&mut self, snap: &HostSnapshot, now_ns: u64) -> Option<TransportUpdate> {
        let command = match &self.last {
            None => Some(if snap.playing {
                Command::Play
            } else {
                Command::Stop
            }),
            Some(prev) => {
                if prev.playing != snap.playing {
                    Some(if snap.playing {
                        Command::Play
                    } else {
                        Command::Stop
                    })
                } else if (prev.tempo - snap.tempo).abs() > 1e-6
                    || prev.ts_num != snap.ts_num
                    || prev.ts_den != snap.ts_den
                {
                    Some(Command::Tempo)
                } else {
                    // Where this block should start if nothing jumped.
                    let expected = if prev.playing {
                        prev.pos_samples + i64::from(prev.block_len)
                    } else {
                        prev.pos_samples
                    };
                    if (snap.pos_samples - expected).abs() > 1 {
                        Some(Command::Seek)
                    } else {
                        None
                    }
                }
            }
        };
        let host_elapsed_ns = ((snap.pos_seconds - self.last_sent_pos_s).abs() * 1e9) as u64;
        let due = self
            .last_sent_ns
            .is_none_or(|t| now_ns.saturating_sub(t) >= self.interval_ns)
            || (snap.playing && host_elapsed_ns >= self.interval_ns);
        self.last = Some(*snap);
        let command = match command {
            Some(c) => {
                self.seq += 1;
                c
            }
            None if due => {
                if snap.playing {
                    Command::Play
                } else {
                    Command::Stop
                }
            }
            None => return None,
        };
        let command = if command == Command::Play && snap.recording {
            Command::Record
        } else {
            command
        };
        self.last_sent_ns = Some(now_ns);
        self.last_sent_pos_s = snap.pos_seconds;
        Some(TransportUpdate {
            command,
            timestamp_ns: now_ns,
            position_ms: (snap.pos_seconds * 1000.0).max(0.0),
            beat: snap.pos_beats,
            bpm: snap.tempo.clamp(1.0, 999.0),
            time_signature: [snap.ts_num, snap.ts_den],
            seq: self.seq,
            playing: snap.playing,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snap(playing: bool, pos: i64) -> HostSnapshot {
        HostSnapshot {
            playing,
            recording: false,
            tempo: 133.0,
            ts_num: 4,
            ts_den: 4,
            pos_samples: pos,
            pos_seconds: pos as f64 / 48_000.0,
            pos_beats: pos as f64 / 48_000.0 * 133.0 / 60.0,
            block_len: 64,
            sample_rate: 48_000.0,
            running_sample: 0,
            local_ns: 0,
        }
    }

    const MS: u64 = 1_000_000;

    #[test]
    fn first_block_announces_state_then_quiet_until_interval() {
        let mut p = TransportPublisher::new(250 * MS);
        let u = p.on_snapshot(&snap(true, 0), 0).unwrap();
        assert_eq!(u.command, Command::Play);
        assert_eq!(u.bpm, 133.0);
        assert_eq!(u.seq, 1);
        // Continuous playback at real-time speed (64 samples = 1.333 ms):
        // nothing until the interval.
        let block_ns = |i: u64| i * 64 * 1_000_000_000 / 48_000;
        let mut i = 1;
        while block_ns(i) < 250 * MS {
            assert!(
                p.on_snapshot(&snap(true, 64 * i as i64), block_ns(i))
                    .is_none(),
                "i={i}"
            );
            i += 1;
        }
        let pos = 64 * i as i64;
        let u = p.on_snapshot(&snap(true, pos), block_ns(i)).unwrap();
        assert_eq!(u.command, Command::Play);
        assert_eq!(u.seq, 1, "a re-announce is not a change");
        assert!((u.position_ms - pos as f64 / 48.0).abs() < 1e-9);
    }

    #[test]
    fn changes_are_announced_at_once() {
        let mut p = TransportPublisher::new(10_000 * MS);
        p.on_snapshot(&snap(false, 0), 0);
        assert_eq!(
            p.on_snapshot(&snap(true, 0), MS).unwrap().command,
            Command::Play
        );
        assert!(p.on_snapshot(&snap(true, 64), 2 * MS).is_none());
        // Jump (loop/locate).
        let u = p.on_snapshot(&snap(true, 96_000), 3 * MS).unwrap();
        assert_eq!(u.command, Command::Seek);
        assert!((u.position_ms - 2000.0).abs() < 1e-9);
        let mut s = snap(true, 96_064);
        s.tempo = 90.0;
        let u = p.on_snapshot(&s, 4 * MS).unwrap();
        assert_eq!((u.command, u.bpm), (Command::Tempo, 90.0));
        let mut s = snap(false, 96_128);
        s.tempo = 90.0;
        let u = p.on_snapshot(&s, 5 * MS).unwrap();
        assert_eq!(u.command, Command::Stop);
        assert_eq!(u.seq, 5);
        // Stopped and not moving: quiet.
        assert!(p.on_snapshot(&s, 6 * MS).is_none());
    }

    #[test]
    fn offline_render_reannounces_by_host_time() {
        // An offline render: host time runs 100x faster than the clock.
        let mut p = TransportPublisher::new(250 * MS);
        assert!(p.on_snapshot(&snap(true, 0), 0).is_some());
        let mut sent = 0;
        for i in 1..=1875 {
            // 1875 blocks of 64 = 2.5 s of host time in 25 ms of real time
            if p.on_snapshot(&snap(true, 64 * i), i as u64 * 13_333)
                .is_some()
            {
                sent += 1;
            }
        }
        assert_eq!(sent, 9, "one re-announce per 250 ms of host time");
    }

    #[test]
    fn recording_is_reported_and_values_are_clamped() {
        let mut p = TransportPublisher::new(MS);
        let mut s = snap(true, 0);
        s.recording = true;
        s.tempo = 5000.0;
        s.pos_seconds = -1.0;
        let u = p.on_snapshot(&s, 0).unwrap();
        assert_eq!(u.command, Command::Record);
        assert_eq!(u.bpm, 999.0);
        assert_eq!(u.position_ms, 0.0);
    }
}
