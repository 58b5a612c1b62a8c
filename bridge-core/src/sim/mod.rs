//! Simulated network and clocks in virtual time, for deterministic tests and
//! benches (`toaster bench net`).
//!
//! A [`SimLink`] is one direction of a lossy path. Datagrams go in with the
//! virtual time they were sent (`u64` nanoseconds) and come out at the virtual
//! time they arrive. Everything random comes from a seed, so a test with a
//! fixed seed sees the same losses, delays and corruptions on every run.
//!
//! Loss, latency, jitter, duplication and reordering come from the
//! `str0m-netem` crate (a sans-IO port of Linux netem); this module adds
//! payload corruption (one random bit flipped, like netem's `corrupt`), a
//! plain `u64` nanosecond time base and counters. Properties worth knowing,
//! inherited from `str0m-netem` 0.4:
//!
//! * Jitter is uniform in `latency ± jitter` and never reorders by itself: the
//!   queue is FIFO, so a packet drawn with a short delay waits for the one
//!   ahead of it (as on a real single path).
//! * Reordering is explicit: with `reorder_gap = Some(n)` every n-th packet
//!   skips the queue and leaves at the same time as the previous packet.
//! * Gilbert–Elliott loss is a two-state Markov chain stepped once per packet
//!   (as netem's `gemodel`): mean bad-burst length is counted in packets.
//!
//! Real sockets with real kernel loss are tested elsewhere (network
//! namespaces); this is the in-addition-to deterministic layer.

use std::time::{Duration, Instant};

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use str0m_netem::{
    GilbertElliot, Input, LossModel, Netem, NetemConfig, Output, Probability, RandomLoss,
};

/// How a [`SimLink`] loses packets.
///
/// Thread-safe: yes (plain value). Realtime-safe: yes.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum SimLoss {
    /// Nothing is lost.
    None,
    /// Each packet is lost independently with this probability (0–1).
    Iid(f32),
    /// Gilbert–Elliott bursty loss in *time*: the path alternates between
    /// GOOD and BAD periods of exponentially distributed length (as a Wi-Fi
    /// fade or a congested queue does), whatever the packet rate. Packets
    /// sent during a BAD period are lost with `loss_in_bad`.
    GilbertElliottTime {
        /// Mean GOOD period, ns.
        mean_good_ns: u64,
        /// Mean BAD period (burst length), ns.
        mean_bad_ns: u64,
        /// Loss probability while GOOD.
        loss_in_good: f32,
        /// Loss probability while BAD.
        loss_in_bad: f32,
    },
    /// Gilbert–Elliott bursty loss, stepped once per packet.
    GilbertElliott {
        /// Mean number of packets spent in the GOOD state before a burst.
        mean_good_packets: f32,
        /// Mean number of packets spent in the BAD state (burst length).
        mean_bad_packets: f32,
        /// Loss probability while GOOD (background loss).
        loss_in_good: f32,
        /// Loss probability while BAD.
        loss_in_bad: f32,
    },
}

impl SimLoss {
    /// Long-run average loss rate of this model.
    pub fn mean_loss(&self) -> f64 {
        match *self {
            SimLoss::None => 0.0,
            SimLoss::Iid(p) => p as f64,
            SimLoss::GilbertElliott {
                mean_good_packets,
                mean_bad_packets,
                loss_in_good,
                loss_in_bad,
            } => {
                let g = mean_good_packets.max(1e-9) as f64;
                let b = mean_bad_packets.max(1e-9) as f64;
                (g * loss_in_good as f64 + b * loss_in_bad as f64) / (g + b)
            }
            SimLoss::GilbertElliottTime {
                mean_good_ns,
                mean_bad_ns,
                loss_in_good,
                loss_in_bad,
            } => {
                let g = mean_good_ns.max(1) as f64;
                let b = mean_bad_ns.max(1) as f64;
                (g * loss_in_good as f64 + b * loss_in_bad as f64) / (g + b)
            }
        }
    }

