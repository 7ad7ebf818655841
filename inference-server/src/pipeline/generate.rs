//! txt2img: seeds → noise → sampler with classifier-free guidance → VAE → RGB.
//!
//! Decisions (see the crate's tests for what is checked against diffusers):
//! - Initial noise follows A1111 for every sampler name: item `i` of a batch uses `seed + i`
//!   and `subseed + i`, iteration `n` starts at `seed + n·batch_size`. For a batch of one this
//!   is also diffusers with `torch.Generator().manual_seed(seed)`; diffusers with one
//!   generator for a whole batch draws the batch in one call and differs for items > 0.
//! - Ancestral / SDE noise after the first draw continues each item's generator (CPU or
//!   Philox), as A1111 (`ImageRNG.next()`) and diffusers (one generator per item) do; see
//!   [`ItemNoise`].
//! - Guidance: uncond and cond in one UNet batch (`[uncond; cond]`, diffusers' order),
//!   `uncond + cfg·(cond − uncond)`. The uncond half is skipped when `cfg_scale == 1`, and
//!   for diffusers class names whenever `cfg_scale <= 1` (diffusers' `guidance_scale > 1`).

use std::cell::RefCell;
use std::ops::ControlFlow;
use std::path::Path;

use crate::engine::{Device, Tensor};
use crate::model::ModelError;
use crate::model::unet::UNet;
use crate::model::vae::Vae;
use crate::model::weights::Checkpoint;
use crate::pipeline::conditioning::Conditioner;
use crate::pipeline::images::{approx_cheap, tensor_to_images};
use crate::pipeline::params::{PipelineError, Request, RgbImage, Txt2ImgParams};
use crate::pipeline::precision::Precision;
use crate::pipeline::step_graph::StepGraph;
use crate::sampling::rng::{Generator, GeneratorKind, batch_noise, resolve_seed};
use crate::sampling::samplers::k_samplers::EpsModel;
use crate::sampling::samplers::schedule::DiscreteSchedule;
use crate::sampling::samplers::{
    Progress, Resolved, SamplerError, StepNoise, check_prediction, sample,
};
use crate::sampling::{PredictionType, SchedulerConfig};

/// A loaded checkpoint ready to generate.
#[derive(Debug)]
pub struct Pipeline {
    pub(crate) conditioner: Conditioner,
    pub(crate) unet: UNet,
    pub(crate) vae: Vae,
    pub(crate) scheduler: SchedulerConfig,
    pub(crate) device: Device,
    pub(crate) name: String,
}

/// One sampling step about to run, reported to the progress callback.
#[derive(Debug)]
pub struct StepEvent<'a> {
    /// Which batch (0-based, of `n_iter`).
    pub iteration: usize,
    /// The step about to run (0-based).
    pub step: usize,
    /// Steps in this batch's sampling run.
    pub total: usize,
    /// "Approx cheap" previews of the batch's latest denoised prediction (when asked for and
    /// available: none before the first model call).
    pub previews: Option<&'a [RgbImage]>,
}

/// Options that do not change the images.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RunOptions {
    /// Compute previews for each step event.
    pub preview: bool,
}

/// The images of a run and the seeds they were made with.
#[derive(Debug, Clone)]
pub struct Generation {
    /// The parameters, with `seed` and `subseed` resolved (never -1).
    pub params: Txt2ImgParams,
    /// `n_iter · batch_size` images.
    pub images: Vec<RgbImage>,
    /// The seed of each image.
    pub all_seeds: Vec<u64>,
    /// The subseed of each image.
    pub all_subseeds: Vec<u64>,
    /// img2img's strength (`None` for txt2img).
    pub denoising_strength: Option<f32>,
    /// The model's name (its file or folder stem).
    pub model_name: String,
}

