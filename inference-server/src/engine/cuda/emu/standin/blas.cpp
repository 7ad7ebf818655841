// The cuBLAS and cuBLASLt subsets the backend calls (cuBLAS documentation: "cublasCreate",
// "cublasGemmStridedBatchedEx", and the cuBLASLt API chapter), on the reference GEMM, with the
// argument checks those functions document. Both libraries are column-major.
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <initializer_list>

#include "gemm.h"
#include "standin.h"

using standin::Operand;

namespace {

// cublasStatus_t values.
enum : int { OK = 0, NOT_INITIALIZED = 1, INVALID_VALUE = 7, NOT_SUPPORTED = 15 };
constexpr int kCompute32F = 68;  // CUBLAS_COMPUTE_32F
constexpr std::uint64_t kAlgoMagic = 0x5d5e57a1d1a160ull;

struct Handle {
  std::uint32_t magic = 0xb1a5;
  void* stream = nullptr;  // cublasSetStream; cuBLASLt takes its stream per call
};

}  // namespace

// cuBLASLt's opaque types, as the standin keeps them.
struct cublasLtMatmulDescOpaque_t {
  int compute = 0, scale = 0;
  std::int32_t pointer_mode = 0, transa = 0, transb = 0;
  std::uint32_t epilogue = 1;  // CUBLASLT_EPILOGUE_DEFAULT
  const void* bias = nullptr;
  std::int32_t bias_type = -1;  // -1: the type of D
};
struct cublasLtMatrixLayoutOpaque_t {
  std::uint32_t type = 0;
  std::int32_t order = 0;  // CUBLASLT_ORDER_COL
  std::uint64_t rows = 0, cols = 0;
  std::int64_t ld = 0;
  std::int32_t batch = 1;
  std::int64_t stride = 0;
};
struct cublasLtMatmulPreferenceOpaque_t {
  std::uint64_t max_workspace = 0;
  std::uint32_t search_mode = 0;
  std::uint32_t min_align[4] = {256, 256, 256, 256};  // A, B, C, D
};
struct cublasLtMatmulAlgo_t {
  std::uint64_t data[8];
};
struct cublasLtMatmulHeuristicResult_t {
  cublasLtMatmulAlgo_t algo;
  std::size_t workspaceSize;
  int state;
  float wavesCount;
  int reserved[4];
};
using Desc = cublasLtMatmulDescOpaque_t;
using Layout = cublasLtMatrixLayoutOpaque_t;
using Pref = cublasLtMatmulPreferenceOpaque_t;

