//! Parsing configs with errors that name the offending field, and checking that their values
//! make a buildable model.

use std::path::Path;

use serde::de::DeserializeOwned;

use super::WeightsError;
use super::config::{ClipTextConfig, PerBlock, UNetConfig, VaeConfig};
use crate::sampling::SchedulerConfig;

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
        let single = |p: &PerBlock| match p {
            PerBlock::All(v) => *v == 1,
            PerBlock::Each(v) => v.iter().all(|&x| x == 1),
        };
        if let Some(layers) = &self.transformer_layers_per_block
            && !single(layers)
        {
            let reason = "only 1 transformer block per attention (SD 1.x / 2.x) is supported";
            return Err(bad(path, "transformer_layers_per_block", reason));
        }
        for (field, value) in [
            ("addition_embed_type", &self.addition_embed_type),
            ("class_embed_type", &self.class_embed_type),
        ] {
            if let Some(kind) = value {
                let reason = format!("`{kind}` conditioning (SDXL, upscalers) is not supported");
                return Err(bad(path, field, reason));
            }
        }
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

/// Checks a scheduler config the samplers can use; `path` names the source in errors.
pub(crate) fn check_scheduler(config: &SchedulerConfig, path: &Path) -> Result<(), WeightsError> {
    config.check().map_err(|e| bad(path, e.field, e.reason))
}
