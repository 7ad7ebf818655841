// Implicit-GEMM NCHW convolution with a fused epilogue, one launch per conv (no im2col buffer,
// no separate bias or residual pass):
//   out[img, oc, p] = sum_k W[oc, k] * X_img[k, p] + bias[oc] + residual[img, oc, p]
// with M = o (output channels), N = ho*wo (output positions of one image), K = c*kh*kw, the
// weight [o, c, kh, kw] read as W [M, K] and X_img the virtual im2col matrix [K, N] of image img
// (row k = (ci, ki, kj) like the weight's columns), gathered from x tile by tile into shared
// memory, zeros for the padding. bias (f32, per output channel) and residual (same dtype and
// shape as out) may each be null; residual may be out itself (each element is read by the
// thread that then writes it). f32 accumulation throughout.
//
// - conv_igemm_{f32,f16,bf16} (SIMT): block 256 threads = 16 x 16, tile 64 channels x 64
//   positions x 16 k; thread (ty, tx) owns channels ty + 16i and positions tx + 16j (i, j < 4),
//   so its shared reads are conflict-free and each store row is 16 consecutive positions.
//   Tiles are held in f32 in shared memory (converted once on load).
// - conv_igemm_mma_f16 (tensor cores, sm_80+): block 128 threads = 4 warps in 2 x 2, tile 64
//   channels x 64 positions x 32 k; warp (wm, wn) owns 32 x 32 of it as 2 x 4 mma.sync.m16n8k16
//   tiles (mma_16816_f16 in prelude.cuh). Shared tiles are f16 pairs along k: the weight tile
//   row-major [m][k], the im2col tile by column [n][k] ("col" B), rows of CI_MSTW words.
// Grid (both): (ceil(N / 64), ceil(M / 64), images). Partial tiles are zero-filled on load and
// masked on store. Image, channel-plane and weight offsets are 64-bit; positions, channels and
// k are 32-bit (the wrapper checks they, plus a tile, fit).

// Mirrors `ConvIgemmGeom` in ops/conv_igemm.rs (12 x u32 = 48 bytes, passed by value).
struct ci_geom {
    unsigned int c, h, w;   // input channels, height, width
    unsigned int o;         // output channels (M)
    unsigned int kh, kw;    // kernel size
    unsigned int stride, pad;
    unsigned int ho, wo;    // output height, width
    unsigned int kdim;      // c * kh * kw (K)
    unsigned int spatial;   // ho * wo (N)
};

#define CI_BM 64
#define CI_BN 64
#define CI_BK 16
// Row stride (floats) of the SIMT weight tile ws[k][m]; odd, so the transposing store spreads.
#define CI_WST (CI_BM + 1)
#define CI_MBK 32
// Row stride (32-bit words = f16 pairs) of the mma tiles: 16 + 4 = 20, and 20g + t (g < 8,
// t < 4) hits 32 distinct banks, so fragment loads are conflict-free (as in attention_mma.cu).
#define CI_MSTW (CI_MBK / 2 + 4)

// Where one output position's receptive field starts in the input, as unsigned values: a row or
// column in the top/left padding wraps to >= 2^32 - pad, which the wrapper keeps above h and w,
// so `iy < h && ix < w` tests both sides of the padding at once.
struct ci_col {
    unsigned int iy0, ix0;
    bool ok;  // the position exists (p < N)
};

__device__ __forceinline__ ci_col ci_column(const ci_geom& g, unsigned int p) {
    ci_col r;
    r.ok = p < g.spatial;
    unsigned int oy = p / g.wo, ox = p - oy * g.wo;
    r.iy0 = oy * g.stride - g.pad;
    r.ix0 = ox * g.stride - g.pad;
    return r;
}

// Index into image xi of im2col element (k, column col), or -1 (as unsigned long long) for a
// zero: the padding, k >= K, or a column past N.
__device__ __forceinline__ unsigned long long ci_index(const ci_geom& g, const ci_col& col, unsigned int k) {
    if (!col.ok || k >= g.kdim) return ~0ull;
    unsigned int khw = g.kh * g.kw;
    unsigned int ci = k / khw, r = k - ci * khw;
    unsigned int ki = r / g.kw, kj = r - ki * g.kw;
    unsigned int iy = col.iy0 + ki, ix = col.ix0 + kj;
    if (iy >= g.h || ix >= g.w) return ~0ull;
    return ((unsigned long long)ci * g.h + iy) * g.w + ix;
}

