"""Held-out evaluation of sdserve-shapes and writing its diffusers folder.

Each held-out prompt is generated at a fixed seed (1000 + its index) at 64x64 with 20 steps and
guidance 6 by two diffusers samplers, and scored by checker.py.
"""

import json
import os
import random

import numpy as np
import torch
from diffusers import (DDIMScheduler, EulerDiscreteScheduler, PNDMScheduler,
                       StableDiffusionPipeline)
from PIL import Image
from safetensors.torch import save_file

import checker
import data
import export

STEPS = 20
GUIDANCE = 6.0
SAMPLERS = {"EulerDiscreteScheduler": EulerDiscreteScheduler, "DDIMScheduler": DDIMScheduler}


def held_out_prompts(held_out, n, seed):
    """n prompts from held-out combinations, sizes alternating large/small, with seeds."""
    combos = list(held_out)
    random.Random(seed + 3).shuffle(combos)
    out = []
    for k, (shape, colour, bg, pos) in enumerate(sorted(combos[:n])):
        size = "large" if k % 2 == 0 else "small"
        out.append({"prompt": data.eval_caption(shape, colour, bg, pos, size), "shape": shape,
                    "colour": colour, "background": bg, "position": pos, "size": size,
                    "seed": 1000 + k})
    return out


def pipeline(text_encoder, tokenizer, unet, vae, scheduler_cls, sched_config):
    return StableDiffusionPipeline(
        vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet,
        scheduler=scheduler_cls.from_config(sched_config), safety_checker=None,
        feature_extractor=None, requires_safety_checker=False)


@torch.no_grad()
def generate(pipe, prompts, guidance=GUIDANCE):
    images = []
    for i in range(0, len(prompts), 16):
        chunk = prompts[i:i + 16]
        gens = [torch.Generator().manual_seed(p["seed"]) for p in chunk]
        out = pipe([p["prompt"] for p in chunk], height=64, width=64, num_inference_steps=STEPS,
                   guidance_scale=guidance, generator=gens, output_type="np")
        images.extend((np.clip(out.images, 0, 1) * 255).round().astype(np.uint8))
    return images


def run(text_encoder, tokenizer, unet, vae, scheduler, prompts, out_dir):
    """Generates and scores every prompt with each sampler; prints and returns the scores."""
    os.makedirs(out_dir, exist_ok=True)
    report = {}
    for name, cls in SAMPLERS.items():
        pipe = pipeline(text_encoder, tokenizer, unet, vae, cls, scheduler.config)
        pipe.set_progress_bar_config(disable=True)
        images = generate(pipe, prompts)
        results = []
        for p, img in zip(prompts, images):
            seen = checker.inspect(img)
            results.append(((p["colour"], p["background"], p["position"]), seen))
        scores = checker.score(results)
        report[name] = {"scores": scores, "seen": [list(s) for _, s in results]}
        print(f"held-out evaluation, {name}, {STEPS} steps, guidance {GUIDANCE}, "
              f"{len(prompts)} prompts:", flush=True)
        for k, v in scores.items():
            print(f"  {k:13s} {v:.3f}", flush=True)
        grid = np.concatenate([np.concatenate(images[r:r + 8], axis=1)
                               for r in range(0, len(images) - 7, 8)], axis=0)
        Image.fromarray(grid).save(os.path.join(out_dir, f"{name}.png"))
    return report


def save_diffusers(folder, text_encoder, tokenizer, unet, vae, scheduler):
    """A diffusers folder in f16 (text encoder under transformers' `text_model.` names)."""
    os.makedirs(folder, exist_ok=True)
    for sub, model in [("unet", unet), ("vae", vae)]:
        model.to(torch.float16).save_pretrained(os.path.join(folder, sub),
                                                safe_serialization=True)
        model.to(torch.float32)
    te_dir = os.path.join(folder, "text_encoder")
    os.makedirs(te_dir, exist_ok=True)
    text_encoder.config.save_pretrained(te_dir)
    state = {k: v.detach().to(torch.float16).contiguous()
             for k, v in export.clip_state(text_encoder).items()}
    save_file(state, os.path.join(te_dir, "model.safetensors"), metadata={"format": "pt"})
    tokenizer.save_pretrained(os.path.join(folder, "tokenizer"))
    PNDMScheduler.from_config(scheduler.config, skip_prk_steps=True).save_pretrained(
        os.path.join(folder, "scheduler"))
    index = {
        "_class_name": "StableDiffusionPipeline", "_diffusers_version": "0.42.1",
        "feature_extractor": [None, None], "requires_safety_checker": False,
        "safety_checker": [None, None], "image_encoder": [None, None],
        "scheduler": ["diffusers", "PNDMScheduler"],
        "text_encoder": ["transformers", "CLIPTextModel"],
        "tokenizer": ["transformers", "CLIPTokenizer"],
        "unet": ["diffusers", "UNet2DConditionModel"], "vae": ["diffusers", "AutoencoderKL"],
    }
    with open(os.path.join(folder, "model_index.json"), "w") as f:
        json.dump(index, f, indent=2)
