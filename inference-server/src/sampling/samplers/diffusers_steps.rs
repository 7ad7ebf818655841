//! diffusers' step functions, run as a whole denoising loop on an eps (or v) model.
//!
//! [`run`] starts from unit noise, multiplies it by `init_noise_sigma`, and for each timestep
//! calls `model(scale_model_input(x, t), t)` and `step`, as diffusers' SD pipeline does
//! (without guidance: the model closure does classifier-free guidance itself).

use super::diffusers::DiffusersPlan;
use super::k_more::lms_coeff;
use super::k_samplers::{EpsModel, ancestral_step};
use super::names::DiffusersScheduler;
use super::prediction::{unsupported, x0_eps};
use super::{Progress, SamplerError, StepNoise, lin2, tick};
use crate::sampling::PredictionType;

/// Runs `plan` from unit noise `noise` to the final latent.
pub fn run(
    plan: &DiffusersPlan,
    model: EpsModel<'_>,
    noise: &[f32],
    rng: &mut dyn StepNoise,
    progress: Progress<'_>,
) -> Result<Vec<f32>, SamplerError> {
    let (mut model, mut progress) = (model, progress);
    let mut x: Vec<f32> = noise
        .iter()
        .map(|v| v * plan.init_noise_sigma as f32)
        .collect();
    let n = plan.timesteps.len();
    let pt = plan.prediction_type;
    let mut outputs: Vec<Vec<f32>> = vec![];
    let mut pndm = Plms::default();
    for i in 0..n {
        tick(&mut progress, i, n)?;
        let t = plan.timesteps[i];
        match plan.scheduler {
            DiffusersScheduler::EulerDiscrete | DiffusersScheduler::EulerAncestralDiscrete => {
                let (s, s_next) = (plan.sigmas[i], plan.sigmas[i + 1]);
                let x0 = sigma_x0(&mut model, &x, s, t, pt, plan.scheduler)?;
                let d: Vec<f32> = x
                    .iter()
                    .zip(&x0)
                    .map(|(x, x0)| (x - x0) / s as f32)
                    .collect();
                if plan.scheduler == DiffusersScheduler::EulerDiscrete {
                    x = lin2(1.0, &x, s_next - s, &d);
                } else {
                    let (down, up) = ancestral_step(s, s_next, 1.0);
                    x = lin2(1.0, &x, down - s, &d);
                    let z = rng.noise(
                        t,
                        plan.timesteps.get(i + 1).copied().unwrap_or(0.0),
                        x.len(),
                    );
                    x = lin2(1.0, &x, up, &z);
                }
            }
            DiffusersScheduler::Ddim => {
                let out = call(&mut model, &x, t)?;
                let ac = &plan.schedule.alphas_cumprod;
                let a_t = ac[t as usize];
                let prev = t as i64 - plan.step_ratio as i64;
                let a_prev = if prev >= 0 {
                    ac[prev as usize]
                } else {
                    plan.final_alpha_cumprod
                };
                let (x0, eps) = x0_eps(pt, &x, &out, a_t.sqrt(), (1.0 - a_t).sqrt());
                x = lin2(a_prev.sqrt(), &x0, (1.0 - a_prev).sqrt(), &eps);
            }
            DiffusersScheduler::DpmSolverMultistep => {
                let out = call(&mut model, &x, t)?;
                let vp = |s: f64| {
                    let a = 1.0 / (s * s + 1.0).sqrt();
                    (a, s * a)
                };
                let (a_s0, s_s0) = vp(plan.sigmas[i]);
                let (x0, _) = x0_eps(pt, &x, &out, a_s0, s_s0);
                outputs.push(x0);
                let s_next = plan.sigmas[i + 1];
                let m0 = &outputs[outputs.len() - 1];
                // lower_order_final with final_sigmas_type "zero": the last step is first order.
                x = if s_next == 0.0 {
                    m0.clone()
                } else {
                    let (a_t, s_t) = vp(s_next);
                    let lam = |a: f64, s: f64| a.ln() - s.ln();
                    let h = lam(a_t, s_t) - lam(a_s0, s_s0);
                    let c = -a_t * (-h).exp_m1();
                    if outputs.len() < 2 {
                        lin2(s_t / s_s0, &x, c, m0)
                    } else {
                        let m1 = &outputs[outputs.len() - 2];
                        let (a_s1, s_s1) = vp(plan.sigmas[i - 1]);
                        let r0 = (lam(a_s0, s_s0) - lam(a_s1, s_s1)) / h;
                        // D0 + 0.5 D1, D1 = (m0 - m1) / r0
                        let d = lin2(1.0 + 0.5 / r0, m0, -0.5 / r0, m1);
                        lin2(s_t / s_s0, &x, c, &d)
                    }
                };
            }
            DiffusersScheduler::LmsDiscrete => {
                let s = plan.sigmas[i];
                let x0 = sigma_x0(&mut model, &x, s, t, pt, plan.scheduler)?;
                outputs.push(
                    x.iter()
                        .zip(&x0)
                        .map(|(x, x0)| (x - x0) / s as f32)
                        .collect(),
                );
                if outputs.len() > 4 {
                    outputs.remove(0);
                }
                let order = (i + 1).min(4);
                let mut acc = vec![0.0f32; x.len()];
                for (j, d) in (0..order).zip(outputs.iter().rev()) {
                    let c = lms_coeff(order, &plan.sigmas, i, j) as f32;
                    acc.iter_mut().zip(d).for_each(|(a, d)| *a += c * d);
                }
                x.iter_mut().zip(&acc).for_each(|(x, a)| *x += a);
            }
            DiffusersScheduler::Pndm => {
                let out = call(&mut model, &x, t)?;
                x = pndm.step(plan, &out, t as i64, &x)?;
            }
        }
    }
    Ok(x)
}

