//! A1111's UniPC (`sd_samplers_timesteps_impl.unipc` over `uni_pc.UniPC`): multistep,
//! data prediction, variant `bh1`, order 3, `time_uniform` skip, lower order final — A1111's
//! option defaults.
//!
//! Time is continuous `t ∈ [1/N, 1]` on the discrete VP schedule (`log α_t` piecewise linear
//! in t between `t_i = (i + 1) / N`); the UNet sees `(t - 1/N) · 1000`. A1111 passes
//! `steps = len(DDIM timesteps)` (so 7 requested steps run 8), starts from unit noise and ends
//! at `t = 1/N` (no final denoise to zero).

use super::k_samplers::EpsModel;
use super::schedule::DiscreteSchedule;
use super::{Progress, SamplerError, lin2, tick};

/// The discrete VP schedule in continuous time (`NoiseScheduleVP('discrete')`).
pub struct VpSchedule {
    log_alpha: Vec<f64>,
}

impl VpSchedule {
    /// From the training schedule (`log α = 0.5 ln ᾱ`).
    pub fn new(s: &DiscreteSchedule) -> Self {
        VpSchedule {
            log_alpha: s.alphas_cumprod.iter().map(|a| 0.5 * a.ln()).collect(),
        }
    }

    /// `N`.
    pub fn total_n(&self) -> usize {
        self.log_alpha.len()
    }

    /// `log α_t`, linear between the `t_i = (i + 1) / N` (extrapolated outside).
    pub fn log_alpha(&self, t: f64) -> f64 {
        let n = self.total_n();
        let p = t * n as f64 - 1.0;
        let i = (p.floor().max(0.0) as usize).min(n - 2);
        let w = p - i as f64;
        self.log_alpha[i] + w * (self.log_alpha[i + 1] - self.log_alpha[i])
    }

    /// `(α_t, σ_t, λ_t)`.
    pub fn coeffs(&self, t: f64) -> (f64, f64, f64) {
        let la = self.log_alpha(t);
        let std = (1.0 - (2.0 * la).exp()).sqrt();
        (la.exp(), std, la - std.ln())
    }

    /// The k-diffusion sigma `σ_t / α_t` at `t`.
    pub fn sigma(&self, t: f64) -> f64 {
        let (a, s, _) = self.coeffs(t);
        s / a
    }

    /// `steps + 1` uniform times from 1 to `1/N`.
    pub fn time_uniform(&self, steps: usize) -> Vec<f64> {
        super::schedule::linspace(1.0, 1.0 / self.total_n() as f64, steps + 1)
    }
}

/// Solves `a x = b` (small, dense; partial pivoting).
fn solve(mut a: Vec<Vec<f64>>, mut b: Vec<f64>) -> Vec<f64> {
    let n = b.len();
    for c in 0..n {
        let p = (c..n)
            .max_by(|&i, &j| a[i][c].abs().total_cmp(&a[j][c].abs()))
            .unwrap_or(c);
        a.swap(c, p);
        b.swap(c, p);
        for r in c + 1..n {
            let f = a[r][c] / a[c][c];
            let pivot = a[c].clone();
            a[r][c..]
                .iter_mut()
                .zip(&pivot[c..])
                .for_each(|(x, p)| *x -= f * p);
            b[r] -= f * b[c];
        }
    }
    let mut x = vec![0.0; n];
    for r in (0..n).rev() {
        let s: f64 = (r + 1..n).map(|k| a[r][k] * x[k]).sum();
        x[r] = (b[r] - s) / a[r][r];
    }
    x
}

struct UniPc<'s, 'm> {
    vp: &'s VpSchedule,
    model: EpsModel<'m>,
}

impl UniPc<'_, '_> {
    fn data_pred(&mut self, x: &[f32], t: f64) -> Result<Vec<f32>, SamplerError> {
        let n = self.vp.total_n() as f64;
        let eps = (self.model)(x, (t - 1.0 / n) * 1000.0)?;
        if eps.len() != x.len() {
            return Err(SamplerError::model(format!(
                "model returned {} values for {}",
                eps.len(),
                x.len()
            )));
        }
        let (a, s, _) = self.vp.coeffs(t);
        Ok(lin2(1.0 / a, x, -s / a, &eps))
    }

