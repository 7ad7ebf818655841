//! k-diffusion's samplers (as A1111 runs them) on a denoiser `D(x, sigma) -> x0`.
//!
//! Each takes the latent `x` already multiplied by `sigmas[0]` (k-diffusion convention) and
//! the `n + 1` sigmas ending in 0, and returns the final latent. [`EpsDenoiser`] turns an
//! eps-predicting UNet into the denoiser the way k-diffusion's `DiscreteEpsDDPMDenoiser` does.
//! A1111's DDIM ([`ddim_a1111`]) works on timesteps and calls the eps model directly.

use super::schedule::DiscreteSchedule;
use super::{Progress, SamplerError, StepNoise, lin2, tick};

/// A denoiser: `(x, sigma) -> predicted x0`.
pub type Denoiser<'a> = &'a mut dyn FnMut(&[f32], f64) -> Result<Vec<f32>, SamplerError>;

/// An eps model: `(x scaled for the model, timestep) -> predicted eps`.
pub type EpsModel<'a> = &'a mut dyn FnMut(&[f32], f64) -> Result<Vec<f32>, SamplerError>;

/// k-diffusion `DiscreteEpsDDPMDenoiser`: `D(x, σ) = x - σ · eps(x / sqrt(σ² + 1), t(σ))`
/// with `t(σ)` = [`DiscreteSchedule::sigma_to_t`] (continuous, not quantized, as A1111).
/// With `v_prediction` it is `DiscreteVDDPMDenoiser`:
/// `D(x, σ) = x / (σ² + 1) - σ / sqrt(σ² + 1) · v(x / sqrt(σ² + 1), t(σ))`.
pub struct EpsDenoiser<'s, 'm> {
    /// The training schedule.
    pub schedule: &'s DiscreteSchedule,
    /// The eps (or v) model.
    pub model: EpsModel<'m>,
    /// The model predicts v rather than eps.
    pub v_prediction: bool,
}

impl EpsDenoiser<'_, '_> {
    /// `D(x, sigma)`.
    pub fn denoise(&mut self, x: &[f32], sigma: f64) -> Result<Vec<f32>, SamplerError> {
        let c_in = 1.0 / (sigma * sigma + 1.0).sqrt();
        let scaled: Vec<f32> = x.iter().map(|v| v * c_in as f32).collect();
        let out = (self.model)(&scaled, self.schedule.sigma_to_t(sigma))?;
        check_len(&out, x.len())?;
        if self.v_prediction {
            Ok(lin2(1.0 / (sigma * sigma + 1.0), x, -sigma * c_in, &out))
        } else {
            Ok(lin2(1.0, x, -sigma, &out))
        }
    }
}

fn check_len(v: &[f32], len: usize) -> Result<(), SamplerError> {
    if v.len() == len {
        Ok(())
    } else {
        Err(SamplerError::model(format!(
            "model returned {} values for a {len}-value latent",
            v.len()
        )))
    }
}

pub(super) fn denoise(
    model: &mut Denoiser<'_>,
    x: &[f32],
    sigma: f64,
) -> Result<Vec<f32>, SamplerError> {
    let d = model(x, sigma)?;
    check_len(&d, x.len())?;
    Ok(d)
}

/// `(x - denoised) / sigma`.
pub(super) fn to_d(x: &[f32], sigma: f64, denoised: &[f32]) -> Vec<f32> {
    let s = sigma as f32;
    x.iter().zip(denoised).map(|(x, d)| (x - d) / s).collect()
}

/// `x + d * dt`.
fn axpy(x: &[f32], d: &[f32], dt: f64) -> Vec<f32> {
    lin2(1.0, x, dt, d)
}

/// k-diffusion `get_ancestral_step`: `(sigma_down, sigma_up)`.
pub fn ancestral_step(sigma_from: f64, sigma_to: f64, eta: f64) -> (f64, f64) {
    if eta == 0.0 {
        return (sigma_to, 0.0);
    }
    let up = sigma_to.min(
        eta * (sigma_to * sigma_to * (sigma_from * sigma_from - sigma_to * sigma_to)
            / (sigma_from * sigma_from))
            .sqrt(),
    );
    ((sigma_to * sigma_to - up * up).sqrt(), up)
}

