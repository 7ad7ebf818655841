//! Emphasis on the text encoder's output: A1111's "Original" emphasis
//! (`EmphasisOriginal.after_transformers` in `modules/sd_emphasis.py`, formerly inline in
//! `process_tokens` of `modules/sd_hijack_clip.py`):
//!
//! ```text
//! original_mean = z.mean()
//! z = z * multipliers[..., None]
//! z = z * (original_mean / z.mean())
//! ```
//!
//! The means are over the whole tensor (every token of every batch entry). Sums run in f64.
//! One deliberate difference: when the weighted mean is zero or not finite (all multipliers
//! zero, say) A1111 divides by it and gets inf/NaN; here the rescale is skipped instead.

use crate::engine::{EngineError, Result, Tensor};

/// Mean of `values`, summed in f64.
fn mean(values: &[f32]) -> f64 {
    if values.is_empty() {
        return 0.0;
    }
    values.iter().map(|&v| f64::from(v)).sum::<f64>() / values.len() as f64
}

/// Applies `multipliers` (one per token) to `z` (row-major `[tokens, channels]`, any
/// leading batch dims folded into `tokens`) in place and restores the original mean.
///
/// Fails when `z.len()` is not a multiple of `multipliers.len()` (or `multipliers` is
/// empty while `z` is not).
pub fn apply_emphasis(z: &mut [f32], multipliers: &[f32]) -> Result<()> {
    if z.is_empty() && multipliers.is_empty() {
        return Ok(());
    }
    if multipliers.is_empty() || !z.len().is_multiple_of(multipliers.len()) {
        return Err(EngineError::shape(
            "emphasis",
            format!(
                "{} values do not split into {} tokens",
                z.len(),
                multipliers.len()
            ),
        ));
    }
    let channels = z.len() / multipliers.len();
    let original_mean = mean(z);
    if channels > 0 {
        for (row, &m) in z.chunks_exact_mut(channels).zip(multipliers) {
            row.iter_mut().for_each(|v| *v *= m);
        }
    }
    let new_mean = mean(z);
    if new_mean != 0.0 && new_mean.is_finite() {
        let scale = (original_mean / new_mean) as f32;
        z.iter_mut().for_each(|v| *v *= scale);
    }
    Ok(())
}

/// [`apply_emphasis`] on an encoder output of shape `[..., tokens, channels]` whose
/// leading dims times `tokens` equal `multipliers.len()`; returns a tensor of the same
/// shape, dtype and device.
pub fn emphasize(z: &Tensor, multipliers: &[f32]) -> Result<Tensor> {
    let dims = z.dims();
    let rows: usize = dims.iter().rev().skip(1).product();
    if dims.len() < 2 || rows != multipliers.len() {
        return Err(EngineError::shape(
            "emphasis",
            format!(
                "shape {dims:?} does not match {} multipliers",
                multipliers.len()
            ),
        ));
    }
    let mut data = z.to_vec_f32()?;
    apply_emphasis(&mut data, multipliers)?;
    Tensor::from_vec(data, z.shape().clone(), z.device())?.to_dtype(z.dtype())
}
