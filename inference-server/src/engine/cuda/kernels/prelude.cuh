// sdserve kernel prelude: prepended to every kernel file before NVRTC compiles it, and
// #included after emu/emu.h (with SDSERVE_EMU defined) when the CUDA-on-CPU emulator compiles
// the same file with the host C++ compiler. It needs no header: NVRTC has no cuda_fp16.h.
//
// What a kernel author writes:
//   extern "C" __global__ void scale_f16(const f16* __restrict__ x, f16* y, float s, int n) {
//     int i = blockIdx.x * blockDim.x + threadIdx.x;
//     if (i < n) y[i] = from_f32<f16>(to_f32(x[i]) * s);
//   }
//   SD_EXPORT(scale_f16)
//
// Rules (the emulator depends on them; each is checked or documented there):
// - Every kernel is `extern "C" __global__ void {op}_{dtype}(...)` followed by SD_EXPORT(name).
//   Macros may generate both; registration does not scan source text.
// - Declare `__shared__` arrays in the non-template extern "C" kernel and pass pointers to
//   template helpers: g++ ignores the section attribute inside templates, so such an array
//   would escape the per-block poisoning and keep values across blocks (the emulator makes it
//   a compile error: "declare __shared__ arrays in the non-template ..."). No initializers, no
//   `static __shared__`, no `extern __shared__`: use SD_DYNAMIC_SMEM(T, name) for dynamic
//   shared memory (sized by the launch's shared_mem_bytes).
// - Inline PTX goes in small named __device__ functions with an `#ifdef SDSERVE_EMU` twin that
//   follows the PTX ISA's per-lane layout, as to_f32/from_f32 below do.
// - Warp collectives must name every live lane that executes them (`0xffffffff` for a full
//   warp); the emulator reports a deadlock or a read of an inactive lane as a launch error.
#pragma once

#ifdef SDSERVE_EMU
#define SD_EXPORT(name) SDEMU_REGISTER(name)
#define SD_DYNAMIC_SMEM(T, name) T* name = reinterpret_cast<T*>(::sdemu::g_dyn_smem)
#else
#define SD_EXPORT(name)
#define SD_DYNAMIC_SMEM(T, name)                                \
  extern __shared__ __align__(16) unsigned char sd_dyn_smem_[]; \
  T* name = reinterpret_cast<T*>(sd_dyn_smem_)
#endif

// IEEE binary16 and bfloat16 as raw bits: 2 bytes, layout-compatible with the `half` crate.
struct __align__(2) f16 { unsigned short x; };
struct __align__(2) bf16 { unsigned short x; };

__device__ __forceinline__ float sd_bits_to_f32(unsigned int b) { return __uint_as_float(b); }
__device__ __forceinline__ unsigned int sd_f32_to_bits(float v) { return __float_as_uint(v); }

__device__ __forceinline__ float to_f32(float v) { return v; }
__device__ __forceinline__ float to_f32(bf16 v) { return sd_bits_to_f32((unsigned int)v.x << 16); }

__device__ __forceinline__ float to_f32(f16 v) {
#ifdef SDSERVE_EMU
  // Exact widening; a NaN gets its quiet bit set, as the half crate and F16C do.
  unsigned int h = v.x, sign = (h & 0x8000u) << 16, exp = (h >> 10) & 0x1fu, man = h & 0x3ffu;
  if (exp == 0x1f) return sd_bits_to_f32(sign | 0x7f800000u | (man ? 0x400000u | (man << 13) : 0u));
  if (exp == 0) return sd_bits_to_f32(sign | sd_f32_to_bits(float(man) * 5.9604644775390625e-8f));
  return sd_bits_to_f32(sign | ((exp + 112) << 23) | (man << 13));
#else
  float f;
  asm("cvt.f32.f16 %0, %1;" : "=f"(f) : "h"(v.x));
  return f;
#endif
}

__device__ __forceinline__ unsigned short sd_f32_to_f16_bits(float v) {
#ifdef SDSERVE_EMU
  // Round to nearest even (F. Giesen's float_to_half_fast3_rtne): normal results round with an
  // integer add on the bits; subnormal ones let the FPU (in its default RNE mode) do it by
  // adding a magic number that aligns the half's last mantissa bit with the float's.
  unsigned int x = sd_f32_to_bits(v), sign = (x >> 16) & 0x8000u;
  x &= 0x7fffffffu;
  if (x > 0x7f800000u) return (unsigned short)(sign | 0x7e00u | ((x >> 13) & 0x3ffu));  // NaN
  if (x >= 0x47800000u) return (unsigned short)(sign | 0x7c00u);  // >= 65536: overflow
  if (x < 0x38800000u) {  // below 2^-14: subnormal half or zero
    const unsigned int magic = 0x3f000000u;  // 0.5f: ((127 - 15) + (23 - 10) + 1) << 23
    return (unsigned short)(sign | (sd_f32_to_bits(sd_bits_to_f32(x) + sd_bits_to_f32(magic)) - magic));
  }
  unsigned int odd = (x >> 13) & 1u;
  x += 0xc8000fffu + odd;  // rebias the exponent (15 - 127) << 23, plus the rounding bias
  return (unsigned short)(sign | (x >> 13));  // an exponent carry yields inf, as it should
#else
  unsigned short r;
  asm("cvt.rn.f16.f32 %0, %1;" : "=h"(r) : "f"(v));
  return r;
#endif
}

__device__ __forceinline__ unsigned short sd_f32_to_bf16_bits(float v) {
#if !defined(SDSERVE_EMU) && defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  unsigned short r;
  asm("cvt.rn.bf16.f32 %0, %1;" : "=h"(r) : "f"(v));
  return r;
#else
  // Round to nearest even on the bits; a NaN keeps its top payload and becomes quiet.
  unsigned int x = sd_f32_to_bits(v);
  if ((x & 0x7fffffffu) > 0x7f800000u) return (unsigned short)((x >> 16) | 0x40u);
  return (unsigned short)((x + 0x7fffu + ((x >> 16) & 1u)) >> 16);
#endif
}

