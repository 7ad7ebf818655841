// Fibers for the emulator: each emulated CUDA thread runs on its own small stack, and the
// scheduler switches between them by hand. Switching is cooperative and happens only at
// __syncthreads and warp collectives, so kernel code between those points runs without any
// interleaving: exactly the freedom CUDA gives the hardware, and nothing more.
#pragma once
#include <cstddef>

namespace sdemu {

// Room for kernels with ~16 KiB of local arrays plus g++'s frames at -O0 in debug builds.
constexpr std::size_t kFiberStackBytes = 64 * 1024;
// The largest CUDA block.
constexpr unsigned kMaxBlockThreads = 1024;

// A fiber's saved machine state. On x86-64 it is one stack pointer (the callee-saved registers
// live on the fiber's own stack); elsewhere it wraps a ucontext_t.
struct FiberContext {
  void* sp = nullptr;
  void* uc = nullptr;  // ucontext_t*, only on the fallback path
  void (*entry)(void*) = nullptr;  // fallback path: what a fresh context runs first
  void* arg = nullptr;
};

// Prepares `ctx` to run `entry(arg)` on stack number `slot` of the shared stack pool the next
// time it is switched to. Stacks are allocated once (guard page below each) and reused.
void fiber_init(FiberContext* ctx, unsigned slot, void (*entry)(void*), void* arg);
// Saves the running context into `from` and resumes `to`.
void fiber_switch(FiberContext* from, FiberContext* to);

}  // namespace sdemu