/// The progress callback: `Break` cancels with [`PipelineError::Cancelled`].
pub type Events<'a> = &'a mut dyn FnMut(&StepEvent<'_>) -> ControlFlow<()>;

impl Pipeline {
    /// Opens and loads the checkpoint at `path` onto `device`, in the device's default
    /// [`Precision`] (f32 on the CPU, f16 on a GPU).
    pub fn load(path: &Path, device: &Device) -> Result<Pipeline, PipelineError> {
        Self::load_with(path, device, Precision::default_for(device))
    }

    /// Opens and loads the checkpoint at `path` onto `device`, computing in `precision`.
    pub fn load_with(
        path: &Path,
        device: &Device,
        precision: Precision,
    ) -> Result<Pipeline, PipelineError> {
        let mut checkpoint = Checkpoint::open(path).map_err(ModelError::from)?;
        precision.apply(&mut checkpoint, device);
        if matches!(device, Device::Cpu) {
            let isa = crate::engine::cpu_gemm_isa();
            tracing::info!(
                isa,
                "f32 GEMMs on the CPU: {isa} (SDSERVE_CPU_ISA to force)"
            );
        }
        if precision == Precision::BF16 && matches!(device, Device::Cpu) {
            // Say whether bf16 buys speed here: emulated bf16 products are slower than f32.
            let native = crate::engine::cpu_bf16_native();
            tracing::info!(
                native,
                "bf16 products on the CPU: {}",
                if native {
                    "avx512_bf16"
                } else {
                    "emulated (no avx512_bf16; slower than --precision f32)"
                }
            );
        }
        let conditioner = Conditioner::load(&checkpoint, device)?;
        let unet = UNet::load(&checkpoint.unet.0, &checkpoint.unet.1, device)?;
        let vae = Vae::load(&checkpoint.vae.0, &checkpoint.vae.1, device)?;
        let name = path
            .file_stem()
            .map_or_else(|| "model".into(), |s| s.to_string_lossy().into_owned());
        Ok(Pipeline {
            conditioner,
            unet,
            vae,
            scheduler: checkpoint.scheduler.clone(),
            device: device.clone(),
            name,
        })
    }

    /// The model name reported in infotexts.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The checkpoint's noise schedule.
    pub fn scheduler_config(&self) -> &SchedulerConfig {
        &self.scheduler
    }

    /// Runs `request`: [`Pipeline::txt2img`] or [`Pipeline::img2img`].
    pub fn generate(
        &self,
        request: &Request,
        options: RunOptions,
        events: Events<'_>,
    ) -> Result<Generation, PipelineError> {
        match request {
            Request::Txt2Img(p) => self.txt2img(p, options, events),
            Request::Img2Img(p) => self.img2img(p, options, events),
        }
    }

    /// Runs txt2img. Parameters are validated before any model work.
    pub fn txt2img(
        &self,
        params: &Txt2ImgParams,
        options: RunOptions,
        events: Events<'_>,
    ) -> Result<Generation, PipelineError> {
        self.txt2img_inner(params, options, None, events)
    }

    /// [`Pipeline::txt2img`] with the ancestral / SDE step noise taken from `step_noise`
    /// instead of continuing each item's seeded generator; the initial latent still comes
    /// from the seeds. One source serves every batch item (calls get the whole batch's
    /// length) and every iteration, in order. Deterministic samplers never call it.
    ///
    /// Meant for replaying a reference's noise (e.g. k-diffusion's `noise_sampler` draws
    /// through [`crate::sampling::samplers::ReplayNoise`]) or for a caller's own RNG, such
    /// as [`crate::sampling::samplers::BrownianNoise`] for a DPM++ SDE that depends on the
    /// sigma interval rather than the call order.
    pub fn txt2img_with_step_noise(
        &self,
        params: &Txt2ImgParams,
        options: RunOptions,
        step_noise: &mut dyn StepNoise,
        events: Events<'_>,
    ) -> Result<Generation, PipelineError> {
        self.txt2img_inner(params, options, Some(step_noise), events)
    }

    fn txt2img_inner(
        &self,
        params: &Txt2ImgParams,
        options: RunOptions,
        mut step_noise: Option<&mut dyn StepNoise>,
        events: Events<'_>,
    ) -> Result<Generation, PipelineError> {
        let resolved = params.validate()?;
        let Setup {
            p,
            guided,
            ctx,
            mut out,
        } = self.setup(params, resolved, None)?;
        let (b, h, w) = (p.batch_size, p.height / 8, p.width / 8);
        for iteration in 0..p.n_iter {
            let seeds = BatchSeeds::new(&p, iteration);
            let noise = batch_noise(
                p.noise_source,
                seeds.seed,
                seeds.subseed,
                p.subseed_strength,
                b,
                &[4, h, w],
            )?;
            let mut rng = ItemNoise::new(p.noise_source, seeds.seeds.clone());
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
            let mut runner =
                |model: EpsModel<'_>, rng: &mut dyn StepNoise, progress: Progress<'_>| {
                    let rng: &mut dyn StepNoise = match step_noise.as_deref_mut() {
                        Some(injected) => injected,
                        None => rng,
                    };
                    sample(
                        resolved,
                        &self.scheduler,
                        p.steps,
                        model,
                        &noise,
                        rng,
                        progress,
                    )
                };
            let latent = self.sample_batch(&run, &mut runner, &mut rng, options, &mut *events)?;
            self.decode_into(latent, &p, seeds, &mut out)?;
        }
        Ok(out)
    }

    /// What txt2img and img2img share before sampling: the sampler checked against the
    /// model's prediction type, seeds pinned (a random one chosen for -1), the prompt pair
    /// encoded into the batch's guidance context, the result to fill.
    pub(crate) fn setup(
        &self,
        params: &Txt2ImgParams,
        resolved: Resolved,
        denoising_strength: Option<f32>,
    ) -> Result<Setup, PipelineError> {
        check_prediction(resolved, self.scheduler.prediction_type).map_err(|e| {
            PipelineError::Invalid {
                field: "sampler_name",
                rule: e.to_string(),
            }
        })?;
        let mut p = params.clone();
        p.seed = resolve_seed(p.seed) as i64;
        p.subseed = resolve_seed(p.subseed) as i64;
        let pair = self.conditioner.encode_pair(
            &[p.prompt.as_str()],
            &[p.negative_prompt.as_str()],
            p.clip_skip,
        )?;
        let guided = uses_uncond(resolved, p.cfg_scale);
        let one = if guided {
            Tensor::cat(&[&pair.uncond, &pair.cond], 0)?
        } else {
            pair.cond.clone()
        };
        let ctx = repeat_halves(&one, if guided { 2 } else { 1 }, p.batch_size)?;
        let out = Generation {
            params: p.clone(),
            images: Vec::new(),
            all_seeds: Vec::new(),
            all_subseeds: Vec::new(),
            denoising_strength,
            model_name: self.name.clone(),
        };
        Ok(Setup {
            p,
            guided,
            ctx,
            out,
        })
    }

    /// Decodes one iteration's final latents and appends the images and their seeds to `out`.
    pub(crate) fn decode_into(
        &self,
        latent: Vec<f32>,
        p: &Txt2ImgParams,
        seeds: BatchSeeds,
        out: &mut Generation,
    ) -> Result<(), PipelineError> {
        let b = seeds.seeds.len();
        let x = Tensor::from_vec(latent, (b, 4, p.height / 8, p.width / 8), &self.device)?;
        let decoded = self.vae.decode_scaled(&x)?.to_vec_f32()?;
        out.images
            .extend(tensor_to_images(&decoded, b, p.height, p.width));
        out.all_seeds.extend(seeds.seeds);
        out.all_subseeds
            .extend((0..b as u64).map(|i| seeds.subseed.wrapping_add(i)));
        Ok(())
    }

    /// Runs `runner` (a sampler call) with the guided model, reporting each step to `events`.
    pub(crate) fn sample_batch(
        &self,
        run: &Run<'_>,
        runner: Runner<'_>,
        rng: &mut ItemNoise,
        options: RunOptions,
        events: Events<'_>,
    ) -> Result<Vec<f32>, PipelineError> {
        let x0: RefCell<Option<Vec<f32>>> = RefCell::new(None);
        let schedule = DiscreteSchedule::new(&self.scheduler)?;
        let per = 4 * run.h * run.w;
        let mut model = |x: &[f32], t: f64| -> Result<Vec<f32>, SamplerError> {
            let out = self.guided_eps(run, x, t).map_err(SamplerError::model)?;
            if options.preview {
                *x0.borrow_mut() = Some(preview_x0(
                    self.scheduler.prediction_type,
                    schedule.t_to_sigma(t),
                    x,
                    &out,
                ));
            }
            Ok(out)
        };
        let mut progress = |step: usize, total: usize| -> ControlFlow<()> {
            let previews: Option<Vec<RgbImage>> = x0.borrow().as_ref().map(|z| {
                z.chunks(per)
                    .map(|item| approx_cheap(item, run.h, run.w))
                    .collect()
            });
            events(&StepEvent {
                iteration: run.iteration,
                step,
                total,
                previews: previews.as_deref(),
            })
        };
        let latent = runner(&mut model, rng, &mut progress);
        // The recorded step's buffers go back to the pool before the VAE needs memory.
        run.unet_step.finish();
        Ok(latent?)
    }

    /// The guided prediction for a model-scaled batch `x` at timestep `t`.
    fn guided_eps(&self, run: &Run<'_>, x: &[f32], t: f64) -> Result<Vec<f32>, ModelError> {
        let xt = Tensor::from_vec(x.to_vec(), (run.batch, 4, run.h, run.w), &self.device)?;
        let input = if run.guided {
            Tensor::cat(&[&xt, &xt], 0)?
        } else {
            xt
        };
        let out = run
            .unet_step
            .predict(&self.unet, &self.device, &input, t as f32, run.ctx)?;
        if !run.guided {
            return Ok(out);
        }
        let (uncond, cond) = out.split_at(x.len());
        let cfg = run.cfg;
        Ok(uncond
            .iter()
            .zip(cond)
            .map(|(u, c)| u + cfg * (c - u))
            .collect())
    }
}

/// A sampler call: guided model, step noise and progress in, final latent out.
pub(crate) type Runner<'a> = &'a mut dyn FnMut(
    EpsModel<'_>,
    &mut dyn StepNoise,
    Progress<'_>,
) -> Result<Vec<f32>, SamplerError>;

/// What [`Pipeline::setup`] prepares for both txt2img and img2img.
pub(crate) struct Setup {
    /// The parameters, seeds resolved.
    pub(crate) p: Txt2ImgParams,
    /// Whether the unconditional half runs.
    pub(crate) guided: bool,
    /// The text context for one batch (`[uncond…; cond…]` when guided).
    pub(crate) ctx: Tensor,
    /// The result, images still to come.
    pub(crate) out: Generation,
}

/// The seeds of one iteration's batch (A1111): item `i` of iteration `n` uses
/// `seed + n·batch_size + i`, and the subseed likewise.
pub(crate) struct BatchSeeds {
    /// The first item's seed.
    pub(crate) seed: u64,
    /// The first item's subseed.
    pub(crate) subseed: u64,
    /// Every item's seed.
    pub(crate) seeds: Vec<u64>,
}

impl BatchSeeds {
    /// The seeds of iteration `iteration` for parameters whose seeds are already resolved.
    pub(crate) fn new(p: &Txt2ImgParams, iteration: usize) -> BatchSeeds {
        let off = (iteration * p.batch_size) as u64;
        let (seed, subseed) = (
            (p.seed as u64).wrapping_add(off),
            (p.subseed as u64).wrapping_add(off),
        );
        BatchSeeds {
            seed,
            subseed,
            seeds: (0..p.batch_size as u64)
                .map(|i| seed.wrapping_add(i))
                .collect(),
        }
    }
}

/// What one batch's sampling run needs.
pub(crate) struct Run<'a> {
    pub(crate) cfg: f32,
    pub(crate) guided: bool,
    pub(crate) ctx: &'a Tensor,
    pub(crate) batch: usize,
    pub(crate) h: usize,
    pub(crate) w: usize,
    pub(crate) iteration: usize,
    /// The run's UNet step, recorded as a CUDA graph on a GPU.
    pub(crate) unet_step: StepGraph,
}

