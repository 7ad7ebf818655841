//! Network ops: fused norms, conv2d, nearest upsampling and attention.

use super::elementwise::promoted;
use super::{expect_rank, expect_vec};
use crate::engine::device::Device;
use crate::engine::error::{EngineError, Result};
use crate::engine::op::{AttnGeom, Conv2dGeom, GroupNormGeom, SinusoidGeom};
use crate::engine::storage::Storage;
use crate::engine::tensor::Tensor;

impl Tensor {
    /// Sinusoidal timestep embeddings `[timesteps.len(), dim]` (f32) on `device`: diffusers'
    /// `get_timestep_embedding(t, dim, flip_sin_to_cos, downscale_freq_shift = freq_shift)`
    /// (see [`crate::engine::sinusoidal_embedding`]). A GPU computes them on the device.
    pub fn sinusoids(
        timesteps: &[f32],
        dim: usize,
        flip_sin_to_cos: bool,
        freq_shift: f64,
        device: &Device,
    ) -> Result<Tensor> {
        if dim / 2 > 0 && (dim / 2) as f64 - freq_shift == 0.0 {
            return Err(EngineError::invalid(
                "sinusoids",
                "freq_shift must differ from dim / 2 (it divides by their difference)",
            ));
        }
        let g = SinusoidGeom {
            dim,
            flip_sin_to_cos,
            freq_shift,
        };
        let storage = Storage::sinusoids(device, timesteps, g)?;
        Ok(Tensor::from_storage(storage, (timesteps.len(), dim)))
    }

    /// Layer norm over the last dim with affine `weight`, `bias` (both `[C]`), fused.
    pub fn layer_norm(&self, weight: &Tensor, bias: &Tensor, eps: f32) -> Result<Tensor> {
        let Some(&c) = self.dims().last() else {
            return Err(EngineError::shape(
                "layer_norm",
                "input must have rank >= 1, got a scalar",
            ));
        };
        expect_vec("layer_norm", "weight", weight, c)?;
        expect_vec("layer_norm", "bias", bias, c)?;
        self.same_device("layer_norm", &[weight, bias])?;
        let storage =
            self.storage()
                .layer_norm(self.view_in_storage(), weight.arg(), bias.arg(), c, eps)?;
        Ok(Tensor::from_storage(storage, self.shape().clone()))
    }

    /// Group norm of `[N, C, ...]` (e.g. `[N, C, H, W]` or `[N, C, L]`) over `groups` channel groups,
    /// per-channel affine `weight`, `bias` (`[C]`), then SiLU when `silu` — one fused pass.
    pub fn group_norm(
        &self,
        groups: usize,
        weight: &Tensor,
        bias: &Tensor,
        eps: f32,
        silu: bool,
    ) -> Result<Tensor> {
        if self.rank() < 2 {
            return Err(EngineError::shape(
                "group_norm",
                format!("input must be [N, C, ...], got {}", self.shape()),
            ));
        }
        let c = self.dims()[1];
        if groups == 0 || !c.is_multiple_of(groups) {
            return Err(EngineError::invalid(
                "group_norm",
                format!("{groups} groups do not divide {c} channels"),
            ));
        }
        expect_vec("group_norm", "weight", weight, c)?;
        expect_vec("group_norm", "bias", bias, c)?;
        self.same_device("group_norm", &[weight, bias])?;
        let spatial: usize = self.dims()[2..].iter().product();
        let g = GroupNormGeom {
            c,
            spatial,
            groups,
            eps,
            silu,
        };
        let storage =
            self.storage()
                .group_norm(self.view_in_storage(), weight.arg(), bias.arg(), g)?;
        Ok(Tensor::from_storage(storage, self.shape().clone()))
    }

    /// 2-D convolution, NCHW: `x [N, C, H, W]`, `weight [O, C, kh, kw]`, `bias [O]`; same stride and
    /// padding on both axes. Tiled im2col + gemm; 1×1 stride-1 convs go straight to gemm. A
    /// half-precision weight is converted to f32 in bounded blocks of output channels. Returns
    /// the input's dtype.
    pub fn conv2d(
        &self,
        weight: &Tensor,
        bias: Option<&Tensor>,
        stride: usize,
        padding: usize,
    ) -> Result<Tensor> {
        self.conv2d_with(weight, bias, stride, padding, None)
    }

    /// [`Tensor::conv2d`] plus `residual`, which must have the output's shape `[N, O, Ho, Wo]`:
    /// a ResNet block's `shortcut + conv(h)`, added while the convolution writes its output
    /// instead of in a separate pass. Each element is `(conv + bias) + residual`, what
    /// `conv2d(..)?.add(residual)` gives when the activations are f32; the residual is taken in
    /// the input's dtype.
    pub fn conv2d_add(
        &self,
        weight: &Tensor,
        bias: Option<&Tensor>,
        stride: usize,
        padding: usize,
        residual: &Tensor,
    ) -> Result<Tensor> {
        self.conv2d_with(weight, bias, stride, padding, Some(residual))
    }

