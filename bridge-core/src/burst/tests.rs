use super::simrun::{run, MidiSimParams};
use super::*;
use crate::sim::{SimLinkConfig, SimLoss};

fn drain(sender: &mut BurstSender, until: u64, step: u64) -> Vec<(u64, BurstFrame)> {
    let mut frames = Vec::new();
    let mut now = 0;
    let mut frame = BurstFrame::default();
    while now <= until {
        while sender.poll(now, &mut frame) {
            frames.push((now, frame.clone()));
        }
        now += step;
    }
    frames
}

#[test]
fn plain_burst_sends_k_copies_within_the_spread() {
    let mut s = BurstSender::new(BurstConfig {
        seed: 3,
        ..BurstConfig::plain(5)
    });
    let id = s.push(0, 777, &[0x90, 60, 100]).unwrap();
    let frames = drain(&mut s, 5_000_000, 10_000);
    assert_eq!(frames.len(), 5);
    assert!(!frames[0].1.redundant);
    for (i, (at, f)) in frames.iter().enumerate() {
        assert!(*at <= 1_000_000, "copy {i} at {at}");
        assert_eq!(f.lines().len(), 1);
        let l = f.lines()[0];
        assert_eq!(
            (l.index, l.size, l.event.burst_id, l.event.ts),
            (i as u8, 5, id, 777)
        );
        assert_eq!(f.redundant, i > 0);
    }
    // Offsets are jittered: two seeds give different schedules.
    let mut other = BurstSender::new(BurstConfig {
        seed: 4,
        ..BurstConfig::plain(5)
    });
    other.push(0, 777, &[0x90, 60, 100]).unwrap();
    let times: Vec<u64> = frames.iter().map(|f| f.0).collect();
    let other_times: Vec<u64> = drain(&mut other, 5_000_000, 10_000)
        .iter()
        .map(|f| f.0)
        .collect();
    assert_ne!(times, other_times);
    assert_eq!(s.poll_at(), None);
}

#[test]
fn journal_carries_recent_events_and_ages_them_out() {
    let config = BurstConfig {
        burst_size: 2,
        min_burst: 2,
        max_burst: 2,
        ..Default::default()
    };
    let mut s = BurstSender::new(config);
    let a = s.push(0, 1, &[0x90, 60, 100]).unwrap();
    let b = s.push(3_000_000, 2, &[0x80, 60, 0]).unwrap();
    let mut frame = BurstFrame::default();
    let mut now = 0;
    let mut carried_a_after_b = false;
    let mut last_frame_with_a = 0;
    let mut frames = 0;
    while now < 20_000_000 {
        if now == 3_000_000 {
            // push happened "at" 3 ms; emulate by polling from there on
        }
        while s.poll(now, &mut frame) {
            frames += 1;
            let ids: Vec<u64> = frame.lines().iter().map(|l| l.event.burst_id).collect();
            if ids.contains(&a) {
                last_frame_with_a = now;
                if ids.contains(&b) {
                    carried_a_after_b = true;
                    assert_eq!(ids[0], b, "newest (or due) first");
                }
            }
            for l in frame.lines() {
                assert!(l.index < l.size);
            }
        }
        now += 50_000;
    }
    assert!(carried_a_after_b, "a later frame repairs the earlier event");
    assert!(
        last_frame_with_a < 8_000_000,
        "a aged out of the journal after the horizon"
    );
    // About k + horizon/interval frames per isolated event, shared where events overlap.
    assert!((20..=40).contains(&frames), "frames {frames}");
    assert_eq!(s.poll_at(), None);
}

#[test]
fn adaptation_picks_k_from_loss() {
    let c = BurstConfig::default();
    assert_eq!(burst_size_for_loss(0.0, &c), 2);
    assert_eq!(burst_size_for_loss(0.1, &c), 3);
    assert_eq!(burst_size_for_loss(0.33, &c), 7);
    assert_eq!(burst_size_for_loss(0.66, &c), 8);
    assert_eq!(burst_size_for_loss(f64::NAN, &c), 2);
}

#[test]
fn push_rejects_bad_lengths_and_full_journal() {
    let mut s = BurstSender::new(BurstConfig {
        capacity: 2,
        ..Default::default()
    });
    assert_eq!(s.push(0, 0, &[]), Err(BurstError::BadLength(0)));
    assert_eq!(s.push(0, 0, &[0; 65]), Err(BurstError::BadLength(65)));
    s.push(0, 0, &[0xf8]).unwrap();
    s.push(0, 0, &[0xf8]).unwrap();
    assert_eq!(s.push(0, 0, &[0xf8]), Err(BurstError::Full));
    assert_eq!(s.stats().refused_full, 1);
}

#[test]
fn receiver_delivers_each_source_and_id_once() {
    let mut r = BurstReceiver::new(DedupConfig::default());
    let ev = MidiEvent {
        ts: 5,
        bytes: MidiBytes::new(&[0x90, 1, 2]).unwrap(),
        burst_id: 9,
    };
    let line = BurstLine {
        event: ev,
        index: 0,
        size: 3,
    };
    assert_eq!(r.on_line(0, 1, &line), Some(ev));
    assert_eq!(r.on_line(1, 1, &BurstLine { index: 1, ..line }), None);
    assert_eq!(r.on_line(2, 2, &line), Some(ev), "other source");
    assert_eq!(r.stats().delivered, 2);
    assert_eq!(r.stats().duplicates, 1);
}

fn sim(loss: SimLoss, burst: BurstConfig, seed: u64) -> MidiSimParams {
    MidiSimParams {
        link: SimLinkConfig {
            latency_ns: 1_000_000,
            jitter_ns: 500_000,
            loss,
            seed,
            ..Default::default()
        },
        burst,
        seed,
        ..Default::default()
    }
}