pub(super) fn add_noise(x: &mut [f32], noise: &[f32], scale: f64) -> Result<(), SamplerError> {
    if noise.len() != x.len() {
        return Err(SamplerError::model(format!(
            "noise source gave {} values for {}",
            noise.len(),
            x.len()
        )));
    }
    let s = scale as f32;
    x.iter_mut().zip(noise).for_each(|(x, n)| *x += n * s);
    Ok(())
}

/// `sample_euler` (no churn).
pub fn euler(
    model: Denoiser<'_>,
    mut x: Vec<f32>,
    sigmas: &[f64],
    progress: Progress<'_>,
) -> Result<Vec<f32>, SamplerError> {
    let mut model = model;
    let mut progress = progress;
    let n = sigmas.len() - 1;
    for i in 0..n {
        tick(&mut progress, i, n)?;
        let den = denoise(&mut model, &x, sigmas[i])?;
        let d = to_d(&x, sigmas[i], &den);
        x = axpy(&x, &d, sigmas[i + 1] - sigmas[i]);
    }
    Ok(x)
}

/// `sample_euler_ancestral` (eta 1, s_noise 1).
pub fn euler_ancestral(
    model: Denoiser<'_>,
    mut x: Vec<f32>,
    sigmas: &[f64],
    noise: &mut dyn StepNoise,
    progress: Progress<'_>,
) -> Result<Vec<f32>, SamplerError> {
    let (mut model, mut progress) = (model, progress);
    let n = sigmas.len() - 1;
    for i in 0..n {
        tick(&mut progress, i, n)?;
        let den = denoise(&mut model, &x, sigmas[i])?;
        let (down, up) = ancestral_step(sigmas[i], sigmas[i + 1], 1.0);
        let d = to_d(&x, sigmas[i], &den);
        x = axpy(&x, &d, down - sigmas[i]);
        if sigmas[i + 1] > 0.0 {
            let z = noise.noise(sigmas[i], sigmas[i + 1], x.len());
            add_noise(&mut x, &z, up)?;
        }
    }
    Ok(x)
}

/// `sample_heun` (no churn).
pub fn heun(
    model: Denoiser<'_>,
    mut x: Vec<f32>,
    sigmas: &[f64],
    progress: Progress<'_>,
) -> Result<Vec<f32>, SamplerError> {
    let (mut model, mut progress) = (model, progress);
    let n = sigmas.len() - 1;
    for i in 0..n {
        tick(&mut progress, i, n)?;
        let den = denoise(&mut model, &x, sigmas[i])?;
        let d = to_d(&x, sigmas[i], &den);
        let dt = sigmas[i + 1] - sigmas[i];
        if sigmas[i + 1] == 0.0 {
            x = axpy(&x, &d, dt);
        } else {
            let x2 = axpy(&x, &d, dt);
            let den2 = denoise(&mut model, &x2, sigmas[i + 1])?;
            let d2 = to_d(&x2, sigmas[i + 1], &den2);
            let dp = lin2(0.5, &d, 0.5, &d2);
            x = axpy(&x, &dp, dt);
        }
    }
    Ok(x)
}

/// `t_fn(sigma) = -ln sigma`.
fn t_fn(sigma: f64) -> f64 {
    -sigma.ln()
}

/// `sigma_fn(t) = exp(-t)`.
fn sigma_fn(t: f64) -> f64 {
    (-t).exp()
}

/// `sample_dpmpp_2m`.
pub fn dpmpp_2m(
    model: Denoiser<'_>,
    mut x: Vec<f32>,
    sigmas: &[f64],
    progress: Progress<'_>,
) -> Result<Vec<f32>, SamplerError> {
    let (mut model, mut progress) = (model, progress);
    let n = sigmas.len() - 1;
    let mut old: Option<Vec<f32>> = None;
    for i in 0..n {
        tick(&mut progress, i, n)?;
        let den = denoise(&mut model, &x, sigmas[i])?;
        let (t, t_next) = (t_fn(sigmas[i]), t_fn(sigmas[i + 1]));
        let h = t_next - t;
        let ratio = sigma_fn(t_next) / sigma_fn(t);
        let c = -(-h).exp_m1();
        x = match (&old, sigmas[i + 1] == 0.0) {
            (Some(old), false) => {
                let r = (t - t_fn(sigmas[i - 1])) / h;
                let dd = lin2(1.0 + 1.0 / (2.0 * r), &den, -1.0 / (2.0 * r), old);
                lin2(ratio, &x, c, &dd)
            }
            _ => lin2(ratio, &x, c, &den),
        };
        old = Some(den);
    }
    Ok(x)
}

