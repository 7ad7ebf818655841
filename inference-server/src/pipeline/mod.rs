//! The generation pipeline: turns a request (prompt, negative prompt, settings) into the
//! images: parameters and their validation, A1111 prompt emphasis and long-prompt chunking,
//! conditioning, sampling with guidance, decoding, PNG with A1111 infotext.

pub mod prompt;
pub mod conditioning;
pub mod generate;
pub mod images;
pub mod img2img;
pub mod params;
pub mod png;

pub use params::{Img2ImgParams, PipelineError, RgbImage, Txt2ImgParams};
pub use generate::{Events, Generation, Pipeline, RunOptions, StepEvent};
