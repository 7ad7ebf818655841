//! One sampler dispatch for the pipeline, txt2img and img2img alike: a resolved sampler, the
//! model's scheduler config, a step count, where to start ([`Start`]) and an eps (or v) model
//! in; the final latent out.
//!
//! img2img follows its references: A1111 names run the sigma samplers on
//! `sigmas[steps − t_enc − 1 ..]`, `t_enc = int(min(strength, 0.999)·steps)`, from
//! `x = init + noise·sigma_0` (A1111's `sample_img2img` with `img2img_fix_steps` off); diffusers
//! classes keep the last `min(int(steps·strength), steps)` timesteps and mix the noise in with
//! the scheduler's `add_noise` at the first kept one (`StableDiffusionImg2ImgPipeline`).

use super::diffusers::{DiffusersPlan, set_timesteps};
use super::k_samplers::{self, Denoiser, EpsDenoiser, EpsModel};
use super::lcm::{self, LcmSchedule};
use super::names::{DiffusersScheduler, KSampler, Resolved};
use super::prediction::check_prediction;
use super::schedule::DiscreteSchedule;
use super::unipc::{self, VpSchedule};
use super::{Progress, SamplerError, StepNoise, diffusers_steps, k_more};
use crate::sampling::{PredictionType, SchedulerConfig};

/// The noise levels a run steps through: A1111 sigmas (`steps + 1`, ending in 0) for
/// sigma samplers and LCM, A1111 DDIM's timesteps, UniPC's model timesteps (`n + 1`, from 999
/// to 0), or diffusers' timesteps. Useful to size a
/// Brownian noise source (`sigma_min` = smallest positive, `sigma_max` = first).
pub fn levels(
    resolved: Resolved,
    config: &SchedulerConfig,
    steps: usize,
) -> Result<Vec<f64>, SamplerError> {
    match resolved {
        Resolved::A1111 { sampler, schedule } if !sampler.is_timestep_sampler() => {
            DiscreteSchedule::new(config)?.a1111_sigmas(sampler, schedule, steps)
        }
        Resolved::A1111 {
            sampler: KSampler::Lcm,
            ..
        } => Ok(LcmSchedule::new(&DiscreteSchedule::new(config)?)?.sigmas(steps)),
        Resolved::A1111 {
            sampler: KSampler::UniPc,
            ..
        } => {
            let n =
                k_samplers::a1111_ddim_timesteps(config.num_train_timesteps, steps.max(1)).len();
            let vp = VpSchedule::new(&DiscreteSchedule::new(config)?);
            let t0 = 1.0 / vp.total_n() as f64;
            Ok(vp
                .time_uniform(n)
                .into_iter()
                .map(|t| (t - t0) * 1000.0)
                .collect())
        }
        Resolved::A1111 {
            sampler: KSampler::Ddim,
            ..
        } => Ok(
            k_samplers::a1111_ddim_timesteps(config.num_train_timesteps, steps.max(1))
                .into_iter()
                .map(|t| t as f64)
                .collect(),
        ),
        Resolved::A1111 { sampler, .. } => Err(SamplerError::NotImplemented(sampler.name().into())),
        Resolved::Diffusers { scheduler, karras } => {
            Ok(set_timesteps(scheduler, config, steps, karras)?.timesteps)
        }
    }
}

/// Where a run starts.
#[derive(Debug, Clone, Copy)]
pub enum Start<'a> {
    /// txt2img: unit noise (the initial latent before any sigma scaling).
    Noise(&'a [f32]),
    /// img2img: the init image's scaled latents, with unit noise mixed in at the level
    /// `strength` (in (0, 1]) picks.
    Image {
        /// The VAE latents of the init image, times the scaling factor.
        init: &'a [f32],
        /// Unit noise, one value per latent value.
        noise: &'a [f32],
        /// `denoising_strength`.
        strength: f32,
    },
}

