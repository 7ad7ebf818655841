// Layout kernels: nearest 2x upsampling, zero padding, strided copies (permute/narrow), the
// row-block copy behind concatenation, and row gathers. They move elements without converting
// them, so each exists per dtype only for the element size; 1-D grid-stride loops over the
// output (coalesced writes), 64-bit indices.

#define LY_LOOP(i, n)                                                                        \
    for (unsigned long long i = (unsigned long long)blockIdx.x * blockDim.x + threadIdx.x; i < (n); \
         i += (unsigned long long)gridDim.x * blockDim.x)

// x: planes x h x w -> out: planes x 2h x 2w, out[p, y, x] = x[p, y/2, x/2].
template <typename T>
__device__ void ly_upsample2x(const T* x, T* out, unsigned long long planes, unsigned int h, unsigned int w) {
    unsigned long long n = planes * 4ull * h * w;
    unsigned int w2 = 2 * w, h2 = 2 * h;
    LY_LOOP(i, n) {
        unsigned int ox = (unsigned int)(i % w2);
        unsigned long long r = i / w2;
        unsigned int oy = (unsigned int)(r % h2);
        unsigned long long p = r / h2;
        out[i] = x[(p * h + oy / 2) * w + ox / 2];
    }
}

// x: planes x h x w -> out: planes x (top+h+bottom) x (left+w+right), zeros outside, as
// torch.nn.functional.pad(x, (left, right, top, bottom)).
template <typename T>
__device__ void ly_pad2d(const T* x, T* out, unsigned long long planes, unsigned int h, unsigned int w,
                         unsigned int left, unsigned int right, unsigned int top, unsigned int bottom) {
    unsigned int ow = left + w + right, oh = top + h + bottom;
    unsigned long long n = planes * oh * ow;
    LY_LOOP(i, n) {
        unsigned int ox = (unsigned int)(i % ow);
        unsigned long long r = i / ow;
        unsigned int oy = (unsigned int)(r % oh);
        unsigned long long p = r / oh;
        // Unsigned wrap makes "ox < left" land far above w, so one comparison per axis.
        unsigned int ix = ox - left, iy = oy - top;
        out[i] = (ix < w && iy < h) ? x[(p * h + iy) * w + ix] : from_f32<T>(0.0f);
    }
}

// A strided view of `src` (rank <= 6, dims padded at the front with 1s) copied to a contiguous
// output: out[i] = src[offset + sum_d idx_d * strides_d]. Mirrors `StridedGeom` in
// ops/layout.rs (112 bytes). Covers permute, transpose and narrow on any axis.
struct ly_strided_geom {
    unsigned long long n;
    unsigned long long offset;
    unsigned int dims[6];
    unsigned long long strides[6];
};

template <typename T>
__device__ void ly_strided_copy(const T* src, T* out, const ly_strided_geom& g) {
    LY_LOOP(i, g.n) {
        unsigned long long rem = i, off = g.offset;
#pragma unroll
        for (int d = 5; d >= 0; --d) {
            off += (rem % g.dims[d]) * g.strides[d];
            rem /= g.dims[d];
        }
        out[i] = src[off];
    }
}

// outer rows of `len` contiguous elements -> rows `dst_stride` apart in dst (concatenation
// writes each part at its column offset, which the wrapper adds to `dst`).
template <typename T>
__device__ void ly_copy_block(const T* src, T* dst, unsigned long long outer, unsigned long long len,
                              unsigned long long dst_stride) {
    LY_LOOP(i, outer * len) dst[(i / len) * dst_stride + i % len] = src[i];
}

// src: outer x d x inner, ids: n_ids values < d (checked by the engine) ->
// out: outer x n_ids x inner, out[o, k, :] = src[o, ids[k], :].
template <typename T>
__device__ void ly_index_select(const T* src, const unsigned int* ids, T* out, unsigned long long outer,
                                unsigned int d, unsigned long long inner, unsigned int n_ids) {
    LY_LOOP(i, outer * n_ids * inner) {
        unsigned long long in = i % inner, r = i / inner;
        unsigned int k = (unsigned int)(r % n_ids);
        unsigned long long o = r / n_ids;
        out[i] = src[(o * d + ids[k]) * inner + in];
    }
}

#define LY_ALL(T, tn)                                                                                 \
    extern "C" __global__ void upsample_nearest2x_##tn(const T* x, T* out, unsigned long long planes,  \
                                                       unsigned int h, unsigned int w) {              \
        ly_upsample2x<T>(x, out, planes, h, w);                                                       \
    }                                                                                                 \
    SD_EXPORT(upsample_nearest2x_##tn)                                                                \
    extern "C" __global__ void pad2d_##tn(const T* x, T* out, unsigned long long planes, unsigned int h, \
                                          unsigned int w, unsigned int left, unsigned int right,      \
                                          unsigned int top, unsigned int bottom) {                    \
        ly_pad2d<T>(x, out, planes, h, w, left, right, top, bottom);                                  \
    }                                                                                                 \
    SD_EXPORT(pad2d_##tn)                                                                             \
    extern "C" __global__ void strided_copy_##tn(const T* src, T* out, ly_strided_geom g) {          \
        ly_strided_copy<T>(src, out, g);                                                              \
    }                                                                                                 \
    SD_EXPORT(strided_copy_##tn)                                                                      \
    extern "C" __global__ void copy_block_##tn(const T* src, T* dst, unsigned long long outer,        \
                                               unsigned long long len, unsigned long long dst_stride) { \
        ly_copy_block<T>(src, dst, outer, len, dst_stride);                                           \
    }                                                                                                 \
    SD_EXPORT(copy_block_##tn)                                                                        \
    extern "C" __global__ void index_select_##tn(const T* src, const unsigned int* ids, T* out,       \
                                                 unsigned long long outer, unsigned int d,            \
                                                 unsigned long long inner, unsigned int n_ids) {      \
        ly_index_select<T>(src, ids, out, outer, d, inner, n_ids);                                    \
    }                                                                                                 \
    SD_EXPORT(index_select_##tn)
LY_ALL(float, f32)
LY_ALL(f16, f16)
LY_ALL(bf16, bf16)
