//! diffusers' step functions, run as a whole denoising loop on an eps (or v) model.
//!
//! [`run`] starts from unit noise, multiplies it by `init_noise_sigma`, and for each timestep
//! calls `model(scale_model_input(x, t), t)` and `step`, as diffusers' SD pipeline does
//! (without guidance: the model closure does classifier-free guidance itself).

use super::diffusers::DiffusersPlan;
use super::k_samplers::{EpsModel, ancestral_step};
use super::names::DiffusersScheduler;
use super::{NoiseSource, Progress, SamplerError, lin2, tick};

/// Converts a model output to `(x0, eps)` given `x = alpha x0 + sigma eps` (VP form).
fn x0_eps(pred_type: &str, x: &[f32], out: &[f32], alpha: f64, sigma: f64) -> Result<(Vec<f32>, Vec<f32>), SamplerError> {
    match pred_type {
        "epsilon" => Ok((lin2(1.0 / alpha, x, -sigma / alpha, out), out.to_vec())),
        "v_prediction" => Ok((lin2(alpha, x, -sigma, out), lin2(sigma, x, alpha, out))),
        "sample" => Ok((out.to_vec(), lin2(1.0 / sigma, x, -alpha / sigma, out))),
        other => Err(SamplerError::Invalid(format!("unknown prediction_type {other:?}"))),
    }
}

/// Runs `plan` from unit noise `noise` to the final latent.
pub fn run(
    plan: &DiffusersPlan,
    model: EpsModel<'_>,
    noise: &[f32],
    rng: &mut dyn NoiseSource,
    progress: Progress<'_>,
) -> Result<Vec<f32>, SamplerError> {
    let (mut model, mut progress) = (model, progress);
    let mut x: Vec<f32> = noise.iter().map(|v| v * plan.init_noise_sigma as f32).collect();
    let n = plan.timesteps.len();
    let pt = plan.prediction_type.as_str();
    let mut outputs: Vec<Vec<f32>> = vec![];
    for i in 0..n {
        tick(&mut progress, i, n)?;
        let t = plan.timesteps[i];
        match plan.scheduler {
            DiffusersScheduler::EulerDiscrete | DiffusersScheduler::EulerAncestralDiscrete => {
                let (s, s_next) = (plan.sigmas[i], plan.sigmas[i + 1]);
                let c_in = 1.0 / (s * s + 1.0).sqrt();
                let scaled: Vec<f32> = x.iter().map(|v| v * c_in as f32).collect();
                let out = call(&mut model, &scaled, t)?;
                // Karras-form x = x0 + s eps; the VP form is x * c_in with alpha = c_in.
                let x0 = match pt {
                    "epsilon" => lin2(1.0, &x, -s, &out),
                    "v_prediction" => lin2(1.0 / (s * s + 1.0), &x, -s * c_in, &out),
                    other => return Err(SamplerError::Invalid(format!("unsupported prediction_type {other:?}"))),
                };
                let d: Vec<f32> = x.iter().zip(&x0).map(|(x, x0)| (x - x0) / s as f32).collect();
                if plan.scheduler == DiffusersScheduler::EulerDiscrete {
                    x = lin2(1.0, &x, s_next - s, &d);
                } else {
                    let (down, up) = ancestral_step(s, s_next, 1.0);
                    x = lin2(1.0, &x, down - s, &d);
                    let z = rng.noise(t, plan.timesteps.get(i + 1).copied().unwrap_or(0.0), x.len());
                    x = lin2(1.0, &x, up, &z);
                }
            }
            DiffusersScheduler::Ddim => {
                let out = call(&mut model, &x, t)?;
                let ac = &plan.schedule.alphas_cumprod;
                let a_t = ac[t as usize];
                let prev = t as i64 - plan.step_ratio as i64;
                let a_prev = if prev >= 0 { ac[prev as usize] } else { plan.final_alpha_cumprod };
                let (x0, eps) = x0_eps(pt, &x, &out, a_t.sqrt(), (1.0 - a_t).sqrt())?;
                x = lin2(a_prev.sqrt(), &x0, (1.0 - a_prev).sqrt(), &eps);
            }
            DiffusersScheduler::DpmSolverMultistep => {
                let out = call(&mut model, &x, t)?;
                let vp = |s: f64| {
                    let a = 1.0 / (s * s + 1.0).sqrt();
                    (a, s * a)
                };
                let (a_s0, s_s0) = vp(plan.sigmas[i]);
                let (x0, _) = x0_eps(pt, &x, &out, a_s0, s_s0)?;
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
            DiffusersScheduler::LmsDiscrete | DiffusersScheduler::Pndm => {
                return Err(SamplerError::NotImplemented(format!("{:?}", plan.scheduler)));
            }
        }
    }
    Ok(x)
}

fn call(model: &mut EpsModel<'_>, x: &[f32], t: f64) -> Result<Vec<f32>, SamplerError> {
    let out = model(x, t)?;
    if out.len() != x.len() {
        return Err(SamplerError::Model(format!("model returned {} values for {}", out.len(), x.len())));
    }
    Ok(out)
}
