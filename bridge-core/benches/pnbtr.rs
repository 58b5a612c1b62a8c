//! CPU cost of concealment per packet. The expensive packet is the one that
//! starts a gap (the history is analysed there, and one packet of the
//! continuation made); continuing a gap extends the continuation by a packet.
//! Run: `cargo bench -p bridge-core --bench pnbtr`.

use bridge_core::conceal::ConcealMethod;
use bridge_core::pnbtr::make_concealer;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};

fn music_like(n: usize) -> Vec<f32> {
    (0..n)
        .map(|i| {
            let t = i as f32 / 48_000.0;
            (1..6)
                .map(|k| (2.0 * std::f32::consts::PI * 196.0 * k as f32 * t).sin() / k as f32)
                .sum::<f32>()
                * 0.2
                + 0.1 * (2.0 * std::f32::consts::PI * 261.6 * t).sin()
        })
        .collect()
}

fn gap_start(c: &mut Criterion) {
    let mut g = c.benchmark_group("pnbtr_gap_start");
    for packet in [128usize, 240] {
        let sig = music_like(48_000);
        for method in [ConcealMethod::Burg, ConcealMethod::Pnbtr] {
            let mut conc = make_concealer(method, 1, 48_000).unwrap();
            let mut warm = sig[..4096].to_vec();
            conc.on_received(&mut warm);
            let mut block = sig[4096..4096 + packet].to_vec();
            let mut out = vec![0.0f32; packet];
            g.bench_with_input(
                BenchmarkId::new(format!("{method:?}"), packet),
                &packet,
                |b, _| {
                    b.iter(|| {
                        // One received packet then a lost one: every lost packet starts a gap.
                        block.copy_from_slice(&sig[4096..4096 + packet]);
                        conc.on_received(&mut block);
                        conc.conceal(&mut out);
                        std::hint::black_box(&out);
                    })
                },
            );
        }
    }
    g.finish();
}

criterion_group!(benches, gap_start, parts);
criterion_main!(benches);

/// Where a gap start's time goes: the analysis parts and the continuation.
fn parts(c: &mut Criterion) {
    use bridge_core::pnbtr::core::{analyse, predict, PnbtrModel, PnbtrScratch, HISTORY};
    use bridge_core::pnbtr::lpc::{ar_extrapolate, burg, BurgScratch};
    let sig = music_like(HISTORY);
    let model = PnbtrModel::builtin();
    let mut s = PnbtrScratch::new(2112);
    let mut g = c.benchmark_group("pnbtr_parts");
    g.bench_function("burg32_1024", |b| {
        let mut a = [0.0f32; 33];
        let mut bs = BurgScratch::new(1024);
        b.iter(|| burg(&sig[HISTORY - 1024..], &mut a, &mut bs))
    });
    g.bench_function("analyse", |b| b.iter(|| analyse(&sig, &mut s)));
    let an = analyse(&sig, &mut s);
    let mut out = vec![0.0f32; 2112];
    let mut work = vec![0.0f32; 2200];
    g.bench_function("ar_extrapolate_2112", |b| {
        b.iter(|| ar_extrapolate(&sig, &an.ar, &mut work, &mut out))
    });
    g.bench_function("predict_2112", |b| {
        b.iter(|| predict(&sig, &model, &mut s, &mut out))
    });
    g.finish();
}
