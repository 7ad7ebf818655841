// Internal interface between abi.cpp (C ABI, registry, lock) and runtime.cpp (scheduler).
#pragma once
#include <cstdint>
#include <string>

#include "emu.h"
#include "sdemu.h"

namespace sdemu {

// A registered kernel: its invoker, parameter count and its file's shared-memory section.
struct Kernel {
  Invoker invoke;
  int arity;
  char* shared_begin;
  char* shared_end;
};

// The most dynamic shared memory a block may ask for (sm_90's opt-in limit).
constexpr unsigned kMaxDynamicSmem = 227 * 1024;

// Runs every block of a validated launch with the given schedule; returns an SDEMU_* code and
// the failure message in `error`. The caller holds the launch lock.
int run_launch(const Kernel& kernel, const sdemu_cfg& cfg, void** params, int mode, std::uint64_t seed,
               std::string& error);

}  // namespace sdemu
