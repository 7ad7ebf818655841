//! The UNet's levels: `CrossAttnDownBlock2D` / `DownBlock2D`, `UNetMidBlock2DCrossAttn`,
//! `CrossAttnUpBlock2D` / `UpBlock2D`. A down block pushes every intermediate map onto the skip
//! stack; an up block pops one per resnet and concatenates it along channels before the resnet.

use crate::engine::{Device, Tensor};
use crate::model::ModelError;
use crate::model::weights::WeightSet;
use crate::nn::{Downsample2D, ResnetBlock2D};

use super::transformer::Transformer2D;
use super::upsample::ResizingUpsample;

/// What every block of one UNet shares: norm groups and eps, time-embedding width, text
/// embedding width and the projection kind of its transformers.
#[derive(Debug, Clone, Copy)]
pub(crate) struct BlockParams {
    pub groups: usize,
    pub eps: f32,
    pub temb: usize,
    pub context_dim: usize,
    pub linear_projection: bool,
}

impl BlockParams {
    fn resnet(
        &self,
        ws: &WeightSet,
        p: &str,
        cin: usize,
        cout: usize,
        dev: &Device,
    ) -> Result<ResnetBlock2D, ModelError> {
        Ok(ResnetBlock2D::load(
            ws,
            p,
            cin,
            cout,
            Some(self.temb),
            self.groups,
            self.eps,
            dev,
        )?)
    }

    fn transformer(
        &self,
        ws: &WeightSet,
        p: &str,
        c: usize,
        heads: usize,
        dev: &Device,
    ) -> Result<Transformer2D, ModelError> {
        Transformer2D::load(
            ws,
            p,
            c,
            self.context_dim,
            heads,
            self.groups,
            self.linear_projection,
            dev,
        )
    }
}

/// Runs resnet `i` and, when present, transformer `i`.
fn resnet_then_attention(
    resnet: &ResnetBlock2D,
    attention: Option<&Transformer2D>,
    x: &Tensor,
    temb: &Tensor,
    context: &Tensor,
) -> Result<Tensor, ModelError> {
    let x = resnet.forward(x, Some(temb))?;
    match attention {
        Some(a) => a.forward(&x, context),
        None => Ok(x),
    }
}

/// One down level: resnets (each followed by a transformer when `heads` is set), then a
/// stride-2 downsampling conv unless it is the last level.
#[derive(Debug)]
pub(crate) struct DownBlock {
    resnets: Vec<ResnetBlock2D>,
    attentions: Vec<Transformer2D>,
    downsampler: Option<Downsample2D>,
}

impl DownBlock {
    /// Loads `down_blocks.{index}`; `heads: None` is a `DownBlock2D`.
    #[allow(clippy::too_many_arguments)]
    pub fn load(
        ws: &WeightSet,
        bp: &BlockParams,
        index: usize,
        cin: usize,
        cout: usize,
        layers: usize,
        heads: Option<usize>,
        last: bool,
        dev: &Device,
    ) -> Result<DownBlock, ModelError> {
        let p = format!("down_blocks.{index}");
        let mut resnets = Vec::with_capacity(layers);
        let mut attentions = Vec::new();
        for j in 0..layers {
            resnets.push(bp.resnet(
                ws,
                &format!("{p}.resnets.{j}"),
                if j == 0 { cin } else { cout },
                cout,
                dev,
            )?);
            if let Some(h) = heads {
                attentions.push(bp.transformer(
                    ws,
                    &format!("{p}.attentions.{j}"),
                    cout,
                    h,
                    dev,
                )?);
            }
        }
        let downsampler = match last {
            true => None,
            false => Some(Downsample2D::load(
                ws,
                &format!("{p}.downsamplers.0"),
                cout,
                1,
                dev,
            )?),
        };
        Ok(DownBlock {
            resnets,
            attentions,
            downsampler,
        })
    }

    /// Runs the level on `x`, pushing each resnet's (or transformer's) output and the
    /// downsampled map onto `skips`.
    pub fn forward(
        &self,
        x: &Tensor,
        temb: &Tensor,
        context: &Tensor,
        skips: &mut Vec<Tensor>,
    ) -> Result<Tensor, ModelError> {
        let mut x = x.clone();
        for (i, resnet) in self.resnets.iter().enumerate() {
            x = resnet_then_attention(resnet, self.attentions.get(i), &x, temb, context)?;
            skips.push(x.clone());
        }
        if let Some(down) = &self.downsampler {
            x = down.forward(&x)?;
            skips.push(x.clone());
        }
        Ok(x)
    }
}

