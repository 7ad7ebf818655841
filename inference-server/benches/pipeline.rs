//! The whole txt2img pipeline on the real SD 1.5 shapes (CLIP ViT-L/14 text encoder, UNet
//! 320/640/1280/1280, VAE 128/256/512/512) with deterministic random weights stored as f16
//! safetensors in a diffusers folder: seconds per sampling step (one guided UNet batch of 2)
//! and the total time of one "Euler a" generation (prompt encoding, sampling, VAE decode).
//!
//! Usage (`cargo bench -p inference-server --bench pipeline -- ARGS`, or the built binary):
//! - `write-model <dir>`: write the full-size SD 1.5 folder (about 2 GB) and exit, so
//!   `bench/pipeline.py` can load the same weights into diffusers.
//! - `write-tiny-model <dir>`: the tests' tiny SD 1.x folder instead, for a dry run of the
//!   script's flow (`scripts/gpu-check.sh --standin`), not for timing.
//! - `[--model <dir>] [--size N] [--steps N]`: run the benchmark (`SDSERVE_PROFILE=1` adds the
//!   per-op table of the whole generation on stderr; on a GPU, the GPU time per kernel family
//!   and per kernel on stdout, steps run without a CUDA graph) (defaults: a model written to
//!   a temp dir, 512×512, 20 steps, `--device cpu`). `--size 128 --steps 2` is a quick smoke
//!   test; `--device cuda:0` runs it on a GPU (`scripts/gpu-check.sh`); `--precision bf16`
//!   computes in bf16 (`f32`, `f16`, `bf16`; default: the device's, f32 on the CPU).
//!
//! Output: a Markdown table, plus `RESULT <key> <value>` lines for the driver script. Threads:
//! `RAYON_NUM_THREADS`.
#![allow(missing_docs)]

use std::ops::ControlFlow;
use std::path::PathBuf;
use std::time::Instant;

use inference_server::engine::{Device, profile};
use inference_server::model::testmodel::{write_full_size_model, write_test_model};
use inference_server::model::weights::{Layout, StoredDType, Variant};
use inference_server::pipeline::{Pipeline, Precision, RunOptions, StepEvent, Txt2ImgParams};