/// The denoised estimate a preview shows, from the model-scaled input `x` (VP form, alpha =
/// 1/k, sigma_vp = sigma/k with k = sqrt(1 + sigma²)) and the model output `out`.
fn preview_x0(prediction: PredictionType, sigma: f64, x: &[f32], out: &[f32]) -> Vec<f32> {
    let sigma = sigma as f32;
    let k = (1.0 + sigma * sigma).sqrt();
    match prediction {
        PredictionType::Epsilon => x.iter().zip(out).map(|(x, e)| x * k - sigma * e).collect(),
        PredictionType::VPrediction => x
            .iter()
            .zip(out)
            .map(|(x, v)| (x - sigma * v) / k)
            .collect(),
        PredictionType::Sample => out.to_vec(),
    }
}

/// Whether guidance needs the unconditional half.
fn uses_uncond(resolved: Resolved, cfg: f32) -> bool {
    match resolved {
        Resolved::Diffusers { .. } => cfg > 1.0,
        Resolved::A1111 { .. } => cfg != 1.0,
    }
}

/// `[halves·1, S, D]` (e.g. `[uncond; cond]`) to `[halves·batch, S, D]`, each half repeated.
fn repeat_halves(
    one: &Tensor,
    halves: usize,
    batch: usize,
) -> Result<Tensor, crate::engine::EngineError> {
    let mut parts = Vec::with_capacity(halves * batch);
    for hlf in 0..halves {
        let part = one.narrow(0, hlf, 1)?;
        for _ in 0..batch {
            parts.push(part.clone());
        }
    }
    let refs: Vec<&Tensor> = parts.iter().collect();
    Tensor::cat(&refs, 0)
}

