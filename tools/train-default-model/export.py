"""Writing sdserve-shapes: a diffusers folder and an SD 1.x single-file checkpoint (f16).

The single file uses the original LDM key names (`cond_stage_model.transformer.`,
`model.diffusion_model.`, `first_stage_model.`), mapped from the diffusers names exactly as
`inference-server/src/model/weights/single_file.rs` maps them back, and carries the configs as
JSON under the `sdserve.config` metadata key (shapes alone cannot tell a tiny model's heads and
group counts).
"""

import gzip
import json
import os

import torch
from safetensors.torch import save_file

CONFIG_METADATA_KEY = "sdserve.config"
CLIP_PREFIX = "cond_stage_model.transformer."
UNET_PREFIX = "model.diffusion_model."
VAE_PREFIX = "first_stage_model."

RESNET = [
    ("norm1.", "in_layers.0."),
    ("conv1.", "in_layers.2."),
    ("time_emb_proj.", "emb_layers.1."),
    ("norm2.", "out_layers.0."),
    ("conv2.", "out_layers.3."),
    ("conv_shortcut.", "skip_connection."),
]


def _replace_prefix(rest, pairs):
    for a, b in pairs:
        if rest.startswith(a):
            return b + rest[len(a):]
    return rest


def _two(name, head, mid):
    """`head<i>.<mid><j>.rest` -> (i, j, rest), else None."""
    if not name.startswith(head):
        return None
    i, _, tail = name[len(head):].partition(".")
    if not tail.startswith(mid):
        return None
    j, _, rest = tail[len(mid):].partition(".")
    return int(i), int(j), rest


def unet_ldm_name(name, cfg):
    """LDM name (without prefix) of diffusers UNet parameter `name`."""
    step = cfg["layers_per_block"] + 1
    lpb = cfg["layers_per_block"]
    fixed = [
        ("conv_in.", "input_blocks.0.0."),
        ("time_embedding.linear_1.", "time_embed.0."),
        ("time_embedding.linear_2.", "time_embed.2."),
        ("conv_norm_out.", "out.0."),
        ("conv_out.", "out.2."),
        ("mid_block.resnets.0.", "middle_block.0."),
        ("mid_block.attentions.0.", "middle_block.1."),
        ("mid_block.resnets.1.", "middle_block.2."),
    ]
    for a, b in fixed:
        if name.startswith(a):
            rest = name[len(a):]
            return b + (_replace_prefix(rest, RESNET) if "resnets" in a else rest)
    if m := _two(name, "down_blocks.", "resnets."):
        return f"input_blocks.{1 + m[0] * step + m[1]}.0.{_replace_prefix(m[2], RESNET)}"
    if m := _two(name, "down_blocks.", "attentions."):
        return f"input_blocks.{1 + m[0] * step + m[1]}.1.{m[2]}"
    if m := _two(name, "down_blocks.", "downsamplers."):
        rest = m[2][len("conv."):] if m[2].startswith("conv.") else m[2]
        return f"input_blocks.{1 + m[0] * step + lpb}.0.op.{rest}"
    if m := _two(name, "up_blocks.", "resnets."):
        return f"output_blocks.{m[0] * step + m[1]}.0.{_replace_prefix(m[2], RESNET)}"
    if m := _two(name, "up_blocks.", "attentions."):
        return f"output_blocks.{m[0] * step + m[1]}.1.{m[2]}"
    if m := _two(name, "up_blocks.", "upsamplers."):
        slot = 2 if cfg["up_block_types"][m[0]] == "CrossAttnUpBlock2D" else 1
        return f"output_blocks.{m[0] * step + lpb}.{slot}.{m[2]}"
    return name


def vae_ldm_name(name, cfg):
    """LDM name (without prefix) of diffusers VAE parameter `name`."""
    n = len(cfg["block_out_channels"])
    side, _, rest = name.partition(".")
    if not rest:
        return name
    res = [("conv_shortcut.", "nin_shortcut.")]
    attn = [("group_norm.", "norm."), ("to_q.", "q."), ("to_k.", "k."), ("to_v.", "v."),
            ("to_out.0.", "proj_out.")]
    if rest.startswith("mid_block.resnets.0."):
        mapped = "mid.block_1." + _replace_prefix(rest[len("mid_block.resnets.0."):], res)
    elif rest.startswith("mid_block.resnets.1."):
        mapped = "mid.block_2." + _replace_prefix(rest[len("mid_block.resnets.1."):], res)
    elif rest.startswith("mid_block.attentions.0."):
        mapped = "mid.attn_1." + _replace_prefix(rest[len("mid_block.attentions.0."):], attn)
    elif rest.startswith("conv_norm_out."):
        mapped = "norm_out." + rest[len("conv_norm_out."):]
    elif m := _two(rest, "down_blocks.", "resnets."):
        mapped = f"down.{m[0]}.block.{m[1]}.{_replace_prefix(m[2], res)}"
    elif m := _two(rest, "down_blocks.", "downsamplers."):
        mapped = f"down.{m[0]}.downsample.{m[2]}"
    elif m := _two(rest, "up_blocks.", "resnets."):
        mapped = f"up.{n - 1 - m[0]}.block.{m[1]}.{_replace_prefix(m[2], res)}"
    elif m := _two(rest, "up_blocks.", "upsamplers."):
        mapped = f"up.{n - 1 - m[0]}.upsample.{m[2]}"
    else:
        mapped = rest
    return f"{side}.{mapped}"


