use super::*;
use crate::jellie_stream::{encode_audio_frame, AudioFrameMeta, JellieSender};
use crate::protocol::{decode_frame, AudioPayload, SampleFormat};
use crate::sim::{SimLink, SimLinkConfig, SimLoss};

const RATE: u32 = 48_000;
const BLOCK: usize = 128;

fn signal(i: u64) -> f32 {
    (i as f32 * 440.0 * std::f32::consts::TAU / RATE as f32).sin() * 0.5
}

#[derive(Debug, Default)]
struct Outcome {
    pulls: u64,
    sources: [u64; 6],
    wrong_samples: u64,
    stats: JitterStats,
    targets: Vec<u64>,
}

fn idx(s: BlockSource) -> usize {
    match s {
        BlockSource::Received => 0,
        BlockSource::Rebuilt => 1,
        BlockSource::Interpolated => 2,
        BlockSource::Concealed => 3,
        BlockSource::Held => 4,
        BlockSource::Idle => 5,
    }
}

/// Stream `seconds` of a mono sine over `link`, JELLIE or plain, into a jitter buffer.
fn stream(link: SimLinkConfig, jellie: bool, seconds: u64, manual: Option<u64>) -> Outcome {
    let mut link = SimLink::new(link);
    let meta = AudioFrameMeta {
        session: uuid::Uuid::from_bytes([3; 16]),
        source: 77,
        sequence: 0,
        timestamp: 0,
    };
    let mut seq = 0u32;
    let mut jb = JitterBuffer::new(JitterConfig::new(1, BLOCK, RATE));
    jb.set_manual_delay(manual);
    let mut conceal = RepeatFadeConcealer::new(1, BLOCK);
    let mut js = JellieSender::new(BLOCK, true);
    let block_ns = BLOCK as u64 * 1_000_000_000 / RATE as u64;
    let blocks = seconds * 1_000_000_000 / block_ns;
    let mut out = Outcome::default();
    let mut play = vec![0f32; BLOCK];
    let mut buf = [0u8; 1500];
    let mut decoded = vec![0f32; BLOCK];
    let first0 = 96_000u64; // streams need not start at 0
                            // The receiver pulls on its own phase, a third of a block after the sender.
    let mut next_pull = block_ns / 3;
    let mut prev = BlockSource::Idle;
    for n in 0..blocks {
        let now = n * block_ns;
        // Deliver and pull everything due before this send time.
        let mut t = now.saturating_sub(block_ns);
        while t <= now {
            while let Some(d) = link.recv(t) {
                let f = decode_frame(&d, None).unwrap();
                let p = AudioPayload::parse_binary(f.payload).unwrap();
                let k = p.read_into(&mut decoded);
                match SubStream::from_u8(p.jellie) {
                    Some(sub) => jb.insert_jellie(t, p.first_sample, sub, &decoded[..k]),
                    None => jb.insert(t, p.first_sample, &decoded[..k]),
                };
            }
            if t >= next_pull {
                let src = jb.pull(t, &mut play, &mut conceal);
                out.pulls += 1;
                out.sources[idx(src)] += 1;
                // The first real block after concealment is cross-faded: not bit-exact by design.
                let after_gap = matches!(
                    prev,
                    BlockSource::Concealed | BlockSource::Held | BlockSource::Interpolated
                );
                prev = src;
                if matches!(src, BlockSource::Received | BlockSource::Rebuilt) && !after_gap {
                    let f0 = jb.last_played().unwrap();
                    for (i, v) in play.iter().enumerate() {
                        if *v != signal(f0 + i as u64) {
                            out.wrong_samples += 1;
                        }
                    }
                }
                if out.pulls % 100 == 0 {
                    out.targets.push(jb.target_delay_ns());
                }
                next_pull += block_ns;
            }
            t += 50_000;
        }
        let first = first0 + n * BLOCK as u64;
        let block: Vec<f32> = (0..BLOCK as u64).map(|i| signal(first + i)).collect();
        let mut send = |first: u64, sub: Option<SubStream>, x: &[f32]| {
            let m = AudioFrameMeta {
                sequence: seq,
                timestamp: now,
                ..meta
            };
            seq += 1;
            let len = encode_audio_frame(
                &m,
                1,
                1,
                SampleFormat::F32,
                RATE,
                first,
                sub,
                x,
                None,
                &mut buf,
            )
            .unwrap();
            link.send(now, &buf[..len]);
        };
        if jellie {
            js.push_block(first, &block, |f, sub, x| send(f, Some(sub), x));
        } else {
            send(first, None, &block);
        }
    }
    out.stats = jb.stats();
    out
}

