//! The discrete DDPM noise schedule and A1111's sigma schedules.
//!
//! [`DiscreteSchedule`] is k-diffusion's `DiscreteEpsDDPMDenoiser` schedule: 1000 (say)
//! training sigmas `sqrt((1 - ᾱ_t) / ᾱ_t)`, `t_to_sigma` interpolating log sigma between
//! integer timesteps and `sigma_to_t` inverting it. A1111 builds its sigma schedules on it
//! ([`DiscreteSchedule::a1111_sigmas`]). `ᾱ` is computed in `f64` (as CompVis'
//! `LatentDiffusion`, which A1111 wraps) and then rounded to `f32`, because both CompVis and
//! diffusers hold it as a float32 tensor: `1 - ᾱ` near t = 0 loses ~1e-4 relative to that
//! rounding, so the rounding must be reproduced to match their small sigmas. Everything after
//! is `f64`.

use super::SamplerError;
use super::names::{KSampler, Schedule};
use crate::sampling::SchedulerConfig;

/// `ᾱ_t` for `t in 0..num_train_timesteps` from the config's beta schedule (rounded to f32).
pub fn alphas_cumprod(config: &SchedulerConfig) -> Result<Vec<f64>, SamplerError> {
    let n = config.num_train_timesteps;
    if n < 2 {
        return Err(SamplerError::Invalid(format!(
            "num_train_timesteps {n} < 2"
        )));
    }
    let lin = |a: f64, b: f64, i: usize| a + (b - a) * i as f64 / (n - 1) as f64;
    let betas: Vec<f64> = match config.beta_schedule.as_str() {
        "linear" => (0..n)
            .map(|i| lin(config.beta_start, config.beta_end, i))
            .collect(),
        "scaled_linear" => (0..n)
            .map(|i| lin(config.beta_start.sqrt(), config.beta_end.sqrt(), i).powi(2))
            .collect(),
        "squaredcos_cap_v2" => {
            let f = |t: f64| {
                ((t + 0.008) / 1.008 * std::f64::consts::FRAC_PI_2)
                    .cos()
                    .powi(2)
            };
            (0..n)
                .map(|i| (1.0 - f((i + 1) as f64 / n as f64) / f(i as f64 / n as f64)).min(0.999))
                .collect()
        }
        other => {
            return Err(SamplerError::Invalid(format!(
                "unknown beta_schedule {other:?}"
            )));
        }
    };
    let mut acc = 1.0;
    Ok(betas
        .iter()
        .map(|b| {
            acc *= 1.0 - b;
            acc as f32 as f64
        })
        .collect())
}

/// The training sigmas and their logs (ascending in t).
#[derive(Debug, Clone, PartialEq)]
pub struct DiscreteSchedule {
    /// `ᾱ_t`.
    pub alphas_cumprod: Vec<f64>,
    /// `sqrt((1 - ᾱ_t) / ᾱ_t)`.
    pub sigmas: Vec<f64>,
    /// `ln sigmas`.
    pub log_sigmas: Vec<f64>,
}

impl DiscreteSchedule {
    /// The schedule of `config`.
    pub fn new(config: &SchedulerConfig) -> Result<Self, SamplerError> {
        Ok(Self::from_alphas_cumprod(alphas_cumprod(config)?))
    }

    /// The schedule of given `ᾱ_t`.
    pub fn from_alphas_cumprod(alphas_cumprod: Vec<f64>) -> Self {
        let sigmas: Vec<f64> = alphas_cumprod
            .iter()
            .map(|a| ((1.0 - a) / a).sqrt())
            .collect();
        let log_sigmas = sigmas.iter().map(|s| s.ln()).collect();
        DiscreteSchedule {
            alphas_cumprod,
            sigmas,
            log_sigmas,
        }
    }

    /// Smallest training sigma (`sigmas[0]`).
    pub fn sigma_min(&self) -> f64 {
        self.sigmas[0]
    }

    /// Largest training sigma (`sigmas[-1]`).
    pub fn sigma_max(&self) -> f64 {
        self.sigmas[self.sigmas.len() - 1]
    }

    /// Continuous timestep of `sigma`: linear in log sigma between neighbouring training
    /// sigmas, clamped to `[0, T-1]` (k-diffusion `sigma_to_t`, diffusers `_sigma_to_t`).
    pub fn sigma_to_t(&self, sigma: f64) -> f64 {
        let ls = &self.log_sigmas;
        let log_sigma = sigma.max(1e-10).ln();
        // Last index whose log sigma is <= log_sigma (0 if none), at most len-2.
        let low = ls
            .iter()
            .rposition(|&l| log_sigma - l >= 0.0)
            .unwrap_or(0)
            .min(ls.len() - 2);
        let (lo, hi) = (ls[low], ls[low + 1]);
        let w = ((lo - log_sigma) / (lo - hi)).clamp(0.0, 1.0);
        (1.0 - w) * low as f64 + w * (low + 1) as f64
    }

