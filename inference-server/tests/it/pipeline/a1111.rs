//! Pixel parity with A1111's txt2img re-stated on k-diffusion (`tests/parity/pipeline_goldens.py`,
//! `pipeline_a1111_*.png`): CPU RNG (and the "NV" Philox RNG), CFGDenoiser, 5 steps, CFG 7, seed
//! 1234, 64×64 (and 72×72). A1111 truncates to u8 where we round. Tolerance: max pixel
//! difference 2/255.

use std::ops::ControlFlow;
use std::path::Path;

use inference_server::engine::Device;
use inference_server::pipeline::{RunOptions, StepEvent, Txt2ImgParams};
use inference_server::sampling::rng::GeneratorKind as Rng;
use inference_server::sampling::samplers::{ReplayNoise, StepNoise};

use super::{golden_params as params, max_diff, pipeline, read_golden, run};

test_device!(parity_with_a1111_k_diffusion);
fn parity_with_a1111_k_diffusion(device: &Device) {
    let cases = [
        ("Euler a", "pipeline_a1111_euler_a.png"),
        ("DPM++ 2M Karras", "pipeline_a1111_dpmpp_2m_karras.png"),
        ("Euler", "pipeline_a1111_euler.png"),
    ];
    for (sampler, golden) in cases {
        let d = max_diff(
            &run(&params(sampler), device).images[0].data,
            &read_golden(golden),
        );
        eprintln!("A1111 {sampler}: max pixel difference {d}");
        assert!(d <= 2, "A1111 {sampler}: max pixel difference {d} > 2");
    }
}

test_device!(euler_a_continues_the_philox_and_odd_sized_generators);
/// Ancestral noise continues the image's generator: with the "NV" (Philox) source, and at a
/// latent size (4×9×9) that is not a multiple of 16 values with the CPU source.
fn euler_a_continues_the_philox_and_odd_sized_generators(device: &Device) {
    let nv = Txt2ImgParams {
        noise_source: Rng::Philox,
        ..params("Euler a")
    };
    let odd = Txt2ImgParams {
        width: 72,
        height: 72,
        ..params("Euler a")
    };
    for (what, p, golden) in [
        ("NV", nv, "pipeline_a1111_euler_a_nv.png"),
        ("72x72", odd, "pipeline_a1111_euler_a_72.png"),
    ] {
        let d = max_diff(&run(&p, device).images[0].data, &read_golden(golden));
        eprintln!("A1111 Euler a {what}: max pixel difference {d}");
        assert!(d <= 2, "A1111 Euler a {what}: max pixel difference {d} > 2");
    }
}

/// The injected step noise: `noise.NN` (`[1, 4, 8, 8]`, call order) and `sigma_pairs`
/// (`[n, 2]`: each call's sigma and sigma_next) from `pipeline_a1111_dpmpp_sde_karras_noise.safetensors`.
fn sde_noise() -> (Vec<Vec<f32>>, Vec<(f64, f64)>) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/goldens/pipeline_a1111_dpmpp_sde_karras_noise.safetensors");
    let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let st = safetensors::SafeTensors::deserialize(&bytes).expect("parse noise goldens");
    let floats = |name: &str| -> Vec<f32> {
        let view = st.tensor(name).unwrap_or_else(|e| panic!("{name}: {e}"));
        view.data()
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect()
    };
    let mut names: Vec<String> = st
        .names()
        .into_iter()
        .filter(|n| n.starts_with("noise."))
        .map(str::to_string)
        .collect();
    names.sort();
    let draws = names.iter().map(|n| floats(n)).collect();
    let pairs = floats("sigma_pairs")
        .chunks_exact(2)
        .map(|p| (f64::from(p[0]), f64::from(p[1])))
        .collect();
    (draws, pairs)
}

test_device!(dpmpp_sde_karras_with_injected_noise_matches_k_diffusion);
/// DPM++ SDE Karras with k-diffusion's `noise_sampler` replaced by stored draws (torchsde's
/// Brownian tree is not reproduced bit for bit): the same draws through
/// [`inference_server::pipeline::Pipeline::txt2img_with_step_noise`] must give the golden
/// image, call for call at the same sigmas; the default (generator) noise is deterministic
/// per seed.
fn dpmpp_sde_karras_with_injected_noise_matches_k_diffusion(device: &Device) {
    let (draws, pairs) = sde_noise();
    assert_eq!(draws.len(), 8, "4 stochastic steps, 2 draws each");
    let p = params("DPM++ SDE Karras");
    let mut replay = ReplayNoise::new(draws);
    let ours = pipeline(device)
        .txt2img_with_step_noise(
            &p,
            RunOptions::default(),
            &mut replay,
            &mut |_: &StepEvent<'_>| ControlFlow::Continue(()),
        )
        .expect("generate");
    assert_eq!(
        (replay.remaining(), replay.mismatches()),
        (0, 0),
        "every stored draw used once, at full size"
    );
    assert_eq!(replay.calls().len(), pairs.len());
    for (i, (got, want)) in replay.calls().iter().zip(&pairs).enumerate() {
        let close = |a: f64, b: f64| (a - b).abs() <= 1e-4 * b.abs().max(1.0);
        assert!(
            close(got.0, want.0) && close(got.1, want.1),
            "call {i}: sigmas {got:?} vs k-diffusion {want:?}"
        );
    }
    let d = max_diff(
        &ours.images[0].data,
        &read_golden("pipeline_a1111_dpmpp_sde_karras.png"),
    );
    eprintln!("A1111 DPM++ SDE Karras (injected noise): max pixel difference {d}");
    assert!(
        d <= 2,
        "A1111 DPM++ SDE Karras: max pixel difference {d} > 2"
    );

    let a = run(&p, device);
    assert_eq!(a.images, run(&p, device).images, "deterministic for a seed");
    assert_ne!(
        a.images, ours.images,
        "the injected noise replaced the default step noise"
    );
}

#[test]
fn replay_noise_hands_out_draws_in_order_and_counts_misfits() {
    let mut r = ReplayNoise::new(vec![vec![1.0, 2.0], vec![3.0]]);
    assert_eq!(r.noise(2.0, 1.0, 2), vec![1.0, 2.0]);
    assert_eq!(r.noise(1.0, 0.5, 2), vec![3.0, 0.0]);
    assert_eq!(r.noise(0.5, 0.1, 1), vec![0.0]);
    assert_eq!((r.mismatches(), r.remaining()), (2, 0));
    assert_eq!(r.calls(), &[(2.0, 1.0), (1.0, 0.5), (0.5, 0.1)]);
}
