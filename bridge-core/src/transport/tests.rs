//! Transport state, ordering and MIDI clock generation.

use super::midi_clock::Segment;
use super::*;

fn cmd(kind: TransportCommandKind, timestamp: u64, from: PeerId, seq: u64) -> TransportCommand {
    TransportCommand {
        kind,
        timestamp,
        position_ms: 0.0,
        bpm: 120.0,
        time_signature: TimeSignature::COMMON,
        beat: None,
        seq,
        master_peer: 0x10,
        from,
    }
}

#[test]
fn validation_rejects_out_of_range_values() {
    let mut c = cmd(TransportCommandKind::Play, 1, 0x10, 0);
    assert!(c.validate().is_ok());
    c.bpm = 0.5;
    assert_eq!(c.validate(), Err(TransportError::Bpm(0.5)));
    c.bpm = 120.0;
    c.position_ms = -1.0;
    assert!(c.validate().is_err());
    c.position_ms = f64::NAN;
    assert!(c.validate().is_err());
    c.position_ms = 0.0;
    c.time_signature = TimeSignature {
        numerator: 4,
        denominator: 3,
    };
    assert!(c.validate().is_err());
    assert!(TimeSignature::new(0, 4).is_err());
    assert!(TimeSignature::new(7, 8).is_ok());
}

#[test]
fn conflicts_resolve_the_same_whatever_the_arrival_order() {
    let slot = 1_000_000_000u64; // all inside one 50 ms slot
    let cmds = [
        cmd(TransportCommandKind::Play, slot + 1_000_000, 0x30, 4),
        cmd(TransportCommandKind::Stop, slot + 2_000_000, 0x10, 9), // the master's
        cmd(TransportCommandKind::Seek, slot + 3_000_000, 0x20, 1),
        cmd(TransportCommandKind::Tempo, slot + 4_000_000, 0x10, 10), // the master again
        cmd(TransportCommandKind::Play, slot + 500_000_000, 0x20, 2), // another slot
    ];
    let mut outcomes = Vec::new();
    // Every permutation of arrival order.
    let mut idx: Vec<usize> = (0..cmds.len()).collect();
    permute(&mut idx, 0, &mut |order| {
        let mut q = TransportQueue::new(16, DEFAULT_LEAD_NS);
        for &i in order {
            let _ = q.push(cmds[i]);
        }
        let mut got = Vec::new();
        while let Some(c) = q.pop_due(u64::MAX) {
            got.push((c.kind, c.from, c.seq));
        }
        outcomes.push(got);
    });
    let first = outcomes[0].clone();
    assert_eq!(
        first,
        vec![
            (TransportCommandKind::Stop, 0x10, 9),
            (TransportCommandKind::Tempo, 0x10, 10),
            (TransportCommandKind::Play, 0x20, 2)
        ]
    );
    assert!(outcomes.iter().all(|o| *o == first));
}

fn permute(v: &mut Vec<usize>, k: usize, f: &mut impl FnMut(&[usize])) {
    if k == v.len() {
        f(v);
        return;
    }
    for i in k..v.len() {
        v.swap(k, i);
        permute(v, k + 1, f);
        v.swap(k, i);
    }
}

#[test]
fn without_the_master_timestamp_then_seq_then_id_decide() {
    let mut q = TransportQueue::new(8, DEFAULT_LEAD_NS);
    q.push(cmd(TransportCommandKind::Play, 1_010_000_000, 0x40, 1))
        .unwrap();
    // Earlier timestamp wins the slot.
    q.push(cmd(TransportCommandKind::Stop, 1_005_000_000, 0x50, 7))
        .unwrap();
    assert_eq!(q.pending().len(), 1);
    assert_eq!(q.pending()[0].from, 0x50);
    // Same timestamp, lower seq wins.
    assert_eq!(
        q.push(cmd(TransportCommandKind::Seek, 1_005_000_000, 0x20, 8)),
        Err(TransportError::LostConflict)
    );
    // Same timestamp and seq: lower id wins.
    q.push(cmd(TransportCommandKind::Seek, 1_005_000_000, 0x20, 7))
        .unwrap();
    assert_eq!(q.pending()[0].from, 0x20);
    assert_eq!(q.dropped(), 3);
}

