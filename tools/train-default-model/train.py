"""Trains sdserve-shapes, the model built into inference-server, and writes it.

    python train.py --out /tmp/sdserve-shapes --threads 1   # about 70 minutes on 2 CPU cores

Steps: draw the data set (data.py), train the VAE (reconstruction + small KL), encode the data
set, train the CLIP text encoder jointly with the UNet (epsilon prediction, SD 1.x's schedule,
10% empty captions for classifier-free guidance), evaluate on held-out combinations (evaluate.py)
and write a diffusers folder and the f16 single file (export.py). A seed fixes everything.
"""

import argparse
import json
import math
import os
import random
import time

import numpy as np
import torch
import torch.nn.functional as F
from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

import data
import evaluate
import export

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
BPE = os.path.join(REPO, "inference-server", "data", "bpe_simple_vocab_16e6.txt.gz")
LICENSE = "Apache-2.0"  # the workspace's license (Cargo.toml); the weights are released under it


def log(msg):
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def build_models():
    text_encoder = CLIPTextModel(CLIPTextConfig(
        vocab_size=49408, hidden_size=64, intermediate_size=256, num_hidden_layers=3,
        num_attention_heads=4, max_position_embeddings=77, hidden_act="quick_gelu",
        projection_dim=64, pad_token_id=1, bos_token_id=49406, eos_token_id=49407))
    unet = UNet2DConditionModel(
        sample_size=8, in_channels=4, out_channels=4,
        down_block_types=("CrossAttnDownBlock2D",) * 3, up_block_types=("CrossAttnUpBlock2D",) * 3,
        block_out_channels=(32, 64, 64), layers_per_block=1, cross_attention_dim=64,
        attention_head_dim=4, norm_num_groups=8)
    vae = AutoencoderKL(
        in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4, block_out_channels=(16, 32, 64, 64),
        layers_per_block=1, latent_channels=4, norm_num_groups=8, sample_size=64)
    scheduler = DDPMScheduler(num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012,
                              beta_schedule="scaled_linear", prediction_type="epsilon",
                              steps_offset=1, timestep_spacing="leading", clip_sample=False)
    return text_encoder, unet, vae, scheduler


def to_tensor(images):
    return torch.from_numpy(images).permute(0, 3, 1, 2).float().div(127.5).sub(1.0)


def lr_at(step, total, peak, warmup):
    if step < warmup:
        return peak * (step + 1) / warmup
    p = (step - warmup) / max(1, total - warmup)
    return peak * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * p)))


def shape_weights(x, weight):
    """Per-pixel loss weights: `weight` on pixels that differ from the image's background (its
    per-channel median, since a shape covers well under half of an image), 1 elsewhere. A plain
    MSE is dominated by the background: a VAE trained on it reconstructs the background
    exactly and the shape as a dim blob of mixed colour, which is what the first runs did."""
    bg = x.flatten(2).median(dim=2).values[:, :, None, None]
    mask = ((x - bg).abs().amax(dim=1, keepdim=True) > 0.1).float()
    return 1.0 + (weight - 1.0) * mask


def train_vae(vae, images, steps, batch, gen, peak=5e-4):
    opt = torch.optim.AdamW(vae.parameters(), lr=peak, weight_decay=0.0)
    vae.train()
    t0 = time.time()
    for step in range(steps):
        for g in opt.param_groups:
            g["lr"] = lr_at(step, steps, peak, 100)
        idx = torch.randint(0, len(images), (batch,), generator=gen)
        x = to_tensor(images[idx.numpy()])
        post = vae.encode(x).latent_dist
        z = post.mean + post.std * torch.randn(post.mean.shape, generator=gen)
        rec = vae.decode(z).sample
        w = shape_weights(x, 10.0)
        mse = (w * (rec - x) ** 2).mean() / w.mean()
        kl = post.kl().mean() / z[0].numel()
        loss = mse + 1e-4 * kl
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(vae.parameters(), 1.0)
        opt.step()
        if step % 100 == 0 or step == steps - 1:
            log(f"vae step {step}/{steps} weighted mse {mse.item():.5f} kl {kl.item():.3f} "
                f"({time.time() - t0:.0f} s)")
    vae.eval()


@torch.no_grad()
def encode_pool(vae, images):
    means, stds = [], []
    for i in range(0, len(images), 256):
        post = vae.encode(to_tensor(images[i:i + 256])).latent_dist
        means.append(post.mean)
        stds.append(post.std)
    return torch.cat(means), torch.cat(stds)


