//! diffusers' `UNet2DConditionModel` for Stable Diffusion 1.x and 2.x: predicts the noise in a
//! latent at a timestep, conditioned on CLIP text embeddings.
//!
//! Layout: `conv_in` → down levels (`CrossAttnDownBlock2D` / `DownBlock2D`, each pushing skip
//! maps) → `UNetMidBlock2DCrossAttn` → up levels (`CrossAttnUpBlock2D` / `UpBlock2D`, popping
//! and concatenating skips) → group norm + SiLU → `conv_out`. Every resnet adds the timestep
//! embedding (`time.rs`). Computes in f32 whatever the stored weight dtype.
//!
//! Heads follow diffusers' quirk: `attention_head_dim` (unless `num_attention_heads` is set) is
//! the number of HEADS per level, not their width: SD 1's `8` means 8 heads of `channels / 8`,
//! SD 2's `[5, 10, 20, 20]` gives 64-wide heads. The mid block uses the last level's count and
//! up level `i` (deepest first) uses down level `n - 1 - i`'s.
//!
//! Latent sides need not be multiples of `2^(levels - 1)`: stride-2 convs round up on the way
//! down and each upsampler resizes to its skip map on the way up, as diffusers does with
//! `upsample_size` (`upsample.rs`).

mod blocks;
mod time;
mod transformer;
mod upsample;

use crate::engine::{DType, Device, Tensor};
use crate::model::ModelError;
use crate::model::weights::{UNetConfig, WeightSet};
use crate::nn::{Conv2d, GroupNorm};

pub use crate::engine::sinusoidal_embedding;
use blocks::{BlockParams, DownBlock, MidBlock, UpBlock};
pub use time::TimestepEmbedding;
pub use transformer::Transformer2D;

/// A loaded UNet, ready to predict noise.
#[derive(Debug)]
pub struct UNet {
    conv_in: Conv2d,
    time: TimestepEmbedding,
    down: Vec<DownBlock>,
    mid: MidBlock,
    up: Vec<UpBlock>,
    norm_out: GroupNorm,
    conv_out: Conv2d,
    in_channels: usize,
    out_channels: usize,
    context_dim: usize,
    device: Device,
    /// The dtype it computes in (its weight set's cast, f32 by default).
    act: DType,
}

fn config_error(field: &'static str, rule: String) -> ModelError {
    ModelError::Input { field, rule }
}

/// Whether each level has cross-attention, from its block type.
fn attention_levels(
    types: &[String],
    field: &'static str,
    with: &str,
    without: &str,
) -> Result<Vec<bool>, ModelError> {
    types
        .iter()
        .map(|t| match t.as_str() {
            t if t == with => Ok(true),
            t if t == without => Ok(false),
            other => Err(config_error(
                field,
                format!("unknown block type {other:?} (expected {with} or {without})"),
            )),
        })
        .collect()
}

