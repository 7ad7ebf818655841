//! Inference of the diffusers configs of a single-file checkpoint from its tensor names and
//! shapes. What shapes cannot tell (attention heads, group-norm groups, sample sizes) follows
//! the Stable Diffusion rules: CLIP heads are 64 wide, SD 1 UNets have 8 heads, SD 2 UNet heads
//! are 64 wide, group norms have 32 groups.

use std::collections::BTreeSet;

use super::config::{ClipTextConfig, HiddenAct, PerBlock, UNetConfig, VaeConfig};
use super::single_file::{SD1_CLIP_PREFIX, SD2_CLIP_PREFIX, UNET_PREFIX, VAE_PREFIX};
use super::{SafetensorsFile, Variant, WeightsError};

fn need<'a>(file: &'a SafetensorsFile, name: &str) -> Result<&'a [usize], WeightsError> {
    file.shape(name).ok_or_else(|| {
        WeightsError::layout(
            file.path(),
            format!("cannot infer the architecture: no tensor `{name}`"),
        )
    })
}

fn dim(file: &SafetensorsFile, name: &str, axis: usize) -> Result<usize, WeightsError> {
    let shape = need(file, name)?;
    shape.get(axis).copied().ok_or_else(|| {
        WeightsError::layout(
            file.path(),
            format!("tensor `{name}` has shape {shape:?}, too few dimensions"),
        )
    })
}

/// Distinct values of the number following `prefix` in the file's names.
fn indices(file: &SafetensorsFile, prefix: &str) -> BTreeSet<usize> {
    file.names()
        .filter_map(|n| n.strip_prefix(prefix)?.split('.').next()?.parse().ok())
        .collect()
}

fn count(file: &SafetensorsFile, prefix: &str) -> usize {
    indices(file, prefix).last().map_or(0, |&m| m + 1)
}

/// The SD variant of a single file, told by its text encoder's key prefix.
pub fn detect_variant(file: &SafetensorsFile) -> Result<Variant, WeightsError> {
    if file.names().any(|n| n.starts_with(SD2_CLIP_PREFIX)) {
        Ok(Variant::Sd2)
    } else if file.names().any(|n| n.starts_with(SD1_CLIP_PREFIX)) {
        Ok(Variant::Sd1)
    } else {
        Err(WeightsError::layout(
            file.path(),
            "no text encoder (`cond_stage_model.`) tensors: not an SD 1.x/2.x checkpoint",
        ))
    }
}

/// Text encoder config from names and shapes; heads follow CLIP's head width of 64.
pub fn infer_clip(
    file: &SafetensorsFile,
    variant: Variant,
) -> Result<ClipTextConfig, WeightsError> {
    let (token, position, layers, fc1, act) = match variant {
        Variant::Sd1 => {
            let nested = format!("{SD1_CLIP_PREFIX}text_model.");
            let p = if file.names().any(|n| n.starts_with(&nested)) {
                nested
            } else {
                SD1_CLIP_PREFIX.to_string()
            };
            (
                format!("{p}embeddings.token_embedding.weight"),
                format!("{p}embeddings.position_embedding.weight"),
                count(file, &format!("{p}encoder.layers.")),
                format!("{p}encoder.layers.0.mlp.fc1.weight"),
                HiddenAct::QuickGelu,
            )
        }
        Variant::Sd2 => {
            let p = SD2_CLIP_PREFIX;
            let blocks = count(file, &format!("{p}transformer.resblocks."));
            if blocks < 2 {
                return Err(WeightsError::layout(
                    file.path(),
                    "OpenCLIP text encoder needs at least 2 resblocks",
                ));
            }
            (
                format!("{p}token_embedding.weight"),
                format!("{p}positional_embedding"),
                blocks - 1,
                format!("{p}transformer.resblocks.0.mlp.c_fc.weight"),
                HiddenAct::Gelu,
            )
        }
    };
    let hidden_size = dim(file, &token, 1)?;
    Ok(ClipTextConfig {
        vocab_size: dim(file, &token, 0)?,
        hidden_size,
        intermediate_size: dim(file, &fc1, 0)?,
        num_hidden_layers: layers,
        num_attention_heads: (hidden_size / 64).max(1),
        max_position_embeddings: dim(file, &position, 0)?,
        hidden_act: act,
        layer_norm_eps: 1e-5,
        pad_token_id: 1,
        bos_token_id: 0,
        eos_token_id: 2,
    })
}

