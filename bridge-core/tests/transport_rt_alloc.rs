//! The audio-thread parts of the transport (BlockScheduler, TransportState,
//! MidiClockGenerator, ClockEstimate conversions) never allocate: a counting
//! global allocator, armed only on the test thread while the per-block code
//! runs, must see zero allocations.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use bridge_core::clock::ClockEstimate;
use bridge_core::transport::midi_clock::Segment;
use bridge_core::transport::{
    BlockScheduler, MidiClockGenerator, MtcRate, ScheduledEvent, TimeSignature, TransportCommand,
    TransportCommandKind, TransportState,
};

struct Counting;

thread_local! {
    static ARMED: Cell<bool> = const { Cell::new(false) };
    static COUNT: Cell<u64> = const { Cell::new(0) };
}

// SAFETY: forwards every call unchanged to the system allocator; the
// thread-local counters are plain `Cell`s with const initialisers, which do
// not allocate when touched.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if ARMED.with(|a| a.get()) {
            COUNT.with(|c| c.set(c.get() + 1));
        }
        // SAFETY: same contract as our caller's.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as our caller's.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if ARMED.with(|a| a.get()) {
            COUNT.with(|c| c.set(c.get() + 1));
        }
        // SAFETY: same contract as our caller's.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn armed<R>(f: impl FnOnce() -> R) -> (R, u64) {
    COUNT.with(|c| c.set(0));
    ARMED.with(|a| a.set(true));
    let r = f();
    ARMED.with(|a| a.set(false));
    (r, COUNT.with(|c| c.get()))
}

#[test]
fn per_block_transport_work_does_not_allocate() {
    // Allocation-free sanity check of the harness itself.
    let (_, n) = armed(|| std::hint::black_box(vec![1u8; 16]));
    assert!(n >= 1, "the counter must see allocations");

    let mut sched = BlockScheduler::new();
    let mut gen = MidiClockGenerator::new(true, Some(MtcRate::Fps2997Drop));
    let mut state = TransportState::default();
    let est = ClockEstimate {
        ref_local_ns: 1_000_000_000,
        ref_remote_ns: 5_000_000_000,
        drift: 12e-6,
        uncertainty_ns: 1.0,
        quality: 1.0,
        observations: 10,
        span_ns: 1,
    };
    let play = TransportCommand {
        kind: TransportCommandKind::Play,
        timestamp: 0,
        position_ms: 1000.0,
        bpm: 133.0,
        time_signature: TimeSignature::COMMON,
        beat: None,
        seq: 1,
        master_peer: 1,
        from: 1,
    };
    let (messages, n) = armed(|| {
        let mut messages = 0u64;
        let block = 128u32;
        sched
            .schedule(ScheduledEvent {
                sample: 1000,
                command: TransportCommandKind::Play,
                session_ns: 7,
            })
            .unwrap();
        sched
            .schedule(ScheduledEvent {
                sample: 40_000,
                command: TransportCommandKind::Stop,
                session_ns: 8,
            })
            .unwrap();
        for b in 0..1000u64 {
            let start = b * block as u64;
            let _ = std::hint::black_box(est.to_remote(start * 20_833));
            let mut cut = 0u32;
            let mut fired = [None; 4];
            let mut nf = 0;
            sched.process_block(start, block, |l| {
                if nf < fired.len() {
                    fired[nf] = Some(l);
                    nf += 1;
                }
            });
            for l in fired.iter().flatten() {
                // Split the block at the landing: segment before, apply, rest.
                let seg = Segment {
                    state,
                    frames: l.offset - cut,
                    offset_base: cut,
                    sample_rate: 48_000.0,
                    jumped: false,
                };
                gen.process(&seg, |_| messages += 1);
                state.advance(l.offset - cut, 48_000.0);
                let mut cmd = play;
                cmd.kind = l.command;
                cmd.position_ms = state.position_ms;
                state.apply(&cmd);
                cut = l.offset;
            }
            let seg = Segment {
                state,
                frames: block - cut,
                offset_base: cut,
                sample_rate: 48_000.0,
                jumped: false,
            };
            gen.process(&seg, |_| messages += 1);
            state.advance(block - cut, 48_000.0);
            let _ = std::hint::black_box(state.bar_beat());
        }
        messages
    });
    assert_eq!(n, 0, "audio-thread transport code allocated {n} times");
    // ~0.8 s of 133 bpm: clocks and MTC were really generated.
    assert!(messages > 100, "{messages}");
    assert!(!state.playing, "the STOP at sample 40 000 was applied");
}
