//! The diffusers / transformers `config.json` of each component, with diffusers' defaults.

use std::path::Path;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use super::WeightsError;

/// Activation of the CLIP text encoder's MLP.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HiddenAct {
    /// `x * sigmoid(1.702 x)` (OpenAI CLIP, SD 1.x).
    QuickGelu,
    /// Exact erf GELU (OpenCLIP, SD 2.x).
    Gelu,
}

/// `text_encoder/config.json` (transformers `CLIPTextConfig`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ClipTextConfig {
    /// Number of token embeddings.
    pub vocab_size: usize,
    /// Width of the residual stream.
    pub hidden_size: usize,
    /// Width of the MLP.
    pub intermediate_size: usize,
    /// Number of transformer layers.
    pub num_hidden_layers: usize,
    /// Attention heads per layer.
    pub num_attention_heads: usize,
    /// Number of position embeddings (the context length).
    pub max_position_embeddings: usize,
    /// MLP activation.
    pub hidden_act: HiddenAct,
    /// Epsilon of every layer norm.
    pub layer_norm_eps: f64,
    /// Padding token id as the config states it.
    pub pad_token_id: i64,
    /// Begin-of-text token id as the config states it.
    pub bos_token_id: i64,
    /// End-of-text token id as the config states it.
    pub eos_token_id: i64,
}

impl Default for ClipTextConfig {
    fn default() -> Self {
        ClipTextConfig {
            vocab_size: 49408,
            hidden_size: 512,
            intermediate_size: 2048,
            num_hidden_layers: 12,
            num_attention_heads: 8,
            max_position_embeddings: 77,
            hidden_act: HiddenAct::QuickGelu,
            layer_norm_eps: 1e-5,
            pad_token_id: 1,
            bos_token_id: 49406,
            eos_token_id: 49407,
        }
    }
}

/// Attention heads of a UNet given as one number for all blocks or one per down block.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum PerBlock {
    /// The same value for every block.
    All(usize),
    /// One value per down block (up blocks use them reversed).
    Each(Vec<usize>),
}

impl PerBlock {
    /// The value for down block `block`.
    pub fn get(&self, block: usize) -> Option<usize> {
        match self {
            PerBlock::All(v) => Some(*v),
            PerBlock::Each(v) => v.get(block).copied(),
        }
    }
}

/// `unet/config.json` (diffusers `UNet2DConditionModel`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct UNetConfig {
    /// Latent side the model was trained at.
    pub sample_size: Option<usize>,
    /// Channels of the noisy latent.
    pub in_channels: usize,
    /// Channels of the prediction.
    pub out_channels: usize,
    /// Whether the timestep embedding is `[cos, sin]` (true) or `[sin, cos]`.
    pub flip_sin_to_cos: bool,
    /// Frequency shift of the timestep embedding.
    pub freq_shift: f64,
    /// `CrossAttnDownBlock2D` or `DownBlock2D` per level.
    pub down_block_types: Vec<String>,
    /// `UpBlock2D` or `CrossAttnUpBlock2D` per level, deepest first.
    pub up_block_types: Vec<String>,
    /// Channels per level.
    pub block_out_channels: Vec<usize>,
    /// Resnets per down block (up blocks have one more).
    pub layers_per_block: usize,
    /// Width of the text embeddings attended to.
    pub cross_attention_dim: usize,
    /// Despite its name, the number of attention heads in diffusers' SD configs.
    pub attention_head_dim: PerBlock,
    /// Overrides `attention_head_dim` as the head count when set.
    pub num_attention_heads: Option<PerBlock>,
    /// Linear (SD 2) rather than 1×1 conv (SD 1) `proj_in` / `proj_out`.
    pub use_linear_projection: bool,
    /// Groups of every group norm.
    pub norm_num_groups: usize,
    /// Epsilon of every group norm.
    pub norm_eps: f64,
}

impl Default for UNetConfig {
    fn default() -> Self {
        UNetConfig {
            sample_size: None,
            in_channels: 4,
            out_channels: 4,
            flip_sin_to_cos: true,
            freq_shift: 0.0,
            down_block_types: [
                "CrossAttnDownBlock2D",
                "CrossAttnDownBlock2D",
                "CrossAttnDownBlock2D",
                "DownBlock2D",
            ]
            .map(String::from)
            .to_vec(),
            up_block_types: [
                "UpBlock2D",
                "CrossAttnUpBlock2D",
                "CrossAttnUpBlock2D",
                "CrossAttnUpBlock2D",
            ]
            .map(String::from)
            .to_vec(),
            block_out_channels: vec![320, 640, 1280, 1280],
            layers_per_block: 2,
            cross_attention_dim: 1280,
            attention_head_dim: PerBlock::All(8),
            num_attention_heads: None,
            use_linear_projection: false,
            norm_num_groups: 32,
            norm_eps: 1e-5,
        }
    }
}

