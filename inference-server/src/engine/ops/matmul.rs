//! Matrix products: batched `matmul` and `linear` (with half-precision weights streamed in blocks).

use rayon::prelude::*;

use super::elementwise::broadcast;
use super::expect_vec;
use crate::engine::cpu::gemm::{sgemm, Mat, Par};
use crate::engine::error::{EngineError, Result};
use crate::engine::storage::CpuSlice;
use crate::engine::tensor::Tensor;

/// f32 elements of converted weight rows held at once by `linear` for half-precision weights.
const LINEAR_SCRATCH: usize = 1 << 22;

/// Multiply-adds per matrix below which `matmul` parallelises over the batch instead of inside gemm.
const BATCH_PAR_BELOW: usize = 64 * 64 * 64;

impl Tensor {
    /// `[..., m, k] · [..., k, n] -> [..., m, n]`; batch dims broadcast like numpy.
    pub fn matmul(&self, rhs: &Tensor) -> Result<Tensor> {
        let (ad, bd) = (self.dims(), rhs.dims());
        if ad.len() < 2 || bd.len() < 2 {
            return Err(EngineError::shape(
                "matmul",
                format!("operands need rank >= 2, got {} and {}", self.shape(), rhs.shape()),
            ));
        }
        let (m, k) = (ad[ad.len() - 2], ad[ad.len() - 1]);
        let (k2, n) = (bd[bd.len() - 2], bd[bd.len() - 1]);
        if k != k2 {
            return Err(EngineError::shape(
                "matmul",
                format!("inner dims {k} and {k2} differ ({} x {})", self.shape(), rhs.shape()),
            ));
        }
        let (a_batch, b_batch) = (&ad[..ad.len() - 2], &bd[..bd.len() - 2]);
        let (batch_dims, a_str, b_str) = if a_batch.is_empty() && b_batch.is_empty() {
            (Vec::new(), vec![0], vec![0])
        } else {
            broadcast("matmul", a_batch, b_batch)?
        };
        let batch: usize = batch_dims.iter().product();
        let (a, b) = (self.f32_data()?, rhs.f32_data()?);
        // Matrix index of each operand for flat batch index `i`.
        let locate = |i: usize| -> (usize, usize) {
            let (mut rem, mut ai, mut bi) = (i, 0, 0);
            for d in (0..batch_dims.len()).rev() {
                let idx = rem % batch_dims[d];
                rem /= batch_dims[d];
                ai += idx * a_str[d];
                bi += idx * b_str[d];
            }
            (ai, bi)
        };
        let mut out = vec![0f32; batch * m * n];
        let one = |(i, dst): (usize, &mut [f32]), par: Par| {
            let (ai, bi) = locate(i);
            let lhs = Mat::rows(&a[ai * m * k..(ai + 1) * m * k], k);
            let rhs = Mat::rows(&b[bi * k * n..(bi + 1) * k * n], n);
            sgemm(m, n, k, lhs, rhs, dst, n, false, par);
        };
        if m * n > 0 {
            if batch > 1 && m * n * k < BATCH_PAR_BELOW {
                out.par_chunks_mut(m * n).enumerate().for_each(|x| one(x, Par::Serial));
            } else {
                out.chunks_mut(m * n).enumerate().for_each(|x| one(x, Par::Auto));
            }
        }
        let mut dims = batch_dims;
        dims.extend_from_slice(&[m, n]);
        Ok(Tensor::from_f32_out(out, dims, self.device()))
    }

    /// `x[..., in] · weight[out, in]ᵀ + bias[out]`. A half-precision weight (also mmap-backed) is
    /// converted to f32 a block of rows at a time into a bounded scratch buffer, never as a whole.
    pub fn linear(&self, weight: &Tensor, bias: Option<&Tensor>) -> Result<Tensor> {
        let wd = weight.dims();
        if wd.len() != 2 {
            return Err(EngineError::shape("linear", format!("weight must be [out, in], got {}", weight.shape())));
        }
        let (n_out, n_in) = (wd[0], wd[1]);
        let Some(&x_in) = self.dims().last() else {
            return Err(EngineError::shape("linear", "input must have rank >= 1, got a scalar"));
        };
        if x_in != n_in {
            return Err(EngineError::shape(
                "linear",
                format!("input features {x_in} (shape {}) differ from weight in-features {n_in}", self.shape()),
            ));
        }
        if let Some(b) = bias {
            expect_vec("linear", "bias", b, n_out)?;
        }
        let rows: usize = self.dims()[..self.rank() - 1].iter().product();
        let x = self.f32_data()?;
        let mut out = vec![0f32; rows * n_out];
        if let Some(b) = bias {
            let b = b.f32_data()?;
            for row in out.chunks_mut(n_out.max(1)) {
                row.copy_from_slice(&b);
            }
        }
        let acc = bias.is_some();
        let lhs = Mat::rows(&x, n_in);
        match weight.cpu_slice()? {
            CpuSlice::F32(w) => sgemm(rows, n_out, n_in, lhs, Mat::rows_t(w, n_in), &mut out, n_out, acc, Par::Auto),
            w => {
                let block = (LINEAR_SCRATCH / n_in.max(1)).clamp(16, n_out.max(16));
                let mut scratch = vec![0f32; block.min(n_out) * n_in];
                let mut o0 = 0;
                while o0 < n_out {
                    let ob = block.min(n_out - o0);
                    let s = &mut scratch[..ob * n_in];
                    w.convert_range_par(o0 * n_in, s);
                    sgemm(rows, ob, n_in, lhs, Mat::rows_t(s, n_in), &mut out[o0..], n_out, acc, Par::Auto);
                    o0 += ob;
                }
            }
        }
        let mut dims = self.dims().to_vec();
        *dims.last_mut().expect("rank checked >= 1") = n_out;
        Ok(Tensor::from_f32_out(out, dims, self.device()))
    }
}
