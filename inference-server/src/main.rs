//! `inference-server` command line. Every flag is also read from `SDSERVE_<FLAG>`.
//!
//! - `make-test-model`: writes one of the tiny random SD-shaped models the tests use.
//! - `inspect`: opens a checkpoint (diffusers folder or single-file `.safetensors`) and prints
//!   what was recognised, or the error naming the tensor or field at fault.
//!
//! - `serve`: loads `--model PATH[=NAME]` (several allowed, the first is the default) onto
//!   `--device` and serves `sdserve.v1.Inference` on `--listen` until Ctrl-C or SIGTERM.
//!
//! `generate` arrives with the pipeline work.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand, ValueEnum};
use inference_server::engine::Device;
use inference_server::model::testmodel::write_test_model;
use inference_server::model::weights::{Checkpoint, Layout, StoredDType, Variant};
use inference_server::service::{ModelSpec, ServiceConfig};

#[derive(Parser)]
#[command(name = "inference-server", version, about = "Stable Diffusion inference for sdserve")]
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
        /// separate several with commas.
        #[arg(long = "model", env = "SDSERVE_MODEL", required = true, value_delimiter = ',')]
        models: Vec<ModelSpec>,
        /// Device to run on: `cpu` or `cuda:N`.
        #[arg(long, env = "SDSERVE_DEVICE", default_value = "cpu")]
        device: String,
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
    /// Open a checkpoint and print its layout, variant and component configs.
    Inspect {
        /// A diffusers folder (with model_index.json) or a single-file `.safetensors`.
        #[arg(long, env = "SDSERVE_MODEL")]
        model: PathBuf,
    },
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
        Command::Serve { listen, models, device } => serve(listen, models, &device)?,
        Command::MakeTestModel { out, variant, layout, dtype } => {
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
            println!("text_encoder: {} tensors, {}", clip_w.len(), serde_json::to_string(clip)?);
            println!("unet: {} tensors, {}", unet_w.len(), serde_json::to_string(unet)?);
            println!("vae: {} tensors, {}", vae_w.len(), serde_json::to_string(vae)?);
        }
    }
    Ok(())
}

/// `serve`: logs to stderr (`RUST_LOG`, default `info`), runs until Ctrl-C or SIGTERM.
fn serve(listen: SocketAddr, models: Vec<ModelSpec>, device: &str) -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()))
        .with_writer(std::io::stderr)
        .init();
    let device = Device::parse(device).with_context(|| format!("--device {device}"))?;
    let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind(listen).await.with_context(|| format!("binding --listen {listen}"))?;
        inference_server::service::run(ServiceConfig { models, device }, listener, shutdown_signal()).await?;
        anyhow::Ok(())
    })
}

/// Resolves on Ctrl-C, or SIGTERM on Unix.
async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        if let Ok(mut term) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
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
