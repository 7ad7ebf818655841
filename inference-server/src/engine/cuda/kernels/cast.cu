// Dtype conversions cast_{src}_{dst} for every pair of f32/f16/bf16 (identity pairs included, so
// the engine never special-cases them). Through f32: exact for widening, round-to-nearest-even
// (from_f32) for narrowing; f16 <-> bf16 rounds once, since every f16 is exact in f32.

template <typename S, typename D>
__device__ void cs_cast(const S* x, D* y, unsigned long long n) {
    for (unsigned long long i = (unsigned long long)blockIdx.x * blockDim.x + threadIdx.x; i < n;
         i += (unsigned long long)gridDim.x * blockDim.x)
        y[i] = from_f32<D>(to_f32(x[i]));
}

#define CS_CAST(S, sn, D, dn)                                                                       \
    extern "C" __global__ void cast_##sn##_##dn(const S* x, D* y, unsigned long long n) {           \
        cs_cast<S, D>(x, y, n);                                                                     \
    }                                                                                               \
    SD_EXPORT(cast_##sn##_##dn)
#define CS_CAST_FROM(S, sn) CS_CAST(S, sn, float, f32) CS_CAST(S, sn, f16, f16) CS_CAST(S, sn, bf16, bf16)
CS_CAST_FROM(float, f32)
CS_CAST_FROM(f16, f16)
CS_CAST_FROM(bf16, bf16)
