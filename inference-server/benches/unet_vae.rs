//! The UNet and the VAE decoder on the real SD 1.5 shapes (UNet 320/640/1280/1280, 2 layers per
//! block, cross-attention 768, 8 heads; VAE 128/256/512/512) with random weights stored as f16
//! safetensors and loaded through the memory map: time of one UNet forward at batch 2 (latent
//! 4×64×64, context 2×77×768, as classifier-free guidance runs it) and of one VAE decode of
//! 1×4×64×64 to a 3×512×512 image, plus each model's memory.
//!
//! The parent process writes both checkpoints to a temp dir (one component at a time), then runs
//! each model in a child process (this binary re-executed with `unet <file>` or `vae <file>`), so
//! each peak (`VmHWM`, resident set including the touched pages of the mapped weights) is that
//! model's own. `RssAnon` after load shows that the f16 weights are not copied to the heap.
//! `bench/unet_vae.py` runs this beside PyTorch and stable-diffusion.cpp and prints ratios.
//!
//! `unet_vae sd15-single-file <path>` instead writes a full-size SD 1.5 single-file checkpoint
//! (original key names, f16, zero data in a sparse file) for stable-diffusion.cpp.
//!
//! `unet_vae write <unet|vae> <path>` keeps one checkpoint, so `unet_vae unet <path>` can run
//! alone (e.g. under `perf record`).
//!
//! Runs: `SDSERVE_BENCH_RUNS` timed runs (default 3) after one warm-up; the median is reported.
//! Output: a Markdown table, plus `RESULT <key> <value>` lines for the driver script.
#![allow(missing_docs)]

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Instant;

use inference_server::engine::{DType, Device, Tensor, profile};
use inference_server::model::testmodel::{
    param_values, published_configs, write_header_only_single_file,
};
use inference_server::model::unet::UNet;
use inference_server::model::vae::Vae;
use inference_server::model::weights::{
    OwnedTensor, Param, SafetensorsFile, StoredDType, Variant, WeightSet, unet_params, vae_params,
    write_safetensors,
};

/// A field of `/proc/self/status` in MiB (`VmHWM`, `RssAnon`, ...).
fn status_mib(field: &str) -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or(f64::NAN, |kb| kb / 1024.0)
}

