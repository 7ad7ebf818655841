//! Layer normalization over the last dimension, fused in the engine.

use crate::engine::{Device, Tensor};
use crate::model::ModelError;
use crate::model::weights::WeightSet;

use super::load_tensor;

/// `LayerNorm(dim)` with learned scale and shift, as `torch.nn.LayerNorm`.
#[derive(Debug, Clone)]
pub struct LayerNorm {
    weight: Tensor,
    bias: Tensor,
    eps: f32,
}

impl LayerNorm {
    /// Loads `{prefix}.weight` and `{prefix}.bias`, both `[dim]`.
    pub fn load(
        weights: &WeightSet,
        prefix: &str,
        dim: usize,
        eps: f32,
        device: &Device,
    ) -> Result<LayerNorm, ModelError> {
        Ok(LayerNorm {
            weight: load_tensor(weights, &format!("{prefix}.weight"), &[dim], device)?,
            bias: load_tensor(weights, &format!("{prefix}.bias"), &[dim], device)?,
            eps,
        })
    }

    /// Normalizes the last dimension of `x`.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor, ModelError> {
        Ok(x.layer_norm(&self.weight, &self.bias, self.eps)?)
    }
}
