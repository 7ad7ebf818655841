//! diffusers' VAE `Encoder`: image to the moments of the latent distribution.

use crate::engine::{Device, Tensor};
use crate::model::ModelError;
use crate::model::weights::{VaeConfig, WeightSet};
use crate::nn::{Conv2d, Downsample2D, GroupNorm, ResnetBlock2D};

use super::mid::MidBlock;

/// One `DownEncoderBlock2D`: resnets, then a stride-2 downsampler on all but the last level.
#[derive(Debug)]
struct DownBlock {
    resnets: Vec<ResnetBlock2D>,
    downsampler: Option<Downsample2D>,
}

/// `conv_in → down_blocks → mid_block → conv_norm_out → SiLU → conv_out` (2 × latent channels).
#[derive(Debug)]
pub(super) struct Encoder {
    conv_in: Conv2d,
    down_blocks: Vec<DownBlock>,
    mid_block: MidBlock,
    conv_norm_out: GroupNorm,
    conv_out: Conv2d,
}

impl Encoder {
    /// Loads every `encoder.*` tensor `config` calls for.
    pub(super) fn load(
        config: &VaeConfig,
        weights: &WeightSet,
        device: &Device,
    ) -> Result<Encoder, ModelError> {
        let ch = &config.block_out_channels;
        let groups = config.norm_num_groups;
        let (first, top) = (ch[0], ch[ch.len() - 1]);
        let conv_in = Conv2d::load(
            weights,
            "encoder.conv_in",
            config.in_channels,
            first,
            3,
            1,
            1,
            device,
        )?;
        let mut down_blocks = Vec::with_capacity(ch.len());
        let mut cin = first;
        for (i, &cout) in ch.iter().enumerate() {
            let prefix = format!("encoder.down_blocks.{i}");
            let resnets = (0..config.layers_per_block)
                .map(|j| {
                    let inp = if j == 0 { cin } else { cout };
                    ResnetBlock2D::load(
                        weights,
                        &format!("{prefix}.resnets.{j}"),
                        inp,
                        cout,
                        None,
                        groups,
                        super::EPS,
                        device,
                    )
                })
                .collect::<Result<Vec<_>, _>>()?;
            let downsampler = (i + 1 < ch.len())
                .then(|| {
                    Downsample2D::load(
                        weights,
                        &format!("{prefix}.downsamplers.0"),
                        cout,
                        0,
                        device,
                    )
                })
                .transpose()?;
            down_blocks.push(DownBlock {
                resnets,
                downsampler,
            });
            cin = cout;
        }
        Ok(Encoder {
            conv_in,
            down_blocks,
            mid_block: MidBlock::load(weights, "encoder.mid_block", top, groups, device)?,
            conv_norm_out: GroupNorm::load(
                weights,
                "encoder.conv_norm_out",
                groups,
                top,
                super::EPS,
                device,
            )?,
            conv_out: Conv2d::load(
                weights,
                "encoder.conv_out",
                top,
                2 * config.latent_channels,
                3,
                1,
                1,
                device,
            )?,
        })
    }

    /// `[N, in_channels, H, W]` → `[N, 2 · latent_channels, H / 2^(levels-1), ...]`.
    pub(super) fn forward(&self, image: &Tensor) -> Result<Tensor, ModelError> {
        let mut x = self.conv_in.forward(image)?;
        for block in &self.down_blocks {
            for resnet in &block.resnets {
                x = resnet.forward(&x, None)?;
            }
            if let Some(down) = &block.downsampler {
                x = down.forward(&x)?;
            }
        }
        let x = self.mid_block.forward(&x)?;
        Ok(self
            .conv_out
            .forward(&self.conv_norm_out.forward_silu(&x)?)?)
    }
}
