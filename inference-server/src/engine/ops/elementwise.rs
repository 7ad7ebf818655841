//! Element-wise ops: broadcast arithmetic, activations, softmax, reductions. Each checks its
//! shapes, then hands the op (as data) to the storage's backend.

use crate::engine::dtype::DType;
use crate::engine::error::{EngineError, Result};
use crate::engine::op::{AxisGeom, BinaryOp, BroadcastGeom, ReduceOp, UnaryOp};
use crate::engine::tensor::Tensor;

/// The dtype two operands of different dtypes compute in: their common one, else f32 (as
/// torch promotes f16 with bf16 or f32).
pub(crate) fn promote(a: DType, b: DType) -> DType {
    if a == b { a } else { DType::F32 }
}

/// `tensors` converted to their common dtype (see [`promote`]); clones when they already agree.
pub(crate) fn promoted(tensors: &[&Tensor]) -> Result<Vec<Tensor>> {
    let dtype = tensors
        .iter()
        .map(|t| t.dtype())
        .reduce(promote)
        .unwrap_or(DType::F32);
    tensors.iter().map(|t| t.to_dtype(dtype)).collect()
}

/// The numpy broadcast of two shapes (right-aligned), with each input's strides over it
/// (0 on broadcast dims).
pub(crate) fn broadcast(
    op: &'static str,
    a: &[usize],
    b: &[usize],
) -> Result<(Vec<usize>, Vec<usize>, Vec<usize>)> {
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
                return Err(EngineError::shape(
                    op,
                    format!("shapes {a:?} and {b:?} do not broadcast"),
                ));
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
    fn binary(&self, rhs: &Tensor, op: BinaryOp) -> Result<Tensor> {
        let name = op.kernel_name();
        self.same_device(name, &[rhs])?;
        let (dims, lhs_strides, rhs_strides) = broadcast(name, self.dims(), rhs.dims())?;
        let g = BroadcastGeom {
            dims,
            lhs_strides,
            rhs_strides,
        };
        let [a, b]: [Tensor; 2] = promoted(&[self, rhs])?.try_into().expect("two operands");
        let storage = a.storage().binary(a.view_in_storage(), b.arg(), op, &g)?;
        // A rank-0 pair broadcasts as [1]; give the result back its scalar shape.
        let dims = if self.rank() == 0 && rhs.rank() == 0 {
            Vec::new()
        } else {
            g.dims
        };
        Ok(Tensor::from_storage(storage, dims))
    }

    fn unary(&self, op: UnaryOp) -> Result<Tensor> {
        let storage = self.storage().unary(self.view_in_storage(), op)?;
        Ok(Tensor::from_storage(storage, self.shape().clone()))
    }

    /// `self + rhs` with numpy broadcasting.
    pub fn add(&self, rhs: &Tensor) -> Result<Tensor> {
        self.binary(rhs, BinaryOp::Add)
    }

    /// `self - rhs` with numpy broadcasting.
    pub fn sub(&self, rhs: &Tensor) -> Result<Tensor> {
        self.binary(rhs, BinaryOp::Sub)
    }

    /// `self * rhs` with numpy broadcasting.
    pub fn mul(&self, rhs: &Tensor) -> Result<Tensor> {
        self.binary(rhs, BinaryOp::Mul)
    }

    /// `self / rhs` with numpy broadcasting.
    pub fn div(&self, rhs: &Tensor) -> Result<Tensor> {
        self.binary(rhs, BinaryOp::Div)
    }

    /// `self * mul + add`.
    pub fn affine(&self, mul: f32, add: f32) -> Result<Tensor> {
        self.unary(UnaryOp::Affine { mul, add })
    }

    /// Exact (erf) GELU, PyTorch's default.
    pub fn gelu(&self) -> Result<Tensor> {
        self.unary(UnaryOp::Gelu)
    }

    /// `x · sigmoid(1.702 x)` (CLIP in SD 1.x).
    pub fn gelu_quick(&self) -> Result<Tensor> {
        self.unary(UnaryOp::GeluQuick)
    }

    /// `x · sigmoid(x)`.
    pub fn silu(&self) -> Result<Tensor> {
        self.unary(UnaryOp::Silu)
    }

    /// Fused GEGLU over the last dim (size `2n`): `x[..., :n] · gelu(x[..., n:])`, giving `[..., n]`.
    pub fn geglu(&self) -> Result<Tensor> {
        let Some(&c) = self.dims().last() else {
            return Err(EngineError::shape("geglu", "needs rank >= 1, got a scalar"));
        };
        if !c.is_multiple_of(2) {
            return Err(EngineError::shape(
                "geglu",
                format!("last dim {c} of {} is not even", self.shape()),
            ));
        }
        let storage = self.storage().geglu(self.view_in_storage(), c / 2)?;
        let mut dims = self.dims().to_vec();
        *dims.last_mut().expect("rank checked >= 1") = c / 2;
        Ok(Tensor::from_storage(storage, dims))
    }

    /// Clamps every element into `[min, max]`.
    pub fn clamp(&self, min: f32, max: f32) -> Result<Tensor> {
        if min.is_nan() || max.is_nan() || min > max {
            return Err(EngineError::invalid(
                "clamp",
                format!("bounds [{min}, {max}] are not an interval"),
            ));
        }
        self.unary(UnaryOp::Clamp { min, max })
    }

    /// Element-wise sine.
    pub fn sin(&self) -> Result<Tensor> {
        self.unary(UnaryOp::Sin)
    }

    /// Element-wise cosine.
    pub fn cos(&self) -> Result<Tensor> {
        self.unary(UnaryOp::Cos)
    }

    /// Element-wise `exp`.
    pub fn exp(&self) -> Result<Tensor> {
        self.unary(UnaryOp::Exp)
    }

    /// Element-wise square root.
    pub fn sqrt(&self) -> Result<Tensor> {
        self.unary(UnaryOp::Sqrt)
    }

    /// Numerically stable softmax over the last dim.
    pub fn softmax_last_dim(&self) -> Result<Tensor> {
        let Some(&c) = self.dims().last() else {
            return Err(EngineError::shape(
                "softmax_last_dim",
                "needs rank >= 1, got a scalar",
            ));
        };
        let storage = self.storage().softmax_last_dim(self.view_in_storage(), c)?;
        Ok(Tensor::from_storage(storage, self.shape().clone()))
    }

    fn reduce(
        &self,
        name: &'static str,
        dim: usize,
        keepdim: bool,
        op: ReduceOp,
    ) -> Result<Tensor> {
        self.shape().check_dim(name, dim)?;
        let (outer, mid, inner) = self.shape().split_at_dim(dim);
        let storage =
            self.storage()
                .reduce(self.view_in_storage(), op, AxisGeom { outer, mid, inner })?;
        let mut dims = self.dims().to_vec();
        if keepdim {
            dims[dim] = 1;
        } else {
            dims.remove(dim);
        }
        Ok(Tensor::from_storage(storage, dims))
    }

    /// Sum over `dim` (kept as size 1 when `keepdim`).
    pub fn sum_dim(&self, dim: usize, keepdim: bool) -> Result<Tensor> {
        self.reduce("sum_dim", dim, keepdim, ReduceOp::Sum)
    }

    /// Mean over `dim` (kept as size 1 when `keepdim`).
    pub fn mean_dim(&self, dim: usize, keepdim: bool) -> Result<Tensor> {
        self.reduce("mean_dim", dim, keepdim, ReduceOp::Mean)
    }
}
