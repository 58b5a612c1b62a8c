// PNBTR predictor, one workgroup per stream (one channel's history).
// GPU twin of bridge-core/src/pnbtr/core.rs: same steps, same summation
// order (LANES strided partial sums then a tree, or one thread's serial sum),
// so both round alike. Keep the two in step.
//
// Input:  hist[s * HISTORY + i], newest sample last.
// Output: outp[s * params.len + i], the continuation (i = 0 is the first
//         sample after the history).

const HISTORY: u32 = 2048u;
const BURG_WINDOW: u32 = 1024u;
const ORDER: u32 = 32u;
const BACKCAST: u32 = 256u;
const GAP_SCALE: f32 = 2048.0;
const LANES: u32 = 64u;
const NDEC: u32 = 512u;          // HISTORY / 4
const COARSE_MIN: u32 = 8u;
const COARSE_MAX: u32 = 256u;
const COARSE_WIN: u32 = 128u;
const FINE_WIN: u32 = 512u;
const FINE_SPAN: u32 = 3u;
const N_STATIC: u32 = 5u;
const N_TIME: u32 = 3u;
const N_CAND: u32 = 3u;
const NEG_BIG: f32 = -1.0e30;

struct Params {
    streams: u32,
    len: u32,
    pad0: u32,
    pad1: u32,
}

@group(0) @binding(0) var<storage, read> hist: array<f32>;
@group(0) @binding(1) var<storage, read_write> outp: array<f32>;
@group(0) @binding(2) var<uniform> params: Params;
@group(0) @binding(3) var<storage, read> weights: array<f32>;

var<workgroup> fw: array<f32, 1024>;
var<workgroup> bw: array<f32, 1024>;
var<workgroup> dec: array<f32, 512>;
var<workgroup> back: array<f32, 256>;
var<workgroup> red: array<f32, 64>;
var<workgroup> redi: array<u32, 64>;
var<workgroup> coef: array<f32, 33>;
var<workgroup> feat: array<f32, 5>;
var<workgroup> q: array<f32, 9>;

var<private> base_h: u32;

fn h(i: u32) -> f32 {
    return hist[base_h + i];
}

// Sum over lanes in the CPU twin's order (lpc::lane_sum).
fn reduce_sum(v: f32, lid: u32) -> f32 {
    red[lid] = v;
    workgroupBarrier();
    var stride = LANES / 2u;
    loop {
        if stride == 0u {
            break;
        }
        if lid < stride {
            red[lid] = red[lid] + red[lid + stride];
        }
        workgroupBarrier();
        stride = stride / 2u;
    }
    let r = red[0];
    workgroupBarrier();
    return r;
}

fn reduce_max(v: f32, lid: u32) -> f32 {
    red[lid] = v;
    workgroupBarrier();
    var stride = LANES / 2u;
    loop {
        if stride == 0u {
            break;
        }
        if lid < stride {
            red[lid] = max(red[lid], red[lid + stride]);
        }
        workgroupBarrier();
        stride = stride / 2u;
    }
    let r = red[0];
    workgroupBarrier();
    return r;
}

// Arg-max of (r, lag): larger r wins, equal r -> smaller lag (as the CPU's
// first-strictly-greater scan in increasing lag order). Returns the lag.
fn reduce_argmax(r: f32, lag: u32, lid: u32) -> u32 {
    red[lid] = r;
    redi[lid] = lag;
    workgroupBarrier();
    var stride = LANES / 2u;
    loop {
        if stride == 0u {
            break;
        }
        if lid < stride {
            let ro = red[lid + stride];
            let lo = redi[lid + stride];
            let rm = red[lid];
            let lm = redi[lid];
            if ro > rm || (ro == rm && lo < lm) {
                red[lid] = ro;
                redi[lid] = lo;
            }
        }
        workgroupBarrier();
        stride = stride / 2u;
    }
    let l = redi[0];
    workgroupBarrier();
    return l;
}

// x[n - j] for the back-cast: predicted (back) or known history.
fn back_at(i: u32, j: u32, cut: u32) -> f32 {
    if i >= j {
        return back[i - j];
    }
    return h(cut + i - j);
}

// x[n - j] for the continuation: predicted (outp) or known history.
fn cont_at(i: u32, j: u32, obase: u32) -> f32 {
    if i >= j {
        return outp[obase + i - j];
    }
    return h(HISTORY + i - j);
}

