//! `inference-server` command line. Every flag is also read from `SDSERVE_<FLAG>`.
//!
//! - `make-test-model`: writes one of the tiny random SD-shaped models the tests use.
//! - `inspect`: opens a checkpoint (diffusers folder or single-file `.safetensors`) and prints
//!   what was recognised, or the error naming the tensor or field at fault.
//! - `generate`: one txt2img (or img2img with `--init-image`) run to PNG files carrying the
//!   A1111 infotext; without `--model` on the built-in `sdserve-shapes` at 64×64.
//! - `serve`: the `sdserve.v1.Inference` gRPC service (health and reflection included) for the
//!   models given with `--model PATH[=NAME]`, or the built-in `sdserve-shapes` without one.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand, ValueEnum};
use inference_server::engine::Device;
use inference_server::model::builtin::{
    BUILTIN_MODEL_NAME, BUILTIN_MODEL_SIZE, cache_root, materialize_in,
};
use inference_server::model::testmodel::write_test_model;
use inference_server::model::weights::{Checkpoint, Layout, StoredDType, Variant};
use inference_server::pipeline::images::decode_image_rgb;
use inference_server::pipeline::png::generation_pngs;
use inference_server::pipeline::{
    Img2ImgParams, Pipeline, Precision, Request, RunOptions, StepEvent, Txt2ImgParams,
};
use inference_server::sampling::rng::GeneratorKind;
use inference_server::service::{ModelSpec, ServiceConfig};

/// `sdserve-shapes`, the built-in model (see `inference_server::model::builtin`).
static BUILTIN_MODEL: &[u8] = include_bytes!("../data/sdserve-shapes.safetensors");

/// Writes the built-in model to the cache (once) and returns its path.
fn builtin_model_path() -> anyhow::Result<PathBuf> {
    let root = cache_root();
    materialize_in(&root, BUILTIN_MODEL)
        .with_context(|| format!("writing the built-in model under {}", root.display()))
}

#[derive(Parser)]
#[command(
    name = "inference-server",
    version,
    about = "Stable Diffusion inference for sdserve"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve `sdserve.v1.Inference` (with gRPC health and reflection) until Ctrl-C.
    Serve {
        /// Address to listen on.
        #[arg(long, env = "SDSERVE_LISTEN", default_value = "127.0.0.1:50051")]
        listen: SocketAddr,
        /// A model to load, `PATH` or `PATH=NAME` (a diffusers folder or a single-file
        /// `.safetensors`). Repeat for several; the first is the default. In the environment,
        /// separate several with commas. Without one, the built-in `sdserve-shapes` (64×64
        /// shapes on plain backgrounds) is served.
        #[arg(long = "model", env = "SDSERVE_MODEL", value_delimiter = ',')]
        models: Vec<ModelSpec>,
        /// Device to run on: `cpu`, `cuda:N` (an NVIDIA GPU through the CUDA driver) or
        /// `cuda-emu` (the CUDA backend on the CPU; builds with `--features cuda-emu`).
        #[arg(long, env = "SDSERVE_DEVICE", default_value = "cpu")]
        device: String,
        /// Compute precision: `f32`, `f16` (UNet and text encoder; the VAE stays f32) or
        /// `bf16`. Default: f32 on `cpu` and `cuda-emu`, f16 on `cuda:N`.
        #[arg(long, env = "SDSERVE_PRECISION")]
        precision: Option<Precision>,
        /// Requests that may wait for the device; more are refused with RESOURCE_EXHAUSTED.
        #[arg(long, env = "SDSERVE_MAX_QUEUE", default_value_t = inference_server::service::DEFAULT_MAX_QUEUE)]
        max_queue: usize,
    },
    /// Write a tiny SD-shaped model with deterministic random weights.
    MakeTestModel {
        /// Output: a folder (diffusers layout) or a `.safetensors` file (single-file layout).
        #[arg(long, env = "SDSERVE_OUT")]
        out: PathBuf,
        /// Which generation's shapes and text encoder to mimic.
        #[arg(long, env = "SDSERVE_VARIANT", value_enum, default_value = "sd1")]
        variant: VariantArg,
        /// How to store it.
        #[arg(long, env = "SDSERVE_LAYOUT", value_enum, default_value = "diffusers")]
        layout: LayoutArg,
        /// Stored weight type.
        #[arg(long, env = "SDSERVE_DTYPE", value_enum, default_value = "f32")]
        dtype: DTypeArg,
    },
    /// Generate images from a prompt (txt2img) and write them as PNG.
    Generate(Box<GenerateArgs>),
    /// Open a checkpoint and print its layout, variant and component configs.
    Inspect {
        /// A diffusers folder (with model_index.json) or a single-file `.safetensors`.
        #[arg(long, env = "SDSERVE_MODEL")]
        model: PathBuf,
    },
}

