//! Fused normalisation kernels.

use half::bf16;
use rayon::prelude::*;

use super::PAR_MIN_WORK;
use super::fastmath;
use crate::engine::op::GroupNormGeom;

/// Elements whose mean is the shift of [`mean_var`]'s one pass.
const SHIFT_SAMPLE: usize = 64;

/// Mean and biased variance of `xs` in one pass (a group of the VAE's 512×512 layers is 4 MiB,
/// beyond the caches, so each pass is a trip to memory): the sums of `x − s` and `(x − s)²`
/// around a shift `s`, the mean of the first 64 elements. Variance from raw sums cancels when
/// the mean is large against the spread; around a shift drawn from the same data the cancelled
/// part is `(mean − s)²`, a few variances at most. Sums run in f32 vector lanes over chunks of
/// 256, the chunks added in f64 (relative error about 1e-6, against 1e-5 for the norm tests).
fn mean_var(xs: &[f32]) -> (f32, f32) {
    let n = xs.len().max(1) as f64;
    let head = &xs[..xs.len().min(SHIFT_SAMPLE)];
    let shift = (head.iter().map(|&x| x as f64).sum::<f64>() / head.len().max(1) as f64) as f32;
    let (dev, sq) = fastmath::moments(xs, shift);
    let delta = dev / n;
    let var = (sq / n - delta * delta).max(0.0);
    ((shift as f64 + delta) as f32, var as f32)
}

/// Layer norm over rows of length `c`: `(x - mean) / sqrt(var + eps) * w + b`.
pub(crate) fn layer_norm(x: &[f32], c: usize, w: &[f32], b: &[f32], eps: f32) -> Vec<f32> {
    super::elementwise::map_rows(x, c, |src, dst| layer_norm_row(src, dst, w, b, eps))
}

/// [`layer_norm`] of one row `src` into `dst`.
pub(crate) fn layer_norm_row(src: &[f32], dst: &mut [f32], w: &[f32], b: &[f32], eps: f32) {
    let (mean, var) = mean_var(src);
    let inv = 1.0 / (var + eps).sqrt();
    fastmath::layer_affine(dst, src, mean, inv, w, b);
}

/// Group norm of `x` as `n × c × spatial`, `groups` dividing `c`, per-channel affine `w`, `b`,
/// then SiLU when `g.silu`.
pub(crate) fn group_norm(x: &[f32], w: &[f32], b: &[f32], g: GroupNormGeom) -> Vec<f32> {
    let GroupNormGeom {
        c,
        spatial,
        groups,
        silu: with_silu,
        ..
    } = g;
    let cpg = c / groups;
    let block = cpg * spatial;
    let mut out = vec![0f32; x.len()];
    if block == 0 {
        return out;
    }
    // One (sample, group) block is contiguous: cpg channels × spatial.
    let run = |(gi, (dst, src)): (usize, (&mut [f32], &[f32]))| {
        for (ci, scale, shift) in channel_affines(gi % groups, src, w, b, &g) {
            let range = ci * spatial..(ci + 1) * spatial;
            fastmath::affine(
                &mut dst[range.clone()],
                &src[range],
                scale,
                shift,
                with_silu,
            );
        }
    };
    if x.len() >= PAR_MIN_WORK {
        out.par_chunks_mut(block)
            .zip(x.par_chunks(block))
            .enumerate()
            .for_each(run);
    } else {
        out.chunks_mut(block)
            .zip(x.chunks(block))
            .enumerate()
            .for_each(run);
    }
    out
}

/// Per channel of group `group`, whose block of f32 values is `src`: (channel within the group,
/// scale, shift) such that the normalised, affine-mapped value is `x · scale + shift`.
fn channel_affines(
    group: usize,
    src: &[f32],
    w: &[f32],
    b: &[f32],
    g: &GroupNormGeom,
) -> impl Iterator<Item = (usize, f32, f32)> {
    let cpg = g.c / g.groups;
    let (mean, var) = mean_var(src);
    let inv = 1.0 / (var + g.eps).sqrt();
    (0..cpg).map(move |ci| {
        let ch = group * cpg + ci;
        let scale = inv * w[ch];
        (ci, scale, b[ch] - mean * scale)
    })
}

/// [`group_norm`] of bf16 activations, one (sample, group) block at a time through f32
/// scratch: the input is read and the output written once, two bytes an element, where
/// widening the whole tensor, normalising into a second f32 tensor and narrowing it back made
/// three passes over four-byte copies (measured: the VAE decoder's 29 group norms at 512×512
/// took 1.0 s in bf16 that way against 0.35 s in f32). Same arithmetic as [`group_norm`] on the
/// widened input, so the results are identical.
pub(crate) fn group_norm_bf16(x: &[bf16], w: &[f32], b: &[f32], g: GroupNormGeom) -> Vec<bf16> {
    let (spatial, cpg) = (g.spatial, g.c / g.groups);
    let block = cpg * spatial;
    let mut out = vec![bf16::ZERO; x.len()];
    if block == 0 {
        return out;
    }
    let run = |scratch: &mut Vec<f32>, (gi, (dst, src)): (usize, (&mut [bf16], &[bf16]))| {
        scratch.resize(block + spatial, 0.0);
        let (wide, row) = scratch.split_at_mut(block);
        fastmath::from_bf16(wide, src);
        for (ci, scale, shift) in channel_affines(gi % g.groups, wide, w, b, &g) {
            let range = ci * spatial..(ci + 1) * spatial;
            fastmath::affine(row, &wide[range.clone()], scale, shift, g.silu);
            fastmath::to_bf16(&mut dst[range], row);
        }
    };
    out.par_chunks_mut(block)
        .zip(x.par_chunks(block))
        .enumerate()
        .for_each_init(Vec::new, run);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::cpu::gemm_testing::values;

    #[test]
    fn bf16_group_norm_is_the_f32_one_on_the_widened_input_narrowed() {
        // Two samples, 6 channels in 3 groups, 50 positions; with and without SiLU; values
        // offset so the mean matters.
        let (n, c, spatial) = (2, 6, 50);
        let x: Vec<bf16> = values(n * c * spatial, 31)
            .iter()
            .map(|&v| bf16::from_f32(3.0 + 2.0 * v))
            .collect();
        let (w, b) = (values(c, 32), values(c, 33));
        let wide: Vec<f32> = x.iter().map(|v| v.to_f32()).collect();
        for silu in [false, true] {
            let g = GroupNormGeom {
                c,
                spatial,
                groups: 3,
                eps: 1e-5,
                silu,
            };
            let want: Vec<u16> = group_norm(&wide, &w, &b, g)
                .iter()
                .map(|&v| bf16::from_f32(v).to_bits())
                .collect();
            let got: Vec<u16> = group_norm_bf16(&x, &w, &b, g)
                .iter()
                .map(|v| v.to_bits())
                .collect();
            assert_eq!(got, want, "silu={silu}");
        }
    }
}