/// Runs `resolved` for `steps` steps from unit noise `noise` (txt2img); see [`sample_from`].
pub fn sample(
    resolved: Resolved,
    config: &SchedulerConfig,
    steps: usize,
    model: EpsModel<'_>,
    noise: &[f32],
    rng: &mut dyn StepNoise,
    progress: Progress<'_>,
) -> Result<Vec<f32>, SamplerError> {
    sample_from(
        resolved,
        config,
        steps,
        Start::Noise(noise),
        model,
        rng,
        progress,
    )
}

/// Runs `resolved` for `steps` steps from `start` and returns the final latent (to be divided
/// by the VAE scaling factor and decoded). `model(x_in, t)` returns the UNet's prediction (as
/// `config.prediction_type` says) for the model-scaled input at continuous timestep `t`,
/// guidance included. `rng` feeds ancestral / SDE noise; `progress` may cancel between steps.
/// A prediction type the sampler does not support is
/// [`SamplerError::UnsupportedPrediction`], before any model call.
pub fn sample_from(
    resolved: Resolved,
    config: &SchedulerConfig,
    steps: usize,
    start: Start<'_>,
    model: EpsModel<'_>,
    rng: &mut dyn StepNoise,
    progress: Progress<'_>,
) -> Result<Vec<f32>, SamplerError> {
    if steps == 0 {
        return Err(SamplerError::Invalid("steps must be at least 1".into()));
    }
    check_prediction(resolved, config.prediction_type)?;
    let (sampler, schedule) = match resolved {
        Resolved::Diffusers { scheduler, karras } => {
            let mut plan = set_timesteps(scheduler, config, steps, karras)?;
            return match start {
                Start::Noise(noise) => diffusers_steps::run(&plan, model, noise, rng, progress),
                Start::Image {
                    init,
                    noise,
                    strength,
                } => {
                    let x = diffusers_img2img_start(&mut plan, steps, strength, init, noise);
                    diffusers_steps::run(&plan, model, &x, rng, progress)
                }
            };
        }
        Resolved::A1111 { sampler, schedule } => (sampler, schedule),
    };
    let v_prediction = config.prediction_type == PredictionType::VPrediction;
    let discrete = DiscreteSchedule::new(config)?;
    if sampler.is_timestep_sampler() {
        let Start::Noise(noise) = start else {
            return Err(SamplerError::NotImplemented(format!(
                "img2img with {}",
                sampler.name()
            )));
        };
        return timestep_sampler(
            sampler,
            &discrete,
            config,
            steps,
            v_prediction,
            model,
            noise,
            rng,
            progress,
        );
    }
    let sigmas = discrete.a1111_sigmas(sampler, schedule, steps)?;
    let (x, sigmas): (Vec<f32>, &[f64]) = match start {
        Start::Noise(noise) => (
            noise.iter().map(|v| v * sigmas[0] as f32).collect(),
            &sigmas,
        ),
        Start::Image {
            init,
            noise,
            strength,
        } => {
            let t_enc = (strength.min(0.999) * steps as f32) as usize;
            let first = (steps.saturating_sub(t_enc + 1)).min(sigmas.len().saturating_sub(2));
            let sched = &sigmas[first..];
            let s0 = sched[0] as f32;
            (
                init.iter().zip(noise).map(|(x, n)| x + n * s0).collect(),
                sched,
            )
        }
    };
    let mut den = EpsDenoiser {
        schedule: &discrete,
        model,
        v_prediction,
    };
    let mut d = |x: &[f32], s: f64| den.denoise(x, s);
    sigma_sampler(sampler, &mut d, x, sigmas, rng, progress)
}

