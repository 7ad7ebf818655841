// The reference GEMM behind the standin's cuBLAS and cuBLASLt, and the f16/bf16 conversions it
// needs (IEEE 754 binary16 and bfloat16, round to nearest even).
#include "gemm.h"

#include <algorithm>
#include <cstring>
#include <vector>

#include "standin.h"

namespace standin {
namespace {

float f16_to_f32(std::uint16_t h) {
  const std::uint32_t sign = std::uint32_t(h & 0x8000) << 16;
  std::uint32_t exp = (h >> 10) & 0x1f, man = h & 0x3ff, bits;
  if (exp == 0x1f) {
    bits = sign | 0x7f800000 | (man << 13);
  } else if (exp == 0) {
    if (man == 0) {
      bits = sign;
    } else {  // subnormal: normalize
      int e = -1;
      do {
        ++e;
        man <<= 1;
      } while (!(man & 0x400));
      bits = sign | ((112 - e) << 23) | ((man & 0x3ff) << 13);
    }
  } else {
    bits = sign | ((exp + 112) << 23) | (man << 13);
  }
  float f;
  std::memcpy(&f, &bits, 4);
  return f;
}

std::uint16_t f32_to_f16(float f) {
  std::uint32_t x;
  std::memcpy(&x, &f, 4);
  const std::uint16_t sign = (x >> 16) & 0x8000;
  const std::uint32_t abs = x & 0x7fffffff;
  if (abs >= 0x7f800000) return sign | 0x7c00 | (abs > 0x7f800000 ? 0x200 : 0);  // inf, NaN
  if (abs >= 0x477ff000) return sign | 0x7c00;  // rounds past 65504: inf
  if (abs < 0x38800000) {                       // below 2^-14: subnormal or zero
    if (abs < 0x33000000) return sign;          // below half the smallest subnormal
    const std::uint32_t e = abs >> 23, man = (abs & 0x7fffff) | 0x800000;
    // The subnormal's count of 2^-24 units: man · 2^(e - 150) / 2^-24 = man >> (126 - e).
    const std::uint32_t shift = 126 - e;
    std::uint32_t v = man >> shift, rest = man & ((1u << shift) - 1), half = 1u << (shift - 1);
    if (rest > half || (rest == half && (v & 1))) ++v;
    return sign | static_cast<std::uint16_t>(v);
  }
  std::uint32_t v = ((abs >> 13) - (112u << 10));
  const std::uint32_t rest = abs & 0x1fff;
  if (rest > 0x1000 || (rest == 0x1000 && (v & 1))) ++v;
  return sign | static_cast<std::uint16_t>(v);
}

float bf16_to_f32(std::uint16_t h) {
  const std::uint32_t bits = std::uint32_t(h) << 16;
  float f;
  std::memcpy(&f, &bits, 4);
  return f;
}

std::uint16_t f32_to_bf16(float f) {
  std::uint32_t x;
  std::memcpy(&x, &f, 4);
  if ((x & 0x7fffffff) > 0x7f800000) return static_cast<std::uint16_t>((x >> 16) | 0x40);  // NaN
  x += 0x7fff + ((x >> 16) & 1);
  return static_cast<std::uint16_t>(x >> 16);
}

float load(int type, const void* base, std::uint64_t i) {
  switch (type) {
    case R_16F: return f16_to_f32(static_cast<const std::uint16_t*>(base)[i]);
    case R_16BF: return bf16_to_f32(static_cast<const std::uint16_t*>(base)[i]);
    default: return static_cast<const float*>(base)[i];
  }
}

void store(int type, void* base, std::uint64_t i, float v) {
  switch (type) {
    case R_16F: static_cast<std::uint16_t*>(base)[i] = f32_to_f16(v); break;
    case R_16BF: static_cast<std::uint16_t*>(base)[i] = f32_to_bf16(v); break;
    default: static_cast<float*>(base)[i] = v;
  }
}

// Element (r, c) of an operand's matrix `b` after an optional transpose, as a flat index.
std::uint64_t at(const Operand& o, std::int64_t b, std::uint64_t r, std::uint64_t c, bool trans) {
  if (trans) std::swap(r, c);
  return static_cast<std::uint64_t>(b * o.stride) + r + c * static_cast<std::uint64_t>(o.ld);
}

}  // namespace

unsigned elem_size(int type) {
  switch (type) {
    case R_32F: return 4;
    case R_16F: case R_16BF: return 2;
    default: return 0;
  }
}

bool operand_in_memory(const Operand& o, const char* call, const char* what) {
  if (o.rows == 0 || o.cols == 0 || o.batch == 0) return true;
  const std::uint64_t last =
      static_cast<std::uint64_t>((o.batch - 1) * o.stride) + (o.cols - 1) * static_cast<std::uint64_t>(o.ld) + o.rows;
  const std::uint64_t bytes = last * elem_size(o.type);
  if (span_ok(reinterpret_cast<std::uint64_t>(o.ptr), bytes)) return true;
  complain("%s: %s (%llu×%llu, ld %lld, batch %lld, stride %lld) spans %llu bytes from %p, outside every allocation",
           call, what, static_cast<unsigned long long>(o.rows), static_cast<unsigned long long>(o.cols),
           static_cast<long long>(o.ld), static_cast<long long>(o.batch), static_cast<long long>(o.stride),
           static_cast<unsigned long long>(bytes), o.ptr);
  return false;
}

void reference_gemm(bool trans_a, bool trans_b, std::uint64_t m, std::uint64_t n, std::uint64_t k, float alpha,
                    const Operand& a, const Operand& b, float beta, const Operand& c, const Operand& d,
                    const void* bias, int bias_type) {
  std::vector<float> opa(m * k), opb(k * n), acc(n);
  for (std::int64_t batch = 0; batch < d.batch; ++batch) {
    for (std::uint64_t i = 0; i < m; ++i)
      for (std::uint64_t l = 0; l < k; ++l) opa[i * k + l] = load(a.type, a.ptr, at(a, batch, i, l, trans_a));
    for (std::uint64_t l = 0; l < k; ++l)
      for (std::uint64_t j = 0; j < n; ++j) opb[l * n + j] = load(b.type, b.ptr, at(b, batch, l, j, trans_b));
    for (std::uint64_t i = 0; i < m; ++i) {
      // Row i of the product, summed over l in order for every element (vectorizes over j).
      std::fill(acc.begin(), acc.end(), 0.f);
      for (std::uint64_t l = 0; l < k; ++l) {
        const float x = opa[i * k + l];
        const float* row = &opb[l * n];
        for (std::uint64_t j = 0; j < n; ++j) acc[j] += x * row[j];
      }
      for (std::uint64_t j = 0; j < n; ++j) {
        float v = alpha * acc[j];
        if (beta != 0.f) v += beta * load(c.type, c.ptr, at(c, batch, i, j, false));
        if (bias) v += load(bias_type, bias, i);
        store(d.type, const_cast<void*>(d.ptr), at(d, batch, i, j, false), v);
      }
    }
  }
}

}  // namespace standin
