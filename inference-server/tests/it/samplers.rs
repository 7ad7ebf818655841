//! Samplers and schedules against k-diffusion / diffusers goldens
//! (`tests/parity/sampler_goldens.py` → `tests/goldens/samplers.safetensors`).
//!
//! Tolerance: |Δ| ≤ 1e-5 · max(|ref|, 1) per element (`TOL`). Both sides run the same
//! arithmetic in float32 on the latents; the schedules here are f64 while the references are
//! float32 torch/numpy (diffusers' ᾱ is a float32 cumprod over 1000 betas), which is the main
//! source of difference (measured worst-case is printed by each check).

use std::cell::RefCell;
use std::collections::HashMap;
use std::ops::ControlFlow;
use std::path::Path;

use inference_server::sampling::samplers::diffusers::set_timesteps;
use inference_server::sampling::samplers::diffusers_steps;
use inference_server::sampling::samplers::k_more;
use inference_server::sampling::samplers::k_samplers::{self, EpsDenoiser};
use inference_server::sampling::samplers::names::accepted_sampler_names;
use inference_server::sampling::samplers::schedule::DiscreteSchedule;
use inference_server::sampling::samplers::{
    BrownianNoise, DiffusersScheduler, KSampler, Resolved, SamplerError, Schedule, Start,
    StepNoise, levels, resolve, sample, sample_from,
};
use inference_server::sampling::{PredictionType, SchedulerConfig};

const TOL: f64 = 1e-5;

struct Goldens(HashMap<String, Vec<f32>>);

fn goldens() -> Goldens {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/goldens/samplers.safetensors");
    let bytes = std::fs::read(path).expect("read goldens");
    let st = safetensors::SafeTensors::deserialize(&bytes).expect("parse goldens");
    let mut map = HashMap::new();
    for (name, view) in st.tensors() {
        let v: Vec<f32> = view
            .data()
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect();
        map.insert(name, v);
    }
    Goldens(map)
}

impl Goldens {
    fn get(&self, k: &str) -> &[f32] {
        self.0
            .get(k)
            .unwrap_or_else(|| panic!("golden {k} missing"))
    }
}

/// Checks `got` against `want`; returns the worst |Δ| / max(|ref|, 1).
fn check<T: Copy + Into<f64>>(what: &str, got: &[T], want: &[f32]) -> f64 {
    assert_eq!(
        got.len(),
        want.len(),
        "{what}: length {} vs golden {}",
        got.len(),
        want.len()
    );
    let mut worst = 0.0f64;
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        let (g, w) = ((*g).into(), *w as f64);
        let err = (g - w).abs() / w.abs().max(1.0);
        assert!(
            err <= TOL,
            "{what}[{i}]: got {g}, golden {w} (rel {err:.2e})"
        );
        worst = worst.max(err);
    }
    eprintln!("{what}: worst {worst:.2e}");
    worst
}

fn sd15(spacing: &str) -> SchedulerConfig {
    SchedulerConfig {
        timestep_spacing: spacing.into(),
        ..SchedulerConfig::default()
    }
}

/// The toy eps model of the golden script: 0.1·x + 0.2·sin(t/50)·bias (float32).
fn toy(bias: &[f32]) -> impl FnMut(&[f32], f64) -> Result<Vec<f32>, SamplerError> + '_ {
    move |x, t| {
        let c = 0.2 * ((t as f32) / 50.0).sin();
        Ok(x.iter().zip(bias).map(|(x, b)| 0.1 * x + c * b).collect())
    }
}

/// Noise call k returns `anc_noise[k]`.
fn injected(anc: &[f32]) -> impl FnMut(f64, f64, usize) -> Vec<f32> + '_ {
    let mut k = 0;
    move |_, _, len| {
        let out = anc[k * len..(k + 1) * len].to_vec();
        k += 1;
        out
    }
}

fn go(_: usize, _: usize) -> ControlFlow<()> {
    ControlFlow::Continue(())
}