// The epilogue for one accumulator: bias, residual, rounding to T.
template <typename T>
__device__ __forceinline__ void ci_store(T* out, const float* bias, const T* res, const ci_geom& g,
                                         unsigned long long img, unsigned int m, unsigned int p, float v) {
    if (m >= g.o || p >= g.spatial) return;
    unsigned long long i = (img * g.o + m) * g.spatial + p;
    if (bias) v += bias[m];
    if (res) v += to_f32(res[i]);
    out[i] = from_f32<T>(v);
}

template <typename T>
__device__ void ci_conv(const T* x, const T* wt, const float* bias, const T* res, T* out, const ci_geom& g,
                        float* ws, float* xs) {
    const unsigned int tid = threadIdx.x, tx = tid % 16, ty = tid / 16;
    const unsigned int m0 = blockIdx.y * CI_BM, n0 = blockIdx.x * CI_BN;
    const unsigned long long img = blockIdx.z;
    const T* xi = x + img * g.c * g.h * g.w;
    // im2col loads: this thread always fills column ln, rows lk + 4r (r < 4).
    const unsigned int ln = tid % CI_BN, lk = tid / CI_BN;
    const ci_col col = ci_column(g, n0 + ln);

    float acc[4][4];
#pragma unroll
    for (int i = 0; i < 4; ++i)
#pragma unroll
        for (int j = 0; j < 4; ++j) acc[i][j] = 0.0f;

    for (unsigned int k0 = 0; k0 < g.kdim; k0 += CI_BK) {
        // Weight tile, transposed to ws[k][m]: consecutive threads read consecutive k of a row.
#pragma unroll
        for (int r = 0; r < 4; ++r) {
            unsigned int m = ty + 16 * r, row = m0 + m, k = k0 + tx;
            ws[tx * CI_WST + m] =
                row < g.o && k < g.kdim ? to_f32(wt[(unsigned long long)row * g.kdim + k]) : 0.0f;
        }
        // im2col tile xs[k][n]: consecutive threads take consecutive output positions.
#pragma unroll
        for (int r = 0; r < 4; ++r) {
            unsigned int kk = lk + 4 * r;
            unsigned long long i = ci_index(g, col, k0 + kk);
            xs[kk * CI_BN + ln] = i != ~0ull ? to_f32(xi[i]) : 0.0f;
        }
        __syncthreads();
#pragma unroll
        for (int kk = 0; kk < CI_BK; ++kk) {
            float a[4], b[4];
#pragma unroll
            for (int i = 0; i < 4; ++i) a[i] = ws[kk * CI_WST + ty + 16 * i];
#pragma unroll
            for (int j = 0; j < 4; ++j) b[j] = xs[kk * CI_BN + tx + 16 * j];
#pragma unroll
            for (int i = 0; i < 4; ++i)
#pragma unroll
                for (int j = 0; j < 4; ++j) acc[i][j] += a[i] * b[j];
        }
        __syncthreads();  // the tiles are overwritten next round
    }
#pragma unroll
    for (int i = 0; i < 4; ++i)
#pragma unroll
        for (int j = 0; j < 4; ++j)
            ci_store<T>(out, bias, res, g, img, m0 + ty + 16 * i, n0 + tx + 16 * j, acc[i][j]);
}

