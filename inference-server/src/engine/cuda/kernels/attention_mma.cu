// Tensor-core attention for f16 (sm_80+): attention_mma_f16, same contract as attention_f16 in
// attention.cu (q [bh, lq, d], k/v [bh, lk, d], d <= 160, online softmax in base 2, optional
// causal mask), flash-attention-2 style: S = Q K^T and O += P V both run on
// mma.sync.m16n8k16 (f16 inputs, f32 accumulators); P never leaves registers.
//
// grid = (ceil(lq / 64), bh), block = 128 = 4 warps; warp w owns query rows q0 + 16w .. +15.
// d is padded with zeros to DP = 16 * NK (NK >= ceil(d / 16), a template parameter so the
// fragment arrays stay in registers). Keys go 32 per tile through shared memory.
//
// Fragment maps (PTX ISA, "Matrix Fragments for mma.m16n8k16" with .f16 A/B and .f32 C/D), with
// g = lane / 4 (groupID) and t = lane % 4 (threadID_in_group); a "pair" is two f16 in one 32-bit
// register, the lower k (or column) index in the low 16 bits:
//   A (16x16, row-major): a[0] = A[g][2t..2t+1], a[1] = A[g+8][2t..], a[2] = A[g][2t+8..],
//                         a[3] = A[g+8][2t+8..]
//   B (16x8, "col"):      b[0] = B[2t..2t+1][g], b[1] = B[2t+8..2t+9][g]
//   C (16x8 f32):         c[0] = C[g][2t], c[1] = C[g][2t+1], c[2] = C[g+8][2t], c[3] = C[g+8][2t+1]
// B "col" means B[k][n] sits at n * ld + k: for S, B = K^T, i.e. K's own rows; for O, B = V, so
// the V tile is stored transposed (vt[dim][key]) to make each b register one 32-bit load.
// The C map of S for keys 16j..16j+7 and 16j+8..+15 is exactly the A map of P for k-step j, so
// P goes from accumulators to A fragments with no shuffles. The mma itself (and its emulated
// twin) is mma_16816_f16 in prelude.cuh, shared with conv_igemm.cu.

#define AM_LOG2E 1.4426950408889634f
#define AM_DMAX 160
#define AM_BQ 64
#define AM_BK 32
// Row strides of the shared tiles in 32-bit words (pairs of f16). 84 = 20 (mod 32) and
// 20 (mod 32): the 8 groups of a fragment load land on 8 disjoint 4-bank sets, conflict-free.
#define AM_KSTW (AM_DMAX / 2 + 4)
#define AM_VSTW (AM_BK / 2 + 4)

// One f16 pair of row `row` of a [rows, d] matrix at columns c, c+1, zero outside.
__device__ inline unsigned am_load_pair(const f16* m, unsigned rows, unsigned d, unsigned row, unsigned c) {
    if (row >= rows) return 0u;
    const f16* r = m + (unsigned long long)row * d;
    unsigned lo = c < d ? (unsigned)r[c].x : 0u;
    unsigned hi = c + 1 < d ? (unsigned)r[c + 1].x : 0u;
    return lo | (hi << 16);
}

