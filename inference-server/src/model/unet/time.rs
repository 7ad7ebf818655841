//! The timestep embedding: diffusers' sinusoidal `get_timestep_embedding` followed by the
//! `time_embedding` MLP (`linear_1` → SiLU → `linear_2`).

use crate::engine::{Device, Tensor};
use crate::model::ModelError;
use crate::model::weights::WeightSet;
use crate::nn::Linear;

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
        let x = Tensor::sinusoids(
            timesteps,
            self.dim,
            self.flip_sin_to_cos,
            self.freq_shift,
            device,
        )?;
        let h = self.linear_1.forward(&x)?.silu()?;
        Ok(self.linear_2.forward(&h)?)
    }
}
