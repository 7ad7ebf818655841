//! Original (CompVis / Stability) key names of single-file SD 1.x / 2.x checkpoints: the mapping
//! from each diffusers parameter to where it lives in such a file, and the inference of the
//! diffusers configs from the names and shapes a file holds.

use std::collections::BTreeSet;
use std::ops::Range;

use super::config::{ClipTextConfig, HiddenAct, PerBlock, UNetConfig, VaeConfig};
use super::{SafetensorsFile, Variant, WeightsError};

/// Prefix of the SD 1.x text encoder (transformers' CLIP inside the LDM wrapper).
pub const SD1_CLIP_PREFIX: &str = "cond_stage_model.transformer.";
/// Prefix of the SD 2.x text encoder (OpenCLIP).
pub const SD2_CLIP_PREFIX: &str = "cond_stage_model.model.";
/// Prefix of the UNet.
pub const UNET_PREFIX: &str = "model.diffusion_model.";
/// Prefix of the VAE.
pub const VAE_PREFIX: &str = "first_stage_model.";

/// Where one diffusers parameter is stored in a single-file checkpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Source {
    /// The original tensor name.
    pub name: String,
    /// Rows along dimension 0 of that tensor (a third of a fused q/k/v projection).
    pub rows: Option<Range<usize>>,
    /// Shape of the original tensor.
    pub shape: Vec<usize>,
}

fn resnet_ldm(rest: &str) -> String {
    let pairs = [
        ("norm1.", "in_layers.0."),
        ("conv1.", "in_layers.2."),
        ("time_emb_proj.", "emb_layers.1."),
        ("norm2.", "out_layers.0."),
        ("conv2.", "out_layers.3."),
        ("conv_shortcut.", "skip_connection."),
    ];
    replace_prefix(rest, &pairs)
}

fn replace_prefix(rest: &str, pairs: &[(&str, &str)]) -> String {
    for (from, to) in pairs {
        if let Some(tail) = rest.strip_prefix(from) {
            return format!("{to}{tail}");
        }
    }
    rest.to_string()
}

/// Splits `a.<i>.b.<j>.rest` into (i, j, rest) after `head`.
fn two_indices<'a>(name: &'a str, head: &str, mid: &str) -> Option<(usize, usize, &'a str)> {
    let tail = name.strip_prefix(head)?;
    let (i, tail) = tail.split_once('.')?;
    let tail = tail.strip_prefix(mid)?;
    let (j, rest) = tail.split_once('.')?;
    Some((i.parse().ok()?, j.parse().ok()?, rest))
}

/// Original name (without [`UNET_PREFIX`]) of UNet parameter `name`.
pub fn unet_source(name: &str, c: &UNetConfig) -> String {
    let step = c.layers_per_block + 1;
    let fixed = [
        ("conv_in.", "input_blocks.0.0."),
        ("time_embedding.linear_1.", "time_embed.0."),
        ("time_embedding.linear_2.", "time_embed.2."),
        ("conv_norm_out.", "out.0."),
        ("conv_out.", "out.2."),
        ("mid_block.resnets.0.", "middle_block.0."),
        ("mid_block.attentions.0.", "middle_block.1."),
        ("mid_block.resnets.1.", "middle_block.2."),
    ];
    for (from, to) in fixed {
        if let Some(rest) = name.strip_prefix(from) {
            let rest = if from.contains("resnets") {
                resnet_ldm(rest)
            } else {
                rest.to_string()
            };
            return format!("{to}{rest}");
        }
    }
    if let Some((i, j, rest)) = two_indices(name, "down_blocks.", "resnets.") {
        return format!("input_blocks.{}.0.{}", 1 + i * step + j, resnet_ldm(rest));
    }
    if let Some((i, j, rest)) = two_indices(name, "down_blocks.", "attentions.") {
        return format!("input_blocks.{}.1.{rest}", 1 + i * step + j);
    }
    if let Some((i, _, rest)) = two_indices(name, "down_blocks.", "downsamplers.") {
        let rest = rest.strip_prefix("conv.").unwrap_or(rest);
        return format!(
            "input_blocks.{}.0.op.{rest}",
            1 + i * step + c.layers_per_block
        );
    }
    if let Some((i, j, rest)) = two_indices(name, "up_blocks.", "resnets.") {
        return format!("output_blocks.{}.0.{}", i * step + j, resnet_ldm(rest));
    }
    if let Some((i, j, rest)) = two_indices(name, "up_blocks.", "attentions.") {
        return format!("output_blocks.{}.1.{rest}", i * step + j);
    }
    if let Some((i, _, rest)) = two_indices(name, "up_blocks.", "upsamplers.") {
        let slot = if c.up_has_attention(i) { 2 } else { 1 };
        return format!(
            "output_blocks.{}.{slot}.{rest}",
            i * step + c.layers_per_block
        );
    }
    name.to_string()
}

