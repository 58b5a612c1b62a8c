//! MIDI over the simulated network, end to end: a [`BurstSender`] on one
//! side of a [`SimLink`], a [`BurstReceiver`] on the other, in virtual time.
//! Used by the tests (fixed seeds, functional assertions) and by
//! `toaster bench net` (the delivery-vs-loss table).
//!
//! Frames cross the link as real TOAST v2 datagrams (COMPACT_JSONL jmid
//! payloads, CRC-checked), encoded and decoded with [`super::wire`].

use std::collections::HashMap;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::{wire, BurstConfig, BurstFrame, BurstReceiver, BurstSender, DedupConfig};
use crate::session::SeqStats;
use crate::sim::{SimLink, SimLinkConfig};

/// One MIDI-over-sim run.
///
/// Thread-safe: yes (plain value). Realtime-safe: n/a (test harness).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MidiSimParams {
    /// The path from sender to receiver.
    pub link: SimLinkConfig,
    /// The sender's burst/journal settings.
    pub burst: BurstConfig,
    /// Feed the sender the loss measured from frame sequence gaps (as the session does).
    pub adapt: bool,
    /// Events to send.
    pub events: usize,
    /// Events are pushed at random gaps uniform in `0..2×mean_gap_ns`
    /// (a fifth of them at gap 0: chords).
    pub mean_gap_ns: u64,
    /// An event counts as on time when delivered within this long of being pushed.
    pub deadline_ns: u64,
    /// Seed for event timing.
    pub seed: u64,
}

impl Default for MidiSimParams {
    fn default() -> Self {
        MidiSimParams {
            link: SimLinkConfig {
                latency_ns: 1_000_000,
                jitter_ns: 500_000,
                ..Default::default()
            },
            burst: BurstConfig::default(),
            adapt: true,
            events: 5000,
            mean_gap_ns: 10_000_000,
            deadline_ns: 10_000_000,
            seed: 1,
        }
    }
}

/// What a run measured.
///
/// Thread-safe: yes (plain value). Realtime-safe: n/a.
#[derive(Debug, Clone, Copy, Default, PartialEq, serde::Serialize)]
pub struct MidiSimReport {
    /// Events pushed.
    pub events: u64,
    /// Events delivered at all.
    pub delivered: u64,
    /// Events delivered within the deadline.
    pub on_time: u64,
    /// Events delivered more than once (must be 0).
    pub duplicates_delivered: u64,
    /// Delivered events whose timestamp or bytes differ from what was sent (must be 0).
    pub altered: u64,
    /// Datagrams the sender put on the link.
    pub frames_sent: u64,
    /// Datagrams the link delivered.
    pub frames_delivered: u64,
    /// Datagrams the receiver rejected (corrupt, malformed).
    pub frames_rejected: u64,
    /// Median push-to-delivery delay, ns.
    pub delay_p50_ns: u64,
    /// 99th percentile push-to-delivery delay, ns.
    pub delay_p99_ns: u64,
    /// Mean burst size the sender used.
    pub mean_burst: f64,
}

impl MidiSimReport {
    /// Fraction of events delivered within the deadline.
    pub fn on_time_ratio(&self) -> f64 {
        if self.events == 0 {
            return 1.0;
        }
        self.on_time as f64 / self.events as f64
    }
}

const SOURCE: u32 = 0x1a2b_3c4d;

/// Run `params` to completion and report.
pub fn run(params: &MidiSimParams) -> MidiSimReport {
    let mut rng = ChaCha8Rng::seed_from_u64(params.seed);
    let mut link = SimLink::new(params.link);
    let mut sender = BurstSender::new(params.burst);
    let mut receiver = BurstReceiver::new(DedupConfig::default());
    let session = uuid::Uuid::from_bytes([7u8; 16]);
    let mut frame = BurstFrame::default();
    let mut datagram = vec![0u8; 2048];
    let mut seq: u32 = 0;
    let mut seq_stats = SeqStats::default();

    // Sent events by burst id: (push time, ts, bytes), and how often each was delivered.
    let mut sent: HashMap<u64, (u64, u64, Vec<u8>)> = HashMap::new();
    let mut delivered_count: HashMap<u64, u32> = HashMap::new();
    let mut delays = Vec::with_capacity(params.events);
    let mut report = MidiSimReport {
        events: params.events as u64,
        ..Default::default()
    };
    let mut burst_sum = 0u64;

    let mut next_push = 0u64;
    let mut pushed = 0usize;
    let mut now = 0u64;
    loop {
        // Next thing that happens in virtual time.
        let mut next = u64::MAX;
        if pushed < params.events {
            next = next.min(next_push);
        }
        if let Some(t) = sender.poll_at() {
            next = next.min(t.max(now));
        }
        if let Some(t) = link.next_arrival_ns() {
            next = next.min(t.max(now));
        }
        if next == u64::MAX {
            break;
        }
        now = next;

        if pushed < params.events && now >= next_push {
            let note = 36 + (pushed % 48) as u8;
            let bytes = [0x90, note, 1 + (pushed % 127) as u8];
            let ts = now + 5_000_000;
            burst_sum += sender.burst_size() as u64;
            let id = sender
                .push(now, ts, &bytes)
                .expect("capacity sized for the run");
            sent.insert(id, (now, ts, bytes.to_vec()));
            pushed += 1;
            let gap = if rng.random_bool(0.2) {
                0
            } else {
                rng.random_range(0..2 * params.mean_gap_ns.max(1))
            };
            next_push = now + gap;
        }
        while sender.poll(now, &mut frame) {
            let (n, _lines) =
                wire::encode_midi_frame(&frame, session, SOURCE, seq, now, None, &mut datagram)
                    .expect("a burst frame always fits one line");
            seq = seq.wrapping_add(1);
            link.send(now, &datagram[..n]);
            report.frames_sent += 1;
        }
        while let Some(d) = link.recv(now) {
            report.frames_delivered += 1;
            let Ok(decoded) = wire::decode_midi_datagram(&d, None) else {
                report.frames_rejected += 1;
                continue;
            };
            seq_stats.on_frame(now, decoded.header.sequence, decoded.header.timestamp);
            if params.adapt {
                // Symmetric-path assumption: what this side measures, the sender's session reports.
                sender.set_loss_estimate(seq_stats.loss_recent);
            }
            for line in decoded.lines() {
                if let Some(ev) = receiver.on_line(now, decoded.header.source, line) {
                    let count = delivered_count.entry(ev.burst_id).or_insert(0);
                    *count += 1;
                    if *count > 1 {
                        report.duplicates_delivered += 1;
                        continue;
                    }
                    match sent.get(&ev.burst_id) {
                        Some((pushed_at, ts, bytes))
                            if *ts == ev.ts && bytes[..] == *ev.bytes.as_slice() =>
                        {
                            report.delivered += 1;
                            let delay = now - pushed_at;
                            delays.push(delay);
                            if delay <= params.deadline_ns {
                                report.on_time += 1;
                            }
                        }
                        _ => report.altered += 1,
                    }
                }
            }
        }
    }
    delays.sort_unstable();
    let pct = |q: f64| -> u64 {
        if delays.is_empty() {
            return 0;
        }
        delays[((delays.len() - 1) as f64 * q).round() as usize]
    };
    report.delay_p50_ns = pct(0.5);
    report.delay_p99_ns = pct(0.99);
    report.mean_burst = burst_sum as f64 / params.events.max(1) as f64;
    report
}