#[test]
fn names_resolve() {
    let a = |s, sch| Resolved::A1111 {
        sampler: s,
        schedule: sch,
    };
    assert_eq!(
        resolve("Euler a", None).unwrap(),
        a(KSampler::EulerAncestral, Schedule::Uniform)
    );
    assert_eq!(
        resolve("Euler", Some("Automatic")).unwrap(),
        a(KSampler::Euler, Schedule::Uniform)
    );
    assert_eq!(
        resolve("DPM++ 2M", None).unwrap(),
        a(KSampler::DpmPp2M, Schedule::Karras)
    );
    assert_eq!(
        resolve("DPM++ 2M", Some("Uniform")).unwrap(),
        a(KSampler::DpmPp2M, Schedule::Uniform)
    );
    assert_eq!(
        resolve("DPM++ 2M Karras", None).unwrap(),
        a(KSampler::DpmPp2M, Schedule::Karras)
    );
    assert_eq!(
        resolve("DPM++ 2M SDE", None).unwrap(),
        a(KSampler::DpmPp2MSde, Schedule::Exponential)
    );
    assert_eq!(
        resolve("DPM++ 2M SDE Karras", None).unwrap(),
        a(KSampler::DpmPp2MSde, Schedule::Karras)
    );
    assert_eq!(
        resolve("DPM++ SDE Karras", Some("Uniform")).unwrap(),
        a(KSampler::DpmPpSde, Schedule::Karras)
    );
    assert_eq!(
        resolve("Euler Exponential", None).unwrap(),
        a(KSampler::Euler, Schedule::Exponential)
    );
    assert_eq!(
        resolve("Heun", Some("SGM Uniform")).unwrap(),
        a(KSampler::Heun, Schedule::SgmUniform)
    );
    assert_eq!(
        resolve("LMS Karras", None).unwrap(),
        a(KSampler::Lms, Schedule::Karras)
    );
    assert_eq!(
        resolve("DPM2 a Karras", None).unwrap(),
        a(KSampler::Dpm2Ancestral, Schedule::Karras)
    );
    assert_eq!(
        resolve("DPM++ 2S a", None).unwrap(),
        a(KSampler::DpmPp2SAncestral, Schedule::Karras)
    );
    assert_eq!(
        resolve("DDIM", None).unwrap(),
        a(KSampler::Ddim, Schedule::Uniform)
    );
    assert_eq!(
        resolve("UniPC", None).unwrap(),
        a(KSampler::UniPc, Schedule::Uniform)
    );
    assert_eq!(
        resolve("LCM", None).unwrap(),
        a(KSampler::Lcm, Schedule::Uniform)
    );
    let d = |s, karras| Resolved::Diffusers {
        scheduler: s,
        karras,
    };
    assert_eq!(
        resolve("EulerDiscreteScheduler", None).unwrap(),
        d(DiffusersScheduler::EulerDiscrete, false)
    );
    assert_eq!(
        resolve("EULER_DISCRETE", None).unwrap(),
        d(DiffusersScheduler::EulerDiscrete, false)
    );
    assert_eq!(
        resolve("EULER_ANCESTRAL_DISCRETE", None).unwrap(),
        d(DiffusersScheduler::EulerAncestralDiscrete, false)
    );
    assert_eq!(
        resolve("DPM_SOLVER", Some("Karras")).unwrap(),
        d(DiffusersScheduler::DpmSolverMultistep, true)
    );
    assert_eq!(
        resolve("KLMS", None).unwrap(),
        d(DiffusersScheduler::LmsDiscrete, false)
    );
    assert_eq!(
        resolve("PNDM", None).unwrap(),
        d(DiffusersScheduler::Pndm, false)
    );
    assert_eq!(
        resolve("DDIMScheduler", None).unwrap(),
        d(DiffusersScheduler::Ddim, false)
    );
}

