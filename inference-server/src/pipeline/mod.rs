//! The generation pipeline: turns a request (prompt, negative prompt, settings) into the
//! images: parameters and their validation, A1111 prompt emphasis and long-prompt chunking,
//! conditioning, sampling with guidance, decoding, PNG with A1111 infotext.
//!
//! - [`params`]: [`Txt2ImgParams`] / [`Img2ImgParams`] (A1111 field names), [`Request`] (either)
//!   and `validate()`,
//!   run before any model work; [`PipelineError::Invalid`] names the field and the rule.
//! - [`conditioning`]: prompt → A1111 chunks → CLIP per chunk → emphasis → concatenation.
//! - [`generate`]: [`Pipeline::load`], [`Pipeline::generate`] and [`Pipeline::txt2img`]: seeds (item `i` uses
//!   `seed + i`, iteration `n` starts at `seed + n·batch_size`), guidance in one UNet batch,
//!   progress/cancel callback with optional "Approx cheap" previews, VAE decode, RGB.
//! - [`img2img`]: [`Pipeline::img2img`], through the same sampler dispatch as txt2img. A1111 names use the encoder's mean (A1111 samples
//!   from an unseeded RNG); diffusers class names sample the latent with the item's
//!   generator, as diffusers does.
//! - [`images`], [`png`]: pixels, PNG with the `parameters` chunk, the A1111 `info` JSON.
//!
//! Parity (tests/it/pipeline/mod.rs, goldens from tests/parity/pipeline_goldens.py): diffusers
//! txt2img (Euler, Euler ancestral, DDIM, DPM-Solver++ Karras) and img2img (Euler, DDIM,
//! DPM-Solver++ Karras), and A1111 on k-diffusion (Euler, Euler a, DPM++ 2M Karras, and
//! DPM++ SDE Karras with injected step noise via [`Pipeline::txt2img_with_step_noise`]), all
//! within 2/255 per pixel on the tiny SD 1.x model.

pub mod conditioning;
pub mod generate;
pub mod images;
pub mod img2img;
pub mod params;
pub mod png;
pub mod precision;
pub mod prompt;
mod resize;
pub(crate) mod step_graph;

pub use generate::{Events, Generation, Pipeline, RunOptions, StepEvent};
pub use params::{Img2ImgParams, PipelineError, Request, RgbImage, Txt2ImgParams};
pub use precision::Precision;