/// `sample_dpmpp_sde` (eta 1, s_noise 1, r 1/2). k-diffusion draws the noise from a
/// Brownian tree; here it comes from `noise`, called with `(sigma_fn(t), sigma_fn(s))` then
/// `(sigma_fn(t), sigma_fn(t_next))` each step, as k-diffusion calls its noise sampler.
pub fn dpmpp_sde(
    model: Denoiser<'_>,
    mut x: Vec<f32>,
    sigmas: &[f64],
    noise: &mut dyn StepNoise,
    progress: Progress<'_>,
) -> Result<Vec<f32>, SamplerError> {
    let (mut model, mut progress) = (model, progress);
    let n = sigmas.len() - 1;
    let r = 0.5;
    for i in 0..n {
        tick(&mut progress, i, n)?;
        let den = denoise(&mut model, &x, sigmas[i])?;
        if sigmas[i + 1] == 0.0 {
            let d = to_d(&x, sigmas[i], &den);
            x = axpy(&x, &d, sigmas[i + 1] - sigmas[i]);
            continue;
        }
        let (t, t_next) = (t_fn(sigmas[i]), t_fn(sigmas[i + 1]));
        let h = t_next - t;
        let s = t + h * r;
        let fac = 1.0 / (2.0 * r);
        let (sd, su) = ancestral_step(sigma_fn(t), sigma_fn(s), 1.0);
        let s_ = t_fn(sd);
        let mut x2 = lin2(sigma_fn(s_) / sigma_fn(t), &x, -(t - s_).exp_m1(), &den);
        let z = noise.noise(sigma_fn(t), sigma_fn(s), x.len());
        add_noise(&mut x2, &z, su)?;
        let den2 = denoise(&mut model, &x2, sigma_fn(s))?;
        let (sd, su) = ancestral_step(sigma_fn(t), sigma_fn(t_next), 1.0);
        let tn_ = t_fn(sd);
        let dd = lin2(1.0 - fac, &den, fac, &den2);
        x = lin2(sigma_fn(tn_) / sigma_fn(t), &x, -(t - tn_).exp_m1(), &dd);
        let z = noise.noise(sigma_fn(t), sigma_fn(t_next), x.len());
        add_noise(&mut x, &z, su)?;
    }
    Ok(x)
}

/// A1111's DDIM timesteps for `steps`: `clip(range(0, T, T // steps) + 1, 0, T - 1)`.
/// (A1111 runs `len - 1` model calls over them, ending at `ᾱ` of the first timestep.)
pub fn a1111_ddim_timesteps(num_train_timesteps: usize, steps: usize) -> Vec<usize> {
    let stride = (num_train_timesteps / steps.max(1)).max(1);
    (0..num_train_timesteps)
        .step_by(stride)
        .map(|t| (t + 1).min(num_train_timesteps - 1))
        .collect()
}

/// A1111's `ddim` (eta 0) on the eps model: `x` is unit noise (not scaled by a sigma).
pub fn ddim_a1111(
    schedule: &DiscreteSchedule,
    model: EpsModel<'_>,
    mut x: Vec<f32>,
    timesteps: &[usize],
    progress: Progress<'_>,
) -> Result<Vec<f32>, SamplerError> {
    let mut progress = progress;
    let ac = &schedule.alphas_cumprod;
    let total = timesteps.len().saturating_sub(1);
    for i in 0..total {
        tick(&mut progress, i, total)?;
        let index = timesteps.len() - 1 - i;
        let eps = model(&x, timesteps[index] as f64)?;
        check_len(&eps, x.len())?;
        let a_t = ac[timesteps[index]];
        let a_prev = ac[timesteps[index - 1]];
        // pred_x0 = (x - sqrt(1-a_t) eps) / sqrt(a_t); x = sqrt(a_prev) pred_x0 + sqrt(1-a_prev) eps
        let pred_x0 = lin2(1.0 / a_t.sqrt(), &x, -(1.0 - a_t).sqrt() / a_t.sqrt(), &eps);
        x = lin2(a_prev.sqrt(), &pred_x0, (1.0 - a_prev).sqrt(), &eps);
    }
    Ok(x)
}