    fn conv2d_with(
        &self,
        weight: &Tensor,
        bias: Option<&Tensor>,
        stride: usize,
        padding: usize,
        residual: Option<&Tensor>,
    ) -> Result<Tensor> {
        expect_rank("conv2d", "input", self, 4)?;
        expect_rank("conv2d", "weight", weight, 4)?;
        let (x, w) = (self.dims(), weight.dims());
        let (n, c, h, wd) = (x[0], x[1], x[2], x[3]);
        let (o, wc, kh, kw) = (w[0], w[1], w[2], w[3]);
        if wc != c {
            return Err(EngineError::shape(
                "conv2d",
                format!(
                    "input has {c} channels but weight {} expects {wc}",
                    weight.shape()
                ),
            ));
        }
        if stride == 0 {
            return Err(EngineError::invalid("conv2d", "stride must be >= 1"));
        }
        if let Some(b) = bias {
            expect_vec("conv2d", "bias", b, o)?;
        }
        let (hp, wp) = (h + 2 * padding, wd + 2 * padding);
        if kh == 0 || kw == 0 || kh > hp || kw > wp {
            return Err(EngineError::shape(
                "conv2d",
                format!("kernel {kh}x{kw} does not fit padded input {hp}x{wp}"),
            ));
        }
        let g = Conv2dGeom {
            n,
            c,
            h,
            w: wd,
            o,
            kh,
            kw,
            stride,
            pad: padding,
            ho: (hp - kh) / stride + 1,
            wo: (wp - kw) / stride + 1,
        };
        let others: Vec<&Tensor> = std::iter::once(weight)
            .chain(bias)
            .chain(residual)
            .collect();
        self.same_device("conv2d", &others)?;
        let residual = match residual {
            Some(r) if r.dims() != [n, o, g.ho, g.wo] => {
                return Err(EngineError::shape(
                    "conv2d",
                    format!(
                        "residual {} must have the output's shape [{n}, {o}, {}, {}]",
                        r.shape(),
                        g.ho,
                        g.wo
                    ),
                ));
            }
            Some(r) => Some(r.to_dtype(self.dtype())?),
            None => None,
        };
        let storage = self.storage().conv2d(
            self.view_in_storage(),
            weight.arg(),
            bias.map(Tensor::arg),
            residual.as_ref().map(Tensor::arg),
            g,
        )?;
        Ok(Tensor::from_storage(storage, (n, o, g.ho, g.wo)))
    }

    /// Nearest-neighbour 2× upsampling of the last two dims of `[N, C, H, W]`.
    pub fn upsample_nearest2x(&self) -> Result<Tensor> {
        expect_rank("upsample_nearest2x", "input", self, 4)?;
        let d = self.dims();
        let storage =
            self.storage()
                .upsample_nearest2x(self.view_in_storage(), d[0] * d[1], d[2], d[3])?;
        Ok(Tensor::from_storage(
            storage,
            (d[0], d[1], 2 * d[2], 2 * d[3]),
        ))
    }

    /// Scaled dot-product attention: `q [B, H, Lq, D]`, `k`, `v [B, H, Lk, D]` → `[B, H, Lq, D]`.
    /// Tiled with an online softmax (no `Lq × Lk` matrix); with `causal`, query `i` sees keys `j <= i`.
    pub fn attention(
        q: &Tensor,
        k: &Tensor,
        v: &Tensor,
        scale: f32,
        causal: bool,
    ) -> Result<Tensor> {
        for (what, t) in [("q", q), ("k", k), ("v", v)] {
            expect_rank("attention", what, t, 4)?;
        }
        let (qd, kd, vd) = (q.dims(), k.dims(), v.dims());
        if kd != vd {
            return Err(EngineError::shape(
                "attention",
                format!("k {} and v {} differ", k.shape(), v.shape()),
            ));
        }
        if qd[0] != kd[0] || qd[1] != kd[1] || qd[3] != kd[3] {
            return Err(EngineError::shape(
                "attention",
                format!(
                    "q {} and k {} must share batch, heads and head dim",
                    q.shape(),
                    k.shape()
                ),
            ));
        }
        let g = AttnGeom {
            bh: qd[0] * qd[1],
            lq: qd[2],
            lk: kd[2],
            d: qd[3],
            scale,
            causal,
        };
        q.same_device("attention", &[k, v])?;
        let [q2, k, v]: [Tensor; 3] = promoted(&[q, k, v])?.try_into().expect("three operands");
        let storage = q2
            .storage()
            .attention(q2.view_in_storage(), k.arg(), v.arg(), g)?;
        Ok(Tensor::from_storage(storage, q.shape().clone()))
    }
}
