//! Matrix products: batched `matmul` and `linear`. Shapes are checked here; the backend
//! decides how (the CPU streams half-precision weights in blocks, see `cpu/matmul.rs`).

use super::elementwise::{broadcast, promoted};
use super::expect_vec;
use crate::engine::error::{EngineError, Result};
use crate::engine::op::{LinearGeom, MatmulGeom};
use crate::engine::tensor::Tensor;

impl Tensor {
    /// `[..., m, k] · [..., k, n] -> [..., m, n]`; batch dims broadcast like numpy.
    pub fn matmul(&self, rhs: &Tensor) -> Result<Tensor> {
        let (ad, bd) = (self.dims(), rhs.dims());
        if ad.len() < 2 || bd.len() < 2 {
            return Err(EngineError::shape(
                "matmul",
                format!(
                    "operands need rank >= 2, got {} and {}",
                    self.shape(),
                    rhs.shape()
                ),
            ));
        }
        let (m, k) = (ad[ad.len() - 2], ad[ad.len() - 1]);
        let (k2, n) = (bd[bd.len() - 2], bd[bd.len() - 1]);
        if k != k2 {
            return Err(EngineError::shape(
                "matmul",
                format!(
                    "inner dims {k} and {k2} differ ({} x {})",
                    self.shape(),
                    rhs.shape()
                ),
            ));
        }
        let (a_batch, b_batch) = (&ad[..ad.len() - 2], &bd[..bd.len() - 2]);
        let (batch_dims, a_str, b_str) = if a_batch.is_empty() && b_batch.is_empty() {
            (Vec::new(), vec![0], vec![0])
        } else {
            broadcast("matmul", a_batch, b_batch)?
        };
        self.same_device("matmul", &[rhs])?;
        let g = MatmulGeom {
            batch_dims,
            lhs_batch_strides: a_str,
            rhs_batch_strides: b_str,
            m,
            k,
            n,
        };
        let [a, b]: [Tensor; 2] = promoted(&[self, rhs])?.try_into().expect("two operands");
        let storage = a.storage().matmul(a.view_in_storage(), b.arg(), &g)?;
        let mut dims = g.batch_dims;
        dims.extend_from_slice(&[m, n]);
        Ok(Tensor::from_storage(storage, dims))
    }

    /// `x[..., in] · weight[out, in]ᵀ + bias[out]`, in `x`'s dtype. The weight may be of another
    /// dtype (an f16 checkpoint with f32 activations); on the CPU it is converted a block of rows
    /// at a time, never as a whole.
    pub fn linear(&self, weight: &Tensor, bias: Option<&Tensor>) -> Result<Tensor> {
        self.linear_with(weight, bias, false)
    }

    /// `linear` followed by diffusers' GEGLU (`a · gelu(gate)` of the product's two halves, the
    /// feed-forward input of a transformer block): `[..., out / 2]`, `out` even. The CPU's
    /// bf16 path applies the gate as each tile leaves the GEMM, with no `[..., out]`
    /// intermediate.
    pub fn linear_geglu(&self, weight: &Tensor, bias: Option<&Tensor>) -> Result<Tensor> {
        self.linear_with(weight, bias, true)
    }

    fn linear_with(&self, weight: &Tensor, bias: Option<&Tensor>, geglu: bool) -> Result<Tensor> {
        let op = if geglu { "linear_geglu" } else { "linear" };
        let wd = weight.dims();
        if wd.len() != 2 {
            return Err(EngineError::shape(
                op,
                format!("weight must be [out, in], got {}", weight.shape()),
            ));
        }
        let (n_out, n_in) = (wd[0], wd[1]);
        let Some(&x_in) = self.dims().last() else {
            return Err(EngineError::shape(
                op,
                "input must have rank >= 1, got a scalar",
            ));
        };
        if x_in != n_in {
            return Err(EngineError::shape(
                op,
                format!(
                    "input features {x_in} (shape {}) differ from weight in-features {n_in}",
                    self.shape()
                ),
            ));
        }
        if let Some(b) = bias {
            expect_vec(op, "bias", b, n_out)?;
        }
        let rows: usize = self.dims()[..self.rank() - 1].iter().product();
        let others: Vec<&Tensor> = std::iter::once(weight).chain(bias).collect();
        self.same_device(op, &others)?;
        if geglu && n_out % 2 == 1 {
            return Err(EngineError::shape(
                op,
                format!("GEGLU needs an even number of out-features, got {n_out}"),
            ));
        }
        let g = LinearGeom {
            rows,
            n_in,
            n_out,
            geglu,
        };
        let storage = self.storage().linear(
            self.view_in_storage(),
            weight.arg(),
            bias.map(Tensor::arg),
            g,
        )?;
        let mut dims = self.dims().to_vec();
        *dims.last_mut().expect("rank checked >= 1") = if geglu { n_out / 2 } else { n_out };
        Ok(Tensor::from_storage(storage, dims))
    }
}
