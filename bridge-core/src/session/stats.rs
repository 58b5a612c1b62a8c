//! Per-stream reception statistics from sequence numbers and timestamps.

/// Counters and estimates for one `(source, stream_type)` sequence space.
///
/// Follows RFC 3550 (appendix A.1, A.8) in spirit: extended sequence numbers,
/// loss as "expected minus received" corrected by late arrivals, interarrival
/// jitter with gain 1/16. A 64-frame bitmap behind the highest sequence tells
/// a duplicate from a late (reordered) frame.
///
/// Thread-safe: no. Realtime-safe: yes (no allocation).
#[derive(Debug, Clone, Copy, Default, PartialEq, serde::Serialize)]
pub struct SeqStats {
    /// Frames accepted (duplicates excluded).
    pub received: u64,
    /// Frames never seen (gaps not filled by a later arrival).
    pub lost: u64,
    /// Frames that arrived after a higher sequence number.
    pub reordered: u64,
    /// Frames seen twice (or more).
    pub duplicated: u64,
    /// Sequence jumps too large to be loss (the sender restarted).
    pub resyncs: u64,
    /// Interarrival jitter, ns (RFC 3550).
    pub jitter_ns: f64,
    /// Smoothed `arrival − frame timestamp`, ns: the one-way delay when both
    /// clocks are on the session timeline.
    pub delay_ns: f64,
    /// Smallest `arrival − frame timestamp` seen, ns.
    pub min_delay_ns: i64,
    /// Recent loss rate, exponentially weighted over about 64 frames (0–1).
    pub loss_recent: f64,
    #[serde(skip)]
    highest: Option<u64>,
    #[serde(skip)]
    window: u64,
    #[serde(skip)]
    last_transit: Option<i64>,
}

/// A sequence jump larger than this is a sender restart, not loss.
const MAX_GAP: u64 = 3000;
const LOSS_ALPHA: f64 = 1.0 / 64.0;

/// What [`SeqStats::on_frame`] made of a frame.
///
/// Thread-safe: yes. Realtime-safe: yes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SeqVerdict {
    /// Next in order (possibly after a gap).
    InOrder,
    /// Filled an earlier gap.
    Reordered,
    /// Seen before.
    Duplicate,
    /// Sequence restarted.
    Resync,
}

impl SeqStats {
    /// A frame with `sequence` and sender `timestamp_ns` arrived at `now_ns`.
    pub fn on_frame(&mut self, now_ns: u64, sequence: u32, timestamp_ns: u64) -> SeqVerdict {
        let transit = now_ns as i64 - timestamp_ns as i64;
        let Some(highest) = self.highest else {
            self.highest = Some(sequence as u64);
            self.window = 1;
            self.received = 1;
            self.note_delay(transit);
            self.last_transit = Some(transit);
            return SeqVerdict::InOrder;
        };
        // Extend the 32-bit sequence around the highest one seen.
        let hi32 = highest as u32;
        let forward = sequence.wrapping_sub(hi32) as u64;
        let backward = hi32.wrapping_sub(sequence) as u64;
        if forward != 0 && forward < (1 << 31) {
            if forward > MAX_GAP {
                self.resyncs += 1;
                self.highest = Some(sequence as u64);
                self.window = 1;
                self.received += 1;
                self.last_transit = Some(transit);
                return SeqVerdict::Resync;
            }
            self.highest = Some(highest + forward);
            self.window = if forward >= 64 {
                0
            } else {
                self.window << forward
            };
            self.window |= 1;
            self.received += 1;
            self.lost += forward - 1;
            for _ in 0..forward - 1 {
                self.loss_recent += LOSS_ALPHA * (1.0 - self.loss_recent);
            }
            self.loss_recent -= LOSS_ALPHA * self.loss_recent;
            // RFC 3550 jitter, on in-order frames only.
            if let Some(last) = self.last_transit {
                let d = (transit - last).unsigned_abs() as f64;
                self.jitter_ns += (d - self.jitter_ns) / 16.0;
            }
            self.last_transit = Some(transit);
            self.note_delay(transit);
            return SeqVerdict::InOrder;
        }
        if forward == 0 {
            self.duplicated += 1;
            return SeqVerdict::Duplicate;
        }
        if backward < 64 {
            let bit = 1u64 << backward;
            if self.window & bit != 0 {
                self.duplicated += 1;
                return SeqVerdict::Duplicate;
            }
            self.window |= bit;
            self.received += 1;
            self.reordered += 1;
            self.lost = self.lost.saturating_sub(1);
            // Undo one "missing" step of the loss average.
            self.loss_recent = (self.loss_recent - LOSS_ALPHA).max(0.0);
            self.note_delay(transit);
            return SeqVerdict::Reordered;
        }
        if backward > MAX_GAP {
            self.resyncs += 1;
            self.highest = Some(sequence as u64);
            self.window = 1;
            self.received += 1;
            self.last_transit = Some(transit);
            return SeqVerdict::Resync;
        }
        // Older than the bitmap: cannot tell duplicate from late; count as reordered.
        self.received += 1;
        self.reordered += 1;
        self.lost = self.lost.saturating_sub(1);
        SeqVerdict::Reordered
    }

