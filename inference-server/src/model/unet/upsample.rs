//! The UNet's upsampler: diffusers' `Upsample2D` called with `output_size`, which the UNet
//! passes when a latent side is not a multiple of `2^(levels - 1)` so that each upsampled map
//! matches its skip connection (e.g. 9 → 5 on the way down, 5 → 9 on the way up). The shared
//! [`crate::nn::Upsample2D`] only doubles, so this one resizes with PyTorch's nearest rule and
//! then applies the same 3×3 conv.

use crate::engine::{Device, Tensor};
use crate::model::ModelError;
use crate::model::weights::WeightSet;
use crate::nn::Conv2d;

/// Nearest-neighbour resize to a given size followed by `{prefix}.conv` (3×3, pad 1).
#[derive(Debug)]
pub(crate) struct ResizingUpsample {
    conv: Conv2d,
}

/// Source index of output `dst` as PyTorch's `nearest` mode picks it for `input → output`:
/// exact halving for 2×, else `min(floor(dst · (input / output)), input - 1)` in f32.
fn nearest_source(dst: usize, input: usize, output: usize) -> u32 {
    let src = if output == input {
        dst
    } else if output == 2 * input {
        dst / 2
    } else {
        let scale = input as f32 / output as f32;
        ((dst as f32 * scale).floor() as usize).min(input - 1)
    };
    src as u32
}

impl ResizingUpsample {
    /// Loads `{prefix}.conv` (`channels → channels`).
    pub fn load(
        ws: &WeightSet,
        prefix: &str,
        channels: usize,
        device: &Device,
    ) -> Result<ResizingUpsample, ModelError> {
        Ok(ResizingUpsample {
            conv: Conv2d::load(
                ws,
                &format!("{prefix}.conv"),
                channels,
                channels,
                3,
                1,
                1,
                device,
            )?,
        })
    }

    /// Resizes `x [N, C, H, W]` to `[N, C, size.0, size.1]` (nearest), then convolves.
    pub fn forward(&self, x: &Tensor, size: (usize, usize)) -> Result<Tensor, ModelError> {
        let (h, w) = match *x.dims() {
            [_, _, h, w] if h > 0 && w > 0 => (h, w),
            _ => {
                return Err(ModelError::Input {
                    field: "latents",
                    rule: format!("cannot upsample {}", x.shape()),
                });
            }
        };
        let resized = if size == (2 * h, 2 * w) {
            x.upsample_nearest2x()?
        } else {
            let rows: Vec<u32> = (0..size.0).map(|d| nearest_source(d, h, size.0)).collect();
            let cols: Vec<u32> = (0..size.1).map(|d| nearest_source(d, w, size.1)).collect();
            x.index_select(&rows, 2)?.index_select(&cols, 3)?
        };
        Ok(self.conv.forward(&resized)?)
    }
}
