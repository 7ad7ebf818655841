//! Sampling: noise generation and the samplers that turn noise into latents.

pub mod rng;
pub mod samplers;
