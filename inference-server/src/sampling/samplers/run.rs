//! One entry point for the pipeline: a resolved sampler, the model's scheduler config, a step
//! count, an eps (or v) model and unit noise in; the final latent out.

use super::diffusers::set_timesteps;
use super::k_samplers::{self, EpsDenoiser, EpsModel};
use super::names::{KSampler, Resolved};
use super::schedule::DiscreteSchedule;
use super::{NoiseSource, Progress, SamplerError, diffusers_steps, k_more};
use crate::model::weights::SchedulerConfig;

/// The noise levels a run steps through: A1111 sigmas (`steps + 1`, ending in 0) for
/// sigma samplers, A1111 DDIM's timesteps, or diffusers' timesteps. Useful to size a
/// Brownian noise source (`sigma_min` = smallest positive, `sigma_max` = first).
pub fn levels(resolved: Resolved, config: &SchedulerConfig, steps: usize) -> Result<Vec<f64>, SamplerError> {
    match resolved {
        Resolved::A1111 { sampler, schedule } if !sampler.is_timestep_sampler() => {
            DiscreteSchedule::new(config)?.a1111_sigmas(sampler, schedule, steps)
        }
        Resolved::A1111 { sampler: KSampler::Ddim, .. } => Ok(k_samplers::a1111_ddim_timesteps(
            config.num_train_timesteps,
            steps.max(1),
        )
        .into_iter()
        .map(|t| t as f64)
        .collect()),
        Resolved::A1111 { sampler, .. } => Err(SamplerError::NotImplemented(sampler.name().into())),
        Resolved::Diffusers { scheduler, karras } => Ok(set_timesteps(scheduler, config, steps, karras)?.timesteps),
    }
}

/// Runs `resolved` for `steps` steps from unit noise `noise` (the pipeline's initial latent
/// before any sigma scaling) and returns the final latent (to be divided by the VAE scaling
/// factor and decoded). `model(x_in, t)` returns the UNet's prediction (eps or v, per
/// `config.prediction_type`) for the model-scaled input at continuous timestep `t`,
/// guidance included. `rng` feeds ancestral / SDE noise; `progress` may cancel between steps.
pub fn sample(
    resolved: Resolved,
    config: &SchedulerConfig,
    steps: usize,
    model: EpsModel<'_>,
    noise: &[f32],
    rng: &mut dyn NoiseSource,
    progress: Progress<'_>,
) -> Result<Vec<f32>, SamplerError> {
    if steps == 0 {
        return Err(SamplerError::Invalid("steps must be at least 1".into()));
    }
    let (sampler, schedule) = match resolved {
        Resolved::Diffusers { scheduler, karras } => {
            let plan = set_timesteps(scheduler, config, steps, karras)?;
            return diffusers_steps::run(&plan, model, noise, rng, progress);
        }
        Resolved::A1111 { sampler, schedule } => (sampler, schedule),
    };
    let v_prediction = match config.prediction_type.as_str() {
        "epsilon" => false,
        "v_prediction" => true,
        other => return Err(SamplerError::Invalid(format!("unsupported prediction_type {other:?}"))),
    };
    let discrete = DiscreteSchedule::new(config)?;
    if sampler == KSampler::Ddim {
        if v_prediction {
            return Err(SamplerError::NotImplemented("DDIM with v_prediction".into()));
        }
        let ts = k_samplers::a1111_ddim_timesteps(config.num_train_timesteps, steps);
        return k_samplers::ddim_a1111(&discrete, model, noise.to_vec(), &ts, progress);
    }
    if sampler.is_timestep_sampler() {
        return Err(SamplerError::NotImplemented(sampler.name().into()));
    }
    let sigmas = discrete.a1111_sigmas(sampler, schedule, steps)?;
    let x: Vec<f32> = noise.iter().map(|v| v * sigmas[0] as f32).collect();
    let mut den = EpsDenoiser { schedule: &discrete, model, v_prediction };
    let mut d = |x: &[f32], s: f64| den.denoise(x, s);
    let s = &sigmas;
    match sampler {
        KSampler::Euler => k_samplers::euler(&mut d, x, s, progress),
        KSampler::EulerAncestral => k_samplers::euler_ancestral(&mut d, x, s, rng, progress),
        KSampler::Heun => k_samplers::heun(&mut d, x, s, progress),
        KSampler::DpmPp2M => k_samplers::dpmpp_2m(&mut d, x, s, progress),
        KSampler::DpmPpSde => k_samplers::dpmpp_sde(&mut d, x, s, rng, progress),
        KSampler::Lms => k_more::lms(&mut d, x, s, progress),
        KSampler::Dpm2 => k_more::dpm_2(&mut d, x, s, progress),
        KSampler::Dpm2Ancestral => k_more::dpm_2_ancestral(&mut d, x, s, rng, progress),
        KSampler::DpmPp2SAncestral => k_more::dpmpp_2s_ancestral(&mut d, x, s, rng, progress),
        KSampler::DpmPp2MSde => k_more::dpmpp_2m_sde(&mut d, x, s, rng, progress),
        KSampler::Ddim | KSampler::UniPc | KSampler::Lcm => Err(SamplerError::NotImplemented(sampler.name().into())),
    }
}
