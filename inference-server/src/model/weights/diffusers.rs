//! Opening a diffusers folder: `model_index.json`, one folder per component with its
//! `config.json` and safetensors weights (plain, `.fp16` variant, or sharded with an index).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;

use super::config::{ClipTextConfig, HiddenAct, UNetConfig, VaeConfig};
use super::{Checkpoint, Layout, SafetensorsFile, Variant, WeightSet, WeightsError, validate};
use crate::sampling::SchedulerConfig;

/// The safetensors files holding the weights `stem` of component folder `dir`.
fn weight_files(dir: &Path, stem: &str) -> Result<Vec<PathBuf>, WeightsError> {
    for variant in ["", ".fp16"] {
        let single = dir.join(format!("{stem}{variant}.safetensors"));
        if single.is_file() {
            return Ok(vec![single]);
        }
        let index = dir.join(format!("{stem}{variant}.safetensors.index.json"));
        if index.is_file() {
            return shards(&index, dir);
        }
    }
    Err(WeightsError::layout(
        dir,
        format!(
            "no {stem}.safetensors, {stem}.fp16.safetensors or sharded index \
             (pickled .bin weights are not supported)"
        ),
    ))
}

/// The distinct files named in the `weight_map` of a sharded checkpoint's index.
fn shards(index: &Path, dir: &Path) -> Result<Vec<PathBuf>, WeightsError> {
    let text = std::fs::read_to_string(index).map_err(|e| WeightsError::io(index, e))?;
    let value: serde_json::Value = serde_json::from_str(&text)
        .map_err(|e| WeightsError::layout(index, format!("index is not JSON: {e}")))?;
    let Some(map) = value.get("weight_map").and_then(|m| m.as_object()) else {
        return Err(WeightsError::layout(
            index,
            "index has no `weight_map` object",
        ));
    };
    let mut files = BTreeSet::new();
    for (tensor, file) in map {
        let name = file
            .as_str()
            .filter(|f| !f.contains('/') && !f.contains('\\'));
        let Some(name) = name else {
            return Err(WeightsError::layout(
                index,
                format!("bad shard name for `{tensor}`"),
            ));
        };
        files.insert(dir.join(name));
    }
    Ok(files.into_iter().collect())
}

fn component<T: DeserializeOwned>(
    root: &Path,
    folder: &str,
    stem: &str,
    rename: impl Fn(&str) -> String,
) -> Result<(T, WeightSet), WeightsError> {
    let dir = root.join(folder);
    let config: T = validate::read_config(&dir.join("config.json"))?;
    let mut set = WeightSet::default();
    for path in weight_files(&dir, stem)? {
        let file = SafetensorsFile::open(path)?;
        for name in file.names() {
            set.insert(rename(name), file.tensor(name));
        }
    }
    Ok((config, set))
}

/// Whether the tokenizer pads with `!` (SD 2's OpenCLIP convention).
fn pad_is_bang(tokenizer_dir: &Path) -> bool {
    ["special_tokens_map.json", "tokenizer_config.json"]
        .iter()
        .any(|f| {
            let Ok(text) = std::fs::read_to_string(tokenizer_dir.join(f)) else {
                return false;
            };
            let Ok(v) = serde_json::from_str::<serde_json::Value>(&text) else {
                return false;
            };
            let pad = &v["pad_token"];
            pad.as_str().or_else(|| pad["content"].as_str()) == Some("!")
        })
}

/// Opens the diffusers folder `root`.
pub(super) fn open(root: &Path) -> Result<Checkpoint, WeightsError> {
    if !root.join("model_index.json").is_file() {
        return Err(WeightsError::layout(
            root,
            "directory has no model_index.json: not a diffusers folder",
        ));
    }
    // transformers 5's save_pretrained drops the `text_model.` level real checkpoints have.
    let text_encoder: (ClipTextConfig, WeightSet) =
        component(root, "text_encoder", "model", |n| {
            if n.starts_with("text_model.") {
                n.to_string()
            } else {
                format!("text_model.{n}")
            }
        })?;
    let unet: (UNetConfig, WeightSet) =
        component(root, "unet", "diffusion_pytorch_model", str::to_string)?;
    let vae: (VaeConfig, WeightSet) =
        component(root, "vae", "diffusion_pytorch_model", str::to_string)?;
    text_encoder
        .0
        .validate(&root.join("text_encoder/config.json"))?;
    unet.0.validate(&root.join("unet/config.json"))?;
    vae.0.validate(&root.join("vae/config.json"))?;
    let scheduler_file = root.join("scheduler/scheduler_config.json");
    let scheduler: SchedulerConfig = if scheduler_file.is_file() {
        validate::read_config(&scheduler_file)?
    } else {
        SchedulerConfig::default()
    };
    validate::check_scheduler(&scheduler, &scheduler_file)?;
    let tokenizer_dir = Some(root.join("tokenizer")).filter(|d| d.is_dir());
    let sd2 = match &tokenizer_dir {
        Some(dir) if pad_is_bang(dir) => true,
        _ => text_encoder.0.hidden_act == HiddenAct::Gelu,
    };
    Ok(Checkpoint {
        path: root.to_path_buf(),
        layout: Layout::Diffusers,
        variant: if sd2 { Variant::Sd2 } else { Variant::Sd1 },
        text_encoder,
        unet,
        vae,
        scheduler,
        tokenizer_dir,
    })
}