impl UNetConfig {
    /// Attention heads of down block `block` (the mid block uses the last one).
    pub fn heads(&self, block: usize) -> Option<usize> {
        self.num_attention_heads
            .as_ref()
            .unwrap_or(&self.attention_head_dim)
            .get(block)
    }

    /// Whether down block `block` has cross-attention.
    pub fn down_has_attention(&self, block: usize) -> bool {
        self.down_block_types
            .get(block)
            .is_some_and(|t| t == "CrossAttnDownBlock2D")
    }

    /// Whether up block `block` (deepest first) has cross-attention.
    pub fn up_has_attention(&self, block: usize) -> bool {
        self.up_block_types
            .get(block)
            .is_some_and(|t| t == "CrossAttnUpBlock2D")
    }
}

/// `vae/config.json` (diffusers `AutoencoderKL`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct VaeConfig {
    /// Image channels in.
    pub in_channels: usize,
    /// Image channels out.
    pub out_channels: usize,
    /// `DownEncoderBlock2D` per level.
    pub down_block_types: Vec<String>,
    /// `UpDecoderBlock2D` per level.
    pub up_block_types: Vec<String>,
    /// Channels per level.
    pub block_out_channels: Vec<usize>,
    /// Resnets per encoder block (decoder blocks have one more).
    pub layers_per_block: usize,
    /// Channels of the latent.
    pub latent_channels: usize,
    /// Groups of every group norm.
    pub norm_num_groups: usize,
    /// Image side the model was trained at.
    pub sample_size: usize,
    /// Factor applied to latents before the UNet sees them.
    pub scaling_factor: f64,
}

impl Default for VaeConfig {
    fn default() -> Self {
        VaeConfig {
            in_channels: 3,
            out_channels: 3,
            down_block_types: vec!["DownEncoderBlock2D".into()],
            up_block_types: vec!["UpDecoderBlock2D".into()],
            block_out_channels: vec![64],
            layers_per_block: 1,
            latent_channels: 4,
            norm_num_groups: 32,
            sample_size: 32,
            scaling_factor: 0.18215,
        }
    }
}

fn bad(path: &Path, field: &str, reason: impl Into<String>) -> WeightsError {
    WeightsError::Config {
        path: path.to_path_buf(),
        field: field.into(),
        reason: reason.into(),
    }
}

/// Parses a config from JSON text; a value of the wrong type names its field in the error.
pub(crate) fn parse_json<T: DeserializeOwned>(path: &Path, text: &str) -> Result<T, WeightsError> {
    let value: serde_json::Value =
        serde_json::from_str(text).map_err(|e| bad(path, "(file)", format!("not JSON: {e}")))?;
    parse_value(path, value)
}

/// Parses a config from a JSON value; see [`parse_json`].
pub(crate) fn parse_value<T: DeserializeOwned>(
    path: &Path,
    value: serde_json::Value,
) -> Result<T, WeightsError> {
    let serde_json::Value::Object(map) = value else {
        return Err(bad(path, "(file)", "not a JSON object"));
    };
    match serde_json::from_value(serde_json::Value::Object(map.clone())) {
        Ok(config) => Ok(config),
        Err(whole) => {
            for (key, v) in &map {
                let single = serde_json::json!({ key.clone(): v.clone() });
                if let Err(e) = serde_json::from_value::<T>(single) {
                    return Err(bad(path, key, e.to_string()));
                }
            }
            Err(bad(path, "(file)", whole.to_string()))
        }
    }
}

/// Reads and validates `config.json`-style file `path`.
pub(crate) fn read_config<T: DeserializeOwned>(path: &Path) -> Result<T, WeightsError> {
    let text = std::fs::read_to_string(path).map_err(|e| WeightsError::io(path, e))?;
    parse_json(path, &text)
}

fn positive(path: &Path, field: &str, v: usize) -> Result<(), WeightsError> {
    if v == 0 {
        Err(bad(path, field, "must be positive"))
    } else {
        Ok(())
    }
}

fn positive_f64(path: &Path, field: &str, v: f64) -> Result<(), WeightsError> {
    if v > 0.0 {
        Ok(())
    } else {
        Err(bad(path, field, "must be positive"))
    }
}