fn clamp01(x: f32) -> f32 {
    // NaN fails both comparisons; the CPU maps NaN to 0.
    if !(x >= 0.0) {
        return 0.0;
    }
    return min(x, 1.0);
}

fn is_finite(x: f32) -> bool {
    return (bitcast<u32>(x) & 0x7f800000u) != 0x7f800000u;
}

@compute @workgroup_size(64)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let s = wg.x;
    base_h = s * HISTORY;
    let len = params.len;
    let obase = s * len;
    let wstart = HISTORY - BURG_WINDOW;

    // ---- Burg on the newest BURG_WINDOW samples -------------------------
    for (var i = lid; i < BURG_WINDOW; i += LANES) {
        let v = h(wstart + i);
        fw[i] = v;
        bw[i] = v;
    }
    if lid <= ORDER {
        coef[lid] = select(0.0, 1.0, lid == 0u);
    }
    workgroupBarrier();
    var pk = 0.0;
    for (var i = lid; i < BURG_WINDOW; i += LANES) {
        pk = max(pk, abs(fw[i]));
    }
    let peak = reduce_max(pk, lid);
    var floor = 0.0;
    for (var k = 0u; k < ORDER; k++) {
        let m = BURG_WINDOW - k - 1u;
        var acc = 0.0;
        var acd = 0.0;
        for (var i = lid; i < m; i += LANES) {
            let fv = fw[i + k + 1u];
            let bv = bw[i];
            acc += fv * bv;
            acd += fv * fv + bv * bv;
        }
        let num = reduce_sum(acc, lid);
        let den = reduce_sum(acd, lid);
        if k == 0u {
            floor = den * 1e-6;
        }
        var mu = 0.0;
        if den > floor && den > 1e-20 {
            mu = -2.0 * num / den;
        }
        mu = clamp(mu, -0.99999, 0.99999);
        if lid == 0u {
            let half = (k + 1u) / 2u;
            for (var j = 0u; j <= half; j++) {
                let lo = coef[j];
                let hi = coef[k + 1u - j];
                coef[j] = lo + mu * hi;
                coef[k + 1u - j] = hi + mu * lo;
            }
            coef[0] = 1.0;
        }
        for (var i = lid; i < m; i += LANES) {
            let fi = fw[i + k + 1u];
            let bi = bw[i];
            fw[i + k + 1u] = fi + mu * bi;
            bw[i] = bi + mu * fi;
        }
        workgroupBarrier();
    }

    // ---- Coarse pitch at 12 kHz: one lag per thread ----------------------
    for (var m = lid; m < NDEC; m += LANES) {
        let i = m * 4u;
        dec[m] = (h(i) + h(i + 1u) + h(i + 2u) + h(i + 3u)) * 0.25;
    }
    workgroupBarrier();
    let dbase = NDEC - COARSE_WIN;
    var best_r = NEG_BIG;
    var best_l = COARSE_MIN;
    for (var lag = COARSE_MIN + lid; lag <= COARSE_MAX; lag += LANES) {
        var num = 0.0;
        var e0 = 0.0;
        var el = 0.0;
        for (var m = 0u; m < COARSE_WIN; m++) {
            let x = dec[dbase + m];
            let y = dec[dbase + m - lag];
            num += x * y;
            e0 += x * x;
            el += y * y;
        }
        let r = num / sqrt(e0 * el + 1e-12);
        if r > best_r {
            best_r = r;
            best_l = lag;
        }
    }
    let coarse = reduce_argmax(best_r, best_l, lid);

    // ---- Refine at 48 kHz: 2 * FINE_SPAN + 1 lags, one per thread --------
    let centre = coarse * 4u;
    let fbase = HISTORY - FINE_WIN;
    var fr = NEG_BIG;
    var ft = 0xffffffffu;
    if lid <= 2u * FINE_SPAN {
        let t = centre - FINE_SPAN + lid;
        var num = 0.0;
        var e0 = 0.0;
        var et = 0.0;
        for (var i = 0u; i < FINE_WIN; i++) {
            let x = h(fbase + i);
            let y = h(fbase + i - t);
            num += x * y;
            e0 += x * x;
            et += y * y;
        }
        let r = num / sqrt(e0 * et + 1e-12);
        // The CPU keeps its initial guess if every r is NaN.
        if r > NEG_BIG {
            fr = r;
            ft = t;
        }
    }
    var period = reduce_argmax(fr, ft, lid);
    let rho = red[0];
    workgroupBarrier();
    if period == 0xffffffffu {
        period = centre;
    }

    // ---- Back-casts (thread 0, serial as on the CPU) -----------------------
    let cut = HISTORY - BACKCAST;
    let half_w = BURG_WINDOW / 2u;
    var en = 0.0;
    var eo = 0.0;
    for (var i = lid; i < half_w; i += LANES) {
        let a = h(HISTORY - half_w + i);
        let b = h(HISTORY - 2u * half_w + i);
        en += a * a;
        eo += b * b;
    }
    let e_new = reduce_sum(en, lid);
    let e_old = reduce_sum(eo, lid);
    if lid == 0u {
        // Four partial sums per sample (terms j = 1, 5, 9.. / 2, 6.. / 3, 7.. /
        // 4, 8..), combined (a0 + a1) + (a2 + a3), as the CPU twin.
        for (var i = 0u; i < BACKCAST; i++) {
            var a0 = 0.0;
            var a1 = 0.0;
            var a2 = 0.0;
            var a3 = 0.0;
            for (var j = 1u; j <= ORDER; j += 4u) {
                a0 += coef[j] * back_at(i, j, cut);
                a1 += coef[j + 1u] * back_at(i, j + 1u, cut);
                a2 += coef[j + 2u] * back_at(i, j + 2u, cut);
                a3 += coef[j + 3u] * back_at(i, j + 3u, cut);
            }
            back[i] = -((a0 + a1) + (a2 + a3));
        }
        var e_ar = 0.0;
        var e_p = 0.0;
        var e_x = 0.0;
        for (var i = 0u; i < BACKCAST; i++) {
            let x = h(cut + i);
            let pa = back[i] - x;
            let pp = h(cut - period + (i % period)) - x;
            e_ar += pa * pa;
            e_p += pp * pp;
            e_x += x * x;
        }
        let hi = max(e_new, e_old);
        var lvl = 0.0;
        if hi > 1e-12 {
            lvl = min(e_new, e_old) / hi;
        }
        feat[0] = 1.0;
        feat[1] = clamp01(1.0 - e_ar / (e_x + 1e-9));
        feat[2] = clamp01(1.0 - e_p / (e_x + 1e-9));
        feat[3] = clamp01(rho);
        feat[4] = lvl;
        for (var k = 0u; k < N_CAND; k++) {
            for (var mm = 0u; mm < N_TIME; mm++) {
                var acc = 0.0;
                for (var j = 0u; j < N_STATIC; j++) {
                    acc += weights[(k * N_STATIC + j) * N_TIME + mm] * feat[j];
                }
                q[k * N_TIME + mm] = acc;
            }
        }
        // AR continuation, serial: written to the output, mixed below.
        for (var i = 0u; i < len; i++) {
            var a0 = 0.0;
            var a1 = 0.0;
            var a2 = 0.0;
            var a3 = 0.0;
            for (var j = 1u; j <= ORDER; j += 4u) {
                a0 += coef[j] * cont_at(i, j, obase);
                a1 += coef[j + 1u] * cont_at(i, j + 1u, obase);
                a2 += coef[j + 2u] * cont_at(i, j + 2u, obase);
                a3 += coef[j + 3u] * cont_at(i, j + 3u, obase);
            }
            outp[obase + i] = -((a0 + a1) + (a2 + a3));
        }
    }
    storageBarrier();
    workgroupBarrier();

    // ---- Mix the candidates, every thread --------------------------------
    let limit = 2.0 * peak;
    let two_p = 2u * period <= HISTORY;
    for (var i = lid; i < len; i += LANES) {
        let u = f32(i) / GAP_SCALE;
        let p1 = h(HISTORY - period + (i % period));
        var p2 = p1;
        if two_p {
            p2 = h(HISTORY - 2u * period + (i % period));
        }
        let ar = outp[obase + i];
        var y = 0.0;
        y += (q[0] + u * (q[1] + u * q[2])) * ar;
        y += (q[3] + u * (q[4] + u * q[5])) * p1;
        y += (q[6] + u * (q[7] + u * q[8])) * p2;
        if is_finite(y) {
            y = clamp(y, -limit, limit);
        } else {
            y = 0.0;
        }
        outp[obase + i] = y;
    }
}
