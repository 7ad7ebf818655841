//! Full-size Stable Diffusion shapes: the published configs and single files that hold only a
//! header (their data section is a sparse run of zeros), to test loading real-size checkpoints
//! without their gigabytes.

use std::collections::BTreeMap;
use std::path::Path;

use crate::model::weights::config::{ClipTextConfig, HiddenAct, PerBlock, UNetConfig, VaeConfig};
use crate::model::weights::{StoredDType, Variant, WeightsError};

use super::single_file_params;

/// The diffusers configs of SD 1.5 (`Sd1`) and SD 2.1 768-v (`Sd2`) as published.
pub fn published_configs(variant: Variant) -> (ClipTextConfig, UNetConfig, VaeConfig) {
    let sd2 = variant == Variant::Sd2;
    let clip = ClipTextConfig {
        hidden_size: if sd2 { 1024 } else { 768 },
        intermediate_size: if sd2 { 4096 } else { 3072 },
        num_hidden_layers: if sd2 { 23 } else { 12 },
        num_attention_heads: if sd2 { 16 } else { 12 },
        hidden_act: if sd2 {
            HiddenAct::Gelu
        } else {
            HiddenAct::QuickGelu
        },
        pad_token_id: 1,
        bos_token_id: 0,
        eos_token_id: 2,
        ..ClipTextConfig::default()
    };
    let unet = UNetConfig {
        sample_size: Some(if sd2 { 96 } else { 64 }),
        cross_attention_dim: if sd2 { 1024 } else { 768 },
        attention_head_dim: if sd2 {
            PerBlock::Each(vec![5, 10, 20, 20])
        } else {
            PerBlock::All(8)
        },
        use_linear_projection: sd2,
        ..UNetConfig::default()
    };
    let vae = VaeConfig {
        down_block_types: vec!["DownEncoderBlock2D".into(); 4],
        up_block_types: vec!["UpDecoderBlock2D".into(); 4],
        block_out_channels: vec![128, 256, 512, 512],
        layers_per_block: 2,
        sample_size: if sd2 { 768 } else { 512 },
        ..VaeConfig::default()
    };
    (clip, unet, vae)
}

/// Entries real single files carry besides the networks' parameters (name, dtype, shape).
fn extras(variant: Variant) -> Vec<(&'static str, &'static str, Vec<usize>)> {
    match variant {
        Variant::Sd1 => vec![
            (
                "cond_stage_model.transformer.text_model.embeddings.position_ids",
                "I64",
                vec![1, 77],
            ),
            ("alphas_cumprod", "F32", vec![1000]),
            ("model_ema.decay", "F32", vec![]),
        ],
        Variant::Sd2 => vec![
            (
                "cond_stage_model.model.text_projection",
                "F32",
                vec![1024, 1024],
            ),
            ("cond_stage_model.model.logit_scale", "F32", vec![]),
        ],
    }
}

/// Writes a single file of `variant` with these configs, with the original key names plus the
/// non-parameter entries real files have, and no `sdserve.config`: a header followed by a sparse
/// zero data section (no disk blocks on file systems with holes).
pub fn write_header_only_single_file(
    path: &Path,
    variant: Variant,
    configs: &(ClipTextConfig, UNetConfig, VaeConfig),
    dtype: StoredDType,
) -> Result<(), WeightsError> {
    let (clip, unet, vae) = configs;
    let mut tensors: BTreeMap<String, (&str, usize, Vec<usize>)> = BTreeMap::new();
    for (_, _, source) in single_file_params(variant, clip, unet, vae) {
        tensors.insert(source.name, (dtype.name(), dtype.size(), source.shape));
    }
    for (name, dtype, shape) in extras(variant) {
        let size = if dtype == "I64" { 8 } else { 4 };
        tensors.insert(name.to_string(), (dtype, size, shape));
    }
    let mut header = serde_json::Map::new();
    let mut offset = 0usize;
    for (name, (dtype, size, shape)) in tensors {
        let end = offset + size * shape.iter().product::<usize>();
        let entry =
            serde_json::json!({ "dtype": dtype, "shape": shape, "data_offsets": [offset, end] });
        header.insert(name, entry);
        offset = end;
    }
    let text = serde_json::Value::Object(header).to_string();
    let mut bytes = (text.len() as u64).to_le_bytes().to_vec();
    bytes.extend_from_slice(text.as_bytes());
    let io = |e| WeightsError::io(path, e);
    std::fs::write(path, &bytes).map_err(io)?;
    let file = std::fs::OpenOptions::new()
        .write(true)
        .open(path)
        .map_err(io)?;
    file.set_len((bytes.len() + offset) as u64).map_err(io)
}
