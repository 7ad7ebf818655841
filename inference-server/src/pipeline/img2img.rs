//! img2img: the init image (resized to the output size when it differs) through the VAE
//! encoder, noised to the level `denoising_strength` picks, then sampled for the remaining steps.
//!
//! - A1111 names (k-diffusion sigma samplers): the latent is the encoder's **mean** (A1111
//!   samples the latent distribution from the unseeded global RNG, which cannot be
//!   reproduced); `t_enc = int(min(strength, 0.999)·steps)`, the sampler runs on
//!   `sigmas[steps − t_enc − 1 ..]` from `x = init + noise·sigma_0` (A1111's
//!   `sample_img2img` with `img2img_fix_steps` off). A1111's DDIM, UniPC and LCM are not
//!   supported here yet.
//! - diffusers class names: as `StableDiffusionImg2ImgPipeline` with one generator per item —
//!   the latent is **sampled** (`mean + std·ε`, ε the generator's first draw), the noise is the
//!   second draw, `get_timesteps` keeps the last `min(int(steps·strength), steps)` steps and
//!   the scheduler's `add_noise` mixes noise in at the first kept step. PNDM is not supported.

use crate::pipeline::generate::{BatchSeeds, Events, Generation, ItemNoise, Pipeline, Run, RunOptions, Setup};
use crate::pipeline::images::{image_to_tensor, resize_to};
use crate::pipeline::params::Request;
use crate::pipeline::params::{Img2ImgParams, PipelineError};
use crate::sampling::rng::{slerp, image_noise};
use crate::sampling::samplers::diffusers::set_timesteps;
use crate::sampling::samplers::k_samplers::{self, EpsDenoiser, EpsModel};
use crate::sampling::samplers::schedule::DiscreteSchedule;
use crate::sampling::samplers::{diffusers_steps, k_more, levels, DiffusersScheduler, KSampler, NoiseSource, Progress, Resolved, SamplerError};

fn invalid(field: &'static str, rule: String) -> PipelineError {
    PipelineError::Invalid { field, rule }
}

impl Pipeline {
    /// Runs `request`: [`Pipeline::txt2img`] or [`Pipeline::img2img`].
    pub fn generate(&self, request: &Request, options: RunOptions, events: Events<'_>) -> Result<Generation, PipelineError> {
        match request {
            Request::Txt2Img(p) => self.txt2img(p, options, events),
            Request::Img2Img(p) => self.img2img(p, options, events),
        }
    }

    /// Runs img2img. Parameters are validated before any model work.
    pub fn img2img(&self, params: &Img2ImgParams, options: RunOptions, events: Events<'_>) -> Result<Generation, PipelineError> {
        let resolved = params.validate()?;
        let strength = params.denoising_strength;
        let steps = params.base.steps;
        match resolved {
            Resolved::A1111 { sampler, .. } if sampler.is_timestep_sampler() || sampler == KSampler::Lcm => {
                return Err(invalid("sampler_name", format!("img2img does not support {} yet", sampler.name())));
            }
            Resolved::Diffusers { scheduler: DiffusersScheduler::Pndm, .. } => {
                return Err(invalid("sampler_name", "img2img does not support PNDMScheduler yet".into()));
            }
            Resolved::Diffusers { .. } if ((steps as f32 * strength) as usize).min(steps) == 0 => {
                return Err(invalid("denoising_strength", format!("int(steps·strength) must be at least 1 (steps {steps})")));
            }
            _ => {}
        }
        let Setup { p, guided, ctx, mut out } = self.setup(&params.base, resolved, Some(strength))?;
        let (b, h, w) = (p.batch_size, p.height / 8, p.width / 8);
        let per = 4 * h * w;
        let image = image_to_tensor(&resize_to(&params.init_image, p.width, p.height)?, &self.device)?;
        let (mean, logvar) = self.vae.encode(&image)?;
        let (mean, logvar) = (mean.to_vec_f32()?, logvar.to_vec_f32()?);
        let factor = self.vae.scaling_factor();
        for iteration in 0..p.n_iter {
            let seeds = BatchSeeds::new(&p, iteration);
            let (s0, ss0) = (seeds.seed, seeds.subseed);
            let mut rng = ItemNoise::new(p.noise_source, seeds.seeds.clone());
            let (init, noise) = match resolved {
                Resolved::Diffusers { .. } => {
                    // Draw 0 samples the latent distribution, draw 1 is the noise.
                    let eps = rng.draw(0, per);
                    let init: Vec<f32> = (0..b * per)
                        .map(|i| (mean[i % per] + (0.5 * logvar[i % per]).exp() * eps[i]) * factor)
                        .collect();
                    let mut noise = rng.draw(1, per);
                    if p.subseed_strength != 0.0 {
                        for (i, item) in noise.chunks_mut(per).enumerate() {
                            let sub = crate::sampling::rng::randn(p.noise_source, ss0.wrapping_add(i as u64), &[4, h, w])?;
                            item.copy_from_slice(&slerp(p.subseed_strength, item, &sub, &[4, h, w])?);
                        }
                    }
                    rng.calls = 1;
                    (init, noise)
                }
                Resolved::A1111 { .. } => {
                    let init: Vec<f32> = (0..b * per).map(|i| mean[i % per] * factor).collect();
                    let mut noise = Vec::with_capacity(b * per);
                    for i in 0..b as u64 {
                        let (si, ssi) = (s0.wrapping_add(i), ss0.wrapping_add(i));
                        noise.extend(image_noise(p.noise_source, si, ssi, p.subseed_strength, &[4, h, w])?);
                    }
                    (init, noise)
                }
            };
            let run = Run { cfg: p.cfg_scale, guided, ctx: &ctx, batch: b, h, w, iteration };
            let config = &self.scheduler;
            let mut runner = |model: EpsModel<'_>, rng: &mut dyn NoiseSource, progress: Progress<'_>| {
                img2img_sample(resolved, config, steps, strength, model, &init, &noise, rng, progress)
            };
            let latent = self.sample_batch(&run, &mut runner, &mut rng, options, &mut *events)?;
            self.decode_into(latent, &p, seeds, &mut out)?;
        }
        Ok(out)
    }
}

