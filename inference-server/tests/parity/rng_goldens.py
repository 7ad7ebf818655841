"""Goldens for `inference-server/src/sampling/rng`: seeds -> initial noise.

CPU generator: real PyTorch (`torch.Generator().manual_seed(s)` then `torch.randn`).
Philox ("NV" / A1111 GPU seeds): a NumPy re-statement of A1111's
`modules/rng_philox.py` (stable-diffusion-webui), which imitates PyTorch's CUDA randn:
Philox4x32-10, key = the 64-bit seed as two u32 words (low first), counter =
(offset, 0, index, 0), output words 0 and 1 go through Box-Muller (sine branch only).
The file's docstring gives the known output for seed 0, shape (3, 4); this script asserts it.

Subseeds: A1111's `modules/rng.py` `slerp(val, low, high)` (norms over dim 1 of the per-image
[C, H, W] noise), done here in torch float32 exactly as A1111 writes it.

Usage: /work/.venv-ref/bin/python inference-server/tests/parity/rng_goldens.py [out.json]
"""

import json
import os
import sys

import numpy as np
import torch

SEEDS = [0, 1, 42, 2**32 - 1]
SMALL_SHAPES = [[5], [15], [16], [17], [4, 8, 8]]
BIG_SHAPE = [1, 4, 64, 64]
# Consecutive draws from one generator: latent sizes not a multiple of 16 (4x9x9) and the
# element-by-element path (< 16), whose cached second normal carries over between calls.
SEQ_SEEDS = [42, 2**32 - 1]
SEQ_SIZES = [324, 324, 5, 7, 256, 3]
EDGE = 256

# --- Philox, restating A1111 modules/rng_philox.py ---------------------------------------
M0, M1 = 0xD2511F53, 0xCD9E8D57
W0, W1 = 0x9E3779B9, 0xBB67AE85
INV32 = np.array([2.3283064e-10], dtype=np.float32)
INV32_2PI = np.array([2.3283064e-10 * 6.2831855], dtype=np.float32)


def philox_randn(seed, shape, offset=0):
    n = int(np.prod(shape))
    c = np.zeros((4, n), dtype=np.uint32)
    c[0] = offset
    c[2] = np.arange(n, dtype=np.uint32)
    k0 = np.full(n, seed & 0xFFFFFFFF, dtype=np.uint32)
    k1 = np.full(n, seed >> 32, dtype=np.uint32)
    for r in range(10):
        p0 = c[0].astype(np.uint64) * M0
        p1 = c[2].astype(np.uint64) * M1
        hi0, lo0 = (p0 >> 32).astype(np.uint32), (p0 & 0xFFFFFFFF).astype(np.uint32)
        hi1, lo1 = (p1 >> 32).astype(np.uint32), (p1 & 0xFFFFFFFF).astype(np.uint32)
        c = np.stack([hi1 ^ c[1] ^ k0, lo1, hi0 ^ c[3] ^ k1, lo0])
        if r < 9:
            k0 = k0 + np.uint32(W0)
            k1 = k1 + np.uint32(W1)
    # As in rng_philox.py: uint32 array times a float32 *array* promotes to float64.
    u = c[0] * INV32 + INV32 / 2
    v = c[1] * INV32_2PI + INV32_2PI / 2
    assert u.dtype == np.float64
    s = np.sqrt(-2.0 * np.log(u))
    return (s * np.sin(v)).astype(np.float32).reshape(shape)


DOC_SEED0 = [[-0.92466259, -0.42534415, -2.6438457, 0.14518388],
             [-0.12086647, -0.57972564, -0.62285122, -0.32838709],
             [-1.07454231, -0.36314407, -1.67105067, 2.26550497]]
assert np.allclose(philox_randn(0, (3, 4)), np.array(DOC_SEED0), atol=1e-7), "rng_philox docstring"


def cpu_randn(seed, shape):
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed)).numpy()


def randn(source, seed, shape):
    return cpu_randn(seed, shape) if source == "cpu" else philox_randn(seed, shape)


def slerp(val, low, high):
    """A1111 modules/rng.py slerp, verbatim semantics (torch float32)."""
    low_norm = low / torch.norm(low, dim=1, keepdim=True)
    high_norm = high / torch.norm(high, dim=1, keepdim=True)
    dot = (low_norm * high_norm).sum(1)
    if dot.mean() > 0.9995:
        return low * val + high * (1 - val)
    omega = torch.acos(dot)
    so = torch.sin(omega)
    return (torch.sin((1.0 - val) * omega) / so).unsqueeze(1) * low + (
        torch.sin(val * omega) / so).unsqueeze(1) * high


def floats(a):
    return [float(x) for x in np.asarray(a, dtype=np.float32).reshape(-1)]


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    out = sys.argv[1] if len(sys.argv) > 1 else os.path.join(here, "..", "goldens", "rng.json")
    cases = []
    for source in ["cpu", "philox"]:
        for seed in SEEDS:
            for shape in SMALL_SHAPES:
                cases.append({"source": source, "seed": seed, "shape": shape,
                              "values": floats(randn(source, seed, shape))})
            big = randn(source, seed, BIG_SHAPE).reshape(-1)
            cases.append({"source": source, "seed": seed, "shape": BIG_SHAPE,
                          "first": floats(big[:EDGE]), "last": floats(big[-EDGE:]),
                          "sum": float(big.astype(np.float64).sum())})
    subseeds = []
    shape = [4, 8, 8]
    for source in ["cpu", "philox"]:
        for seed, subseed, strength in [(42, 7, 0.3), (1, 2, 0.75)]:
            batch = []
            for i in range(2):  # batch item i: seed + i, subseed + i
                low = torch.from_numpy(randn(source, seed + i, shape))
                high = torch.from_numpy(randn(source, subseed + i, shape))
                batch.append(floats(slerp(strength, low, high)))
            subseeds.append({"source": source, "seed": seed, "subseed": subseed,
                             "strength": strength, "shape": shape, "batch": batch})
    sequences = []
    for source in ["cpu", "philox"]:
        for seed in SEQ_SEEDS:
            if source == "cpu":
                g = torch.Generator().manual_seed(seed)
                draws = [torch.randn(n, generator=g).numpy() for n in SEQ_SIZES]
            else:  # rng_philox.Generator.randn: the offset advances by one per call
                draws = [philox_randn(seed, (n,), offset=k) for k, n in enumerate(SEQ_SIZES)]
            sequences.append({"source": source, "seed": seed, "sizes": SEQ_SIZES,
                              "draws": [floats(d) for d in draws]})
    doc = {"torch": torch.__version__, "cpu_capability": torch.backends.cpu.get_cpu_capability(),
           "cases": cases, "subseeds": subseeds, "sequences": sequences}
    with open(out, "w") as f:
        json.dump(doc, f, separators=(",", ":"))
    print(f"wrote {out}: {os.path.getsize(out)} bytes")


if __name__ == "__main__":
    main()
