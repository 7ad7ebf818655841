//! Attention with bf16 products on AVX-512 BF16, computed transposed: `Sᵀ = K · Qᵀ` and
//! `Oᵀ += Vᵀ · Pᵀ`, queries across the columns.
//!
//! Why transposed: through the general GEMM, every step of the online softmax re-packed the key
//! block (once per query tile) and packed the probabilities `P` as an A operand, which scatters
//! one u32 per pair (measured on the SD 1.5 UNet at batch 2: packing took a sixth of the bf16
//! forward, most of it in attention, and the 4096-token attention ran no faster in bf16 than in
//! f32). Here K and Vᵀ are packed once per head and Qᵀ once per query tile; the softmax runs down
//! the columns of `Sᵀ`, sixteen queries to a vector, and writes `P` straight into the packed B
//! layout (two keys' rows converted and interleaved per store), so nothing is packed per step.
//!
//! The products are the general path's: Q·scale·log2 e, K, the probabilities and V rounded to
//! bf16, sums in f32, the same key blocks for the online maximum; only the f32 summation order
//! differs.

use super::{INTERLEAVE, K6X64, Micro, Tile, bf16_pairs, pack};
use crate::engine::cpu::fastmath::exp2;
use crate::engine::cpu::gemm::Src;
use crate::engine::op::AttnGeom;
use rayon::prelude::*;
use std::arch::x86_64::*;

/// The microkernel: 6 keys (or head dims) × 64 queries.
const U: Micro = K6X64;
/// Queries per tile: two 64-column B panels.
const BQ: usize = 128;
/// Keys per step: a multiple of the kernel's 6 rows (so a step starts on a packed K panel) and
/// of 2 (so it starts on a packed key pair of Vᵀ); `Sᵀ` is then 132 KiB, in L2.
const BK: usize = 258;

/// `softmax(scale · q kᵀ) v` for `q [bh, lq, d]`, `k`, `v [bh, lk, d]` with bf16 products (no
/// causal mask: the caller takes the general path for that).
///
/// # Safety
/// The CPU has avx512f, avx512bw and avx512bf16; `q`, `k`, `v` hold `g`'s shapes.
#[target_feature(enable = "avx512f,avx512bw,avx512bf16")]
pub(in crate::engine::cpu) unsafe fn attention(
    q: &[f32],
    k: &[f32],
    v: &[f32],
    g: AttnGeom,
) -> Vec<f32> {
    let d = g.d;
    let mut out = vec![0f32; g.bh * g.lq * d];
    if out.is_empty() || g.lk == 0 {
        return out;
    }
    let (dp, lkp) = (d.div_ceil(2), g.lk.div_ceil(2));
    out.par_chunks_mut(g.lq * d)
        .enumerate()
        .for_each(|(b, out_b)| {
            let kb = &k[b * g.lk * d..(b + 1) * g.lk * d];
            let vb = &v[b * g.lk * d..(b + 1) * g.lk * d];
            // K as A panels (6 keys × d/2 pairs each) and Vᵀ as A panels (6 dims × lk/2 pairs).
            let k_src = Src::new(kb, d, 1, g.lk, d);
            let mut kp = vec![0u32; g.lk.div_ceil(U.mr) * dp * U.mr];
            for (t, panel) in kp.chunks_mut(dp * U.mr).enumerate() {
                pack(k_src, t * U.mr, U.mr, 0, dp, panel);
            }
            let v_src = Src::new(vb, 1, d, d, g.lk);
            let mut vtp = vec![0u32; d.div_ceil(U.mr) * lkp * U.mr];
            for (t, panel) in vtp.chunks_mut(lkp * U.mr).enumerate() {
                pack(v_src, t * U.mr, U.mr, 0, lkp, panel);
            }
            let qb = &q[b * g.lq * d..(b + 1) * g.lq * d];
            let head = Head {
                kp: &kp,
                vtp: &vtp,
                g,
            };
            out_b.par_chunks_mut(BQ * d).enumerate().for_each(|(t, o)| {
                // The closure inherits this function's target features, which the caller
                // vouches for.
                head.tile(&qb[t * BQ * d..][..o.len()], o)
            });
        });
    out
}

/// One head's packed keys and transposed values.
struct Head<'a> {
    /// K as A panels: panel t holds keys 6t.. as `[pair of dims][key]`.
    kp: &'a [u32],
    /// Vᵀ as A panels: panel t holds head dims 6t.. as `[pair of keys][dim]`.
    vtp: &'a [u32],
    g: AttnGeom,
}

