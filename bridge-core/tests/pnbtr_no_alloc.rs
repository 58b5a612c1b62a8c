//! The CPU concealers never allocate in `on_received`/`conceal` (the audio
//! thread's calls): checked with a counting global allocator.

use bridge_core::conceal::ConcealMethod;
use bridge_core::pnbtr::make_concealer;
use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

struct Counting;

thread_local! {
    static ALLOCS: Cell<usize> = const { Cell::new(0) };
}

// SAFETY: forwards every call to the system allocator unchanged; only counts
// allocations made by the current thread (a const thread-local Cell, which
// itself never allocates).
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCS.with(|c| c.set(c.get() + 1));
        // SAFETY: same contract as our caller's.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: ptr came from System.alloc with this layout.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCS.with(|c| c.set(c.get() + 1));
        // SAFETY: same contract as our caller's.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn allocations() -> usize {
    ALLOCS.with(|c| c.get())
}

#[test]
fn cpu_concealers_do_not_allocate_while_streaming() {
    // The counter itself works (so a zero below means something).
    let a0 = allocations();
    let probe = std::hint::black_box(vec![1u8; 16]);
    assert!(allocations() > a0, "counting allocator not active");
    drop(probe);
    let channels = 2;
    let signal: Vec<f32> = (0..48_000 * channels)
        .map(|i| ((i / channels) as f32 * 0.031).sin() * 0.5)
        .collect();
    for method in [
        ConcealMethod::Zero,
        ConcealMethod::Repeat,
        ConcealMethod::Burg,
        ConcealMethod::Pnbtr,
    ] {
        let mut c = make_concealer(method, channels, 48_000).unwrap();
        let mut block = vec![0.0f32; 240 * channels];
        let before = allocations();
        for (p, chunk) in signal.chunks(240 * channels).enumerate() {
            block[..chunk.len()].copy_from_slice(chunk);
            // Single losses, bursts and a gap longer than the fade.
            let lost = p % 7 == 3 || (20..23).contains(&p) || (100..115).contains(&p);
            if lost {
                c.conceal(&mut block[..chunk.len()]);
            } else {
                c.on_received(&mut block[..chunk.len()]);
            }
        }
        c.reset();
        assert_eq!(
            allocations() - before,
            0,
            "{method:?} allocated while streaming"
        );
    }
}
