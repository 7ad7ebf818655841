#!/usr/bin/env python3
"""Reference GEMM throughput with torch.matmul on the SD 1.5 shapes of
inference-server/benches/gemm.rs, at a fixed thread count.

    /work/.venv-ref/bin/python bench/gemm_torch.py --threads 2
    RAYON_NUM_THREADS=2 cargo bench -p inference-server --bench gemm

Prints a table of median time and GFLOP/s (2*m*n*k FLOPs per product).
"""

import argparse
import statistics
import time

import torch

# (name, m, k, n): [m, k] @ [k, n]; keep in sync with benches/gemm.rs.
SHAPES = [
    ("attn_proj_64x64", 4096, 320, 320),
    ("attn_proj_32x32", 1024, 640, 640),
    ("attn_proj_16x16", 256, 1280, 1280),
    ("conv3x3_im2col_64x64", 4096, 2880, 320),
    ("ff_in_64x64", 4096, 320, 2560),
    ("attn_scores_head_64x64", 4096, 40, 4096),
    ("clip_mlp", 77, 768, 3072),
]


def bench(m: int, k: int, n: int, min_time: float, linear_f16: bool) -> float:
    """Median seconds per product after warm-up."""
    g = torch.Generator().manual_seed(0)
    a = torch.rand(m, k, generator=g) - 0.5
    if linear_f16:
        # Mirrors Tensor::linear with an f16 weight: convert to f32, then x @ w.T.
        w = (torch.rand(n, k, generator=g) - 0.5).half()
        run = lambda: torch.nn.functional.linear(a, w.float())  # noqa: E731
    else:
        b = torch.rand(k, n, generator=g) - 0.5
        run = lambda: torch.matmul(a, b)  # noqa: E731
    for _ in range(3):
        run()
    times = []
    start = time.perf_counter()
    while time.perf_counter() - start < min_time or len(times) < 5:
        t0 = time.perf_counter()
        run()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=2, help="torch.set_num_threads (match RAYON_NUM_THREADS)")
    parser.add_argument("--min-time", type=float, default=2.0, help="seconds of timing per shape")
    parser.add_argument("--linear-f16", action="store_true", help="also time linear with an f16 weight")
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}")
    print(f"{'shape':<34} {'m x k x n':>18} {'ms':>9} {'GFLOP/s':>9}")
    for name, m, k, n in SHAPES:
        variants = [(name, False)]
        if args.linear_f16 and (name.startswith("attn_proj") or name == "clip_mlp"):
            variants.append((name + " (linear f16 w)", True))
        for label, lin in variants:
            secs = bench(m, k, n, args.min_time, lin)
            gflops = 2 * m * n * k / secs / 1e9
            print(f"{label:<34} {f'{m}x{k}x{n}':>18} {secs * 1e3:9.3f} {gflops:9.1f}")


if __name__ == "__main__":
    main()