    /// Bursty loss in time: fades of `mean_fade_ns` on average (every packet
    /// in a fade is lost) separated by good periods four times as long, so
    /// about 20 % loss, plus 1 % background loss.
    ///
    /// Note the physical limit this sets for anything with a deadline `D`:
    /// an event sent during a fade that outlasts `D` minus the path delay
    /// cannot arrive in time, however it is repeated. With exponential fades
    /// that is `0.2 × exp(−(D − delay) / mean_fade)` of all events.
    pub fn bursty_time(mean_fade_ns: u64) -> Self {
        SimLoss::GilbertElliottTime {
            mean_good_ns: 4 * mean_fade_ns,
            mean_bad_ns: mean_fade_ns,
            loss_in_good: 0.01,
            loss_in_bad: 1.0,
        }
    }

    /// [`SimLoss::bursty_time`] with 2 ms fades.
    pub fn bursty_time_default() -> Self {
        Self::bursty_time(2_000_000)
    }

    /// The "bursty" model the benches and tests use: about 20 % loss in
    /// bursts of 6 packets on average (every bad burst loses everything),
    /// plus 1 % background loss.
    pub fn bursty_default() -> Self {
        SimLoss::GilbertElliott {
            mean_good_packets: 24.0,
            mean_bad_packets: 6.0,
            loss_in_good: 0.01,
            loss_in_bad: 1.0,
        }
    }
}

/// Configuration of one direction of a simulated path.
///
/// Thread-safe: yes (plain value). Realtime-safe: yes.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SimLinkConfig {
    /// Base one-way delay, ns.
    pub latency_ns: u64,
    /// Uniform delay variation: each packet is delayed `latency ± jitter`, ns.
    pub jitter_ns: u64,
    /// Loss model.
    pub loss: SimLoss,
    /// Probability (0–1) that a delivered packet is delivered twice.
    pub duplicate: f32,
    /// Every n-th packet overtakes the one before it (`None`: no reordering).
    pub reorder_gap: Option<u32>,
    /// Probability (0–1) that a delivered packet has one random bit flipped.
    pub corrupt: f32,
    /// Seed for every random decision of this link.
    pub seed: u64,
}

impl Default for SimLinkConfig {
    fn default() -> Self {
        SimLinkConfig {
            latency_ns: 0,
            jitter_ns: 0,
            loss: SimLoss::None,
            duplicate: 0.0,
            reorder_gap: None,
            corrupt: 0.0,
            seed: 1,
        }
    }
}

/// What a [`SimLink`] did so far.
///
/// Thread-safe: yes (plain value). Realtime-safe: yes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SimLinkStats {
    /// Datagrams handed to [`SimLink::send`].
    pub sent: u64,
    /// Datagrams that came out of [`SimLink::recv`] (duplicates included).
    pub delivered: u64,
    /// Delivered datagrams that had a bit flipped.
    pub corrupted: u64,
}

/// One direction of a simulated network path in virtual time.
///
/// Thread-safe: no (`Send`, owned by one test or bench). Realtime-safe: no
/// (allocates a `Vec` per datagram; it is a test fixture, not a realtime
/// component).
pub struct SimLink {
    netem: Netem<Vec<u8>>,
    /// `Instant` that stands for virtual time 0 (`str0m-netem` speaks `Instant`;
    /// only differences matter, so the run stays deterministic).
    epoch: Instant,
    corrupt: f32,
    rng: ChaCha8Rng,
    time_loss: Option<TimeLoss>,
    now_ns: u64,
    stats: SimLinkStats,
}