/// `UNetMidBlock2DCrossAttn`: resnet, transformer, resnet at the deepest level.
#[derive(Debug)]
pub(crate) struct MidBlock {
    resnet0: ResnetBlock2D,
    attention: Transformer2D,
    resnet1: ResnetBlock2D,
}

impl MidBlock {
    /// Loads `mid_block.*` for `channels` channels and `heads` heads.
    pub fn load(
        ws: &WeightSet,
        bp: &BlockParams,
        channels: usize,
        heads: usize,
        dev: &Device,
    ) -> Result<MidBlock, ModelError> {
        Ok(MidBlock {
            resnet0: bp.resnet(ws, "mid_block.resnets.0", channels, channels, dev)?,
            attention: bp.transformer(ws, "mid_block.attentions.0", channels, heads, dev)?,
            resnet1: bp.resnet(ws, "mid_block.resnets.1", channels, channels, dev)?,
        })
    }

    /// Runs the mid block.
    pub fn forward(
        &self,
        x: &Tensor,
        temb: &Tensor,
        context: &Tensor,
    ) -> Result<Tensor, ModelError> {
        let x = resnet_then_attention(&self.resnet0, Some(&self.attention), x, temb, context)?;
        Ok(self.resnet1.forward(&x, Some(temb))?)
    }
}

/// One up level (deepest first): `layers + 1` resnets over `[x, skip]` concatenations, each
/// followed by a transformer when `heads` is set, then (unless it is the last) nearest
/// upsampling to the size of the next skip map + conv.
#[derive(Debug)]
pub(crate) struct UpBlock {
    resnets: Vec<ResnetBlock2D>,
    attentions: Vec<Transformer2D>,
    upsampler: Option<ResizingUpsample>,
}

impl UpBlock {
    /// Loads `up_blocks.{index}`: `prev` channels come from below, skips carry `cout` channels
    /// except the last, which carries `skip_in` (the next level up's width).
    #[allow(clippy::too_many_arguments)]
    pub fn load(
        ws: &WeightSet,
        bp: &BlockParams,
        index: usize,
        prev: usize,
        cout: usize,
        skip_in: usize,
        layers: usize,
        heads: Option<usize>,
        last: bool,
        dev: &Device,
    ) -> Result<UpBlock, ModelError> {
        let p = format!("up_blocks.{index}");
        let mut resnets = Vec::with_capacity(layers + 1);
        let mut attentions = Vec::new();
        for j in 0..=layers {
            let skip = if j == layers { skip_in } else { cout };
            let res_in = if j == 0 { prev } else { cout };
            resnets.push(bp.resnet(ws, &format!("{p}.resnets.{j}"), res_in + skip, cout, dev)?);
            if let Some(h) = heads {
                attentions.push(bp.transformer(
                    ws,
                    &format!("{p}.attentions.{j}"),
                    cout,
                    h,
                    dev,
                )?);
            }
        }
        let upsampler = match last {
            true => None,
            false => Some(ResizingUpsample::load(
                ws,
                &format!("{p}.upsamplers.0"),
                cout,
                dev,
            )?),
        };
        Ok(UpBlock {
            resnets,
            attentions,
            upsampler,
        })
    }

    /// Runs the level, popping one skip map per resnet; the upsampler resizes to the skip map
    /// left on top (2× unless a side was odd on the way down).
    pub fn forward(
        &self,
        x: &Tensor,
        temb: &Tensor,
        context: &Tensor,
        skips: &mut Vec<Tensor>,
    ) -> Result<Tensor, ModelError> {
        let mut x = x.clone();
        for (i, resnet) in self.resnets.iter().enumerate() {
            let skip = skips.pop().ok_or_else(|| ModelError::Input {
                field: "unet.config.up_block_types",
                rule: "more up-block resnets than skip connections".into(),
            })?;
            x = Tensor::cat(&[&x, &skip], 1)?;
            x = resnet_then_attention(resnet, self.attentions.get(i), &x, temb, context)?;
        }
        if let Some(up) = &self.upsampler {
            let size = match skips.last().map(|s| s.dims()) {
                Some(&[_, _, h, w]) => (h, w),
                _ => {
                    return Err(ModelError::Input {
                        field: "unet.config.up_block_types",
                        rule: "an upsampler with no skip connection left to match".into(),
                    });
                }
            };
            x = up.forward(&x, size)?;
        }
        Ok(x)
    }
}
