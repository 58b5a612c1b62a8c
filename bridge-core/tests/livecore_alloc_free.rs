//! Proof that the realtime-relevant state machines of the live core do not
//! allocate after construction: a counting global allocator, armed only
//! around the calls under test (per thread, so the test harness's own
//! threads do not interfere).

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use bridge_core::burst::{wire, BurstConfig, BurstFrame, BurstReceiver, BurstSender, DedupConfig};
use bridge_core::drift::{DriftCompensator, DriftConfig, DriftEstimator};
use bridge_core::jellie_stream::JellieSender;
use bridge_core::jitter::{JitterBuffer, JitterConfig, RepeatFadeConcealer};
use bridge_core::session::SeqStats;

struct Counting;

thread_local! {
    static ARMED: Cell<bool> = const { Cell::new(false) };
    static COUNT: Cell<u64> = const { Cell::new(0) };
}

// SAFETY: defers every operation to the system allocator unchanged; only
// counts calls in thread-locals (const-initialised, so touching them never allocates).
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        note();
        // SAFETY: same contract as our caller's.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as our caller's.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        note();
        // SAFETY: same contract as our caller's.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

fn note() {
    let _ = ARMED.try_with(|a| {
        if a.get() {
            let _ = COUNT.try_with(|c| c.set(c.get() + 1));
        }
    });
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// Allocations made by `f` on this thread.
fn allocations<R>(f: impl FnOnce() -> R) -> (R, u64) {
    COUNT.with(|c| c.set(0));
    ARMED.with(|a| a.set(true));
    let r = f();
    ARMED.with(|a| a.set(false));
    (r, COUNT.with(|c| c.get()))
}

#[test]
fn counting_allocator_sees_allocations() {
    let (_, n) = allocations(|| vec![1u8; 10]);
    assert_eq!(n, 1, "the probe must detect an allocation");
}

#[test]
fn bursts_journal_and_dedup_do_not_allocate() {
    let mut tx = BurstSender::new(BurstConfig::default());
    let mut rx = BurstReceiver::new(DedupConfig {
        capacity: 64,
        forget_after_ns: 1_000_000,
    });
    let mut frame = BurstFrame::default();
    let mut datagram = [0u8; 1500];
    let session = uuid::Uuid::from_bytes([1; 16]);
    let (delivered, n) = allocations(|| {
        let mut delivered = 0;
        for i in 0..5_000u64 {
            let now = i * 100_000;
            if i % 7 == 0 {
                tx.push(now, now + 1000, &[0x90, (i % 128) as u8, 100])
                    .unwrap();
            }
            tx.set_loss_estimate((i % 10) as f64 / 10.0);
            while tx.poll(now, &mut frame) {
                // Encoding short messages into a real jmid frame is allocation-free too.
                wire::encode_midi_frame(&frame, session, 7, i as u32, now, None, &mut datagram)
                    .unwrap();
                for line in frame.lines() {
                    // Table full and expiring all the time: eviction paths run too.
                    if rx.on_line(now, 1 + (i % 3) as u32, line).is_some() {
                        delivered += 1;
                    }
                }
            }
            let _ = tx.poll_at();
        }
        delivered
    });
    assert!(delivered > 700);
    assert_eq!(n, 0, "burst sender/receiver allocated {n} times");
}

#[test]
fn jitter_buffer_jellie_and_concealer_do_not_allocate() {
    const BLOCK: usize = 128;
    let mut jb = JitterBuffer::new(JitterConfig::new(1, BLOCK, 48_000));
    let mut jb_plain = JitterBuffer::new(JitterConfig::new(2, BLOCK, 48_000));
    let mut conceal = RepeatFadeConcealer::new(2, 2 * BLOCK);
    let mut js = JellieSender::new(BLOCK, true);
    let mut est = DriftEstimator::new(48_000, 1_000_000_000);
    let mut seq = SeqStats::default();
    let block = [0.25f32; BLOCK];
    let stereo = [0.5f32; 2 * BLOCK];
    let mut out = [0f32; BLOCK];
    let mut out2 = [0f32; 2 * BLOCK];
    let (_, n) = allocations(|| {
        for i in 0..3_000u64 {
            let now = i * 2_666_667 + (i * 7919 % 3) * 1_000_000;
            let first = i * BLOCK as u64;
            // Drop every 5th A and every 7th D; skip every 11th stereo block.
            js.push_block(first, &block, |f, sub, x| {
                let skip = (sub as u8 == 1 && i % 5 == 0) || (sub as u8 == 4 && i % 7 == 0);
                if !skip {
                    jb.insert_jellie(now, f, sub, x);
                }
            });
            if i % 11 != 0 {
                jb_plain.insert(now, first, &stereo);
            }
            est.on_arrival(now, first);
            seq.on_frame(now, i as u32, now);
            jb.pull(now + 4_000_000, &mut out, &mut conceal);
            jb_plain.pull(now + 4_000_000, &mut out2, &mut conceal);
        }
    });
    assert!(jb.stats().received > 5_000);
    assert_eq!(n, 0, "jitter/JELLIE/concealer allocated {n} times");
}

#[test]
fn drift_compensator_does_not_allocate() {
    const BLOCK: usize = 128;
    let mut jb = JitterBuffer::new(JitterConfig::new(1, BLOCK, 48_000));
    let mut conceal = RepeatFadeConcealer::new(1, BLOCK);
    let mut dc = DriftCompensator::new(DriftConfig::new(1, BLOCK, BLOCK)).unwrap();
    let block = [0.1f32; BLOCK];
    let mut out = [0f32; BLOCK];
    // Warm up outside the counted region (first calls may size internal state).
    for i in 0..10u64 {
        jb.insert(i * 2_666_667, i * BLOCK as u64, &block);
    }
    let (_, n) = allocations(|| {
        for i in 10..3_000u64 {
            let now = i * 2_666_667;
            jb.insert(now, i * BLOCK as u64, &block);
            let ratio = 1.0 + ((i % 20) as f64 - 10.0) * 1e-5;
            dc.render(
                now + 3_000_000,
                &mut jb,
                &mut conceal,
                Some(ratio),
                &mut out,
            )
            .unwrap();
        }
    });
    assert!(dc.stats().blocks_out > 2_900);
    assert_eq!(n, 0, "drift compensator allocated {n} times");
}
