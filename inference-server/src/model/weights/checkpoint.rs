//! Opening a checkpoint in either layout: a diffusers folder or a single `.safetensors` file.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;

use super::config::{ClipTextConfig, UNetConfig, VaeConfig};
use super::params::{Param, clip_params, unet_params, vae_params};
use super::single_file::{self as sf, Source};
use super::{RawTensor, SafetensorsFile, WeightsError};
use super::{diffusers, infer, validate};
use crate::sampling::SchedulerConfig;

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
#[derive(Clone, Default)]
pub struct WeightSet {
    tensors: BTreeMap<String, Slot>,
    /// The dtype every tensor is converted to when loaded (`None`: kept as stored, borrowed
    /// from the mmap on the CPU). Also the activation dtype of the model built from the set.
    cast: Option<crate::engine::DType>,
}

impl std::fmt::Debug for WeightSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WeightSet")
            .field("tensors", &self.tensors.len())
            .finish()
    }
}

impl WeightSet {
    /// Converts every tensor to `dtype` as it is loaded (`None`: as stored). The model built
    /// from this set computes in [`WeightSet::activation_dtype`].
    pub fn set_cast(&mut self, dtype: Option<crate::engine::DType>) {
        self.cast = dtype;
    }

    /// The dtype tensors are converted to on load, if any.
    pub fn cast(&self) -> Option<crate::engine::DType> {
        self.cast
    }

    /// The activation dtype of a model loaded from this set: the cast dtype, else f32.
    pub fn activation_dtype(&self) -> crate::engine::DType {
        self.cast.unwrap_or(crate::engine::DType::F32)
    }

    pub(super) fn insert(&mut self, name: String, tensor: Result<RawTensor, WeightsError>) {
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
    /// Noise schedule the UNet was trained with.
    pub scheduler: SchedulerConfig,
    /// `tokenizer/` of a diffusers folder (single files carry no tokenizer).
    pub tokenizer_dir: Option<PathBuf>,
}

impl Checkpoint {
    /// Opens a diffusers folder (a directory with `model_index.json`) or a single-file
    /// `.safetensors` checkpoint. Only headers are read; tensor data stays mapped.
    pub fn open(path: impl AsRef<Path>) -> Result<Checkpoint, WeightsError> {
        let path = path.as_ref();
        if path.is_dir() {
            diffusers::open(path)
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
    let extension = path.extension().and_then(|e| e.to_str()).unwrap_or("");
    if ["ckpt", "pt", "pth", "bin"].contains(&extension.to_ascii_lowercase().as_str()) {
        return Err(WeightsError::layout(
            path,
            "pickled checkpoints are not supported (they can run code); convert to .safetensors",
        ));
    }
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
    // Weights cannot tell the prediction type (SD 2 768-v uses v_prediction): without
    // embedded configs the SD 1.5 schedule with epsilon prediction is assumed.
    let scheduler: SchedulerConfig = embedded(&file, "scheduler")?.unwrap_or_default();
    clip.validate(path)?;
    unet.validate(path)?;
    vae.validate(path)?;
    validate::check_scheduler(&scheduler, path)?;
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
        scheduler,
        tokenizer_dir: None,
    })
}
