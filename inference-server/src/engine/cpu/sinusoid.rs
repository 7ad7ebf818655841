//! Sinusoidal timestep embeddings on the host: the CPU backend's kernel and the reference the
//! CUDA kernel (`timestep_embedding_f32`) is checked against.

use crate::engine::op::SinusoidGeom;

/// Sinusoidal embeddings of `timesteps`, `[timesteps.len(), dim]`, exactly as diffusers'
/// `get_timestep_embedding(t, dim, flip_sin_to_cos, downscale_freq_shift=freq_shift)` with
/// `scale = 1`, `max_period = 10000`: frequency `i` is `exp(-ln(10000) · i / (dim/2 - shift))`,
/// the row is `[sin(t·f), cos(t·f)]`, swapped to `[cos, sin]` when `flip_sin_to_cos`, and an odd
/// `dim` gets one trailing zero. Every step is rounded to f32 as PyTorch does.
pub fn sinusoidal_embedding(
    timesteps: &[f32],
    dim: usize,
    flip_sin_to_cos: bool,
    freq_shift: f64,
) -> Vec<f32> {
    let half = dim / 2;
    let log_max = -(10000f64.ln() as f32);
    let denom = (half as f64 - freq_shift) as f32;
    let freqs: Vec<f32> = (0..half)
        .map(|i| ((log_max * i as f32) / denom).exp())
        .collect();
    let mut out = Vec::with_capacity(timesteps.len() * dim);
    for &t in timesteps {
        let args = freqs.iter().map(|&f| t * f);
        let (sin, cos): (Vec<f32>, Vec<f32>) = args.map(|a| (a.sin(), a.cos())).unzip();
        let (first, second) = if flip_sin_to_cos {
            (cos, sin)
        } else {
            (sin, cos)
        };
        out.extend(first);
        out.extend(second);
        if dim % 2 == 1 {
            out.push(0.0);
        }
    }
    out
}

/// [`sinusoidal_embedding`] for a backend op's geometry.
pub(crate) fn embed(timesteps: &[f32], g: SinusoidGeom) -> Vec<f32> {
    sinusoidal_embedding(timesteps, g.dim, g.flip_sin_to_cos, g.freq_shift)
}

/// The two constants the CUDA kernel derives every frequency from, rounded to f32 exactly as
/// [`sinusoidal_embedding`] rounds them: `(-ln 10000, dim/2 - shift)`.
pub(crate) fn frequency_constants(g: SinusoidGeom) -> (f32, f32) {
    (
        -(10000f64.ln() as f32),
        ((g.dim / 2) as f64 - g.freq_shift) as f32,
    )
}
