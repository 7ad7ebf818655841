//! Where layers get their weights: a small lookup trait, as candle's `VarBuilder`, so `nn`
//! knows nothing about checkpoint formats.

use crate::engine::{DType, Device, Tensor};

use super::NnError;

/// A named store of weights (a checkpoint component, a test's in-memory map, ...).
pub trait WeightSource {
    /// Tensor `name` on `device`, which must have shape `shape`; an error names the tensor
    /// and the expected shape.
    fn get(&self, name: &str, shape: &[usize], device: &Device) -> Result<Tensor, NnError>;
}

/// Tensor `name` of `weights` in f32: for the small per-channel parameters (norm scales and
/// shifts, convolution biases) that every backend applies in f32. Converted once here, when a
/// half-precision model is loaded, instead of by a cast kernel on every call (two or three per
/// norm and convolution: about 300 launches a guided SD 1.5 step on a GPU otherwise made).
pub(crate) fn get_f32(
    weights: &dyn WeightSource,
    name: &str,
    shape: &[usize],
    device: &Device,
) -> Result<Tensor, NnError> {
    Ok(weights.get(name, shape, device)?.to_dtype(DType::F32)?)
}
