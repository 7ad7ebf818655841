//! The noise schedule a checkpoint was trained with (`scheduler/scheduler_config.json`) and
//! what its UNet predicts. The model layer reads it from the checkpoint; the samplers use it.

use std::fmt;

use serde::{Deserialize, Serialize};

/// What the UNet predicts, parsed once from `prediction_type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
pub enum PredictionType {
    /// `epsilon`: the noise.
    #[default]
    #[serde(rename = "epsilon")]
    Epsilon,
    /// `v_prediction`: `v = alpha·eps − sigma·x0` (SD 2.x 768-v).
    #[serde(rename = "v_prediction")]
    VPrediction,
    /// `sample`: the denoised sample `x0` itself.
    #[serde(rename = "sample")]
    Sample,
}

impl PredictionType {
    /// The diffusers spelling (`epsilon`, `v_prediction`, `sample`).
    pub fn name(self) -> &'static str {
        match self {
            PredictionType::Epsilon => "epsilon",
            PredictionType::VPrediction => "v_prediction",
            PredictionType::Sample => "sample",
        }
    }
}

impl fmt::Display for PredictionType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// `scheduler/scheduler_config.json`: the noise schedule the UNet was trained with (the
/// sampler itself is chosen per request). Defaults are Stable Diffusion 1.5's.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct SchedulerConfig {
    /// The diffusers scheduler class the checkpoint ships with (informative).
    #[serde(rename = "_class_name")]
    pub class_name: Option<String>,
    /// Number of training timesteps.
    pub num_train_timesteps: usize,
    /// First beta of the schedule.
    pub beta_start: f64,
    /// Last beta of the schedule.
    pub beta_end: f64,
    /// `linear`, `scaled_linear` or `squaredcos_cap_v2`.
    pub beta_schedule: String,
    /// What the UNet predicts.
    pub prediction_type: PredictionType,
    /// Offset added to inference timesteps (1 for SD).
    pub steps_offset: usize,
    /// `leading`, `trailing` or `linspace`.
    pub timestep_spacing: String,
    /// Whether the final alpha product is forced to 1 (DDIM/PNDM).
    pub set_alpha_to_one: bool,
    /// Whether predicted samples are clipped to [-1, 1].
    pub clip_sample: bool,
}

impl Default for SchedulerConfig {
    fn default() -> Self {
        SchedulerConfig {
            class_name: Some("PNDMScheduler".into()),
            num_train_timesteps: 1000,
            beta_start: 0.00085,
            beta_end: 0.012,
            beta_schedule: "scaled_linear".into(),
            prediction_type: PredictionType::Epsilon,
            steps_offset: 1,
            timestep_spacing: "leading".into(),
            set_alpha_to_one: false,
            clip_sample: false,
        }
    }
}

/// A [`SchedulerConfig`] field whose value the samplers cannot use.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{field}: {reason}")]
pub struct ScheduleConfigError {
    /// The field, by its `scheduler_config.json` name.
    pub field: &'static str,
    /// Why its value is rejected.
    pub reason: String,
}

impl SchedulerConfig {
    /// Checks the values describe a schedule the samplers support.
    pub fn check(&self) -> Result<(), ScheduleConfigError> {
        let bad = |field, reason: String| Err(ScheduleConfigError { field, reason });
        if self.num_train_timesteps == 0 {
            return bad("num_train_timesteps", "must be positive".into());
        }
        if self.beta_start <= 0.0 || self.beta_start.is_nan() {
            return bad("beta_start", "must be positive".into());
        }
        if !(self.beta_end > self.beta_start && self.beta_end < 1.0) {
            return bad(
                "beta_end",
                format!("must lie in (beta_start, 1), is {}", self.beta_end),
            );
        }
        let one_of = |field, value: &str, allowed: &[&str]| match allowed.contains(&value) {
            true => Ok(()),
            false => bad(field, format!("`{value}` is not one of {allowed:?}")),
        };
        one_of(
            "beta_schedule",
            &self.beta_schedule,
            &["linear", "scaled_linear", "squaredcos_cap_v2"],
        )?;
        one_of(
            "timestep_spacing",
            &self.timestep_spacing,
            &["leading", "trailing", "linspace"],
        )
    }
}
