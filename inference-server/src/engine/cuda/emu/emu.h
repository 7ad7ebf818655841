// CUDA-on-CPU emulation: the vocabulary of CUDA C++ that our kernels use, for the host C++
// compiler. A kernel file is compiled as `emu.h`, then `kernels/prelude.cuh`, then the `.cu`
// file itself, with SDSERVE_EMU defined, so the *same* source that NVRTC compiles for the GPU
// runs here and is checked against the CPU backend in plain `cargo test`.
//
// Execution model (see runtime.cpp): blocks run one at a time; the threads of a block are
// fibers on the launching OS thread and switch only at __syncthreads, warp shuffles,
// __ballot_sync and __syncwarp. Between those points a thread runs alone, which is why plain
// read-modify-write is a correct atomicAdd here. Launches are serialized by a global lock.
//
// Rules this imposes on kernel authors (repeated in prelude.cuh):
// - `__shared__` arrays are function statics placed in a section that is poisoned (0xFF bytes:
//   NaN as float or half, -1 as int) before every block. g++ ignores section attributes inside
//   templates, so declare them in the non-template `extern "C"` entry point and pass pointers.
// - No `static __shared__` and no `extern __shared__`: use SD_DYNAMIC_SMEM.
#pragma once
#ifndef SDSERVE_EMU
#define SDSERVE_EMU 1
#endif

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <stdexcept>
#include <type_traits>
#include <utility>

// ---- qualifiers -------------------------------------------------------------------------
#define __global__
#define __device__
#define __host__
#define __constant__ static
#define __forceinline__ inline __attribute__((always_inline))
#define __noinline__ __attribute__((noinline))
#define __align__(n) __attribute__((aligned(n)))
#define __launch_bounds__(...)
// g++ understands __restrict__ natively.

// Each translation unit gets its own shared-memory section, so a launch poisons only the
// statics of the file its kernel lives in. The build script defines SDEMU_TU per file; the
// section name must be a C identifier so the linker provides __start_/__stop_ symbols.
#ifndef SDEMU_TU
#define SDEMU_TU sdemu_sh_default
#endif
#define SDEMU_CAT_(a, b) a##b
#define SDEMU_CAT(a, b) SDEMU_CAT_(a, b)
#define SDEMU_STR_(x) #x
#define SDEMU_STR(x) SDEMU_STR_(x)
// Weak: a file without __shared__ arrays has no section, and the bounds resolve to null.
extern "C" char SDEMU_CAT(__start_, SDEMU_TU)[] __attribute__((weak));
extern "C" char SDEMU_CAT(__stop_, SDEMU_TU)[] __attribute__((weak));
// g++ silently ignores section attributes on statics in templates (they would escape the
// poisoning and keep values across blocks), so a __shared__ declared inside a template is a
// compile error here: __PRETTY_FUNCTION__ of an instantiation contains "[with ".
namespace sdemu {
constexpr bool in_template(const char* f) {
  for (; *f; ++f)
    if (f[0] == '[' && f[1] == 'w' && f[2] == 'i' && f[3] == 't' && f[4] == 'h' && f[5] == ' ') return true;
  return false;
}
}  // namespace sdemu
#define __shared__                                                                          \
  static_assert(!::sdemu::in_template(__PRETTY_FUNCTION__),                                 \
                "declare __shared__ arrays in the non-template extern \"C\" kernel and pass " \
                "pointers to templates (see prelude.cuh)");                                 \
  static __attribute__((section(SDEMU_STR(SDEMU_TU)), aligned(16)))

// ---- thread identity ----------------------------------------------------------------------
struct uint3 { unsigned int x, y, z; };
struct dim3 {
  unsigned int x, y, z;
  constexpr dim3(unsigned int vx = 1, unsigned int vy = 1, unsigned int vz = 1) : x(vx), y(vy), z(vz) {}
};

// CUDA's vector types, with the alignment that makes a float4 load one 16-byte access.
struct __align__(8) float2 { float x, y; };
struct float3 { float x, y, z; };
struct __align__(16) float4 { float x, y, z, w; };
struct __align__(8) int2 { int x, y; };
struct __align__(16) int4 { int x, y, z, w; };
struct __align__(8) uint2 { unsigned int x, y; };
struct __align__(16) uint4 { unsigned int x, y, z, w; };
inline float2 make_float2(float x, float y) { return float2{x, y}; }
inline float3 make_float3(float x, float y, float z) { return float3{x, y, z}; }
inline float4 make_float4(float x, float y, float z, float w) { return float4{x, y, z, w}; }
inline int2 make_int2(int x, int y) { return int2{x, y}; }
inline int4 make_int4(int x, int y, int z, int w) { return int4{x, y, z, w}; }
inline uint2 make_uint2(unsigned x, unsigned y) { return uint2{x, y}; }
inline uint4 make_uint4(unsigned x, unsigned y, unsigned z, unsigned w) { return uint4{x, y, z, w}; }

