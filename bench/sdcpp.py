#!/usr/bin/env python3
"""stable-diffusion.cpp (PyPI `stable-diffusion-cpp-python`) on a full-size SD 1.5 single-file
checkpoint, for bench/unet_vae.py: seconds per UNet step (classifier-free guidance, so a
conditional and an unconditional pass: the work of one batch-2 forward), VAE decode seconds
and the process's peak resident set.

    /work/.venv-ref/bin/python bench/sdcpp.py --threads 2

The checkpoint comes from `cargo bench --bench unet_vae -- sd15-single-file PATH`: original key
names, f16, zero data (a sparse file), which costs no disk and times the same as real weights.
Two 512×512 generations with different step counts run in one child process; seconds per step
is the difference of their sampling times over the difference of steps, and the decode time is
read from stable-diffusion.cpp's log. Prints one JSON line.
"""

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
STEPS = (1, 3)


def status_mib(field: str) -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    return float("nan")


def run(path: str, threads: int) -> dict:
    """Child: load the checkpoint, generate at each step count, report wall times."""
    from stable_diffusion_cpp import StableDiffusion

    start = time.perf_counter()
    sd = StableDiffusion(model_path=path, n_threads=threads, verbose=True)
    out = {"load_seconds": time.perf_counter() - start}
    for steps in STEPS:
        start = time.perf_counter()
        sd.generate_image(prompt="a photograph of an astronaut riding a horse", width=512, height=512,
                          sample_steps=steps, cfg_scale=7.0, seed=0)
        out[f"generate_{steps}_seconds"] = time.perf_counter() - start
    out["peak_mib"] = status_mib("VmHWM")
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--run", metavar="CHECKPOINT", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.run:
        print("\nJSON " + json.dumps(run(args.run, args.threads)))
        return
    from importlib.metadata import version

    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "sd15_f16.safetensors")
        subprocess.run(["cargo", "bench", "-q", "-p", "inference-server", "--bench", "unet_vae", "--",
                        "sd15-single-file", path], check=True, cwd=os.path.dirname(HERE),
                       capture_output=True)
        child = subprocess.run([sys.executable, __file__, "--run", path, "--threads", str(args.threads)],
                               capture_output=True, text=True)
    log = child.stdout + child.stderr
    if child.returncode != 0:
        sys.exit(f"stable-diffusion.cpp failed (exit {child.returncode}): {log.strip().splitlines()[-1:]}")
    print(log, file=sys.stderr)
    r = json.loads(log.split("JSON ", 1)[1].splitlines()[0])
    sampling = [float(x) for x in re.findall(r"sampling completed, taking ([0-9.]+)s", log)]
    decode = [float(x) for x in re.findall(r"decode_first_stage completed, taking ([0-9.]+)s", log)]
    decode += [float(x) for x in re.findall(r"latent \d+ decoded, taking ([0-9.]+)s", log)]
    if len(sampling) == len(STEPS):
        per_step = (sampling[1] - sampling[0]) / (STEPS[1] - STEPS[0])
    else:  # no log lines: difference of the whole generations
        per_step = (r[f"generate_{STEPS[1]}_seconds"] - r[f"generate_{STEPS[0]}_seconds"]) / (STEPS[1] - STEPS[0])
    print(json.dumps({
        "version": version("stable-diffusion-cpp-python"),
        "unet_seconds": per_step,
        "unet_note": " (one cfg sampling step)",
        "vae_seconds": min(decode) if decode else float("nan"),
        "peak_mib": r["peak_mib"],
        "load_seconds": r["load_seconds"],
        **{k: v for k, v in r.items() if k.startswith("generate_")},
    }))


if __name__ == "__main__":
    main()
