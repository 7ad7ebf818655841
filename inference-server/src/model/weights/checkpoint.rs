//! Opening a checkpoint in either layout: a diffusers folder or a single `.safetensors` file.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;

use super::config::{ClipTextConfig, HiddenAct, UNetConfig, VaeConfig};
use super::params::{Param, clip_params, unet_params, vae_params};
use super::single_file::{self as sf, Source};
use super::{RawTensor, SafetensorsFile, WeightsError};
use super::{infer, validate};

/// Metadata key of single files that carry their diffusers configs (the test models do).
pub const CONFIG_METADATA_KEY: &str = "sdserve.config";

/// Stable Diffusion generation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Variant {
    /// SD 1.x: OpenAI CLIP ViT-L/14 text encoder.
    Sd1,
    /// SD 2.x: OpenCLIP ViT-H/14 text encoder, penultimate layer.
    Sd2,
}

/// How a checkpoint is stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Layout {
    /// A diffusers folder with `model_index.json` and one folder per component.
    Diffusers,
    /// One `.safetensors` file with the original (CompVis / Stability) key names.
    SingleFile,
}

#[derive(Debug, Clone)]
enum Slot {
    Tensor(RawTensor),
    BadDType(String),
}

/// The tensors of one model component under their diffusers names, borrowed from mmaps.
#[derive(Debug, Clone, Default)]
pub struct WeightSet {
    tensors: BTreeMap<String, Slot>,
}

impl WeightSet {
    fn insert(&mut self, name: String, tensor: Result<RawTensor, WeightsError>) {
        let slot = match tensor {
            Ok(mut t) => {
                t.name = name.clone();
                Slot::Tensor(t)
            }
            Err(WeightsError::DType { found, .. }) => Slot::BadDType(found),
            Err(_) => return,
        };
        self.tensors.insert(name, slot);
    }

    /// Tensor `name`, which must have shape `expected_shape`.
    pub fn get(&self, name: &str, expected_shape: &[usize]) -> Result<RawTensor, WeightsError> {
        match self.tensors.get(name) {
            None => Err(WeightsError::Missing {
                tensor: name.into(),
                expected_shape: expected_shape.to_vec(),
            }),
            Some(Slot::BadDType(found)) => Err(WeightsError::DType {
                tensor: name.into(),
                found: found.clone(),
            }),
            Some(Slot::Tensor(t)) if t.shape != expected_shape => Err(WeightsError::Shape {
                tensor: name.into(),
                expected: expected_shape.to_vec(),
                found: t.shape.clone(),
            }),
            Some(Slot::Tensor(t)) => Ok(t.clone()),
        }
    }

    /// Checks that every parameter of `params` is present with its shape and a supported dtype.
    pub fn check(&self, params: &[Param]) -> Result<(), WeightsError> {
        params
            .iter()
            .try_for_each(|(name, shape)| self.get(name, shape).map(drop))
    }

    /// Diffusers names of all tensors, sorted.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.tensors.keys().map(String::as_str)
    }

    /// Number of tensors.
    pub fn len(&self) -> usize {
        self.tensors.len()
    }

    /// Whether the set holds no tensor.
    pub fn is_empty(&self) -> bool {
        self.tensors.is_empty()
    }
}

/// A Stable Diffusion checkpoint: the configs and weights of its three networks.
#[derive(Debug)]
pub struct Checkpoint {
    /// The folder or file opened.
    pub path: PathBuf,
    /// How it is stored.
    pub layout: Layout,
    /// SD generation.
    pub variant: Variant,
    /// CLIP text encoder.
    pub text_encoder: (ClipTextConfig, WeightSet),
    /// Denoising UNet.
    pub unet: (UNetConfig, WeightSet),
    /// Autoencoder.
    pub vae: (VaeConfig, WeightSet),
    /// `tokenizer/` of a diffusers folder (single files carry no tokenizer).
    pub tokenizer_dir: Option<PathBuf>,
}

impl Checkpoint {
    /// Opens a diffusers folder (a directory with `model_index.json`) or a single-file
    /// `.safetensors` checkpoint. Only headers are read; tensor data stays mapped.
    pub fn open(path: impl AsRef<Path>) -> Result<Checkpoint, WeightsError> {
        let path = path.as_ref();
        if path.is_dir() {
            open_diffusers(path)
        } else if path.is_file() {
            open_single_file(path)
        } else {
            Err(WeightsError::io(
                path,
                std::io::Error::new(std::io::ErrorKind::NotFound, "no such file or directory"),
            ))
        }
    }
}

