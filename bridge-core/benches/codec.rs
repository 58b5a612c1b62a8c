//! Criterion benchmarks of the TOAST v2 codec: the same workloads as
//! `toaster bench codec` (see `bridge_core::bench`).

use criterion::{criterion_group, criterion_main, Criterion, Throughput};

fn codec(c: &mut Criterion) {
    for mut case in bridge_core::bench::codec_cases() {
        let mut g = c.benchmark_group(case.group);
        g.throughput(Throughput::Bytes(case.bytes as u64));
        g.bench_function(case.name, |b| b.iter(&mut case.run));
        g.finish();
    }
}

criterion_group!(benches, codec);
criterion_main!(benches);
