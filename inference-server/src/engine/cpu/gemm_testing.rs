//! What the GEMM tests (`f32gemm`, `bf16gemm`) share: operands and the f64 error bound.

use super::gemm::{Gemm, max_index};

/// Deterministic values in [-1, 1) with 24 significant bits (so a bf16 rounding matters).
pub(crate) fn values(len: usize, seed: u64) -> Vec<f32> {
    let mut s = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    let mut next = move || {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        s
    };
    (0..len)
        .map(|_| (next() >> 40) as f32 / (1u32 << 23) as f32 - 1.0)
        .collect()
}

/// A rows × cols operand: layout 0 row-major, 1 transposed (rs = 1), 2 neither stride 1.
pub(crate) fn operand(rows: usize, cols: usize, layout: u8, seed: u64) -> (Vec<f32>, usize, usize) {
    let (rs, cs) = [(cols, 1), (1, rows), (2 * cols + 1, 2)][layout as usize];
    (values(max_index(rows, cols, rs, cs) + 1, seed), rs, cs)
}

/// The largest |got − exact| / bound over the m × n block of `got` (row stride `g.dst_rs`),
/// `exact` being the f64 product of the inputs as `input` gives them (exact for f32, the bf16
/// rounding for bf16 products), plus `c0` when accumulating.
///
/// f32 products: rounding each product and summing k + 1 terms in f32 in any order (FMA only
/// removes roundings) errs by at most γ_{k+1}·Σ|terms|, γ_j = j·u / (1 − j·u), u = 2^-24
/// (Higham, Accuracy and Stability, §3.1). bf16 products are exact in f32 (8 + 8 significant
/// bits ≤ 24), leaving only the summation's γ_k·Σ|terms| (§4.2). Every k here has
/// (k + 1)·u < 1e-3, so bound = 1.01·(k + 1)·u·Σ|terms| (+1e-30 for an all-zero row) holds.
pub(crate) fn error_ratio(g: Gemm<'_>, c0: &[f32], got: &[f32], input: impl Fn(f32) -> f64) -> f64 {
    let (lhs, rhs) = (g.lhs, g.rhs);
    let mut worst = 0f64;
    for (i, j) in (0..g.m).flat_map(|i| (0..g.n).map(move |j| (i, j))) {
        let c = if g.acc {
            c0[i * g.dst_rs + j] as f64
        } else {
            0.0
        };
        let (mut exact, mut abs) = (c, c.abs());
        for p in 0..g.k {
            let t =
                input(lhs.data[i * lhs.rs + p * lhs.cs]) * input(rhs.data[p * rhs.rs + j * rhs.cs]);
            (exact, abs) = (exact + t, abs + t.abs());
        }
        let bound = 1.01 * (g.k + 1) as f64 * 2f64.powi(-24) * abs + 1e-30;
        worst = worst.max((got[i * g.dst_rs + j] as f64 - exact).abs() / bound);
    }
    worst
}