#[test]
fn queue_is_bounded() {
    let mut q = TransportQueue::new(2, DEFAULT_LEAD_NS);
    q.push(cmd(TransportCommandKind::Play, 1, 0x10, 1)).unwrap();
    q.push(cmd(TransportCommandKind::Stop, 2, 0x10, 2)).unwrap();
    assert_eq!(
        q.push(cmd(TransportCommandKind::Play, 3, 0x10, 3)),
        Err(TransportError::QueueFull)
    );
}

#[test]
fn state_tracks_position_bars_and_signature_changes() {
    let mut st = TransportState::default();
    let mut c = cmd(TransportCommandKind::Play, 0, 0x10, 1);
    c.bpm = 120.0;
    st.apply(&c);
    assert!(st.playing);
    // 10 s at 120 bpm = 20 quarter notes = 5 bars of 4/4.
    for _ in 0..(480_000 / 480) {
        st.advance(480, 48_000.0);
    }
    assert!((st.position_ms - 10_000.0).abs() < 1e-6);
    assert!((st.beat - 20.0).abs() < 1e-9);
    let bb = st.bar_beat();
    assert_eq!((bb.bar, bb.beat), (6, 1));
    // Switch to 6/8 at beat 20: bar 6 starts there; a 6/8 bar is 3 quarters.
    let mut t = cmd(TransportCommandKind::Tempo, 0, 0x10, 2);
    t.position_ms = st.position_ms;
    t.beat = Some(st.beat);
    t.time_signature = TimeSignature::new(6, 8).unwrap();
    t.bpm = 90.0;
    st.apply(&t);
    assert!(st.playing, "tempo keeps playing");
    let bb = st.bar_beat_at(20.0 + 3.0 + 1.5);
    assert_eq!((bb.bar, bb.beat), (7, 4)); // 1.5 quarters = 3 eighths into bar 7
                                           // Seek and stop carry their position.
    let mut s = cmd(TransportCommandKind::Stop, 0, 0x10, 3);
    s.position_ms = 1234.0;
    s.bpm = 90.0;
    s.time_signature = st.time_signature;
    st.apply(&s);
    assert!(!st.playing);
    st.advance(48_000, 48_000.0);
    assert_eq!(st.position_ms, 1234.0);
}

fn seg(state: TransportState, frames: u32, jumped: bool) -> Segment {
    Segment {
        state,
        frames,
        offset_base: 0,
        sample_rate: 48_000.0,
        jumped,
    }
}

#[test]
fn midi_clock_ticks_land_on_exact_samples() {
    let mut gen = MidiClockGenerator::new(true, None);
    let mut st = TransportState::default();
    st.apply(&cmd(TransportCommandKind::Play, 0, 0x10, 1));
    let mut events = Vec::new();
    let block = 256u32;
    for b in 0..100u64 {
        gen.process(&seg(st, block, false), |m| {
            events.push((b * block as u64 + m.offset as u64, m))
        });
        st.advance(block, 48_000.0);
    }
    assert_eq!(events[0].1.data(), &[0xFA]);
    let ticks: Vec<u64> = events
        .iter()
        .filter(|e| e.1.data() == [0xF8])
        .map(|e| e.0)
        .collect();
    // 120 bpm, 48 kHz: 24 000 frames per beat, 1000 per tick.
    assert_eq!(ticks.len(), 26); // ticks at 0, 1000, …, 25000 within 25 600 frames
    for (i, t) in ticks.iter().enumerate() {
        assert_eq!(*t, i as u64 * 1000);
    }
}

#[test]
fn continue_from_a_position_sends_spp_then_continue_and_stop_sends_stop() {
    let mut gen = MidiClockGenerator::new(true, None);
    let mut st = TransportState::default();
    let mut c = cmd(TransportCommandKind::Play, 0, 0x10, 1);
    c.beat = Some(8.25); // 33 sixteenths
    st.apply(&c);
    let mut ev = Vec::new();
    gen.process(&seg(st, 64, false), |m| ev.push(m));
    assert_eq!(ev[0].data(), &[0xF2, 33, 0]);
    assert_eq!(ev[1].data(), &[0xFB]);
    // First tick at beat 8.25 exactly (tick 198), offset 0.
    assert_eq!(ev[2].data(), &[0xF8]);
    assert_eq!(ev[2].offset, 0);
    st.playing = false;
    ev.clear();
    gen.process(&seg(st, 64, false), |m| ev.push(m));
    assert_eq!(ev.len(), 1);
    assert_eq!(ev[0].data(), &[0xFC]);
    // Big positions saturate SPP at 16383.
    let mut c2 = cmd(TransportCommandKind::Seek, 0, 0x10, 2);
    c2.beat = Some(1e6);
    st.apply(&c2);
    ev.clear();
    gen.process(&seg(st, 64, true), |m| ev.push(m));
    assert_eq!(ev[0].data(), &[0xF2, 0x7F, 0x7F]);
}

