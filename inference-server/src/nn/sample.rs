//! diffusers' `Downsample2D` and `Upsample2D` with their convolutions (`use_conv=True`).

use crate::engine::{Device, Tensor};

use super::{Conv2d, NnError, WeightSource};

/// Halves H and W with a 3×3 stride-2 conv (`{prefix}.conv`). With `padding` 0 (the VAE
/// encoder) the input is first padded by one zero column on the right and one zero row at the
/// bottom, as diffusers does.
#[derive(Debug, Clone)]
pub struct Downsample2D {
    conv: Conv2d,
    asymmetric_pad: bool,
}

impl Downsample2D {
    /// Loads `{prefix}.conv` (`channels → channels`, 3×3, stride 2, `padding` on every side).
    pub fn load(
        weights: &dyn WeightSource,
        prefix: &str,
        channels: usize,
        padding: usize,
        device: &Device,
    ) -> Result<Downsample2D, NnError> {
        let conv = Conv2d::load(
            weights,
            &format!("{prefix}.conv"),
            channels,
            channels,
            3,
            2,
            padding,
            device,
        )?;
        Ok(Downsample2D {
            conv,
            asymmetric_pad: padding == 0,
        })
    }

    /// `[N, C, H, W]` → `[N, C, ⌈H/2⌉, ⌈W/2⌉]` (exactly half for even sides).
    pub fn forward(&self, x: &Tensor) -> Result<Tensor, NnError> {
        match self.asymmetric_pad {
            true => self.conv.forward(&x.pad2d(0, 1, 0, 1)?),
            false => self.conv.forward(x),
        }
    }
}

/// Doubles H and W by nearest-neighbour upsampling, then a 3×3 conv (`{prefix}.conv`, pad 1).
#[derive(Debug, Clone)]
pub struct Upsample2D {
    conv: Conv2d,
}

impl Upsample2D {
    /// Loads `{prefix}.conv` (`channels → channels`, 3×3, stride 1, padding 1).
    pub fn load(
        weights: &dyn WeightSource,
        prefix: &str,
        channels: usize,
        device: &Device,
    ) -> Result<Upsample2D, NnError> {
        Ok(Upsample2D {
            conv: Conv2d::load(
                weights,
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

    /// `[N, C, H, W]` → `[N, C, 2H, 2W]`.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor, NnError> {
        self.conv.forward(&x.upsample_nearest2x()?)
    }
}