#[test]
fn journal_delivers_999_permille_within_10ms_at_66_percent_iid_loss() {
    for seed in [1, 2] {
        let r = run(&sim(SimLoss::Iid(0.66), BurstConfig::default(), seed));
        assert_eq!(r.duplicates_delivered, 0);
        assert_eq!(r.altered, 0);
        assert!(r.on_time_ratio() >= 0.999, "seed {seed}: {r:?}");
    }
}

#[test]
fn plain_bursts_alone_fall_short_at_66_percent() {
    let r = run(&sim(SimLoss::Iid(0.66), BurstConfig::plain(8), 1));
    assert_eq!(r.duplicates_delivered, 0);
    // 1 - 0.66^8 = 96.4 %: the journal is what closes the gap.
    assert!(
        r.on_time_ratio() > 0.94 && r.on_time_ratio() < 0.98,
        "{r:?}"
    );
}

#[test]
fn journal_delivers_99_percent_under_gilbert_elliott() {
    for seed in [1, 2] {
        let r = run(&sim(
            SimLoss::bursty_default(),
            BurstConfig::default(),
            seed,
        ));
        assert_eq!(r.duplicates_delivered, 0);
        assert_eq!(r.altered, 0);
        assert!(r.on_time_ratio() >= 0.99, "seed {seed}: {r:?}");
    }
}

#[test]
fn journal_delivers_99_percent_under_time_based_gilbert_elliott() {
    for seed in [1, 2] {
        let r = run(&sim(
            SimLoss::bursty_time_default(),
            BurstConfig::default(),
            seed,
        ));
        assert_eq!(r.duplicates_delivered, 0);
        assert_eq!(r.altered, 0);
        assert!(r.on_time_ratio() >= 0.99, "seed {seed}: {r:?}");
    }
}

#[test]
fn duplication_reordering_and_corruption_never_cause_duplicates() {
    let mut p = sim(SimLoss::Iid(0.2), BurstConfig::default(), 5);
    p.link.duplicate = 0.2;
    p.link.reorder_gap = Some(3);
    p.link.corrupt = 0.1;
    p.events = 2000;
    let r = run(&p);
    assert_eq!(r.duplicates_delivered, 0);
    assert_eq!(r.altered, 0);
    assert!(r.frames_rejected > 0, "corruption is detected and counted");
    assert!(r.on_time_ratio() >= 0.999, "{r:?}");
}

#[test]
fn k_adapts_down_on_a_clean_path() {
    let r = run(&MidiSimParams {
        events: 500,
        ..sim(SimLoss::None, BurstConfig::default(), 1)
    });
    assert_eq!(r.on_time, 500);
    assert!(r.mean_burst < 2.2, "mean burst {}", r.mean_burst);
    let lossy = run(&MidiSimParams {
        events: 500,
        ..sim(SimLoss::Iid(0.5), BurstConfig::default(), 1)
    });
    assert!(lossy.mean_burst > 7.0, "mean burst {}", lossy.mean_burst);
}

#[test]
#[ignore = "prints reports; run by hand"]
fn print_reports() {
    for (name, loss) in [
        ("iid66", SimLoss::Iid(0.66)),
        ("ge", SimLoss::bursty_default()),
    ] {
        for cfg in [BurstConfig::plain(8), BurstConfig::default()] {
            let r = run(&sim(loss, cfg, 1));
            println!("{name} journal={} {r:?}", cfg.journal);
        }
    }
}

#[test]
fn wire_round_trip_fits_the_mtu_and_keeps_fields() {
    let mut s = BurstSender::new(BurstConfig {
        capacity: 64,
        ..Default::default()
    });
    let mut ids = Vec::new();
    for n in 0..40u8 {
        ids.push(
            s.push(
                u64::from(n),
                1_000_000_000_000 + u64::from(n),
                &[0xb0, n, 127 - n],
            )
            .unwrap(),
        );
    }
    s.push(50, 7, &[0xf0, 0x7e, 0x01, 0x02, 0xf7]).unwrap();
    let mut frame = BurstFrame::default();
    assert!(s.poll(100, &mut frame));
    assert_eq!(frame.lines().len(), FRAME_LINES_MAX);
    let session = uuid::Uuid::from_bytes([9; 16]);
    let mut buf = [0u8; 4096];
    let (len, lines) =
        wire::encode_midi_frame(&frame, session, 0xabc, 77, 100, None, &mut buf).unwrap();
    assert!(len <= crate::protocol::MAX_SEND_FRAME_LEN, "{len}");
    assert!((8..=FRAME_LINES_MAX).contains(&lines), "{lines}");
    let d = wire::decode_midi_datagram(&buf[..len], None).unwrap();
    assert_eq!(d.header.source, 0xabc);
    assert_eq!(d.header.sequence, 77);
    assert_eq!(d.lines(), &frame.lines()[..lines]);
    assert!(!d.header.flags.redundant());
    // A flipped bit is rejected by the CRC.
    buf[60] ^= 4;
    assert_eq!(
        wire::decode_midi_datagram(&buf[..len], None).unwrap_err(),
        crate::protocol::RejectReason::BadCrc
    );
}

#[test]
fn push_rejects_non_midi() {
    let mut s = BurstSender::new(BurstConfig::default());
    assert_eq!(s.push(0, 0, &[0x40, 1]), Err(BurstError::NotMidi));
    assert_eq!(s.push(0, 0, &[0x90, 0x80, 1]), Err(BurstError::NotMidi));
    assert!(s.push(0, 0, &[0xf0, 1, 2, 0xf7]).is_ok());
}