def clip_state(text_encoder):
    """The text encoder's tensors under transformers' published `text_model.` names."""
    out = {}
    for k, v in text_encoder.state_dict().items():
        out[k if k.startswith("text_model.") else "text_model." + k] = v
    return out


def rust_configs(text_encoder, unet, vae, scheduler):
    """The `sdserve.config` JSON: the fields our Rust loader reads from each component."""
    t = text_encoder.config
    clip = {
        "vocab_size": t.vocab_size, "hidden_size": t.hidden_size,
        "intermediate_size": t.intermediate_size, "num_hidden_layers": t.num_hidden_layers,
        "num_attention_heads": t.num_attention_heads,
        "max_position_embeddings": t.max_position_embeddings, "hidden_act": t.hidden_act,
        "layer_norm_eps": t.layer_norm_eps, "pad_token_id": t.pad_token_id,
        "bos_token_id": t.bos_token_id, "eos_token_id": t.eos_token_id,
    }
    u = dict(unet.config)
    unet_keys = ["sample_size", "in_channels", "out_channels", "flip_sin_to_cos", "freq_shift",
                 "down_block_types", "up_block_types", "block_out_channels", "layers_per_block",
                 "cross_attention_dim", "attention_head_dim", "use_linear_projection",
                 "norm_num_groups", "norm_eps"]
    v = dict(vae.config)
    vae_keys = ["in_channels", "out_channels", "down_block_types", "up_block_types",
                "block_out_channels", "layers_per_block", "latent_channels", "norm_num_groups",
                "sample_size", "scaling_factor"]
    s = dict(scheduler.config)
    sched_keys = ["num_train_timesteps", "beta_start", "beta_end", "beta_schedule",
                  "prediction_type", "steps_offset", "timestep_spacing", "set_alpha_to_one",
                  "clip_sample"]
    sched = {k: s.get(k, False) for k in sched_keys}
    sched["_class_name"] = "PNDMScheduler"
    conv = lambda d, keys: {k: list(d[k]) if isinstance(d[k], tuple) else d[k] for k in keys}
    return {"text_encoder": clip, "unet": conv(u, unet_keys), "vae": conv(v, vae_keys),
            "scheduler": sched}


def write_single_file(path, text_encoder, unet, vae, scheduler, license_name):
    """Writes the f16 single-file checkpoint; returns its size in bytes."""
    tensors = {}
    for k, v in clip_state(text_encoder).items():
        tensors[CLIP_PREFIX + k] = v
    ucfg = dict(unet.config)
    for k, v in unet.state_dict().items():
        tensors[UNET_PREFIX + unet_ldm_name(k, ucfg)] = v
    vcfg = dict(vae.config)
    for k, v in vae.state_dict().items():
        if "mid_block.attentions.0.to_" in k and k.endswith(".weight"):
            v = v.reshape(*v.shape, 1, 1)
        tensors[VAE_PREFIX + vae_ldm_name(k, vcfg)] = v
    tensors = {k: v.detach().to(torch.float16).contiguous() for k, v in tensors.items()}
    meta = {
        "format": "pt",
        CONFIG_METADATA_KEY: json.dumps(rust_configs(text_encoder, unet, vae, scheduler)),
        "modelspec.title": "sdserve-shapes",
        "modelspec.license": license_name,
    }
    save_file(tensors, path, metadata=meta)
    return os.path.getsize(path)


def _bytes_to_unicode():
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + \
        list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, [chr(c) for c in cs]))


def write_tokenizer(folder, bpe_gz):
    """CLIP's vocab.json and merges.txt built from the BPE merges file (as OpenAI's
    simple_tokenizer does), with SD 1.x's tokenizer configs (pads with <|endoftext|>)."""
    os.makedirs(folder, exist_ok=True)
    merges = gzip.open(bpe_gz).read().decode("utf-8").split("\n")[1:49152 - 256 - 2 + 1]
    vocab = list(_bytes_to_unicode().values())
    vocab = vocab + [v + "</w>" for v in vocab]
    vocab += ["".join(m.split()) for m in merges]
    vocab += ["<|startoftext|>", "<|endoftext|>"]
    with open(os.path.join(folder, "vocab.json"), "w", encoding="utf-8") as f:
        json.dump({t: i for i, t in enumerate(vocab)}, f, ensure_ascii=False)
    with open(os.path.join(folder, "merges.txt"), "w", encoding="utf-8") as f:
        f.write("#version: 0.2\n" + "\n".join(merges) + "\n")
    special = {"bos_token": "<|startoftext|>", "eos_token": "<|endoftext|>",
               "pad_token": "<|endoftext|>", "unk_token": "<|endoftext|>"}
    with open(os.path.join(folder, "special_tokens_map.json"), "w") as f:
        json.dump(special, f, indent=2)
    cfg = dict(special, add_prefix_space=False, do_lower_case=True, errors="replace",
               model_max_length=77, tokenizer_class="CLIPTokenizer")
    with open(os.path.join(folder, "tokenizer_config.json"), "w") as f:
        json.dump(cfg, f, indent=2)
