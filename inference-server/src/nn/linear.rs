//! A fully connected layer, `y = x·Wᵀ + b`, with PyTorch's `[out, in]` weight layout.

use crate::engine::{Device, Tensor};
use crate::model::ModelError;
use crate::model::weights::WeightSet;

use super::load_tensor;

/// A linear layer; the weight may stay in its stored dtype (f16 checkpoints are computed in f32).
#[derive(Debug, Clone)]
pub struct Linear {
    weight: Tensor,
    bias: Option<Tensor>,
}

impl Linear {
    /// Loads `{prefix}.weight` (`[out_dim, in_dim]`) and, when `bias` is set, `{prefix}.bias`.
    pub fn load(
        weights: &WeightSet,
        prefix: &str,
        in_dim: usize,
        out_dim: usize,
        bias: bool,
        device: &Device,
    ) -> Result<Linear, ModelError> {
        let weight = load_tensor(weights, &format!("{prefix}.weight"), &[out_dim, in_dim], device)?;
        let bias = match bias {
            true => Some(load_tensor(weights, &format!("{prefix}.bias"), &[out_dim], device)?),
            false => None,
        };
        Ok(Linear { weight, bias })
    }

    /// Applies the layer to the last dimension of `x`.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor, ModelError> {
        Ok(x.linear(&self.weight, self.bias.as_ref())?)
    }
}
