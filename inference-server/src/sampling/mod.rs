//! Sampling: noise generation, the checkpoint's noise schedule and the samplers that turn
//! noise into latents. Works on flat `f32` latents and imports no other layer of the crate.

mod config;
pub mod rng;
pub mod samplers;

pub use config::{PredictionType, ScheduleConfigError, SchedulerConfig};
