#!/usr/bin/env python3
"""The whole txt2img pipeline on the real SD 1.5 shapes: ours (inference-server/benches/pipeline.rs)
beside diffusers' StableDiffusionPipeline on PyTorch CPU, same weights, same thread count.

    /work/.venv-ref/bin/python bench/pipeline.py --threads 2                    # 512x512, 20 steps
    /work/.venv-ref/bin/python bench/pipeline.py --size 128 --steps 2           # smoke test
    /work/.venv-ref/bin/python bench/pipeline.py --steps 4 --profile            # per-op tables
    /work/.venv-ref/bin/python bench/pipeline.py --precision f32,bf16           # a row for each

Both load one diffusers folder with the full-size SD 1.5 configs and deterministic random f16
weights, written by the Rust bench (`pipeline write-model DIR`; about 2 GB, in a temp dir unless
--model-dir names one to reuse). diffusers upcasts to float32. The sampler is "Euler a"
(EulerAncestralDiscreteScheduler), CFG 7, one image. Reported: seconds per sampling step
(median between step callbacks, one guided UNet batch of 2) and the total of one generation
(prompt encoding, sampling, VAE decode). At 512x512 and 20 steps the whole run takes about
17 minutes on 2 threads.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

from unet_vae import cpu_name  # same folder: the CPU line above every table

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
PROMPT = "a photograph of an astronaut riding a horse"


def cargo_bench(args: list[str], threads: int, profile: bool = False) -> str:
    env = dict(os.environ, RAYON_NUM_THREADS=str(threads))
    if profile:
        env["SDSERVE_PROFILE"] = "1"  # the bench prints the per-op table on stderr
    cmd = ["cargo", "bench", "-q", "-p", "inference-server", "--bench", "pipeline", "--", *args]
    # stderr passes through (the profile, a failure's message); stdout holds the RESULT lines.
    return subprocess.run(cmd, env=env, check=True, stdout=subprocess.PIPE, text=True, cwd=ROOT).stdout


def ours(model_dir: str, size: int, steps: int, threads: int, profile: bool, precision: str) -> dict:
    out = cargo_bench(["--model", model_dir, "--size", str(size), "--steps", str(steps),
                       "--precision", precision], threads, profile)
    print(out, file=sys.stderr)
    return {k: float(v) for k, v in (l.split()[1:3] for l in out.splitlines() if l.startswith("RESULT "))}


def torch_phase(model_dir: str, size: int, steps: int, threads: int, profile: bool) -> dict:
    """Runs in a child process: one diffusers generation, timed; JSON on stdout."""
    import torch
    from diffusers import EulerAncestralDiscreteScheduler, StableDiffusionPipeline

    torch.set_num_threads(threads)
    start = time.perf_counter()
    pipe = StableDiffusionPipeline.from_pretrained(
        model_dir, dtype=torch.float32, safety_checker=None, feature_extractor=None,
        requires_safety_checker=False,
    )
    pipe.scheduler = EulerAncestralDiscreteScheduler.from_config(pipe.scheduler.config)
    pipe.set_progress_bar_config(disable=True)
    load = time.perf_counter() - start
    marks = []

    def on_step(_pipe, _i, _t, kwargs):
        marks.append(time.perf_counter())
        return kwargs

    prof = torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) if profile else None
    with torch.inference_mode():
        if prof:
            prof.__enter__()
        start = time.perf_counter()
        pipe(PROMPT, negative_prompt="blurry", height=size, width=size, num_inference_steps=steps,
             guidance_scale=7.0, generator=torch.Generator().manual_seed(1234), output_type="np",
             callback_on_step_end=on_step)
        total = time.perf_counter() - start
        if prof:
            prof.__exit__(None, None, None)
            print("diffusers pipeline, per op (whole generation):", file=sys.stderr)
            print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=25), file=sys.stderr)
    # Step i ends at callback i; step 0 also holds prompt encoding, so it is left out.
    gaps = [b - a for a, b in zip(marks, marks[1:])]
    step = statistics.median(gaps) if gaps else float("nan")
    return {"load_seconds": load, "step_seconds": step, "total_seconds": total, "version": torch.__version__}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--size", type=int, default=512, help="width and height (multiple of 8)")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--model-dir", help="reuse (or write once into) this folder")
    parser.add_argument("--profile", action="store_true",
                        help="also print per-op tables (ours: SDSERVE_PROFILE=1; diffusers: torch.profiler)")
    parser.add_argument("--precision", default="f32",
                        help="ours: comma-separated precisions, one row each (f32, bf16; default f32)")
    parser.add_argument("--phase", choices=["torch"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.size % 8 or not 64 <= args.size <= 2048 or args.steps < 1:
        parser.error("--size must be a multiple of 8 in 64..2048 and --steps at least 1")
    precisions = args.precision.split(",")
    if not precisions or any(p not in ("f32", "bf16") for p in precisions):
        parser.error("--precision takes f32 and/or bf16, comma-separated")
    if args.phase:
        print(json.dumps(torch_phase(args.model_dir, args.size, args.steps, args.threads, args.profile)))
        return
    with tempfile.TemporaryDirectory() as tmp:
        model_dir = args.model_dir or os.path.join(tmp, "sd15")
        if not os.path.exists(os.path.join(model_dir, "model_index.json")):
            cargo_bench(["write-model", model_dir], args.threads)
        rows = {p: ours(model_dir, args.size, args.steps, args.threads, args.profile, p) for p in precisions}
        child = [sys.executable, __file__, "--phase", "torch", "--model-dir", model_dir, "--size", str(args.size),
                 "--steps", str(args.steps), "--threads", str(args.threads)] + (["--profile"] if args.profile else [])
        out = subprocess.run(child, check=True, stdout=subprocess.PIPE, text=True).stdout
        ref = json.loads(out.strip().splitlines()[-1])
    print(f"CPU: {cpu_name()}\n")
    print(f"| SD 1.5 shapes, {args.size}×{args.size}, {args.threads} threads, \"Euler a\" | "
          f"s / step (CFG batch 2) | vs PyTorch | {args.steps} steps total | vs PyTorch | load |")
    print("|---|---|---|---|---|---|")
    print(f"| diffusers on PyTorch {ref['version']}, f32 | {ref['step_seconds']:.2f} | 1.00 "
          f"| {ref['total_seconds']:.2f} | 1.00 | {ref['load_seconds']:.2f} |")
    for p, r in rows.items():
        what = {"f32": "f16 weights (mmap), f32 compute", "bf16": "--precision bf16"}[p]
        print(f"| sdserve, {what} | {r['step_seconds']:.2f} | {r['step_seconds'] / ref['step_seconds']:.2f} "
              f"| {r['total_seconds']:.2f} | {r['total_seconds'] / ref['total_seconds']:.2f} | {r['load_seconds']:.2f} |")


if __name__ == "__main__":
    main()
