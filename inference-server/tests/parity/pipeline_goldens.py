"""Writes the pipeline goldens: diffusers' StableDiffusionPipeline on the tiny SD 1.x test model.

Usage (see README.md):
    target/debug/inference-server make-test-model --out /tmp/tm-pipe/sd1 --variant sd1
    /work/.venv-ref/bin/python inference-server/tests/parity/pipeline_goldens.py /tmp/tm-pipe/sd1 [OUT_DIR]

For each scheduler class below, runs txt2img at 64x64 with PROMPT / NEGATIVE, CFG 7.0,
STEPS steps, generator torch.Generator().manual_seed(SEED), output_type "np", and writes the
image as OUT_DIR/pipeline_<ClassName>[_karras].png (uint8: (x * 255).round(), as diffusers'
numpy_to_pil); ODD_SIZE_CASES also at 72x72 as pipeline_<ClassName>_72.png. Default OUT_DIR:
inference-server/tests/goldens.

img2img: writes the init image OUT_DIR/pipeline_init.png (a deterministic 64x64 pattern) and,
for IMG2IMG_CASES, StableDiffusionImg2ImgPipeline(**pipe.components) with strength STRENGTH,
the same prompt/seed/steps/CFG, as OUT_DIR/pipeline_img2img_<ClassName>.png.

A1111 names: A1111's txt2img re-stated on the same components (k-diffusion 0.1.1.post1's
sampling.py / external.py loaded by kdiff.py): prompt and negative prompt through CLIP (one
chunk, multipliers 1, so emphasis is the identity), `DiscreteEpsDDPMDenoiser` (quantize=False)
on CompVis' alphas_cumprod, A1111's CFGDenoiser (cond and uncond in one batch, `uncond +
(cond - uncond) * cfg` on the denoised outputs), initial noise
`randn([4, 8, 8], Generator().manual_seed(SEED))` (A1111 "CPU" RNG; or "NV", A1111's
rng_philox restated in rng_goldens.py) times sigmas[0], ancestral noise continuing that
generator (ImageRNG.next()), VAE decode of x / scaling_factor, then
A1111's `(255 * clamp((x + 1) / 2)).astype(uint8)` (truncation). Written as
OUT_DIR/pipeline_a1111_<name>.png for A1111_CASES. DPM++ SDE runs with injected noise (see
RecordedNoise), stored beside its PNG.
"""

import sys
from pathlib import Path

import numpy as np
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
from kdiff import load_k_diffusion  # noqa: E402
from rng_goldens import philox_randn  # noqa: E402

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
# (name, schedule, k-diffusion function, RNG, image size). "nv" is A1111's "NV" source
# (rng_philox.Generator: the initial latent at offset 0, each later draw at the next offset);
# 72x72 gives a 4x9x9 latent, whose 324 values are not a multiple of 16.
A1111_CASES = [
    ("euler_a", "uniform", "sample_euler_ancestral", "cpu", 64),
    ("dpmpp_2m_karras", "karras", "sample_dpmpp_2m", "cpu", 64),
    ("euler", "uniform", "sample_euler", "cpu", 64),
    ("dpmpp_sde_karras", "karras", "sample_dpmpp_sde", "cpu", 64),
    ("euler_a_nv", "uniform", "sample_euler_ancestral", "nv", 64),
    ("euler_a_72", "uniform", "sample_euler_ancestral", "cpu", 72),
]
# diffusers at 72x72 (one generator; ancestral noise continues it at a size not a multiple of 16).
ODD_SIZE_CASES = [("EulerAncestralDiscreteScheduler", EulerAncestralDiscreteScheduler, {})]
# DPM++ SDE's step noise is injected (not torchsde's Brownian tree): draws of
# randn([1, 4, 8, 8], Generator().manual_seed(SDE_NOISE_SEED)) in call order, stored with the
# (sigma, sigma_next) of each call in OUT_DIR/pipeline_a1111_dpmpp_sde_karras_noise.safetensors.
SDE_NOISE_SEED = 4321