class SubsetEmbedding(torch.nn.Module):
    """CLIP's token embedding with only the rows of `used` ids trainable (as a delta): the
    other 49k rows keep their initial values, and Adam does not touch them every step."""

    def __init__(self, base, used):
        super().__init__()
        self.base = base
        base.weight.requires_grad_(False)
        self.delta = torch.nn.Parameter(torch.zeros(len(used), base.weight.shape[1]))
        lut = torch.full((base.weight.shape[0],), len(used), dtype=torch.long)
        lut[torch.tensor(used)] = torch.arange(len(used))
        self.register_buffer("lut", lut)
        self.used = torch.tensor(used)

    def forward(self, ids):
        delta = torch.cat([self.delta, self.delta.new_zeros(1, self.delta.shape[1])])
        return self.base(ids) + delta[self.lut[ids]]

    @torch.no_grad()
    def merge(self):
        """Folds the delta into the base table; returns the base embedding module."""
        self.base.weight[self.used] += self.delta
        return self.base


def caption_vocabulary(tokenizer, attrs, rng):
    """Every token id the captions (and the empty prompt) can use."""
    ids = set(tokenizer([""]).input_ids[0])
    words = set()
    for a in attrs[:2000]:
        for _ in range(4):
            words.update(data.caption(*a, rng).replace(",", " , ").split())
    for w in words:
        ids.update(tokenizer([w]).input_ids[0])
    ids.update(tokenizer([","]).input_ids[0])
    return sorted(ids)


class Ema:
    """Exponential moving average of parameters (decay warms up as (1+n)/(10+n))."""

    def __init__(self, modules, decay):
        self.params = [p for m in modules for p in m.parameters()]
        self.shadow = [p.detach().clone() for p in self.params]
        self.decay, self.n = decay, 0

    @torch.no_grad()
    def update(self):
        self.n += 1
        d = min(self.decay, (1 + self.n) / (10 + self.n))
        for s, p in zip(self.shadow, self.params):
            s.lerp_(p.detach(), 1 - d)

    @torch.no_grad()
    def copy_to_models(self):
        for s, p in zip(self.shadow, self.params):
            p.copy_(s)


def rng_state(gen, rng):
    return {"gen": gen.get_state(), "rng": rng.getstate()}


def set_rng_state(state, gen, rng):
    gen.set_state(state["gen"])
    rng.setstate(state["rng"])


