//! `Tensor` op methods, split by family. Each method checks shapes and devices (backend
//! independent), then hands the op to the storage (`storage.rs`), which dispatches to a backend.

mod elementwise;
mod layout;
mod matmul;
mod nn;
mod pad;

use super::error::{EngineError, Result};
use super::tensor::Tensor;

/// Checks that `t` has rank `rank` for `op`.
pub(crate) fn expect_rank(op: &'static str, what: &str, t: &Tensor, rank: usize) -> Result<()> {
    if t.rank() != rank {
        return Err(EngineError::shape(
            op,
            format!("{what} must have rank {rank}, got shape {}", t.shape()),
        ));
    }
    Ok(())
}

/// Checks that `t` is a vector of length `len` for `op`.
pub(crate) fn expect_vec(op: &'static str, what: &str, t: &Tensor, len: usize) -> Result<()> {
    if t.dims() != [len] {
        return Err(EngineError::shape(
            op,
            format!("{what} must have shape [{len}], got {}", t.shape()),
        ));
    }
    Ok(())
}
