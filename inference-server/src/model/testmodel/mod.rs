//! Deterministic tiny SD-shaped models with random weights, written in both layouts for tests.
//!
//! Every tensor's values depend only on its diffusers name ([`param_values`]), so the diffusers
//! folder and the single file of one variant load to identical tensors. The text encoder keeps
//! CLIP's real 49,408-token vocabulary so the real tokenizer drives it; everything else is
//! small (hidden width 32, two UNet levels, four VAE levels for SD's 1/8 latent factor).

mod files;
mod full;
mod rng;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use serde_json::json;

pub use full::{published_configs, write_header_only_single_file};
pub use rng::param_values;

use crate::model::weights::config::{ClipTextConfig, HiddenAct, PerBlock, UNetConfig, VaeConfig};
use crate::model::weights::single_file as sf;
use crate::model::weights::{
    CONFIG_METADATA_KEY, Layout, OwnedTensor, Param, StoredDType, Variant, WeightsError,
    clip_params, unet_params, vae_params, write_safetensors,
};
use crate::sampling::SchedulerConfig;

/// The configs of the tiny model of `variant`.
pub fn test_configs(variant: Variant) -> (ClipTextConfig, UNetConfig, VaeConfig) {
    let sd2 = variant == Variant::Sd2;
    let clip = ClipTextConfig {
        vocab_size: 49408,
        hidden_size: 32,
        intermediate_size: if sd2 { 64 } else { 37 },
        num_hidden_layers: if sd2 { 2 } else { 3 },
        num_attention_heads: 4,
        max_position_embeddings: 77,
        hidden_act: if sd2 {
            HiddenAct::Gelu
        } else {
            HiddenAct::QuickGelu
        },
        layer_norm_eps: 1e-5,
        pad_token_id: 1,
        bos_token_id: 0,
        eos_token_id: 2,
    };
    let names = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    let unet = UNetConfig {
        sample_size: Some(8),
        down_block_types: if sd2 {
            names(&["CrossAttnDownBlock2D", "CrossAttnDownBlock2D"])
        } else {
            names(&["CrossAttnDownBlock2D", "DownBlock2D"])
        },
        up_block_types: if sd2 {
            names(&["CrossAttnUpBlock2D", "CrossAttnUpBlock2D"])
        } else {
            names(&["UpBlock2D", "CrossAttnUpBlock2D"])
        },
        block_out_channels: vec![32, 64],
        layers_per_block: if sd2 { 1 } else { 2 },
        cross_attention_dim: 32,
        attention_head_dim: if sd2 {
            PerBlock::Each(vec![2, 4])
        } else {
            PerBlock::All(8)
        },
        use_linear_projection: sd2,
        norm_num_groups: if sd2 { 16 } else { 8 },
        ..UNetConfig::default()
    };
    let vae = VaeConfig {
        down_block_types: vec!["DownEncoderBlock2D".into(); 4],
        up_block_types: vec!["UpDecoderBlock2D".into(); 4],
        block_out_channels: if sd2 {
            vec![32, 32, 64, 64]
        } else {
            vec![16, 32, 32, 32]
        },
        layers_per_block: if sd2 { 2 } else { 1 },
        norm_num_groups: if sd2 { 16 } else { 8 },
        sample_size: 64,
        ..VaeConfig::default()
    };
    (clip, unet, vae)
}

fn tensors(params: &[Param], dtype: StoredDType) -> Vec<OwnedTensor> {
    params
        .iter()
        .map(|(name, shape)| {
            OwnedTensor::from_f32(
                name.clone(),
                shape.clone(),
                &param_values(name, shape),
                dtype,
            )
        })
        .collect()
}

fn create_dir(dir: &Path) -> Result<(), WeightsError> {
    std::fs::create_dir_all(dir).map_err(|e| WeightsError::io(dir, e))
}

/// Writes the tiny model of `variant` to `out` (a folder for [`Layout::Diffusers`], a
/// `.safetensors` file for [`Layout::SingleFile`]) with weights stored as `dtype`; returns `out`.
pub fn write_test_model(
    out: &Path,
    variant: Variant,
    layout: Layout,
    dtype: StoredDType,
) -> Result<PathBuf, WeightsError> {
    match layout {
        Layout::Diffusers => write_diffusers(out, variant, dtype)?,
        Layout::SingleFile => write_single_file(out, variant, dtype)?,
    }
    Ok(out.to_path_buf())
}

fn torch_dtype(dtype: StoredDType) -> &'static str {
    match dtype {
        StoredDType::F32 => "float32",
        StoredDType::F16 => "float16",
        StoredDType::BF16 => "bfloat16",
    }
}

/// Writes a diffusers folder of `variant` with the published (full-size) configs of
/// [`published_configs`] and the same deterministic pseudo-random weights as the tiny model,
/// stored as `dtype`; for benchmarks (SD 1.5 at f16 is about 2 GB). Returns `out`.
pub fn write_full_size_model(
    out: &Path,
    variant: Variant,
    dtype: StoredDType,
) -> Result<PathBuf, WeightsError> {
    write_diffusers_with(out, variant, dtype, published_configs(variant))?;
    Ok(out.to_path_buf())
}

fn write_diffusers(root: &Path, variant: Variant, dtype: StoredDType) -> Result<(), WeightsError> {
    write_diffusers_with(root, variant, dtype, test_configs(variant))
}