impl SimLink {
    /// A link with this configuration.
    pub fn new(config: SimLinkConfig) -> Self {
        let loss: LossModel = match config.loss {
            // Time-based loss is applied before netem (see `send`).
            SimLoss::None | SimLoss::GilbertElliottTime { .. } => LossModel::None,
            SimLoss::Iid(p) => RandomLoss::new(Probability::new(p)).into(),
            SimLoss::GilbertElliott {
                mean_good_packets,
                mean_bad_packets,
                loss_in_good,
                loss_in_bad,
            } => GilbertElliot::new()
                .good_duration(mean_good_packets)
                .bad_duration(mean_bad_packets)
                .loss_in_good(Probability::new(loss_in_good))
                .loss_in_bad(Probability::new(loss_in_bad))
                .into(),
        };
        let mut netem_config = NetemConfig::new()
            .latency(Duration::from_nanos(config.latency_ns))
            .jitter(Duration::from_nanos(config.jitter_ns))
            .loss(loss)
            .duplicate(Probability::new(config.duplicate))
            .seed(config.seed);
        if let Some(gap) = config.reorder_gap {
            netem_config = netem_config.reorder_gap(gap.max(2));
        }
        SimLink {
            netem: Netem::new(netem_config),
            epoch: Instant::now(),
            corrupt: config.corrupt,
            // A different stream from netem's so corruption does not shift losses.
            rng: ChaCha8Rng::seed_from_u64(config.seed ^ 0x5EED_C0DE_0BAD_B175),
            time_loss: match config.loss {
                SimLoss::GilbertElliottTime {
                    mean_good_ns,
                    mean_bad_ns,
                    loss_in_good,
                    loss_in_bad,
                } => Some(TimeLoss {
                    rng: ChaCha8Rng::seed_from_u64(config.seed ^ 0x0071_4E10_55E5),
                    good: true,
                    until_ns: 0,
                    mean_ns: [mean_good_ns.max(1) as f64, mean_bad_ns.max(1) as f64],
                    loss: [loss_in_good, loss_in_bad],
                }),
                _ => None,
            },
            now_ns: 0,
            stats: SimLinkStats::default(),
        }
    }

    fn instant(&self, ns: u64) -> Instant {
        self.epoch + Duration::from_nanos(ns)
    }

    fn advance(&mut self, now_ns: u64) {
        // Virtual time never goes backwards; an earlier `now` is treated as the latest seen.
        self.now_ns = self.now_ns.max(now_ns);
    }

    /// A datagram leaves the sender at virtual time `now_ns`.
    pub fn send(&mut self, now_ns: u64, datagram: &[u8]) {
        self.advance(now_ns);
        self.stats.sent += 1;
        if let Some(tl) = &mut self.time_loss {
            if tl.lose(self.now_ns) {
                return;
            }
        }
        let at = self.instant(self.now_ns);
        self.netem
            .handle_input(Input::Packet(at, datagram.to_vec()));
    }

    /// The next datagram that has arrived by `now_ns`, if any. Call until `None`.
    pub fn recv(&mut self, now_ns: u64) -> Option<Vec<u8>> {
        self.advance(now_ns);
        let at = self.instant(self.now_ns);
        self.netem.handle_input(Input::Timeout(at));
        loop {
            match self.netem.poll_output()? {
                Output::Timeout(_) => continue,
                Output::Packet(mut data) => {
                    self.stats.delivered += 1;
                    if !data.is_empty() && self.rng.random::<f32>() < self.corrupt {
                        let bit = self.rng.random_range(0..data.len() * 8);
                        data[bit / 8] ^= 1 << (bit % 8);
                        self.stats.corrupted += 1;
                    }
                    return Some(data);
                }
            }
        }
    }

    /// Virtual time at which the next queued datagram arrives (`None`: queue empty).
    pub fn next_arrival_ns(&self) -> Option<u64> {
        if self.netem.is_empty() {
            return None;
        }
        let at = self.netem.poll_timeout();
        Some(at.saturating_duration_since(self.epoch).as_nanos() as u64)
    }

    /// Counters so far.
    pub fn stats(&self) -> SimLinkStats {
        self.stats
    }
}

/// State of [`SimLoss::GilbertElliottTime`].
struct TimeLoss {
    rng: ChaCha8Rng,
    good: bool,
    /// The current period ends at this virtual time.
    until_ns: u64,
    mean_ns: [f64; 2],
    loss: [f32; 2],
}

