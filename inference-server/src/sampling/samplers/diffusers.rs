//! diffusers' `set_timesteps` for the supported scheduler classes, honouring the model's
//! `scheduler_config.json` (`timestep_spacing`, `steps_offset`, `num_train_timesteps`, betas).
//!
//! Defaults not in `SchedulerConfig` are diffusers' class defaults: Euler `interpolation_type`
//! `linear`, DPM-Solver `solver_order` 2, `algorithm_type` `dpmsolver++`, `final_sigmas_type`
//! `zero`, `lambda_min_clipped` -inf. numpy's `round` (ties to even) is reproduced.

use super::SamplerError;
use super::names::DiffusersScheduler;
use super::schedule::{DiscreteSchedule, karras_no_zero, linspace};
use crate::sampling::{PredictionType, SchedulerConfig};

/// The timesteps (and sigmas, for sigma-based classes) a diffusers scheduler steps through.
#[derive(Debug, Clone, PartialEq)]
pub struct DiffusersPlan {
    /// The class.
    pub scheduler: DiffusersScheduler,
    /// Timesteps handed to the UNet, one per step (fractional for Euler with Karras sigmas).
    pub timesteps: Vec<f64>,
    /// `steps + 1` sigmas ending in 0 (Euler, Euler ancestral, LMS, DPM-Solver); empty for
    /// DDIM and PNDM (whose `timesteps` has `steps + 1` entries, one repeated).
    pub sigmas: Vec<f64>,
    /// What the initial unit noise is multiplied by (`init_noise_sigma`).
    pub init_noise_sigma: f64,
    /// The training schedule.
    pub schedule: DiscreteSchedule,
    /// `num_train_timesteps // steps`: DDIM's distance to the previous timestep.
    pub step_ratio: usize,
    /// `ᾱ` used after the last DDIM step (`set_alpha_to_one` ? 1 : `ᾱ_0`).
    pub final_alpha_cumprod: f64,
    /// What the model predicts.
    pub prediction_type: PredictionType,
}

fn round(x: f64) -> f64 {
    x.round_ties_even()
}

/// `np.interp(x, arange(len(ys)), ys)`.
fn interp(x: f64, ys: &[f64]) -> f64 {
    if x <= 0.0 {
        return ys[0];
    }
    if x >= (ys.len() - 1) as f64 {
        return ys[ys.len() - 1];
    }
    let i = x.floor() as usize;
    let w = x - i as f64;
    ys[i] + w * (ys[i + 1] - ys[i])
}

/// The leading / trailing / linspace timesteps shared by Euler and DDIM (`steps` values,
/// descending, before `steps_offset` for `linspace`/`trailing`).
fn spaced(
    config: &SchedulerConfig,
    steps: usize,
    round_linspace: bool,
) -> Result<Vec<f64>, SamplerError> {
    let n = config.num_train_timesteps;
    Ok(match config.timestep_spacing.as_str() {
        "linspace" => {
            let mut t = linspace(0.0, (n - 1) as f64, steps);
            if round_linspace {
                t.iter_mut().for_each(|x| *x = round(*x));
            }
            t.reverse();
            t
        }
        "leading" => {
            let ratio = n / steps;
            (0..steps)
                .rev()
                .map(|i| (i * ratio + config.steps_offset) as f64)
                .collect()
        }
        "trailing" => {
            let ratio = n as f64 / steps as f64;
            (0..steps)
                .map(|i| round(n as f64 - i as f64 * ratio) - 1.0)
                .collect()
        }
        other => {
            return Err(SamplerError::Invalid(format!(
                "unknown timestep_spacing {other:?}"
            )));
        }
    })
}

/// diffusers' `set_timesteps(steps)` for `scheduler` (with `use_karras_sigmas = karras`).
pub fn set_timesteps(
    scheduler: DiffusersScheduler,
    config: &SchedulerConfig,
    steps: usize,
    karras: bool,
) -> Result<DiffusersPlan, SamplerError> {
    if steps == 0 || steps > config.num_train_timesteps {
        return Err(SamplerError::Invalid(format!(
            "steps must be in 1..={}, got {steps}",
            config.num_train_timesteps
        )));
    }
    let schedule = DiscreteSchedule::new(config)?;
    let n = config.num_train_timesteps;
    let mut plan = DiffusersPlan {
        scheduler,
        timesteps: vec![],
        sigmas: vec![],
        init_noise_sigma: 1.0,
        schedule: schedule.clone(),
        step_ratio: n / steps,
        final_alpha_cumprod: if config.set_alpha_to_one {
            1.0
        } else {
            schedule.alphas_cumprod[0]
        },
        prediction_type: config.prediction_type,
    };
    match scheduler {
        DiffusersScheduler::EulerDiscrete
        | DiffusersScheduler::EulerAncestralDiscrete
        | DiffusersScheduler::LmsDiscrete => {
            let mut t = spaced(config, steps, false)?;
            let mut sigmas: Vec<f64> = t.iter().map(|&t| interp(t, &schedule.sigmas)).collect();
            if karras {
                sigmas = karras_no_zero(steps, sigmas[steps - 1], sigmas[0], 7.0);
                t = sigmas.iter().map(|&s| schedule.sigma_to_t(s)).collect();
            }
            sigmas.push(0.0);
            let max = sigmas.iter().cloned().fold(0.0, f64::max);
            plan.init_noise_sigma = match config.timestep_spacing.as_str() {
                "linspace" | "trailing" => max,
                _ => (max * max + 1.0).sqrt(),
            };
            plan.timesteps = t;
            plan.sigmas = sigmas;
        }
        DiffusersScheduler::Ddim => {
            plan.timesteps = spaced(config, steps, true)?;
        }
        DiffusersScheduler::Pndm => {
            // skip_prk_steps (SD's config): PLMS only, the second-lowest timestep repeated.
            let mut asc = spaced(config, steps, true)?;
            asc.reverse();
            let mut t: Vec<f64> = asc[..steps - 1].to_vec();
            if steps >= 2 {
                t.push(asc[steps - 2]);
            }
            t.push(asc[steps - 1]);
            t.reverse();
            plan.timesteps = t;
        }
        DiffusersScheduler::DpmSolverMultistep => {
            let t: Vec<f64> = match config.timestep_spacing.as_str() {
                "linspace" => {
                    let mut t: Vec<f64> = linspace(0.0, (n - 1) as f64, steps + 1)
                        .into_iter()
                        .map(round)
                        .collect();
                    t.reverse();
                    t.truncate(steps);
                    t
                }
                "leading" => {
                    let ratio = n / (steps + 1);
                    (1..=steps)
                        .rev()
                        .map(|i| (i * ratio + config.steps_offset) as f64)
                        .collect()
                }
                _ => spaced(config, steps, false)?,
            };
            let (t, mut sigmas) = if karras {
                let s = karras_no_zero(steps, schedule.sigma_min(), schedule.sigma_max(), 7.0);
                (
                    s.iter().map(|&s| round(schedule.sigma_to_t(s))).collect(),
                    s,
                )
            } else {
                let s = t.iter().map(|&t| interp(t, &schedule.sigmas)).collect();
                (t, s)
            };
            sigmas.push(0.0);
            plan.timesteps = t;
            plan.sigmas = sigmas;
        }
    }
    Ok(plan)
}