#define CI_ALL(T, tn)                                                                                   \
    extern "C" __global__ void __launch_bounds__(256) conv_igemm_##tn(                                  \
        const T* x, const T* wt, const float* bias, const T* res, T* out, ci_geom g) {                  \
        __shared__ float ws[CI_BK * CI_WST];                                                            \
        __shared__ float xs[CI_BK * CI_BN];                                                             \
        ci_conv<T>(x, wt, bias, res, out, g, ws, xs);                                                   \
    }                                                                                                   \
    SD_EXPORT(conv_igemm_##tn)
CI_ALL(float, f32)
CI_ALL(f16, f16)
CI_ALL(bf16, bf16)

// The f16 bits of x at index i, 0 (+0.0) for the ~0 "zero" index.
__device__ __forceinline__ unsigned int ci_bits(const f16* xi, unsigned long long i) {
    return i != ~0ull ? (unsigned int)xi[i].x : 0u;
}

__device__ void ci_conv_mma(const f16* x, const f16* wt, const float* bias, const f16* res, f16* out,
                            const ci_geom& g, unsigned int* as, unsigned int* bs) {
    const unsigned int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5, gq = lane >> 2, t = lane & 3;
    const unsigned int wm = warp >> 1, wn = warp & 1;
    const unsigned int m0 = blockIdx.y * CI_BM, n0 = blockIdx.x * CI_BN;
    const unsigned long long img = blockIdx.z;
    const f16* xi = x + img * g.c * g.h * g.w;
    // im2col loads: this thread fills column ln, pairs lw + 2r (r < 8) of it.
    const unsigned int ln = tid % CI_BN, lw = tid / CI_BN;
    const ci_col col = ci_column(g, n0 + ln);
    // Weight loads: pair aw of rows am + 8r (r < 8); 16 threads cover 32 consecutive k of a row.
    const unsigned int aw = tid % (CI_MBK / 2), am = tid / (CI_MBK / 2);

    float acc[2][4][4];
#pragma unroll
    for (int mt = 0; mt < 2; ++mt)
#pragma unroll
        for (int nt = 0; nt < 4; ++nt) acc[mt][nt][0] = acc[mt][nt][1] = acc[mt][nt][2] = acc[mt][nt][3] = 0.0f;

    for (unsigned int k0 = 0; k0 < g.kdim; k0 += CI_MBK) {
#pragma unroll
        for (int r = 0; r < 8; ++r) {
            unsigned int m = am + 8 * r, row = m0 + m, k = k0 + 2 * aw;
            const f16* wr = wt + (unsigned long long)row * g.kdim;
            unsigned int lo = row < g.o && k < g.kdim ? (unsigned int)wr[k].x : 0u;
            unsigned int hi = row < g.o && k + 1 < g.kdim ? (unsigned int)wr[k + 1].x : 0u;
            as[m * CI_MSTW + aw] = lo | (hi << 16);
        }
#pragma unroll
        for (int r = 0; r < 8; ++r) {
            unsigned int kw = lw + 2 * r, k = k0 + 2 * kw;
            unsigned int lo = ci_bits(xi, ci_index(g, col, k));
            unsigned int hi = ci_bits(xi, ci_index(g, col, k + 1));
            bs[ln * CI_MSTW + kw] = lo | (hi << 16);
        }
        __syncthreads();
#pragma unroll
        for (int ks = 0; ks < CI_MBK / 16; ++ks) {
            unsigned int a[2][4];
#pragma unroll
            for (int mt = 0; mt < 2; ++mt) {
                unsigned int rb = (wm * 32 + mt * 16 + gq) * CI_MSTW + ks * 8 + t;
                a[mt][0] = as[rb];
                a[mt][1] = as[rb + 8 * CI_MSTW];
                a[mt][2] = as[rb + 4];
                a[mt][3] = as[rb + 8 * CI_MSTW + 4];
            }
#pragma unroll
            for (int nt = 0; nt < 4; ++nt) {
                unsigned int cb = (wn * 32 + nt * 8 + gq) * CI_MSTW + ks * 8 + t;
                unsigned int b[2] = {bs[cb], bs[cb + 4]};
#pragma unroll
                for (int mt = 0; mt < 2; ++mt) mma_16816_f16(acc[mt][nt], a[mt], b);
            }
        }
        __syncthreads();  // the tiles are overwritten next round
    }
#pragma unroll
    for (int mt = 0; mt < 2; ++mt)
#pragma unroll
        for (int nt = 0; nt < 4; ++nt)
#pragma unroll
            for (int e = 0; e < 4; ++e) {
                unsigned int m = m0 + wm * 32 + mt * 16 + gq + (e >= 2 ? 8 : 0);
                unsigned int p = n0 + wn * 32 + nt * 8 + 2 * t + (e & 1);
                ci_store<f16>(out, bias, res, g, img, m, p, acc[mt][nt][e]);
            }
}

extern "C" __global__ void __launch_bounds__(128) conv_igemm_mma_f16(const f16* x, const f16* wt, const float* bias,
                                                                     const f16* res, f16* out, ci_geom g) {
    __shared__ unsigned int as[CI_BM * CI_MSTW];
    __shared__ unsigned int bs[CI_BN * CI_MSTW];
    ci_conv_mma(x, wt, bias, res, out, g, as, bs);
}
SD_EXPORT(conv_igemm_mma_f16)
