//! diffusers' VAE `Decoder`: latent to image.

use crate::engine::{Device, Tensor};
use crate::model::ModelError;
use crate::model::weights::{VaeConfig, WeightSet};
use crate::nn::{Conv2d, GroupNorm, ResnetBlock2D, Upsample2D};

use super::mid::MidBlock;

/// One `UpDecoderBlock2D`: `layers_per_block + 1` resnets, then a 2× upsampler on all but the
/// last level.
#[derive(Debug)]
struct UpBlock {
    resnets: Vec<ResnetBlock2D>,
    upsampler: Option<Upsample2D>,
}

/// `conv_in → mid_block → up_blocks → conv_norm_out → SiLU → conv_out`.
#[derive(Debug)]
pub(super) struct Decoder {
    conv_in: Conv2d,
    mid_block: MidBlock,
    up_blocks: Vec<UpBlock>,
    conv_norm_out: GroupNorm,
    conv_out: Conv2d,
}

impl Decoder {
    /// Loads every `decoder.*` tensor `config` calls for.
    pub(super) fn load(
        config: &VaeConfig,
        weights: &WeightSet,
        device: &Device,
    ) -> Result<Decoder, ModelError> {
        let ch = &config.block_out_channels;
        let groups = config.norm_num_groups;
        let (first, top) = (ch[0], ch[ch.len() - 1]);
        let conv_in = Conv2d::load(
            weights,
            "decoder.conv_in",
            config.latent_channels,
            top,
            3,
            1,
            1,
            device,
        )?;
        let mid_block = MidBlock::load(weights, "decoder.mid_block", top, groups, device)?;
        let mut up_blocks = Vec::with_capacity(ch.len());
        let mut prev = top;
        for (i, &out) in ch.iter().rev().enumerate() {
            let prefix = format!("decoder.up_blocks.{i}");
            let resnets = (0..=config.layers_per_block)
                .map(|j| {
                    let inp = if j == 0 { prev } else { out };
                    ResnetBlock2D::load(
                        weights,
                        &format!("{prefix}.resnets.{j}"),
                        inp,
                        out,
                        None,
                        groups,
                        super::EPS,
                        device,
                    )
                })
                .collect::<Result<Vec<_>, _>>()?;
            let upsampler = (i + 1 < ch.len())
                .then(|| Upsample2D::load(weights, &format!("{prefix}.upsamplers.0"), out, device))
                .transpose()?;
            up_blocks.push(UpBlock { resnets, upsampler });
            prev = out;
        }
        Ok(Decoder {
            conv_in,
            mid_block,
            up_blocks,
            conv_norm_out: GroupNorm::load(
                weights,
                "decoder.conv_norm_out",
                groups,
                first,
                super::EPS,
                device,
            )?,
            conv_out: Conv2d::load(
                weights,
                "decoder.conv_out",
                first,
                config.out_channels,
                3,
                1,
                1,
                device,
            )?,
        })
    }

    /// `[N, latent_channels, h, w]` → `[N, out_channels, h · 2^(levels-1), ...]`.
    pub(super) fn forward(&self, latents: &Tensor) -> Result<Tensor, ModelError> {
        let x = self.conv_in.forward(latents)?;
        let mut x = self.mid_block.forward(&x)?;
        for block in &self.up_blocks {
            for resnet in &block.resnets {
                x = resnet.forward(&x, None)?;
            }
            if let Some(up) = &block.upsampler {
                x = up.forward(&x)?;
            }
        }
        Ok(self
            .conv_out
            .forward(&self.conv_norm_out.forward_silu(&x)?)?)
    }
}