/// Samples from `init` (scaled latents) noised with `noise` at the strength's start level.
#[allow(clippy::too_many_arguments)]
fn img2img_sample(
    resolved: Resolved,
    config: &crate::model::weights::SchedulerConfig,
    steps: usize,
    strength: f32,
    model: EpsModel<'_>,
    init: &[f32],
    noise: &[f32],
    rng: &mut dyn NoiseSource,
    progress: Progress<'_>,
) -> Result<Vec<f32>, SamplerError> {
    match resolved {
        Resolved::Diffusers { scheduler, karras } => {
            let mut plan = set_timesteps(scheduler, config, steps, karras)?;
            let keep = ((steps as f32 * strength) as usize).min(steps);
            let start = steps - keep;
            plan.timesteps.drain(..start);
            if !plan.sigmas.is_empty() {
                plan.sigmas.drain(..start);
            }
            let x: Vec<f32> = match scheduler {
                DiffusersScheduler::EulerDiscrete | DiffusersScheduler::EulerAncestralDiscrete | DiffusersScheduler::LmsDiscrete => {
                    let s = plan.sigmas[0] as f32;
                    init.iter().zip(noise).map(|(x, n)| x + n * s).collect()
                }
                DiffusersScheduler::DpmSolverMultistep => {
                    let s = plan.sigmas[0];
                    let a = 1.0 / (s * s + 1.0).sqrt();
                    let (a, sa) = (a as f32, (a * s) as f32);
                    init.iter().zip(noise).map(|(x, n)| a * x + sa * n).collect()
                }
                _ => {
                    let t = plan.timesteps[0] as usize;
                    let ac = plan.schedule.alphas_cumprod[t.min(plan.schedule.alphas_cumprod.len() - 1)];
                    let (a, b) = (ac.sqrt() as f32, (1.0 - ac).sqrt() as f32);
                    init.iter().zip(noise).map(|(x, n)| a * x + b * n).collect()
                }
            };
            // `run` multiplies its input by init_noise_sigma: hand it x pre-divided.
            let k = plan.init_noise_sigma as f32;
            let start_x: Vec<f32> = x.iter().map(|v| v / k).collect();
            diffusers_steps::run(&plan, model, &start_x, rng, progress)
        }
        Resolved::A1111 { sampler, .. } => {
            let sigmas = levels(resolved, config, steps)?;
            let t_enc = (strength.min(0.999) * steps as f32) as usize;
            let first = (steps.saturating_sub(t_enc + 1)).min(sigmas.len().saturating_sub(2));
            let sched = &sigmas[first..];
            let s0 = sched[0] as f32;
            let x: Vec<f32> = init.iter().zip(noise).map(|(x, n)| x + n * s0).collect();
            let discrete = DiscreteSchedule::new(config)?;
            let v_prediction = config.prediction_type == "v_prediction";
            let mut den = EpsDenoiser { schedule: &discrete, model, v_prediction };
            let mut d = |x: &[f32], s: f64| den.denoise(x, s);
            match sampler {
                KSampler::Euler => k_samplers::euler(&mut d, x, sched, progress),
                KSampler::EulerAncestral => k_samplers::euler_ancestral(&mut d, x, sched, rng, progress),
                KSampler::Heun => k_samplers::heun(&mut d, x, sched, progress),
                KSampler::DpmPp2M => k_samplers::dpmpp_2m(&mut d, x, sched, progress),
                KSampler::DpmPpSde => k_samplers::dpmpp_sde(&mut d, x, sched, rng, progress),
                KSampler::Lms => k_more::lms(&mut d, x, sched, progress),
                KSampler::Dpm2 => k_more::dpm_2(&mut d, x, sched, progress),
                KSampler::Dpm2Ancestral => k_more::dpm_2_ancestral(&mut d, x, sched, rng, progress),
                KSampler::DpmPp2SAncestral => k_more::dpmpp_2s_ancestral(&mut d, x, sched, rng, progress),
                KSampler::DpmPp2MSde => k_more::dpmpp_2m_sde(&mut d, x, sched, rng, progress),
                other => Err(SamplerError::NotImplemented(format!("img2img with {}", other.name()))),
            }
        }
    }
}
