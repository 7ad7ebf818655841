#!/usr/bin/env bash
# One-command check of the CUDA backend on a machine with an NVIDIA GPU (driver, CUDA 12 or 13
# libraries, PyTorch + diffusers for the reference; no Rust toolchain, no network needed there).
#
# Build here (an ordinary x86-64 machine), then bring the folder `gpu-bundle/` (< 64 MiB):
#   scripts/gpu-check.sh --build      # writes gpu-bundle/: the test binary, the bench binary,
#                                     # this script
# On the GPU machine, from the repository root (or the bundle's parent):
#   bash scripts/gpu-check.sh         # finishes in under 8 minutes on an H100/H200
#
# It (1) finds libnvrtc and libcublas (CUDA toolkit, or the nvidia-* pip packages PyTorch brings,
# CUDA 12 or 13) and exposes them under the names cudarc loads; (2) reruns the CUDA backend's
# test suite with SDSERVE_TEST_DEVICE=cuda:0: every op through the Tensor API against the CPU
# backend, and the tiny txt2img/img2img parity; (3) runs the SD 1.5-shaped 512×512 Euler a
# benchmark on the GPU beside diffusers fp16 (SDPA) on the same GPU, and prints one table.
set -euo pipefail
cd "$(dirname "$0")/.."
BUNDLE=gpu-bundle

if [ "${1:-}" = "--build" ]; then
    mkdir -p "$BUNDLE"
    test_bin=$(cargo test -p inference-server --lib --no-run --message-format=json 2>/dev/null \
        | python3 -c 'import json,sys
for l in sys.stdin:
    m=json.loads(l)
    if m.get("reason")=="compiler-artifact" and m.get("executable") and m["target"]["kind"]==["lib"]: print(m["executable"])' | tail -n 1)
    bench_bin=$(cargo bench -p inference-server --bench pipeline --no-run --message-format=json 2>/dev/null \
        | python3 -c 'import json,sys
for l in sys.stdin:
    m=json.loads(l)
    if m.get("reason")=="compiler-artifact" and m.get("executable"): print(m["executable"])' | tail -n 1)
    cp "$test_bin" "$BUNDLE/inference-server-tests"
    cp "$bench_bin" "$BUNDLE/pipeline-bench"
    strip "$BUNDLE"/* 2>/dev/null || true
    du -sh "$BUNDLE"
    exit 0
fi

[ -x "$BUNDLE/inference-server-tests" ] || { echo "no $BUNDLE/: run scripts/gpu-check.sh --build on the build machine" >&2; exit 2; }
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>/dev/null \
    || echo "nvidia-smi not found: is this the GPU machine?"

# cudarc (built for CUDA 12.9) opens libnvrtc.so / libcublas.so by name: link what is there.
libs=$(mktemp -d)
find_lib() { find "$PWD/.cuda-tools" /usr/local/cuda*/lib64 /usr/lib/x86_64-linux-gnu $(python3 -c 'import site;print(" ".join(site.getsitepackages()))' 2>/dev/null) \
    -name "$1" 2>/dev/null | sort -V | tail -n 1 || true; }
for pair in "libnvrtc.so:libnvrtc.so.1[23]*" "libcublas.so:libcublas.so.1[23]*" "libcublasLt.so:libcublasLt.so.1[23]*"; do
    name=${pair%%:*}; pattern=${pair#*:}
    found=$(find_lib "$pattern")
    [ -n "$found" ] || { echo "missing $name (looked for $pattern)" >&2; exit 2; }
    ln -sf "$found" "$libs/$name"
    for dep in "$(dirname "$found")"/libnvrtc-builtins.so*; do [ -e "$dep" ] && ln -sf "$dep" "$libs/"; done
    echo "$name -> $found"
done
export LD_LIBRARY_PATH="$libs:${LD_LIBRARY_PATH:-}"

echo "== CUDA backend tests on cuda:0 (ops against the CPU backend, tiny pipeline parity)"
SDSERVE_TEST_DEVICE=cuda:0 timeout 240 "$BUNDLE/inference-server-tests" engine::cuda:: --test-threads 1 2>&1 | tail -n 25
# The device tests above measure which convolution path wins per shape; run the convolutions
# again with our implicit-GEMM kernel forced, so it is checked on the GPU whatever won.
echo "== the same ops with the implicit-GEMM convolution forced"
SDSERVE_CUDA_CONV=implicit SDSERVE_TEST_DEVICE=cuda:0 timeout 60 "$BUNDLE/inference-server-tests" engine::cuda::device_tests --test-threads 1 2>&1 | tail -n 8

echo "== SD 1.5 shapes, 512x512, Euler a, 20 steps, batch 1 with CFG"
model=$(mktemp -d)/sd15
"$BUNDLE/pipeline-bench" write-model "$model"
timeout 200 "$BUNDLE/pipeline-bench" --model "$model" --device cuda:0 --steps 20 | tee /tmp/ours.txt
# The reference: diffusers fp16 with SDPA on the same GPU, the same weights, the same settings.
timeout 150 python3 - "$model" <<'PY' || echo "(the diffusers reference did not run)"
import sys, time, torch
from diffusers import StableDiffusionPipeline, EulerAncestralDiscreteScheduler
pipe = StableDiffusionPipeline.from_pretrained(sys.argv[1], torch_dtype=torch.float16, safety_checker=None).to("cuda")
pipe.scheduler = EulerAncestralDiscreteScheduler.from_config(pipe.scheduler.config)
pipe.set_progress_bar_config(disable=True)
args = dict(prompt="a photograph of an astronaut riding a horse", negative_prompt="blurry",
            num_inference_steps=20, guidance_scale=7.0, height=512, width=512)
pipe(**args)  # warm-up
torch.cuda.synchronize(); torch.cuda.reset_peak_memory_stats()
t = time.perf_counter(); pipe(**args); torch.cuda.synchronize(); dt = time.perf_counter() - t
print(f"| diffusers fp16 (SDPA) | {20 / dt:.1f} it/s | {dt:.2f} s | {torch.cuda.max_memory_allocated() / 2**20:.0f} MiB |")
PY
