//! Fused normalisation kernels.

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
    super::elementwise::map_rows(x, c, |src, dst| {
        let (mean, var) = mean_var(src);
        let inv = 1.0 / (var + eps).sqrt();
        fastmath::layer_affine(dst, src, mean, inv, w, b);
    })
}

/// Group norm of `x` as `n × c × spatial`, `groups` dividing `c`, per-channel affine `w`, `b`,
/// then SiLU when `g.silu`.
pub(crate) fn group_norm(x: &[f32], w: &[f32], b: &[f32], g: GroupNormGeom) -> Vec<f32> {
    let GroupNormGeom {
        c,
        spatial,
        groups,
        eps,
        silu: with_silu,
    } = g;
    let cpg = c / groups;
    let block = cpg * spatial;
    let mut out = vec![0f32; x.len()];
    if block == 0 {
        return out;
    }
    // One (sample, group) block is contiguous: cpg channels × spatial.
    let run = |(gi, (dst, src)): (usize, (&mut [f32], &[f32]))| {
        let g = gi % groups;
        let (mean, var) = mean_var(src);
        let inv = 1.0 / (var + eps).sqrt();
        for ci in 0..cpg {
            let ch = g * cpg + ci;
            let scale = inv * w[ch];
            let shift = b[ch] - mean * scale;
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
