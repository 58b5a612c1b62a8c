//! Linear prediction: Burg's method and AR extrapolation, in `f32`.
//!
//! Long sums use [`lane_sum`], which adds in the same order as the GPU
//! kernel's workgroup reduction (`LANES` strided partial sums, then a tree),
//! so the CPU and GPU paths round identically (see `shaders/pnbtr.wgsl`).

/// Threads per workgroup in `shaders/pnbtr.wgsl`; the CPU reductions mimic it.
pub const LANES: usize = 64;

/// Sum of `f(i)` for `i in 0..n`, added in the GPU workgroup's order: lane
/// `l` sums `i = l, l + LANES, …` in sequence, then lanes are folded pairwise
/// (`l += l + 32`, then `+ 16`, …).
#[inline]
pub fn lane_sum(n: usize, mut f: impl FnMut(usize) -> f32) -> f32 {
    // Row by row over LANES-wide rows: each lane still adds its own terms in
    // increasing i (the GPU order), and the inner loop vectorises.
    let mut part = [0.0f32; LANES];
    let full = n / LANES;
    for row in 0..full {
        let base = row * LANES;
        for (lane, p) in part.iter_mut().enumerate() {
            *p += f(base + lane);
        }
    }
    for (lane, p) in part.iter_mut().enumerate().take(n - full * LANES) {
        *p += f(full * LANES + lane);
    }
    let mut stride = LANES / 2;
    while stride > 0 {
        for l in 0..stride {
            part[l] += part[l + stride];
        }
        stride /= 2;
    }
    part[0]
}

/// [`lane_sum`] of `term(x[i], y[i])` over two equal-length slices, written
/// over fixed-width rows so the compiler vectorises it (no per-element bounds
/// checks); same addition order, so the same result to the bit.
#[inline]
fn lane_sum_zip(x: &[f32], y: &[f32], term: impl Fn(f32, f32) -> f32) -> f32 {
    debug_assert_eq!(x.len(), y.len());
    let mut part = [0.0f32; LANES];
    let mut xr = x.chunks_exact(LANES);
    let mut yr = y.chunks_exact(LANES);
    for (xs, ys) in (&mut xr).zip(&mut yr) {
        for ((p, &a), &b) in part.iter_mut().zip(xs).zip(ys) {
            *p += term(a, b);
        }
    }
    for ((p, &a), &b) in part.iter_mut().zip(xr.remainder()).zip(yr.remainder()) {
        *p += term(a, b);
    }
    let mut stride = LANES / 2;
    while stride > 0 {
        for l in 0..stride {
            part[l] += part[l + stride];
        }
        stride /= 2;
    }
    part[0]
}

/// Scratch for [`burg`]: forward and backward error arrays of the window length.
///
/// Thread-safe: no. Realtime-safe: yes once constructed.
#[derive(Debug, Clone)]
pub struct BurgScratch {
    fwd: Vec<f32>,
    bwd: Vec<f32>,
}

impl BurgScratch {
    /// Scratch for windows of up to `window` samples.
    pub fn new(window: usize) -> Self {
        Self {
            fwd: vec![0.0; window],
            bwd: vec![0.0; window],
        }
    }
}

/// Burg's method (Collomb's formulation): fits `a[0..=order]` (`a[0] = 1`) so
/// that `x[n] ≈ -Σ a[j] x[n-j]`. `a.len()` must be `order + 1`; `x.len()` must
/// not exceed the scratch window and must exceed `order`. Silent input gives
/// `a = [1, 0, …]`. Realtime-safe (no allocation).
pub fn burg(x: &[f32], a: &mut [f32], scratch: &mut BurgScratch) {
    let n = x.len();
    let order = a.len() - 1;
    assert!(
        n > order && n <= scratch.fwd.len(),
        "burg: window {n} vs order {order}"
    );
    let f = &mut scratch.fwd[..n];
    let b = &mut scratch.bwd[..n];
    f.copy_from_slice(x);
    b.copy_from_slice(x);
    a.fill(0.0);
    a[0] = 1.0;
    // Stage k's denominator is recomputed from the error arrays instead of
    // Collomb's recursion D' = (1 - mu²) D - …: in f32 that recursion loses
    // all precision on tonal input (1 - mu² ≈ 1e-6).
    let mut floor = 0.0f32;
    for k in 0..order {
        let m = n - k - 1;
        let (fk, bk) = (&f[k + 1..k + 1 + m], &b[..m]);
        let num = lane_sum_zip(fk, bk, |fi, bi| fi * bi);
        let den = lane_sum_zip(fk, bk, |fi, bi| fi * fi + bi * bi);
        if k == 0 {
            // Below this the residual is f32 rounding noise: further stages
            // would fit noise (a pure tone is predicted after two stages).
            floor = den * 1e-6;
        }
        let mut mu = if den > floor && den > 1e-20 {
            -2.0 * num / den
        } else {
            0.0
        };
        mu = mu.clamp(-0.999_99, 0.999_99);
        let half = k.div_ceil(2);
        for j in 0..=half {
            let lo = a[j];
            let hi = a[k + 1 - j];
            a[j] = lo + mu * hi;
            a[k + 1 - j] = hi + mu * lo;
        }
        // a[0] must stay 1 (j = 0 above pairs it with a[k+1], which was 0).
        a[0] = 1.0;
        for (fv, bv) in f[k + 1..k + 1 + m].iter_mut().zip(&mut b[..m]) {
            let (fi, bi) = (*fv, *bv);
            *fv = fi + mu * bi;
            *bv = bi + mu * fi;
        }
    }
}

