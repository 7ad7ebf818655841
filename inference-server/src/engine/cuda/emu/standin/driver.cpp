// The CUDA driver API subset the backend calls (CUDA Driver API reference, "Error Handling",
// "Initialization", "Device Management", "Primary Context Management", "Context Management",
// "Module Management", "Memory Management", "Execution Control"), with the checks the real
// driver makes. Device memory is host memory, so kernels dereference device pointers directly.
//
// The simulated GPU is set by environment variables (read at cuInit):
//   SDSERVE_STANDIN_SM      compute capability as XY (default 80: tensor-core paths on)
//   SDSERVE_STANDIN_DRIVER  CUDA version the driver supports, e.g. 12.9 (default) or 13.0
//   SDSERVE_STANDIN_MEMORY_MB  device memory (default 8192), so out-of-memory can be provoked
//   SDSERVE_STANDIN_GRAPHS=0   a driver that cannot capture streams into graphs (graph.cpp)
//   SDSERVE_STANDIN_LAUNCH_LOG a file that gets one "<kernel> <threads per block>" line per
//                              distinct launch shape, so a test can check each kernel's
//                              register use (from ptxas) against the blocks it is launched with
#include <dlfcn.h>

#include <cstdarg>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <atomic>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <vector>

#include "ptx.h"
#include "sdemu.h"
#include "standin.h"

using CUresult = int;
using CUdevice = int;
using CUdeviceptr = unsigned long long;
struct CUctx_st {
  int device;
};
using CUcontext = CUctx_st*;
struct CUmod_st {
  standin::Module ptx;
};
using CUmodule = CUmod_st*;
struct CUfunc_st {
  std::string name;
  standin::Entry entry;
};
using CUfunction = CUfunc_st*;
using CUstream = void*;

using namespace standin::result;

namespace {

const char* error_name(CUresult r) {
  switch (r) {
    case SUCCESS: return "CUDA_SUCCESS";
    case INVALID_VALUE: return "CUDA_ERROR_INVALID_VALUE";
    case OUT_OF_MEMORY: return "CUDA_ERROR_OUT_OF_MEMORY";
    case NOT_INITIALIZED: return "CUDA_ERROR_NOT_INITIALIZED";
    case NO_DEVICE: return "CUDA_ERROR_NO_DEVICE";
    case INVALID_DEVICE: return "CUDA_ERROR_INVALID_DEVICE";
    case INVALID_IMAGE: return "CUDA_ERROR_INVALID_IMAGE";
    case INVALID_CONTEXT: return "CUDA_ERROR_INVALID_CONTEXT";
    case NO_BINARY_FOR_GPU: return "CUDA_ERROR_NO_BINARY_FOR_GPU";
    case INVALID_PTX: return "CUDA_ERROR_INVALID_PTX";
    case UNSUPPORTED_PTX_VERSION: return "CUDA_ERROR_UNSUPPORTED_PTX_VERSION";
    case INVALID_HANDLE: return "CUDA_ERROR_INVALID_HANDLE";
    case NOT_FOUND: return "CUDA_ERROR_NOT_FOUND";
    case LAUNCH_OUT_OF_RESOURCES: return "CUDA_ERROR_LAUNCH_OUT_OF_RESOURCES";
    case LAUNCH_FAILED: return "CUDA_ERROR_LAUNCH_FAILED";
    case NOT_SUPPORTED: return "CUDA_ERROR_NOT_SUPPORTED";
    case ILLEGAL_STATE: return "CUDA_ERROR_ILLEGAL_STATE";
    case NOT_READY: return "CUDA_ERROR_NOT_READY";
    case STREAM_CAPTURE_UNSUPPORTED: return "CUDA_ERROR_STREAM_CAPTURE_UNSUPPORTED";
    case STREAM_CAPTURE_INVALIDATED: return "CUDA_ERROR_STREAM_CAPTURE_INVALIDATED";
    default: return nullptr;
  }
}

using LaunchFn = int (*)(const char*, const sdemu_cfg*, void**);
using ArityFn = int (*)(const char*);
using LastErrorFn = const char* (*)();

struct State {
  std::mutex mu;
  bool initialized = false;
  int sm = 80;
  int driver_major = 12, driver_minor = 9;
  std::uint64_t memory = 8192ull << 20, used = 0;
  std::map<std::uint64_t, std::uint64_t> allocations;  // address -> bytes
  std::atomic<CUresult> sticky{SUCCESS};  // a failed kernel poisons the context, as on a GPU
  CUctx_st primary{0};
  LaunchFn launch = nullptr;
  ArityFn arity = nullptr;
  LastErrorFn last_error = nullptr;
  std::string launch_log;                            // SDSERVE_STANDIN_LAUNCH_LOG, if set
  std::set<std::pair<std::string, std::uint64_t>> logged;  // lines written so far
};

State& state() {
  static State s;
  return s;
}

thread_local CUcontext t_current = nullptr;

// The highest PTX ISA a driver of CUDA major.minor JIT-compiles (PTX ISA release notes).
std::pair<int, int> max_isa(int major, int minor) {
  if (major >= 13) return {9, minor};
  static const int isa_minor[] = {0, 1, 2, 3, 4, 5, 5, 5, 7, 8};  // CUDA 12.0 .. 12.9
  return {8, isa_minor[minor < 0 ? 0 : (minor > 9 ? 9 : minor)]};
}

// The common preconditions of calls that work in the current context.
CUresult need_context(const char* call) {
  if (!state().initialized) return NOT_INITIALIZED;
  if (t_current == nullptr) {
    standin::complain("%s without a current context on this thread", call);
    return INVALID_CONTEXT;
  }
  if (state().sticky != SUCCESS) return state().sticky;
  return SUCCESS;
}

}  // namespace

