//! 2-D convolution with bias, NCHW, as `torch.nn.Conv2d` with square kernels.

use crate::engine::{Device, Tensor};

use super::load::get_f32;
use super::{NnError, WeightSource};

/// A square-kernel convolution with bias; the weight may stay in its stored dtype.
#[derive(Debug, Clone)]
pub struct Conv2d {
    weight: Tensor,
    bias: Tensor,
    stride: usize,
    padding: usize,
}

impl Conv2d {
    /// Loads `{prefix}.weight` (`[out_ch, in_ch, kernel, kernel]`) and `{prefix}.bias` (`[out_ch]`).
    #[allow(clippy::too_many_arguments)]
    pub fn load(
        weights: &dyn WeightSource,
        prefix: &str,
        in_ch: usize,
        out_ch: usize,
        kernel: usize,
        stride: usize,
        padding: usize,
        device: &Device,
    ) -> Result<Conv2d, NnError> {
        Ok(Conv2d {
            weight: weights.get(
                &format!("{prefix}.weight"),
                &[out_ch, in_ch, kernel, kernel],
                device,
            )?,
            bias: get_f32(weights, &format!("{prefix}.bias"), &[out_ch], device)?,
            stride,
            padding,
        })
    }

    /// Convolves `x [N, in_ch, H, W]` to `[N, out_ch, H', W']`.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor, NnError> {
        Ok(x.conv2d(&self.weight, Some(&self.bias), self.stride, self.padding)?)
    }

    /// `residual + self(x)`, the addition done while the convolution writes its output (see
    /// [`Tensor::conv2d_add`]); `residual` has the output's shape.
    pub fn forward_add(&self, x: &Tensor, residual: &Tensor) -> Result<Tensor, NnError> {
        let (w, b) = (&self.weight, Some(&self.bias));
        Ok(x.conv2d_add(w, b, self.stride, self.padding, residual)?)
    }
}
