//! AUTOMATIC1111 txt2img/img2img JSON payloads, as callers and vendors (RunPod, Cerebrium) send them.

use base64::Engine;
use sdserve_proto::v1::GenerationParams;
use serde::Deserialize;

use crate::api::validate::FieldError;

/// The A1111 fields sdserve understands; others (restore_faces, enable_hr, ...) are ignored.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct A1111Payload {
    /// Prompt.
    pub prompt: String,
    /// Negative prompt.
    pub negative_prompt: String,
    /// Seed, -1 for random.
    pub seed: Option<i64>,
    /// Variation seed.
    pub subseed: Option<i64>,
    /// Variation strength.
    pub subseed_strength: Option<f32>,
    /// Images per batch.
    pub batch_size: Option<u32>,
    /// Batches.
    pub n_iter: Option<u32>,
    /// Sampling steps.
    pub steps: Option<u32>,
    /// Guidance scale.
    pub cfg_scale: Option<f32>,
    /// Width.
    pub width: Option<u32>,
    /// Height.
    pub height: Option<u32>,
    /// Sampler name.
    pub sampler_name: Option<String>,
    /// Older spelling of the sampler name.
    pub sampler_index: Option<String>,
    /// Schedule type.
    pub scheduler: Option<String>,
    /// img2img strength.
    pub denoising_strength: Option<f32>,
    /// img2img: base64 images (optionally data URLs); the first is used.
    pub init_images: Vec<String>,
    /// CLIP skip (also read from `override_settings.CLIP_stop_at_last_layers`).
    pub clip_skip: Option<u32>,
    /// Styles.
    pub styles: Option<Vec<String>>,
    /// A1111 settings overrides; `sd_model_checkpoint` selects the model.
    pub override_settings: Option<serde_json::Map<String, serde_json::Value>>,
}

impl A1111Payload {
    /// Converts to the protobuf parameters; `field` prefixes error paths (e.g. `input.payload`).
    pub fn into_params(self, field: &str) -> Result<GenerationParams, FieldError> {
        let overrides = self.override_settings.unwrap_or_default();
        let model = overrides
            .get("sd_model_checkpoint")
            .and_then(|v| v.as_str())
            .unwrap_or_default();
        let clip_skip = self.clip_skip.or_else(|| {
            overrides
                .get("CLIP_stop_at_last_layers")
                .and_then(|v| v.as_u64())
                .and_then(|v| u32::try_from(v).ok())
        });
        let init_image = match self.init_images.first() {
            None => Vec::new(),
            Some(data) => {
                let b64 = data
                    .split_once(";base64,")
                    .map_or(data.as_str(), |(_, b)| b);
                base64::engine::general_purpose::STANDARD
                    .decode(b64.trim())
                    .map_err(|e| FieldError {
                        field: format!("{field}.init_images[0]"),
                        rule: format!("must be base64 image data ({e})"),
                    })?
            }
        };
        Ok(GenerationParams {
            prompt: self.prompt,
            negative_prompt: self.negative_prompt,
            seed: self.seed,
            subseed: self.subseed,
            subseed_strength: self.subseed_strength,
            batch_size: self.batch_size,
            n_iter: self.n_iter,
            steps: self.steps,
            cfg_scale: self.cfg_scale,
            width: self.width,
            height: self.height,
            sampler_name: self.sampler_name.or(self.sampler_index).unwrap_or_default(),
            scheduler: self.scheduler.unwrap_or_default(),
            denoising_strength: self.denoising_strength,
            init_image,
            clip_skip,
            model: model.to_owned(),
            styles: self.styles.unwrap_or_default(),
        })
    }
}
