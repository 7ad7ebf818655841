//! Fused normalisation kernels.

use rayon::prelude::*;

use super::PAR_MIN_WORK;
use super::elementwise::silu;
use crate::engine::op::GroupNormGeom;

/// Mean and biased variance of `xs`, accumulated in f64.
fn mean_var(xs: &[f32]) -> (f32, f32) {
    let n = xs.len().max(1) as f64;
    let mean = xs.iter().map(|&x| x as f64).sum::<f64>() / n;
    let var = xs.iter().map(|&x| (x as f64 - mean).powi(2)).sum::<f64>() / n;
    (mean as f32, var as f32)
}

/// Layer norm over rows of length `c`: `(x - mean) / sqrt(var + eps) * w + b`.
pub(crate) fn layer_norm(x: &[f32], c: usize, w: &[f32], b: &[f32], eps: f32) -> Vec<f32> {
    super::elementwise::map_rows(x, c, |src, dst| {
        let (mean, var) = mean_var(src);
        let inv = 1.0 / (var + eps).sqrt();
        for (((d, &s), &wi), &bi) in dst.iter_mut().zip(src).zip(w).zip(b) {
            *d = (s - mean) * inv * wi + bi;
        }
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
            for (d, &s) in dst[range.clone()].iter_mut().zip(&src[range]) {
                let y = s * scale + shift;
                *d = if with_silu { silu(y) } else { y };
            }
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