/// The sigma-space schedulers' (Euler, LMS) denoised estimate: the model sees
/// `scale_model_input(x) = x / sqrt(s² + 1)`; with Karras-form `x = x0 + s·eps` the VP form is
/// `x · c_in` with alpha = c_in.
fn sigma_x0(
    model: &mut EpsModel<'_>,
    x: &[f32],
    s: f64,
    t: f64,
    pt: PredictionType,
    scheduler: DiffusersScheduler,
) -> Result<Vec<f32>, SamplerError> {
    let c_in = 1.0 / (s * s + 1.0).sqrt();
    let scaled: Vec<f32> = x.iter().map(|v| v * c_in as f32).collect();
    let out = call(model, &scaled, t)?;
    match pt {
        PredictionType::Epsilon => Ok(lin2(1.0, x, -s, &out)),
        PredictionType::VPrediction => Ok(lin2(1.0 / (s * s + 1.0), x, -s * c_in, &out)),
        PredictionType::Sample => Err(unsupported(scheduler.class_name(), pt)),
    }
}

fn call(model: &mut EpsModel<'_>, x: &[f32], t: f64) -> Result<Vec<f32>, SamplerError> {
    let out = model(x, t)?;
    if out.len() != x.len() {
        return Err(SamplerError::model(format!(
            "model returned {} values for {}",
            out.len(),
            x.len()
        )));
    }
    Ok(out)
}

/// `PNDMScheduler.step_plms` state (with `skip_prk_steps`).
#[derive(Default)]
struct Plms {
    counter: usize,
    ets: Vec<Vec<f32>>,
    cur_sample: Option<Vec<f32>>,
}

impl Plms {
    fn step(
        &mut self,
        plan: &DiffusersPlan,
        out: &[f32],
        t: i64,
        x: &[f32],
    ) -> Result<Vec<f32>, SamplerError> {
        let ratio = plan.step_ratio as i64;
        let (mut t, mut prev_t) = (t, t - ratio);
        if self.counter != 1 {
            if self.ets.len() > 3 {
                self.ets.drain(..self.ets.len() - 3);
            }
            self.ets.push(out.to_vec());
        } else {
            prev_t = t;
            t += ratio;
        }
        let e = &self.ets;
        let n = e.len();
        let comb = |cs: &[f32], div: f32| -> Vec<f32> {
            (0..out.len())
                .map(|k| {
                    cs.iter()
                        .enumerate()
                        .map(|(j, c)| c * e[n - 1 - j][k])
                        .sum::<f32>()
                        / div
                })
                .collect()
        };
        let mut sample = x.to_vec();
        let eps = if n == 1 && self.counter == 0 {
            self.cur_sample = Some(x.to_vec());
            out.to_vec()
        } else if n == 1 && self.counter == 1 {
            sample = self.cur_sample.take().unwrap_or_default();
            out.iter().zip(&e[0]).map(|(a, b)| (a + b) / 2.0).collect()
        } else if n == 2 {
            comb(&[3.0, -1.0], 2.0)
        } else if n == 3 {
            comb(&[23.0, -16.0, 5.0], 12.0)
        } else {
            comb(&[55.0, -59.0, 37.0, -9.0], 24.0)
        };
        self.counter += 1;
        let ac = &plan.schedule.alphas_cumprod;
        let a_t = ac[t as usize];
        let a_prev = if prev_t >= 0 {
            ac[prev_t as usize]
        } else {
            plan.final_alpha_cumprod
        };
        let (b_t, b_prev) = (1.0 - a_t, 1.0 - a_prev);
        let eps = match plan.prediction_type {
            PredictionType::Epsilon => eps,
            PredictionType::VPrediction => lin2(a_t.sqrt(), &eps, b_t.sqrt(), &sample),
            PredictionType::Sample => {
                return Err(unsupported(
                    plan.scheduler.class_name(),
                    plan.prediction_type,
                ));
            }
        };
        let denom = a_t * b_prev.sqrt() + (a_t * b_t * a_prev).sqrt();
        Ok(lin2(
            (a_prev / a_t).sqrt(),
            &sample,
            -(a_prev - a_t) / denom,
            &eps,
        ))
    }
}
