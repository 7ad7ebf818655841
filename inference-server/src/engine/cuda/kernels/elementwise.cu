// Element-wise kernels: unary maps, affine/clamp, broadcast binary ops and GEGLU.
//
// Every kernel reads its dtype, computes in f32 and writes the same dtype. Launches are 1-D
// grid-stride loops (the wrapper caps the grid), so any element count is covered by any grid;
// indices are 64-bit because a VAE activation at 1024x1024 exceeds 2^31 bytes.

// ---- unary maps ---------------------------------------------------------------------------

// x * sigmoid(x). Written with expf(-x) so large negative x gives 0 (inf in the denominator),
// not NaN.
struct sd_silu { __device__ float operator()(float x) const { return x / (1.0f + expf(-x)); } };
// Exact GELU, x * Phi(x) = 0.5 x erfc(-x / sqrt 2), the definition diffusers uses for GEGLU.
// erfc, not 1 + erf: in the negative tail 1 + erf(x) cancels to a few bits, erfc keeps full
// relative accuracy (gelu(-6) = -5.9e-9 to 1e-6 relative, as the CPU's).
struct sd_gelu {
    __device__ float operator()(float x) const { return 0.5f * x * erfcf(x * -0.70710678118654752f); }
};
// CLIP's quick GELU, x * sigmoid(1.702 x).
struct sd_gelu_quick { __device__ float operator()(float x) const { return x / (1.0f + expf(-1.702f * x)); } };
// Reduce x to [-pi, pi] first (Cody-Waite, 2pi split in two floats): --use_fast_math turns
// sinf/cosf into __sinf/__cosf, whose error grows with |x|, and timestep embeddings feed
// arguments up to ~1000 rad.
__device__ inline float sd_reduce_2pi(float x) {
    float k = rintf(x * 0.15915494309189535f);
    return fmaf(-k, -1.7484556e-7f, fmaf(-k, 6.28318548202514648f, x));
}
struct sd_sin { __device__ float operator()(float x) const { return sinf(sd_reduce_2pi(x)); } };
struct sd_cos { __device__ float operator()(float x) const { return cosf(sd_reduce_2pi(x)); } };
struct sd_exp { __device__ float operator()(float x) const { return expf(x); } };
struct sd_sqrt { __device__ float operator()(float x) const { return sqrtf(x); } };

template <typename T, typename Op>
__device__ void sd_unary(const T* x, T* y, unsigned long long n, Op op) {
    unsigned long long step = (unsigned long long)gridDim.x * blockDim.x;
    for (unsigned long long i = (unsigned long long)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += step)
        y[i] = from_f32<T>(op(to_f32(x[i])));
}

