//! More k-diffusion samplers: LMS, DPM2, DPM2 ancestral, DPM++ 2S ancestral, DPM++ 2M SDE.
//! Same conventions as [`super::k_samplers`].

use super::k_samplers::{Denoiser, add_noise, ancestral_step, denoise, to_d};
use super::{Progress, SamplerError, StepNoise, lin2, tick};

/// Adds `scale ×` the source's noise for the step `sigma → next` to `x`.
fn noisy(
    x: &mut [f32],
    noise: &mut dyn StepNoise,
    sigma: f64,
    next: f64,
    scale: f64,
) -> Result<(), SamplerError> {
    let z = noise.noise(sigma, next, x.len());
    add_noise(x, &z, scale)
}

/// `linear_multistep_coeff`: ∫ over `[t[i], t[i+1]]` of the Lagrange basis polynomial `j` on
/// `t[i], t[i-1], ..., t[i-order+1]`. Degree ≤ 3, so 3-point Gauss–Legendre is exact (scipy's
/// `quad` agrees to rounding).
pub fn lms_coeff(order: usize, t: &[f64], i: usize, j: usize) -> f64 {
    let f = |tau: f64| {
        (0..order)
            .filter(|&k| k != j)
            .map(|k| (tau - t[i - k]) / (t[i - j] - t[i - k]))
            .product::<f64>()
    };
    let (a, b) = (t[i], t[i + 1]);
    let (m, r) = ((a + b) / 2.0, (b - a) / 2.0);
    let x = (3.0f64 / 5.0).sqrt();
    r * (5.0 / 9.0 * f(m - r * x) + 8.0 / 9.0 * f(m) + 5.0 / 9.0 * f(m + r * x))
}

/// `sample_lms` (order 4).
pub fn lms(
    model: Denoiser<'_>,
    mut x: Vec<f32>,
    sigmas: &[f64],
    progress: Progress<'_>,
) -> Result<Vec<f32>, SamplerError> {
    let (mut model, mut progress) = (model, progress);
    let n = sigmas.len() - 1;
    let order = 4;
    let mut ds: Vec<Vec<f32>> = vec![];
    for i in 0..n {
        tick(&mut progress, i, n)?;
        let den = denoise(&mut model, &x, sigmas[i])?;
        ds.push(to_d(&x, sigmas[i], &den));
        if ds.len() > order {
            ds.remove(0);
        }
        let cur = (i + 1).min(order);
        let coeffs: Vec<f32> = (0..cur)
            .map(|j| lms_coeff(cur, sigmas, i, j) as f32)
            .collect();
        // x + sum(coeff_j * ds[-1 - j]), summed left to right as Python's `sum`.
        let mut acc = vec![0.0f32; x.len()];
        for (c, d) in coeffs.iter().zip(ds.iter().rev()) {
            acc.iter_mut().zip(d).for_each(|(a, d)| *a += c * d);
        }
        x.iter_mut().zip(&acc).for_each(|(x, a)| *x += a);
    }
    Ok(x)
}

/// `sample_dpm_2` (no churn). A1111 feeds it sigmas with the next-to-last one discarded.
pub fn dpm_2(
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
        if sigmas[i + 1] == 0.0 {
            x = lin2(1.0, &x, sigmas[i + 1] - sigmas[i], &d);
        } else {
            let mid = ((sigmas[i].ln() + sigmas[i + 1].ln()) / 2.0).exp();
            let x2 = lin2(1.0, &x, mid - sigmas[i], &d);
            let den2 = denoise(&mut model, &x2, mid)?;
            let d2 = to_d(&x2, mid, &den2);
            x = lin2(1.0, &x, sigmas[i + 1] - sigmas[i], &d2);
        }
    }
    Ok(x)
}

/// `sample_dpm_2_ancestral` (eta 1).
pub fn dpm_2_ancestral(
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
        if down == 0.0 {
            x = lin2(1.0, &x, down - sigmas[i], &d);
        } else {
            let mid = ((sigmas[i].ln() + down.ln()) / 2.0).exp();
            let x2 = lin2(1.0, &x, mid - sigmas[i], &d);
            let den2 = denoise(&mut model, &x2, mid)?;
            let d2 = to_d(&x2, mid, &den2);
            x = lin2(1.0, &x, down - sigmas[i], &d2);
            noisy(&mut x, noise, sigmas[i], sigmas[i + 1], up)?;
        }
    }
    Ok(x)
}

/// `sample_dpmpp_2s_ancestral` (eta 1).
pub fn dpmpp_2s_ancestral(
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
        if down == 0.0 {
            let d = to_d(&x, sigmas[i], &den);
            x = lin2(1.0, &x, down - sigmas[i], &d);
        } else {
            let (t, t_next) = (-sigmas[i].ln(), -down.ln());
            let h = t_next - t;
            let s = t + 0.5 * h;
            let sigma_s = (-s).exp();
            let x2 = lin2(sigma_s / sigmas[i], &x, -(-h * 0.5).exp_m1(), &den);
            let den2 = denoise(&mut model, &x2, sigma_s)?;
            x = lin2(down / sigmas[i], &x, -(-h).exp_m1(), &den2);
        }
        if sigmas[i + 1] > 0.0 {
            noisy(&mut x, noise, sigmas[i], sigmas[i + 1], up)?;
        }
    }
    Ok(x)
}

/// `sample_dpmpp_2m_sde` (eta 1, midpoint). k-diffusion's noise is a Brownian tree; here
/// it comes from `noise`, called once per step with `(sigma, sigma_next)`.
pub fn dpmpp_2m_sde(
    model: Denoiser<'_>,
    mut x: Vec<f32>,
    sigmas: &[f64],
    noise: &mut dyn StepNoise,
    progress: Progress<'_>,
) -> Result<Vec<f32>, SamplerError> {
    let (mut model, mut progress) = (model, progress);
    let n = sigmas.len() - 1;
    let mut old: Option<Vec<f32>> = None;
    let mut h_last = 0.0;
    let mut h = 0.0;
    for i in 0..n {
        tick(&mut progress, i, n)?;
        let den = denoise(&mut model, &x, sigmas[i])?;
        if sigmas[i + 1] == 0.0 {
            x = den.clone();
        } else {
            h = sigmas[i].ln() - sigmas[i + 1].ln();
            let c = -(-2.0 * h).exp_m1();
            x = lin2(sigmas[i + 1] / sigmas[i] * (-h).exp(), &x, c, &den);
            if let Some(old) = &old {
                let r = h_last / h;
                let diff = lin2(1.0, &den, -1.0, old);
                x = lin2(1.0, &x, 0.5 * c / r, &diff);
            }
            noisy(
                &mut x,
                noise,
                sigmas[i],
                sigmas[i + 1],
                sigmas[i + 1] * c.sqrt(),
            )?;
        }
        old = Some(den);
        h_last = h;
    }
    Ok(x)
}
