//! The audio-side handle never allocates or frees on the audio thread: a
//! counting global allocator watches the thread while it runs thousands of
//! process cycles against a live worker thread.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

use bridge_core::handle::{link, LinkConfig, MidiEvent, TransportSnapshot};

struct Counting;

static ALLOCS: AtomicUsize = AtomicUsize::new(0);

thread_local! {
    static ARMED: Cell<bool> = const { Cell::new(false) };
}

fn note() {
    // `try_with`: the thread-local may be gone during thread teardown.
    if ARMED.try_with(|a| a.get()).unwrap_or(false) {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
    }
}

// SAFETY: every method forwards to the system allocator unchanged; the only
// addition is a relaxed counter and a const-initialised thread-local read,
// neither of which allocates.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        note();
        // SAFETY: same contract as our caller's.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        note();
        // SAFETY: same contract as our caller's.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        note();
        // SAFETY: same contract as our caller's.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

#[test]
fn audio_thread_side_never_allocates() {
    let cfg = LinkConfig {
        channels: 2,
        block_frames: 64,
        ..LinkConfig::default()
    };
    let (mut handle, mut worker) = link(cfg).unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    // The worker side: loops input blocks back as output, echoes MIDI and
    // transport (it may allocate; it is not the audio thread).
    let w = std::thread::spawn({
        let stop = stop.clone();
        move || {
            let mut block = vec![0.0f32; cfg.block_samples()];
            let mut echoed = 0u64;
            while !stop.load(Ordering::Relaxed) {
                while worker.pop_input_block(&mut block).is_some() {
                    if worker.output_blocks_queued() < 8 {
                        worker.push_output_block(&block);
                    }
                }
                while let Some(mut ev) = worker.pop_midi() {
                    ev.sample_time = worker.output_written();
                    worker.push_midi(ev);
                    echoed += 1;
                }
                while let Some(t) = worker.pop_transport() {
                    worker.push_transport(t);
                }
                std::thread::yield_now();
            }
            echoed
        }
    });

    let mut left = vec![0.0f32; 100];
    let mut right = vec![0.0f32; 100];
    let mut out_l = vec![0.0f32; 100];
    let mut out_r = vec![0.0f32; 100];
    let mut interleaved = vec![0.0f32; 200];
    let mut midi_seen = 0u64;
    let mut transport_seen = 0u64;

    ARMED.with(|a| a.set(true));
    for cycle in 0..20_000u64 {
        for (i, (l, r)) in left.iter_mut().zip(right.iter_mut()).enumerate() {
            *l = (cycle * 100 + i as u64) as f32;
            *r = -*l;
        }
        handle.push_planar(&[&left[..], &right[..]]);
        handle.push_interleaved(&interleaved);
        if cycle % 10 == 0 {
            let ev = MidiEvent::new(handle.input_frames(), 0, &[0x90, 60, 100]).unwrap_or_default();
            handle.push_midi(ev);
            handle.push_transport(TransportSnapshot {
                sample_time: handle.input_frames(),
                playing: true,
                bpm: 120.0,
                ..TransportSnapshot::default()
            });
        }
        let start = handle.output_frames();
        handle.pull_planar(&mut [&mut out_l[..], &mut out_r[..]]);
        handle.pull_interleaved(&mut interleaved);
        while let Some(ev) = handle.pop_midi_before(start + 200) {
            midi_seen += u64::from(ev.offset_in(start, 200).is_some());
        }
        while handle.pop_transport().is_some() {
            transport_seen += 1;
        }
        // Give the echo thread a chance on a loaded 2-core machine; the
        // rings are small (64 transport snapshots), and this test proves the
        // audio side allocates nothing, not how fast the worker keeps up.
        if cycle % 8 == 0 {
            std::thread::yield_now();
        }
    }
    ARMED.with(|a| a.set(false));

    stop.store(true, Ordering::Relaxed);
    let echoed = w.join().unwrap();
    assert_eq!(
        ALLOCS.load(Ordering::Relaxed),
        0,
        "the audio thread allocated"
    );
    // The rings really moved data both ways.
    let s = handle.stats().snapshot();
    assert!(s.audio_frames_pushed > 100_000, "{s:?}");
    assert!(s.audio_frames_pulled > 100_000, "{s:?}");
    // 2000 MIDI events and 2000 snapshots were pushed; under load the echo
    // thread may miss some (counted as ring overflows), but most must cross.
    assert!(echoed > 200 && midi_seen > 200, "{echoed} {midi_seen}");
    assert!(transport_seen > 200, "{transport_seen}");
}