#[test]
fn unknown_names_list_the_accepted_ones() {
    let err = resolve("Euler b", None).unwrap_err();
    let SamplerError::UnknownSampler { name, accepted } = &err else {
        panic!("{err:?}")
    };
    assert_eq!(name, "Euler b");
    assert_eq!(accepted, &accepted_sampler_names());
    let msg = err.to_string();
    for n in [
        "Euler a",
        "DPM++ 2M Karras",
        "EulerDiscreteScheduler",
        "EULER_DISCRETE",
        "KLMS",
        "DDIM",
    ] {
        assert!(msg.contains(n), "{msg} lacks {n}");
    }
    assert!(matches!(
        resolve("Euler", Some("Cosine")),
        Err(SamplerError::UnknownSchedule { .. })
    ));
    assert!(matches!(
        resolve("DDIM Karras", None),
        Err(SamplerError::UnsupportedSchedule { .. })
    ));
    assert!(matches!(
        resolve("PNDM", Some("Karras")),
        Err(SamplerError::UnsupportedSchedule { .. })
    ));
    // Every listed name resolves.
    for n in accepted_sampler_names() {
        resolve(&n, None).unwrap_or_else(|e| panic!("{n}: {e}"));
    }
}

#[test]
fn a1111_schedules_match_k_diffusion() {
    let g = goldens();
    let s = DiscreteSchedule::new(&SchedulerConfig::default()).unwrap();
    for (name, sched) in [
        ("uniform", Schedule::Uniform),
        ("karras", Schedule::Karras),
        ("exponential", Schedule::Exponential),
        ("sgm_uniform", Schedule::SgmUniform),
    ] {
        for steps in [4, 10] {
            let got = s.a1111_sigmas(KSampler::Euler, sched, steps).unwrap();
            check(
                &format!("a1111 {name} {steps}"),
                &got,
                g.get(&format!("a1111.sched.{name}.{steps}")),
            );
        }
    }
    let got = s
        .a1111_sigmas(KSampler::Dpm2, Schedule::Automatic, 4)
        .unwrap();
    check(
        "a1111 DPM2 karras 4",
        &got,
        g.get("a1111.sched.dpm2_karras.4"),
    );
    let t: Vec<f64> = g
        .get("a1111.probe_sigmas")
        .iter()
        .map(|&x| s.sigma_to_t(x as f64))
        .collect();
    check("sigma_to_t", &t, g.get("a1111.sigma_to_t"));
    let sig: Vec<f64> = g
        .get("a1111.probe_t")
        .iter()
        .map(|&x| s.t_to_sigma(x as f64))
        .collect();
    check("t_to_sigma", &sig, g.get("a1111.t_to_sigma"));
    // The example: 4 Euler steps at t = 999, 666, 333, 0.
    let ts: Vec<f64> = s.uniform(4)[..4].iter().map(|&x| s.sigma_to_t(x)).collect();
    for (t, want) in ts.iter().zip([999.0, 666.0, 333.0, 0.0]) {
        assert!((t - want).abs() < 1e-6, "{ts:?}");
    }
}