fn link(latency_ms: f64, jitter_ms: f64, loss: SimLoss, seed: u64) -> SimLinkConfig {
    SimLinkConfig {
        latency_ns: (latency_ms * 1e6) as u64,
        jitter_ns: (jitter_ms * 1e6) as u64,
        loss,
        seed,
        ..Default::default()
    }
}

#[test]
fn clean_jittery_link_plays_received_audio_bit_exact() {
    let o = stream(link(5.0, 2.0, SimLoss::None, 1), false, 20, None);
    assert_eq!(o.wrong_samples, 0);
    let played = o.sources[0];
    assert!(played as f64 > 0.97 * o.pulls as f64, "{o:?}");
    // Late arrivals stay near the 0.1 % target.
    assert!(
        (o.stats.late as f64) < 0.005 * o.pulls as f64,
        "{:?}",
        o.stats
    );
    // Target settles within the jitter span (±2 ms uniform → up to ~4 ms of relative delay).
    let t = *o.targets.last().unwrap();
    assert!((1_500_000..=5_500_000).contains(&t), "target {t}");
}

#[test]
fn target_follows_jitter() {
    let low = stream(link(5.0, 0.3, SimLoss::None, 2), false, 10, None);
    let high = stream(link(5.0, 6.0, SimLoss::None, 2), false, 10, None);
    let (tl, th) = (*low.targets.last().unwrap(), *high.targets.last().unwrap());
    assert!(tl < 1_000_000, "low jitter target {tl}");
    assert!(th > 5_000_000 && th < 13_000_000, "high jitter target {th}");
}

#[test]
fn manual_delay_overrides() {
    let o = stream(link(5.0, 6.0, SimLoss::None, 2), false, 5, Some(20_000_000));
    assert!(o.targets.iter().all(|t| *t == 20_000_000));
    assert_eq!(o.stats.late, 0, "{:?}", o.stats);
}

#[test]
fn jellie_rebuilds_most_losses_bit_exact() {
    let loss = SimLoss::Iid(0.1);
    let plain = stream(link(5.0, 1.0, loss, 4), false, 20, None);
    let jellie = stream(link(5.0, 1.0, loss, 4), true, 20, None);
    assert_eq!(jellie.wrong_samples, 0);
    assert_eq!(plain.wrong_samples, 0);
    let plain_concealed = plain.sources[3] as f64 / plain.pulls as f64;
    let jellie_concealed = jellie.sources[3] as f64 / jellie.pulls as f64;
    assert!(plain_concealed > 0.07, "plain concealed {plain_concealed}");
    // A block needs concealment only when both copies of both parities are lost (~0.01 %).
    assert!(
        jellie_concealed < 0.01,
        "jellie concealed {jellie_concealed}: {:?}",
        jellie.stats
    );
    assert!(jellie.stats.rebuilt > 0);
    // Interpolated: one parity lost in both copies (~2 %).
    let interp = jellie.sources[2] as f64 / jellie.pulls as f64;
    assert!(interp < 0.05, "interpolated {interp}");
}

#[test]
fn duplicates_reordering_and_bad_blocks_are_counted() {
    let mut l = link(5.0, 0.5, SimLoss::None, 6);
    l.duplicate = 0.1;
    l.reorder_gap = Some(10);
    let o = stream(l, false, 10, None);
    assert!(o.stats.duplicated > 100, "{:?}", o.stats);
    assert!(o.stats.reordered > 50, "{:?}", o.stats);
    assert_eq!(o.wrong_samples, 0);
    let mut jb = JitterBuffer::new(JitterConfig::new(1, BLOCK, RATE));
    assert_eq!(jb.insert(0, 0, &[0.0; 7]), InsertOutcome::Rejected);
    assert_eq!(jb.insert(0, 0, &[0.0; BLOCK]), InsertOutcome::Stored);
    assert_eq!(
        jb.insert(0, 5, &[0.0; BLOCK]),
        InsertOutcome::Rejected,
        "misaligned"
    );
    assert_eq!(jb.insert(0, 0, &[0.0; BLOCK]), InsertOutcome::Duplicate);
    assert_eq!(
        jb.insert_jellie(0, 128, SubStream::B, &[0.0; 3]),
        InsertOutcome::Rejected
    );
}

