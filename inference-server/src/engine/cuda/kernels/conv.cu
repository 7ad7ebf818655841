// Convolution helpers: im2col for NCHW convolutions (conv = im2col + GEMM with the weight as
// [o, c*kh*kw]) and a per-channel bias add for GEMMs without a bias epilogue.

// Geometry of one image's im2col tile (mirrors `Im2colGeom` in ops/conv.rs, 48 bytes).
// Output positions p0 .. p0+p (row-major over ho x wo) are written as columns of
// cols[c*kh*kw, p], row index ci*kh*kw + ki*kw + kj, the order the weight's columns use.
struct cv_im2col_geom {
    unsigned int c, h, w;
    unsigned int kh, kw;
    unsigned int stride, pad;
    unsigned int ho, wo;
    unsigned int p0, p;
    unsigned int unused;
};

// One thread per cols element; consecutive threads take consecutive output positions of one
// row, so writes are coalesced and reads are (for stride 1) contiguous runs of an input row.
template <typename T>
__device__ void cv_im2col(const T* x, T* cols, const cv_im2col_geom& g) {
    unsigned long long n = (unsigned long long)g.c * g.kh * g.kw * g.p;
    for (unsigned long long i = (unsigned long long)blockIdx.x * blockDim.x + threadIdx.x; i < n;
         i += (unsigned long long)gridDim.x * blockDim.x) {
        unsigned int j = (unsigned int)(i % g.p);
        unsigned int row = (unsigned int)(i / g.p);
        unsigned int kj = row % g.kw, ki = (row / g.kw) % g.kh, ci = row / (g.kw * g.kh);
        unsigned int pos = g.p0 + j;
        unsigned int oy = pos / g.wo, ox = pos % g.wo;
        // Unsigned arithmetic: a position in the padding wraps above h/w and fails the test.
        unsigned int iy = oy * g.stride + ki - g.pad, ix = ox * g.stride + kj - g.pad;
        cols[i] = (iy < g.h && ix < g.w) ? x[((unsigned long long)ci * g.h + iy) * g.w + ix] : from_f32<T>(0.0f);
    }
}

// x: n x c x spatial, in place: x[s, ch, :] += bias[ch] (bias in f32 like all norm/bias
// parameters).
template <typename T>
__device__ void cv_add_channel_bias(T* x, const float* bias, unsigned long long n, unsigned int c,
                                    unsigned int spatial) {
    unsigned long long total = n * c * spatial;
    for (unsigned long long i = (unsigned long long)blockIdx.x * blockDim.x + threadIdx.x; i < total;
         i += (unsigned long long)gridDim.x * blockDim.x) {
        unsigned int ch = (unsigned int)((i / spatial) % c);
        x[i] = from_f32<T>(to_f32(x[i]) + bias[ch]);
    }
}

#define CV_ALL(T, tn)                                                                                 \
    extern "C" __global__ void im2col_##tn(const T* x, T* cols, cv_im2col_geom g) {                  \
        cv_im2col<T>(x, cols, g);                                                                     \
    }                                                                                                 \
    SD_EXPORT(im2col_##tn)                                                                            \
    extern "C" __global__ void add_channel_bias_##tn(T* x, const float* bias, unsigned long long n,   \
                                                     unsigned int c, unsigned int spatial) {          \
        cv_add_channel_bias<T>(x, bias, n, c, spatial);                                               \
    }                                                                                                 \
    SD_EXPORT(add_channel_bias_##tn)
CV_ALL(float, f32)
CV_ALL(f16, f16)
CV_ALL(bf16, bf16)
