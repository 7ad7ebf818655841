//! diffusers' `Transformer2DModel` with one `BasicTransformerBlock`, as the SD 1.x / 2.x UNet
//! uses it: group norm, `proj_in` (1×1 conv in SD 1, linear in SD 2), self-attention,
//! cross-attention over the text embeddings, a GEGLU feed-forward, `proj_out`, residual.

use crate::engine::{Device, Tensor};
use crate::model::ModelError;
use crate::model::weights::WeightSet;
use crate::nn::{Attention, Conv2d, GroupNorm, LayerNorm, Linear};

/// Epsilon of the transformer's input group norm (fixed in diffusers, not the UNet's `norm_eps`).
const GROUP_NORM_EPS: f32 = 1e-6;
/// Epsilon of the block's layer norms (`Transformer2DModel`'s default `norm_eps`).
const LAYER_NORM_EPS: f32 = 1e-5;

/// `proj_in` / `proj_out`: a 1×1 convolution on `[B, C, H, W]` or a linear layer on `[B, HW, C]`.
#[derive(Debug)]
enum Projection {
    Conv(Conv2d),
    Linear(Linear),
}

impl Projection {
    fn load(
        ws: &WeightSet,
        prefix: &str,
        c: usize,
        linear: bool,
        device: &Device,
    ) -> Result<Projection, ModelError> {
        Ok(match linear {
            true => Projection::Linear(Linear::load(ws, prefix, c, c, true, device)?),
            false => Projection::Conv(Conv2d::load(ws, prefix, c, c, 1, 1, 0, device)?),
        })
    }
}

/// `transformer_blocks.0`: pre-norm self-attention, cross-attention and GEGLU feed-forward.
#[derive(Debug)]
struct BasicTransformerBlock {
    norm1: LayerNorm,
    attn1: Attention,
    norm2: LayerNorm,
    attn2: Attention,
    norm3: LayerNorm,
    ff_in: Linear,
    ff_out: Linear,
}

impl BasicTransformerBlock {
    fn load(
        ws: &WeightSet,
        p: &str,
        dim: usize,
        context_dim: usize,
        heads: usize,
        device: &Device,
    ) -> Result<BasicTransformerBlock, ModelError> {
        let head_dim = dim / heads;
        let norm = |n: &str| LayerNorm::load(ws, &format!("{p}.{n}"), dim, LAYER_NORM_EPS, device);
        Ok(BasicTransformerBlock {
            norm1: norm("norm1")?,
            attn1: Attention::load(
                ws,
                &format!("{p}.attn1"),
                dim,
                None,
                heads,
                head_dim,
                false,
                device,
            )?,
            norm2: norm("norm2")?,
            attn2: Attention::load(
                ws,
                &format!("{p}.attn2"),
                dim,
                Some(context_dim),
                heads,
                head_dim,
                false,
                device,
            )?,
            norm3: norm("norm3")?,
            ff_in: Linear::load(
                ws,
                &format!("{p}.ff.net.0.proj"),
                dim,
                8 * dim,
                true,
                device,
            )?,
            ff_out: Linear::load(ws, &format!("{p}.ff.net.2"), 4 * dim, dim, true, device)?,
        })
    }

    /// `x` is `[B, L, C]`, `context` `[B, S, Cctx]`.
    fn forward(&self, x: &Tensor, context: &Tensor) -> Result<Tensor, ModelError> {
        let x = x.add(&self.attn1.forward(&self.norm1.forward(x)?, None)?)?;
        let x = x.add(
            &self
                .attn2
                .forward(&self.norm2.forward(&x)?, Some(context))?,
        )?;
        // GEGLU as diffusers: `hidden, gate = proj(x).chunk(2)`; `hidden * gelu(gate)`.
        let h = self.ff_in.forward_geglu(&self.norm3.forward(&x)?)?;
        Ok(x.add(&self.ff_out.forward(&h)?)?)
    }
}

/// A spatial transformer over `[B, C, H, W]` feature maps conditioned on text embeddings.
#[derive(Debug)]
pub struct Transformer2D {
    norm: GroupNorm,
    proj_in: Projection,
    block: BasicTransformerBlock,
    proj_out: Projection,
}

impl Transformer2D {
    /// Loads `{prefix}.norm`, `proj_in`, `transformer_blocks.0.*` and `proj_out` for `channels`
    /// channels split into `heads` heads, attending to `context_dim`-wide embeddings.
    #[allow(clippy::too_many_arguments)]
    pub fn load(
        ws: &WeightSet,
        prefix: &str,
        channels: usize,
        context_dim: usize,
        heads: usize,
        groups: usize,
        linear_projection: bool,
        device: &Device,
    ) -> Result<Transformer2D, ModelError> {
        if heads == 0 || !channels.is_multiple_of(heads) {
            return Err(ModelError::Input {
                field: "unet.config.attention_head_dim",
                rule: format!("{heads} heads do not divide {channels} channels of {prefix}"),
            });
        }
        Ok(Transformer2D {
            norm: GroupNorm::load(
                ws,
                &format!("{prefix}.norm"),
                groups,
                channels,
                GROUP_NORM_EPS,
                device,
            )?,
            proj_in: Projection::load(
                ws,
                &format!("{prefix}.proj_in"),
                channels,
                linear_projection,
                device,
            )?,
            block: BasicTransformerBlock::load(
                ws,
                &format!("{prefix}.transformer_blocks.0"),
                channels,
                context_dim,
                heads,
                device,
            )?,
            proj_out: Projection::load(
                ws,
                &format!("{prefix}.proj_out"),
                channels,
                linear_projection,
                device,
            )?,
        })
    }

    /// `x` `[B, C, H, W]` attending to `context` `[B, S, Cctx]`; returns `[B, C, H, W]`.
    pub fn forward(&self, x: &Tensor, context: &Tensor) -> Result<Tensor, ModelError> {
        let (b, c, h, w) = dims4(x)?;
        let normed = self.norm.forward(x)?;
        let to_tokens = |t: &Tensor| -> Result<Tensor, ModelError> {
            Ok(t.permute(&[0, 2, 3, 1])?.reshape((b, h * w, c))?)
        };
        let to_map = |t: &Tensor| -> Result<Tensor, ModelError> {
            Ok(t.reshape((b, h, w, c))?.permute(&[0, 3, 1, 2])?)
        };
        let tokens = match &self.proj_in {
            Projection::Conv(conv) => to_tokens(&conv.forward(&normed)?)?,
            Projection::Linear(lin) => lin.forward(&to_tokens(&normed)?)?,
        };
        let tokens = self.block.forward(&tokens, context)?;
        let out = match &self.proj_out {
            Projection::Conv(conv) => conv.forward(&to_map(&tokens)?)?,
            Projection::Linear(lin) => to_map(&lin.forward(&tokens)?)?,
        };
        Ok(out.add(x)?)
    }
}

/// The four dims of an NCHW tensor, or an engine-style shape error.
pub(crate) fn dims4(x: &Tensor) -> Result<(usize, usize, usize, usize), ModelError> {
    match *x.dims() {
        [b, c, h, w] => Ok((b, c, h, w)),
        _ => Err(ModelError::Input {
            field: "hidden_states",
            rule: format!("must be [B, C, H, W], got {}", x.shape()),
        }),
    }
}
