//! Winograd F(4×4, 3×3) with bf16 products on AVX-512 BF16: the same transforms as
//! [`super::winograd`], but the transformed weights are packed into the GEMM's panel layout once
//! per call and the input transform writes its values there directly, as bf16 pairs.
//!
//! Why: through the general bf16 GEMM, each block of tiles packed its 36 transformed-input
//! matrices from f32 (a second pass over them) and re-packed all 36 transformed-weight
//! matrices (measured on the VAE decoder at 512×512, 128 channels: 64 blocks a call, packing a
//! tenth of the bf16 decode). The products, their order and the rounding points are the general
//! path's, so the results are identical to it bit for bit.

use rayon::prelude::*;

#[cfg(not(target_arch = "x86_64"))]
use super::bf16gemm::bf16_bits;
use super::bf16gemm::{PACKED_MR, PACKED_NR, pack_panels, sgemm_bf16_packed};
use super::gemm::Mat;
use super::winograd::{
    Elem, LANES, Lane, POINTS, Tiling, input_lanes, packed_blocks, panel_tasks, transform_weights,
};
use crate::engine::op::Conv2dGeom;

/// [`super::winograd::conv2d`] with bf16 products, or `None` (nothing computed) where the CPU
/// lacks the AVX-512 BF16 path. `weight [o, c, 3, 3]` in f32; `g` one that
/// [`super::winograd::applies`] accepts.
/// The input, residual and output may each be f32 or bf16 ([`Elem`]): bf16 activations are
/// read and written in place of f32 copies of them.
pub(crate) fn conv2d<X: Elem, R: Elem, O: Elem>(
    x: &[X],
    weight: &[f32],
    bias: Option<&[f32]>,
    residual: Option<&[R]>,
    g: Conv2dGeom,
) -> Option<Vec<O>> {
    let (o, c) = (g.o, g.c);
    // U_ξ [o, c] as A panels, one packed matrix per point.
    let u = transform_weights(weight, o, c);
    let mut packed_u = Vec::with_capacity(POINTS);
    for point in u.chunks(o * c) {
        let mut panels = Vec::new();
        if !pack_panels(Mat::rows(point, c), o, c, PACKED_MR, &mut panels) {
            return None;
        }
        packed_u.push(panels);
    }
    drop(u);
    // V_ξ [c, tb] as B panels: per point, ⌈tb / 64⌉ panels of ⌈c / 2⌉ channel pairs × 64
    // tiles.
    let tiling = Tiling::of(&g);
    let per_point = tiling.block.div_ceil(PACKED_NR) * c.div_ceil(2) * PACKED_NR;
    let input = |t0, tb, v: &mut [u32]| transform_input(x, &g, &tiling, t0, tb, v, per_point);
    let packed_u = &packed_u;
    let gemm = |xi: usize, tb: usize, vx: &[u32], mx: &mut [f32]| {
        let done = sgemm_bf16_packed(o, tb, c, &packed_u[xi], vx, mx, tb);
        assert!(done, "the bf16 path ran for the weights, so it runs here");
    };
    Some(packed_blocks(
        &g, &tiling, bias, residual, per_point, input, gemm,
    ))
}

/// Writes `Bᵀ d B` of tiles `t0..t0 + tb` into `v` as B panels, `per_point` u32 per point:
/// panel j of point ξ holds tiles 64j.. as `[channel pair][tile]`, each u32 the bf16 of the
/// even channel (low half) and the odd one (high half). One task per panel, over all channels.
#[allow(clippy::too_many_arguments)]
fn transform_input<X: Elem>(
    x: &[X],
    g: &Conv2dGeom,
    tiling: &Tiling,
    t0: usize,
    tb: usize,
    v: &mut [u32],
    per_point: usize,
) {
    let pairs = g.c.div_ceil(2);
    let panel_len = pairs * PACKED_NR;
    // For panel j, its slice of each point's matrix.
    let tasks = panel_tasks(v, per_point, panel_len, tb, PACKED_NR);
    tasks.into_par_iter().enumerate().for_each(|(j, mut dst)| {
        let first = j * PACKED_NR;
        let width = PACKED_NR.min(tb - first);
        for pair in 0..pairs {
            for l0 in (0..width).step_by(LANES) {
                let n = LANES.min(width - l0);
                let t = t0 + first + l0;
                let even = input_lanes(x, g, tiling, 2 * pair, t, n);
                let odd = match 2 * pair + 1 < g.c {
                    true => input_lanes(x, g, tiling, 2 * pair + 1, t, n),
                    false => [[0.0; LANES]; POINTS],
                };
                for (point, panel) in dst.iter_mut().enumerate() {
                    let out = &mut panel[pair * PACKED_NR + l0..][..LANES];
                    #[cfg(target_arch = "x86_64")]
                    // SAFETY: this path runs only where `bf16_native` holds (`conv2d` returns
                    // before any transform otherwise), so the CPU has the AVX-512 BF16 features.
                    out.copy_from_slice(&unsafe { round_pairs(&even[point], &odd[point]) });
                    #[cfg(not(target_arch = "x86_64"))]
                    for (l, w) in out.iter_mut().enumerate() {
                        *w = bf16_bits(even[point][l]) | bf16_bits(odd[point][l]) << 16;
                    }
                }
            }
        }
    });
}