impl TimeLoss {
    fn lose(&mut self, now: u64) -> bool {
        while now >= self.until_ns {
            if self.until_ns > 0 {
                self.good = !self.good;
            }
            let mean = self.mean_ns[usize::from(!self.good)];
            // Exponential period length: −ln(U) × mean, U in (0, 1].
            let u: f64 = 1.0 - self.rng.random::<f64>();
            self.until_ns = self.until_ns.max(1) + (-u.ln() * mean) as u64 + 1;
        }
        self.rng.random::<f32>() < self.loss[usize::from(!self.good)]
    }
}

/// A simulated sample or system clock: `local = true × (1 + ppm·1e-6) + offset`.
///
/// Thread-safe: yes (plain value). Realtime-safe: yes.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SimClock {
    /// Offset at true time 0, ns.
    pub offset_ns: i64,
    /// Rate error in parts per million (positive: this clock runs fast).
    pub ppm: f64,
}

impl SimClock {
    /// Local reading (ns) at true time `true_ns`.
    pub fn local_ns(&self, true_ns: u64) -> u64 {
        let scaled = true_ns as f64 * (1.0 + self.ppm * 1e-6);
        (scaled as i64).saturating_add(self.offset_ns).max(0) as u64
    }

    /// How many samples this clock has produced at `sample_rate` by true time `true_ns`.
    pub fn samples_at(&self, true_ns: u64, sample_rate: u32) -> u64 {
        let secs = true_ns as f64 * 1e-9 * (1.0 + self.ppm * 1e-6);
        (secs * sample_rate as f64).floor() as u64
    }