/// UNet config from names and shapes; heads follow SD's rules (8 for SD 1, width 64 for SD 2).
pub fn infer_unet(file: &SafetensorsFile, variant: Variant) -> Result<UNetConfig, WeightsError> {
    let p = UNET_PREFIX;
    let inputs = indices(file, &format!("{p}input_blocks."));
    let first_down = inputs.iter().copied().find(|&k| {
        file.shape(&format!("{p}input_blocks.{k}.0.op.weight"))
            .is_some()
    });
    let top = inputs.last().copied().unwrap_or(0);
    let lpb = first_down.map_or(top, |k| k.saturating_sub(1));
    if lpb == 0 || (top + 1) % (lpb + 1) != 0 {
        return Err(WeightsError::layout(
            file.path(),
            "UNet input_blocks do not form whole levels",
        ));
    }
    let levels = (top + 1) / (lpb + 1);
    let mut channels = Vec::new();
    let (mut down, mut up) = (Vec::new(), Vec::new());
    let mut attn_proj = None;
    for i in 0..levels {
        let k = 1 + i * (lpb + 1);
        channels.push(dim(
            file,
            &format!("{p}input_blocks.{k}.0.out_layers.3.weight"),
            0,
        )?);
        let proj = format!("{p}input_blocks.{k}.1.proj_in.weight");
        down.push(
            if file.shape(&proj).is_some() {
                "CrossAttnDownBlock2D"
            } else {
                "DownBlock2D"
            }
            .to_string(),
        );
        let proj_up = format!("{p}output_blocks.{}.1.proj_in.weight", i * (lpb + 1));
        up.push(
            if file.shape(&proj_up).is_some() {
                "CrossAttnUpBlock2D"
            } else {
                "UpBlock2D"
            }
            .to_string(),
        );
    }
    let mid = format!("{p}middle_block.1.");
    if let Some(s) = file.shape(&format!("{mid}proj_in.weight")) {
        attn_proj = Some(s.len() == 2);
    }
    let attention_head_dim = match variant {
        Variant::Sd1 => PerBlock::All(8),
        Variant::Sd2 => PerBlock::Each(channels.iter().map(|c| (c / 64).max(1)).collect()),
    };
    let norm_num_groups = sd_groups(&channels);
    Ok(UNetConfig {
        norm_num_groups,
        sample_size: Some(match variant {
            Variant::Sd1 => 64,
            Variant::Sd2 => 96,
        }),
        in_channels: dim(file, &format!("{p}input_blocks.0.0.weight"), 1)?,
        out_channels: dim(file, &format!("{p}out.2.weight"), 0)?,
        down_block_types: down,
        up_block_types: up,
        block_out_channels: channels,
        layers_per_block: lpb,
        cross_attention_dim: dim(
            file,
            &format!("{mid}transformer_blocks.0.attn2.to_k.weight"),
            1,
        )?,
        attention_head_dim,
        use_linear_projection: attn_proj.unwrap_or(variant == Variant::Sd2),
        ..UNetConfig::default()
    })
}

/// SD's 32 group-norm groups, reduced to a divisor of every width for narrower models.
fn sd_groups(channels: &[usize]) -> usize {
    fn gcd(a: usize, b: usize) -> usize {
        if b == 0 { a } else { gcd(b, a % b) }
    }
    channels.iter().fold(32, |g, &c| gcd(g, c))
}

/// VAE config from names and shapes.
pub fn infer_vae(file: &SafetensorsFile, variant: Variant) -> Result<VaeConfig, WeightsError> {
    let p = VAE_PREFIX;
    let levels = count(file, &format!("{p}encoder.down."));
    if levels == 0 {
        return Err(WeightsError::layout(
            file.path(),
            "no VAE encoder blocks (`first_stage_model.encoder.down.N`)",
        ));
    }
    let channels = (0..levels)
        .map(|i| {
            dim(
                file,
                &format!("{p}encoder.down.{i}.block.0.conv1.weight"),
                0,
            )
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(VaeConfig {
        norm_num_groups: sd_groups(&channels),
        in_channels: dim(file, &format!("{p}encoder.conv_in.weight"), 1)?,
        out_channels: dim(file, &format!("{p}decoder.conv_out.weight"), 0)?,
        down_block_types: vec!["DownEncoderBlock2D".into(); levels],
        up_block_types: vec!["UpDecoderBlock2D".into(); levels],
        block_out_channels: channels,
        layers_per_block: count(file, &format!("{p}encoder.down.0.block.")),
        latent_channels: dim(file, &format!("{p}post_quant_conv.weight"), 0)?,
        sample_size: match variant {
            Variant::Sd1 => 512,
            Variant::Sd2 => 768,
        },
        ..VaeConfig::default()
    })
}