fn runs() -> usize {
    std::env::var("SDSERVE_BENCH_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|&n| n > 0)
        .unwrap_or(3)
}

/// Writes `params` with random values as one f16 safetensors file; returns its size in MiB.
fn write_f16(path: &Path, params: &[Param]) -> f64 {
    let tensors: Vec<OwnedTensor> = params
        .iter()
        .map(|(name, shape)| {
            OwnedTensor::from_f32(
                name.clone(),
                shape.clone(),
                &param_values(name, shape),
                StoredDType::F16,
            )
        })
        .collect();
    write_safetensors(path, &tensors, &Default::default()).expect("write checkpoint");
    std::fs::metadata(path).expect("checkpoint size").len() as f64 / (1 << 20) as f64
}

/// Standard normals of `shape` (a 2-D "weight" with fan-in 1 has unit variance).
fn normals(name: &str, shape: &[usize]) -> Tensor {
    let n: usize = shape.iter().product();
    Tensor::from_vec(param_values(name, &[n, 1]), shape, &Device::Cpu).expect("input tensor")
}

/// Median seconds of `f` over [`runs`] runs after one warm-up.
/// With `SDSERVE_PROFILE=1`, prints the per-op table of the last timed run to stderr.
fn time(mut f: impl FnMut()) -> f64 {
    f();
    let mut times: Vec<f64> = (0..runs())
        .map(|_| {
            profile::reset();
            let start = Instant::now();
            f();
            start.elapsed().as_secs_f64()
        })
        .collect();
    if profile::enabled() {
        eprintln!("{}", profile::report());
    }
    times.sort_by(f64::total_cmp);
    times[times.len() / 2]
}

/// Child phase: load one model from `path`, time it, print its `RESULT` lines.
fn child(model: &str, path: &Path) {
    let (_, unet_config, vae_config) = published_configs(Variant::Sd1);
    let file = SafetensorsFile::open(path).expect("open checkpoint");
    let mut weights = WeightSet::from_files(&[file]);
    // SDSERVE_BENCH_PRECISION=bf16: weights and activations in bf16, bf16 products (what
    // `--precision bf16` does); the default keeps the f16 weights borrowed, computing in f32.
    if std::env::var("SDSERVE_BENCH_PRECISION").as_deref() == Ok("bf16") {
        weights.set_cast(Some(DType::BF16));
    }
    let dev = Device::Cpu;
    let anon_before = status_mib("RssAnon");
    let started = Instant::now();
    let seconds = match model {
        "unet" => {
            let unet = UNet::load(&unet_config, &weights, &dev).expect("load UNet");
            println!(
                "RESULT unet_load_seconds {}",
                started.elapsed().as_secs_f64()
            );
            println!(
                "RESULT unet_anon_after_load_mib {}",
                status_mib("RssAnon") - anon_before
            );
            let latents = normals("latents", &[2, 4, 64, 64]);
            let context = normals("context", &[2, 77, 768]);
            time(|| {
                let out = unet
                    .forward(&latents, &[999.0, 999.0], &context)
                    .expect("UNet forward");
                assert_eq!(out.dims(), [2, 4, 64, 64]);
            })
        }
        "vae" => {
            let vae = Vae::load(&vae_config, &weights, &dev).expect("load VAE");
            println!(
                "RESULT vae_load_seconds {}",
                started.elapsed().as_secs_f64()
            );
            println!(
                "RESULT vae_anon_after_load_mib {}",
                status_mib("RssAnon") - anon_before
            );
            let latents = normals("latents", &[1, 4, 64, 64]);
            time(|| {
                let out = vae.decode(&latents).expect("VAE decode");
                assert_eq!(out.dims(), [1, 3, 512, 512]);
            })
        }
        other => panic!("unknown phase {other:?} (expected unet or vae)"),
    };
    println!("RESULT {model}_seconds {seconds}");
    println!("RESULT {model}_peak_mib {}", status_mib("VmHWM"));
}

/// Runs this binary as `<model> <path>` and returns its `RESULT` lines as (key, value).
fn run_child(model: &str, path: &Path) -> Vec<(String, f64)> {
    let exe = std::env::current_exe().expect("own path");
    let out = Command::new(exe)
        .arg(model)
        .arg(path)
        // The child's stderr (its log, the per-op profile, a panic's message) goes straight
        // through; only its stdout carries the RESULT lines.
        .stderr(Stdio::inherit())
        .output()
        .expect("spawn child");
    assert!(
        out.status.success(),
        "{model} phase failed (its stderr is above)"
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| {
            let mut parts = l.strip_prefix("RESULT ")?.split_whitespace();
            Some((parts.next()?.to_string(), parts.next()?.parse().ok()?))
        })
        .collect()
}

fn main() {
    // `cargo bench` passes `--bench`; a child phase gets `<model> <path>`.
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    if let [write, model, path] = args.as_slice() {
        // `write <unet|vae> <path>`: keep one checkpoint, e.g. to profile `<model> <path>` under perf.
        assert_eq!(write, "write", "usage: unet_vae write <unet|vae> <path>");
        let (_, unet_config, vae_config) = published_configs(Variant::Sd1);
        let params = if model == "unet" {
            unet_params(&unet_config)
        } else {
            vae_params(&vae_config)
        };
        write_f16(Path::new(path), &params);
        return;
    }
    if let [model, path] = args.as_slice() {
        if model == "sd15-single-file" {
            // For stable-diffusion.cpp (bench/sdcpp.py): a full-size SD 1.5 single file with the
            // original key names whose data section is a sparse run of zeros.
            let configs = published_configs(Variant::Sd1);
            write_header_only_single_file(
                Path::new(path),
                Variant::Sd1,
                &configs,
                StoredDType::F16,
            )
            .expect("write single file");
        } else {
            child(model, Path::new(path));
        }
        return;
    }
    let threads = rayon::current_num_threads();
    let (_, unet_config, vae_config) = published_configs(Variant::Sd1);
    let dir = tempfile::tempdir().expect("temp dir");
    let mut results = Vec::new();
    for (model, params) in [
        ("unet", unet_params(&unet_config)),
        ("vae", vae_params(&vae_config)),
    ] {
        let path = dir.path().join(format!("{model}.safetensors"));
        let file_mib = write_f16(&path, &params);
        results.push((format!("{model}_file_mib"), file_mib));
        results.extend(run_child(model, &path));
        std::fs::remove_file(&path).expect("remove checkpoint");
    }
    let get = |key: &str| {
        results
            .iter()
            .find(|(k, _)| k == key)
            .map_or(f64::NAN, |(_, v)| *v)
    };
    println!(
        "| SD 1.5 shapes, f16 weights (mmap), {threads} threads, median of {} | seconds | peak MiB (VmHWM) | anon MiB after load | checkpoint MiB |",
        runs()
    );
    println!("|---|---|---|---|---|");
    for (model, label) in [
        ("unet", "UNet forward, batch 2, 4×64×64"),
        ("vae", "VAE decode, 1×4×64×64 → 512×512"),
    ] {
        println!(
            "| {label} | {:.2} | {:.0} | {:.0} | {:.0} |",
            get(&format!("{model}_seconds")),
            get(&format!("{model}_peak_mib")),
            get(&format!("{model}_anon_after_load_mib")),
            get(&format!("{model}_file_mib")),
        );
    }
    for (key, value) in &results {
        println!("RESULT {key} {value}");
    }
}