/// Original name (without [`VAE_PREFIX`]) of VAE parameter `name`.
pub fn vae_source(name: &str, c: &VaeConfig) -> String {
    let n = c.block_out_channels.len();
    let Some((side, rest)) = name.split_once('.') else {
        return name.to_string();
    };
    let resnet = |r: &str| replace_prefix(r, &[("conv_shortcut.", "nin_shortcut.")]);
    let mapped = if let Some(r) = rest.strip_prefix("mid_block.resnets.0.") {
        format!("mid.block_1.{}", resnet(r))
    } else if let Some(r) = rest.strip_prefix("mid_block.resnets.1.") {
        format!("mid.block_2.{}", resnet(r))
    } else if let Some(r) = rest.strip_prefix("mid_block.attentions.0.") {
        let pairs = [
            ("group_norm.", "norm."),
            ("to_q.", "q."),
            ("to_k.", "k."),
            ("to_v.", "v."),
            ("to_out.0.", "proj_out."),
        ];
        format!("mid.attn_1.{}", replace_prefix(r, &pairs))
    } else if let Some(r) = rest.strip_prefix("conv_norm_out.") {
        format!("norm_out.{r}")
    } else if let Some((i, j, r)) = two_indices(rest, "down_blocks.", "resnets.") {
        format!("down.{i}.block.{j}.{}", resnet(r))
    } else if let Some((i, _, r)) = two_indices(rest, "down_blocks.", "downsamplers.") {
        format!("down.{i}.downsample.{r}")
    } else if let Some((i, j, r)) = two_indices(rest, "up_blocks.", "resnets.") {
        format!("up.{}.block.{j}.{}", n.saturating_sub(1 + i), resnet(r))
    } else if let Some((i, _, r)) = two_indices(rest, "up_blocks.", "upsamplers.") {
        format!("up.{}.upsample.{r}", n.saturating_sub(1 + i))
    } else {
        rest.to_string()
    };
    format!("{side}.{mapped}")
}

/// Where CLIP parameter `name` (with `shape`) lives in a single file of `variant`.
pub fn clip_source(name: &str, shape: &[usize], variant: Variant) -> Source {
    let plain = |n: String| Source {
        name: n,
        rows: None,
        shape: shape.to_vec(),
    };
    let Variant::Sd2 = variant else {
        return plain(format!("{SD1_CLIP_PREFIX}{name}"));
    };
    let p = SD2_CLIP_PREFIX;
    let rest = name.strip_prefix("text_model.").unwrap_or(name);
    match rest {
        "embeddings.token_embedding.weight" => return plain(format!("{p}token_embedding.weight")),
        "embeddings.position_embedding.weight" => return plain(format!("{p}positional_embedding")),
        _ => {}
    }
    if let Some(r) = rest.strip_prefix("final_layer_norm.") {
        return plain(format!("{p}ln_final.{r}"));
    }
    let Some((layer, r)) = rest
        .strip_prefix("encoder.layers.")
        .and_then(|t| t.split_once('.'))
    else {
        return plain(format!("{p}{rest}"));
    };
    let block = format!("{p}transformer.resblocks.{layer}");
    for (k, proj) in ["q_proj.", "k_proj.", "v_proj."].iter().enumerate() {
        if let Some(kind) = r
            .strip_prefix("self_attn.")
            .and_then(|s| s.strip_prefix(proj))
        {
            let h = shape.first().copied().unwrap_or(0);
            let mut full = shape.to_vec();
            if let Some(d) = full.first_mut() {
                *d *= 3;
            }
            return Source {
                name: format!("{block}.attn.in_proj_{kind}"),
                rows: Some(k * h..(k + 1) * h),
                shape: full,
            };
        }
    }
    let pairs = [
        ("self_attn.out_proj.", "attn.out_proj."),
        ("layer_norm1.", "ln_1."),
        ("layer_norm2.", "ln_2."),
        ("mlp.fc1.", "mlp.c_fc."),
        ("mlp.fc2.", "mlp.c_proj."),
    ];
    plain(format!("{block}.{}", replace_prefix(r, &pairs)))
}

/// Where UNet or VAE parameter `name` (with `shape`) lives: VAE attention projections are
/// stored as 1×1 convolutions.
pub fn unet_full_source(name: &str, shape: &[usize], c: &UNetConfig) -> Source {
    Source {
        name: format!("{UNET_PREFIX}{}", unet_source(name, c)),
        rows: None,
        shape: shape.to_vec(),
    }
}

/// See [`unet_full_source`].
pub fn vae_full_source(name: &str, shape: &[usize], c: &VaeConfig) -> Source {
    let mut full = shape.to_vec();
    if name.contains("mid_block.attentions.0.to_") && name.ends_with(".weight") {
        full.extend([1, 1]);
    }
    Source {
        name: format!("{VAE_PREFIX}{}", vae_source(name, c)),
        rows: None,
        shape: full,
    }
}

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
    let lpb = first_down.map_or(top, |k| k - 1);
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
