#!/usr/bin/env bash
# One-command check of the CUDA backend on a machine with an NVIDIA GPU (driver, CUDA 12 or 13
# libraries, PyTorch for the reference; no Rust toolchain, no network needed there).
#
# Build here (an ordinary x86-64 machine), then bring the folder `gpu-bundle/` (< 64 MiB):
#   scripts/gpu-check.sh --build      # writes gpu-bundle/: the test binary, the bench binary,
#                                     # the standin libraries, and the diffusers wheels (the
#                                     # GPU image has PyTorch and transformers, not diffusers)
# On the GPU machine, from the repository root (or the bundle's parent):
#   bash scripts/gpu-check.sh         # finishes in under 8 minutes on an H100/H200
# Here, without a GPU, the same flow as a dry run on the standin (emu/standin/: libcuda, cuBLAS
# and cuBLASLt on the host) with the tiny model; the reference runs on the CPU in f32 if
# diffusers is importable (PYTHON=... picks the interpreter):
#   bash scripts/gpu-check.sh --standin
#
# It (1) finds libnvrtc, libcublas and libcublasLt (LD_LIBRARY_PATH, the CUDA toolkit, or the
# nvidia-* pip packages PyTorch brings, CUDA 12 or 13) and exposes them under the names cudarc loads: the newest NVRTC
# no newer than the driver (PTX from a newer NVRTC does not load), cuBLAS of the driver's major
# version; (2) reruns the CUDA backend's test suite with SDSERVE_TEST_DEVICE=cuda:0: every op
# through the Tensor API against the CPU backend, and the tiny txt2img/img2img parity; (3) runs
# the SD 1.5-shaped 512×512 Euler a benchmark on the GPU (the default precision, bf16, and the
# default without the UNet step recorded as a CUDA graph)
# beside diffusers fp16 (SDPA) on the same GPU, and prints one table; (4) prints the GPU time
# per kernel family and per kernel of a profiled run; (5) where the machine has
# compute-sanitizer, runs memcheck and racecheck over the device tests.
set -euo pipefail
cd "$(dirname "$0")/.."
BUNDLE=gpu-bundle
PYTHON=${PYTHON:-python3}

if [ "${1:-}" = "--build" ]; then
    mkdir -p "$BUNDLE"
    artifact() {  # the executable of target kind $1 that `${@:2}` builds, from cargo's JSON
        "${@:2}" --message-format=json 2>/dev/null | python3 -c 'import json,sys
for l in sys.stdin:
    m=json.loads(l)
    if m.get("reason")=="compiler-artifact" and m.get("executable") and m["target"]["kind"]==[sys.argv[1]]: print(m["executable"])' "$1" | tail -n 1
    }
    # Kinds, not order: building the bench also builds the server binary the benches may run.
    cp "$(artifact lib cargo test -p inference-server --lib --no-run)" "$BUNDLE/inference-server-tests"
    cp "$(artifact bench cargo bench -p inference-server --bench pipeline --no-run)" "$BUNDLE/pipeline-bench"
    strip "$BUNDLE/inference-server-tests" "$BUNDLE/pipeline-bench" 2>/dev/null || true
    standin=$(ls -td target/*/build/inference-server-*/out/sdemu/standin | head -n 1)
    rm -rf "$BUNDLE/standin" && cp -rP "$standin" "$BUNDLE/standin"
    python3 -m pip download --quiet --disable-pip-version-check --no-deps --only-binary=:all: \
        --python-version 3.12 --implementation cp --platform manylinux2014_x86_64 \
        -d "$BUNDLE/wheels" diffusers==0.42.1 importlib_metadata==10.2.0 \
        || echo "warning: could not download the diffusers wheels; the reference needs diffusers on the GPU machine" >&2
    du -sh "$BUNDLE"
    exit 0
fi

