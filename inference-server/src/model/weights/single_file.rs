//! Original (CompVis / Stability) key names of single-file SD 1.x / 2.x checkpoints: where each
//! diffusers parameter lives in such a file.

use std::ops::Range;

use super::Variant;
use super::config::{UNetConfig, VaeConfig};

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