/// A1111's DDIM, UniPC and LCM, which step on their own timestep / sigma grids (txt2img only).
#[allow(clippy::too_many_arguments)]
fn timestep_sampler(
    sampler: KSampler,
    discrete: &DiscreteSchedule,
    config: &SchedulerConfig,
    steps: usize,
    v_prediction: bool,
    model: EpsModel<'_>,
    noise: &[f32],
    rng: &mut dyn StepNoise,
    progress: Progress<'_>,
) -> Result<Vec<f32>, SamplerError> {
    if sampler == KSampler::Lcm {
        let lcm = LcmSchedule::new(discrete)?;
        let sigmas = lcm.sigmas(steps);
        let x: Vec<f32> = noise.iter().map(|v| v * sigmas[0] as f32).collect();
        let mut model = model;
        let mut d = |x: &[f32], s: f64| lcm.denoise(&mut model, x, s);
        return lcm::sample_lcm(&mut d, x, &sigmas, rng, progress);
    }
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
    match sampler {
        KSampler::Ddim => k_samplers::ddim_a1111(discrete, &mut eps, noise.to_vec(), &ts, progress),
        _ => unipc::unipc_a1111(discrete, &mut eps, noise.to_vec(), ts.len(), progress),
    }
}

/// The k-diffusion sigma samplers on denoiser `d` from `x` (already times `sigmas[0]`).
fn sigma_sampler(
    sampler: KSampler,
    d: Denoiser<'_>,
    x: Vec<f32>,
    s: &[f64],
    rng: &mut dyn StepNoise,
    progress: Progress<'_>,
) -> Result<Vec<f32>, SamplerError> {
    match sampler {
        KSampler::Euler => k_samplers::euler(d, x, s, progress),
        KSampler::EulerAncestral => k_samplers::euler_ancestral(d, x, s, rng, progress),
        KSampler::Heun => k_samplers::heun(d, x, s, progress),
        KSampler::DpmPp2M => k_samplers::dpmpp_2m(d, x, s, progress),
        KSampler::DpmPpSde => k_samplers::dpmpp_sde(d, x, s, rng, progress),
        KSampler::Lms => k_more::lms(d, x, s, progress),
        KSampler::Dpm2 => k_more::dpm_2(d, x, s, progress),
        KSampler::Dpm2Ancestral => k_more::dpm_2_ancestral(d, x, s, rng, progress),
        KSampler::DpmPp2SAncestral => k_more::dpmpp_2s_ancestral(d, x, s, rng, progress),
        KSampler::DpmPp2MSde => k_more::dpmpp_2m_sde(d, x, s, rng, progress),
        KSampler::Ddim | KSampler::UniPc | KSampler::Lcm => {
            Err(SamplerError::NotImplemented(sampler.name().into()))
        }
    }
}

/// Trims `plan` to the last `min(int(steps·strength), steps)` steps and returns the noised
/// init latent, divided by `init_noise_sigma` (which [`diffusers_steps::run`] multiplies in).
fn diffusers_img2img_start(
    plan: &mut DiffusersPlan,
    steps: usize,
    strength: f32,
    init: &[f32],
    noise: &[f32],
) -> Vec<f32> {
    let keep = ((steps as f32 * strength) as usize).min(steps);
    let start = steps - keep;
    plan.timesteps.drain(..start);
    if !plan.sigmas.is_empty() {
        plan.sigmas.drain(..start);
    }
    let x: Vec<f32> = match plan.scheduler {
        DiffusersScheduler::EulerDiscrete
        | DiffusersScheduler::EulerAncestralDiscrete
        | DiffusersScheduler::LmsDiscrete => {
            let s = plan.sigmas[0] as f32;
            init.iter().zip(noise).map(|(x, n)| x + n * s).collect()
        }
        DiffusersScheduler::DpmSolverMultistep => {
            let s = plan.sigmas[0];
            let a = 1.0 / (s * s + 1.0).sqrt();
            let (a, sa) = (a as f32, (a * s) as f32);
            init.iter()
                .zip(noise)
                .map(|(x, n)| a * x + sa * n)
                .collect()
        }
        _ => {
            let t = plan.timesteps[0] as usize;
            let ac = plan.schedule.alphas_cumprod[t.min(plan.schedule.alphas_cumprod.len() - 1)];
            let (a, b) = (ac.sqrt() as f32, (1.0 - ac).sqrt() as f32);
            init.iter().zip(noise).map(|(x, n)| a * x + b * n).collect()
        }
    };
    let k = plan.init_noise_sigma as f32;
    x.iter().map(|v| v / k).collect()
}
