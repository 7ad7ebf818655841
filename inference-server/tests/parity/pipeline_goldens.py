"""Writes the pipeline goldens: diffusers' StableDiffusionPipeline on the tiny SD 1.x test model.

Usage (see README.md):
    target/debug/inference-server make-test-model --out /tmp/tm-pipe/sd1 --variant sd1
    /work/.venv-ref/bin/python inference-server/tests/parity/pipeline_goldens.py /tmp/tm-pipe/sd1 [OUT_DIR]

For each scheduler class below, runs txt2img at 64x64 with PROMPT / NEGATIVE, CFG 7.0,
STEPS steps, generator torch.Generator().manual_seed(SEED), output_type "np", and writes the
image as OUT_DIR/pipeline_<ClassName>[_karras].png (uint8: (x * 255).round(), as diffusers'
numpy_to_pil). Default OUT_DIR: inference-server/tests/goldens.

img2img: writes the init image OUT_DIR/pipeline_init.png (a deterministic 64x64 pattern) and,
for IMG2IMG_CASES, StableDiffusionImg2ImgPipeline(**pipe.components) with strength STRENGTH,
the same prompt/seed/steps/CFG, as OUT_DIR/pipeline_img2img_<ClassName>.png.
"""

import sys
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from diffusers import (
    DDIMScheduler,
    DPMSolverMultistepScheduler,
    EulerAncestralDiscreteScheduler,
    EulerDiscreteScheduler,
    StableDiffusionImg2ImgPipeline,
    StableDiffusionPipeline,
)

PROMPT = "a red cat on a sofa"
NEGATIVE = "blurry"
SEED = 1234
STEPS = 5
CFG = 7.0

CASES = [
    ("EulerDiscreteScheduler", EulerDiscreteScheduler, {}),
    ("DDIMScheduler", DDIMScheduler, {}),
    ("DPMSolverMultistepScheduler_karras", DPMSolverMultistepScheduler, {"use_karras_sigmas": True}),
    ("EulerAncestralDiscreteScheduler", EulerAncestralDiscreteScheduler, {}),
]

STRENGTH = 0.6
IMG2IMG_CASES = CASES[:3]


def init_image():
    y, x = np.mgrid[0:64, 0:64]
    rgb = np.stack([x * 4, y * 4, ((x + y) * 2) % 256], axis=-1)
    return Image.fromarray(rgb.astype(np.uint8))


def main():
    folder = Path(sys.argv[1])
    default_out = Path(__file__).resolve().parent.parent / "goldens"
    out_dir = Path(sys.argv[2]) if len(sys.argv) > 2 else default_out
    torch.set_grad_enabled(False)
    pipe = StableDiffusionPipeline.from_pretrained(
        folder, safety_checker=None, feature_extractor=None, requires_safety_checker=False
    )
    pipe.set_progress_bar_config(disable=True)
    base_config = pipe.scheduler.config
    for name, cls, extra in CASES:
        pipe.scheduler = cls.from_config(base_config, **extra)
        image = pipe(
            PROMPT,
            negative_prompt=NEGATIVE,
            height=64,
            width=64,
            num_inference_steps=STEPS,
            guidance_scale=CFG,
            generator=torch.Generator().manual_seed(SEED),
            output_type="np",
        ).images[0]
        pixels = (image * 255).round().astype(np.uint8)
        out = out_dir / f"pipeline_{name}.png"
        Image.fromarray(pixels).save(out)
        print(f"{out}: mean {pixels.mean():.2f}")
    init = init_image()
    init.save(out_dir / "pipeline_init.png")
    i2i = StableDiffusionImg2ImgPipeline(**pipe.components)
    i2i.set_progress_bar_config(disable=True)
    for name, cls, extra in IMG2IMG_CASES:
        i2i.scheduler = cls.from_config(base_config, **extra)
        image = i2i(
            PROMPT,
            image=init,
            strength=STRENGTH,
            negative_prompt=NEGATIVE,
            num_inference_steps=STEPS,
            guidance_scale=CFG,
            generator=torch.Generator().manual_seed(SEED),
            output_type="np",
        ).images[0]
        pixels = (image * 255).round().astype(np.uint8)
        out = out_dir / f"pipeline_img2img_{name}.png"
        Image.fromarray(pixels).save(out)
        print(f"{out}: mean {pixels.mean():.2f}")


if __name__ == "__main__":
    main()