#[test]
fn mtc_quarter_frames_encode_the_position() {
    let mut gen = MidiClockGenerator::new(false, Some(MtcRate::Fps25));
    let mut st = TransportState::default();
    let mut c = cmd(TransportCommandKind::Play, 0, 0x10, 1);
    // 1 h 2 min 3 s 5 frames at 25 fps (an even frame count: 93 080).
    c.position_ms = ((3600 + 120 + 3) as f64 + 5.0 / 25.0) * 1000.0;
    st.apply(&c);
    let mut ev = Vec::new();
    let mut frame0 = 0u64;
    for _ in 0..10 {
        gen.process(&seg(st, 480, false), |m| {
            ev.push((frame0 + m.offset as u64, m))
        });
        frame0 += 480;
        st.advance(480, 48_000.0);
    }
    // Full frame first.
    assert_eq!(
        ev[0].1.data(),
        &[0xF0, 0x7F, 0x7F, 0x01, 0x01, 1 | (1 << 5), 2, 3, 5, 0xF7]
    );
    let qf: Vec<(u64, u8)> = ev
        .iter()
        .filter(|e| e.1.bytes[0] == 0xF1)
        .map(|e| (e.0, e.1.bytes[1]))
        .collect();
    // 100 ms at 25 fps = 2.5 frames = 10 quarter frames, every 480 samples.
    assert_eq!(qf.len(), 10);
    for w in qf.windows(2) {
        assert_eq!(w[1].0 - w[0].0, 480);
    }
    // Reassemble the first 8 pieces.
    let mut nib = [0u8; 8];
    for (i, (_, b)) in qf.iter().take(8).enumerate() {
        assert_eq!((b >> 4) as usize, i);
        nib[i] = b & 0x0F;
    }
    let f = nib[0] | (nib[1] << 4);
    let s = nib[2] | (nib[3] << 4);
    let m = nib[4] | (nib[5] << 4);
    let h = nib[6] | ((nib[7] & 1) << 4);
    assert_eq!((h, m, s, f), (1, 2, 3, 5));
    assert_eq!(nib[7] >> 1, 1); // 25 fps code
}

#[test]
fn drop_frame_timecode_skips_frames_0_and_1_each_minute() {
    let r = MtcRate::Fps2997Drop;
    assert_eq!(r.timecode(1799), (0, 0, 59, 29));
    assert_eq!(r.timecode(1800), (0, 1, 0, 2));
    assert_eq!(r.timecode(17_982), (0, 10, 0, 0));
    assert_eq!(MtcRate::Fps30.timecode(30 * 3600), (1, 0, 0, 0));
}

#[test]
fn mid_block_start_splits_the_block() {
    // A PLAY lands at offset 100 of a 256-frame block: generate the two segments.
    let mut gen = MidiClockGenerator::new(true, None);
    let st0 = TransportState::default();
    let mut ev = Vec::new();
    gen.process(&seg(st0, 100, false), |m| ev.push(m));
    assert!(ev.is_empty());
    let mut st = st0;
    st.apply(&cmd(TransportCommandKind::Play, 0, 0x10, 1));
    gen.process(
        &Segment {
            state: st,
            frames: 156,
            offset_base: 100,
            sample_rate: 48_000.0,
            jumped: false,
        },
        |m| ev.push(m),
    );
    assert_eq!(ev[0].data(), &[0xFA]);
    assert_eq!(ev[0].offset, 100);
    assert_eq!(ev[1].data(), &[0xF8]);
    assert_eq!(ev[1].offset, 100);
}

#[test]
fn wire_round_trip() {
    let mut c = cmd(TransportCommandKind::Record, 123, 0x20, 5);
    c.beat = Some(3.5);
    let w = c.to_wire();
    assert_eq!(TransportCommand::from_wire(&w, 0x20), c);
}