#[derive(clap::Args)]
struct GenerateArgs {
    /// A diffusers folder or a single-file `.safetensors` checkpoint; default: the built-in
    /// `sdserve-shapes` (trained at 64×64, the default size then).
    #[arg(long, env = "SDSERVE_MODEL")]
    model: Option<PathBuf>,
    /// The prompt (A1111 emphasis syntax and BREAK accepted).
    #[arg(long, env = "SDSERVE_PROMPT")]
    prompt: String,
    /// Output PNG; with more than one image, `-1`, `-2`, ... are inserted before `.png`.
    #[arg(long, env = "SDSERVE_OUT")]
    out: PathBuf,
    /// The negative prompt.
    #[arg(long, env = "SDSERVE_NEGATIVE_PROMPT", default_value = "")]
    negative_prompt: String,
    /// Seed; -1 picks a random one (printed and written to the infotext).
    #[arg(long, env = "SDSERVE_SEED", default_value_t = -1, allow_negative_numbers = true)]
    seed: i64,
    /// Sampling steps (1..=150).
    #[arg(long, env = "SDSERVE_STEPS", default_value_t = 20)]
    steps: usize,
    /// Sampler: an A1111 name ("Euler a", "DPM++ 2M Karras", ...) or a diffusers class name.
    #[arg(long, env = "SDSERVE_SAMPLER", default_value = "Euler a")]
    sampler: String,
    /// A1111 schedule type ("Automatic", "Karras", "Exponential", ...).
    #[arg(long, env = "SDSERVE_SCHEDULER")]
    scheduler: Option<String>,
    /// Classifier-free guidance scale (1..=30).
    #[arg(
        long,
        env = "SDSERVE_CFG_SCALE",
        default_value_t = 7.0,
        allow_negative_numbers = true
    )]
    cfg_scale: f32,
    /// Width in pixels (multiple of 8, 64..=2048); default 512, or the init image's width.
    #[arg(long, env = "SDSERVE_WIDTH")]
    width: Option<usize>,
    /// Height in pixels (multiple of 8, 64..=2048); default 512, or the init image's height.
    #[arg(long, env = "SDSERVE_HEIGHT")]
    height: Option<usize>,
    /// img2img: a PNG or JPEG to start from (resized to --width/--height when those differ).
    #[arg(long, env = "SDSERVE_INIT_IMAGE")]
    init_image: Option<PathBuf>,
    /// img2img: how much to change the init image (0..=1).
    #[arg(long, env = "SDSERVE_DENOISING_STRENGTH", default_value_t = 0.75)]
    denoising_strength: f32,
    /// Images per batch (1..=16).
    #[arg(long, env = "SDSERVE_BATCH_SIZE", default_value_t = 1)]
    batch_size: usize,
    /// CLIP layers to skip from the end (1 = last layer).
    #[arg(long, env = "SDSERVE_CLIP_SKIP", default_value_t = 1)]
    clip_skip: usize,
    /// Noise generator: "cpu" (PyTorch CPU, diffusers) or "gpu"/"nv"/"philox" (PyTorch CUDA).
    #[arg(long, env = "SDSERVE_RNG", default_value = "cpu")]
    rng: String,
    /// Device to run on: `cpu`, `cuda:N` or `cuda-emu` (see `serve --help`).
    #[arg(long, env = "SDSERVE_DEVICE", default_value = "cpu")]
    device: String,
    /// Compute precision: `f32`, `f16` or `bf16` (see `serve --help`).
    #[arg(long, env = "SDSERVE_PRECISION")]
    precision: Option<Precision>,
}

