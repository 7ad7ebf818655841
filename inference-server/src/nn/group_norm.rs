//! Group normalization over `[N, C, ...]`, optionally fused with SiLU in the engine.

use crate::engine::{Device, Tensor};

use super::load::get_f32;
use super::{NnError, WeightSource};

/// `GroupNorm(groups, channels)` with learned per-channel scale and shift, as `torch.nn.GroupNorm`.
#[derive(Debug, Clone)]
pub struct GroupNorm {
    weight: Tensor,
    bias: Tensor,
    groups: usize,
    eps: f32,
}

impl GroupNorm {
    /// Loads `{prefix}.weight` and `{prefix}.bias`, both `[channels]`; `groups` must divide
    /// `channels`.
    pub fn load(
        weights: &dyn WeightSource,
        prefix: &str,
        groups: usize,
        channels: usize,
        eps: f32,
        device: &Device,
    ) -> Result<GroupNorm, NnError> {
        if groups == 0 || !channels.is_multiple_of(groups) {
            return Err(NnError::Input {
                field: "norm_num_groups",
                rule: format!("{groups} groups must divide the {channels} channels of {prefix}"),
            });
        }
        Ok(GroupNorm {
            weight: get_f32(weights, &format!("{prefix}.weight"), &[channels], device)?,
            bias: get_f32(weights, &format!("{prefix}.bias"), &[channels], device)?,
            groups,
            eps,
        })
    }

    /// Normalizes `x [N, C, ...]`.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor, NnError> {
        Ok(x.group_norm(self.groups, &self.weight, &self.bias, self.eps, false)?)
    }

    /// Normalizes `x [N, C, ...]` then applies SiLU, in one pass.
    pub fn forward_silu(&self, x: &Tensor) -> Result<Tensor, NnError> {
        Ok(x.group_norm(self.groups, &self.weight, &self.bias, self.eps, true)?)
    }
}