#define SD_UNARY(op, T, tn)                                                                    \
    extern "C" __global__ void op##_##tn(const T* x, T* y, unsigned long long n) {             \
        sd_unary<T>(x, y, n, sd_##op());                                                       \
    }                                                                                          \
    SD_EXPORT(op##_##tn)
#define SD_UNARY_ALL(op) SD_UNARY(op, float, f32) SD_UNARY(op, f16, f16) SD_UNARY(op, bf16, bf16)

SD_UNARY_ALL(silu)
SD_UNARY_ALL(gelu)
SD_UNARY_ALL(gelu_quick)
SD_UNARY_ALL(sin)
SD_UNARY_ALL(cos)
SD_UNARY_ALL(exp)
SD_UNARY_ALL(sqrt)

// y = x * mul + add (scaling latents, CFG mixing with a scalar).
struct sd_affine {
    float mul, add;
    __device__ float operator()(float x) const { return x * mul + add; }
};
// y = min(max(x, lo), hi). fmaxf/fminf return the non-NaN operand, so a NaN input becomes `lo`
// (the CPU's f32::clamp would keep it); the engine clamps decoded images, which are finite.
struct sd_clamp {
    float lo, hi;
    __device__ float operator()(float x) const { return fminf(fmaxf(x, lo), hi); }
};

#define SD_AFFINE(T, tn)                                                                            \
    extern "C" __global__ void affine_##tn(const T* x, T* y, unsigned long long n, float mul, float add) { \
        sd_affine op; op.mul = mul; op.add = add;                                                  \
        sd_unary<T>(x, y, n, op);                                                                   \
    }                                                                                               \
    SD_EXPORT(affine_##tn)                                                                          \
    extern "C" __global__ void clamp_##tn(const T* x, T* y, unsigned long long n, float lo, float hi) {   \
        sd_clamp op; op.lo = lo; op.hi = hi;                                                        \
        sd_unary<T>(x, y, n, op);                                                                   \
    }                                                                                               \
    SD_EXPORT(clamp_##tn)
SD_AFFINE(float, f32)
SD_AFFINE(f16, f16)
SD_AFFINE(bf16, bf16)

// ---- broadcast binary ops -------------------------------------------------------------------

// Output geometry of a broadcast binary op, passed by value (mirrors `BcastGeom` in
// ops/elementwise.rs, 128 bytes). Dims are the output's, row-major, padded at the front to rank 6
// with 1s and stride 0, so the index decomposition has a fixed trip count; a/b strides are in
// elements with 0 on broadcast dims.
struct sd_bcast_geom {
    unsigned long long n;
    unsigned int dims[6];
    unsigned long long a_strides[6];
    unsigned long long b_strides[6];
};

struct sd_add { __device__ float operator()(float a, float b) const { return a + b; } };
struct sd_sub { __device__ float operator()(float a, float b) const { return a - b; } };
struct sd_mul { __device__ float operator()(float a, float b) const { return a * b; } };
struct sd_div { __device__ float operator()(float a, float b) const { return a / b; } };

template <typename T, typename Op>
__device__ void sd_binary_bcast(const T* a, const T* b, T* out, const sd_bcast_geom& g, Op op) {
    unsigned long long step = (unsigned long long)gridDim.x * blockDim.x;
    for (unsigned long long i = (unsigned long long)blockIdx.x * blockDim.x + threadIdx.x; i < g.n; i += step) {
        // Peel output coordinates from the innermost dim outwards.
        unsigned long long rem = i, ao = 0, bo = 0;
#pragma unroll
        for (int d = 5; d >= 0; --d) {
            unsigned long long idx = rem % g.dims[d];
            rem /= g.dims[d];
            ao += idx * g.a_strides[d];
            bo += idx * g.b_strides[d];
        }
        out[i] = from_f32<T>(op(to_f32(a[ao]), to_f32(b[bo])));
    }
}

// Fast path: both inputs contiguous with the output's shape.
template <typename T, typename Op>
__device__ void sd_binary_contig(const T* a, const T* b, T* out, unsigned long long n, Op op) {
    unsigned long long step = (unsigned long long)gridDim.x * blockDim.x;
    for (unsigned long long i = (unsigned long long)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += step)
        out[i] = from_f32<T>(op(to_f32(a[i]), to_f32(b[i])));
}

#define SD_BINARY(op, T, tn)                                                                         \
    extern "C" __global__ void op##_##tn(const T* a, const T* b, T* out, sd_bcast_geom g) {          \
        sd_binary_bcast<T>(a, b, out, g, sd_##op());                                                 \
    }                                                                                                \
    SD_EXPORT(op##_##tn)                                                                             \
    extern "C" __global__ void op##_contig_##tn(const T* a, const T* b, T* out, unsigned long long n) { \
        sd_binary_contig<T>(a, b, out, n, sd_##op());                                                \
    }                                                                                                \
    SD_EXPORT(op##_contig_##tn)
#define SD_BINARY_ALL(op) SD_BINARY(op, float, f32) SD_BINARY(op, f16, f16) SD_BINARY(op, bf16, bf16)

SD_BINARY_ALL(add)
SD_BINARY_ALL(sub)
SD_BINARY_ALL(mul)
SD_BINARY_ALL(div)

// ---- GEGLU ----------------------------------------------------------------------------------

// Rows of 2*half -> rows of half: out[r, j] = x[r, j] * gelu(x[r, half + j]) (diffusers' GEGLU
// chunks the projection into (hidden, gate) in that order).
template <typename T>
__device__ void sd_geglu(const T* x, T* out, unsigned long long rows, unsigned int half) {
    unsigned long long n = rows * half;
    unsigned long long step = (unsigned long long)gridDim.x * blockDim.x;
    sd_gelu gelu;
    for (unsigned long long i = (unsigned long long)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += step) {
        unsigned long long r = i / half, j = i % half;
        const T* row = x + r * 2 * half;
        out[i] = from_f32<T>(to_f32(row[j]) * gelu(to_f32(row[half + j])));
    }
}

#define SD_GEGLU(T, tn)                                                                              \
    extern "C" __global__ void geglu_##tn(const T* x, T* out, unsigned long long rows, unsigned int half) { \
        sd_geglu<T>(x, out, rows, half);                                                             \
    }                                                                                                \
    SD_EXPORT(geglu_##tn)
SD_GEGLU(float, f32)
SD_GEGLU(f16, f16)
SD_GEGLU(bf16, bf16)

// ---- timestep embedding ---------------------------------------------------------------------

// diffusers' get_timestep_embedding (scale 1, max_period 10000) for `count` timesteps t[]:
// out[r, :] = [sin(t_r f_i) | cos(t_r f_i)] ([cos | sin] when flip), f_i = exp(log_max i / denom),
// an odd dim's last column 0. Each step is rounded to f32 as the CPU (and PyTorch) round it. The
// steps run in double and round once: for * and / that is the correctly rounded f32 result
// (53 >= 2*24 + 2 bits), for exp/sin/cos within an ulp of libm's. --use_fast_math would make
// them approximations whose error grows with the argument, and t_r f_i reaches ~1000 rad.
extern "C" __global__ void timestep_embedding_f32(const float* t, float* out, unsigned int count,
                                                  unsigned int dim, float log_max, float denom, int flip) {
    const unsigned int half = dim / 2;
    const unsigned long long n = (unsigned long long)count * dim;
    const unsigned long long step = (unsigned long long)gridDim.x * blockDim.x;
    for (unsigned long long i = (unsigned long long)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += step) {
        const unsigned int r = (unsigned int)(i / dim), c = (unsigned int)(i % dim);
        if (c >= 2 * half) {
            out[i] = 0.0f;
            continue;
        }
        const bool first = c < half;
        const unsigned int j = first ? c : c - half;
        const float num = (float)((double)log_max * (double)j);
        const float f = (float)exp((double)(float)((double)num / (double)denom));
        const double a = (double)(float)((double)t[r] * (double)f);
        out[i] = (first != (flip != 0)) ? (float)sin(a) : (float)cos(a);
    }
}
SD_EXPORT(timestep_embedding_f32)
