//! diffusers' `ResnetBlock2D` (time-embedding norm "default", output scale 1), shared by the
//! UNet (with a time embedding) and the VAE (without).

use crate::engine::{Device, Tensor};

use super::{Conv2d, GroupNorm, Linear, NnError, WeightSource};

/// `norm1 → SiLU → conv1 → (+ time_emb_proj(SiLU(temb))) → norm2 → SiLU → conv2`, plus the
/// input (through a 1×1 `conv_shortcut` when the channel count changes). Dropout is a no-op.
#[derive(Debug, Clone)]
pub struct ResnetBlock2D {
    norm1: GroupNorm,
    conv1: Conv2d,
    time_emb_proj: Option<Linear>,
    norm2: GroupNorm,
    conv2: Conv2d,
    conv_shortcut: Option<Conv2d>,
}

impl ResnetBlock2D {
    /// Loads the block under `prefix`; `temb_ch` is the time-embedding width (`None` for the
    /// VAE, which has no `time_emb_proj`). Every group norm uses `groups` and `eps`.
    #[allow(clippy::too_many_arguments)]
    pub fn load(
        weights: &dyn WeightSource,
        prefix: &str,
        in_ch: usize,
        out_ch: usize,
        temb_ch: Option<usize>,
        groups: usize,
        eps: f32,
        device: &Device,
    ) -> Result<ResnetBlock2D, NnError> {
        let p = |name: &str| format!("{prefix}.{name}");
        Ok(ResnetBlock2D {
            norm1: GroupNorm::load(weights, &p("norm1"), groups, in_ch, eps, device)?,
            conv1: Conv2d::load(weights, &p("conv1"), in_ch, out_ch, 3, 1, 1, device)?,
            time_emb_proj: temb_ch
                .map(|t| Linear::load(weights, &p("time_emb_proj"), t, out_ch, true, device))
                .transpose()?,
            norm2: GroupNorm::load(weights, &p("norm2"), groups, out_ch, eps, device)?,
            conv2: Conv2d::load(weights, &p("conv2"), out_ch, out_ch, 3, 1, 1, device)?,
            conv_shortcut: (in_ch != out_ch)
                .then(|| Conv2d::load(weights, &p("conv_shortcut"), in_ch, out_ch, 1, 1, 0, device))
                .transpose()?,
        })
    }

    /// Applies the block to `x [N, in_ch, H, W]`; `temb [N, temb_ch]` is required exactly when
    /// the block was loaded with a time embedding.
    pub fn forward(&self, x: &Tensor, temb: Option<&Tensor>) -> Result<Tensor, NnError> {
        let mut h = self.conv1.forward(&self.norm1.forward_silu(x)?)?;
        match (&self.time_emb_proj, temb) {
            (Some(proj), Some(t)) => {
                let t = proj.forward(&t.silu()?)?;
                let t = t.unsqueeze(t.rank())?.unsqueeze(t.rank() + 1)?;
                h = h.add(&t)?;
            }
            (None, None) => {}
            (Some(_), None) => {
                return Err(NnError::Input {
                    field: "temb",
                    rule: "this resnet block needs a time embedding".into(),
                });
            }
            (None, Some(_)) => {
                return Err(NnError::Input {
                    field: "temb",
                    rule: "this resnet block has no time embedding".into(),
                });
            }
        }
        let shortcut = match &self.conv_shortcut {
            Some(conv) => conv.forward(x)?,
            None => x.clone(),
        };
        // `shortcut + conv2(..)`, added as conv2 writes its output (one pass fewer over the
        // block's output; the same sums as a separate add).
        self.conv2
            .forward_add(&self.norm2.forward_silu(&h)?, &shortcut)
    }
}