MODE=gpu
[ "${1:-}" = "--standin" ] && MODE=standin
# Under the device tool, $OUT comes back whole: keep the full log there too (the tool's
# output_tail holds only the end).
if [ -n "${OUT:-}" ] && [ -d "$OUT" ]; then exec > >(tee "$OUT/gpu-check.log") 2>&1; fi
[ -x "$BUNDLE/inference-server-tests" ] || { echo "no $BUNDLE/: run scripts/gpu-check.sh --build on the build machine" >&2; exit 2; }
export XDG_CACHE_HOME=${XDG_CACHE_HOME:-$(mktemp -d)}
libs=$(mktemp -d)  # the library names cudarc loads
run=$(mktemp -d)   # this run's results
find_all() { find $(tr ':' ' ' <<<"${LD_LIBRARY_PATH:-}") "$PWD/.cuda-tools" /usr/local/cuda*/lib64 /usr/lib/x86_64-linux-gnu \
    $("$PYTHON" -c 'import site;print(" ".join(site.getsitepackages()))' 2>/dev/null) \
    -name "$1" 2>/dev/null | sort -u || true; }
nvrtc_version() { "$PYTHON" -c 'import ctypes,sys
l=ctypes.CDLL(sys.argv[1]); a=ctypes.c_int(); b=ctypes.c_int()
l.nvrtcVersion(ctypes.byref(a),ctypes.byref(b)); print(f"{a.value}.{b.value}")' "$1" 2>/dev/null || true; }
version_le() { [ "$(printf '%s\n%s\n' "$1" "$2" | sort -V | head -n 1)" = "$1" ]; }

if [ "$MODE" = gpu ]; then
    nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>/dev/null \
        || echo "nvidia-smi not found: is this the GPU machine?"
    driver_cuda=$(nvidia-smi 2>/dev/null | sed -n 's/.*CUDA Version: *\([0-9.]*\).*/\1/p' | head -n 1)
    driver_cuda=${driver_cuda:-99.9}
else
    driver_cuda=${SDSERVE_STANDIN_DRIVER:-12.9}
    for name in libcuda.so libcublas.so libcublasLt.so; do ln -s "$PWD/$BUNDLE/standin/libsdstandin.so" "$libs/$name"; done
    echo "standin: libcuda, cuBLAS and cuBLASLt from $BUNDLE/standin (driver CUDA $driver_cuda)"
fi
echo "driver supports CUDA $driver_cuda"

# NVRTC: the newest no newer than the driver.
best=""; best_v=""
for lib in $(find_all 'libnvrtc.so.1[23]*'); do
    case "$lib" in *builtins*) continue ;; esac
    v=$(nvrtc_version "$lib"); [ -n "$v" ] || continue
    if version_le "$v" "$driver_cuda" && { [ -z "$best_v" ] || version_le "$best_v" "$v"; }; then best=$lib; best_v=$v; fi
done
[ -n "$best" ] || { echo "no libnvrtc.so.12/13 no newer than CUDA $driver_cuda found" >&2; exit 2; }
ln -sf "$best" "$libs/libnvrtc.so"
for dep in "$(dirname "$best")"/libnvrtc-builtins.so*; do
    if [ -e "$dep" ]; then ln -sf "$dep" "$libs/"; fi
done
echo "libnvrtc.so -> $best (NVRTC $best_v)"

if [ "$MODE" = gpu ]; then
    # cuBLAS and cuBLASLt of the driver's major version (minor versions are compatible).
    major=${driver_cuda%%.*}
    for name in libcublas.so libcublasLt.so; do
        found=$(find_all "$name.$major*" | sort -V | tail -n 1)
        [ -n "$found" ] || { echo "missing $name.$major* (cuBLAS for CUDA $major)" >&2; exit 2; }
        ln -sf "$found" "$libs/$name"
        echo "$name -> $found"
    done
fi
export LD_LIBRARY_PATH="$libs:${LD_LIBRARY_PATH:-}"

