//! The timestep embedding: diffusers' sinusoidal `get_timestep_embedding` followed by the
//! `time_embedding` MLP (`linear_1` → SiLU → `linear_2`).

use crate::engine::{Device, Tensor};
use crate::model::ModelError;
use crate::model::weights::WeightSet;
use crate::nn::Linear;

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

/// `time_proj` + `time_embedding` of a UNet: timesteps to the `[B, 4·C0]` vector every resnet
/// block receives.
#[derive(Debug)]
pub struct TimestepEmbedding {
    dim: usize,
    flip_sin_to_cos: bool,
    freq_shift: f64,
    linear_1: Linear,
    linear_2: Linear,
}

impl TimestepEmbedding {
    /// Loads `time_embedding.linear_1` (`dim → temb`) and `time_embedding.linear_2`.
    pub fn load(
        weights: &WeightSet,
        dim: usize,
        temb: usize,
        flip_sin_to_cos: bool,
        freq_shift: f64,
        device: &Device,
    ) -> Result<TimestepEmbedding, ModelError> {
        Ok(TimestepEmbedding {
            dim,
            flip_sin_to_cos,
            freq_shift,
            linear_1: Linear::load(weights, "time_embedding.linear_1", dim, temb, true, device)?,
            linear_2: Linear::load(weights, "time_embedding.linear_2", temb, temb, true, device)?,
        })
    }

    /// The embedding of each timestep, `[timesteps.len(), temb]`.
    pub fn forward(&self, timesteps: &[f32], device: &Device) -> Result<Tensor, ModelError> {
        let sin = sinusoidal_embedding(timesteps, self.dim, self.flip_sin_to_cos, self.freq_shift);
        let x = Tensor::from_vec(sin, (timesteps.len(), self.dim), device)?;
        let h = self.linear_1.forward(&x)?.silu()?;
        Ok(self.linear_2.forward(&h)?)
    }
}