    /// Sigma at continuous timestep `t` (log-sigma interpolation; k-diffusion `t_to_sigma`).
    pub fn t_to_sigma(&self, t: f64) -> f64 {
        let (lo, hi) = (t.floor() as usize, t.ceil() as usize);
        let w = t - t.floor();
        ((1.0 - w) * self.log_sigmas[lo] + w * self.log_sigmas[hi]).exp()
    }

    /// k-diffusion `get_sigmas(n)`: `t_to_sigma(linspace(T-1, 0, n))` then a final 0.
    pub fn uniform(&self, n: usize) -> Vec<f64> {
        let t_max = (self.sigmas.len() - 1) as f64;
        let mut out: Vec<f64> = linspace(t_max, 0.0, n)
            .into_iter()
            .map(|t| self.t_to_sigma(t))
            .collect();
        out.push(0.0);
        out
    }

    /// A1111 `sgm_uniform`: `n` timesteps uniform from `sigma_to_t(sigma_max)` to
    /// `sigma_to_t(sigma_min)` (the last of `n + 1` dropped), then a final 0.
    pub fn sgm_uniform(&self, n: usize) -> Vec<f64> {
        let start = self.sigma_to_t(self.sigma_max());
        let end = self.sigma_to_t(self.sigma_min());
        let mut out: Vec<f64> = linspace(start, end, n + 1)[..n]
            .iter()
            .map(|&t| self.t_to_sigma(t))
            .collect();
        out.push(0.0);
        out
    }

    /// The sigmas A1111 samples `sampler` at for `steps` steps with `schedule`
    /// (`n + 1` values ending in 0; `Automatic` resolved per sampler; DPM2's extra step
    /// with the next-to-last sigma discarded).
    pub fn a1111_sigmas(
        &self,
        sampler: KSampler,
        schedule: Schedule,
        steps: usize,
    ) -> Result<Vec<f64>, SamplerError> {
        if steps == 0 {
            return Err(SamplerError::Invalid("steps must be at least 1".into()));
        }
        let discard = sampler.discards_next_to_last_sigma();
        let n = steps + usize::from(discard);
        let (lo, hi) = (self.sigma_min(), self.sigma_max());
        let mut sigmas = match schedule.resolve(sampler) {
            Schedule::Automatic | Schedule::Uniform => self.uniform(n),
            Schedule::Karras => karras(n, lo, hi, 7.0),
            Schedule::Exponential => exponential(n, lo, hi),
            Schedule::SgmUniform => self.sgm_uniform(n),
        };
        if discard {
            let last = sigmas.len() - 1;
            sigmas.remove(last - 1);
        }
        Ok(sigmas)
    }
}

/// `n` evenly spaced values from `a` to `b` inclusive (`torch.linspace` / `np.linspace`).
pub fn linspace(a: f64, b: f64, n: usize) -> Vec<f64> {
    match n {
        0 => vec![],
        1 => vec![a],
        _ => (0..n)
            .map(|i| a + (b - a) * i as f64 / (n - 1) as f64)
            .collect(),
    }
}

/// Karras et al. (2022) sigmas, `n` values from `sigma_max` to `sigma_min`, then a final 0.
pub fn karras(n: usize, sigma_min: f64, sigma_max: f64, rho: f64) -> Vec<f64> {
    let mut out = karras_no_zero(n, sigma_min, sigma_max, rho);
    out.push(0.0);
    out
}

/// [`karras`] without the final 0 (diffusers' `_convert_to_karras`).
pub fn karras_no_zero(n: usize, sigma_min: f64, sigma_max: f64, rho: f64) -> Vec<f64> {
    let (min_r, max_r) = (sigma_min.powf(1.0 / rho), sigma_max.powf(1.0 / rho));
    linspace(0.0, 1.0, n)
        .into_iter()
        .map(|r| (max_r + r * (min_r - max_r)).powf(rho))
        .collect()
}

/// Sigmas uniform in log sigma from `sigma_max` to `sigma_min`, then a final 0.
pub fn exponential(n: usize, sigma_min: f64, sigma_max: f64) -> Vec<f64> {
    let mut out: Vec<f64> = linspace(sigma_max.ln(), sigma_min.ln(), n)
        .into_iter()
        .map(f64::exp)
        .collect();
    out.push(0.0);
    out
}