impl Head<'_> {
    /// The output rows `o [bq, d]` of the queries `q [bq, d]` (bq ≤ [`BQ`]).
    #[target_feature(enable = "avx512f,avx512bw,avx512bf16")]
    fn tile(&self, q: &[f32], o: &mut [f32]) {
        let (g, d) = (self.g, self.g.d);
        let (dp, lkp, bq) = (d.div_ceil(2), g.lk.div_ceil(2), q.len() / d);
        // Columns of the transposed tiles: whole vectors, the lanes past bq unused.
        let ld = bq.next_multiple_of(16);
        let panels = bq.div_ceil(U.nr);
        // Qᵀ as B panels (pairs of dims × 64 queries), scaled so the scores come out in base 2.
        let qs: Vec<f32> = q
            .iter()
            .map(|&x| x * g.scale * std::f32::consts::LOG2_E)
            .collect();
        let q_src = Src::new(&qs, d, 1, bq, d);
        let mut qtp = vec![0u32; panels * dp * U.nr];
        for (j, panel) in qtp.chunks_mut(dp * U.nr).enumerate() {
            pack(q_src, j * U.nr, U.nr, 0, dp, panel);
        }
        let mut st = vec![0f32; BK * ld];
        let mut ot = vec![0f32; d * ld];
        let mut pp = vec![0u32; panels * BK.div_ceil(2) * U.nr];
        let mut m = vec![f32::NEG_INFINITY; ld];
        let mut l = vec![0f32; ld];
        for k0 in (0..g.lk).step_by(BK) {
            let bk = BK.min(g.lk - k0);
            let bkp = bk.div_ceil(2);
            // Sᵀ[key][query] for keys k0.. (each A panel of K against each B panel of Qᵀ).
            for (t, i) in (0..bk).step_by(U.mr).enumerate() {
                let a = &self.kp[(k0 / U.mr + t) * dp * U.mr..];
                for j in 0..panels {
                    let tile = Tile {
                        c: st[i * ld + j * U.nr..].as_mut_ptr(),
                        rs: ld,
                        mr: (bk - i).min(U.mr),
                        nr: (bq - j * U.nr).min(U.nr),
                        load: false,
                        out16: std::ptr::null_mut(),
                        bias: std::ptr::null(),
                    };
                    // SAFETY: the tile's rows i.. < bk ≤ BK and columns ..bq < ld lie in `st`,
                    // owned here; the panels hold dp pairs; the CPU features are the caller's.
                    unsafe { (U.kernel)(dp, a, &qtp[j * dp * U.nr..], tile) };
                }
            }
            softmax_step(&st[..bk * ld], ld, &mut m, &mut l, &mut ot, &mut pp, bkp);
            // Oᵀ[dim][query] += Vᵀ[dim][keys k0..] · P[keys][query].
            for (t, i) in (0..d).step_by(U.mr).enumerate() {
                let a = &self.vtp[t * lkp * U.mr + (k0 / 2) * U.mr..];
                for j in 0..panels {
                    let tile = Tile {
                        c: ot[i * ld + j * U.nr..].as_mut_ptr(),
                        rs: ld,
                        mr: (d - i).min(U.mr),
                        nr: (bq - j * U.nr).min(U.nr),
                        load: true,
                        out16: std::ptr::null_mut(),
                        bias: std::ptr::null(),
                    };
                    // SAFETY: rows i.. < d and columns ..bq < ld lie in `ot`, owned here; the
                    // A panel has lkp − k0/2 ≥ bkp pairs left, the B panel bkp.
                    unsafe { (U.kernel)(bkp, a, &pp[j * bkp * U.nr..], tile) };
                }
            }
        }
        for (i, row) in o.chunks_mut(d).enumerate() {
            let inv = if l[i] > 0.0 { 1.0 / l[i] } else { 0.0 };
            for (t, x) in row.iter_mut().enumerate() {
                *x = ot[t * ld + i] * inv;
            }
        }
    }
}

/// `2^x` (x ≤ 0 after the max is subtracted) to the precision a bf16 probability keeps: the
/// degree-4 Taylor polynomial on the fraction |f| ≤ 1/2, fused multiply-adds, relative error
/// below 1e-4 (6e-5 measured at |f| = 1/2) against bf16's rounding step of 3.9e-3 (the f32 softmax uses degree 6). Below
/// −126 it gives about 2^-126 instead of a subnormal, zero beside the row's maximum term of 1.
#[inline(always)]
fn exp2_bf16(x: f32) -> f32 {
    /// `1.5 · 2^23`: adding it rounds to an integer in the low mantissa bits.
    const MAGIC: f32 = 12_582_912.0;
    const C: [f32; 4] = [
        std::f32::consts::LN_2,
        0.240_226_5,
        0.055_504_11,
        0.009_618_129,
    ];
    let x = x.max(-126.0);
    let t = x + MAGIC;
    let k = t - MAGIC;
    let ki = (t.to_bits() as i32).wrapping_sub(MAGIC.to_bits() as i32);
    let f = x - k;
    let p = f.mul_add(f.mul_add(f.mul_add(C[3], C[2]), C[1]), C[0]);
    f.mul_add(p, 1.0) * f32::from_bits(((ki + 127) << 23) as u32)
}

