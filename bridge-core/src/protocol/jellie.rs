//! JELLIE (PROTOCOL.md section 4): a mono block sent as four sub-streams, as
//! ADAT interleaves. A = even-indexed samples, B = odd, C = copy of A,
//! D = copy of B (C and D carry the REDUNDANT flag and may be delayed by up to
//! one block so one loss burst does not take both copies).
//!
//! [`merge`] rebuilds the block bit-exactly from (A or C) and (B or D);
//! with one parity missing entirely it interpolates it from the other;
//! with both missing the block needs concealment.

/// Sub-stream numbers as carried in the audio payload's `jellie` byte.
///
/// Thread-safe: yes. Realtime-safe: yes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum SubStream {
    /// Even samples.
    A = 1,
    /// Odd samples.
    B = 2,
    /// Even samples again (redundant).
    C = 3,
    /// Odd samples again (redundant).
    D = 4,
}

impl SubStream {
    /// All four, in order.
    pub const ALL: [SubStream; 4] = [SubStream::A, SubStream::B, SubStream::C, SubStream::D];

    /// From the payload's `jellie` byte (1–4).
    pub const fn from_u8(v: u8) -> Option<Self> {
        match v {
            1 => Some(SubStream::A),
            2 => Some(SubStream::B),
            3 => Some(SubStream::C),
            4 => Some(SubStream::D),
            _ => None,
        }
    }

    /// Odd parity (B, D)?
    pub const fn is_odd(self) -> bool {
        matches!(self, SubStream::B | SubStream::D)
    }

    /// Redundant copy (C, D)? These set the REDUNDANT flag.
    pub const fn is_redundant(self) -> bool {
        matches!(self, SubStream::C | SubStream::D)
    }

    /// Samples this sub-stream carries for a block of `block_len` samples.
    pub const fn len_for(self, block_len: usize) -> usize {
        if self.is_odd() {
            block_len / 2
        } else {
            block_len.div_ceil(2)
        }
    }
}

/// Split a mono block into its even (A/C) and odd (B/D) halves.
/// `even.len()` must be `ceil(n/2)`, `odd.len()` `floor(n/2)`.
/// Realtime-safe: yes.
pub fn split<T: Copy>(block: &[T], even: &mut [T], odd: &mut [T]) {
    debug_assert_eq!(even.len(), block.len().div_ceil(2));
    debug_assert_eq!(odd.len(), block.len() / 2);
    for (e, s) in even.iter_mut().zip(block.iter().step_by(2)) {
        *e = *s;
    }
    for (o, s) in odd.iter_mut().zip(block.iter().skip(1).step_by(2)) {
        *o = *s;
    }
}

/// How a block came back from [`merge`].
///
/// Thread-safe: yes. Realtime-safe: yes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MergeOutcome {
    /// Both parities present: the block is bit-exact.
    Exact,
    /// Odd samples were missing and interpolated from the even ones.
    InterpolatedOdd,
    /// Even samples were missing and interpolated from the odd ones.
    InterpolatedEven,
    /// Neither parity arrived: `out` is untouched, conceal the block.
    NeedConcealment,
}

/// Rebuild a block of `out.len()` samples from whatever sub-streams arrived
/// (`a`..`d`: each `None` when lost). Realtime-safe: yes.
pub fn merge(
    a: Option<&[f32]>,
    b: Option<&[f32]>,
    c: Option<&[f32]>,
    d: Option<&[f32]>,
    out: &mut [f32],
) -> MergeOutcome {
    let n = out.len();
    let even = a.or(c).filter(|s| s.len() == n.div_ceil(2));
    let odd = b.or(d).filter(|s| s.len() == n / 2);
    match (even, odd) {
        (Some(e), Some(o)) => {
            for (i, v) in out.iter_mut().enumerate() {
                *v = if i % 2 == 0 { e[i / 2] } else { o[i / 2] };
            }
            MergeOutcome::Exact
        }
        (Some(e), None) => {
            for (i, v) in e.iter().enumerate() {
                out[2 * i] = *v;
            }
            fill_missing_parity(out, 1);
            MergeOutcome::InterpolatedOdd
        }
        (None, Some(o)) => {
            for (i, v) in o.iter().enumerate() {
                out[2 * i + 1] = *v;
            }
            fill_missing_parity(out, 0);
            MergeOutcome::InterpolatedEven
        }
        (None, None) => MergeOutcome::NeedConcealment,
    }
}