/// `even` and `odd` rounded to bf16 and paired, lane l as `even[l]` (low half) and `odd[l]`
/// (high half): one conversion and one permute, where per lane it took two scalar roundings
/// (a fifth of the input transform on the VAE's 128-channel layers). The instruction's
/// rounding is the GEMM's own (`vcvtne2ps2bf16` packs its operands): to nearest even, and
/// subnormals to zero, which the GEMM's `vdpbf16ps` would treat as zero anyway.
///
/// # Safety
/// The CPU has avx512f, avx512bw, avx512vl and avx512bf16.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512bf16")]
unsafe fn round_pairs(even: &Lane, odd: &Lane) -> [u32; LANES] {
    use std::arch::x86_64::*;
    // bf16 lane 2l ← even l (0..8), 2l + 1 ← odd l (8..16).
    const IDX: [u16; 16] = [0, 8, 1, 9, 2, 10, 3, 11, 4, 12, 5, 13, 6, 14, 7, 15];
    // SAFETY: 8-lane loads of the two rows; the results are plain bits of equal size.
    unsafe {
        let e = _mm512_castps256_ps512(_mm256_loadu_ps(even.as_ptr()));
        let v = _mm512_insertf32x8(e, _mm256_loadu_ps(odd.as_ptr()), 1);
        let h: __m256i = std::mem::transmute(_mm512_cvtneps_pbh(v));
        let idx = _mm256_loadu_si256(IDX.as_ptr().cast());
        std::mem::transmute(_mm256_permutexvar_epi16(idx, h))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::cpu::bf16gemm::bf16_native;
    use crate::engine::cpu::gemm::Products;
    use crate::engine::cpu::gemm_testing::values;
    use crate::engine::cpu::winograd::tests::geom;
    use half::bf16;

    #[test]
    fn equals_the_general_bf16_winograd_bit_for_bit() {
        if !bf16_native() {
            eprintln!("note: no native bf16 path here; the packed Winograd declines");
            let g = geom(1, 16, 16, 32, 32);
            let x = values(16 * 32 * 32, 1);
            let none: Option<Vec<f32>> =
                conv2d::<f32, f32, f32>(&x, &values(16 * 16 * 9, 2), None, None, g);
            assert!(none.is_none());
            return;
        }
        // Partial tiles on the edges, an odd channel count (a half pair), a last block of tiles
        // that ends inside a 64-tile panel (612 tiles: 256 + 256 + 100), bias and residual.
        for (n, c, o, h, w) in [
            (2, 16, 24, 66, 70),
            (1, 17, 20, 37, 33),
            (1, 32, 16, 32, 32),
        ] {
            let g = geom(n, c, o, h, w);
            let x = values(n * c * h * w, 3);
            let wt = values(o * c * 9, 4);
            let bias = values(o, 5);
            let res = values(n * o * h * w, 6);
            let want =
                super::super::winograd::conv2d(&x, &wt, Some(&bias), Some(&res), g, Products::Bf16);
            let got: Vec<f32> = conv2d(&x, &wt, Some(&bias), Some(&res), g).expect("native bf16");
            assert_eq!(got.len(), want.len());
            let same = got
                .iter()
                .zip(&want)
                .all(|(a, b)| a.to_bits() == b.to_bits());
            assert!(same, "{g:?}");
            // bf16 activations in and out: the f32 path on the widened input and residual,
            // rounded once at the end.
            let (xb, rb) = (to_bf16(&x), to_bf16(&res));
            let (xw, rw) = (widen(&xb), widen(&rb));
            let want: Vec<f32> = conv2d(&xw, &wt, Some(&bias), Some(&rw), g).expect("native bf16");
            let got: Vec<bf16> = conv2d(&xb, &wt, Some(&bias), Some(&rb), g).expect("native");
            let same = got.iter().zip(&want).all(|(a, b)| *a == bf16::from_f32(*b));
            assert!(same, "{g:?}, bf16 activations");
        }
    }

    fn to_bf16(x: &[f32]) -> Vec<bf16> {
        x.iter().map(|&v| bf16::from_f32(v)).collect()
    }

    fn widen(x: &[bf16]) -> Vec<f32> {
        x.iter().map(|v| v.to_f32()).collect()
    }
}