#[test]
fn sender_restart_resyncs() {
    let mut jb = JitterBuffer::new(JitterConfig::new(1, BLOCK, RATE));
    let mut c = RepeatFadeConcealer::new(1, BLOCK);
    let mut out = [0.0; BLOCK];
    for n in 0..20u64 {
        jb.insert(n * 2_666_666, n * 128, &[0.1; BLOCK]);
        jb.pull(n * 2_666_666 + 1_000_000, &mut out, &mut c);
    }
    for n in 0..20u64 {
        let t = 60_000_000 + n * 2_666_666;
        jb.insert(t, 10_000_000 + n * 128, &[0.2; BLOCK]);
        jb.pull(t + 1_000_000, &mut out, &mut c);
    }
    assert_eq!(jb.stats().resyncs, 1);
    assert_eq!(out, [0.2; BLOCK]);
}

/// Blocks 0..n arrive on time (block `k` at `k × block`); the first pull
/// comes at `first_pull`. Returns (start-trimmed blocks, value of the first
/// played block = its block index).
fn first_pull_at(first_pull: u64, blocks: u64) -> (u64, f32) {
    let block_ns = 2_666_666u64;
    let mut jb = JitterBuffer::new(JitterConfig::new(1, BLOCK, RATE));
    jb.set_manual_delay(Some(2 * block_ns));
    let mut c = RepeatFadeConcealer::new(1, BLOCK);
    for k in 0..blocks {
        jb.insert(k * block_ns, k * BLOCK as u64, &[k as f32; BLOCK]);
    }
    let mut out = [0.0; BLOCK];
    assert_eq!(jb.pull(first_pull, &mut out, &mut c), BlockSource::Received);
    (jb.stats().start_trimmed_blocks, out[0])
}

#[test]
fn a_late_first_pull_starts_at_the_target_and_counts_the_trim() {
    let block_ns = 2_666_666u64;
    // On time (target 2 blocks, pulled 2.5 blocks after block 0): block 0 plays.
    assert_eq!(first_pull_at(5 * block_ns / 2, 12), (0, 0.0));
    // Less than a block past the target: still block 0.
    assert_eq!(
        first_pull_at(2 * block_ns + block_ns * 9 / 10, 12),
        (0, 0.0)
    );
    // 3.5 blocks past the target: the 3 whole unheard blocks are dropped and
    // counted; playout starts half a block above the target.
    let (trimmed, first) = first_pull_at(2 * block_ns + 7 * block_ns / 2, 12);
    assert_eq!(trimmed, 3);
    assert_eq!(first, 3.0);
}

mod untrusted {
    use super::*;
    use proptest::prelude::*;

    #[derive(Debug, Clone)]
    enum Op {
        Plain {
            dt: u32,
            first: u64,
            len: usize,
        },
        Jellie {
            dt: u32,
            first: u64,
            sub: u8,
            len: usize,
        },
        Pull {
            dt: u32,
        },
    }

    fn first_sample() -> impl Strategy<Value = u64> {
        prop_oneof![
            (0u64..64).prop_map(|b| b * BLOCK as u64),
            any::<u64>(),
            (0u64..8).prop_map(|k| u64::MAX - k * BLOCK as u64),
        ]
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            (
                any::<u32>(),
                first_sample(),
                prop_oneof![Just(BLOCK), 0usize..300]
            )
                .prop_map(|(dt, first, len)| Op::Plain { dt, first, len }),
            (
                any::<u32>(),
                first_sample(),
                1u8..5,
                prop_oneof![Just(BLOCK / 2), 0usize..100]
            )
                .prop_map(|(dt, first, sub, len)| Op::Jellie {
                    dt,
                    first,
                    sub,
                    len
                }),
            any::<u32>().prop_map(|dt| Op::Pull { dt }),
        ]
    }

    proptest! {
        #[test]
        fn arbitrary_blocks_never_panic_and_output_stays_finite(ops in prop::collection::vec(op(), 1..200)) {
            let mut jb = JitterBuffer::new(JitterConfig::new(1, BLOCK, RATE));
            let mut c = RepeatFadeConcealer::new(1, BLOCK);
            let mut now = 0u64;
            let data = [0.5f32; 300];
            let mut out = [0f32; BLOCK];
            for op in ops {
                match op {
                    Op::Plain { dt, first, len } => {
                        now += dt as u64;
                        jb.insert(now, first, &data[..len]);
                    }
                    Op::Jellie { dt, first, sub, len } => {
                        now += dt as u64;
                        jb.insert_jellie(now, first, SubStream::from_u8(sub).unwrap(), &data[..len]);
                    }
                    Op::Pull { dt } => {
                        now += dt as u64;
                        jb.pull(now, &mut out, &mut c);
                        prop_assert!(out.iter().all(|v| v.is_finite() && v.abs() <= 1.0));
                    }
                }
            }
        }
    }
}
