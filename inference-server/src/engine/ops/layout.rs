//! Layout ops: transpose, permute, narrow, cat, index_select. They keep the input dtype.

use super::elementwise::promoted;
use crate::engine::error::{EngineError, Result};
use crate::engine::op::{AxisGeom, StridedGeom};
use crate::engine::shape::Shape;
use crate::engine::storage::Storage;
use crate::engine::tensor::Tensor;

impl Tensor {
    /// Swaps dims `d0` and `d1` (copies).
    pub fn transpose(&self, d0: usize, d1: usize) -> Result<Tensor> {
        let rank = self.rank();
        for d in [d0, d1] {
            if d >= rank {
                return Err(EngineError::invalid(
                    "transpose",
                    format!(
                        "dim {d} out of range for rank {rank} shape {}",
                        self.shape()
                    ),
                ));
            }
        }
        let mut perm: Vec<usize> = (0..rank).collect();
        perm.swap(d0, d1);
        self.permute(&perm)
    }

    /// Reorders dims: output dim `i` is input dim `dims[i]` (copies).
    pub fn permute(&self, dims: &[usize]) -> Result<Tensor> {
        let rank = self.rank();
        let mut seen = vec![false; rank];
        if dims.len() != rank
            || dims
                .iter()
                .any(|&d| d >= rank || std::mem::replace(&mut seen[d], true))
        {
            return Err(EngineError::invalid(
                "permute",
                format!(
                    "{dims:?} is not a permutation of the {rank} dims of shape {}",
                    self.shape()
                ),
            ));
        }
        if dims.iter().enumerate().all(|(i, &d)| i == d) {
            return Ok(self.clone());
        }
        let in_strides = self.shape().strides();
        let out_dims: Vec<usize> = dims.iter().map(|&d| self.dims()[d]).collect();
        let strides: Vec<usize> = dims.iter().map(|&d| in_strides[d]).collect();
        let g = StridedGeom {
            start: self.offset(),
            dims: out_dims,
            strides,
        };
        Ok(Tensor::from_storage(
            self.storage().strided_copy(&g)?,
            g.shape(),
        ))
    }

    /// Elements `start..start + len` along `dim`. Zero copy when all outer dims are 1.
    pub fn narrow(&self, dim: usize, start: usize, len: usize) -> Result<Tensor> {
        self.shape().check_dim("narrow", dim)?;
        let size = self.dims()[dim];
        if start.checked_add(len).is_none_or(|end| end > size) {
            return Err(EngineError::invalid(
                "narrow",
                format!(
                    "range {start}..{start}+{len} exceeds dim {dim} of size {size} (shape {})",
                    self.shape()
                ),
            ));
        }
        let (outer, _, inner) = self.shape().split_at_dim(dim);
        let mut out_dims = self.dims().to_vec();
        out_dims[dim] = len;
        if outer == 1 || len == 0 {
            return Ok(self.view(self.offset() + start * inner, out_dims.into()));
        }
        let g = StridedGeom {
            start: self.offset() + start * inner,
            dims: vec![outer, len * inner],
            strides: vec![size * inner, 1],
        };
        Ok(Tensor::from_storage(
            self.storage().strided_copy(&g)?,
            out_dims,
        ))
    }

    /// Splits `dim` into `n` equal parts (like `torch.chunk` when the size divides evenly).
    pub fn chunk(&self, n: usize, dim: usize) -> Result<Vec<Tensor>> {
        self.shape().check_dim("chunk", dim)?;
        let size = self.dims()[dim];
        if n == 0 || !size.is_multiple_of(n) {
            return Err(EngineError::invalid(
                "chunk",
                format!("dim {dim} of size {size} does not split into {n} equal parts"),
            ));
        }
        (0..n)
            .map(|i| self.narrow(dim, i * size / n, size / n))
            .collect()
    }

    /// Inserts a dim of size 1 at `dim` (`dim <= rank`); shares storage.
    pub fn unsqueeze(&self, dim: usize) -> Result<Tensor> {
        if dim > self.rank() {
            return Err(EngineError::invalid(
                "unsqueeze",
                format!("dim {dim} out of range for rank {}", self.rank()),
            ));
        }
        let mut dims = self.dims().to_vec();
        dims.insert(dim, 1);
        self.reshape(dims)
    }

    /// Removes dim `dim`, which must have size 1; shares storage.
    pub fn squeeze(&self, dim: usize) -> Result<Tensor> {
        self.shape().check_dim("squeeze", dim)?;
        if self.dims()[dim] != 1 {
            return Err(EngineError::shape(
                "squeeze",
                format!("dim {dim} of {} has size != 1", self.shape()),
            ));
        }
        let mut dims = self.dims().to_vec();
        dims.remove(dim);
        self.reshape(dims)
    }

    /// Concatenates along `dim`; all other dims must match. Keeps the dtype when all inputs
    /// share one, else returns F32. All inputs must be on one device.
    pub fn cat(tensors: &[&Tensor], dim: usize) -> Result<Tensor> {
        let Some(first) = tensors.first() else {
            return Err(EngineError::invalid("cat", "needs at least one tensor"));
        };
        first.shape().check_dim("cat", dim)?;
        let mut out_dims = first.dims().to_vec();
        out_dims[dim] = 0;
        for t in tensors {
            let same_rank = t.rank() == first.rank();
            if !same_rank
                || t.dims()
                    .iter()
                    .zip(first.dims())
                    .enumerate()
                    .any(|(i, (a, b))| i != dim && a != b)
            {
                return Err(EngineError::shape(
                    "cat",
                    format!(
                        "shapes {} and {} differ outside dim {dim}",
                        first.shape(),
                        t.shape()
                    ),
                ));
            }
            out_dims[dim] += t.dims()[dim];
        }
        first.same_device("cat", tensors)?;
        let (outer, _, inner) = first.shape().split_at_dim(dim);
        let parts = promoted(tensors)?;
        let args: Vec<_> = parts.iter().map(|t| t.arg()).collect();
        let mids: Vec<usize> = parts.iter().map(|t| t.dims()[dim]).collect();
        Ok(Tensor::from_storage(
            Storage::cat(&args, &mids, outer, inner)?,
            Shape::from(out_dims),
        ))
    }

    /// Picks entries `ids` along `dim` (embedding lookup: `weight.index_select(ids, 0)`).
    /// An id ≥ the dim size is an error. Keeps the dtype.
    pub fn index_select(&self, ids: &[u32], dim: usize) -> Result<Tensor> {
        self.shape().check_dim("index_select", dim)?;
        let size = self.dims()[dim];
        if let Some(bad) = ids.iter().find(|&&i| i as usize >= size) {
            return Err(EngineError::invalid(
                "index_select",
                format!(
                    "id {bad} out of range for dim {dim} of size {size} (shape {})",
                    self.shape()
                ),
            ));
        }
        let (outer, mid, inner) = self.shape().split_at_dim(dim);
        let mut out_dims = self.dims().to_vec();
        out_dims[dim] = ids.len();
        let storage = self.storage().index_select(
            self.view_in_storage(),
            ids,
            AxisGeom { outer, mid, inner },
        )?;
        Ok(Tensor::from_storage(storage, out_dims))
    }
}