template <int NK>
__device__ void am_attention(const f16* q, const f16* k, const f16* v, f16* out, unsigned lq, unsigned lk,
                             unsigned d, float scale, int causal, unsigned* ks, unsigned* vt) {
    constexpr int DP = 16 * NK, ND = DP / 8;
    const unsigned tid = threadIdx.x, lane = tid & 31, warp = tid >> 5, g = lane >> 2, t = lane & 3;
    const unsigned long long bh = blockIdx.y;
    const f16* qb = q + bh * lq * d;
    const f16* kb = k + bh * lk * d;
    const f16* vb = v + bh * lk * d;
    f16* ob = out + bh * lq * d;
    const unsigned q0 = blockIdx.x * AM_BQ, qw = q0 + warp * 16;
    const unsigned rows[2] = {qw + g, qw + g + 8};
    const float sl = scale * AM_LOG2E;

    // Q fragments straight from global memory (read once per block).
    unsigned qa[NK][4];
#pragma unroll
    for (int kk = 0; kk < NK; ++kk) {
        qa[kk][0] = am_load_pair(qb, lq, d, rows[0], kk * 16 + 2 * t);
        qa[kk][1] = am_load_pair(qb, lq, d, rows[1], kk * 16 + 2 * t);
        qa[kk][2] = am_load_pair(qb, lq, d, rows[0], kk * 16 + 2 * t + 8);
        qa[kk][3] = am_load_pair(qb, lq, d, rows[1], kk * 16 + 2 * t + 8);
    }
    float acc[ND][4];
#pragma unroll
    for (int n = 0; n < ND; ++n) acc[n][0] = acc[n][1] = acc[n][2] = acc[n][3] = 0.0f;
    float m[2] = {SD_NEG_INF, SD_NEG_INF}, l[2] = {0.0f, 0.0f};

    const unsigned kend = causal ? min(lk, q0 + AM_BQ) : lk;
    for (unsigned k0 = 0; k0 < kend; k0 += AM_BK) {
        __syncthreads();  // the previous tile is no longer read
        // K tile as pairs along d; V tile transposed, pairs along keys. Zeros outside, so
        // padded dims add nothing and masked keys multiply finite values by p = 0.
        for (unsigned i = tid; i < AM_BK * (DP / 2); i += blockDim.x) {
            unsigned r = i / (DP / 2), cw = i % (DP / 2);
            ks[r * AM_KSTW + cw] = k0 + r < kend ? am_load_pair(kb, lk, d, k0 + r, 2 * cw) : 0u;
        }
        for (unsigned i = tid; i < DP * (AM_BK / 2); i += blockDim.x) {
            unsigned dim = i / (AM_BK / 2), jw = i % (AM_BK / 2), key = k0 + 2 * jw;
            unsigned lo = key < kend && dim < d ? (unsigned)vb[(unsigned long long)key * d + dim].x : 0u;
            unsigned hi = key + 1 < kend && dim < d ? (unsigned)vb[(unsigned long long)(key + 1) * d + dim].x : 0u;
            vt[dim * AM_VSTW + jw] = lo | (hi << 16);
        }
        __syncthreads();

        // S = Q K^T for 4 n-tiles of 8 keys.
        float s[4][4];
#pragma unroll
        for (int nt = 0; nt < 4; ++nt) {
            s[nt][0] = s[nt][1] = s[nt][2] = s[nt][3] = 0.0f;
#pragma unroll
            for (int kk = 0; kk < NK; ++kk) {
                unsigned b[2];
                b[0] = ks[(nt * 8 + g) * AM_KSTW + kk * 8 + t];
                b[1] = ks[(nt * 8 + g) * AM_KSTW + kk * 8 + 4 + t];
                mma_16816_f16(s[nt], qa[kk], b);
            }
        }
        // Scale to base 2, mask, and update the running max/sum of rows g (r = 0) and g+8 (r = 1).
        // A row's 32 scores are spread over the 4 lanes of its group: reduce with xor 1 and 2.
        float corr[2];
#pragma unroll
        for (int r = 0; r < 2; ++r) {
            float mx = SD_NEG_INF;
#pragma unroll
            for (int nt = 0; nt < 4; ++nt)
#pragma unroll
                for (int e = 0; e < 2; ++e) {
                    unsigned key = k0 + nt * 8 + 2 * t + e;
                    bool ok = key < lk && (!causal || key <= rows[r]);
                    float x = ok ? s[nt][2 * r + e] * sl : SD_NEG_INF;
                    s[nt][2 * r + e] = x;
                    mx = fmaxf(mx, x);
                }
            mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 1));
            mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 2));
            float new_m = fmaxf(m[r], mx);
            // A row with no visible key yet keeps m = -inf: p = 0, nothing rescaled.
            bool none = new_m == SD_NEG_INF;
            corr[r] = none ? 1.0f : exp2f(m[r] - new_m);
            float sum = 0.0f;
