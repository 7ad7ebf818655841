#!/usr/bin/env python3
"""UNet and VAE decoder on the real SD 1.5 shapes: ours (inference-server/benches/unet_vae.rs)
beside diffusers on PyTorch CPU and stable-diffusion.cpp (bench/sdcpp.py), same machine, same
thread count, one run.

    /work/.venv-ref/bin/python bench/unet_vae.py --threads 2
    SDSERVE_BENCH_PRECISION=bf16 /work/.venv-ref/bin/python bench/unet_vae.py --threads 2 --no-sdcpp
    /work/.venv-ref/bin/python bench/unet_vae.py --threads 2 --no-sdcpp --profile   # per-op tables
    /work/.venv-ref/bin/python bench/unet_vae.py --threads 2 --no-sdcpp --paths avx512,avx2,portable,bf16

--paths runs ours once per instruction-set path (SDSERVE_CPU_ISA=avx512|avx2|portable; bf16 is
the default path with SDSERVE_BENCH_PRECISION=bf16), one row each, beside one PyTorch run; a
path this CPU lacks is skipped. The table's heading names the CPU and its vector extensions.

Ours: f16 weights from a memory-mapped safetensors file. PyTorch: UNet2DConditionModel and
AutoencoderKL built from the same configs with random init, float32, inference_mode. Each
measurement runs in its own process so its peak resident set (VmHWM) is its own. Prints one
Markdown table: median seconds, ours / PyTorch, peak MiB and anonymous MiB after load.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
RUNS = int(os.environ.get("SDSERVE_BENCH_RUNS", "3"))


def status_mib(field: str) -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    return float("nan")


def cpu_name() -> str:
    """The CPU's model name and the vector extensions that pick our paths (from /proc/cpuinfo)."""
    info, flags = {}, set()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                key, _, value = line.partition(":")
                key = key.strip()
                if key in ("model name", "cpu family", "model") and key not in info:
                    info[key] = value.strip()
                elif key == "flags" and not flags:
                    flags = set(value.split())
    except OSError:
        pass
    name = f"{info.get('model name', 'unknown CPU')}, family {info.get('cpu family', '?')} model {info.get('model', '?')}"
    wanted = ["avx2", "fma", "avx512f", "avx512bw", "avx512vl", "avx512_vnni", "avx512_bf16"]
    return f"{name} ({', '.join(f for f in wanted if f in flags) or 'no AVX2'})"


def path_env(path: str) -> dict:
    """The environment that puts ours on `path`."""
    if path == "auto":
        return {}
    if path == "bf16":
        return {"SDSERVE_BENCH_PRECISION": "bf16"}
    return {"SDSERVE_CPU_ISA": path}


def path_label(path: str) -> str:
    if path == "bf16" or (path == "auto" and os.environ.get("SDSERVE_BENCH_PRECISION") == "bf16"):
        return "bf16 weights, activations and products (SDSERVE_BENCH_PRECISION=bf16)"
    isa = {"auto": "", "avx512": ", SDSERVE_CPU_ISA=avx512 (own GEMM, AVX-512 row kernels)",
           "avx2": ", SDSERVE_CPU_ISA=avx2 (gemm crate's AVX2 GEMM, AVX2 row kernels)",
           "portable": ", SDSERVE_CPU_ISA=portable (own plain-Rust GEMM and row kernels for the "
                       "baseline target)"}[path]
    return f"f16 weights (mmap), f32 compute{isa}"


def path_available(path: str, cpu: str) -> bool:
    need = {"avx512": "avx512f", "avx2": "avx2", "bf16": "", "portable": "", "auto": ""}[path]
    return need in cpu


def ours(threads: int, profile: bool, extra_env: dict | None = None) -> dict:
    env = dict(os.environ, RAYON_NUM_THREADS=str(threads), SDSERVE_BENCH_RUNS=str(RUNS), **(extra_env or {}))
    if profile:
        env["SDSERVE_PROFILE"] = "1"  # the bench prints the per-op table of its last run
    out = subprocess.run(
        ["cargo", "bench", "-q", "-p", "inference-server", "--bench", "unet_vae"],
        env=env, check=True, stdout=subprocess.PIPE, text=True, cwd=os.path.dirname(HERE),
    ).stdout
    print(out, file=sys.stderr)
    return {k: float(v) for k, v in (l.split()[1:3] for l in out.splitlines() if l.startswith("RESULT "))}