fn generate(args: GenerateArgs) -> anyhow::Result<()> {
    let noise_source: GeneratorKind = args.rng.parse().map_err(|e| anyhow::anyhow!("rng: {e}"))?;
    let init = match &args.init_image {
        Some(path) => {
            let bytes =
                std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
            Some(decode_image_rgb(&bytes)?)
        }
        None => None,
    };
    let side = if args.model.is_some() {
        512
    } else {
        BUILTIN_MODEL_SIZE
    };
    let (default_w, default_h) = init.as_ref().map_or((side, side), |i| (i.width, i.height));
    let params = Txt2ImgParams {
        prompt: args.prompt,
        negative_prompt: args.negative_prompt,
        seed: args.seed,
        steps: args.steps,
        sampler_name: args.sampler,
        scheduler: args.scheduler,
        cfg_scale: args.cfg_scale,
        width: args.width.unwrap_or(default_w),
        height: args.height.unwrap_or(default_h),
        batch_size: args.batch_size,
        clip_skip: args.clip_skip,
        noise_source,
        ..Txt2ImgParams::default()
    };
    let request = match init {
        Some(init_image) => Request::Img2Img(Img2ImgParams {
            base: params,
            init_image,
            denoising_strength: args.denoising_strength,
        }),
        None => Request::Txt2Img(params),
    };
    request.validate()?;
    let device =
        Device::parse(&args.device).with_context(|| format!("--device {}", args.device))?;
    let precision = args
        .precision
        .unwrap_or_else(|| Precision::default_for(&device));
    eprintln!("device: {}, precision {precision}", device.describe());
    let model = match args.model {
        Some(path) => path,
        None => builtin_model_path()?,
    };
    let pipeline = Pipeline::load_with(&model, &device, precision)?;
    let mut report = |e: &StepEvent<'_>| {
        eprintln!("step {}/{}", e.step + 1, e.total);
        std::ops::ControlFlow::Continue(())
    };
    let generation = pipeline.generate(&request, RunOptions::default(), &mut report)?;
    if inference_server::engine::profile::enabled() {
        // SDSERVE_PROFILE=1: where the generation's CPU time went, op by op, and on a GPU the
        // GPU's time per kernel.
        eprintln!("{}", inference_server::engine::profile::report());
        if let Device::Cuda(d) = &device
            && let Some(times) = d.kernel_times()
        {
            eprintln!("{}", inference_server::engine::kernel_report(&times?));
        }
    }
    let pngs = generation_pngs(&generation)?;
    let many = pngs.len() > 1;
    for (i, png) in pngs.iter().enumerate() {
        let path = if many {
            numbered(&args.out, i + 1)
        } else {
            args.out.clone()
        };
        std::fs::write(&path, png).with_context(|| format!("writing {}", path.display()))?;
        println!("{} seed {}", path.display(), generation.all_seeds[i]);
    }
    Ok(())
}

/// `dir/name.png` → `dir/name-N.png`.
fn numbered(out: &std::path::Path, n: usize) -> PathBuf {
    let stem = out
        .file_stem()
        .map_or_else(|| "image".into(), |s| s.to_string_lossy().into_owned());
    let ext = out
        .extension()
        .map_or_else(|| "png".into(), |s| s.to_string_lossy().into_owned());
    out.with_file_name(format!("{stem}-{n}.{ext}"))
}

