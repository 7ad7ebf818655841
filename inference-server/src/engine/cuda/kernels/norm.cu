// Normalisations: LayerNorm over rows and GroupNorm (with an optional fused SiLU).
//
// Both are two-pass (mean, then the mean of squared deviations) over data re-read from global
// memory: the centred second pass is as stable as Welford and simpler to merge across a block.
// Weights and biases are f32 whatever the activation dtype (they are small and the engine keeps
// norm parameters in f32). blockDim is a multiple of 32 (<= 1024) and every thread reaches every
// barrier and shuffle.

// Mean and 1/sqrt(var + eps) of the `n` contiguous values at `x`, computed by the whole block.
template <typename T>
__device__ void nm_stats(const T* x, unsigned long long n, float eps, float* red, float& mean, float& inv) {
    float s = 0.0f;
    for (unsigned long long i = threadIdx.x; i < n; i += blockDim.x) s += to_f32(x[i]);
    mean = sd_block_sum(s, red) / (float)n;
    float q = 0.0f;
    for (unsigned long long i = threadIdx.x; i < n; i += blockDim.x) {
        float dv = to_f32(x[i]) - mean;
        q += dv * dv;
    }
    inv = rsqrtf(sd_block_sum(q, red) / (float)n + eps);
}

// ---- LayerNorm: one block per row of `c` ----------------------------------------------------

template <typename T>
__device__ void nm_layer_norm(const T* x, T* out, const float* w, const float* b, unsigned int c, float eps,
                              float* red) {
    unsigned long long base = (unsigned long long)blockIdx.x * c;
    float mean, inv;
    nm_stats(x + base, c, eps, red, mean, inv);
    for (unsigned int j = threadIdx.x; j < c; j += blockDim.x)
        out[base + j] = from_f32<T>((to_f32(x[base + j]) - mean) * inv * w[j] + b[j]);
}

#define NM_LAYER_NORM(T, tn)                                                                         \
    extern "C" __global__ void layer_norm_##tn(const T* x, T* out, const float* w, const float* b,   \
                                               unsigned int rows, unsigned int c, float eps) {        \
        __shared__ float red[32];                                                                    \
        (void)rows;                                                                                  \
        nm_layer_norm<T>(x, out, w, b, c, eps, red);                                                 \
    }                                                                                                \
    SD_EXPORT(layer_norm_##tn)
NM_LAYER_NORM(float, f32)
NM_LAYER_NORM(f16, f16)
NM_LAYER_NORM(bf16, bf16)

// ---- GroupNorm: one block per (sample, group) -------------------------------------------------

// x is n x c x spatial; group g of sample s is the contiguous run of c/groups channels x spatial
// starting at (s*c + g*cpg)*spatial, so blockIdx.x = s*groups + g addresses it directly. The
// output pass folds mean, 1/std, weight and bias into one scale and shift per channel.
template <typename T>
__device__ void nm_group_norm(const T* x, T* out, const float* w, const float* b, unsigned int c,
                              unsigned int spatial, unsigned int groups, float eps, int silu, float* red) {
    unsigned int cpg = c / groups;
    unsigned int g = blockIdx.x % groups;
    unsigned long long len = (unsigned long long)cpg * spatial;
    unsigned long long base = (unsigned long long)blockIdx.x * len;
    float mean, inv;
    nm_stats(x + base, len, eps, red, mean, inv);
    for (unsigned int ci = 0; ci < cpg; ++ci) {
        unsigned int ch = g * cpg + ci;
        float scale = inv * w[ch];
        float shift = b[ch] - mean * scale;
        unsigned long long row = base + (unsigned long long)ci * spatial;
        for (unsigned int j = threadIdx.x; j < spatial; j += blockDim.x) {
            float y = to_f32(x[row + j]) * scale + shift;
            if (silu) y = y / (1.0f + expf(-y));
            out[row + j] = from_f32<T>(y);
        }
    }
}

#define NM_GROUP_NORM(T, tn)                                                                          \
    extern "C" __global__ void group_norm_##tn(const T* x, T* out, const float* w, const float* b,    \
                                               unsigned int c, unsigned int spatial, unsigned int groups, \
                                               float eps, int silu) {                                 \
        __shared__ float red[32];                                                                     \
        nm_group_norm<T>(x, out, w, b, c, spatial, groups, eps, silu, red);                           \
    }                                                                                                 \
    SD_EXPORT(group_norm_##tn)
NM_GROUP_NORM(float, f32)
NM_GROUP_NORM(f16, f16)
NM_GROUP_NORM(bf16, bf16)
