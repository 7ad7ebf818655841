"""Writes the VAE goldens: diffusers' AutoencoderKL on the tiny Rust test models.

Usage (see README.md):
    cargo run -p inference-server --example write_test_models -- /tmp/tm
    /work/.venv-ref/bin/python inference-server/tests/parity/vae_goldens.py /tmp/tm [OUT_DIR]

For sd1 and sd2, f32 and f16 (f16 weights converted with `.float()`, so everything is computed
in float32), writes OUT_DIR/vae_{variant}_{dtype}.safetensors (default OUT_DIR:
inference-server/tests/goldens) with:
    latents  f32 [1, 4, 8, 8]    torch.randn, Generator seed 0 (unscaled latents)
    decoded  f32 [1, 3, 64, 64]  vae.decode(latents).sample
    image    f32 [1, 3, 64, 64]  torch.rand * 2 - 1, Generator seed 1
    mean     f32 [1, 4, 8, 8]    vae.encode(image).latent_dist.mean
    logvar   f32 [1, 4, 8, 8]    vae.encode(image).latent_dist.logvar (clamped to [-30, 20])
"""

import sys
from pathlib import Path

import torch
from safetensors.torch import save_file

from diffusers import AutoencoderKL


def main():
    models = Path(sys.argv[1])
    default_out = Path(__file__).resolve().parent.parent / "goldens"
    out_dir = Path(sys.argv[2]) if len(sys.argv) > 2 else default_out
    torch.set_grad_enabled(False)
    latents = torch.randn([1, 4, 8, 8], generator=torch.Generator().manual_seed(0))
    image = torch.rand([1, 3, 64, 64], generator=torch.Generator().manual_seed(1)) * 2 - 1
    for variant in ["sd1", "sd2"]:
        for dtype in ["f32", "f16"]:
            folder = models / f"{variant}-diffusers-{dtype}" / "vae"
            vae = AutoencoderKL.from_pretrained(folder).float().eval()
            decoded = vae.decode(latents).sample
            dist = vae.encode(image).latent_dist
            out = out_dir / f"vae_{variant}_{dtype}.safetensors"
            save_file(
                {
                    "latents": latents.contiguous(),
                    "decoded": decoded.float().contiguous(),
                    "image": image.contiguous(),
                    "mean": dist.mean.float().contiguous(),
                    "logvar": dist.logvar.float().contiguous(),
                },
                str(out),
                metadata={"scaling_factor": repr(vae.config.scaling_factor)},
            )
            print(f"{out}: decoded |max| {decoded.abs().max():.4f}, mean |max| {dist.mean.abs().max():.4f}")


if __name__ == "__main__":
    main()