fn write_diffusers_with(
    root: &Path,
    variant: Variant,
    dtype: StoredDType,
    (clip, unet, vae): (ClipTextConfig, UNetConfig, VaeConfig),
) -> Result<(), WeightsError> {
    let none = BTreeMap::new();
    for sub in ["text_encoder", "unet", "vae", "scheduler"] {
        create_dir(&root.join(sub))?;
    }
    files::write_json(&root.join("model_index.json"), &files::model_index())?;
    files::write_json(
        &root.join("scheduler/scheduler_config.json"),
        &files::scheduler_config(),
    )?;
    files::write_tokenizer(&root.join("tokenizer"), variant)?;

    let clip_extra = json!({
        "architectures": ["CLIPTextModel"],
        "model_type": "clip_text_model",
        "projection_dim": clip.hidden_size,
        "attention_dropout": 0.0,
        "dropout": 0.0,
        "initializer_factor": 1.0,
        "initializer_range": 0.02,
        "torch_dtype": torch_dtype(dtype)
    });
    files::write_json(
        &root.join("text_encoder/config.json"),
        &files::config_json(&clip, clip_extra),
    )?;
    write_safetensors(
        &root.join("text_encoder/model.safetensors"),
        &tensors(&clip_params(&clip), dtype),
        &none,
    )?;

    let unet_extra = json!({
        "_class_name": "UNet2DConditionModel",
        "_diffusers_version": "0.30.0",
        "act_fn": "silu",
        "center_input_sample": false,
        "downsample_padding": 1,
        "mid_block_scale_factor": 1,
        "mid_block_type": "UNetMidBlock2DCrossAttn"
    });
    files::write_json(
        &root.join("unet/config.json"),
        &files::config_json(&unet, unet_extra),
    )?;
    let unet_file = root.join("unet/diffusion_pytorch_model.safetensors");
    write_safetensors(&unet_file, &tensors(&unet_params(&unet), dtype), &none)?;

    let vae_extra =
        json!({ "_class_name": "AutoencoderKL", "_diffusers_version": "0.30.0", "act_fn": "silu" });
    files::write_json(
        &root.join("vae/config.json"),
        &files::config_json(&vae, vae_extra),
    )?;
    let vae_file = root.join("vae/diffusion_pytorch_model.safetensors");
    write_safetensors(&vae_file, &tensors(&vae_params(&vae), dtype), &none)
}

/// Accumulates diffusers parameters into original tensors (fusing q/k/v rows).
#[derive(Default)]
struct Fused(BTreeMap<String, (Vec<usize>, Vec<f32>)>);

impl Fused {
    fn add(&mut self, name: &str, shape: &[usize], src: sf::Source) {
        let values = param_values(name, shape);
        let total: usize = src.shape.iter().product();
        let (_, buf) = self
            .0
            .entry(src.name)
            .or_insert_with(|| (src.shape.clone(), vec![0.0; total]));
        let row = values.len() / shape.first().copied().unwrap_or(1).max(1);
        let start = src.rows.map_or(0, |r| r.start * row);
        buf[start..start + values.len()].copy_from_slice(&values);
    }
}

/// Every diffusers parameter of a single-file checkpoint of `variant` with these configs, with
/// where it is stored; SD 2 files also hold the last OpenCLIP layer, which diffusers drops
/// (SD 2 conditions on the penultimate layer).
pub fn single_file_params(
    variant: Variant,
    clip: &ClipTextConfig,
    unet: &UNetConfig,
    vae: &VaeConfig,
) -> Vec<(String, Vec<usize>, sf::Source)> {
    let mut clip_list = clip_params(clip);
    if variant == Variant::Sd2 {
        let deeper = ClipTextConfig {
            num_hidden_layers: clip.num_hidden_layers + 1,
            ..clip.clone()
        };
        let known: BTreeSet<String> = clip_list.iter().map(|(n, _)| n.clone()).collect();
        clip_list.extend(
            clip_params(&deeper)
                .into_iter()
                .filter(|(n, _)| !known.contains(n)),
        );
    }
    let mut out = Vec::new();
    for (name, shape) in clip_list {
        let source = sf::clip_source(&name, &shape, variant);
        out.push((name, shape, source));
    }
    for (name, shape) in unet_params(unet) {
        let source = sf::unet_full_source(&name, &shape, unet);
        out.push((name, shape, source));
    }
    for (name, shape) in vae_params(vae) {
        let source = sf::vae_full_source(&name, &shape, vae);
        out.push((name, shape, source));
    }
    out
}

fn write_single_file(
    path: &Path,
    variant: Variant,
    dtype: StoredDType,
) -> Result<(), WeightsError> {
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        create_dir(parent)?;
    }
    let (clip, unet, vae) = test_configs(variant);
    let mut fused = Fused::default();
    for (name, shape, source) in single_file_params(variant, &clip, &unet, &vae) {
        fused.add(&name, &shape, source);
    }
    let out: Vec<OwnedTensor> = fused
        .0
        .into_iter()
        .map(|(name, (shape, values))| OwnedTensor::from_f32(name, shape, &values, dtype))
        .collect();
    let configs = json!({
        "text_encoder": clip,
        "unet": unet,
        "vae": vae,
        "scheduler": SchedulerConfig::default(),
    });
    let metadata = BTreeMap::from([
        ("format".to_string(), "pt".to_string()),
        (CONFIG_METADATA_KEY.to_string(), configs.to_string()),
    ]);
    write_safetensors(path, &out, &metadata)
}
