//! Element-wise ops: broadcast arithmetic, activations, softmax, reductions.

use crate::engine::cpu::elementwise as k;
use crate::engine::error::{EngineError, Result};
use crate::engine::tensor::Tensor;

/// The numpy broadcast of two shapes (right-aligned), with each input's strides over it
/// (0 on broadcast dims).
pub(crate) fn broadcast(op: &'static str, a: &[usize], b: &[usize]) -> Result<(Vec<usize>, Vec<usize>, Vec<usize>)> {
    let rank = a.len().max(b.len()).max(1);
    let pad = |d: &[usize]| -> Vec<usize> {
        let mut v = vec![1; rank - d.len()];
        v.extend_from_slice(d);
        v
    };
    let (pa, pb) = (pad(a), pad(b));
    let mut out = Vec::with_capacity(rank);
    for (&x, &y) in pa.iter().zip(&pb) {
        out.push(match (x, y) {
            _ if x == y => x,
            (1, y) => y,
            (x, 1) => x,
            _ => {
                return Err(EngineError::shape(op, format!("shapes {a:?} and {b:?} do not broadcast")));
            }
        });
    }
    let strides = |p: &[usize]| -> Vec<usize> {
        let mut s = vec![0; rank];
        let mut acc = 1;
        for i in (0..rank).rev() {
            s[i] = if p[i] == 1 && out[i] != 1 { 0 } else { acc };
            acc *= p[i];
        }
        s
    };
    let (sa, sb) = (strides(&pa), strides(&pb));
    Ok((out, sa, sb))
}

impl Tensor {
    fn binary(&self, rhs: &Tensor, op: &'static str, f: impl Fn(f32, f32) -> f32 + Sync) -> Result<Tensor> {
        let (dims, ls, rs) = broadcast(op, self.dims(), rhs.dims())?;
        let (a, b) = (self.f32_data()?, rhs.f32_data()?);
        let out = k::binary_broadcast(&a, &b, &dims, &ls, &rs, f);
        // A rank-0 pair broadcasts as [1]; give the result back its scalar shape.
        let dims = if self.rank() == 0 && rhs.rank() == 0 { Vec::new() } else { dims };
        Ok(Tensor::from_f32_out(out, dims, self.device()))
    }

    fn unary(&self, f: impl Fn(f32) -> f32 + Sync) -> Result<Tensor> {
        let out = k::unary_map(&self.f32_data()?, f);
        Ok(Tensor::from_f32_out(out, self.shape().clone(), self.device()))
    }

    /// `self + rhs` with numpy broadcasting.
    pub fn add(&self, rhs: &Tensor) -> Result<Tensor> {
        self.binary(rhs, "add", |a, b| a + b)
    }

    /// `self - rhs` with numpy broadcasting.
    pub fn sub(&self, rhs: &Tensor) -> Result<Tensor> {
        self.binary(rhs, "sub", |a, b| a - b)
    }

    /// `self * rhs` with numpy broadcasting.
    pub fn mul(&self, rhs: &Tensor) -> Result<Tensor> {
        self.binary(rhs, "mul", |a, b| a * b)
    }

    /// `self / rhs` with numpy broadcasting.
    pub fn div(&self, rhs: &Tensor) -> Result<Tensor> {
        self.binary(rhs, "div", |a, b| a / b)
    }

    /// `self * mul + add`.
    pub fn affine(&self, mul: f32, add: f32) -> Result<Tensor> {
        self.unary(|x| x * mul + add)
    }

    /// Exact (erf) GELU, PyTorch's default.
    pub fn gelu(&self) -> Result<Tensor> {
        self.unary(k::gelu)
    }

    /// `x · sigmoid(1.702 x)` (CLIP in SD 1.x).
    pub fn gelu_quick(&self) -> Result<Tensor> {
        self.unary(k::gelu_quick)
    }

    /// `x · sigmoid(x)`.
    pub fn silu(&self) -> Result<Tensor> {
        self.unary(k::silu)
    }

    /// Fused GEGLU over the last dim (size `2n`): `x[..., :n] · gelu(x[..., n:])`, giving `[..., n]`.
    pub fn geglu(&self) -> Result<Tensor> {
        let Some(&c) = self.dims().last() else {
            return Err(EngineError::shape("geglu", "needs rank >= 1, got a scalar"));
        };
        if !c.is_multiple_of(2) {
            return Err(EngineError::shape("geglu", format!("last dim {c} of {} is not even", self.shape())));
        }
        let out = k::geglu(&self.f32_data()?, c / 2);
        let mut dims = self.dims().to_vec();
        *dims.last_mut().expect("rank checked >= 1") = c / 2;
        Ok(Tensor::from_f32_out(out, dims, self.device()))
    }

    /// Clamps every element into `[min, max]`.
    pub fn clamp(&self, min: f32, max: f32) -> Result<Tensor> {
        if min.is_nan() || max.is_nan() || min > max {
            return Err(EngineError::invalid("clamp", format!("bounds [{min}, {max}] are not an interval")));
        }
        self.unary(|x| x.clamp(min, max))
    }

    /// Element-wise sine.
    pub fn sin(&self) -> Result<Tensor> {
        self.unary(f32::sin)
    }

    /// Element-wise cosine.
    pub fn cos(&self) -> Result<Tensor> {
        self.unary(f32::cos)
    }

    /// Element-wise `exp`.
    pub fn exp(&self) -> Result<Tensor> {
        self.unary(f32::exp)
    }

    /// Element-wise square root.
    pub fn sqrt(&self) -> Result<Tensor> {
        self.unary(f32::sqrt)
    }

    /// Numerically stable softmax over the last dim.
    pub fn softmax_last_dim(&self) -> Result<Tensor> {
        let Some(&c) = self.dims().last() else {
            return Err(EngineError::shape("softmax_last_dim", "needs rank >= 1, got a scalar"));
        };
        let out = k::map_rows(&self.f32_data()?, c, k::softmax_row);
        Ok(Tensor::from_f32_out(out, self.shape().clone(), self.device()))
    }

    fn reduce(&self, op: &'static str, dim: usize, keepdim: bool, mean: bool) -> Result<Tensor> {
        self.shape().check_dim(op, dim)?;
        let (outer, d, inner) = self.shape().split_at_dim(dim);
        let scale = if mean { 1.0 / d.max(1) as f64 } else { 1.0 };
        let out = k::sum_middle(&self.f32_data()?, outer, d, inner, scale);
        let mut dims = self.dims().to_vec();
        if keepdim {
            dims[dim] = 1;
        } else {
            dims.remove(dim);
        }
        Ok(Tensor::from_f32_out(out, dims, self.device()))
    }

    /// Sum over `dim` (kept as size 1 when `keepdim`).
    pub fn sum_dim(&self, dim: usize, keepdim: bool) -> Result<Tensor> {
        self.reduce("sum_dim", dim, keepdim, false)
    }

    /// Mean over `dim` (kept as size 1 when `keepdim`).
    pub fn mean_dim(&self, dim: usize, keepdim: bool) -> Result<Tensor> {
        self.reduce("mean_dim", dim, keepdim, true)
    }
}
