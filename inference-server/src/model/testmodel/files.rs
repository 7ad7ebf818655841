//! The JSON side files of a diffusers folder: model index, component configs, tokenizer and
//! scheduler settings.

use std::path::Path;

use serde::Serialize;
use serde_json::{Value, json};

use crate::model::tokenizer::Tokenizer;
use crate::model::weights::{Variant, WeightsError};
use crate::sampling::SchedulerConfig;

/// Writes `value` as pretty JSON to `path`.
pub fn write_json(path: &Path, value: &Value) -> Result<(), WeightsError> {
    let text = serde_json::to_string_pretty(value)
        .map_err(|e| WeightsError::io(path, std::io::Error::other(e)))?;
    std::fs::write(path, text + "\n").map_err(|e| WeightsError::io(path, e))
}

/// `config` serialized, with `extra` keys added.
pub fn config_json(config: &impl Serialize, extra: Value) -> Value {
    let mut v = serde_json::to_value(config).unwrap_or(Value::Null);
    if let (Value::Object(map), Value::Object(more)) = (&mut v, extra) {
        map.extend(more);
    }
    v
}

/// `model_index.json` of a `StableDiffusionPipeline`.
pub fn model_index() -> Value {
    json!({
        "_class_name": "StableDiffusionPipeline",
        "_diffusers_version": "0.30.0",
        "feature_extractor": [null, null],
        "requires_safety_checker": false,
        "safety_checker": [null, null],
        "image_encoder": [null, null],
        "scheduler": ["diffusers", "PNDMScheduler"],
        "text_encoder": ["transformers", "CLIPTextModel"],
        "tokenizer": ["transformers", "CLIPTokenizer"],
        "unet": ["diffusers", "UNet2DConditionModel"],
        "vae": ["diffusers", "AutoencoderKL"]
    })
}

/// SD 1.5's scheduler settings (PNDM, scaled-linear betas, epsilon prediction).
pub fn scheduler_config() -> Value {
    let extra =
        json!({ "_diffusers_version": "0.30.0", "skip_prk_steps": true, "trained_betas": null });
    config_json(&SchedulerConfig::default(), extra)
}

/// Writes `vocab.json`, `merges.txt` and the configs transformers' `CLIPTokenizer` reads.
/// SD 2 pads with `!` (id 0), SD 1 with `<|endoftext|>`.
pub fn write_tokenizer(dir: &Path, variant: Variant) -> Result<(), WeightsError> {
    std::fs::create_dir_all(dir).map_err(|e| WeightsError::io(dir, e))?;
    Tokenizer::builtin()
        .write_files(dir)
        .map_err(|e| WeightsError::io(dir, std::io::Error::other(e.to_string())))?;
    let pad = match variant {
        Variant::Sd1 => "<|endoftext|>",
        Variant::Sd2 => "!",
    };
    let special = json!({
        "bos_token": "<|startoftext|>",
        "eos_token": "<|endoftext|>",
        "pad_token": pad,
        "unk_token": "<|endoftext|>"
    });
    let mut config = special.clone();
    if let Value::Object(map) = &mut config {
        map.extend(
            json!({
                "add_prefix_space": false,
                "do_lower_case": true,
                "errors": "replace",
                "model_max_length": 77,
                "tokenizer_class": "CLIPTokenizer"
            })
            .as_object()
            .cloned()
            .unwrap_or_default(),
        );
    }
    write_json(&dir.join("special_tokens_map.json"), &special)?;
    write_json(&dir.join("tokenizer_config.json"), &config)
}