def torch_phase(model: str, threads: int, profile: bool) -> dict:
    """Runs in a child process: builds one diffusers model, times it, reports JSON on stdout."""
    import torch
    from diffusers import AutoencoderKL, UNet2DConditionModel

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    before = status_mib("RssAnon")
    if model == "unet":
        net = UNet2DConditionModel(
            sample_size=64, in_channels=4, out_channels=4,
            down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
            up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3,
            block_out_channels=(320, 640, 1280, 1280), layers_per_block=2,
            cross_attention_dim=768, attention_head_dim=8,
        ).eval()
        latents, context = torch.randn(2, 4, 64, 64), torch.randn(2, 77, 768)
        t = torch.tensor([999.0, 999.0])
        run = lambda: net(latents, t, encoder_hidden_states=context).sample
    else:
        net = AutoencoderKL(
            in_channels=3, out_channels=3,
            down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
            block_out_channels=(128, 256, 512, 512), layers_per_block=2, latent_channels=4,
            sample_size=512,
        ).eval()
        latents = torch.randn(1, 4, 64, 64)
        run = lambda: net.decode(latents).sample
    loaded = status_mib("RssAnon") - before
    times = []
    with torch.inference_mode():
        run()
        for _ in range(RUNS):
            start = time.perf_counter()
            run()
            times.append(time.perf_counter() - start)
        if profile:  # one more run under torch.profiler: its per-op table on stderr
            with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
                run()
            print(f"PyTorch {model}, per op:", file=sys.stderr)
            print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=25),
                  file=sys.stderr)
    return {"seconds": statistics.median(times), "anon_after_load_mib": loaded, "peak_mib": status_mib("VmHWM")}


def in_child(args: list[str]) -> dict:
    out = subprocess.run([sys.executable, *args], check=True, stdout=subprocess.PIPE, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--phase", choices=["unet", "vae"], help=argparse.SUPPRESS)
    parser.add_argument("--no-sdcpp", action="store_true", help="skip stable-diffusion.cpp")
    parser.add_argument("--profile", action="store_true",
                        help="also print per-op tables (ours: SDSERVE_PROFILE=1; torch.profiler)")
    parser.add_argument("--paths", default="auto",
                        help="comma-separated: auto, avx512, avx2, portable, bf16 (one row each)")
    args = parser.parse_args()
    paths = [p.strip() for p in args.paths.split(",") if p.strip()]
    for p in paths:
        if p not in ("auto", "avx512", "avx2", "portable", "bf16"):
            parser.error(f"--paths: unknown path {p!r} (auto, avx512, avx2, portable, bf16)")
    if args.phase:
        print(json.dumps(torch_phase(args.phase, args.threads, args.profile)))
        return
    import torch

    cpu = cpu_name()
    paths = [p for p in paths if path_available(p, cpu)]
    rs = {p: ours(args.threads, args.profile, path_env(p)) for p in paths}
    prof = ["--profile"] if args.profile else []
    ref = {m: in_child([__file__, "--phase", m, "--threads", str(args.threads), *prof])
           for m in ("unet", "vae")}
    sdcpp = None
    if not args.no_sdcpp:
        try:
            sdcpp = in_child([os.path.join(HERE, "sdcpp.py"), "--threads", str(args.threads)])
        except (subprocess.CalledProcessError, json.JSONDecodeError, IndexError) as e:
            err = getattr(e, "stderr", "") or str(e)
            sdcpp = {"error": err.strip().splitlines()[-1] if err.strip() else repr(e)}
    print(f"CPU: {cpu}\n")
    print(f"| SD 1.5 shapes, {args.threads} threads | seconds (median of {RUNS}) | vs PyTorch "
          "| peak MiB (VmHWM) | anon MiB after load |")
    print("|---|---|---|---|---|")
    labels = {"unet": "UNet forward, batch 2, 4×64×64, context 2×77×768",
              "vae": "VAE decode, 1×4×64×64 → 3×512×512"}
    for m in ("unet", "vae"):
        t_ref = ref[m]["seconds"]
        print(f"| **{labels[m]}** | | | | |")
        print(f"| PyTorch {torch.__version__}, f32 | {t_ref:.2f} | 1.00 "
              f"| {ref[m]['peak_mib']:.0f} | {ref[m]['anon_after_load_mib']:.0f} |")
        for p, r in rs.items():
            t = r[f"{m}_seconds"]
            print(f"| sdserve, {path_label(p)} | {t:.2f} | {t / t_ref:.2f} "
                  f"| {r[f'{m}_peak_mib']:.0f} | {r[f'{m}_anon_after_load_mib']:.0f} |")
        if sdcpp is not None and "error" not in sdcpp:
            t = sdcpp.get(f"{m}_seconds", float("nan"))
            note = sdcpp.get(f"{m}_note", "")
            print(f"| stable-diffusion.cpp {sdcpp.get('version', '')}, f16{note} | {t:.2f} | {t / t_ref:.2f} "
                  f"| {sdcpp['peak_mib']:.0f} (whole pipeline) | - |")
    if sdcpp is not None and "error" in sdcpp:
        print(f"\nstable-diffusion.cpp: not measured: {sdcpp['error']}")


if __name__ == "__main__":
    main()