namespace sdemu {
// The part of a fiber that kernel code reads; runtime.cpp extends it.
struct ThreadCtx {
  uint3 idx;
  unsigned int lane;
};
extern ThreadCtx* g_cur;  // the running fiber (launches are serialized, so a plain global)
extern uint3 g_block_idx;
extern dim3 g_block_dim;
extern dim3 g_grid_dim;
extern unsigned char* g_dyn_smem;  // this launch's dynamic shared memory (poisoned per block)

enum WarpOp : int { kShfl = 0, kBallot = 1, kSyncWarp = 2 };
// One warp-collective step: waits until every live lane named in `mask` arrives with the same
// mask, then returns lane `src`'s value (kShfl; src < 0 means "own value"), the ballot of
// `value != 0` (kBallot) or 0 (kSyncWarp). Misuse ends the launch with an error.
std::uint64_t warp_op(WarpOp op, const char* what, unsigned mask, std::uint64_t value, int src);
void sync_threads();
[[noreturn]] void trap(const char* why);

using Invoker = void (*)(void** params);
bool register_kernel(const char* name, Invoker invoke, int arity, char* shared_begin, char* shared_end);

// CUDA passes kernel arguments as `void** params`, params[i] pointing at argument i. The
// kernel's own signature tells us how to unpack them.
template <class... A, std::size_t... I>
inline void apply_params(void (*f)(A...), void** p, std::index_sequence<I...>) {
  f(*static_cast<std::remove_cv_t<std::remove_reference_t<A>>*>(p[I])...);
}
template <class... A>
inline void apply_all(void (*f)(A...), void** p) {
  apply_params(f, p, std::index_sequence_for<A...>{});
}
template <auto F>
void invoke_kernel(void** p) { apply_all(F, p); }
// Argument count, so a launch with the wrong number of params fails instead of reading junk.
template <class... A>
constexpr int arity(void (*)(A...)) { return int(sizeof...(A)); }

template <class T>
inline std::uint64_t to_bits(T v) {
  static_assert(sizeof(T) <= 8 && std::is_trivially_copyable<T>::value, "shuffle of a type over 8 bytes");
  std::uint64_t b = 0;
  std::memcpy(&b, &v, sizeof(T));
  return b;
}
template <class T>
inline T from_bits(std::uint64_t b) {
  T v;
  std::memcpy(&v, &b, sizeof(T));
  return v;
}
}  // namespace sdemu

#define threadIdx (static_cast<const uint3&>(::sdemu::g_cur->idx))
#define blockIdx (static_cast<const uint3&>(::sdemu::g_block_idx))
#define blockDim (static_cast<const dim3&>(::sdemu::g_block_dim))
#define gridDim (static_cast<const dim3&>(::sdemu::g_grid_dim))
#define warpSize 32

