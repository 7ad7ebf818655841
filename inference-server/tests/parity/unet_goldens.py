"""Writes the UNet goldens: diffusers' UNet2DConditionModel on the tiny Rust test models.

Usage (see README.md, section "UNet goldens"):
    cargo run -p inference-server --example write_test_models -- /tmp/tm
    /work/.venv-ref/bin/python inference-server/tests/parity/unet_goldens.py /tmp/tm

    # full SD 1.5 shapes, not committed: DIR/unet is written by the ignored test
    # `full_size_sd15` in tests/it/unet.rs; this writes DIR/full_golden.safetensors
    /work/.venv-ref/bin/python inference-server/tests/parity/unet_goldens.py --full DIR

For sd1 and sd2, f32 and f16 weights (f16 loaded and converted with `.float()`), computed in
float32 on the CPU, it writes tests/goldens/unet_{variant}_{dtype}.safetensors holding:
  latents   f32 [2, 4, 8, 8]    torch.Generator seed 0, standard normal
  timesteps f32 [2]             999 and 1 (one per batch element)
  context   f32 [2, 77, cross]  torch.Generator seed 1, standard normal
  temb_sin  f32 [2, C0]         unet.time_proj(timesteps): the sinusoidal embedding alone
  sample    f32 [2, 4, 8, 8]    unet(latents, timesteps, encoder_hidden_states=context).sample
  sample_t1 f32 [2, 4, 8, 8]    the same with the single timestep 500 for the whole batch
  latents_odd f32 [1, 4, 9, 7]  seed 2: odd sides, so diffusers forwards `upsample_size`
  sample_odd  f32 [1, 4, 9, 7]  unet(latents_odd, 250, encoder_hidden_states=context[:1]).sample
"""

import sys
from pathlib import Path

import torch
from safetensors.torch import save_file

from diffusers import UNet2DConditionModel


@torch.no_grad()
def golden(folder, out_path):
    unet = UNet2DConditionModel.from_pretrained(folder / "unet").float().eval()
    cfg = unet.config
    latents = torch.randn((2, cfg.in_channels, 8, 8), generator=torch.Generator().manual_seed(0))
    context = torch.randn((2, 77, cfg.cross_attention_dim), generator=torch.Generator().manual_seed(1))
    timesteps = torch.tensor([999.0, 1.0])
    sample = unet(latents, timesteps, encoder_hidden_states=context).sample
    sample_t1 = unet(latents, torch.tensor(500.0), encoder_hidden_states=context).sample
    latents_odd = torch.randn((1, cfg.in_channels, 9, 7), generator=torch.Generator().manual_seed(2))
    sample_odd = unet(latents_odd, torch.tensor(250.0), encoder_hidden_states=context[:1]).sample
    tensors = {
        "latents": latents,
        "timesteps": timesteps,
        "context": context,
        "temb_sin": unet.time_proj(timesteps),
        "sample": sample,
        "sample_t1": sample_t1,
        "latents_odd": latents_odd,
        "sample_odd": sample_odd,
    }
    save_file({k: v.float().contiguous() for k, v in tensors.items()}, str(out_path))
    print(f"  wrote {out_path}: sample mean {sample.mean():.5f} std {sample.std():.5f}")


@torch.no_grad()
def full_golden(folder):
    """SD 1.5-shaped UNet written by the Rust ignored test: latents [1, 4, 32, 32], t = 700."""
    import time

    unet = UNet2DConditionModel.from_pretrained(folder / "unet").float().eval()
    latents = torch.randn((1, 4, 32, 32), generator=torch.Generator().manual_seed(3))
    context = torch.randn((1, 77, unet.config.cross_attention_dim), generator=torch.Generator().manual_seed(4))
    timesteps = torch.tensor([700.0])
    started = time.perf_counter()
    sample = unet(latents, timesteps, encoder_hidden_states=context).sample
    print(f"  diffusers forward [1, 4, 32, 32]: {time.perf_counter() - started:.2f} s")
    big = torch.randn((2, 4, 64, 64), generator=torch.Generator().manual_seed(5))
    started = time.perf_counter()
    unet(big, torch.tensor([999.0, 1.0]), encoder_hidden_states=context.expand(2, -1, -1)).sample
    print(f"  diffusers forward [2, 4, 64, 64]: {time.perf_counter() - started:.2f} s")
    out = folder / "full_golden.safetensors"
    tensors = {"latents": latents, "timesteps": timesteps, "context": context, "sample": sample}
    save_file({k: v.float().contiguous() for k, v in tensors.items()}, str(out))
    print(f"  wrote {out}: sample mean {sample.mean():.5f} std {sample.std():.5f}")


def main():
    torch.set_num_threads(2)
    if len(sys.argv) == 3 and sys.argv[1] == "--full":
        full_golden(Path(sys.argv[2]))
        return
    if len(sys.argv) < 2:
        sys.exit("usage: unet_goldens.py MODELS_DIR [GOLDENS_DIR]")
    models = Path(sys.argv[1])
    goldens = Path(sys.argv[2]) if len(sys.argv) > 2 else Path(__file__).resolve().parent.parent / "goldens"
    for variant in ["sd1", "sd2"]:
        for dtype in ["f32", "f16"]:
            folder = models / f"{variant}-diffusers-{dtype}"
            print(f"{folder.name}:")
            golden(folder, goldens / f"unet_{variant}_{dtype}.safetensors")


if __name__ == "__main__":
    main()