    fn note_delay(&mut self, transit: i64) {
        if self.received <= 1 {
            self.delay_ns = transit as f64;
            self.min_delay_ns = transit;
        } else {
            self.delay_ns += (transit as f64 - self.delay_ns) / 16.0;
            self.min_delay_ns = self.min_delay_ns.min(transit);
        }
    }

    /// Long-run loss fraction (`lost / (lost + received)`).
    pub fn loss_fraction(&self) -> f64 {
        let total = self.lost + self.received;
        if total == 0 {
            0.0
        } else {
            self.lost as f64 / total as f64
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_loss_reorder_duplicates_and_resync() {
        let mut s = SeqStats::default();
        for seq in [10u32, 11, 13, 12, 12, 16, 14, 15, 15] {
            s.on_frame(0, seq, 0);
        }
        assert_eq!(s.received, 7);
        assert_eq!(s.lost, 0);
        assert_eq!(s.reordered, 3);
        assert_eq!(s.duplicated, 2);
        s.on_frame(0, 20, 0);
        assert_eq!(s.lost, 3);
        assert_eq!(s.on_frame(0, 1_000_000, 0), SeqVerdict::Resync);
        assert_eq!(s.resyncs, 1);
        // Wrap-around is not a resync.
        let mut w = SeqStats::default();
        w.on_frame(0, u32::MAX - 1, 0);
        w.on_frame(0, u32::MAX, 0);
        assert_eq!(w.on_frame(0, 1, 0), SeqVerdict::InOrder);
        assert_eq!((w.lost, w.resyncs), (1, 0));
    }

    #[test]
    fn jitter_and_delay() {
        let mut s = SeqStats::default();
        // 1 ms period, transit alternating 2 ms / 3 ms: |D| = 1 ms each step.
        for i in 0..500u64 {
            let ts = i * 1_000_000;
            let transit = if i % 2 == 0 { 2_000_000 } else { 3_000_000 };
            s.on_frame(ts + transit, i as u32, ts);
        }
        assert!(
            (s.jitter_ns - 1_000_000.0).abs() < 10_000.0,
            "{}",
            s.jitter_ns
        );
        assert_eq!(s.min_delay_ns, 2_000_000);
        assert!((s.delay_ns - 2_500_000.0).abs() < 600_000.0);
    }

    #[test]
    fn recent_loss_tracks_the_rate() {
        let mut s = SeqStats::default();
        let mut seq = 0u32;
        for i in 0..4000 {
            seq += if i % 3 == 0 { 2 } else { 1 }; // one in four lost
            s.on_frame(0, seq, 0);
        }
        assert!((s.loss_recent - 0.25).abs() < 0.05, "{}", s.loss_recent);
        assert!((s.loss_fraction() - 0.25).abs() < 0.01);
    }
}
