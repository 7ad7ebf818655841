//! A1111's LCM sampler (`modules/sd_samplers_lcm.py`): `LCMCompVisDenoiser` on the 50
//! "original" LCM timesteps and `sample_lcm`.
//!
//! The denoiser keeps every `T / 50`-th training sigma (timesteps 19, 39, ..., 999 for T =
//! 1000), maps a sigma to the *nearest* of those timesteps (quantized), and applies LCM's
//! consistency boundary scalings with `sigma_data = 0.5` and the timestep scaled by 10.

use super::k_samplers::{Denoiser, EpsModel};
use super::schedule::{DiscreteSchedule, linspace};
use super::{Progress, SamplerError, StepNoise, lin2, tick};

/// LCM's 50-level schedule.
#[derive(Debug, Clone, PartialEq)]
pub struct LcmSchedule {
    /// The 50 kept levels (ascending).
    pub levels: DiscreteSchedule,
    /// `T / 50`.
    pub skip_steps: usize,
}

impl LcmSchedule {
    /// LCM's levels of the training schedule `full`.
    pub fn new(full: &DiscreteSchedule) -> Result<Self, SamplerError> {
        let t = full.alphas_cumprod.len();
        let original = 50;
        let skip = t / original;
        if skip == 0 {
            return Err(SamplerError::Invalid(format!(
                "LCM needs at least {original} training timesteps"
            )));
        }
        let mut ac = vec![0.0; original];
        for x in 0..original {
            ac[original - 1 - x] = full.alphas_cumprod[t - 1 - x * skip];
        }
        Ok(LcmSchedule {
            levels: DiscreteSchedule::from_alphas_cumprod(ac),
            skip_steps: skip,
        })
    }

    /// Nearest kept level (in log sigma) as a training timestep: `idx * skip + skip - 1`.
    pub fn sigma_to_t(&self, sigma: f64) -> f64 {
        let ls = sigma.ln();
        let mut best = 0;
        for (i, l) in self.levels.log_sigmas.iter().enumerate() {
            if (ls - l).abs() < (ls - self.levels.log_sigmas[best]).abs() {
                best = i;
            }
        }
        (best * self.skip_steps + self.skip_steps - 1) as f64
    }

    /// Sigma at training timestep `t` (log-interpolated between kept levels).
    pub fn t_to_sigma(&self, t: f64) -> f64 {
        let k = self.skip_steps as f64;
        let idx = ((t - (k - 1.0)) / k).clamp(0.0, (self.levels.sigmas.len() - 1) as f64);
        self.levels.t_to_sigma(idx)
    }

    /// A1111's `get_sigmas(n)` for LCM (its `Automatic` schedule), ending in 0.
    pub fn sigmas(&self, n: usize) -> Vec<f64> {
        let start = self.sigma_to_t(self.levels.sigma_max());
        let end = self.sigma_to_t(self.levels.sigma_min());
        let mut out: Vec<f64> = linspace(start, end, n)
            .into_iter()
            .map(|t| self.t_to_sigma(t))
            .collect();
        out.push(0.0);
        out
    }

    /// `LCMCompVisDenoiser.forward`: eps denoising at the quantized timestep, then
    /// `c_out · x0 + c_skip · x` with `st = 10 · t`, `c_skip = 0.25 / (st² + 0.25)`,
    /// `c_out = st / sqrt(st² + 0.25)`.
    pub fn denoise(
        &self,
        model: &mut EpsModel<'_>,
        x: &[f32],
        sigma: f64,
    ) -> Result<Vec<f32>, SamplerError> {
        let c_in = 1.0 / (sigma * sigma + 1.0).sqrt();
        let scaled: Vec<f32> = x.iter().map(|v| v * c_in as f32).collect();
        let t = self.sigma_to_t(sigma);
        let eps = model(&scaled, t)?;
        if eps.len() != x.len() {
            return Err(SamplerError::model(format!(
                "model returned {} values for {}",
                eps.len(),
                x.len()
            )));
        }
        let x0 = lin2(1.0, x, -sigma, &eps);
        let st = t * 10.0;
        let c_skip = 0.25 / (st * st + 0.25);
        let c_out = st / (st * st + 0.25).sqrt();
        Ok(lin2(c_out, &x0, c_skip, x))
    }
}

/// `sample_lcm`: `x = D(x, σ_i)`, plus `σ_{i+1}` · fresh noise while `σ_{i+1} > 0`.
pub fn sample_lcm(
    model: Denoiser<'_>,
    mut x: Vec<f32>,
    sigmas: &[f64],
    noise: &mut dyn StepNoise,
    progress: Progress<'_>,
) -> Result<Vec<f32>, SamplerError> {
    let mut progress = progress;
    let n = sigmas.len() - 1;
    for i in 0..n {
        tick(&mut progress, i, n)?;
        x = model(&x, sigmas[i])?;
        if sigmas[i + 1] > 0.0 {
            let z = noise.noise(sigmas[i], sigmas[i + 1], x.len());
            if z.len() != x.len() {
                return Err(SamplerError::model(format!(
                    "noise source gave {} values for {}",
                    z.len(),
                    x.len()
                )));
            }
            x = lin2(1.0, &x, sigmas[i + 1], &z);
        }
    }
    Ok(x)
}