impl UNet {
    /// Loads every tensor `config` calls for (diffusers names) from `weights`; a missing or
    /// mis-shaped tensor is an error naming it, an unsupported config one naming its field.
    pub fn load(
        config: &UNetConfig,
        weights: &WeightSet,
        device: &Device,
    ) -> Result<UNet, ModelError> {
        let ch = &config.block_out_channels;
        let n = ch.len();
        if n == 0 || ch.contains(&0) {
            return Err(config_error(
                "unet.config.block_out_channels",
                "must list at least one non-zero width".into(),
            ));
        }
        let down_attn = attention_levels(
            &config.down_block_types,
            "unet.config.down_block_types",
            "CrossAttnDownBlock2D",
            "DownBlock2D",
        )?;
        let up_attn = attention_levels(
            &config.up_block_types,
            "unet.config.up_block_types",
            "CrossAttnUpBlock2D",
            "UpBlock2D",
        )?;
        for (field, len) in [
            ("unet.config.down_block_types", down_attn.len()),
            ("unet.config.up_block_types", up_attn.len()),
        ] {
            if len != n {
                return Err(config_error(
                    field,
                    format!("{len} entries for {n} block_out_channels"),
                ));
            }
        }
        if config.layers_per_block == 0 {
            return Err(config_error(
                "unet.config.layers_per_block",
                "must be at least 1".into(),
            ));
        }
        if config
            .transformer_layers_per_block
            .as_ref()
            .is_some_and(|t| (0..n).any(|i| t.get(i) != Some(1)))
        {
            return Err(config_error(
                "unet.config.transformer_layers_per_block",
                "only 1 is supported (SD 1.x / 2.x)".into(),
            ));
        }
        if let Some(t) = &config.addition_embed_type {
            return Err(config_error(
                "unet.config.addition_embed_type",
                format!("{t:?} is not supported"),
            ));
        }
        if let Some(t) = &config.class_embed_type {
            return Err(config_error(
                "unet.config.class_embed_type",
                format!("{t:?} is not supported"),
            ));
        }
        let heads = |level: usize| {
            config.heads(level).ok_or_else(|| {
                config_error(
                    "unet.config.attention_head_dim",
                    format!("no head count for block {level}"),
                )
            })
        };
        let (b0, temb) = (ch[0], 4 * ch[0]);
        let groups = config.norm_num_groups;
        let eps = config.norm_eps as f32;
        let bp = BlockParams {
            groups,
            eps,
            temb,
            context_dim: config.cross_attention_dim,
            linear_projection: config.use_linear_projection,
        };
        let ws = weights;
        let conv_in = Conv2d::load(ws, "conv_in", config.in_channels, b0, 3, 1, 1, device)?;
        let time = TimestepEmbedding::load(
            ws,
            b0,
            temb,
            config.flip_sin_to_cos,
            config.freq_shift,
            device,
        )?;

        let mut down = Vec::with_capacity(n);
        let mut cin = b0;
        for (i, &cout) in ch.iter().enumerate() {
            let h = if down_attn[i] { Some(heads(i)?) } else { None };
            down.push(DownBlock::load(
                ws,
                &bp,
                i,
                cin,
                cout,
                config.layers_per_block,
                h,
                i + 1 == n,
                device,
            )?);
            cin = cout;
        }
        let mid = MidBlock::load(ws, &bp, ch[n - 1], heads(n - 1)?, device)?;
        let mut up = Vec::with_capacity(n);
        let mut prev = ch[n - 1];
        for i in 0..n {
            let cout = ch[n - 1 - i];
            let skip_in = ch[n - 1 - (i + 1).min(n - 1)];
            let h = if up_attn[i] {
                Some(heads(n - 1 - i)?)
            } else {
                None
            };
            up.push(UpBlock::load(
                ws,
                &bp,
                i,
                prev,
                cout,
                skip_in,
                config.layers_per_block,
                h,
                i + 1 == n,
                device,
            )?);
            prev = cout;
        }
        Ok(UNet {
            conv_in,
            time,
            down,
            mid,
            up,
            norm_out: GroupNorm::load(ws, "conv_norm_out", groups, b0, eps, device)?,
            conv_out: Conv2d::load(ws, "conv_out", b0, config.out_channels, 3, 1, 1, device)?,
            in_channels: config.in_channels,
            out_channels: config.out_channels,
            context_dim: config.cross_attention_dim,
            device: device.clone(),
            act: ws.activation_dtype(),
        })
    }

    /// Channels of the latents it takes.
    pub fn in_channels(&self) -> usize {
        self.in_channels
    }

    /// Channels of the prediction it returns.
    pub fn out_channels(&self) -> usize {
        self.out_channels
    }

    /// The dtype it computes in (set by the precision it was loaded with).
    pub fn act_dtype(&self) -> DType {
        self.act
    }

    /// Width of the text embeddings it attends to (`cross_attention_dim`).
    pub fn context_dim(&self) -> usize {
        self.context_dim
    }