echo "== CUDA backend tests on cuda:0 (ops against the CPU backend, tiny pipeline parity)"
# (The op-level tests under engine::cuda::ops run on the emulator whatever the device: skipped.)
SDSERVE_TEST_DEVICE=cuda:0 timeout 240 "$BUNDLE/inference-server-tests" engine::cuda::device_tests \
    engine::cuda::pipeline_tests engine::cuda::nvrtc --test-threads 1 2>&1 | tail -n 25 \
    || echo "(the CUDA test suite FAILED or timed out: see above; the benchmark still runs)"
# The device tests above measure which convolution path wins per shape; run the convolutions
# again with our implicit-GEMM kernel forced, so it is checked on the GPU whatever won.
echo "== the same ops with the implicit-GEMM convolution forced"
SDSERVE_CUDA_CONV=implicit SDSERVE_TEST_DEVICE=cuda:0 timeout 60 "$BUNDLE/inference-server-tests" engine::cuda::device_tests --test-threads 1 2>&1 | tail -n 8 \
    || echo "(the implicit-GEMM run FAILED or timed out: see above)"

model=$(mktemp -d)/sd15
if [ "$MODE" = gpu ]; then
    size=512; steps=20; ref_device=cuda; ref_name="diffusers fp16 (SDPA)"
    echo "== SD 1.5 shapes, 512x512, Euler a, 20 steps, batch 1 with CFG"
    "$BUNDLE/pipeline-bench" write-model "$model"
else
    size=64; steps=3; ref_device=cpu; ref_name="diffusers f32 on the CPU"
    echo "== dry run: the tiny model, 64x64, Euler a, 3 steps, batch 1 with CFG (not a timing)"
    "$BUNDLE/pipeline-bench" write-tiny-model "$model"
fi
timeout 200 "$BUNDLE/pipeline-bench" --model "$model" --device cuda:0 --size $size --steps $steps | tee "$run/ours.txt" \
    || echo "(our benchmark FAILED or timed out: see above)"
# The default keeps the VAE in f32 (SD 1.x's VAE overflows in f16); bf16 runs it on tensor
# cores too: the second row says what the VAE's precision costs.
timeout 120 "$BUNDLE/pipeline-bench" --model "$model" --device cuda:0 --size $size --steps $steps --precision bf16 \
    | tee "$run/ours-bf16.txt" || echo "(our bf16 benchmark FAILED or timed out: see above)"
# The default records each run's UNet step as a CUDA graph (one launch instead of ~1,070 per
# step); the third row runs every step launch by launch, to show what the graph saves.
SDSERVE_CUDA_GRAPHS=0 timeout 120 "$BUNDLE/pipeline-bench" --model "$model" --device cuda:0 --size $size --steps $steps \
    | tee "$run/ours-nograph.txt" || echo "(our benchmark without graphs FAILED or timed out: see above)"