#[test]
fn a1111_runs_match_k_diffusion() {
    let g = goldens();
    let cfg = SchedulerConfig::default();
    let s = DiscreteSchedule::new(&cfg).unwrap();
    let (noise, bias, anc) = (g.get("noise"), g.get("bias"), g.get("anc_noise"));
    for (name, sampler) in [
        ("euler", KSampler::Euler),
        ("euler_a", KSampler::EulerAncestral),
        ("heun", KSampler::Heun),
        ("dpmpp_2m", KSampler::DpmPp2M),
        ("dpmpp_2m_uniform", KSampler::DpmPp2M),
        ("dpmpp_sde", KSampler::DpmPpSde),
        ("lms", KSampler::Lms),
        ("dpm2", KSampler::Dpm2),
        ("dpm2_a", KSampler::Dpm2Ancestral),
        ("dpmpp_2s_a", KSampler::DpmPp2SAncestral),
        ("dpmpp_2m_sde", KSampler::DpmPp2MSde),
    ] {
        for steps in [4, 7] {
            let sched = if name == "dpmpp_2m_uniform" {
                Schedule::Uniform
            } else {
                Schedule::Automatic
            };
            let sigmas = s.a1111_sigmas(sampler, sched, steps).unwrap();
            let x: Vec<f32> = noise.iter().map(|v| v * sigmas[0] as f32).collect();
            let mut eps = toy(bias);
            let den = RefCell::new(EpsDenoiser {
                schedule: &s,
                model: &mut eps,
                v_prediction: false,
            });
            let mut model = |x: &[f32], sigma: f64| den.borrow_mut().denoise(x, sigma);
            let mut rng = injected(anc);
            let mut p = go;
            let out = match sampler {
                KSampler::Euler => k_samplers::euler(&mut model, x, &sigmas, &mut p),
                KSampler::EulerAncestral => {
                    k_samplers::euler_ancestral(&mut model, x, &sigmas, &mut rng, &mut p)
                }
                KSampler::Heun => k_samplers::heun(&mut model, x, &sigmas, &mut p),
                KSampler::DpmPp2M => k_samplers::dpmpp_2m(&mut model, x, &sigmas, &mut p),
                KSampler::DpmPpSde => {
                    k_samplers::dpmpp_sde(&mut model, x, &sigmas, &mut rng, &mut p)
                }
                KSampler::Lms => k_more::lms(&mut model, x, &sigmas, &mut p),
                KSampler::Dpm2 => k_more::dpm_2(&mut model, x, &sigmas, &mut p),
                KSampler::Dpm2Ancestral => {
                    k_more::dpm_2_ancestral(&mut model, x, &sigmas, &mut rng, &mut p)
                }
                KSampler::DpmPp2SAncestral => {
                    k_more::dpmpp_2s_ancestral(&mut model, x, &sigmas, &mut rng, &mut p)
                }
                KSampler::DpmPp2MSde => {
                    k_more::dpmpp_2m_sde(&mut model, x, &sigmas, &mut rng, &mut p)
                }
                _ => unreachable!(),
            }
            .unwrap();
            check(
                &format!("a1111 run {name} {steps}"),
                &out,
                g.get(&format!("a1111.run.{name}.{steps}")),
            );
        }
    }
    for steps in [4, 7] {
        let r = Resolved::A1111 {
            sampler: KSampler::Lcm,
            schedule: Schedule::Uniform,
        };
        check(
            &format!("a1111 lcm sigmas {steps}"),
            &levels(r, &cfg, steps).unwrap(),
            g.get(&format!("a1111.sched.lcm.{steps}")),
        );
        let mut eps = toy(bias);
        let out = sample(r, &cfg, steps, &mut eps, noise, &mut injected(anc), &mut go).unwrap();
        check(
            &format!("a1111 run lcm {steps}"),
            &out,
            g.get(&format!("a1111.run.lcm.{steps}")),
        );
    }
    for steps in [4, 7] {
        let r = Resolved::A1111 {
            sampler: KSampler::UniPc,
            schedule: Schedule::Uniform,
        };
        check(
            &format!("a1111 unipc t {steps}"),
            &levels(r, &cfg, steps).unwrap(),
            g.get(&format!("a1111.unipc_t.{steps}")),
        );
        let mut eps = toy(bias);
        let out = sample(r, &cfg, steps, &mut eps, noise, &mut injected(anc), &mut go).unwrap();
        check(
            &format!("a1111 run unipc {steps}"),
            &out,
            g.get(&format!("a1111.run.unipc.{steps}")),
        );
    }
    for steps in [4, 7] {
        let ts = k_samplers::a1111_ddim_timesteps(1000, steps);
        let ts_f: Vec<f64> = ts.iter().map(|&t| t as f64).collect();
        check(
            &format!("a1111 ddim timesteps {steps}"),
            &ts_f,
            g.get(&format!("a1111.ddim_timesteps.{steps}")),
        );
        let mut eps = toy(bias);
        let out = k_samplers::ddim_a1111(&s, &mut eps, noise.to_vec(), &ts, &mut go).unwrap();
        check(
            &format!("a1111 run ddim {steps}"),
            &out,
            g.get(&format!("a1111.run.ddim.{steps}")),
        );
    }
}

