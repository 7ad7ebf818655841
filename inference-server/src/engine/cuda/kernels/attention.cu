// Attention out = softmax(scale * q k^T [causal mask]) v for q [bh, lq, d], k/v [bh, lk, d]
// (row-major, d <= 160), computed in key tiles with an online softmax: each query keeps a running
// max m, a running sum l and an unnormalised output accumulator, rescaled by exp2(m_old - m_new)
// whenever the max grows. No lq x lk matrix exists anywhere. Scores are kept in base 2
// (q is pre-multiplied by scale * log2 e), so the softmax needs only exp2f.
//
// Two paths:
// - attention_{f32,f16,bf16}: plain f32 FMA path, any dtype, any d <= 160.
// - attention_mma_f16 (attention_mma.cu): tensor cores (mma.sync m16n8k16), sm_80+.

#define AT_LOG2E 1.4426950408889634f

// Plain path geometry: 4 warps a block, each warp owns AT_QW queries (so AT_BQ = 8 queries a
// block) and walks the keys AT_BK = 32 at a time, lane j scoring key j of the tile. Shared
// memory (f32): q tile 8x160, k tile 32x161 (row stride 161 = 1 mod 32 banks, so lanes reading
// "their" key row at the same column hit distinct banks), v tile 32x160, per-warp probabilities
// 4x2x32: 46.2 KB, under the 48 KB static limit.
#define AT_DMAX 160
#define AT_KSTRIDE 161
#define AT_QW 2
#define AT_BQ 8
#define AT_BK 32

// grid = (ceil(lq / 8), bh), block = 128.
template <typename T>
__device__ void at_plain(const T* q, const T* k, const T* v, T* out, unsigned int lq, unsigned int lk,
                         unsigned int d, float scale, int causal, float* qs, float* ks, float* vs, float* ps) {
    const unsigned int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
    const unsigned long long bh = blockIdx.y;
    const unsigned int q0 = blockIdx.x * AT_BQ;
    const T* qb = q + bh * lq * d;
    const T* kb = k + bh * lk * d;
    const T* vb = v + bh * lk * d;
    T* ob = out + bh * lq * d;
    const float sl = scale * AT_LOG2E;

    // Queries past lq load as zeros: their scores are finite and their rows are never written.
    for (unsigned int i = tid; i < AT_BQ * d; i += blockDim.x) {
        unsigned int r = i / d, c = i % d;
        qs[r * AT_DMAX + c] = q0 + r < lq ? to_f32(qb[(unsigned long long)(q0 + r) * d + c]) * sl : 0.0f;
    }
    float m[AT_QW], l[AT_QW], acc[AT_QW][AT_DMAX / 32];
    unsigned int qi[AT_QW];
#pragma unroll
    for (int a = 0; a < AT_QW; ++a) {
        m[a] = SD_NEG_INF;
        l[a] = 0.0f;
        qi[a] = q0 + warp * AT_QW + a;
#pragma unroll
        for (int t = 0; t < AT_DMAX / 32; ++t) acc[a][t] = 0.0f;
    }
    // Causal: no query of this block sees a key at or past q0 + AT_BQ.
    unsigned int kend = causal ? min(lk, q0 + AT_BQ) : lk;
    for (unsigned int k0 = 0; k0 < kend; k0 += AT_BK) {
        unsigned int bk = min(AT_BK, kend - k0);
        __syncthreads();  // the previous tile is no longer read (and qs is written, first time)
        for (unsigned int i = tid; i < AT_BK * d; i += blockDim.x) {
            unsigned int r = i / d, c = i % d;
            bool ok = r < bk;
            unsigned long long src = (unsigned long long)(k0 + r) * d + c;
            ks[r * AT_KSTRIDE + c] = ok ? to_f32(kb[src]) : 0.0f;
            vs[r * AT_DMAX + c] = ok ? to_f32(vb[src]) : 0.0f;
        }
        __syncthreads();
        float* pw = ps + warp * AT_QW * AT_BK;
#pragma unroll
        for (int a = 0; a < AT_QW; ++a) {
            const float* qrow = qs + (warp * AT_QW + a) * AT_DMAX;
            const float* krow = ks + lane * AT_KSTRIDE;
            float s = 0.0f;
            for (unsigned int c = 0; c < d; ++c) s += qrow[c] * krow[c];
            bool ok = lane < bk && (!causal || k0 + lane <= qi[a]);
            s = ok ? s : SD_NEG_INF;
            float new_m = fmaxf(m[a], sd_warp_max(s));
            // Every key of the tile masked for this query (causal, early query): nothing to add.
            // new_m is the same in all lanes, so the branch is warp-uniform.
            if (new_m == SD_NEG_INF) continue;
            float p = ok ? exp2f(s - new_m) : 0.0f;
            float corr = exp2f(m[a] - new_m);  // 0 on the first visible tile (m = -inf)
            l[a] = l[a] * corr + sd_warp_sum(p);
            m[a] = new_m;
            pw[a * AT_BK + lane] = p;
            __syncwarp();
#pragma unroll
            for (int t = 0; t < AT_DMAX / 32; ++t) acc[a][t] *= corr;
            for (unsigned int j = 0; j < bk; ++j) {
                float pj = pw[a * AT_BK + j];
#pragma unroll
                for (int t = 0; t < AT_DMAX / 32; ++t) {
                    unsigned int dd = lane + 32 * t;
                    if (dd < d) acc[a][t] += pj * vs[j * AT_DMAX + dd];
                }
            }
            __syncwarp();  // pw is rewritten by the next query
        }
    }
#pragma unroll
    for (int a = 0; a < AT_QW; ++a) {
        if (qi[a] >= lq) continue;
        // lk == 0 leaves l = 0: the output is zeros, as on the CPU.
        float inv = l[a] > 0.0f ? 1.0f / l[a] : 0.0f;
#pragma unroll
        for (int t = 0; t < AT_DMAX / 32; ++t) {
            unsigned int dd = lane + 32 * t;
            if (dd < d) ob[(unsigned long long)qi[a] * d + dd] = from_f32<T>(acc[a][t] * inv);
        }
    }
}

#define AT_PLAIN(T, tn)                                                                               \
    extern "C" __global__ void attention_##tn(const T* q, const T* k, const T* v, T* out,             \
                                              unsigned int lq, unsigned int lk, unsigned int d,      \
                                              float scale, int causal) {                              \
        __shared__ float qs[AT_BQ * AT_DMAX];                                                         \
        __shared__ float ks[AT_BK * AT_KSTRIDE];                                                      \
        __shared__ float vs[AT_BK * AT_DMAX];                                                         \
        __shared__ float ps[4 * AT_QW * AT_BK];                                                       \
        at_plain<T>(q, k, v, out, lq, lk, d, scale, causal, qs, ks, vs, ps);                          \
    }                                                                                                 \
    SD_EXPORT(attention_##tn)
AT_PLAIN(float, f32)
AT_PLAIN(f16, f16)
AT_PLAIN(bf16, bf16)
