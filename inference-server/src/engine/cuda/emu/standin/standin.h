// The standin: a host-only stand-in for the NVIDIA driver (libcuda), cuBLAS and cuBLASLt, so
// that the CUDA backend's *GPU* code path (engine/cuda/driver.rs and lt.rs through cudarc, the
// PTX that NVRTC really produced, the launch geometry the backend computed) runs in `cargo
// test` on a machine without a GPU.
//
// Everything is written from NVIDIA's API documentation, not from our Rust code, and checks
// what the real libraries check (or what would fault on a GPU): a call without a current
// context, a launch over the hardware limits or over a kernel's `.maxntid`, static shared memory
// over 48 KiB, PTX newer than the driver or for a newer GPU, a copy or GEMM operand outside a
// live allocation, a double free, a cuBLASLt algorithm used for another shape or on less
// aligned pointers than it was chosen for, attribute values of the wrong size. Kernels run
// through the CUDA-on-CPU emulator of the process that loads the library (`sdemu_launch`,
// found with dlsym), so the standin works only inside a binary built with `cuda-emu`.
//
// One shared object holds all three APIs; build.rs links it as libsdstandin.so and points
// libcuda.so, libcublas.so and libcublasLt.so at it, so each dlopen of those names returns the
// same object and the allocation table is shared. Failures print one line on stderr (prefix
// "standin:") besides the status code, so a test log says what went wrong.
#pragma once
#include <cstddef>
#include <cstdint>
#include <functional>

namespace standin {

namespace result {
// CUresult values (cuda.h).
enum : int {
  SUCCESS = 0,
  INVALID_VALUE = 1,
  OUT_OF_MEMORY = 2,
  NOT_INITIALIZED = 3,
  NO_DEVICE = 100,
  INVALID_DEVICE = 101,
  INVALID_IMAGE = 200,
  INVALID_CONTEXT = 201,
  NO_BINARY_FOR_GPU = 209,
  INVALID_PTX = 218,
  UNSUPPORTED_PTX_VERSION = 222,
  INVALID_HANDLE = 400,
  ILLEGAL_STATE = 401,
  NOT_FOUND = 500,
  LAUNCH_OUT_OF_RESOURCES = 701,
  LAUNCH_FAILED = 719,
  NOT_READY = 600,
  NOT_SUPPORTED = 801,
  STREAM_CAPTURE_UNSUPPORTED = 900,
  STREAM_CAPTURE_INVALIDATED = 901,
};
}  // namespace result

// Whether [ptr, ptr + bytes) lies inside one live allocation of the standin's cuMemAlloc.
bool span_ok(std::uint64_t ptr, std::uint64_t bytes);

// Work issued to a stream: a kernel launch, a GEMM, a device-to-device copy, with every argument
// held by value. Returns a CUresult (cuBLAS calls map their failures to one).
using Work = std::function<int()>;

// Issues `work` to `stream` (nullptr: the legacy stream): recorded when the stream is capturing,
// else run now. Returns the CUresult of the call.
int issue(void* stream, const char* call, Work work);

// For a synchronous call (`call`): while any stream captures, complains, invalidates those
// captures and returns CUDA_ERROR_STREAM_CAPTURE_UNSUPPORTED; else 0.
int refuse_while_capturing(const char* call);

// For a call that cannot be captured on `stream` (a copy with pageable host memory, a
// synchronisation): when `stream` captures, invalidates it and returns
// CUDA_ERROR_STREAM_CAPTURE_UNSUPPORTED; an unknown stream is CUDA_ERROR_INVALID_HANDLE; else 0.
int capture_refuses(void* stream, const char* call);

// Whether cuMemAlloc may run now: not while a stream captures in the global or thread-local
// mode (the call then invalidates that capture).
bool alloc_allowed_now();

// One line on stderr: "standin: <msg>".
void complain(const char* fmt, ...) __attribute__((format(printf, 1, 2)));

}  // namespace standin