#[derive(Clone, Copy, ValueEnum)]
enum VariantArg {
    Sd1,
    Sd2,
}

#[derive(Clone, Copy, ValueEnum)]
enum LayoutArg {
    Diffusers,
    SingleFile,
}

#[derive(Clone, Copy, ValueEnum)]
enum DTypeArg {
    F32,
    F16,
    Bf16,
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Serve {
            listen,
            models,
            device,
            precision,
            max_queue,
        } => serve(listen, models, &device, precision, max_queue)?,
        Command::MakeTestModel {
            out,
            variant,
            layout,
            dtype,
        } => {
            let variant = match variant {
                VariantArg::Sd1 => Variant::Sd1,
                VariantArg::Sd2 => Variant::Sd2,
            };
            let layout = match layout {
                LayoutArg::Diffusers => Layout::Diffusers,
                LayoutArg::SingleFile => Layout::SingleFile,
            };
            let dtype = match dtype {
                DTypeArg::F32 => StoredDType::F32,
                DTypeArg::F16 => StoredDType::F16,
                DTypeArg::Bf16 => StoredDType::BF16,
            };
            let path = write_test_model(&out, variant, layout, dtype)
                .with_context(|| format!("writing the test model to {}", out.display()))?;
            println!("{}", path.display());
        }
        Command::Generate(args) => generate(*args)?,
        Command::Inspect { model } => {
            let checkpoint = Checkpoint::open(&model)?;
            println!("path: {}", checkpoint.path.display());
            println!("layout: {:?}", checkpoint.layout);
            println!("variant: {:?}", checkpoint.variant);
            let tokenizer = checkpoint.tokenizer_dir.as_ref().map_or_else(
                || "built-in CLIP vocabulary".to_owned(),
                |d| d.display().to_string(),
            );
            println!("tokenizer: {tokenizer}");
            let (clip, clip_w) = &checkpoint.text_encoder;
            let (unet, unet_w) = &checkpoint.unet;
            let (vae, vae_w) = &checkpoint.vae;
            println!(
                "text_encoder: {} tensors, {}",
                clip_w.len(),
                serde_json::to_string(clip)?
            );
            println!(
                "unet: {} tensors, {}",
                unet_w.len(),
                serde_json::to_string(unet)?
            );
            println!(
                "vae: {} tensors, {}",
                vae_w.len(),
                serde_json::to_string(vae)?
            );
        }
    }
    Ok(())
}

/// `serve`: logs to stderr (`RUST_LOG`, default `info`), runs until Ctrl-C or SIGTERM.
fn serve(
    listen: SocketAddr,
    models: Vec<ModelSpec>,
    device: &str,
    precision: Option<Precision>,
    max_queue: usize,
) -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let device = Device::parse(device).with_context(|| format!("--device {device}"))?;
    tracing::info!(device = %device.describe(), "device opened");
    let models = if models.is_empty() {
        let path = builtin_model_path()?;
        tracing::info!(path = %path.display(), "no --model: serving the built-in {BUILTIN_MODEL_NAME}");
        vec![ModelSpec {
            path,
            name: Some(BUILTIN_MODEL_NAME.to_owned()),
        }]
    } else {
        models
    };
    let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind(listen)
            .await
            .with_context(|| format!("binding --listen {listen}"))?;
        inference_server::service::run(
            ServiceConfig {
                models,
                device,
                precision,
                max_queue,
            },
            listener,
            shutdown_signal(),
        )
        .await?;
        anyhow::Ok(())
    })
}

/// Resolves on Ctrl-C, or SIGTERM on Unix.
async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        if let Ok(mut term) =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        {
            tokio::select! {
                _ = ctrl_c => {}
                _ = term.recv() => {}
            }
            tracing::info!("shutting down");
            return;
        }
    }
    let _ = ctrl_c.await;
    tracing::info!("shutting down");
}
