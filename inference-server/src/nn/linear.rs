//! A fully connected layer, `y = x·Wᵀ + b`, with PyTorch's `[out, in]` weight layout.

use crate::engine::{Device, Tensor};

use super::{NnError, WeightSource};

/// A linear layer; the weight may stay in its stored dtype (f16 checkpoints are computed in f32).
#[derive(Debug, Clone)]
pub struct Linear {
    weight: Tensor,
    bias: Option<Tensor>,
}

impl Linear {
    /// Loads `{prefix}.weight` (`[out_dim, in_dim]`) and, when `bias` is set, `{prefix}.bias`.
    pub fn load(
        weights: &dyn WeightSource,
        prefix: &str,
        in_dim: usize,
        out_dim: usize,
        bias: bool,
        device: &Device,
    ) -> Result<Linear, NnError> {
        let weight = weights.get(&format!("{prefix}.weight"), &[out_dim, in_dim], device)?;
        let bias = match bias {
            true => Some(weights.get(&format!("{prefix}.bias"), &[out_dim], device)?),
            false => None,
        };
        Ok(Linear { weight, bias })
    }

    /// Applies the layer to the last dimension of `x`.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor, NnError> {
        Ok(x.linear(&self.weight, self.bias.as_ref())?)
    }

    /// The layer followed by GEGLU (`a · gelu(gate)` of its output's two halves): a transformer
    /// feed-forward's input projection, which a backend may fuse (see `Tensor::linear_geglu`).
    pub fn forward_geglu(&self, x: &Tensor) -> Result<Tensor, NnError> {
        Ok(x.linear_geglu(&self.weight, self.bias.as_ref())?)
    }
}