/// One online-softmax step down the columns of `st [bk, ld]` (scores in base 2): updates the
/// running maximum `m` and sum `l` per query, rescales `ot [d, ld]` where the maximum moved, and
/// writes `2^(s − m)` rounded to bf16 into `pp` as B panels of 64 queries × `bkp` key pairs.
#[target_feature(enable = "avx512f,avx512bw,avx512bf16")]
fn softmax_step(
    st: &[f32],
    ld: usize,
    m: &mut [f32],
    l: &mut [f32],
    ot: &mut [f32],
    pp: &mut [u32],
    bkp: usize,
) {
    let bk = st.len() / ld;
    // SAFETY: [u16; 32] and __m512i have the same size; any bits are valid.
    let idx: __m512i = unsafe { std::mem::transmute(INTERLEAVE) };
    for c in (0..ld).step_by(16) {
        let col = |row: usize| -> [f32; 16] { st[row * ld + c..][..16].try_into().expect("16") };
        let mut mx = [f32::NEG_INFINITY; 16];
        for i in 0..bk {
            let s = col(i);
            for t in 0..16 {
                mx[t] = if s[t] > mx[t] { s[t] } else { mx[t] };
            }
        }
        let new_m: [f32; 16] = std::array::from_fn(|t| m[c + t].max(mx[t]));
        let corr: [f32; 16] = std::array::from_fn(|t| match m[c + t] == f32::NEG_INFINITY {
            true => 0.0,
            false => exp2(m[c + t] - new_m[t]),
        });
        let mut sum = [0f32; 16];
        let (panel, lane) = (c / U.nr, c % U.nr);
        for p in 0..bkp {
            let e0: [f32; 16] = {
                let s = col(2 * p);
                std::array::from_fn(|t| exp2_bf16(s[t] - new_m[t]))
            };
            let e1: [f32; 16] = match 2 * p + 1 < bk {
                true => {
                    let s = col(2 * p + 1);
                    std::array::from_fn(|t| exp2_bf16(s[t] - new_m[t]))
                }
                false => [0.0; 16],
            };
            for t in 0..16 {
                sum[t] += e0[t] + e1[t];
            }
            // SAFETY: plain register loads of 16-lane arrays; [u32; 16] and __m512i share a size.
            let pairs: [u32; 16] = unsafe {
                let (lo, hi) = (_mm512_loadu_ps(e0.as_ptr()), _mm512_loadu_ps(e1.as_ptr()));
                let ab: __m512i = std::mem::transmute(bf16_pairs(lo, hi));
                std::mem::transmute(_mm512_permutexvar_epi16(idx, ab))
            };
            pp[(panel * bkp + p) * U.nr + lane..][..16].copy_from_slice(&pairs);
        }
        for t in 0..16 {
            l[c + t] = l[c + t] * corr[t] + sum[t];
            m[c + t] = new_m[t];
        }
        if corr.iter().any(|&x| x != 1.0) {
            for row in ot.chunks_mut(ld) {
                for t in 0..16 {
                    row[c + t] *= corr[t];
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::cpu::attention::tiled as general;
    use crate::engine::cpu::bf16gemm::cpu_has_avx512bf16;
    use crate::engine::cpu::gemm::Products;
    use crate::engine::cpu::gemm_testing::values;

    #[test]
    fn the_coarse_exp2_is_within_1e_4_relative() {
        let mut x = -30.0f32;
        while x <= 0.0 {
            let (got, want) = (exp2_bf16(x) as f64, (x as f64).exp2());
            assert!((got - want).abs() <= 1e-4 * want, "2^{x}: {got} vs {want}");
            x += 0.001_37;
        }
    }

    #[test]
    fn matches_the_general_bf16_path_and_the_f64_reference() {
        if !cpu_has_avx512bf16() {
            eprintln!("note: this CPU lacks avx512bf16; the transposed attention is not run");
            return;
        }
        // Odd key counts (a half key pair), partial query tiles and key steps, d not a multiple
        // of the kernel's 6 rows, and SD's head sizes.
        for (bh, lq, lk, d) in [
            (2, 37, 53, 24),
            (1, 130, 517, 40),
            (3, 64, 259, 7),
            (1, 200, 300, 80),
            (2, 5, 3, 160),
        ] {
            let q = values(bh * lq * d, 1 + lq as u64);
            let k = values(bh * lk * d, 2 + lk as u64);
            let v = values(bh * lk * d, 3 + d as u64);
            // Peaked scores, so the online rescaling across key steps matters.
            let g = AttnGeom {
                bh,
                lq,
                lk,
                d,
                scale: 4.0 / (d as f32).sqrt(),
                causal: false,
            };
            // SAFETY: the CPU has the features (checked above); the inputs have g's shapes.
            let got = unsafe { attention(&q, &k, &v, g) };
            let want = general(&q, &k, &v, g, Products::Bf16);
            let reference = reference(&q, &k, &v, g);
            let (mut to_general, mut to_reference) = (0f64, 0f64);
            for ((&x, &y), &r) in got.iter().zip(&want).zip(&reference) {
                to_general = to_general.max((x as f64 - y as f64).abs());
                to_reference = to_reference.max((x as f64 - r).abs());
            }
            // The general path rounds the same operands but steps through 256 keys, not 258, so
            // its probabilities are rounded to bf16 at other offsets: within a few bf16 steps.
            assert!(
                to_general < 2e-3,
                "{:?}: {to_general} from the general path",
                (bh, lq, lk, d)
            );
            // bf16 operands (8 significant bits) against exact maths, outputs of size ≤ 1.
            assert!(
                to_reference < 1e-2,
                "{:?}: {to_reference} from f64",
                (bh, lq, lk, d)
            );
        }
    }

    /// Attention in f64 on the unrounded inputs.
    fn reference(q: &[f32], k: &[f32], v: &[f32], g: AttnGeom) -> Vec<f64> {
        let d = g.d;
        let mut out = vec![0f64; g.bh * g.lq * d];
        for b in 0..g.bh {
            for i in 0..g.lq {
                let qi = &q[(b * g.lq + i) * d..][..d];
                let s: Vec<f64> = (0..g.lk)
                    .map(|j| {
                        let kj = &k[(b * g.lk + j) * d..][..d];
                        let dot: f64 = qi.iter().zip(kj).map(|(&x, &y)| x as f64 * y as f64).sum();
                        dot * g.scale as f64
                    })
                    .collect();
                let mx = s.iter().cloned().fold(f64::MIN, f64::max);
                let e: Vec<f64> = s.iter().map(|x| (x - mx).exp()).collect();
                let sum: f64 = e.iter().sum();
                for t in 0..d {
                    let acc: f64 = (0..g.lk)
                        .map(|j| e[j] * v[(b * g.lk + j) * d + t] as f64)
                        .sum();
                    out[(b * g.lq + i) * d + t] = acc / sum;
                }
            }
        }
        out
    }
}

/// Times the transposed attention on the UNet's largest shape against the general bf16 path
/// (`#[ignore]`d: run it in a release build).
#[cfg(test)]
mod timing {
    use super::*;
    use crate::engine::cpu::attention::tiled;
    use crate::engine::cpu::bf16gemm::cpu_has_avx512bf16;
    use crate::engine::cpu::gemm::Products;
    use crate::engine::cpu::gemm_testing::values;
    use std::time::Instant;

    #[test]
    #[ignore = "timing: cargo test --release -p inference-server --lib attention::timing -- --ignored --nocapture"]
    fn sd_self_attention() {
        if !cpu_has_avx512bf16() {
            return;
        }
        // SD 1.5's 64×64 self-attention at batch 2: 16 heads of 4096 tokens, head dim 40.
        let g = AttnGeom {
            bh: 16,
            lq: 4096,
            lk: 4096,
            d: 40,
            scale: 40f32.powf(-0.5),
            causal: false,
        };
        let n = g.bh * g.lq * g.d;
        let (q, k, v) = (values(n, 1), values(n, 2), values(n, 3));
        let flop = 4.0 * (g.bh * g.lq * g.lk * g.d) as f64;
        let best = |f: &dyn Fn() -> Vec<f32>| {
            (0..3)
                .map(|_| {
                    let t = Instant::now();
                    std::hint::black_box(f());
                    t.elapsed().as_secs_f64()
                })
                .fold(f64::INFINITY, f64::min)
        };
        // SAFETY: the CPU has the features (checked above); the inputs have g's shapes.
        let ours = best(&|| unsafe { attention(&q, &k, &v, g) });
        let general = best(&|| tiled(&q, &k, &v, g, Products::Bf16));
        let f32s = best(&|| tiled(&q, &k, &v, g, Products::F32));
        for (what, s) in [
            ("transposed bf16", ours),
            ("general bf16", general),
            ("f32", f32s),
        ] {
            eprintln!("{what:16} {s:.3} s  {:.0} GFLOP/s", flop / s / 1e9);
        }
    }
}