// Registration runs before main; SD_EXPORT in prelude.cuh expands to this.
#define SDEMU_REGISTER(name)                                                                \
  static const bool SDEMU_CAT(sdemu_registered_, name) = ::sdemu::register_kernel(         \
      #name, &::sdemu::invoke_kernel<&name>, ::sdemu::arity(&name), SDEMU_CAT(__start_, SDEMU_TU), SDEMU_CAT(__stop_, SDEMU_TU));

// ---- synchronization and warp intrinsics ------------------------------------------------
inline void __syncthreads() { ::sdemu::sync_threads(); }
inline void __syncwarp(unsigned mask = 0xffffffffu) {
  ::sdemu::warp_op(::sdemu::kSyncWarp, "__syncwarp", mask, 0, -1);
}
inline void __threadfence() {}
inline void __threadfence_block() {}
inline void __trap() { ::sdemu::trap("__trap() called"); }

// Source lane for each shuffle flavour, following the CUDA programming guide: `width` splits
// the warp into segments; a source outside the caller's segment yields the caller's own value.
inline int sdemu_seg_base(int width) { return int(::sdemu::g_cur->lane) & ~(width - 1); }
template <class T>
inline T __shfl_sync(unsigned mask, T var, int src_lane, int width = 32) {
  int src = sdemu_seg_base(width) + (src_lane & (width - 1));
  return ::sdemu::from_bits<T>(::sdemu::warp_op(::sdemu::kShfl, "__shfl_sync", mask, ::sdemu::to_bits(var), src));
}
template <class T>
inline T __shfl_up_sync(unsigned mask, T var, unsigned delta, int width = 32) {
  int lane = int(::sdemu::g_cur->lane);
  int src = (lane & (width - 1)) >= int(delta) ? lane - int(delta) : -1;
  return ::sdemu::from_bits<T>(::sdemu::warp_op(::sdemu::kShfl, "__shfl_up_sync", mask, ::sdemu::to_bits(var), src));
}
template <class T>
inline T __shfl_down_sync(unsigned mask, T var, unsigned delta, int width = 32) {
  int lane = int(::sdemu::g_cur->lane);
  int src = (lane & (width - 1)) + int(delta) < width ? lane + int(delta) : -1;
  return ::sdemu::from_bits<T>(::sdemu::warp_op(::sdemu::kShfl, "__shfl_down_sync", mask, ::sdemu::to_bits(var), src));
}
template <class T>
inline T __shfl_xor_sync(unsigned mask, T var, int lane_mask, int width = 32) {
  int lane = int(::sdemu::g_cur->lane);
  int src = lane ^ lane_mask;
  if ((src & ~(width - 1)) != sdemu_seg_base(width)) src = -1;
  return ::sdemu::from_bits<T>(::sdemu::warp_op(::sdemu::kShfl, "__shfl_xor_sync", mask, ::sdemu::to_bits(var), src));
}
inline unsigned __ballot_sync(unsigned mask, int pred) {
  return unsigned(::sdemu::warp_op(::sdemu::kBallot, "__ballot_sync", mask, pred != 0, -1));
}
inline int __any_sync(unsigned mask, int pred) { return __ballot_sync(mask, pred) != 0; }
inline int __all_sync(unsigned mask, int pred) {
  // The ballot covers only live lanes named in mask, so compare against the live subset.
  unsigned everyone = __ballot_sync(mask, 1);
  return __ballot_sync(mask, pred) == everyone;
}
inline unsigned __activemask() { return __ballot_sync(0xffffffffu, 1); }

// ---- atomics: a fiber is never interrupted between sync points, so these are atomic -------
template <class T>
inline T atomicAdd(T* p, T v) { T old = *p; *p = old + v; return old; }
template <class T>
inline T atomicSub(T* p, T v) { T old = *p; *p = old - v; return old; }
template <class T>
inline T atomicMax(T* p, T v) { T old = *p; if (v > old) *p = v; return old; }
template <class T>
inline T atomicMin(T* p, T v) { T old = *p; if (v < old) *p = v; return old; }
template <class T>
inline T atomicExch(T* p, T v) { T old = *p; *p = v; return old; }
template <class T>
inline T atomicCAS(T* p, T cmp, T v) { T old = *p; if (old == cmp) *p = v; return old; }

// ---- math ---------------------------------------------------------------------------------
// The fast-math intrinsics map to the accurate host functions; tests compare with tolerances.
inline float rsqrtf(float x) { return 1.0f / sqrtf(x); }
inline float __expf(float x) { return expf(x); }
inline float __logf(float x) { return logf(x); }
inline float __sinf(float x) { return sinf(x); }
inline float __cosf(float x) { return cosf(x); }
inline float __powf(float x, float y) { return powf(x, y); }
inline float __tanhf(float x) { return tanhf(x); }
inline float __fdividef(float a, float b) { return a / b; }
inline float __frcp_rn(float x) { return 1.0f / x; }
inline float __fsqrt_rn(float x) { return sqrtf(x); }
inline float __saturatef(float x) { return x < 0.0f ? 0.0f : (x > 1.0f ? 1.0f : x); }
inline float __fmaf_rn(float a, float b, float c) { return fmaf(a, b, c); }
inline float __fadd_rn(float a, float b) { return a + b; }
inline float __fmul_rn(float a, float b) { return a * b; }
inline int __float_as_int(float x) { int i; std::memcpy(&i, &x, 4); return i; }
inline unsigned __float_as_uint(float x) { unsigned i; std::memcpy(&i, &x, 4); return i; }
inline float __int_as_float(int i) { float x; std::memcpy(&x, &i, 4); return x; }
inline float __uint_as_float(unsigned i) { float x; std::memcpy(&x, &i, 4); return x; }
inline int __popc(unsigned x) { return __builtin_popcount(x); }
inline int __clz(int x) { return x == 0 ? 32 : __builtin_clz(unsigned(x)); }
inline int __ffs(int x) { return __builtin_ffs(x); }
template <class T>
inline T __ldg(const T* p) { return *p; }

// CUDA's min/max are overloads in the global namespace that accept mixed arithmetic types.
template <class A, class B>
inline typename std::common_type<A, B>::type min(A a, B b) {
  using C = typename std::common_type<A, B>::type;
  return C(b) < C(a) ? C(b) : C(a);
}
template <class A, class B>
inline typename std::common_type<A, B>::type max(A a, B b) {
  using C = typename std::common_type<A, B>::type;
  return C(a) < C(b) ? C(b) : C(a);
}