def a1111_goldens(pipe, out_dir):
    K, EXT = load_k_diffusion()

    def encode(text):
        ids = pipe.tokenizer(text, padding="max_length", max_length=77, truncation=True, return_tensors="pt").input_ids
        return pipe.text_encoder(ids).last_hidden_state

    cond, uncond = encode(PROMPT), encode(NEGATIVE)
    betas = torch.linspace(0.00085**0.5, 0.012**0.5, 1000, dtype=torch.float64) ** 2
    ac = torch.tensor(torch.cumprod(1 - betas, 0).numpy(), dtype=torch.float32)
    unet = pipe.unet

    def eps(x, t, ctx):
        return unet(x, t, encoder_hidden_states=ctx).sample

    den = EXT.DiscreteEpsDDPMDenoiser(eps, ac, quantize=False)

    def cfg_denoiser(x, sigma):
        d = den(torch.cat([x, x]), torch.cat([sigma, sigma]), ctx=torch.cat([cond, uncond]))
        c, u = d.chunk(2)
        return u + (c - u) * CFG

    lo, hi = den.sigmas[0].item(), den.sigmas[-1].item()
    for name, schedule, fn, rng, size in A1111_CASES:
        sigmas = den.get_sigmas(STEPS) if schedule == "uniform" else K.get_sigmas_karras(STEPS, lo, hi)
        shape = [4, size // 8, size // 8]
        if rng == "cpu":
            g = torch.Generator().manual_seed(SEED)
            draw = lambda g=g, shape=shape: torch.randn(shape, generator=g).unsqueeze(0)
        else:
            offsets = iter(range(1 << 20))
            draw = lambda offsets=offsets, shape=shape: torch.from_numpy(
                philox_randn(SEED, shape, offset=next(offsets))).unsqueeze(0)
        x = draw() * sigmas[0]
        noise = lambda s, sn, draw=draw: draw()
        extra = {"noise_sampler": noise} if "ancestral" in fn else {}
        if fn == "sample_dpmpp_sde":
            extra = {"noise_sampler": RecordedNoise()}
        x = getattr(K, fn)(cfg_denoiser, x, sigmas, disable=True, **extra)
        if fn == "sample_dpmpp_sde":
            extra["noise_sampler"].save(out_dir / f"pipeline_a1111_{name}_noise.safetensors")
        img = pipe.vae.decode(x / pipe.vae.config.scaling_factor).sample[0]
        img = torch.clamp((img + 1.0) / 2.0, min=0.0, max=1.0)
        pixels = (255.0 * np.moveaxis(img.numpy(), 0, 2)).astype(np.uint8)
        out = out_dir / f"pipeline_a1111_{name}.png"
        Image.fromarray(pixels).save(out)
        print(f"{out}: mean {pixels.mean():.2f}")


class RecordedNoise:
    """A k-diffusion noise sampler drawing from its own seeded generator, recording each call."""

    def __init__(self):
        self.gen = torch.Generator().manual_seed(SDE_NOISE_SEED)
        self.draws, self.pairs = [], []

    def __call__(self, sigma, sigma_next):
        z = torch.randn([1, 4, 8, 8], generator=self.gen)
        self.draws.append(z)
        self.pairs.append([float(sigma), float(sigma_next)])
        return z

    def save(self, path):
        from safetensors.torch import save_file

        tensors = {f"noise.{i:02}": z.contiguous() for i, z in enumerate(self.draws)}
        tensors["sigma_pairs"] = torch.tensor(self.pairs, dtype=torch.float32)
        save_file(tensors, str(path))
        print(f"{path}: {len(self.draws)} draws")


IMG2IMG_CASES = CASES[:3]


def init_image():
    y, x = np.mgrid[0:64, 0:64]
    rgb = np.stack([x * 4, y * 4, ((x + y) * 2) % 256], axis=-1)
    return Image.fromarray(rgb.astype(np.uint8))


def save_golden(pipe, out, **kwargs):
    """Runs `pipe` on PROMPT / NEGATIVE with STEPS, CFG and the SEED generator; saves the image."""
    image = pipe(
        PROMPT,
        negative_prompt=NEGATIVE,
        num_inference_steps=STEPS,
        guidance_scale=CFG,
        generator=torch.Generator().manual_seed(SEED),
        output_type="np",
        **kwargs,
    ).images[0]
    pixels = (image * 255).round().astype(np.uint8)
    Image.fromarray(pixels).save(out)
    print(f"{out}: mean {pixels.mean():.2f}")


def main():
    folder = Path([a for a in sys.argv[1:] if not a.startswith("--")][0])
    default_out = Path(__file__).resolve().parent.parent / "goldens"
    args = [a for a in sys.argv[1:] if not a.startswith("--")]
    out_dir = Path(args[1]) if len(args) > 1 else default_out
    torch.set_grad_enabled(False)
    pipe = StableDiffusionPipeline.from_pretrained(
        folder, safety_checker=None, feature_extractor=None, requires_safety_checker=False
    )
    pipe.set_progress_bar_config(disable=True)
    base_config = pipe.scheduler.config
    a1111_only = "--a1111-only" in sys.argv
    for name, cls, extra in [] if a1111_only else CASES:
        pipe.scheduler = cls.from_config(base_config, **extra)
        save_golden(pipe, out_dir / f"pipeline_{name}.png", height=64, width=64)
    for name, cls, extra in [] if a1111_only else ODD_SIZE_CASES:
        pipe.scheduler = cls.from_config(base_config, **extra)
        save_golden(pipe, out_dir / f"pipeline_{name}_72.png", height=72, width=72)
    a1111_goldens(pipe, out_dir)
    if "--a1111-only" in sys.argv:
        return
    init = init_image()
    init.save(out_dir / "pipeline_init.png")
    i2i = StableDiffusionImg2ImgPipeline(**pipe.components)
    i2i.set_progress_bar_config(disable=True)
    for name, cls, extra in IMG2IMG_CASES:
        i2i.scheduler = cls.from_config(base_config, **extra)
        save_golden(i2i, out_dir / f"pipeline_img2img_{name}.png", image=init, strength=STRENGTH)


if __name__ == "__main__":
    main()
