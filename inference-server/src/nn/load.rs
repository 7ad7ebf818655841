//! Where layers get their weights: a small lookup trait, as candle's `VarBuilder`, so `nn`
//! knows nothing about checkpoint formats.

use crate::engine::{Device, Tensor};

use super::NnError;

/// A named store of weights (a checkpoint component, a test's in-memory map, ...).
pub trait WeightSource {
    /// Tensor `name` on `device`, which must have shape `shape`; an error names the tensor
    /// and the expected shape.
    fn get(&self, name: &str, shape: &[usize], device: &Device) -> Result<Tensor, NnError>;
}