#pragma unroll
            for (int nt = 0; nt < 4; ++nt)
#pragma unroll
                for (int e = 0; e < 2; ++e) {
                    float p = none ? 0.0f : exp2f(s[nt][2 * r + e] - new_m);
                    s[nt][2 * r + e] = p;
                    sum += p;
                }
            sum += __shfl_xor_sync(0xffffffffu, sum, 1);
            sum += __shfl_xor_sync(0xffffffffu, sum, 2);
            l[r] = l[r] * corr[r] + sum;
            m[r] = new_m;
        }
#pragma unroll
        for (int n = 0; n < ND; ++n) {
            acc[n][0] *= corr[0]; acc[n][1] *= corr[0];
            acc[n][2] *= corr[1]; acc[n][3] *= corr[1];
        }
        // P (16 x 32) as two k-steps of A fragments, straight from the S accumulators.
        unsigned pa[2][4];
#pragma unroll
        for (int j = 0; j < 2; ++j) {
            pa[j][0] = pack_f16x2(s[2 * j][0], s[2 * j][1]);
            pa[j][1] = pack_f16x2(s[2 * j][2], s[2 * j][3]);
            pa[j][2] = pack_f16x2(s[2 * j + 1][0], s[2 * j + 1][1]);
            pa[j][3] = pack_f16x2(s[2 * j + 1][2], s[2 * j + 1][3]);
        }
        // O += P V, n-tiles of 8 dims.
#pragma unroll
        for (int n = 0; n < ND; ++n)
#pragma unroll
            for (int j = 0; j < 2; ++j) {
                unsigned b[2];
                b[0] = vt[(n * 8 + g) * AM_VSTW + j * 8 + t];
                b[1] = vt[(n * 8 + g) * AM_VSTW + j * 8 + 4 + t];
                mma_16816_f16(acc[n], pa[j], b);
            }
    }
#pragma unroll
    for (int r = 0; r < 2; ++r) {
        if (rows[r] >= lq) continue;
        float inv = l[r] > 0.0f ? 1.0f / l[r] : 0.0f;  // lk == 0: zeros, as on the CPU
#pragma unroll
        for (int n = 0; n < ND; ++n)
#pragma unroll
            for (int e = 0; e < 2; ++e) {
                unsigned dim = n * 8 + 2 * t + e;
                if (dim < d) ob[(unsigned long long)rows[r] * d + dim] = from_f32<f16>(acc[n][2 * r + e] * inv);
            }
    }
}

extern "C" __global__ void attention_mma_f16(const f16* q, const f16* k, const f16* v, f16* out, unsigned int lq,
                                             unsigned int lk, unsigned int d, float scale, int causal) {
    __shared__ unsigned ks[AM_BK * AM_KSTW];
    __shared__ unsigned vt[AM_DMAX * AM_VSTW];
    // Six instantiations instead of ten keep NVRTC's compile time down (each is fully
    // unrolled); a head size between them pads with zeros to the next one. SD's 40, 64, 80 and
    // 160 (and 32, 128) map exactly.
    switch ((d + 15) / 16) {
        case 1:
        case 2: am_attention<2>(q, k, v, out, lq, lk, d, scale, causal, ks, vt); break;
        case 3: am_attention<3>(q, k, v, out, lq, lk, d, scale, causal, ks, vt); break;
        case 4: am_attention<4>(q, k, v, out, lq, lk, d, scale, causal, ks, vt); break;
        case 5: am_attention<5>(q, k, v, out, lq, lk, d, scale, causal, ks, vt); break;
        case 6:
        case 7:
        case 8: am_attention<8>(q, k, v, out, lq, lk, d, scale, causal, ks, vt); break;
        case 9:
        case 10: am_attention<10>(q, k, v, out, lq, lk, d, scale, causal, ks, vt); break;
        default: break;  // d > 160: the wrapper never launches this
    }
}
SD_EXPORT(attention_mma_f16)
