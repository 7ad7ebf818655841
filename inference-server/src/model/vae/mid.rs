//! The VAE's `UNetMidBlock2D`: resnet, single-head self-attention over all positions, resnet.

use crate::engine::{Device, Tensor};
use crate::model::ModelError;
use crate::model::weights::WeightSet;
use crate::nn::{Attention, GroupNorm, ResnetBlock2D};

/// Group norm, then attention of every pixel over every pixel (one head as wide as the
/// channels, biased q/k/v), added back to the input.
#[derive(Debug)]
struct SpatialAttention {
    group_norm: GroupNorm,
    attention: Attention,
}

impl SpatialAttention {
    fn load(
        weights: &WeightSet,
        prefix: &str,
        channels: usize,
        groups: usize,
        device: &Device,
    ) -> Result<Self, ModelError> {
        Ok(SpatialAttention {
            group_norm: GroupNorm::load(
                weights,
                &format!("{prefix}.group_norm"),
                groups,
                channels,
                super::EPS,
                device,
            )?,
            attention: Attention::load(weights, prefix, channels, None, 1, channels, true, device)?,
        })
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor, ModelError> {
        let &[n, c, h, w] = x.dims() else {
            return Err(ModelError::Input {
                field: "vae mid block input",
                rule: format!("must be [N, C, H, W], got {}", x.shape()),
            });
        };
        let seq = self
            .group_norm
            .forward(x)?
            .reshape((n, c, h * w))?
            .transpose(1, 2)?;
        let out = self.attention.forward(&seq, None)?;
        let out = out.transpose(1, 2)?.reshape((n, c, h, w))?;
        Ok(out.add(x)?)
    }
}

/// `resnets.0 → attentions.0 → resnets.1` at the lowest resolution, channels unchanged.
#[derive(Debug)]
pub(super) struct MidBlock {
    resnet0: ResnetBlock2D,
    attention: SpatialAttention,
    resnet1: ResnetBlock2D,
}

impl MidBlock {
    /// Loads `{prefix}.resnets.{0,1}` and `{prefix}.attentions.0`.
    pub(super) fn load(
        weights: &WeightSet,
        prefix: &str,
        channels: usize,
        groups: usize,
        device: &Device,
    ) -> Result<Self, ModelError> {
        let resnet = |i: usize| {
            ResnetBlock2D::load(
                weights,
                &format!("{prefix}.resnets.{i}"),
                channels,
                channels,
                None,
                groups,
                super::EPS,
                device,
            )
        };
        Ok(MidBlock {
            resnet0: resnet(0)?,
            attention: SpatialAttention::load(
                weights,
                &format!("{prefix}.attentions.0"),
                channels,
                groups,
                device,
            )?,
            resnet1: resnet(1)?,
        })
    }

    /// Applies the block to `[N, C, H, W]`.
    pub(super) fn forward(&self, x: &Tensor) -> Result<Tensor, ModelError> {
        let x = self.resnet0.forward(x, None)?;
        let x = self.attention.forward(&x)?;
        Ok(self.resnet1.forward(&x, None)?)
    }
}
