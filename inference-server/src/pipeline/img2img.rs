//! img2img: the init image (resized to the output size when it differs) through the VAE
//! encoder, noised to the level `denoising_strength` picks, then sampled for the remaining steps.
//!
//! The sampler runs through the same dispatch as txt2img
//! ([`sample_from`] with [`Start::Image`], where the noise levels are chosen); here the init
//! latent and the noise are drawn:
//! - A1111 names (k-diffusion sigma samplers): the latent is the encoder's **mean** (A1111
//!   samples the latent distribution from the unseeded global RNG, which cannot be
//!   reproduced); the noise is the item's seeded noise as in txt2img. A1111's DDIM, UniPC and
//!   LCM are not supported here yet.
//! - diffusers class names: as `StableDiffusionImg2ImgPipeline` with one generator per item —
//!   the latent is **sampled** (`mean + std·ε`, ε the generator's first draw), the noise is the
//!   second draw. PNDM is not supported.

use crate::pipeline::generate::{
    BatchSeeds, Events, Generation, ItemNoise, Pipeline, Run, RunOptions, Setup,
};
use crate::pipeline::images::{image_to_tensor, resize_to};
use crate::pipeline::params::{Img2ImgParams, PipelineError};
use crate::pipeline::step_graph::StepGraph;
use crate::sampling::rng::{image_noise, slerp};
use crate::sampling::samplers::k_samplers::EpsModel;
use crate::sampling::samplers::{
    DiffusersScheduler, KSampler, Progress, Resolved, Start, StepNoise, sample_from,
};

fn invalid(field: &'static str, rule: String) -> PipelineError {
    PipelineError::Invalid { field, rule }
}

impl Pipeline {
    /// Runs img2img. Parameters are validated before any model work.
    pub fn img2img(
        &self,
        params: &Img2ImgParams,
        options: RunOptions,
        events: Events<'_>,
    ) -> Result<Generation, PipelineError> {
        let resolved = params.validate()?;
        let strength = params.denoising_strength;
        let steps = params.base.steps;
        match resolved {
            Resolved::A1111 { sampler, .. }
                if sampler.is_timestep_sampler() || sampler == KSampler::Lcm =>
            {
                return Err(invalid(
                    "sampler_name",
                    format!("img2img does not support {} yet", sampler.name()),
                ));
            }
            Resolved::Diffusers {
                scheduler: DiffusersScheduler::Pndm,
                ..
            } => {
                return Err(invalid(
                    "sampler_name",
                    "img2img does not support PNDMScheduler yet".into(),
                ));
            }
            Resolved::Diffusers { .. } if ((steps as f32 * strength) as usize).min(steps) == 0 => {
                return Err(invalid(
                    "denoising_strength",
                    format!("int(steps·strength) must be at least 1 (steps {steps})"),
                ));
            }
            _ => {}
        }
        let Setup {
            p,
            guided,
            ctx,
            mut out,
        } = self.setup(&params.base, resolved, Some(strength))?;
        let (b, h, w) = (p.batch_size, p.height / 8, p.width / 8);
        let per = 4 * h * w;
        let image = image_to_tensor(
            &resize_to(&params.init_image, p.width, p.height)?,
            &self.device,
        )?;
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
                            let sub = crate::sampling::rng::randn(
                                p.noise_source,
                                ss0.wrapping_add(i as u64),
                                &[4, h, w],
                            )?;
                            item.copy_from_slice(&slerp(
                                p.subseed_strength,
                                item,
                                &sub,
                                &[4, h, w],
                            )?);
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
                        noise.extend(image_noise(
                            p.noise_source,
                            si,
                            ssi,
                            p.subseed_strength,
                            &[4, h, w],
                        )?);
                    }
                    (init, noise)
                }
            };
            let run = Run {
                cfg: p.cfg_scale,
                guided,
                ctx: &ctx,
                batch: b,
                h,
                w,
                iteration,
                unet_step: StepGraph::default(),
            };
            let start = Start::Image {
                init: &init,
                noise: &noise,
                strength,
            };
            let mut runner =
                |model: EpsModel<'_>, rng: &mut dyn StepNoise, progress: Progress<'_>| {
                    sample_from(
                        resolved,
                        &self.scheduler,
                        steps,
                        start,
                        model,
                        rng,
                        progress,
                    )
                };
            let latent = self.sample_batch(&run, &mut runner, &mut rng, options, &mut *events)?;
            self.decode_into(latent, &p, seeds, &mut out)?;
        }
        Ok(out)
    }
}
