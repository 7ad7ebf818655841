//! Sampling: noise generation and the samplers that turn noise into latents.

pub mod samplers;