/// Continues `past` (at least `a.len() - 1` samples, newest last) with the AR
/// model `a` into `out`. `work` must hold `a.len() - 1 + out.len()` samples.
/// Each sample's dot product uses four partial sums (terms j ≡ 0..3 mod 4,
/// combined as (s0 + s1) + (s2 + s3)), exactly as the GPU kernel does: it
/// breaks the add-latency chain and keeps the twins' rounding identical.
/// Realtime-safe.
pub fn ar_extrapolate(past: &[f32], a: &[f32], work: &mut [f32], out: &mut [f32]) {
    let order = a.len() - 1;
    debug_assert!(past.len() >= order);
    let len = out.len();
    let buf = &mut work[..order + len];
    buf[..order].copy_from_slice(&past[past.len() - order..]);
    let quads = order / 4;
    for i in 0..len {
        // past[q] = x[n - order + q], so x[n - j] = past[order - j].
        let past = &buf[i..i + order];
        let (mut s0, mut s1, mut s2, mut s3) = (0.0f32, 0.0f32, 0.0f32, 0.0f32);
        for q in 0..quads {
            let j = 4 * q + 1;
            s0 += a[j] * past[order - j];
            s1 += a[j + 1] * past[order - j - 1];
            s2 += a[j + 2] * past[order - j - 2];
            s3 += a[j + 3] * past[order - j - 3];
        }
        let mut s = [s0, s1, s2, s3];
        for j in 4 * quads + 1..=order {
            s[(j - 1) & 3] += a[j] * past[order - j];
        }
        buf[order + i] = -((s[0] + s[1]) + (s[2] + s[3]));
    }
    out.copy_from_slice(&buf[order..]);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn burg_predicts_a_sine_almost_exactly() {
        let x: Vec<f32> = (0..1024).map(|i| (i as f32 * 0.05).sin()).collect();
        let mut a = vec![0.0; 9];
        let mut s = BurgScratch::new(1024);
        burg(&x[..900], &mut a, &mut s);
        let mut out = vec![0.0; 124];
        ar_extrapolate(&x[..900], &a, &mut vec![0.0; 200], &mut out);
        let err: f32 = out
            .iter()
            .zip(&x[900..])
            .map(|(p, t)| (p - t).powi(2))
            .sum();
        let sig: f32 = x[900..].iter().map(|t| t * t).sum();
        assert!(err / sig < 1e-2, "relative error {}", err / sig);
    }

    #[test]
    fn burg_on_silence_is_identity_filter() {
        let x = vec![0.0f32; 256];
        let mut a = vec![0.5; 17];
        burg(&x, &mut a, &mut BurgScratch::new(256));
        assert_eq!(a[0], 1.0);
        assert!(a[1..].iter().all(|&c| c == 0.0));
    }

    #[test]
    fn lane_sum_zip_adds_in_lane_sum_order() {
        // Bit-identical to lane_sum (the GPU's order), tails included.
        for n in [1usize, 63, 64, 65, 1000, 1023] {
            let x: Vec<f32> = (0..n).map(|i| (i as f32 * 0.37).sin()).collect();
            let y: Vec<f32> = (0..n).map(|i| (i as f32 * 0.11).cos()).collect();
            let a = lane_sum(n, |i| x[i] * x[i] + y[i] * y[i]);
            let b = lane_sum_zip(&x, &y, |p, q| p * p + q * q);
            assert_eq!(a.to_bits(), b.to_bits(), "n = {n}");
        }
    }

    #[test]
    fn lane_sum_matches_plain_sum_closely() {
        let v: Vec<f32> = (0..1000).map(|i| (i as f32).sqrt()).collect();
        let plain: f64 = v.iter().map(|&x| x as f64).sum();
        let lanes = lane_sum(v.len(), |i| v[i]) as f64;
        assert!((plain - lanes).abs() / plain < 1e-6);
    }
}