    /// Checks `latents` `[B, in_channels, H, W]` and `context` `[B, S, cross_attention_dim]`;
    /// returns B.
    fn check_inputs(&self, latents: &Tensor, context: &Tensor) -> Result<usize, ModelError> {
        let [b, c, h, w] = *latents.dims() else {
            return Err(config_error(
                "latents",
                format!("must be [B, C, H, W], got {}", latents.shape()),
            ));
        };
        if b == 0 || c != self.in_channels || h == 0 || w == 0 {
            return Err(config_error(
                "latents",
                format!(
                    "must be [B>0, {}, H>0, W>0], got {}",
                    self.in_channels,
                    latents.shape()
                ),
            ));
        }
        match *context.dims() {
            [cb, s, cd] if cb == b && s > 0 && cd == self.context_dim => {}
            _ => {
                return Err(config_error(
                    "context",
                    format!(
                        "must be [{b}, S, {}] text embeddings, got {}",
                        self.context_dim,
                        context.shape()
                    ),
                ));
            }
        }
        Ok(b)
    }

    /// Predicts the noise of `latents` `[B, in_channels, h, w]` at `timesteps` (one value for
    /// the whole batch, or one per batch element) given text embeddings `context`
    /// `[B, S, cross_attention_dim]`; returns `[B, out_channels, h, w]`.
    pub fn forward(
        &self,
        latents: &Tensor,
        timesteps: &[f32],
        context: &Tensor,
    ) -> Result<Tensor, ModelError> {
        let b = self.check_inputs(latents, context)?;
        let temb = self.time_embedding(timesteps, b)?;
        self.forward_embedded(latents, &temb, context)
    }

    /// The embedding of `timesteps` (1 value, or one per item) for a batch of `batch`, in the
    /// activation dtype: the first part of [`UNet::forward`], and the only one that reads host
    /// values. A sampler that records the rest as a CUDA graph computes it per step.
    pub fn time_embedding(&self, timesteps: &[f32], batch: usize) -> Result<Tensor, ModelError> {
        let per_batch: Vec<f32> = match timesteps.len() {
            1 => vec![timesteps[0]; batch],
            len if len == batch => timesteps.to_vec(),
            len => {
                return Err(config_error(
                    "timesteps",
                    format!("{len} values for a batch of {batch} (give 1 or {batch})"),
                ));
            }
        };
        if let Some(t) = per_batch.iter().find(|t| !t.is_finite()) {
            return Err(config_error("timesteps", format!("{t} is not finite")));
        }
        Ok(self
            .time
            .forward(&per_batch, &self.device)?
            .to_dtype(self.act)?)
    }

    /// [`UNet::forward`] after the time embedding (`temb` from [`UNet::time_embedding`]):
    /// device work only, so it can be recorded once and replayed every step.
    pub fn forward_embedded(
        &self,
        latents: &Tensor,
        temb: &Tensor,
        context: &Tensor,
    ) -> Result<Tensor, ModelError> {
        let b = self.check_inputs(latents, context)?;
        if temb.rank() != 2 || temb.dims()[0] != b {
            return Err(config_error(
                "temb",
                format!("must be [{b}, D] time embeddings, got {}", temb.shape()),
            ));
        }
        let temb = &temb.to_dtype(self.act)?;
        // Everything inside runs in the activation dtype; the samplers get f32 back.
        let context = &context.to_dtype(self.act)?;
        let mut x = self.conv_in.forward(&latents.to_dtype(self.act)?)?;
        let mut skips = vec![x.clone()];
        for block in &self.down {
            x = block.forward(&x, temb, context, &mut skips)?;
        }
        x = self.mid.forward(&x, temb, context)?;
        for block in &self.up {
            x = block.forward(&x, temb, context, &mut skips)?;
        }
        let x = self.norm_out.forward_silu(&x)?;
        Ok(self.conv_out.forward(&x)?.to_dtype(DType::F32)?)
    }
}
