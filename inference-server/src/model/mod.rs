//! Stable Diffusion model components: everything needed to turn a checkpoint and a prompt into
//! tensors: the CLIP tokenizer, checkpoint loading in both layouts, the built-in model
//! (`sdserve-shapes`) and the tiny test models.

pub mod builtin;
pub mod clip;
mod error;
pub mod testmodel;
pub mod text;
pub mod tokenizer;
pub mod unet;
pub mod vae;
pub mod weights;

pub use error::ModelError;
