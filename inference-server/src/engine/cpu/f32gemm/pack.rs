//! Packing for the AVX-512 path: copies of A and B blocks into the panel layouts the
//! microkernels read (`out[q * w + r]`: panel row r, step q along k), zero-padded.

use std::arch::x86_64::*;

pub(super) use crate::engine::cpu::gemm::Src;

/// Packs panel rows `r0..r0 + w` and k `q0..q0 + kc` of `s` into `out[q * w + r]`, zero past
/// `s.rows`. Needs `r0 < s.rows` and `q0 + kc ≤ s.k` (indexing panics otherwise).
#[target_feature(enable = "avx512f")]
pub(super) fn pack(s: Src<'_>, r0: usize, w: usize, q0: usize, kc: usize, out: &mut [f32]) {
    debug_assert!(r0 < s.rows && q0 + kc <= s.k, "pack: outside the view");
    let out = &mut out[..kc * w];
    let rows = (s.rows - r0).min(w);
    if s.sr == 1 {
        // Each k contiguous across the panel: row copies.
        for (q, o) in out.chunks_exact_mut(w).enumerate() {
            let start = (q0 + q) * s.sq + r0;
            o[..rows].copy_from_slice(&s.data[start..start + rows]);
            o[rows..].fill(0.0);
        }
    } else if s.sq == 1 {
        // Each panel row contiguous along k: 16 × 16 blocks transposed in registers.
        for rb in (0..w).step_by(16) {
            let (live, lanes) = (rows.saturating_sub(rb).min(16), (w - rb).min(16));
            for qb in (0..kc).step_by(16) {
                let nq = (kc - qb).min(16);
                let mut v = [_mm512_setzero_ps(); 16];
                for (r, x) in v[..live].iter_mut().enumerate() {
                    let start = (r0 + rb + r) * s.sr + q0 + qb;
                    *x = load16(&s.data[start..start + nq]);
                }
                transpose16(&mut v);
                for (q, &x) in v[..nq].iter().enumerate() {
                    store16(&mut out[(qb + q) * w + rb..][..lanes], x);
                }
            }
        }
    } else {
        for (q, o) in out.chunks_exact_mut(w).enumerate() {
            for (r, x) in o[..rows].iter_mut().enumerate() {
                *x = s.data[(r0 + r) * s.sr + (q0 + q) * s.sq];
            }
            o[rows..].fill(0.0);
        }
    }
}

/// Lane mask of the first `n.min(16)` lanes.
pub(super) fn mask(n: usize) -> __mmask16 {
    if n >= 16 { 0xffff } else { (1u16 << n) - 1 }
}

/// The first `x.len().min(16)` values of `x` in a vector, zeros after.
#[target_feature(enable = "avx512f")]
fn load16(x: &[f32]) -> __m512 {
    // SAFETY: the mask enables only lanes below x.len(), which lie inside `x`.
    unsafe { _mm512_maskz_loadu_ps(mask(x.len()), x.as_ptr()) }
}

/// Stores the first `out.len().min(16)` lanes of `v` into `out`.
#[target_feature(enable = "avx512f")]
fn store16(out: &mut [f32], v: __m512) {
    // SAFETY: the mask enables only lanes below out.len(), which lie inside `out`.
    unsafe { _mm512_mask_storeu_ps(out.as_mut_ptr(), mask(out.len()), v) }
}

/// `vpermt2ps` indices for step `b` of [`transpose16`]: for the vector of the pair whose index
/// has bit b clear (`hi` false) or set, taking lanes from the pair (`lo` lanes 0..16, `hi` 16..).
const fn swap_bit(b: usize, hi: bool) -> [u32; 16] {
    let (mut idx, bit, mut q) = ([0u32; 16], 1 << b, 0);
    while q < 16 {
        idx[q] = match (hi, q & bit != 0) {
            (false, false) => q,
            (false, true) => 16 + (q ^ bit),
            (true, false) => q | bit,
            (true, true) => 16 + q,
        } as u32;
        q += 1;
    }
    idx
}

/// The indices of the four steps of [`transpose16`], for the lower and upper vector of a pair.
const SWAPS: [[[u32; 16]; 2]; 4] = {
    let mut s = [[[0; 16]; 2]; 4];
    let mut b = 0;
    while b < 4 {
        s[b] = [swap_bit(b, false), swap_bit(b, true)];
        b += 1;
    }
    s
};

/// Transposes 16 vectors in place: afterwards `v[q]` lane `r` is the old `v[r]` lane `q`. Step
/// b swaps bit b of the vector index with bit b of the lane index (two `vpermt2ps` per pair);
/// the steps are written out so that LLVM unrolls them and keeps `v` in registers.
#[target_feature(enable = "avx512f")]
fn transpose16(v: &mut [__m512; 16]) {
    macro_rules! step {
        ($b:literal) => {{
            // SAFETY: [u32; 16] and __m512i have the same size; any bits are valid for both.
            let (lo, hi) = unsafe {
                use std::mem::transmute;
                let [lo, hi] = SWAPS[$b];
                (
                    transmute::<[u32; 16], __m512i>(lo),
                    transmute::<[u32; 16], __m512i>(hi),
                )
            };
            for r in 0..16 {
                if r & (1 << $b) == 0 {
                    let (x, y) = (v[r], v[r | 1 << $b]);
                    v[r] = _mm512_permutex2var_ps(x, lo, y);
                    v[r | 1 << $b] = _mm512_permutex2var_ps(x, hi, y);
                }
            }
        }};
    }
    step!(0);
    step!(1);
    step!(2);
    step!(3);
}