template <class T>
__device__ T from_f32(float v);
template <>
__device__ __forceinline__ float from_f32<float>(float v) { return v; }
template <>
__device__ __forceinline__ f16 from_f32<f16>(float v) { f16 r; r.x = sd_f32_to_f16_bits(v); return r; }
template <>
__device__ __forceinline__ bf16 from_f32<bf16>(float v) { bf16 r; r.x = sd_f32_to_bf16_bits(v); return r; }

// Packed halves, as mma.sync fragments hold them: `lo` in bits 0-15, `hi` in bits 16-31.
__device__ __forceinline__ unsigned int pack_f16x2(float lo, float hi) {
  return (unsigned int)sd_f32_to_f16_bits(lo) | ((unsigned int)sd_f32_to_f16_bits(hi) << 16);
}
__device__ __forceinline__ float unpack_f16x2_lo(unsigned int v) { f16 h; h.x = (unsigned short)(v & 0xffffu); return to_f32(h); }
__device__ __forceinline__ float unpack_f16x2_hi(unsigned int v) { f16 h; h.x = (unsigned short)(v >> 16); return to_f32(h); }

// d[0..4] += A * B for one mma.sync.m16n8k16 tile (f16 A/B, f32 C/D), sm_80+; every lane of
// the warp must call it together. Fragment maps (PTX ISA, "Matrix Fragments for
// mma.m16n8k16"), g = lane / 4, t = lane % 4, a register holding an f16 pair with the lower k
// (or column) index in its low 16 bits:
//   a[0] = A[g][2t..2t+1], a[1] = A[g+8][2t..], a[2] = A[g][2t+8..], a[3] = A[g+8][2t+8..]
//   b[0] = B[2t..2t+1][g], b[1] = B[2t+8..2t+9][g]
//   d[0] = C[g][2t], d[1] = C[g][2t+1], d[2] = C[g+8][2t], d[3] = C[g+8][2t+1]
// Used by attention_mma.cu and conv_igemm.cu; the emulated twin makes their fragment logic run
// (and be tested) under the emulator.
__device__ inline void mma_16816_f16(float* d, const unsigned* a, const unsigned* b) {
#ifdef SDSERVE_EMU
    // Emulated twin: each lane gathers, with shuffles, exactly the registers the hardware would
    // read for its four outputs (rows g and g+8, columns 2t and 2t+1), then sums in f32.
    const unsigned lane = threadIdx.x & 31, g = lane >> 2, t = lane & 3;
    for (int kp = 0; kp < 8; ++kp) {  // k = 2kp, 2kp+1
        const int src_t = kp & 3, hi = kp >> 2;
        unsigned a_lo = __shfl_sync(0xffffffffu, a[hi ? 2 : 0], (int)(g * 4 + src_t));  // A[g][2kp..]
        unsigned a_hi = __shfl_sync(0xffffffffu, a[hi ? 3 : 1], (int)(g * 4 + src_t));  // A[g+8][2kp..]
        unsigned b0 = __shfl_sync(0xffffffffu, b[hi], (int)((2 * t) * 4 + src_t));     // B[2kp..][2t]
        unsigned b1 = __shfl_sync(0xffffffffu, b[hi], (int)((2 * t + 1) * 4 + src_t)); // B[2kp..][2t+1]
        float al0 = unpack_f16x2_lo(a_lo), al1 = unpack_f16x2_hi(a_lo);
        float ah0 = unpack_f16x2_lo(a_hi), ah1 = unpack_f16x2_hi(a_hi);
        float b00 = unpack_f16x2_lo(b0), b01 = unpack_f16x2_hi(b0);
        float b10 = unpack_f16x2_lo(b1), b11 = unpack_f16x2_hi(b1);
        d[0] += al0 * b00 + al1 * b01;
        d[1] += al0 * b10 + al1 * b11;
        d[2] += ah0 * b00 + ah1 * b01;
        d[3] += ah0 * b10 + ah1 * b11;
    }
#elif __CUDA_ARCH__ >= 800
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
        "{%0,%1,%2,%3};\n"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
#else
    __trap();  // wrappers pick the kernels that call this only on sm_80+
#endif
}

// -inf without <math.h> (NVRTC has no INFINITY macro): the bit pattern of -inf.
#define SD_NEG_INF __uint_as_float(0xff800000u)

// Sum / max of `v` over a full warp; every lane gets the result (all 32 lanes must call).
__device__ __forceinline__ float sd_warp_sum(float v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}
__device__ __forceinline__ float sd_warp_max(float v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
  return v;
}

// Block-wide sum / max (blockDim a multiple of 32, every thread calls); `red` is a 32-float
// shared scratch declared by the non-template entry point. The trailing barrier lets the caller
// reuse `red` at once.
__device__ __forceinline__ float sd_block_sum(float v, float* red) {
  unsigned lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = blockDim.x >> 5;
  v = sd_warp_sum(v);
  if (lane == 0) red[warp] = v;
  __syncthreads();
  v = sd_warp_sum(lane < warps ? red[lane] : 0.0f);
  __syncthreads();
  return v;
}
__device__ __forceinline__ float sd_block_max(float v, float* red) {
  unsigned lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = blockDim.x >> 5;
  v = sd_warp_max(v);
  if (lane == 0) red[warp] = v;
  __syncthreads();
  v = sd_warp_max(lane < warps ? red[lane] : SD_NEG_INF);
  __syncthreads();
  return v;
}