namespace standin {

void complain(const char* fmt, ...) {
  std::va_list args;
  va_start(args, fmt);
  std::fputs("standin: ", stderr);
  std::vfprintf(stderr, fmt, args);
  std::fputc('\n', stderr);
  va_end(args);
}

bool span_ok(std::uint64_t ptr, std::uint64_t bytes) {
  State& s = state();
  std::lock_guard<std::mutex> lock(s.mu);
  auto it = s.allocations.upper_bound(ptr);
  if (it == s.allocations.begin()) return false;
  --it;
  return ptr >= it->first && ptr + bytes <= it->first + it->second;
}

}  // namespace standin

namespace {

CUresult copy_in(CUdeviceptr dst, const void* src, std::size_t bytes, const char* call) {
  if (!standin::span_ok(dst, bytes)) {
    standin::complain("%s of %zu bytes to 0x%llx: outside every allocation", call, bytes, dst);
    return INVALID_VALUE;
  }
  std::memcpy(reinterpret_cast<void*>(dst), src, bytes);
  return SUCCESS;
}

CUresult copy_out(void* dst, CUdeviceptr src, std::size_t bytes, const char* call) {
  if (!standin::span_ok(src, bytes)) {
    standin::complain("%s of %zu bytes from 0x%llx: outside every allocation", call, bytes, src);
    return INVALID_VALUE;
  }
  std::memcpy(dst, reinterpret_cast<const void*>(src), bytes);
  return SUCCESS;
}

}  // namespace