#[test]
fn diffusers_schedules_and_runs_match_diffusers() {
    let g = goldens();
    let (noise, bias, anc) = (g.get("noise"), g.get("bias"), g.get("anc_noise"));
    for (cls, sched) in [
        ("euler", DiffusersScheduler::EulerDiscrete),
        ("euler_a", DiffusersScheduler::EulerAncestralDiscrete),
        ("ddim", DiffusersScheduler::Ddim),
        ("dpm", DiffusersScheduler::DpmSolverMultistep),
        ("lms", DiffusersScheduler::LmsDiscrete),
        ("pndm", DiffusersScheduler::Pndm),
    ] {
        for spacing in ["leading", "linspace", "trailing"] {
            for karras in [false, true] {
                if karras && matches!(cls, "ddim" | "euler_a" | "pndm") {
                    continue;
                }
                for steps in [4, 7] {
                    let key = format!(
                        "diffusers.{cls}.{spacing}{}.{steps}",
                        if karras { ".karras" } else { "" }
                    );
                    let plan = set_timesteps(sched, &sd15(spacing), steps, karras).unwrap();
                    check(
                        &format!("{key} timesteps"),
                        &plan.timesteps,
                        g.get(&format!("{key}.timesteps")),
                    );
                    if !matches!(cls, "ddim" | "pndm") {
                        check(
                            &format!("{key} sigmas"),
                            &plan.sigmas,
                            g.get(&format!("{key}.sigmas")),
                        );
                    }
                    check(
                        &format!("{key} init"),
                        &[plan.init_noise_sigma],
                        g.get(&format!("{key}.init_noise_sigma")),
                    );
                    let mut eps = toy(bias);
                    let mut rng = injected(anc);
                    let out =
                        diffusers_steps::run(&plan, &mut eps, noise, &mut rng, &mut go).unwrap();
                    check(
                        &format!("{key} final"),
                        &out,
                        g.get(&format!("{key}.final")),
                    );
                }
            }
        }
    }
}

#[test]
fn progress_can_cancel_between_steps() {
    let g = goldens();
    let s = DiscreteSchedule::new(&SchedulerConfig::default()).unwrap();
    let sigmas = s
        .a1111_sigmas(KSampler::Euler, Schedule::Automatic, 5)
        .unwrap();
    let mut calls = 0;
    let mut model = |x: &[f32], _: f64| {
        calls += 1;
        Ok(x.to_vec())
    };
    let mut seen = vec![];
    let mut p = |i: usize, n: usize| {
        seen.push((i, n));
        if i == 2 {
            ControlFlow::Break(())
        } else {
            ControlFlow::Continue(())
        }
    };
    let r = k_samplers::euler(&mut model, g.get("noise").to_vec(), &sigmas, &mut p);
    assert_eq!(r, Err(SamplerError::Cancelled));
    assert_eq!(seen, [(0, 5), (1, 5), (2, 5)]);
    assert_eq!(calls, 2);
}

#[test]
fn sample_dispatches_to_the_golden_runs() {
    let g = goldens();
    let (noise, bias, anc) = (g.get("noise"), g.get("bias"), g.get("anc_noise"));
    for (name, schedule, cfg, golden) in [
        ("Euler", None, sd15("leading"), "a1111.run.euler.4"),
        ("DPM++ SDE", None, sd15("leading"), "a1111.run.dpmpp_sde.4"),
        (
            "DPM++ 2M",
            Some("Uniform"),
            sd15("leading"),
            "a1111.run.dpmpp_2m_uniform.4",
        ),
        ("DPM2 a Karras", None, sd15("leading"), "a1111.run.dpm2_a.4"),
        ("DDIM", None, sd15("leading"), "a1111.run.ddim.4"),
        (
            "DPM_SOLVER",
            Some("Karras"),
            sd15("leading"),
            "diffusers.dpm.leading.karras.4.final",
        ),
        (
            "EulerDiscreteScheduler",
            None,
            sd15("trailing"),
            "diffusers.euler.trailing.4.final",
        ),
        (
            "EULER_ANCESTRAL_DISCRETE",
            None,
            sd15("linspace"),
            "diffusers.euler_a.linspace.4.final",
        ),
        (
            "DDIMScheduler",
            None,
            sd15("leading"),
            "diffusers.ddim.leading.4.final",
        ),
    ] {
        let r = resolve(name, schedule).unwrap();
        let mut eps = toy(bias);
        let mut rng = injected(anc);
        let out = sample(r, &cfg, 4, &mut eps, noise, &mut rng, &mut go).unwrap();
        check(&format!("sample {name}"), &out, g.get(golden));
    }
    let r = resolve("UniPC", None).unwrap();
    let mut eps = toy(bias);
    let err = sample(
        r,
        &sd15("leading"),
        2,
        &mut eps,
        noise,
        &mut injected(anc),
        &mut go,
    )
    .unwrap_err();
    assert!(matches!(err, SamplerError::Invalid(_)), "{err}");
}

