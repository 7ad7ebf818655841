//! Generation parameters with A1111 `txt2img` / `img2img` field names (as in
//! `proto/sdserve/v1/inference.proto`'s `GenerationParams`), and their validation, which runs
//! before any model work so a bad request costs nothing.

use crate::model::ModelError;
use crate::sampling::rng::{GeneratorKind, RngError};
use crate::sampling::samplers::{ModelFailure, Resolved, SamplerError, resolve};

/// Why a generation failed.
#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    /// A parameter broke a rule (gRPC `INVALID_ARGUMENT`).
    #[error("{field}: {rule}")]
    Invalid {
        /// The parameter, by its A1111 name.
        field: &'static str,
        /// The rule it broke.
        rule: String,
    },
    /// The model failed to load or run.
    #[error(transparent)]
    Model(#[from] ModelError),
    /// The sampler name was refused or sampling failed.
    #[error(transparent)]
    Sampler(SamplerError),
    /// Noise could not be drawn.
    #[error(transparent)]
    Rng(#[from] RngError),
    /// The progress callback asked to stop.
    #[error("cancelled")]
    Cancelled,
    /// Encoding the output image failed.
    #[error("png: {0}")]
    Png(String),
}

impl From<SamplerError> for PipelineError {
    fn from(e: SamplerError) -> Self {
        match e {
            SamplerError::Cancelled => PipelineError::Cancelled,
            SamplerError::Model(ModelFailure(source)) => match source.downcast::<ModelError>() {
                Ok(model) => PipelineError::Model(*model),
                Err(other) => PipelineError::Sampler(SamplerError::model(other)),
            },
            other => PipelineError::Sampler(other),
        }
    }
}

impl From<crate::engine::EngineError> for PipelineError {
    fn from(e: crate::engine::EngineError) -> Self {
        PipelineError::Model(ModelError::Engine(e))
    }
}

impl PipelineError {
    /// Whether the device ran out of memory for this generation (gRPC `RESOURCE_EXHAUSTED`: the
    /// request may fit later or elsewhere). The wrappers hold the engine's error
    /// `#[error(transparent)]`, whose `source()` skips it, so it is looked up by variant.
    pub fn is_out_of_device_memory(&self) -> bool {
        use crate::engine::EngineError;
        let engine = match self {
            PipelineError::Model(m) => m.engine(),
            PipelineError::Sampler(SamplerError::Model(ModelFailure(inner))) => inner
                .downcast_ref::<ModelError>()
                .and_then(ModelError::engine)
                .or_else(|| inner.downcast_ref::<EngineError>()),
            _ => None,
        };
        matches!(engine, Some(EngineError::OutOfMemory { .. }))
    }
}

fn invalid(field: &'static str, rule: impl Into<String>) -> PipelineError {
    PipelineError::Invalid {
        field,
        rule: rule.into(),
    }
}

/// Text-to-image parameters (A1111 `/sdapi/v1/txt2img` names and defaults).
#[derive(Debug, Clone, PartialEq)]
pub struct Txt2ImgParams {
    /// The prompt, with A1111 emphasis syntax and `BREAK`.
    pub prompt: String,
    /// The negative prompt (the unconditional side of guidance).
    pub negative_prompt: String,
    /// Seed; `-1` picks a random one (reported in the infotext).
    pub seed: i64,
    /// Variation seed; `-1` picks a random one.
    pub subseed: i64,
    /// How much of the variation seed's noise to mix in (0 = none).
    pub subseed_strength: f32,
    /// Images per model call.
    pub batch_size: usize,
    /// Batches run one after another, seeds advancing by `batch_size`.
    pub n_iter: usize,
    /// Sampling steps.
    pub steps: usize,
    /// Classifier-free guidance scale (1 skips the unconditional pass).
    pub cfg_scale: f32,
    /// Image width in pixels.
    pub width: usize,
    /// Image height in pixels.
    pub height: usize,
    /// A1111 sampler name (`"Euler a"`, `"DPM++ 2M Karras"`) or a diffusers class name.
    pub sampler_name: String,
    /// A1111 "Schedule type" (`"Automatic"`, `"Karras"`, ...); `None` = Automatic.
    pub scheduler: Option<String>,
    /// CLIP layers to skip from the end (1 = last layer).
    pub clip_skip: usize,
    /// Which RNG turns seeds into noise.
    pub noise_source: GeneratorKind,
    /// A1111 style names applied by the caller's front end; echoed in the info JSON.
    pub styles: Vec<String>,
}

impl Default for Txt2ImgParams {
    fn default() -> Self {
        Txt2ImgParams {
            prompt: String::new(),
            negative_prompt: String::new(),
            seed: -1,
            subseed: -1,
            subseed_strength: 0.0,
            batch_size: 1,
            n_iter: 1,
            steps: 20,
            cfg_scale: 7.0,
            width: 512,
            height: 512,
            sampler_name: "Euler a".into(),
            scheduler: None,
            clip_skip: 1,
            noise_source: GeneratorKind::TorchCpu,
            styles: Vec::new(),
        }
    }
}

/// An init image: RGB, 8 bits per channel, row-major `height × width × 3`.
#[derive(Debug, Clone, PartialEq)]
pub struct RgbImage {
    /// Width in pixels.
    pub width: usize,
    /// Height in pixels.
    pub height: usize,
    /// `height * width * 3` bytes.
    pub data: Vec<u8>,
}

/// Image-to-image parameters: txt2img's plus the init image and the denoising strength.
#[derive(Debug, Clone, PartialEq)]
pub struct Img2ImgParams {
    /// Everything txt2img takes; `width`/`height` give the output size.
    pub base: Txt2ImgParams,
    /// The image to start from, resized to `width × height` when its size differs
    /// ([`crate::pipeline::images::resize_to`]).
    pub init_image: RgbImage,
    /// How much to change it: 0 keeps it, 1 starts from pure noise.
    pub denoising_strength: f32,
}

fn range<T: PartialOrd + std::fmt::Display>(
    field: &'static str,
    v: T,
    lo: T,
    hi: T,
) -> Result<(), PipelineError> {
    if v >= lo && v <= hi {
        Ok(())
    } else {
        Err(invalid(
            field,
            format!("must be between {lo} and {hi}, got {v}"),
        ))
    }
}

fn side(field: &'static str, v: usize) -> Result<(), PipelineError> {
    if !v.is_multiple_of(8) {
        return Err(invalid(field, format!("must be a multiple of 8, got {v}")));
    }
    range(field, v, 64, 2048)
}

impl Txt2ImgParams {
    /// Checks every field (naming the first at fault) and resolves the sampler name.
    pub fn validate(&self) -> Result<Resolved, PipelineError> {
        side("width", self.width)?;
        side("height", self.height)?;
        range("steps", self.steps, 1, 150)?;
        if !self.cfg_scale.is_finite() {
            return Err(invalid("cfg_scale", "must be a finite number"));
        }
        range("cfg_scale", self.cfg_scale, 1.0, 30.0)?;
        range("batch_size", self.batch_size, 1, 16)?;
        range("n_iter", self.n_iter, 1, 100)?;
        range("clip_skip", self.clip_skip, 1, 12)?;
        if !self.subseed_strength.is_finite() {
            return Err(invalid("subseed_strength", "must be a finite number"));
        }
        range("subseed_strength", self.subseed_strength, 0.0, 1.0)?;
        if self.seed < -1 {
            return Err(invalid(
                "seed",
                format!("must be -1 (random) or >= 0, got {}", self.seed),
            ));
        }
        if self.subseed < -1 {
            return Err(invalid(
                "subseed",
                format!("must be -1 (random) or >= 0, got {}", self.subseed),
            ));
        }
        resolve(&self.sampler_name, self.scheduler.as_deref()).map_err(PipelineError::Sampler)
    }
}

impl Img2ImgParams {
    /// [`Txt2ImgParams::validate`] plus the strength and the init image's pixels.
    pub fn validate(&self) -> Result<Resolved, PipelineError> {
        let resolved = self.base.validate()?;
        if !self.denoising_strength.is_finite() {
            return Err(invalid("denoising_strength", "must be a finite number"));
        }
        range("denoising_strength", self.denoising_strength, 0.0, 1.0)?;
        let img = &self.init_image;
        if img.width == 0 || img.height == 0 || img.data.len() != img.width * img.height * 3 {
            return Err(invalid(
                "init_image",
                "must be a non-empty image holding width*height RGB pixels",
            ));
        }
        Ok(resolved)
    }
}

/// One generation request: txt2img, or img2img when there is an init image.
#[derive(Debug, Clone, PartialEq)]
pub enum Request {
    /// Text to image.
    Txt2Img(Txt2ImgParams),
    /// Image to image.
    Img2Img(Img2ImgParams),
}

impl Request {
    /// The settings both kinds share.
    pub fn base(&self) -> &Txt2ImgParams {
        match self {
            Request::Txt2Img(p) => p,
            Request::Img2Img(p) => &p.base,
        }
    }

    /// The shared settings, mutably (e.g. to pin a random seed before running).
    pub fn base_mut(&mut self) -> &mut Txt2ImgParams {
        match self {
            Request::Txt2Img(p) => p,
            Request::Img2Img(p) => &mut p.base,
        }
    }

    /// The kind's own `validate`.
    pub fn validate(&self) -> Result<Resolved, PipelineError> {
        match self {
            Request::Txt2Img(p) => p.validate(),
            Request::Img2Img(p) => p.validate(),
        }
    }
}
