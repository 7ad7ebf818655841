//! What each sampler does with the model's [`PredictionType`], decided in one place: every
//! sampling path asks [`check_prediction`] first, so an unsupported combination is an error
//! naming both rather than a wrong image.

use super::SamplerError;
use super::lin2;
use super::names::{DiffusersScheduler, KSampler, Resolved};
use crate::sampling::PredictionType;

/// Whether `resolved` runs a model that predicts `prediction`:
/// - A1111 / k-diffusion samplers wrap the UNet in `DiscreteEpsDDPMDenoiser` or
///   `DiscreteVDDPMDenoiser` (DDIM and UniPC in `CompVisTimestepsVDenoiser`): epsilon and v;
///   LCM epsilon only. k-diffusion has no denoiser for `sample`.
/// - diffusers classes as diffusers implements them: DDIM and DPM-Solver take all three;
///   Euler, Euler ancestral, LMS and PNDM raise for `sample`.
pub fn supports(resolved: Resolved, prediction: PredictionType) -> bool {
    match (resolved, prediction) {
        (_, PredictionType::Epsilon) => true,
        (Resolved::A1111 { sampler, .. }, PredictionType::VPrediction) => sampler != KSampler::Lcm,
        (Resolved::A1111 { .. }, PredictionType::Sample) => false,
        (Resolved::Diffusers { .. }, PredictionType::VPrediction) => true,
        (Resolved::Diffusers { scheduler, .. }, PredictionType::Sample) => {
            matches!(
                scheduler,
                DiffusersScheduler::Ddim | DiffusersScheduler::DpmSolverMultistep
            )
        }
    }
}

/// [`SamplerError::UnsupportedPrediction`] unless `resolved` [`supports`] `prediction`.
pub fn check_prediction(
    resolved: Resolved,
    prediction: PredictionType,
) -> Result<(), SamplerError> {
    match supports(resolved, prediction) {
        true => Ok(()),
        false => {
            let sampler = match resolved {
                Resolved::A1111 { sampler, .. } => sampler.name(),
                Resolved::Diffusers { scheduler, .. } => scheduler.class_name(),
            };
            Err(unsupported(sampler, prediction))
        }
    }
}

/// The error for `sampler` (by name) given a model that predicts `prediction`.
pub(super) fn unsupported(sampler: &str, prediction: PredictionType) -> SamplerError {
    SamplerError::UnsupportedPrediction {
        prediction,
        sampler: sampler.into(),
    }
}

/// `(x0, eps)` from a model output `out` for `x = alpha·x0 + sigma·eps` (VP form).
pub fn x0_eps(
    prediction: PredictionType,
    x: &[f32],
    out: &[f32],
    alpha: f64,
    sigma: f64,
) -> (Vec<f32>, Vec<f32>) {
    match prediction {
        PredictionType::Epsilon => (lin2(1.0 / alpha, x, -sigma / alpha, out), out.to_vec()),
        PredictionType::VPrediction => (lin2(alpha, x, -sigma, out), lin2(sigma, x, alpha, out)),
        PredictionType::Sample => (out.to_vec(), lin2(1.0 / sigma, x, -alpha / sigma, out)),
    }
}
