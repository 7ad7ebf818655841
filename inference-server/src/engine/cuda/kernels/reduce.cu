// Reductions: sum over the middle axis (sum/mean) and softmax over the last axis.
//
// Both kernels are launched by ops/reduce.rs with blockDim a multiple of 32 and at most 1024
// threads, and every thread reaches every barrier and shuffle (no early return), which the full
// 0xffffffff masks below require.

// ---- sum over the middle axis ----------------------------------------------------------------

// x is outer x d x inner, out is outer x inner, out = scale * sum_k x[o, k, i] (scale = 1/d for a
// mean). Block (bx, by) with bx*by = 256: threadIdx.x walks `inner` (coalesced reads),
// threadIdx.y splits `d`; partial sums meet in shared memory. grid = (ceil(inner/bx), outer).
// Accumulates in double, as the CPU kernel does, so long reductions lose nothing measurable.
template <typename T>
__device__ void rd_sum_middle(const T* x, T* out, unsigned int outer, unsigned int d, unsigned int inner,
                              float scale, double* part) {
    (void)outer;  // gridDim.y covers it
    unsigned int i = blockIdx.x * blockDim.x + threadIdx.x;
    unsigned int o = blockIdx.y;
    double acc = 0.0;
    if (i < inner)
        for (unsigned int k = threadIdx.y; k < d; k += blockDim.y)
            acc += (double)to_f32(x[((unsigned long long)o * d + k) * inner + i]);
    part[threadIdx.y * blockDim.x + threadIdx.x] = acc;
    __syncthreads();
    // Tree over y (blockDim.y is a power of two).
    for (unsigned int s = blockDim.y / 2; s > 0; s >>= 1) {
        if (threadIdx.y < s) part[threadIdx.y * blockDim.x + threadIdx.x] += part[(threadIdx.y + s) * blockDim.x + threadIdx.x];
        __syncthreads();
    }
    if (threadIdx.y == 0 && i < inner) out[(unsigned long long)o * inner + i] = from_f32<T>((float)(part[threadIdx.x] * scale));
}

#define RD_SUM_MIDDLE(T, tn)                                                                        \
    extern "C" __global__ void sum_middle_##tn(const T* x, T* out, unsigned int outer, unsigned int d, \
                                               unsigned int inner, float scale) {                   \
        __shared__ double part[256];                                                                \
        rd_sum_middle<T>(x, out, outer, d, inner, scale, part);                                     \
    }                                                                                               \
    SD_EXPORT(sum_middle_##tn)
RD_SUM_MIDDLE(float, f32)
RD_SUM_MIDDLE(f16, f16)
RD_SUM_MIDDLE(bf16, bf16)

// ---- softmax over the last axis -------------------------------------------------------------

// One block per row. Pass 1 keeps a per-thread online (max, sum of exp) pair, merged across the
// block (the sum is rescaled to the block max); pass 2 writes exp(x - max) / sum. Rows are re-read
// from global memory (L1/L2 hits for SD's row lengths) rather than staged in shared memory, so
// any row length works.
template <typename T>
__device__ void rd_softmax_last(const T* x, T* out, unsigned int cols, float* red) {
    const T* row = x + (unsigned long long)blockIdx.x * cols;
    T* orow = out + (unsigned long long)blockIdx.x * cols;
    float m = SD_NEG_INF, s = 0.0f;
    for (unsigned int j = threadIdx.x; j < cols; j += blockDim.x) {
        float v = to_f32(row[j]);
        if (v > m) { s = s * expf(m - v) + 1.0f; m = v; } else { s += expf(v - m); }
    }
    float bm = sd_block_max(m, red);
    // A thread that saw no element has m = -inf and s = 0: contributes 0, not NaN.
    float bs = sd_block_sum(m == SD_NEG_INF ? 0.0f : s * expf(m - bm), red);
    float inv = 1.0f / bs;
    for (unsigned int j = threadIdx.x; j < cols; j += blockDim.x)
        orow[j] = from_f32<T>(expf(to_f32(row[j]) - bm) * inv);
}

#define RD_SOFTMAX(T, tn)                                                                           \
    extern "C" __global__ void softmax_last_##tn(const T* x, T* out, unsigned int rows, unsigned int cols) { \
        __shared__ float red[32];                                                                   \
        (void)rows;                                                                                 \
        rd_softmax_last<T>(x, out, cols, red);                                                      \
    }                                                                                               \
    SD_EXPORT(softmax_last_##tn)
RD_SOFTMAX(float, f32)
RD_SOFTMAX(f16, f16)
RD_SOFTMAX(bf16, bf16)
