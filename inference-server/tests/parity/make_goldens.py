"""Checks the Rust test models against transformers/diffusers and writes the CLIP goldens.

Usage (see README.md):
    cargo run -p inference-server --example write_test_models -- /tmp/tm
    /work/.venv-ref/bin/python inference-server/tests/parity/make_goldens.py /tmp/tm

For each of sd1, sd2 and each of f32, f16 (diffusers folders written by the example):
  * every component's state_dict keys, shapes and values equal the files Rust wrote;
  * the single-file checkpoint loads through diffusers' single-file loader to the same weights;
  * CLIP text encoder outputs for a few prompts go to tests/goldens/clip_{variant}_{dtype}.safetensors:
    input_ids (int64 [P, 77]), last_hidden_state (f32 [P, 77, H], after the final layer norm),
    penultimate (f32 [P, 77, H]: hidden_states[-2] through the final layer norm, i.e. clip skip 2).
"""

import json
import sys
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from diffusers import AutoencoderKL, StableDiffusionPipeline, UNet2DConditionModel
from transformers import CLIPTextModel, CLIPTokenizer

PROMPTS = [
    "a photo of an astronaut riding a horse",
    "",
    # Longer than 77 tokens: truncated to BOS + 75 tokens + EOS.
    ", ".join(f"detailed painting number {i} of a lighthouse at dusk" for i in range(12)),
    # Punctuation, an emoji, accents; no '!' (SD 2's pad token, see README).
    "A cat, sitting (on a mat) \u2014 \U0001F63A caf\u00e9 + 100% cute? <tag> don't",
]

COMPONENTS = [
    ("text_encoder", CLIPTextModel, "model.safetensors"),
    ("unet", UNet2DConditionModel, "diffusion_pytorch_model.safetensors"),
    ("vae", AutoencoderKL, "diffusion_pytorch_model.safetensors"),
]


def normalized(state, component):
    """transformers 5 drops the `text_model.` prefix from CLIPTextModel's state_dict."""
    if component != "text_encoder":
        return dict(state)
    return {k if k.startswith("text_model.") else "text_model." + k: v for k, v in state.items()}


def check_component(folder, component, cls, weights_name):
    model = cls.from_pretrained(folder / component).float()
    ours = normalized(load_file(str(folder / component / weights_name)), component)
    theirs = normalized(model.state_dict(), component)
    assert set(ours) == set(theirs), (
        f"{folder.name}/{component}: missing in Rust {sorted(set(theirs) - set(ours))[:8]}, "
        f"extra in Rust {sorted(set(ours) - set(theirs))[:8]}"
    )
    for k, t in theirs.items():
        assert tuple(t.shape) == tuple(ours[k].shape), f"{component}.{k}: {t.shape} vs {ours[k].shape}"
        assert torch.equal(t, ours[k].float()), f"{component}.{k}: values differ after loading"
    print(f"  {component}: {len(theirs)} tensors match")
    return model


def check_single_file(single, folder):
    """Loads the single file with the folder as config and compares every weight."""
    try:
        pipe = StableDiffusionPipeline.from_single_file(
            str(single), config=str(folder), local_files_only=True, safety_checker=None,
            requires_safety_checker=False,
        )
    except Exception as e:  # noqa: BLE001 - reported and skipped, see README
        print(f"  from_single_file SKIPPED: {type(e).__name__}: {str(e)[:300]}")
        return False
    for component, _, weights_name in COMPONENTS:
        ours = normalized(load_file(str(folder / component / weights_name)), component)
        theirs = normalized(getattr(pipe, component).state_dict(), component)
        assert set(ours) == set(theirs), (
            f"single {component}: missing {sorted(set(ours) - set(theirs))[:8]}, "
            f"extra {sorted(set(theirs) - set(ours))[:8]}"
        )
        for k, t in theirs.items():
            assert torch.equal(t.float(), ours[k].float()), f"single-file {component}.{k} differs"
        print(f"  single file {component}: {len(theirs)} tensors equal the folder's")
    return True


@torch.no_grad()
def clip_goldens(folder, out_path):
    tokenizer = CLIPTokenizer.from_pretrained(folder / "tokenizer")
    model = CLIPTextModel.from_pretrained(folder / "text_encoder").float().eval()
    ids = tokenizer(PROMPTS, padding="max_length", max_length=77, truncation=True, return_tensors="pt").input_ids
    out = model(input_ids=ids, output_hidden_states=True)
    penultimate = getattr(model, "text_model", model).final_layer_norm(out.hidden_states[-2])
    save_file(
        {
            "input_ids": ids.to(torch.int64).contiguous(),
            "last_hidden_state": out.last_hidden_state.float().contiguous(),
            "penultimate": penultimate.float().contiguous(),
        },
        str(out_path),
        metadata={"prompts": json.dumps(PROMPTS, ensure_ascii=False)},
    )
    print(f"  wrote {out_path} ids[0][:10]={ids[0][:10].tolist()}")


def main():
    if len(sys.argv) < 2:
        sys.exit("usage: make_goldens.py MODELS_DIR [GOLDENS_DIR]")
    models = Path(sys.argv[1])
    goldens = Path(sys.argv[2]) if len(sys.argv) > 2 else Path(__file__).resolve().parent.parent / "goldens"
    torch.set_num_threads(2)
    single_ok = True
    for variant in ["sd1", "sd2"]:
        for dtype in ["f32", "f16"]:
            folder = models / f"{variant}-diffusers-{dtype}"
            print(f"{folder.name}:")
            for component, cls, weights_name in COMPONENTS:
                check_component(folder, component, cls, weights_name)
            pipe = StableDiffusionPipeline.from_pretrained(folder, local_files_only=True)
            assert type(pipe.scheduler).__name__ == "PNDMScheduler", type(pipe.scheduler)
            assert pipe.tokenizer.pad_token == ("!" if variant == "sd2" else "<|endoftext|>")
            print(f"  StableDiffusionPipeline.from_pretrained loads the folder ({type(pipe.scheduler).__name__})")
            single_ok &= check_single_file(models / f"{variant}-single-{dtype}.safetensors", folder)
            clip_goldens(folder, goldens / f"clip_{variant}_{dtype}.safetensors")
    print("all checks passed" + ("" if single_ok else " (single-file check skipped, see above)"))


if __name__ == "__main__":
    main()