impl ClipTextConfig {
    /// Checks the values make a buildable model; `path` names the source in errors.
    pub fn validate(&self, path: &Path) -> Result<(), WeightsError> {
        positive(path, "vocab_size", self.vocab_size)?;
        positive(path, "hidden_size", self.hidden_size)?;
        positive(path, "intermediate_size", self.intermediate_size)?;
        positive(path, "num_attention_heads", self.num_attention_heads)?;
        positive(
            path,
            "max_position_embeddings",
            self.max_position_embeddings,
        )?;
        if !self.hidden_size.is_multiple_of(self.num_attention_heads) {
            return Err(bad(
                path,
                "num_attention_heads",
                format!("must divide hidden_size {}", self.hidden_size),
            ));
        }
        positive_f64(path, "layer_norm_eps", self.layer_norm_eps)
    }
}

fn check_groups(path: &Path, channels: &[usize], groups: usize) -> Result<(), WeightsError> {
    positive(path, "norm_num_groups", groups)?;
    if channels.is_empty() {
        return Err(bad(path, "block_out_channels", "must not be empty"));
    }
    if let Some(c) = channels
        .iter()
        .find(|&&c| c == 0 || !c.is_multiple_of(groups))
    {
        return Err(bad(
            path,
            "block_out_channels",
            format!("{c} is not a positive multiple of norm_num_groups {groups}"),
        ));
    }
    Ok(())
}

fn check_types(
    path: &Path,
    field: &str,
    types: &[String],
    n: usize,
    allowed: &[&str],
) -> Result<(), WeightsError> {
    if types.len() != n {
        return Err(bad(
            path,
            field,
            format!("has {} entries, block_out_channels has {n}", types.len()),
        ));
    }
    if let Some(t) = types.iter().find(|t| !allowed.contains(&t.as_str())) {
        return Err(bad(
            path,
            field,
            format!("unsupported block type `{t}` (supported: {allowed:?})"),
        ));
    }
    Ok(())
}

impl UNetConfig {
    /// Checks the values make a buildable model; `path` names the source in errors.
    pub fn validate(&self, path: &Path) -> Result<(), WeightsError> {
        let n = self.block_out_channels.len();
        check_groups(path, &self.block_out_channels, self.norm_num_groups)?;
        check_types(
            path,
            "down_block_types",
            &self.down_block_types,
            n,
            &["CrossAttnDownBlock2D", "DownBlock2D"],
        )?;
        check_types(
            path,
            "up_block_types",
            &self.up_block_types,
            n,
            &["CrossAttnUpBlock2D", "UpBlock2D"],
        )?;
        positive(path, "in_channels", self.in_channels)?;
        positive(path, "out_channels", self.out_channels)?;
        positive(path, "layers_per_block", self.layers_per_block)?;
        positive(path, "cross_attention_dim", self.cross_attention_dim)?;
        let field = if self.num_attention_heads.is_some() {
            "num_attention_heads"
        } else {
            "attention_head_dim"
        };
        if let PerBlock::Each(list) = self
            .num_attention_heads
            .as_ref()
            .unwrap_or(&self.attention_head_dim)
            && list.len() != n
        {
            return Err(bad(
                path,
                field,
                format!("has {} entries, block_out_channels has {n}", list.len()),
            ));
        }
        for (i, &c) in self.block_out_channels.iter().enumerate() {
            let heads = self.heads(i).unwrap_or(0);
            if heads == 0 || !c.is_multiple_of(heads) {
                return Err(bad(
                    path,
                    field,
                    format!("{heads} heads do not divide {c} channels of block {i}"),
                ));
            }
        }
        positive_f64(path, "norm_eps", self.norm_eps)
    }
}

impl VaeConfig {
    /// Checks the values make a buildable model; `path` names the source in errors.
    pub fn validate(&self, path: &Path) -> Result<(), WeightsError> {
        let n = self.block_out_channels.len();
        check_groups(path, &self.block_out_channels, self.norm_num_groups)?;
        check_types(
            path,
            "down_block_types",
            &self.down_block_types,
            n,
            &["DownEncoderBlock2D"],
        )?;
        check_types(
            path,
            "up_block_types",
            &self.up_block_types,
            n,
            &["UpDecoderBlock2D"],
        )?;
        positive(path, "in_channels", self.in_channels)?;
        positive(path, "out_channels", self.out_channels)?;
        positive(path, "layers_per_block", self.layers_per_block)?;
        positive(path, "latent_channels", self.latent_channels)?;
        positive_f64(path, "scaling_factor", self.scaling_factor)
    }
}
