#!/usr/bin/env python3
"""CLIP text encoder on the real SD 1.5 shape: ours (inference-server/benches/text_encoder.rs)
beside transformers' CLIPTextModel on PyTorch CPU, same machine, same thread count, one run.

    /work/.venv-ref/bin/python bench/text_encoder.py --threads 2

Needs torch and transformers (see inference-server/tests/parity/README.md for the venv). Prints
a Markdown table: median seconds per forward at batch 2 x 77 tokens, ours/PyTorch, and the
anonymous (non-file-backed) memory each side holds after loading the weights.
"""

import argparse
import os
import statistics
import subprocess
import time

import torch
from transformers import CLIPTextConfig, CLIPTextModel

RUNS = 7


def anon_mib() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("RssAnon:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def ours(threads: int) -> dict:
    env = dict(os.environ, RAYON_NUM_THREADS=str(threads))
    out = subprocess.run(
        ["cargo", "bench", "-q", "-p", "inference-server", "--bench", "text_encoder"],
        env=env, check=True, capture_output=True, text=True,
    ).stdout
    return {k: float(v) for k, v in (l.split()[1:] for l in out.splitlines() if l.startswith("RESULT "))}


def torch_reference(threads: int) -> tuple[float, float]:
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    before = anon_mib()
    config = CLIPTextConfig(
        vocab_size=49408, hidden_size=768, intermediate_size=3072, num_hidden_layers=12,
        num_attention_heads=12, max_position_embeddings=77, hidden_act="quick_gelu",
    )
    model = CLIPTextModel(config).eval()
    loaded = anon_mib() - before
    ids = torch.randint(0, 49408, (2, 77))
    times = []
    with torch.inference_mode():
        model(ids)
        for _ in range(RUNS):
            start = time.perf_counter()
            model(ids)
            times.append(time.perf_counter() - start)
    return statistics.median(times), loaded


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    args = parser.parse_args()
    r = ours(args.threads)
    t_torch, mem_torch = torch_reference(args.threads)
    print(f"| SD 1.5 text encoder, batch 2 x 77, {args.threads} threads | seconds (median of {RUNS}) "
          "| ours / PyTorch | anon MiB after load | checkpoint MiB |")
    print("|---|---|---|---|---|")
    print(f"| PyTorch {torch.__version__}, f32 | {t_torch:.4f} | 1.00 | {mem_torch:.0f} | - |")
    for key in ("f32", "f16"):
        t = r[f"clip_{key}_seconds"]
        print(f"| sdserve, {key} weights (mmap) | {t:.4f} | {t / t_torch:.2f} "
              f"| {r[f'clip_{key}_anon_mib']:.0f} | {r[f'clip_{key}_file_mib']:.0f} |")


if __name__ == "__main__":
    main()
