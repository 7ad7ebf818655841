// The standin's reference GEMM in BLAS terms (column-major), shared by its cuBLAS and cuBLASLt:
// every product accumulated in f32 and rounded once to the output type, like the f32-compute
// modes the backend asks for.
#pragma once
#include <cstdint>

namespace standin {

// cudaDataType values the standin supports (library_types.h).
enum DataType : int { R_32F = 0, R_16F = 2, R_16BF = 14 };

// Bytes per element of `type`, or 0 when the standin does not support it.
unsigned elem_size(int type);

// One column-major operand: element (r, c) of matrix b is at ptr + b·stride + r + c·ld.
struct Operand {
  const void* ptr = nullptr;
  int type = R_32F;
  std::uint64_t rows = 0, cols = 0;
  std::int64_t ld = 0;
  std::int64_t batch = 1;
  std::int64_t stride = 0;
};

// Whether every element the operand spans lies in one live device allocation; complains
// naming `call` and `what` when not.
bool operand_in_memory(const Operand& o, const char* call, const char* what);

// For each batch: D = alpha·op(A)·op(B) + beta·C (+ bias[row] when `bias`), with op a transpose
// when `trans_*`. Shapes must already be checked: op(A) is m×k, op(B) k×n, C and D m×n. C is
// not read when beta is 0 (BLAS convention: NaN in C does not propagate). C and D may alias.
void reference_gemm(bool trans_a, bool trans_b, std::uint64_t m, std::uint64_t n, std::uint64_t k, float alpha,
                    const Operand& a, const Operand& b, float beta, const Operand& c, const Operand& d,
                    const void* bias, int bias_type);

}  // namespace standin