fn weights_file(dir: &Path, stem: &str) -> Result<PathBuf, WeightsError> {
    for name in [
        format!("{stem}.safetensors"),
        format!("{stem}.fp16.safetensors"),
    ] {
        let p = dir.join(name);
        if p.is_file() {
            return Ok(p);
        }
    }
    Err(WeightsError::layout(
        dir,
        format!(
            "no {stem}.safetensors or {stem}.fp16.safetensors (pickled .bin weights are not supported)"
        ),
    ))
}

fn component<T: DeserializeOwned>(
    root: &Path,
    folder: &str,
    stem: &str,
    rename: impl Fn(&str) -> String,
) -> Result<(T, WeightSet), WeightsError> {
    let dir = root.join(folder);
    let config: T = validate::read_config(&dir.join("config.json"))?;
    let file = SafetensorsFile::open(weights_file(&dir, stem)?)?;
    let mut set = WeightSet::default();
    for name in file.names() {
        set.insert(rename(name), file.tensor(name));
    }
    Ok((config, set))
}

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

fn open_diffusers(root: &Path) -> Result<Checkpoint, WeightsError> {
    if !root.join("model_index.json").is_file() {
        return Err(WeightsError::layout(
            root,
            "directory has no model_index.json: not a diffusers folder",
        ));
    }
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
        tokenizer_dir,
    })
}

/// Component `key` of the embedded `sdserve.config`, or `None` when the file has none.
fn embedded<T: DeserializeOwned>(
    file: &SafetensorsFile,
    key: &str,
) -> Result<Option<T>, WeightsError> {
    let Some(text) = file.metadata().get(CONFIG_METADATA_KEY) else {
        return Ok(None);
    };
    let all: serde_json::Value = serde_json::from_str(text).map_err(|e| WeightsError::Config {
        path: file.path().to_path_buf(),
        field: CONFIG_METADATA_KEY.into(),
        reason: format!("not JSON: {e}"),
    })?;
    match all.get(key) {
        Some(v) => validate::parse_value(file.path(), v.clone()).map(Some),
        None => Ok(None),
    }
}

fn collect(
    file: &SafetensorsFile,
    params: &[Param],
    source: impl Fn(&str, &[usize]) -> Source,
) -> WeightSet {
    let mut set = WeightSet::default();
    for (name, shape) in params {
        let src = source(name, shape);
        let mut found = file.tensor(&src.name);
        // Old SD 1 files name the CLIP tensors without the `text_model.` level.
        if matches!(found, Err(WeightsError::Missing { .. }))
            && let Some(flat) = src
                .name
                .strip_prefix(sf::SD1_CLIP_PREFIX)
                .and_then(|r| r.strip_prefix("text_model."))
        {
            found = file.tensor(&format!("{}{flat}", sf::SD1_CLIP_PREFIX));
        }
        let tensor = found.and_then(|t| match &src.rows {
            Some(rows) if t.shape == src.shape => t.rows(rows.clone(), name.clone()),
            _ if t.shape != *shape
                && t.numel() == shape.iter().product::<usize>()
                && t.shape == src.shape =>
            {
                t.reshape(shape)
            }
            _ => Ok(t),
        });
        set.insert(name.clone(), tensor);
    }
    set
}

fn open_single_file(path: &Path) -> Result<Checkpoint, WeightsError> {
    let file = SafetensorsFile::open(path)?;
    let variant = infer::detect_variant(&file)?;
    let clip = match embedded(&file, "text_encoder")? {
        Some(c) => c,
        None => infer::infer_clip(&file, variant)?,
    };
    let unet = match embedded(&file, "unet")? {
        Some(c) => c,
        None => infer::infer_unet(&file, variant)?,
    };
    let vae = match embedded(&file, "vae")? {
        Some(c) => c,
        None => infer::infer_vae(&file, variant)?,
    };
    clip.validate(path)?;
    unet.validate(path)?;
    vae.validate(path)?;
    let clip_set = collect(&file, &clip_params(&clip), |n, s| {
        sf::clip_source(n, s, variant)
    });
    let unet_set = collect(&file, &unet_params(&unet), |n, s| {
        sf::unet_full_source(n, s, &unet)
    });
    let vae_set = collect(&file, &vae_params(&vae), |n, s| {
        sf::vae_full_source(n, s, &vae)
    });
    Ok(Checkpoint {
        path: path.to_path_buf(),
        layout: Layout::SingleFile,
        variant,
        text_encoder: (clip, clip_set),
        unet: (unet, unet_set),
        vae: (vae, vae_set),
        tokenizer_dir: None,
    })
}