#[test]
fn brownian_noise_is_seeded_and_path_consistent() {
    let len = 4096;
    let mut a = BrownianNoise::new(7, 0.03, 14.6);
    let mut b = BrownianNoise::new(7, 0.03, 14.6);
    let mut c = BrownianNoise::new(8, 0.03, 14.6);
    let n1 = a.noise(14.6, 3.0, len);
    assert_eq!(n1, b.noise(14.6, 3.0, len));
    assert_ne!(n1, c.noise(14.6, 3.0, len));
    // Query order does not matter.
    let late = a.noise(1.0, 0.5, len);
    let mut d = BrownianNoise::new(7, 0.03, 14.6);
    assert_eq!(late, d.noise(1.0, 0.5, len));
    // Increments add up along the path: W(0.5)-W(3) = (W(1)-W(3)) + (W(0.5)-W(1)).
    let w = |t: f64| a.w(t, len);
    let (w3, w1, w05) = (w(3.0), w(1.0), w(0.5));
    let whole = a.noise(3.0, 0.5, len);
    for i in 0..len {
        let expect = -(w3[i] - w05[i]) / 2.5f64.sqrt();
        assert!((whole[i] as f64 - expect).abs() < 1e-5);
        let parts = (w3[i] - w1[i]) + (w1[i] - w05[i]);
        assert!(((w3[i] - w05[i]) - parts).abs() < 1e-9);
    }
    // Unit-variance, zero-mean increments.
    for z in [&n1, &late, &whole] {
        let mean = z.iter().map(|&v| v as f64).sum::<f64>() / len as f64;
        let var = z.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / len as f64;
        assert!(
            mean.abs() < 0.06 && (var - 1.0).abs() < 0.08,
            "mean {mean} var {var}"
        );
    }
}

#[test]
fn dpmpp_sde_is_deterministic_for_a_seed() {
    let g = goldens();
    let (noise, bias) = (g.get("noise"), g.get("bias"));
    let cfg = SchedulerConfig::default();
    let r = resolve("DPM++ SDE Karras", None).unwrap();
    let run = |seed| {
        let lv = levels(r, &cfg, 6).unwrap();
        let min = lv
            .iter()
            .cloned()
            .filter(|&s| s > 0.0)
            .fold(f64::INFINITY, f64::min);
        let mut rng = BrownianNoise::new(seed, min, lv[0]);
        let mut eps = toy(bias);
        sample(r, &cfg, 6, &mut eps, noise, &mut rng, &mut go).unwrap()
    };
    let (a, b, c) = (run(1), run(1), run(2));
    assert_eq!(a, b);
    assert_ne!(a, c);
    assert!(a.iter().all(|v| v.is_finite()));
}

