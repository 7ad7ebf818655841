//! Samplers and their sigma / timestep schedules.
//!
//! Latents are flat `f32` slices (any shape; the samplers are elementwise apart from the
//! model call). Schedules are computed in `f64` and handed to the model as `f32`.
//!
//! - [`names`]: request names (A1111, diffusers, Leonardo) → [`names::Resolved`].
//! - [`schedule`]: the discrete DDPM schedule from a `SchedulerConfig`, k-diffusion's
//!   `DiscreteEpsDDPMDenoiser` sigma↔t maps and A1111's sigma schedules.
//! - [`k_samplers`], [`k_more`]: k-diffusion samplers on a denoiser `D(x, sigma) -> x0`.
//! - [`lcm`], [`unipc`]: A1111's LCM and UniPC samplers.
//! - [`diffusers`]: diffusers' `set_timesteps` for each scheduler class.
//! - [`diffusers_steps`]: diffusers' step functions on an eps model `eps(x_in, t)`.
//! - [`prediction`]: which sampler supports which [`PredictionType`], decided once.
//! - [`run`]: [`sample_from`], the single dispatch for txt2img and img2img: resolved name +
//!   config + steps + where to start + model.
//! - [`brownian`]: a seeded Brownian-tree [`StepNoise`] for the SDE samplers.
//! - [`replay`]: [`ReplayNoise`], recorded step noise replayed in call order.
//!
//! Every sampler takes a progress callback `FnMut(step, total) -> ControlFlow<()>`, called
//! before each model evaluation step; `Break` stops with [`SamplerError::Cancelled`].
//! Noise for ancestral / SDE samplers comes from a [`StepNoise`], so callers choose the RNG
//! and tests can inject fixed noise.

pub mod brownian;
pub mod diffusers;
pub mod diffusers_steps;
pub mod k_more;
pub mod k_samplers;
pub mod lcm;
pub mod names;
pub mod prediction;
pub mod replay;
pub mod run;
pub mod schedule;
pub mod unipc;

use std::ops::ControlFlow;

pub use brownian::BrownianNoise;
pub use names::{DiffusersScheduler, KSampler, Resolved, Schedule, resolve};
pub use prediction::check_prediction;
pub use replay::ReplayNoise;
pub use run::{Start, levels, sample, sample_from};

use crate::sampling::PredictionType;

/// Why sampling (or resolving a sampler) failed.
#[derive(Debug, PartialEq, thiserror::Error)]
pub enum SamplerError {
    /// The sampler name is not known (gRPC `INVALID_ARGUMENT`).
    #[error("unknown sampler {name:?}; accepted: {}", accepted.join(", "))]
    UnknownSampler {
        /// The name as requested.
        name: String,
        /// Every accepted name.
        accepted: Vec<String>,
    },
    /// The schedule name is not known (gRPC `INVALID_ARGUMENT`).
    #[error("unknown schedule {name:?}; accepted: {}", accepted.join(", "))]
    UnknownSchedule {
        /// The name as requested.
        name: String,
        /// Every accepted name.
        accepted: Vec<String>,
    },
    /// The sampler does not take this schedule (gRPC `INVALID_ARGUMENT`).
    #[error("sampler {sampler:?} does not support schedule {schedule}")]
    UnsupportedSchedule {
        /// The sampler as requested.
        sampler: String,
        /// The schedule.
        schedule: String,
    },
    /// A configuration or argument the sampler cannot use (steps 0, unknown beta schedule...).
    #[error("{0}")]
    Invalid(String),
    /// The sampler is named but not implemented yet.
    #[error("sampler {0} is not implemented")]
    NotImplemented(String),
    /// The progress callback asked to stop.
    #[error("cancelled")]
    Cancelled,
    /// The sampler cannot run a model that predicts this (gRPC `INVALID_ARGUMENT`).
    #[error("prediction_type \"{prediction}\" is not supported by sampler {sampler:?}")]
    UnsupportedPrediction {
        /// What the checkpoint's UNet predicts.
        prediction: PredictionType,
        /// The sampler, by the name it was resolved from (A1111 name or diffusers class).
        sampler: String,
    },
    /// The model call failed; the model's own error is kept (the pipeline recovers its
    /// `ModelError` by downcasting).
    #[error("model: {0}")]
    Model(#[source] ModelFailure),
}

impl SamplerError {
    /// [`SamplerError::Model`] for `error` (the model's error, or a message).
    pub fn model(
        error: impl Into<Box<dyn std::error::Error + Send + Sync + 'static>>,
    ) -> SamplerError {
        SamplerError::Model(ModelFailure(error.into()))
    }
}

/// The model's own error, carried through a sampler by [`SamplerError::Model`]; two compare
/// equal when their messages do.
#[derive(Debug, thiserror::Error)]
#[error(transparent)]
pub struct ModelFailure(pub Box<dyn std::error::Error + Send + Sync + 'static>);

impl PartialEq for ModelFailure {
    fn eq(&self, other: &Self) -> bool {
        self.0.to_string() == other.0.to_string()
    }
}

/// The progress / cancel callback: `(step, total)`, `step` counting from 0.
pub type Progress<'a> = &'a mut dyn FnMut(usize, usize) -> ControlFlow<()>;

/// Where ancestral and SDE samplers get their noise.
pub trait StepNoise {
    /// Standard normal noise of `len` elements for the step from `sigma` to `sigma_next`
    /// (diffusers samplers pass timesteps as `sigma`).
    fn noise(&mut self, sigma: f64, sigma_next: f64, len: usize) -> Vec<f32>;
}

impl<F: FnMut(f64, f64, usize) -> Vec<f32>> StepNoise for F {
    fn noise(&mut self, sigma: f64, sigma_next: f64, len: usize) -> Vec<f32> {
        self(sigma, sigma_next, len)
    }
}

/// Calls `progress` and turns `Break` into [`SamplerError::Cancelled`].
pub(crate) fn tick(
    progress: &mut Progress<'_>,
    step: usize,
    total: usize,
) -> Result<(), SamplerError> {
    match progress(step, total) {
        ControlFlow::Continue(()) => Ok(()),
        ControlFlow::Break(()) => Err(SamplerError::Cancelled),
    }
}

/// `a * x + b * y`, elementwise.
pub(crate) fn lin2(a: f64, x: &[f32], b: f64, y: &[f32]) -> Vec<f32> {
    let (a, b) = (a as f32, b as f32);
    x.iter().zip(y).map(|(x, y)| a * x + b * y).collect()
}