/// Noise per batch item, from one generator per item seeded with the item's seed: draw 0 is
/// the initial latent's, later draws are the ancestral / SDE step noise, each continuing the
/// item's generator as both references do (A1111's `ImageRNG.next()` per image, for the CPU
/// and the "NV" Philox source; diffusers' `scheduler.step(generator=...)` with one generator
/// per item).
pub(crate) struct ItemNoise {
    source: GeneratorKind,
    seeds: Vec<u64>,
    /// Draws taken so far after the first (the next step-noise call takes draw `calls + 1`).
    pub(crate) calls: usize,
    generators: Vec<Generator>,
    /// Draws already taken from `generators`.
    drawn: usize,
}

impl ItemNoise {
    pub(crate) fn new(source: GeneratorKind, seeds: Vec<u64>) -> Self {
        let generators = seeds.iter().map(|&s| Generator::new(source, s)).collect();
        ItemNoise {
            source,
            seeds,
            calls: 0,
            generators,
            drawn: 0,
        }
    }

    /// Draw `k` (0 = the initial latent's) of `per` values for every item, concatenated. Draws
    /// are meant to be taken in order; asking for an earlier one replays the generators.
    pub(crate) fn draw(&mut self, k: usize, per: usize) -> Vec<f32> {
        if k < self.drawn {
            self.generators = self
                .seeds
                .iter()
                .map(|&s| Generator::new(self.source, s))
                .collect();
            self.drawn = 0;
        }
        loop {
            // `per` is a validated latent size, far below the generators' element limit.
            let draw: Vec<f32> = self
                .generators
                .iter_mut()
                .flat_map(|g| g.randn(&[per]).unwrap_or_else(|_| vec![0.0; per]))
                .collect();
            self.drawn += 1;
            if self.drawn > k {
                return draw;
            }
        }
    }
}

impl StepNoise for ItemNoise {
    fn noise(&mut self, _sigma: f64, _sigma_next: f64, len: usize) -> Vec<f32> {
        self.calls += 1;
        let per = len / self.seeds.len().max(1);
        let mut out = self.draw(self.calls, per);
        out.resize(len, 0.0);
        out
    }
}