def train_joint(text_encoder, unet, scheduler, tokenizer, lat_mean, lat_std, attrs, scale,
                steps, batch, gen, rng, ckpt, ckpt_every):
    """Trains the text encoder and the UNet together. The learning rate is constant after a
    warm-up, so the first k steps of any run are the same whatever `steps` is: the checkpoint
    written every `ckpt_every` steps (`ckpt`) is what a run of that many steps would produce,
    and a run resumes from it."""
    emb = text_encoder.embeddings
    used = caption_vocabulary(tokenizer, attrs, random.Random(0))
    log(f"captions use {len(used)} token ids")
    emb.token_embedding = SubsetEmbedding(emb.token_embedding, used)
    params = [p for p in list(text_encoder.parameters()) + list(unet.parameters())
              if p.requires_grad]
    peak = 5e-4
    opt = torch.optim.AdamW(params, lr=peak, weight_decay=0.01)
    ema = Ema([text_encoder, unet], 0.999)
    ema.params = [p for p in ema.params if p.requires_grad]
    ema.shadow = [p.detach().clone() for p in ema.params]
    first = 0
    if os.path.exists(ckpt):
        state = torch.load(ckpt, weights_only=False)
        text_encoder.load_state_dict(state["text_encoder"])
        unet.load_state_dict(state["unet"])
        opt.load_state_dict(state["opt"])
        ema.shadow, ema.n = state["ema"], state["ema_n"]
        set_rng_state(state["rng_state"], gen, rng)
        first = state["step"]
        log(f"resumed the joint training at step {first} from {ckpt}")
    alphas = scheduler.alphas_cumprod
    snr = alphas / (1 - alphas)
    text_encoder.train()
    unet.train()
    t0, running = time.time(), 0.0
    for step in range(first, steps):
        for g in opt.param_groups:
            g["lr"] = peak * min(1.0, (step + 1) / 300)
        idx = torch.randint(0, len(attrs), (batch,), generator=gen)
        caps = [data.caption(*attrs[i], rng) if rng.random() >= 0.1 else "" for i in idx.tolist()]
        ids = tokenizer(caps, padding="max_length", max_length=77, truncation=True,
                        return_tensors="pt").input_ids
        z0 = (lat_mean[idx] + lat_std[idx] * torch.randn(lat_mean[idx].shape, generator=gen))
        z0 = z0 * scale
        noise = torch.randn(z0.shape, generator=gen)
        t = torch.randint(0, 1000, (batch,), generator=gen)
        zt = scheduler.add_noise(z0, noise, t)
        cond = text_encoder(ids).last_hidden_state
        pred = unet(zt, t, encoder_hidden_states=cond).sample
        # Min-SNR-5 weighting (Hang et al. 2023) for epsilon prediction.
        w = torch.clamp(snr[t], max=5.0) / snr[t]
        loss = (w * ((pred - noise) ** 2).mean(dim=(1, 2, 3))).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        ema.update()
        running = 0.98 * running + 0.02 * loss.item() if step > first else loss.item()
        if step % 100 == 0 or step == steps - 1:
            log(f"joint step {step}/{steps} loss {running:.4f} ({time.time() - t0:.0f} s)")
        if (step + 1) % ckpt_every == 0 or step == steps - 1:
            torch.save({"text_encoder": text_encoder.state_dict(), "unet": unet.state_dict(),
                        "opt": opt.state_dict(), "ema": ema.shadow, "ema_n": ema.n,
                        "rng_state": rng_state(gen, rng), "step": step + 1}, ckpt + ".tmp")
            os.replace(ckpt + ".tmp", ckpt)
    ema.copy_to_models()
    emb.token_embedding = emb.token_embedding.merge()
    text_encoder.eval()
    unet.eval()


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", required=True, help="output folder")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--pool", type=int, default=12000, help="images drawn for training")
    ap.add_argument("--vae-steps", type=int, default=2000)
    ap.add_argument("--vae-batch", type=int, default=16)
    ap.add_argument("--unet-steps", type=int, default=8000)
    ap.add_argument("--unet-batch", type=int, default=32)
    ap.add_argument("--ckpt-every", type=int, default=250,
                    help="joint steps between checkpoints (a rerun into --out resumes)")
    ap.add_argument("--eval-prompts", type=int, default=48)
    args = ap.parse_args()
    start = time.time()
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    random.seed(args.seed)
    np.random.seed(args.seed)
    gen = torch.Generator().manual_seed(args.seed)
    rng = random.Random(args.seed + 1)
    os.makedirs(args.out, exist_ok=True)

    train_combos, held_out = data.split_combinations(args.seed)
    log(f"{len(train_combos)} training combinations, {len(held_out)} held out")
    images, attrs = data.make_pool(train_combos, args.pool, args.seed + 2)
    log(f"drew {len(images)} images")

    tok_dir = os.path.join(args.out, "diffusers", "tokenizer")
    export.write_tokenizer(tok_dir, BPE)
    tokenizer = CLIPTokenizer.from_pretrained(tok_dir)
    text_encoder, unet, vae, scheduler = build_models()

    vae_ckpt = os.path.join(args.out, "stage-vae.pt")
    if os.path.exists(vae_ckpt):
        state = torch.load(vae_ckpt, weights_only=False)
        vae.load_state_dict(state["vae"])
        set_rng_state(state["rng_state"], gen, rng)
        vae.eval()
        log(f"VAE loaded from {vae_ckpt}")
    else:
        train_vae(vae, images, args.vae_steps, args.vae_batch, gen)
        torch.save({"vae": vae.state_dict(), "rng_state": rng_state(gen, rng)}, vae_ckpt)
    lat_mean, lat_std = encode_pool(vae, images)
    sample = lat_mean + lat_std * torch.randn(lat_mean.shape, generator=gen)
    scale = float(1.0 / sample.std())
    vae.register_to_config(scaling_factor=scale)
    log(f"latent scaling factor {scale:.5f}; VAE done at {time.time() - start:.0f} s")

    train_joint(text_encoder, unet, scheduler, tokenizer, lat_mean, lat_std, attrs, scale,
                args.unet_steps, args.unet_batch, gen, rng,
                os.path.join(args.out, "stage-joint.pt"), args.ckpt_every)
    log(f"training done at {time.time() - start:.0f} s")

    prompts = evaluate.held_out_prompts(held_out, args.eval_prompts, args.seed)
    with open(os.path.join(args.out, "heldout.json"), "w") as f:
        json.dump(prompts, f, indent=1)
    report = evaluate.run(text_encoder, tokenizer, unet, vae, scheduler, prompts,
                          os.path.join(args.out, "eval"))
    with open(os.path.join(args.out, "eval.json"), "w") as f:
        json.dump(report, f, indent=1)

    evaluate.save_diffusers(os.path.join(args.out, "diffusers"), text_encoder, tokenizer, unet,
                            vae, scheduler)
    path = os.path.join(args.out, "sdserve-shapes.safetensors")
    size = export.write_single_file(path, text_encoder, unet, vae, scheduler, LICENSE)
    log(f"wrote {path} ({size / 1e6:.2f} MB); total time {(time.time() - start) / 60:.1f} min")


if __name__ == "__main__":
    main()
