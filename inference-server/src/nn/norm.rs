//! Layer normalization over the last dimension, fused in the engine.

use crate::engine::{Device, Tensor};

use super::load::get_f32;
use super::{NnError, WeightSource};

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
        weights: &dyn WeightSource,
        prefix: &str,
        dim: usize,
        eps: f32,
        device: &Device,
    ) -> Result<LayerNorm, NnError> {
        Ok(LayerNorm {
            weight: get_f32(weights, &format!("{prefix}.weight"), &[dim], device)?,
            bias: get_f32(weights, &format!("{prefix}.bias"), &[dim], device)?,
            eps,
        })
    }

    /// Normalizes the last dimension of `x`.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor, NnError> {
        Ok(x.layer_norm(&self.weight, &self.bias, self.eps)?)
    }
}