extern "C" {

CUresult cuGetErrorName(CUresult error, const char** out) {
  if (out == nullptr) return INVALID_VALUE;
  *out = error_name(error);
  return *out ? SUCCESS : INVALID_VALUE;
}

CUresult cuGetErrorString(CUresult error, const char** out) { return cuGetErrorName(error, out); }

CUresult cuInit(unsigned flags) {
  if (flags != 0) return INVALID_VALUE;
  State& s = state();
  std::lock_guard<std::mutex> lock(s.mu);
  if (s.initialized) return SUCCESS;
  s.launch = reinterpret_cast<LaunchFn>(dlsym(RTLD_DEFAULT, "sdemu_launch"));
  s.arity = reinterpret_cast<ArityFn>(dlsym(RTLD_DEFAULT, "sdemu_kernel_arity"));
  s.last_error = reinterpret_cast<LastErrorFn>(dlsym(RTLD_DEFAULT, "sdemu_last_error"));
  if (!s.launch || !s.arity || !s.last_error) {
    standin::complain("the process exports no CUDA-on-CPU emulator (sdemu_launch): build it with --features cuda-emu");
    return NO_DEVICE;
  }
  if (const char* v = std::getenv("SDSERVE_STANDIN_SM")) s.sm = std::atoi(v);
  if (const char* v = std::getenv("SDSERVE_STANDIN_DRIVER")) std::sscanf(v, "%d.%d", &s.driver_major, &s.driver_minor);
  if (const char* v = std::getenv("SDSERVE_STANDIN_MEMORY_MB")) s.memory = std::strtoull(v, nullptr, 10) << 20;
  if (const char* v = std::getenv("SDSERVE_STANDIN_LAUNCH_LOG")) s.launch_log = v;
  s.initialized = true;
  return SUCCESS;
}

CUresult cuDriverGetVersion(int* version) {
  if (version == nullptr) return INVALID_VALUE;
  *version = state().driver_major * 1000 + state().driver_minor * 10;
  return SUCCESS;
}

CUresult cuDeviceGetCount(int* count) {
  if (!state().initialized) return NOT_INITIALIZED;
  if (count == nullptr) return INVALID_VALUE;
  *count = 1;
  return SUCCESS;
}

CUresult cuDeviceGet(CUdevice* device, int ordinal) {
  if (!state().initialized) return NOT_INITIALIZED;
  if (device == nullptr) return INVALID_VALUE;
  if (ordinal != 0) return INVALID_DEVICE;
  *device = 0;
  return SUCCESS;
}

CUresult cuDeviceGetName(char* name, int len, CUdevice device) {
  if (!state().initialized) return NOT_INITIALIZED;
  if (device != 0) return INVALID_DEVICE;
  if (name == nullptr || len <= 0) return INVALID_VALUE;
  std::snprintf(name, static_cast<std::size_t>(len), "sdserve standin GPU");
  return SUCCESS;
}

CUresult cuDeviceGetAttribute(int* value, int attribute, CUdevice device) {
  if (!state().initialized) return NOT_INITIALIZED;
  if (device != 0) return INVALID_DEVICE;
  if (value == nullptr) return INVALID_VALUE;
  const int sm = state().sm;
  switch (attribute) {
    case 1: *value = 1024; break;          // MAX_THREADS_PER_BLOCK
    case 2: case 3: *value = 1024; break;  // MAX_BLOCK_DIM_X, _Y
    case 4: *value = 64; break;            // MAX_BLOCK_DIM_Z
    case 5: *value = 0x7fffffff; break;    // MAX_GRID_DIM_X
    case 6: case 7: *value = 65535; break; // MAX_GRID_DIM_Y, _Z
    case 8: *value = 48 << 10; break;      // MAX_SHARED_MEMORY_PER_BLOCK
    case 10: *value = 32; break;           // WARP_SIZE
    case 12: *value = 65536; break;        // MAX_REGISTERS_PER_BLOCK
    case 16: *value = 4; break;            // MULTIPROCESSOR_COUNT
    case 75: *value = sm / 10; break;      // COMPUTE_CAPABILITY_MAJOR
    case 76: *value = sm % 10; break;      // COMPUTE_CAPABILITY_MINOR
    default:
      standin::complain("cuDeviceGetAttribute: attribute %d is not modelled", attribute);
      return INVALID_VALUE;
  }
  return SUCCESS;
}

CUresult cuDevicePrimaryCtxRetain(CUcontext* ctx, CUdevice device) {
  if (!state().initialized) return NOT_INITIALIZED;
  if (device != 0) return INVALID_DEVICE;
  if (ctx == nullptr) return INVALID_VALUE;
  *ctx = &state().primary;
  return SUCCESS;
}

CUresult cuCtxSetCurrent(CUcontext ctx) {
  if (!state().initialized) return NOT_INITIALIZED;
  if (ctx != nullptr && ctx != &state().primary) return INVALID_CONTEXT;
  t_current = ctx;
  return SUCCESS;
}

CUresult cuCtxSynchronize() {
  if (CUresult r = need_context("cuCtxSynchronize")) return r;
  return standin::refuse_while_capturing("cuCtxSynchronize");
}

CUresult cuMemAlloc_v2(CUdeviceptr* dptr, std::size_t bytes) {
  if (CUresult r = need_context("cuMemAlloc")) return r;
  if (dptr == nullptr || bytes == 0) return INVALID_VALUE;
  if (!standin::alloc_allowed_now()) {
    standin::complain("cuMemAlloc while a stream captures in the global mode: the capture is invalidated");
    return STREAM_CAPTURE_UNSUPPORTED;
  }
  State& s = state();
  std::lock_guard<std::mutex> lock(s.mu);
  if (s.used + bytes > s.memory) return OUT_OF_MEMORY;
  // cudaMalloc's alignment is at least 256 bytes.
  void* p = std::aligned_alloc(256, (bytes + 255) / 256 * 256);
  if (p == nullptr) return OUT_OF_MEMORY;
  // GPU memory comes uninitialized: all-ones bytes (NaN as f32, f16 and bf16) make a read of a
  // value nobody wrote visible in results, where fresh host pages would read as zeros.
  std::memset(p, 0xff, bytes);
  s.allocations[reinterpret_cast<std::uint64_t>(p)] = bytes;
  s.used += bytes;
  *dptr = reinterpret_cast<std::uint64_t>(p);
  return SUCCESS;
}

CUresult cuMemFree_v2(CUdeviceptr ptr) {
  if (CUresult r = need_context("cuMemFree")) return r;
  if (CUresult r = standin::refuse_while_capturing("cuMemFree")) return r;
  State& s = state();
  std::lock_guard<std::mutex> lock(s.mu);
  auto it = s.allocations.find(ptr);
  if (it == s.allocations.end()) {
    standin::complain("cuMemFree of 0x%llx, which is not a live allocation (double free?)", ptr);
    return INVALID_VALUE;
  }
  s.used -= it->second;
  s.allocations.erase(it);
  std::free(reinterpret_cast<void*>(ptr));
  return SUCCESS;
}

CUresult cuMemcpyHtoD_v2(CUdeviceptr dst, const void* src, std::size_t bytes) {
  if (CUresult r = need_context("cuMemcpyHtoD")) return r;
  if (CUresult r = standin::refuse_while_capturing("cuMemcpyHtoD")) return r;
  return copy_in(dst, src, bytes, "cuMemcpyHtoD");
}

CUresult cuMemcpyDtoH_v2(void* dst, CUdeviceptr src, std::size_t bytes) {
  if (CUresult r = need_context("cuMemcpyDtoH")) return r;
  if (CUresult r = standin::refuse_while_capturing("cuMemcpyDtoH")) return r;
  return copy_out(dst, src, bytes, "cuMemcpyDtoH");
}

// Host memory is pageable (the backend pins none), so these are not capturable; outside a
// capture they finish before returning, which the stream order allows.
CUresult cuMemcpyHtoDAsync_v2(CUdeviceptr dst, const void* src, std::size_t bytes, CUstream stream) {
  if (CUresult r = need_context("cuMemcpyHtoDAsync")) return r;
  if (CUresult r = standin::capture_refuses(stream, "cuMemcpyHtoDAsync")) return r;
  if (stream == nullptr)
    if (CUresult r = standin::refuse_while_capturing("cuMemcpyHtoDAsync")) return r;
  return copy_in(dst, src, bytes, "cuMemcpyHtoDAsync");
}

CUresult cuMemcpyDtoHAsync_v2(void* dst, CUdeviceptr src, std::size_t bytes, CUstream stream) {
  if (CUresult r = need_context("cuMemcpyDtoHAsync")) return r;
  if (CUresult r = standin::capture_refuses(stream, "cuMemcpyDtoHAsync")) return r;
  if (stream == nullptr)
    if (CUresult r = standin::refuse_while_capturing("cuMemcpyDtoHAsync")) return r;
  return copy_out(dst, src, bytes, "cuMemcpyDtoHAsync");
}

CUresult cuMemcpyDtoDAsync_v2(CUdeviceptr dst, CUdeviceptr src, std::size_t bytes, CUstream stream) {
  if (CUresult r = need_context("cuMemcpyDtoDAsync")) return r;
  return standin::issue(stream, "cuMemcpyDtoDAsync", [dst, src, bytes]() -> CUresult {
    if (!standin::span_ok(dst, bytes) || !standin::span_ok(src, bytes)) {
      standin::complain("cuMemcpyDtoDAsync of %zu bytes from 0x%llx to 0x%llx: outside every allocation", bytes, src, dst);
      return INVALID_VALUE;
    }
    std::memmove(reinterpret_cast<void*>(dst), reinterpret_cast<const void*>(src), bytes);
    return SUCCESS;
  });
}

CUresult cuModuleLoadData(CUmodule* module, const void* image) {
  if (CUresult r = need_context("cuModuleLoadData")) return r;
  if (module == nullptr || image == nullptr) return INVALID_VALUE;
  const char* text = static_cast<const char*>(image);
  if (std::strncmp(text, "\x7f" "ELF", 4) == 0) {
    standin::complain("cuModuleLoadData: cubin images are not modelled, only PTX");
    return NOT_SUPPORTED;
  }
  auto m = std::make_unique<CUmod_st>();
  m->ptx = standin::parse_ptx(text);
  if (!m->ptx.error.empty()) {
    standin::complain("cuModuleLoadData: %s", m->ptx.error.c_str());
    return INVALID_IMAGE;
  }
  const State& s = state();
  auto [isa_major, isa_minor] = max_isa(s.driver_major, s.driver_minor);
  if (m->ptx.isa_major * 100 + m->ptx.isa_minor > isa_major * 100 + isa_minor) {
    standin::complain("PTX ISA %d.%d is newer than a CUDA %d.%d driver JIT-compiles (%d.%d)", m->ptx.isa_major,
                      m->ptx.isa_minor, s.driver_major, s.driver_minor, isa_major, isa_minor);
    return UNSUPPORTED_PTX_VERSION;
  }
  if (m->ptx.target_sm > s.sm) {
    standin::complain("PTX for sm_%d cannot run on this sm_%d GPU", m->ptx.target_sm, s.sm);
    return NO_BINARY_FOR_GPU;
  }
  for (const auto& [name, entry] : m->ptx.entries) {
    // ptxas refuses an entry whose static shared memory exceeds 48 KiB.
    if (entry.static_shared > (48u << 10)) {
      standin::complain("entry %s uses %llu bytes of static shared memory, over 48 KiB", name.c_str(),
                        static_cast<unsigned long long>(entry.static_shared));
      return INVALID_PTX;
    }
  }
  *module = m.release();
  return SUCCESS;
}

CUresult cuModuleGetFunction(CUfunction* function, CUmodule module, const char* name) {
  if (CUresult r = need_context("cuModuleGetFunction")) return r;
  if (function == nullptr || module == nullptr || name == nullptr) return INVALID_VALUE;
  auto it = module->ptx.entries.find(name);
  if (it == module->ptx.entries.end()) return NOT_FOUND;
  const int arity = state().arity(name);
  if (arity < 0) {
    standin::complain("kernel %s is in the PTX but not compiled into the emulator", name);
    return NOT_FOUND;
  }
  if (arity != it->second.params) {
    standin::complain("kernel %s takes %d parameters in the PTX but %d in the emulator's build", name,
                      it->second.params, arity);
    return INVALID_IMAGE;
  }
  for (std::uint32_t bytes : it->second.param_bytes) {
    if (bytes == 0) {
      standin::complain("kernel %s has a parameter of a type the standin cannot size", name);
      return INVALID_IMAGE;
    }
  }
  // Handles live as long as the process, like a module that is never unloaded.
  *function = new CUfunc_st{name, it->second};
  return SUCCESS;
}

CUresult cuLaunchKernel(CUfunction f, unsigned gx, unsigned gy, unsigned gz, unsigned bx, unsigned by,
                        unsigned bz, unsigned shared_bytes, CUstream stream, void** params, void** extra) {
  if (CUresult r = need_context("cuLaunchKernel")) return r;
  if (f == nullptr) return INVALID_HANDLE;
  if (extra != nullptr || (params == nullptr && f->entry.params > 0)) return INVALID_VALUE;
  const std::uint64_t threads = std::uint64_t(bx) * by * bz;
  if (!gx || !gy || !gz || !threads || threads > 1024 || bx > 1024 || by > 1024 || bz > 64 ||
      gx > 0x7fffffffu || gy > 65535 || gz > 65535) {
    standin::complain("cuLaunchKernel(%s): grid (%u,%u,%u) block (%u,%u,%u) is over the limits", f->name.c_str(),
                      gx, gy, gz, bx, by, bz);
    return INVALID_VALUE;
  }
  if (f->entry.max_threads && threads > f->entry.max_threads) {
    standin::complain("cuLaunchKernel(%s): %llu threads per block, over its __launch_bounds__ of %u",
                      f->name.c_str(), static_cast<unsigned long long>(threads), f->entry.max_threads);
    return INVALID_VALUE;
  }
  if (f->entry.static_shared + shared_bytes > (48u << 10)) {
    standin::complain("cuLaunchKernel(%s): %llu bytes of shared memory without the opt-in attribute",
                      f->name.c_str(), static_cast<unsigned long long>(f->entry.static_shared + shared_bytes));
    return INVALID_VALUE;
  }
  // The driver copies the arguments when the launch is issued (and a capture keeps that copy).
  std::vector<std::vector<char>> args;
  for (std::size_t i = 0; i < f->entry.param_bytes.size(); ++i) {
    const auto* p = static_cast<const char*>(params[i]);
    args.emplace_back(p, p + f->entry.param_bytes[i]);
  }
  sdemu_cfg cfg{{gx, gy, gz}, {bx, by, bz}, shared_bytes};
  return standin::issue(stream, "cuLaunchKernel", [f, cfg, args = std::move(args), threads]() mutable -> CUresult {
    State& s = state();
    if (s.sticky != SUCCESS) return s.sticky;
    std::vector<void*> ptrs;
    for (auto& a : args) ptrs.push_back(a.data());
    if (s.launch(f->name.c_str(), &cfg, ptrs.data()) != SDEMU_OK) {
      standin::complain("kernel %s failed: %s", f->name.c_str(), s.last_error());
      s.sticky = LAUNCH_FAILED;
      return LAUNCH_FAILED;
    }
    if (!s.launch_log.empty()) {
      std::lock_guard<std::mutex> lock(s.mu);
      if (s.logged.insert({f->name, threads}).second) {
        if (std::FILE* log = std::fopen(s.launch_log.c_str(), "a")) {
          std::fprintf(log, "%s %llu\n", f->name.c_str(), static_cast<unsigned long long>(threads));
          std::fclose(log);
        }
      }
    }
    return SUCCESS;
  });
}

}  // extern "C"