#[test]
fn every_accepted_name_samples_with_consistent_progress() {
    let g = goldens();
    let (noise, bias, anc) = (g.get("noise"), g.get("bias"), g.get("anc_noise"));
    let cfg = SchedulerConfig::default();
    for name in accepted_sampler_names() {
        let r = resolve(&name, None).unwrap();
        let mut ticks = vec![];
        let mut p = |i: usize, n: usize| {
            ticks.push((i, n));
            ControlFlow::Continue(())
        };
        let mut eps = toy(bias);
        let out = sample(r, &cfg, 5, &mut eps, noise, &mut injected(anc), &mut p)
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        assert!(out.iter().all(|v| v.is_finite()), "{name}");
        let total = ticks[0].1;
        // 5 model-evaluation steps, except A1111's DDIM (len - 1 = 4 of its 5 timesteps) and
        // diffusers' PNDM (6: the repeated PLMS warm-up timestep).
        let want = match name.as_str() {
            "DDIM" => 4,
            "PNDM" | "PNDMScheduler" => 6,
            _ => 5,
        };
        assert_eq!(total, want, "{name}: {ticks:?}");
        assert_eq!(
            ticks,
            (0..total).map(|i| (i, total)).collect::<Vec<_>>(),
            "{name}"
        );
        assert!(!levels(r, &cfg, 5).unwrap().is_empty(), "{name}");
    }
}

#[test]
fn v_prediction_matches_both_references() {
    let g = goldens();
    let (noise, bias, anc) = (g.get("noise"), g.get("bias"), g.get("anc_noise"));
    let cfg = SchedulerConfig {
        prediction_type: PredictionType::VPrediction,
        ..SchedulerConfig::default()
    };
    for (name, golden) in [
        ("Euler", "v.a1111.euler.4"),
        ("DPM++ 2M", "v.a1111.dpmpp_2m.4"),
        ("DDIM", "v.a1111.ddim.4"),
        ("EULER_DISCRETE", "v.diffusers.euler.4"),
        ("EULER_ANCESTRAL_DISCRETE", "v.diffusers.euler_a.4"),
        ("DDIMScheduler", "v.diffusers.ddim.4"),
        ("DPM_SOLVER", "v.diffusers.dpm.4"),
        ("KLMS", "v.diffusers.lms.4"),
        ("PNDM", "v.diffusers.pndm.4"),
    ] {
        let mut eps = toy(bias);
        let out = sample(
            resolve(name, None).unwrap(),
            &cfg,
            4,
            &mut eps,
            noise,
            &mut injected(anc),
            &mut go,
        )
        .unwrap();
        check(&format!("v {name}"), &out, g.get(golden));
    }
}

#[test]
fn unsupported_prediction_type_is_an_error_naming_it_in_every_path() {
    let g = goldens();
    let (noise, bias, anc) = (g.get("noise"), g.get("bias"), g.get("anc_noise"));
    let cfg = SchedulerConfig {
        prediction_type: PredictionType::Sample,
        ..SchedulerConfig::default()
    };
    let init = vec![0.1f32; noise.len()];
    for name in [
        "Euler a",
        "DPM++ 2M",
        "DDIM",
        "LCM",
        "EulerDiscreteScheduler",
        "PNDM",
    ] {
        for start in [
            Start::Noise(noise),
            Start::Image {
                init: &init,
                noise,
                strength: 0.6,
            },
        ] {
            let mut eps = toy(bias);
            let err = sample_from(
                resolve(name, None).unwrap(),
                &cfg,
                4,
                start,
                &mut eps,
                &mut injected(anc),
                &mut go,
            )
            .unwrap_err();
            assert!(
                matches!(
                    err,
                    SamplerError::UnsupportedPrediction {
                        prediction: PredictionType::Sample,
                        ..
                    }
                ),
                "{name}: {err}"
            );
            assert!(
                err.to_string()
                    .starts_with("prediction_type \"sample\" is not supported by sampler"),
                "{err}"
            );
        }
    }
    let err = sample_from(
        resolve("Euler a", None).unwrap(),
        &cfg,
        4,
        Start::Noise(noise),
        &mut toy(bias),
        &mut injected(anc),
        &mut go,
    )
    .unwrap_err();
    assert_eq!(
        err.to_string(),
        "prediction_type \"sample\" is not supported by sampler \"Euler a\""
    );
    let mut eps = toy(bias);
    let out = sample_from(
        resolve("DDIMScheduler", None).unwrap(),
        &cfg,
        4,
        Start::Image {
            init: &init,
            noise,
            strength: 0.6,
        },
        &mut eps,
        &mut injected(anc),
        &mut go,
    );
    assert!(out.is_ok(), "DDIM supports sample");
}
