//! Winograd F(4×4, 3×3) with f32 products on the own AVX-512 GEMM, the input transform fused
//! into the GEMM's packing: each block's 36 transformed-input matrices are written once, straight
//! into the microkernel's B panels, instead of into matrices the GEMM then copies into panels.
//! The products, their order and the rounding points are those of the unfused path when that
//! runs the same AVX-512 kernels, so the results are identical to it bit for bit (test); where
//! the unfused path would hand a narrow block to the `gemm` crate, they differ by its summation
//! order only.

use rayon::prelude::*;

use super::f32gemm::{PACKED_B_NR, packed_b_len, sgemm_packed_b};
use super::gemm::Mat;
use super::winograd::{LANES, Tiling, input_lanes, packed_blocks, panel_tasks, transform_weights};
use crate::engine::op::Conv2dGeom;

/// [`super::winograd::conv2d`] with f32 products where the own AVX-512 GEMM runs
/// ([`super::f32gemm::packed_b_available`]); `None` (nothing computed) elsewhere.
pub(crate) fn conv2d(
    x: &[f32],
    weight: &[f32],
    bias: Option<&[f32]>,
    residual: Option<&[f32]>,
    g: Conv2dGeom,
) -> Option<Vec<f32>> {
    if !super::f32gemm::packed_b_available() {
        return None;
    }
    let (o, c) = (g.o, g.c);
    let u = transform_weights(weight, o, c);
    // V_ξ [c, tb] per point as B panels of 64 tiles × all c.
    let tiling = Tiling::of(&g);
    let per_point = packed_b_len(c, tiling.block);
    let input = |t0, tb, v: &mut [f32]| transform_input(x, &g, &tiling, t0, tb, v, per_point);
    // One whole GEMM per point and thread, as the unfused path runs them.
    let gemm = |xi: usize, tb: usize, vx: &[f32], mx: &mut [f32]| {
        let lhs = Mat::rows(&u[xi * o * c..][..o * c], c);
        let done = sgemm_packed_b((o, tb, c), lhs, vx, mx, tb);
        assert!(done, "checked available above");
    };
    Some(packed_blocks(
        &g, &tiling, bias, residual, per_point, input, gemm,
    ))
}

/// Writes `Bᵀ d B` of tiles `t0..t0 + tb` into `v` as B panels, `per_point` values per point:
/// panel j of point ξ holds tiles 64j.. as `[channel][tile]`. One task per panel, over all
/// channels, so each task owns its panel of every point.
#[allow(clippy::too_many_arguments)]
fn transform_input(
    x: &[f32],
    g: &Conv2dGeom,
    tiling: &Tiling,
    t0: usize,
    tb: usize,
    v: &mut [f32],
    per_point: usize,
) {
    let panel_len = g.c * PACKED_B_NR;
    let tasks = panel_tasks(v, per_point, panel_len, tb, PACKED_B_NR);
    tasks.into_par_iter().enumerate().for_each(|(j, mut dst)| {
        let first = j * PACKED_B_NR;
        let width = PACKED_B_NR.min(tb - first);
        for ci in 0..g.c {
            for l0 in (0..width).step_by(LANES) {
                let n = LANES.min(width - l0);
                let lanes = input_lanes(x, g, tiling, ci, t0 + first + l0, n);
                for (point, panel) in dst.iter_mut().enumerate() {
                    let out = &mut panel[ci * PACKED_B_NR + l0..][..LANES];
                    out.copy_from_slice(&lanes[point]);
                }
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::cpu::f32gemm::packed_b_available;
    use crate::engine::cpu::gemm::Products;
    use crate::engine::cpu::gemm_testing::values;
    use crate::engine::cpu::winograd::tests::geom;

    #[test]
    fn equals_the_unfused_f32_winograd_bit_for_bit() {
        if !packed_b_available() {
            eprintln!("note: the own AVX-512 GEMM does not run here; the fused path declines");
            let g = geom(1, 16, 16, 32, 32);
            let none = conv2d(
                &values(16 * 32 * 32, 1),
                &values(16 * 16 * 9, 2),
                None,
                None,
                g,
            );
            assert!(none.is_none());
            return;
        }
        // Partial tiles on the edges, a last block of tiles that ends inside a 64-tile panel
        // (612 tiles: 256 + 256 + 100), odd channel counts, bias and residual.
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
                super::super::winograd::unfused(&x, &wt, Some(&bias), Some(&res), g, Products::F32);
            let got = conv2d(&x, &wt, Some(&bias), Some(&res), g).expect("AVX-512 path");
            assert_eq!(got.len(), want.len());
            let same = got
                .iter()
                .zip(&want)
                .all(|(a, b)| a.to_bits() == b.to_bits());
            assert!(same, "{g:?}");
        }
    }
}