namespace {

// Copies an attribute value after checking it has the documented size.
template <typename T>
int set_value(T* field, const void* buf, std::size_t size, const char* what) {
  if (buf == nullptr || size != sizeof(T)) {
    standin::complain("%s: the value must be %zu bytes, got %zu", what, sizeof(T), size);
    return INVALID_VALUE;
  }
  std::memcpy(field, buf, sizeof(T));
  return OK;
}

bool same_layout(const Layout& x, const Layout& y) {
  return x.type == y.type && x.order == y.order && x.rows == y.rows && x.cols == y.cols && x.ld == y.ld &&
         x.batch == y.batch && x.stride == y.stride;
}

// FNV-1a over the fields that define the problem (not the bias pointer, which changes per call).
std::uint64_t signature(const Desc& d, const Layout* const layouts[4]) {
  std::uint64_t h = 0xcbf29ce484222325ull;
  auto mix = [&h](const void* p, std::size_t n) {
    for (std::size_t i = 0; i < n; ++i) h = (h ^ static_cast<const unsigned char*>(p)[i]) * 0x100000001b3ull;
  };
  const std::int64_t fields[] = {d.compute, d.scale, d.pointer_mode, d.transa, d.transb, d.epilogue, d.bias_type};
  mix(fields, sizeof fields);
  for (int i = 0; i < 4; ++i) {
    const Layout& l = *layouts[i];
    const std::int64_t f[] = {l.type, l.order, static_cast<std::int64_t>(l.rows), static_cast<std::int64_t>(l.cols),
                              l.ld, l.batch, l.stride};
    mix(f, sizeof f);
  }
  return h;
}

Operand operand(const void* ptr, const Layout& l) {
  Operand o;
  o.ptr = ptr;
  o.type = static_cast<int>(l.type);
  o.rows = l.rows;
  o.cols = l.cols;
  o.ld = l.ld;
  o.batch = l.batch;
  o.stride = l.stride;
  return o;
}

// The checks cublasLtMatmul documents as INVALID_VALUE ("in conflict or in an impossible
// configuration") and NOT_SUPPORTED (no kernel for the combination), shared with the heuristic.
int check_problem(const Desc& d, const Layout& a, const Layout& b, const Layout& c, const Layout& dl) {
  if (d.compute != kCompute32F || d.scale != standin::R_32F || d.pointer_mode != 0) return NOT_SUPPORTED;
  if (d.epilogue != 1 && d.epilogue != 4) return NOT_SUPPORTED;  // DEFAULT, BIAS
  for (const Layout* l : {&a, &b, &c, &dl}) {
    if (l->order != 0 || !standin::elem_size(static_cast<int>(l->type))) return NOT_SUPPORTED;
    if (l->ld < static_cast<std::int64_t>(l->rows) || l->ld < 1) {
      standin::complain("cuBLASLt: a %llu-row layout with ld %lld", static_cast<unsigned long long>(l->rows),
                        static_cast<long long>(l->ld));
      return INVALID_VALUE;
    }
  }
  if (a.type != b.type || c.type != dl.type || a.type != dl.type) return NOT_SUPPORTED;
  const std::uint64_t m = d.transa ? a.cols : a.rows, k = d.transa ? a.rows : a.cols;
  const std::uint64_t kb = d.transb ? b.cols : b.rows, n = d.transb ? b.rows : b.cols;
  if (k != kb || c.rows != m || c.cols != n || dl.rows != m || dl.cols != n) {
    standin::complain("cuBLASLt: op(A) is %llux%llu, op(B) %llux%llu, C %llux%llu, D %llux%llu: they do not chain",
                      static_cast<unsigned long long>(m), static_cast<unsigned long long>(k),
                      static_cast<unsigned long long>(kb), static_cast<unsigned long long>(n),
                      static_cast<unsigned long long>(c.rows), static_cast<unsigned long long>(c.cols),
                      static_cast<unsigned long long>(dl.rows), static_cast<unsigned long long>(dl.cols));
    return INVALID_VALUE;
  }
  if (a.batch != dl.batch || b.batch != dl.batch || c.batch != dl.batch) {
    standin::complain("cuBLASLt: batch counts %d, %d, %d, %d differ", a.batch, b.batch, c.batch, dl.batch);
    return INVALID_VALUE;
  }
  const std::int64_t matrix = (static_cast<std::int64_t>(dl.cols) - 1) * dl.ld + static_cast<std::int64_t>(dl.rows);
  if (dl.batch > 1 && dl.stride < matrix) {
    standin::complain("cuBLASLt: D's batch stride %lld is shorter than one matrix (%lld): the outputs overlap",
                      static_cast<long long>(dl.stride), static_cast<long long>(matrix));
    return INVALID_VALUE;
  }
  return OK;
}

// A cuBLAS status for what standin::issue returned: its own status from work that ran, or the
// driver's refusal of the call (a bad stream, a capture that cannot take it).
int driver_status(int st) {
  if (st == 400) return INVALID_VALUE;           // CUDA_ERROR_INVALID_HANDLE: no such stream
  if (st >= 900 && st <= 908) return NOT_SUPPORTED;  // the capture refused it
  return st;
}

std::uint32_t alignment_of(const void* p) {
  const auto v = reinterpret_cast<std::uint64_t>(p);
  return v == 0 ? 256u : static_cast<std::uint32_t>(v & (~v + 1));
}

}  // namespace