/// Fill samples `start, start+2, …` of `out` from their known neighbours
/// (the other parity): 4-point half-band interpolation
/// `(-x[-3] + 9x[-1] + 9x[+1] - x[+3]) / 16` where all four exist, linear
/// inside, linear extrapolation at the block edges.
fn fill_missing_parity(out: &mut [f32], start: usize) {
    let n = out.len();
    let at = |out: &[f32], i: isize| -> Option<f32> {
        (i >= 0 && (i as usize) < n).then(|| out[i as usize])
    };
    let mut i = start;
    while i < n {
        let k = i as isize;
        let v = match (
            at(out, k - 3),
            at(out, k - 1),
            at(out, k + 1),
            at(out, k + 3),
        ) {
            (Some(p3), Some(p1), Some(n1), Some(n3)) => (-p3 + 9.0 * p1 + 9.0 * n1 - n3) / 16.0,
            (_, Some(p1), Some(n1), _) => 0.5 * (p1 + n1),
            // Block edges: extend the slope of the two nearest known samples.
            (Some(p3), Some(p1), None, _) => p1 + 0.5 * (p1 - p3),
            (_, None, Some(n1), Some(n3)) => n1 + 0.5 * (n1 - n3),
            (_, Some(p1), None, _) => p1,
            (_, None, Some(n1), _) => n1,
            _ => 0.0,
        };
        out[i] = v;
        i += 2;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_merge_exact_for_every_sufficient_subset() {
        for n in [1usize, 2, 7, 64, 129] {
            let block: Vec<f32> = (0..n).map(|i| (i as f32 * 0.37).sin()).collect();
            let mut even = vec![0.0; n.div_ceil(2)];
            let mut odd = vec![0.0; n / 2];
            split(&block, &mut even, &mut odd);
            for mask in 0u8..16 {
                let pick = |bit: u8, s: &[f32]| (mask & (1 << bit) != 0).then_some(s.to_vec());
                let (a, b, c, d) = (pick(0, &even), pick(1, &odd), pick(2, &even), pick(3, &odd));
                let mut out = vec![f32::NAN; n];
                let outcome = merge(
                    a.as_deref(),
                    b.as_deref(),
                    c.as_deref(),
                    d.as_deref(),
                    &mut out,
                );
                let has_even = a.is_some() || c.is_some();
                let has_odd = b.is_some() || d.is_some() || n == 1 && has_even;
                if has_even && (b.is_some() || d.is_some()) {
                    assert_eq!(outcome, MergeOutcome::Exact);
                    assert_eq!(out, block);
                } else if !has_even && !has_odd {
                    assert_eq!(outcome, MergeOutcome::NeedConcealment);
                } else {
                    assert!(out.iter().all(|v| v.is_finite()), "n={n} mask={mask}");
                }
            }
        }
    }

    #[test]
    fn interpolation_of_a_smooth_signal_is_close() {
        let n = 256;
        let block: Vec<f32> = (0..n).map(|i| (i as f32 * 0.05).sin()).collect();
        let mut even = vec![0.0; n / 2];
        let mut odd = vec![0.0; n / 2];
        split(&block, &mut even, &mut odd);
        let mut out = vec![0.0; n];
        assert_eq!(
            merge(Some(&even), None, None, None, &mut out),
            MergeOutcome::InterpolatedOdd
        );
        let err = out
            .iter()
            .zip(&block)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0, f32::max);
        assert!(err < 2e-3, "max error {err}");
    }
}