# The reference: diffusers fp16 with SDPA on the same GPU, the same weights, the same settings.
if ! "$PYTHON" -c 'import diffusers' 2>/dev/null && ls "$BUNDLE"/wheels/*.whl >/dev/null 2>&1; then
    site=$(mktemp -d)
    "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target "$site" "$BUNDLE"/wheels/*.whl
    export PYTHONPATH="$site${PYTHONPATH:+:$PYTHONPATH}"
fi
timeout 150 "$PYTHON" - "$model" "$ref_device" "$size" "$steps" <<'PY' | tee "$run/ref.txt" || echo "(the diffusers reference did not run)"
import sys, time, torch
from diffusers import StableDiffusionPipeline, EulerAncestralDiscreteScheduler
model, device, size, steps = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
dtype = torch.float16 if device == "cuda" else torch.float32
pipe = StableDiffusionPipeline.from_pretrained(model, torch_dtype=dtype, safety_checker=None).to(device)
pipe.scheduler = EulerAncestralDiscreteScheduler.from_config(pipe.scheduler.config)
pipe.set_progress_bar_config(disable=True)
args = dict(prompt="a photograph of an astronaut riding a horse", negative_prompt="blurry",
            num_inference_steps=steps, guidance_scale=7.0, height=size, width=size)
pipe(**args)  # warm-up
if device == "cuda":
    torch.cuda.synchronize(); torch.cuda.reset_peak_memory_stats()
t = time.perf_counter(); pipe(**args)
if device == "cuda":
    torch.cuda.synchronize()
dt = time.perf_counter() - t
print(f"RESULT total_seconds {dt}")
print(f"RESULT it_per_s {steps / dt}")
if device == "cuda":
    print(f"RESULT peak_in_use_mib {torch.cuda.max_memory_allocated() / 2**20}")
    print(f"RESULT peak_held_mib {torch.cuda.max_memory_reserved() / 2**20}")
PY

echo "== the table (${size}x${size}, $steps steps, Euler a, batch 1 with CFG; $MODE)"
"$PYTHON" - "$run/ours.txt" "$run/ours-bf16.txt" "$run/ours-nograph.txt" "$run/ref.txt" "$ref_name" <<'PY'
import sys
def results(path):
    out = {}
    try:
        for line in open(path):
            if line.startswith("RESULT "):
                _, k, v = line.split()
                out[k] = float(v)
    except OSError:
        pass
    return out
ours, ours_bf16, ours_nograph, ref = (results(p) for p in sys.argv[1:5])
def cell(r, k, fmt):
    return fmt.format(r[k]) if k in r else "n/a"
print("| | it/s (steps / generation) | generation, s | peak memory, MiB (in use / held) | it/s vs diffusers |")
print("|---|---|---|---|---|")
rows = (("sdserve, f16 (VAE f32): the default", ours), ("sdserve, bf16 (VAE bf16 too)", ours_bf16),
        ("sdserve, f16, no CUDA graph", ours_nograph), (sys.argv[5], ref))
for name, r in rows:
    ratio = f"{r['it_per_s'] / ref['it_per_s']:.2f}×" if "it_per_s" in r and "it_per_s" in ref else "n/a"
    mem = f"{cell(r, 'peak_in_use_mib', '{:.0f}')} / {cell(r, 'peak_held_mib', '{:.0f}')}"
    print(f"| {name} | {cell(r, 'it_per_s', '{:.2f}')} | {cell(r, 'total_seconds', '{:.2f}')} | {mem} | {ratio} |")
PY

# Where the GPU's time goes: every kernel and GEMM bracketed by events (SDSERVE_PROFILE=1; the
# steps then run without a graph, so this run's wall time is not a benchmark).
echo "== GPU time per kernel (SDSERVE_PROFILE=1, $size×$size, 5 steps)"
SDSERVE_PROFILE=1 timeout 120 "$BUNDLE/pipeline-bench" --model "$model" --device cuda:0 --size $size --steps 5 \
    2>"$run/profile.err" | sed -n '/^GPU time by kernel family/,$p' \
    || { tail -n 5 "$run/profile.err"; echo "(the profiled run FAILED or timed out)"; }

# Last, after the table: NVIDIA's own checkers over the device tests, where the machine has
# them: memcheck (out-of-bounds and misaligned accesses) and racecheck (shared-memory hazards a
# missing __syncthreads leaves; the emulator sees those only under some thread orders).
sanitizer=$(command -v compute-sanitizer || ls /usr/local/cuda*/bin/compute-sanitizer 2>/dev/null | head -n 1 || true)
if [ "$MODE" = gpu ] && [ -n "$sanitizer" ]; then
    for tool in memcheck racecheck; do
        echo "== compute-sanitizer --tool $tool over the device tests"
        SDSERVE_TEST_DEVICE=cuda:0 timeout 90 "$sanitizer" --tool "$tool" --print-limit 20 \
            "$BUNDLE/inference-server-tests" engine::cuda::device_tests --test-threads 1 2>&1 \
            | grep -E "ERROR SUMMARY|RACECHECK SUMMARY|^=========  *(Invalid|Race|Error)|test result" | head -n 30 \
            || echo "(compute-sanitizer $tool printed no summary: it failed or timed out)"
    done
fi