extern "C" {

int cublasCreate_v2(void** handle) {
  if (handle == nullptr) return INVALID_VALUE;
  *handle = new Handle;
  return OK;
}

int cublasDestroy_v2(void* handle) {
  delete static_cast<Handle*>(handle);
  return OK;
}

int cublasSetStream_v2(void* handle, void* stream) {
  if (handle == nullptr) return NOT_INITIALIZED;
  static_cast<Handle*>(handle)->stream = stream;
  return OK;
}

int cublasSetWorkspace_v2(void* handle, void* workspace, std::size_t bytes) {
  if (handle == nullptr) return NOT_INITIALIZED;
  if (bytes > 0 && (reinterpret_cast<std::uint64_t>(workspace) % 256 != 0 ||
                    !standin::span_ok(reinterpret_cast<std::uint64_t>(workspace), bytes))) {
    standin::complain("cublasSetWorkspace: %zu bytes at %p: not a 256-byte aligned device buffer", bytes, workspace);
    return INVALID_VALUE;
  }
  return OK;
}

int cublasGemmStridedBatchedEx(void* handle, int transa, int transb, int m, int n, int k, const void* alpha,
                               const void* A, int a_type, int lda, long long stride_a, const void* B, int b_type,
                               int ldb, long long stride_b, const void* beta, void* C, int c_type, int ldc,
                               long long stride_c, int batch, int compute, int /*algo*/) {
  if (handle == nullptr) return NOT_INITIALIZED;
  const bool ta = transa == 1, tb = transb == 1;
  if ((transa != 0 && !ta) || (transb != 0 && !tb) || m < 0 || n < 0 || k < 0 || batch < 0 ||
      lda < (ta ? k : m) || lda < 1 || ldb < (tb ? n : k) || ldb < 1 || ldc < m || ldc < 1 || !alpha || !beta) {
    standin::complain("cublasGemmStridedBatchedEx: m %d n %d k %d lda %d ldb %d ldc %d trans %d/%d: invalid", m, n, k,
                      lda, ldb, ldc, transa, transb);
    return INVALID_VALUE;
  }
  if (compute != kCompute32F || a_type != b_type || a_type != c_type || !standin::elem_size(a_type))
    return NOT_SUPPORTED;
  if (m == 0 || n == 0 || batch == 0) return OK;
  Operand a{A, a_type, static_cast<std::uint64_t>(ta ? k : m), static_cast<std::uint64_t>(ta ? m : k), lda, batch,
            stride_a};
  Operand b{B, b_type, static_cast<std::uint64_t>(tb ? n : k), static_cast<std::uint64_t>(tb ? k : n), ldb, batch,
            stride_b};
  Operand c{C, c_type, static_cast<std::uint64_t>(m), static_cast<std::uint64_t>(n), ldc, batch, stride_c};
  const float al = *static_cast<const float*>(alpha), be = *static_cast<const float*>(beta);
  // Host scalars are read when the call is issued; the operands are checked again when the work
  // runs, since a captured GEMM runs at every graph launch.
  const int st = standin::issue(static_cast<Handle*>(handle)->stream, "cublasGemmStridedBatchedEx", [=]() -> int {
    const char* call = "cublasGemmStridedBatchedEx";
    if (!standin::operand_in_memory(a, call, "A") || !standin::operand_in_memory(b, call, "B") ||
        !standin::operand_in_memory(c, call, "C"))
      return INVALID_VALUE;
    standin::reference_gemm(ta, tb, m, n, k, al, a, b, be, c, c, nullptr, 0);
    return OK;
  });
  return driver_status(st);
}

int cublasLtCreate(void** handle) { return cublasCreate_v2(handle); }
int cublasLtDestroy(void* handle) { return cublasDestroy_v2(handle); }

int cublasLtMatmulDescCreate(Desc** desc, int compute, int scale) {
  if (desc == nullptr) return INVALID_VALUE;
  *desc = new Desc;
  (*desc)->compute = compute;
  (*desc)->scale = scale;
  return OK;
}

int cublasLtMatmulDescDestroy(Desc* desc) {
  delete desc;
  return OK;
}

int cublasLtMatmulDescSetAttribute(Desc* d, int attr, const void* buf, std::size_t size) {
  if (d == nullptr) return INVALID_VALUE;
  switch (attr) {
    case 2: return set_value(&d->pointer_mode, buf, size, "MATMUL_DESC_POINTER_MODE");
    case 3: return set_value(&d->transa, buf, size, "MATMUL_DESC_TRANSA");
    case 4: return set_value(&d->transb, buf, size, "MATMUL_DESC_TRANSB");
    case 7: return set_value(&d->epilogue, buf, size, "MATMUL_DESC_EPILOGUE");
    case 8: return set_value(&d->bias, buf, size, "MATMUL_DESC_BIAS_POINTER");
    case 26: return set_value(&d->bias_type, buf, size, "MATMUL_DESC_BIAS_DATA_TYPE");
    default: standin::complain("cublasLtMatmulDescSetAttribute: attribute %d is not modelled", attr); return INVALID_VALUE;
  }
}

int cublasLtMatrixLayoutCreate(Layout** layout, int type, std::uint64_t rows, std::uint64_t cols, std::int64_t ld) {
  if (layout == nullptr) return INVALID_VALUE;
  *layout = new Layout;
  (*layout)->type = static_cast<std::uint32_t>(type);
  (*layout)->rows = rows;
  (*layout)->cols = cols;
  (*layout)->ld = ld;
  return OK;
}

int cublasLtMatrixLayoutDestroy(Layout* layout) {
  delete layout;
  return OK;
}

int cublasLtMatrixLayoutSetAttribute(Layout* l, int attr, const void* buf, std::size_t size) {
  if (l == nullptr) return INVALID_VALUE;
  switch (attr) {
    case 0: return set_value(&l->type, buf, size, "MATRIX_LAYOUT_TYPE");
    case 1: return set_value(&l->order, buf, size, "MATRIX_LAYOUT_ORDER");
    case 2: return set_value(&l->rows, buf, size, "MATRIX_LAYOUT_ROWS");
    case 3: return set_value(&l->cols, buf, size, "MATRIX_LAYOUT_COLS");
    case 4: return set_value(&l->ld, buf, size, "MATRIX_LAYOUT_LD");
    case 5: return set_value(&l->batch, buf, size, "MATRIX_LAYOUT_BATCH_COUNT");
    case 6: return set_value(&l->stride, buf, size, "MATRIX_LAYOUT_STRIDED_BATCH_OFFSET");
    default: standin::complain("cublasLtMatrixLayoutSetAttribute: attribute %d is not modelled", attr); return INVALID_VALUE;
  }
}

int cublasLtMatmulPreferenceCreate(Pref** pref) {
  if (pref == nullptr) return INVALID_VALUE;
  *pref = new Pref;
  return OK;
}

int cublasLtMatmulPreferenceDestroy(Pref* pref) {
  delete pref;
  return OK;
}

int cublasLtMatmulPreferenceSetAttribute(Pref* p, int attr, const void* buf, std::size_t size) {
  if (p == nullptr) return INVALID_VALUE;
  switch (attr) {
    case 0: return set_value(&p->search_mode, buf, size, "MATMUL_PREF_SEARCH_MODE");
    case 1: return set_value(&p->max_workspace, buf, size, "MATMUL_PREF_MAX_WORKSPACE_BYTES");
    case 5: case 6: case 7: case 8:
      return set_value(&p->min_align[attr - 5], buf, size, "MATMUL_PREF_MIN_ALIGNMENT_*_BYTES");
    default: standin::complain("cublasLtMatmulPreferenceSetAttribute: attribute %d is not modelled", attr); return INVALID_VALUE;
  }
}

int cublasLtMatmulAlgoGetHeuristic(void* handle, Desc* d, Layout* a, Layout* b, Layout* c, Layout* dl, Pref* pref,
                                   int requested, cublasLtMatmulHeuristicResult_t* results, int* returned) {
  if (!handle || !d || !a || !b || !c || !dl || !pref || requested < 1 || !results || !returned) return INVALID_VALUE;
  *returned = 0;
  if (int st = check_problem(*d, *a, *b, *c, *dl)) return st;
  // SDSERVE_STANDIN_LT_ALGOS=0: no kernel for any problem, as real cuBLASLt answers for some
  // shapes, so the caller's fallback runs.
  if (const char* v = std::getenv("SDSERVE_STANDIN_LT_ALGOS"); v && std::strcmp(v, "0") == 0) return OK;
  const Layout* const layouts[4] = {a, b, c, dl};
  cublasLtMatmulHeuristicResult_t r{};
  r.algo.data[0] = kAlgoMagic;
  r.algo.data[1] = signature(*d, layouts);
  // The kernel chosen may use vector loads up to 16 bytes wide, as the preference allows; for
  // the bias, as the BIAS_POINTER set now allows (cublasLt.h: routines that do not dereference
  // it, like this one, "depend on its value to determine expected pointer alignment"; NULL
  // implies no constraint, so the widest loads).
  for (int i = 0; i < 4; ++i) r.algo.data[2 + i] = pref->min_align[i] < 16 ? pref->min_align[i] : 16;
  const std::uint32_t bias_align = d->bias ? alignment_of(d->bias) : 256u;
  r.algo.data[6] = bias_align < 16 ? bias_align : 16;
  r.workspaceSize = 0;
  r.state = OK;
  r.wavesCount = 1.f;
  results[0] = r;
  *returned = 1;
  return OK;
}

int cublasLtMatmul(void* handle, Desc* d, const void* alpha, const void* A, Layout* al, const void* B, Layout* bl,
                   const void* beta, const void* C, Layout* cl, void* D, Layout* dl, const cublasLtMatmulAlgo_t* algo,
                   void* workspace, std::size_t workspace_bytes, void* stream) {
  if (!handle || !d || !alpha || !beta || !al || !bl || !cl || !dl) return INVALID_VALUE;
  if (int st = check_problem(*d, *al, *bl, *cl, *dl)) return st;
  const Layout* const layouts[4] = {al, bl, cl, dl};
  if (algo == nullptr || algo->data[0] != kAlgoMagic || algo->data[1] != signature(*d, layouts)) {
    standin::complain("cublasLtMatmul: the algorithm was not chosen for this descriptor and these layouts");
    return INVALID_VALUE;
  }
  const void* ptrs[4] = {A, B, C, D};
  for (int i = 0; i < 4; ++i) {
    if (alignment_of(ptrs[i]) < algo->data[2 + i]) {
      standin::complain("cublasLtMatmul: operand %c at %p is less aligned than the %llu bytes its algorithm needs",
                        "ABCD"[i], ptrs[i], static_cast<unsigned long long>(algo->data[2 + i]));
      return INVALID_VALUE;
    }
  }
  if (d->epilogue == 4 && alignment_of(d->bias) < algo->data[6]) {
    standin::complain("cublasLtMatmul: the bias at %p is less aligned than the %llu bytes its algorithm was chosen for",
                      d->bias, static_cast<unsigned long long>(algo->data[6]));
    return INVALID_VALUE;
  }
  if (C == D && !same_layout(*cl, *dl)) {
    standin::complain("cublasLtMatmul: in place (C == D) needs identical C and D layouts");
    return INVALID_VALUE;
  }
  const bool bias = d->epilogue == 4;
  const int bias_type = d->bias_type == -1 ? static_cast<int>(dl->type) : d->bias_type;
  const void* bias_ptr = d->bias;
  const std::uint64_t rows = dl->rows, cols = dl->cols, k = d->transa ? al->rows : al->cols;
  const bool ta = d->transa != 0, tb = d->transb != 0;
  const float alpha_v = *static_cast<const float*>(alpha), beta_v = *static_cast<const float*>(beta);
  Operand a = operand(A, *al), b = operand(B, *bl), c = operand(C, *cl), out = operand(D, *dl);
  // Descriptors and host scalars are read when the call is issued; memory is checked when the
  // work runs, which for a captured call is every graph launch.
  const int st = standin::issue(stream, "cublasLtMatmul", [=]() -> int {
    const char* call = "cublasLtMatmul";
    if (!standin::operand_in_memory(a, call, "A") || !standin::operand_in_memory(b, call, "B") ||
        !standin::operand_in_memory(c, call, "C") || !standin::operand_in_memory(out, call, "D"))
      return INVALID_VALUE;
    if (bias && (bias_ptr == nullptr || !standin::elem_size(bias_type) ||
                 !standin::span_ok(reinterpret_cast<std::uint64_t>(bias_ptr), rows * standin::elem_size(bias_type)))) {
      standin::complain("cublasLtMatmul: the BIAS epilogue needs a bias of %llu elements in device memory",
                        static_cast<unsigned long long>(rows));
      return INVALID_VALUE;
    }
    if (workspace_bytes > 0 && !standin::span_ok(reinterpret_cast<std::uint64_t>(workspace), workspace_bytes)) {
      standin::complain("cublasLtMatmul: the workspace of %zu bytes is outside every allocation", workspace_bytes);
      return INVALID_VALUE;
    }
    standin::reference_gemm(ta, tb, rows, cols, k, alpha_v, a, b, beta_v, c, out, bias ? bias_ptr : nullptr, bias_type);
    return OK;
  });
  return driver_status(st);
}

}  // extern "C"