/// Command-line options.
struct Args {
    write_model: Option<PathBuf>,
    /// `write-tiny-model`: the tests' tiny model instead of the full-size one.
    tiny: bool,
    model: Option<PathBuf>,
    size: usize,
    steps: usize,
    device: String,
    /// `--precision`; the device's default when absent.
    precision: Option<Precision>,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        write_model: None,
        tiny: false,
        model: None,
        size: 512,
        steps: 20,
        device: "cpu".into(),
        precision: None,
    };
    let mut it = std::env::args().skip(1).filter(|a| a != "--bench");
    while let Some(arg) = it.next() {
        let mut value = |name: &str| it.next().ok_or_else(|| format!("{name} needs a value"));
        match arg.as_str() {
            "write-model" => args.write_model = Some(PathBuf::from(value("write-model")?)),
            "write-tiny-model" => {
                args.write_model = Some(PathBuf::from(value("write-tiny-model")?));
                args.tiny = true;
            }
            "--model" => args.model = Some(PathBuf::from(value("--model")?)),
            "--size" => {
                args.size = value("--size")?
                    .parse()
                    .map_err(|e| format!("--size: {e}"))?
            }
            "--steps" => {
                args.steps = value("--steps")?
                    .parse()
                    .map_err(|e| format!("--steps: {e}"))?
            }
            "--device" => args.device = value("--device")?,
            "--precision" => args.precision = Some(value("--precision")?.parse()?),
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    Ok(args)
}

fn median(mut v: Vec<f64>) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn run(args: &Args) -> Result<(), String> {
    if let Some(dir) = &args.write_model {
        if args.tiny {
            write_test_model(dir, Variant::Sd1, Layout::Diffusers, StoredDType::F16)
        } else {
            write_full_size_model(dir, Variant::Sd1, StoredDType::F16)
        }
        .map_err(|e| e.to_string())?;
        return Ok(());
    }
    let params = Txt2ImgParams {
        prompt: "a photograph of an astronaut riding a horse".into(),
        negative_prompt: "blurry".into(),
        seed: 1234,
        steps: args.steps,
        cfg_scale: 7.0,
        width: args.size,
        height: args.size,
        sampler_name: "Euler a".into(),
        ..Txt2ImgParams::default()
    };
    params.validate().map_err(|e| e.to_string())?;
    let tmp = tempfile::tempdir().map_err(|e| e.to_string())?;
    let dir = match &args.model {
        Some(dir) => dir.clone(),
        None => {
            let dir = tmp.path().join("sd15");
            write_full_size_model(&dir, Variant::Sd1, StoredDType::F16)
                .map_err(|e| e.to_string())?;
            dir
        }
    };
    let started = Instant::now();
    let device = Device::parse(&args.device).map_err(|e| e.to_string())?;
    let precision = args
        .precision
        .unwrap_or_else(|| Precision::default_for(&device));
    let pipeline = Pipeline::load_with(&dir, &device, precision).map_err(|e| e.to_string())?;
    let load = started.elapsed().as_secs_f64();
    let gpu = match &device {
        Device::Cuda(d) => Some(d.clone()),
        _ => None,
    };
    if let Some(gpu) = &gpu {
        // As the diffusers reference does: one generation first, so the timed one measures
        // the steady state (kernels loaded, each convolution shape's choice measured), then
        // memory peaks from here.
        let warm = Txt2ImgParams {
            steps: 2,
            ..params.clone()
        };
        pipeline
            .txt2img(&warm, RunOptions::default(), &mut |_: &StepEvent<'_>| {
                ControlFlow::Continue(())
            })
            .map_err(|e| e.to_string())?;
        // The first generation measured each convolution shape on both paths; what that left
        // pooled is not the steady state's need (diffusers' warm-up leaves nothing similar).
        gpu.empty_cache();
        gpu.reset_peak_memory();
        // Under SDSERVE_PROFILE=1: the warm-up's kernel times are dropped.
        if let Some(times) = gpu.kernel_times() {
            times.map_err(|e| e.to_string())?;
        }
    }
    // Step `i` runs from its event to the next one (the last step ends at the VAE decode,
    // so it is left out of the per-step median).
    let mut marks: Vec<Instant> = Vec::new();
    let started = Instant::now();
    let generation = pipeline
        .txt2img(&params, RunOptions::default(), &mut |_: &StepEvent<'_>| {
            marks.push(Instant::now());
            ControlFlow::Continue(())
        })
        .map_err(|e| e.to_string())?;
    let total = started.elapsed().as_secs_f64();
    let step = median(
        marks
            .windows(2)
            .map(|w| (w[1] - w[0]).as_secs_f64())
            .collect(),
    );
    let first = marks
        .first()
        .map_or(f64::NAN, |m| (*m - started).as_secs_f64());
    let threads = rayon::current_num_threads();
    let (w, h) = (
        generation.images.first().map_or(0, |i| i.width),
        generation.images.first().map_or(0, |i| i.height),
    );
    // The model written by `write-model` has SD 1.5's shapes; `--model` may name another.
    let model = match &args.model {
        Some(dir) => format!("model {}", dir.display()),
        None => "SD 1.5 shapes".to_string(),
    };
    // On a GPU the UNet step is recorded as a CUDA graph unless SDSERVE_CUDA_GRAPHS=0.
    let graphs = match (&gpu, inference_server::engine::graphs_enabled()) {
        (None, _) => "",
        (Some(_), true) => ", UNet step as a CUDA graph",
        (Some(_), false) => ", no CUDA graph (SDSERVE_CUDA_GRAPHS=0)",
    };
    println!(
        "| sdserve, {model}, f16 weights, --precision {precision:?}, {threads} threads, \
         {w}×{h}, {}{graphs} | seconds |",
        device.describe()
    );
    println!("|---|---|");
    println!("| load | {load:.2} |");
    println!("| prompt encoding (before the first step) | {first:.2} |");
    println!("| sampling step (median, guided batch of 2) | {step:.2} |");
    println!("| \"Euler a\", {} steps, total | {total:.2} |", args.steps);
    let it_per_s = args.steps as f64 / total;
    println!("| iterations per second (steps / total) | {it_per_s:.2} |");
    for (key, value) in [
        ("load_seconds", load),
        ("encode_seconds", first),
        ("step_seconds", step),
        ("total_seconds", total),
        ("it_per_s", it_per_s),
    ] {
        println!("RESULT {key} {value}");
    }
    if let Some(gpu) = &gpu {
        let m = gpu.memory_stats();
        let mib = |b: usize| b as f64 / f64::from(1 << 20);
        println!(
            "| peak device memory, MiB (in use / held from the driver) | {:.0} / {:.0} |",
            mib(m.peak_in_use),
            mib(m.peak_held)
        );
        println!("RESULT peak_in_use_mib {}", mib(m.peak_in_use));
        println!("RESULT peak_held_mib {}", mib(m.peak_held));
    }
    println!("RESULT threads {threads}");
    if let Some(times) = gpu.as_ref().and_then(|g| g.kernel_times()) {
        // The generation: prompt encoding, the steps and the VAE decode.
        let times = times.map_err(|e| e.to_string())?;
        print!("\n{}", inference_server::engine::kernel_report(&times));
        let total: f64 = times.iter().map(|t| t.ms).sum();
        println!("RESULT gpu_kernel_ms {total}");
    }
    if profile::enabled() {
        // SDSERVE_PROFILE=1: where the whole generation went, per op (divide by the steps for
        // one step's share; the prompt encoding and VAE decode ops are in it too).
        eprintln!("{}", profile::report());
    }
    Ok(())
}

fn main() {
    let result = parse_args().and_then(|args| run(&args));
    if let Err(e) = result {
        eprintln!("pipeline bench: {e}");
        std::process::exit(2);
    }
}