    /// True time (ns) at which this clock produces sample number `sample` at `sample_rate`.
    pub fn true_ns_of_sample(&self, sample: u64, sample_rate: u32) -> u64 {
        let secs = sample as f64 / sample_rate as f64 / (1.0 + self.ppm * 1e-6);
        (secs * 1e9).round() as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(
        config: SimLinkConfig,
        packets: u64,
        gap_ns: u64,
    ) -> (Vec<(u64, Vec<u8>)>, SimLinkStats) {
        let mut link = SimLink::new(config);
        let mut out = Vec::new();
        let mut t = 0;
        for i in 0..packets {
            link.send(t, &i.to_be_bytes());
            while let Some(d) = link.recv(t) {
                out.push((t, d));
            }
            t += gap_ns;
        }
        while let Some(at) = link.next_arrival_ns() {
            t = t.max(at);
            while let Some(d) = link.recv(t) {
                out.push((t, d));
            }
        }
        (out, link.stats())
    }

    #[test]
    fn same_seed_same_run_and_different_seed_differs() {
        let config = SimLinkConfig {
            latency_ns: 2_000_000,
            jitter_ns: 1_000_000,
            loss: SimLoss::Iid(0.3),
            duplicate: 0.05,
            reorder_gap: Some(7),
            corrupt: 0.05,
            seed: 42,
        };
        let (a, _) = run(config, 2000, 500_000);
        let (b, _) = run(config, 2000, 500_000);
        assert_eq!(a, b);
        let (c, _) = run(SimLinkConfig { seed: 43, ..config }, 2000, 500_000);
        assert_ne!(a, c);
    }

    #[test]
    fn iid_loss_rate_matches() {
        for p in [0.1f32, 0.33, 0.5, 0.66] {
            let config = SimLinkConfig {
                loss: SimLoss::Iid(p),
                seed: 7,
                ..Default::default()
            };
            let (out, stats) = run(config, 20_000, 1000);
            let loss = 1.0 - out.len() as f64 / 20_000.0;
            assert!((loss - p as f64).abs() < 0.015, "p={p} measured {loss}");
            assert_eq!(stats.sent, 20_000);
        }
    }

    #[test]
    fn gilbert_elliott_loss_is_bursty() {
        let model = SimLoss::bursty_default();
        let config = SimLinkConfig {
            loss: model,
            seed: 9,
            ..Default::default()
        };
        let (out, _) = run(config, 50_000, 1000);
        let mut received = vec![false; 50_000];
        for (_, d) in &out {
            received[u64::from_be_bytes(d[..8].try_into().unwrap()) as usize] = true;
        }
        let lost = received.iter().filter(|r| !**r).count() as f64 / 50_000.0;
        assert!(
            (lost - model.mean_loss()).abs() < 0.03,
            "loss {lost} vs {}",
            model.mean_loss()
        );
        // Bursty: P(loss | previous lost) far above the mean loss rate.
        let mut pairs = 0;
        let mut both = 0;
        for w in received.windows(2) {
            if !w[0] {
                pairs += 1;
                if !w[1] {
                    both += 1;
                }
            }
        }
        let conditional = both as f64 / pairs as f64;
        assert!(conditional > 0.6, "conditional loss {conditional}");
    }

    #[test]
    fn time_based_gilbert_elliott_loses_in_fades() {
        let model = SimLoss::bursty_time_default();
        let config = SimLinkConfig {
            loss: model,
            seed: 4,
            ..Default::default()
        };
        // One packet every 0.5 ms for 100 s.
        let (out, _) = run(config, 200_000, 500_000);
        let mut received = vec![false; 200_000];
        for (_, d) in &out {
            received[u64::from_be_bytes(d[..8].try_into().unwrap()) as usize] = true;
        }
        let lost = received.iter().filter(|r| !**r).count() as f64 / 200_000.0;
        assert!(
            (lost - model.mean_loss()).abs() < 0.03,
            "loss {lost} vs {}",
            model.mean_loss()
        );
        // Mean run of consecutive losses ≈ 2 ms / 0.5 ms = 4 packets.
        let runs = received.windows(2).filter(|w| w[0] && !w[1]).count() as f64;
        let mean_run = lost * 200_000.0 / runs;
        assert!((2.5..6.0).contains(&mean_run), "mean loss run {mean_run}");
    }

    #[test]
    fn latency_and_jitter_bound_the_delay() {
        let config = SimLinkConfig {
            latency_ns: 5_000_000,
            jitter_ns: 2_000_000,
            seed: 3,
            ..Default::default()
        };
        let gap = 2_500_000;
        let (out, _) = run(config, 1000, gap);
        assert_eq!(out.len(), 1000);
        let mut delays = Vec::new();
        for (arrived, d) in &out {
            let i = u64::from_be_bytes(d[..8].try_into().unwrap());
            delays.push(arrived.saturating_sub(i * gap));
        }
        // Arrival is observed at the next send tick at the latest in `run`, so allow one gap.
        assert!(delays
            .iter()
            .all(|d| *d >= 3_000_000 && *d <= 7_000_000 + gap));
        let spread = delays.iter().max().unwrap() - delays.iter().min().unwrap();
        assert!(
            spread > 2_000_000,
            "jitter should spread delays, spread {spread}"
        );
    }

    #[test]
    fn duplication_reordering_and_corruption_happen_and_are_counted() {
        let config = SimLinkConfig {
            latency_ns: 1_000_000,
            duplicate: 0.1,
            reorder_gap: Some(5),
            corrupt: 0.1,
            seed: 5,
            ..Default::default()
        };
        let (out, stats) = run(config, 5000, 100_000);
        assert!(
            out.len() > 5300 && out.len() < 5700,
            "duplicates: {}",
            out.len()
        );
        let ids: Vec<u64> = out
            .iter()
            .map(|(_, d)| u64::from_be_bytes(d[..8].try_into().unwrap()))
            .collect();
        let reordered = ids.windows(2).filter(|w| w[1] < w[0]).count();
        assert!(reordered > 100, "reordered {reordered}");
        assert!(
            stats.corrupted > 400 && stats.corrupted < 700,
            "corrupted {}",
            stats.corrupted
        );
        assert_eq!(stats.delivered as usize, out.len());
    }

    #[test]
    fn sim_clock_ppm() {
        let fast = SimClock {
            offset_ns: 0,
            ppm: 50.0,
        };
        // One hour at 48 kHz: 50 ppm is 8640 extra samples.
        let hour = 3_600_000_000_000u64;
        let n = fast.samples_at(hour, 48_000);
        assert_eq!(n, 172_800_000 + 8_640);
        let t = fast.true_ns_of_sample(n, 48_000);
        assert!(t.abs_diff(hour) < 100);
    }
}