    /// `multistep_uni_pc_bh_update` (bh1, predict_x0): `(x_t, model_t)`.
    fn update(
        &mut self,
        x: &[f32],
        models: &[Vec<f32>],
        times: &[f64],
        t: f64,
        order: usize,
        use_corrector: bool,
    ) -> Result<(Vec<f32>, Option<Vec<f32>>), SamplerError> {
        let last = models.len() - 1;
        let (_, s_prev0, l_prev0) = self.vp.coeffs(times[last]);
        let (alpha_t, sigma_t, lambda_t) = self.vp.coeffs(t);
        let m0 = &models[last];
        let h = lambda_t - l_prev0;
        let mut rks = vec![];
        let mut d1s: Vec<Vec<f32>> = vec![];
        for i in 1..order {
            let (_, _, l_i) = self.vp.coeffs(times[last - i]);
            let rk = (l_i - l_prev0) / h;
            rks.push(rk);
            d1s.push(lin2(1.0 / rk, &models[last - i], -1.0 / rk, m0));
        }
        rks.push(1.0);
        let hh = -h;
        let h_phi_1 = hh.exp_m1();
        let mut h_phi_k = h_phi_1 / hh - 1.0;
        let mut fact = 1.0;
        let b_h = hh;
        let mut r = vec![];
        let mut b = vec![];
        for i in 1..=order {
            r.push(
                rks.iter()
                    .map(|rk| rk.powi(i as i32 - 1))
                    .collect::<Vec<f64>>(),
            );
            b.push(h_phi_k * fact / b_h);
            fact *= (i + 1) as f64;
            h_phi_k = h_phi_k / hh - 1.0 / fact;
        }
        let x_t_ = lin2(sigma_t / s_prev0, x, -alpha_t * h_phi_1, m0);
        let weighted = |rhos: &[f64], base: Vec<f32>| -> Vec<f32> {
            let mut acc = base;
            for (rho, d) in rhos.iter().zip(&d1s) {
                acc = lin2(1.0, &acc, *rho, d);
            }
            acc
        };
        let x_t = if d1s.is_empty() {
            x_t_.clone()
        } else {
            let rhos_p = if order == 2 {
                vec![0.5]
            } else {
                let sub: Vec<Vec<f64>> = r[..order - 1]
                    .iter()
                    .map(|row| row[..order - 1].to_vec())
                    .collect();
                solve(sub, b[..order - 1].to_vec())
            };
            let pred_res = weighted(&rhos_p, vec![0.0; x.len()]);
            lin2(1.0, &x_t_, -alpha_t * b_h, &pred_res)
        };
        if !use_corrector {
            return Ok((x_t, None));
        }
        let rhos_c = if order == 1 { vec![0.5] } else { solve(r, b) };
        let model_t = self.data_pred(&x_t, t)?;
        let d1_t = lin2(1.0, &model_t, -1.0, m0);
        let corr = weighted(&rhos_c[..rhos_c.len() - 1], vec![0.0; x.len()]);
        let corr = lin2(1.0, &corr, rhos_c[rhos_c.len() - 1], &d1_t);
        Ok((lin2(1.0, &x_t_, -alpha_t * b_h, &corr), Some(model_t)))
    }
}

/// A1111's UniPC for `steps` solver steps (A1111 passes `len(DDIM timesteps)`), from unit
/// noise `x`. Needs `steps >= 3` (order 3), as A1111 asserts.
pub fn unipc_a1111(
    schedule: &DiscreteSchedule,
    model: EpsModel<'_>,
    mut x: Vec<f32>,
    steps: usize,
    progress: Progress<'_>,
) -> Result<Vec<f32>, SamplerError> {
    let order = 3;
    if steps < order {
        return Err(SamplerError::Invalid(format!(
            "UniPC needs at least {order} steps, got {steps}"
        )));
    }
    let mut progress = progress;
    let vp = VpSchedule::new(schedule);
    let ts = vp.time_uniform(steps);
    let mut u = UniPc { vp: &vp, model };
    tick(&mut progress, 0, steps)?;
    let mut models = vec![u.data_pred(&x, ts[0])?];
    let mut times = vec![ts[0]];
    for (init, &t) in ts.iter().enumerate().take(order).skip(1) {
        tick(&mut progress, init, steps)?;
        let (nx, m) = u.update(&x, &models, &times, t, init, true)?;
        x = nx;
        let m = match m {
            Some(m) => m,
            None => u.data_pred(&x, t)?,
        };
        models.push(m);
        times.push(t);
    }
    for (step, &t) in ts.iter().enumerate().skip(order) {
        if step < steps {
            tick(&mut progress, step, steps)?;
        }
        let step_order = order.min(steps + 1 - step);
        let (nx, m) = u.update(&x, &models, &times, t, step_order, step != steps)?;
        x = nx;
        models.remove(0);
        times.remove(0);
        times.push(t);
        if step < steps {
            let m = match m {
                Some(m) => m,
                None => u.data_pred(&x, t)?,
            };
            models.push(m);
        } else {
            models.push(vec![]);
        }
    }
    Ok(x)
}
