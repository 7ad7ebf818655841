//! One entry point for the pipeline: a resolved sampler, the model's scheduler config, a step
//! count, an eps (or v) model and unit noise in; the final latent out.

use super::diffusers::set_timesteps;
use super::k_samplers::{self, EpsDenoiser, EpsModel};
use super::names::{KSampler, Resolved};
use super::schedule::DiscreteSchedule;
use super::lcm::{self, LcmSchedule};
use super::unipc::{self, VpSchedule};
use super::{NoiseSource, Progress, SamplerError, diffusers_steps, k_more};
use crate::model::weights::SchedulerConfig;

/// The noise levels a run steps through: A1111 sigmas (`steps + 1`, ending in 0) for
/// sigma samplers and LCM, A1111 DDIM's timesteps, UniPC's model timesteps (`n + 1`, from 999
/// to 0), or diffusers' timesteps. Useful to size a
/// Brownian noise source (`sigma_min` = smallest positive, `sigma_max` = first).
pub fn levels(resolved: Resolved, config: &SchedulerConfig, steps: usize) -> Result<Vec<f64>, SamplerError> {
    match resolved {
        Resolved::A1111 { sampler, schedule } if !sampler.is_timestep_sampler() => {
            DiscreteSchedule::new(config)?.a1111_sigmas(sampler, schedule, steps)
        }
        Resolved::A1111 { sampler: KSampler::Lcm, .. } => {
            Ok(LcmSchedule::new(&DiscreteSchedule::new(config)?)?.sigmas(steps))
        }
        Resolved::A1111 { sampler: KSampler::UniPc, .. } => {
            let n = k_samplers::a1111_ddim_timesteps(config.num_train_timesteps, steps.max(1)).len();
            let vp = VpSchedule::new(&DiscreteSchedule::new(config)?);
            let t0 = 1.0 / vp.total_n() as f64;
            Ok(vp.time_uniform(n).into_iter().map(|t| (t - t0) * 1000.0).collect())
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
    if matches!(sampler, KSampler::Ddim | KSampler::UniPc) {
        // A1111's timestep samplers take eps; for v models `CompVisTimestepsVDenoiser` converts
        // at the truncated integer timestep: eps = sqrt(ᾱ_t) v + sqrt(1 - ᾱ_t) x.
        let ac = discrete.alphas_cumprod.clone();
        let mut eps = |x: &[f32], t: f64| -> Result<Vec<f32>, SamplerError> {
            let out = model(x, t)?;
            if !v_prediction {
                return Ok(out);
            }
            let a = ac[(t as usize).min(ac.len() - 1)];
            Ok(super::lin2(a.sqrt(), &out, (1.0 - a).sqrt(), x))
        };
        let ts = k_samplers::a1111_ddim_timesteps(config.num_train_timesteps, steps);
        return if sampler == KSampler::Ddim {
            k_samplers::ddim_a1111(&discrete, &mut eps, noise.to_vec(), &ts, progress)
        } else {
            unipc::unipc_a1111(&discrete, &mut eps, noise.to_vec(), ts.len(), progress)
        };
    }
    if sampler == KSampler::Lcm {
        if v_prediction {
            return Err(SamplerError::NotImplemented("LCM with v_prediction".into()));
        }
        let lcm = LcmSchedule::new(&discrete)?;
        let sigmas = lcm.sigmas(steps);
        let x: Vec<f32> = noise.iter().map(|v| v * sigmas[0] as f32).collect();
        let mut model = model;
        let mut d = |x: &[f32], s: f64| lcm.denoise(&mut model, x, s);
        return lcm::sample_lcm(&mut d, x, &sigmas, rng, progress);
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
