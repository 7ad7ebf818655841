#!/usr/bin/env python3
"""GEMM throughput on SD 1.5 shapes: ours (inference-server/benches/gemm.rs, criterion) beside
torch.matmul, same machine, same thread count, one run.

    /work/.venv-ref/bin/python bench/gemm.py --threads 2

Prints a Markdown table: GFLOP/s (2*m*n*k per product) for each shape and ours/PyTorch
(above 1 means faster than PyTorch). The linear-with-f16-weight rows compare Tensor::linear on an
f16 weight with torch converting the same weight to f32 first.
"""

import argparse
import os
import re
import subprocess

import torch

from gemm_torch import SHAPES, bench

UNITS = {"Kelem/s": 1e3, "Melem/s": 1e6, "Gelem/s": 1e9, "Telem/s": 1e12}


def ours(threads: int) -> dict:
    """GFLOP/s per (group, shape name), the median of criterion's throughput estimate."""
    env = dict(os.environ, RAYON_NUM_THREADS=str(threads))
    out = subprocess.run(
        ["cargo", "bench", "-q", "-p", "inference-server", "--bench", "gemm", "--",
         "--noplot", "matmul_f32|linear_f16_weight"],
        env=env, check=True, capture_output=True, text=True,
    ).stdout
    results, current = {}, None
    for line in out.splitlines():
        head = re.match(r"^(matmul_f32|linear_f16_weight)/(\w+)/", line)
        if head:
            current = (head.group(1), head.group(2))
        thrpt = re.search(r"thrpt:\s+\[\S+ \S+ (\S+) (\S+) ", line)
        if thrpt and current:
            results[current] = float(thrpt.group(1)) * UNITS[thrpt.group(2)] / 1e9
            current = None
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--min-time", type=float, default=2.0, help="seconds of torch timing per shape")
    args = parser.parse_args()
    r = ours(args.threads)
    torch.set_num_threads(args.threads)
    print(f"| shape ({args.threads} threads) | m×k×n | sdserve GFLOP/s | PyTorch {torch.__version__} GFLOP/s | ours / PyTorch |")
    print("|---|---|---|---|---|")
    for name, m, k, n in SHAPES:
        for group, label, f16 in (("matmul_f32", name, False), ("linear_f16_weight", f"{name}, linear f16 weight", True)):
            if (group, name) not in r:
                continue
            theirs = 2 * m * n * k / bench(m, k, n, args.min_time, f16) / 1e9
            print(f"| {label} | {m}×{k}×{n} | {r[(group, name)]:.1f} | {theirs:.1f} | {r[(group, name)] / theirs:.2f} |")


if __name__ == "__main__":
    main()
