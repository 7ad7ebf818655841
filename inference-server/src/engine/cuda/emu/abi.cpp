// The emulator's C ABI (sdemu.h): kernel registry, launch validation and serialization, the
// per-thread schedule and error message. No C++ exception leaves these functions.
#include <mutex>
#include <string>
#include <unordered_map>

#include "emu.h"
#include "fiber.h"
#include "runtime.h"
#include "sdemu.h"

namespace sdemu {
namespace {

// Function-local so registration from other translation units' static initializers is safe.
std::unordered_map<std::string, Kernel>& registry() {
  static std::unordered_map<std::string, Kernel> r;
  return r;
}

// One launch at a time: __shared__ arrays are statics, and the scheduler state is global.
std::mutex g_launch_mutex;
thread_local int t_mode = SDEMU_SCHEDULE_FIFO;
thread_local std::uint64_t t_seed = 0;
thread_local std::string t_last_error;

std::string validate(const sdemu_cfg& c) {
  const std::uint64_t threads = std::uint64_t(c.block[0]) * c.block[1] * c.block[2];
  if (!c.grid[0] || !c.grid[1] || !c.grid[2] || !threads) return "grid and block dimensions must be at least 1";
  if (threads > kMaxBlockThreads) return "block has " + std::to_string(threads) + " threads, more than 1024";
  if (c.block[2] > 64) return "block z dimension " + std::to_string(c.block[2]) + " exceeds 64";
  if (c.grid[0] > 0x7fffffffu || c.grid[1] > 65535 || c.grid[2] > 65535) return "grid dimensions exceed CUDA's limits";
  if (c.shared_mem_bytes > kMaxDynamicSmem)
    return "dynamic shared memory " + std::to_string(c.shared_mem_bytes) + " bytes exceeds " +
           std::to_string(kMaxDynamicSmem);
  return "";
}

int launch(const char* name, const sdemu_cfg* cfg, void** params) {
  std::lock_guard<std::mutex> lock(g_launch_mutex);
  auto it = registry().find(name);
  if (it == registry().end()) {
    t_last_error = std::string("no kernel named '") + name + "' is compiled into the emulator";
    return SDEMU_ERR_UNKNOWN_KERNEL;
  }
  std::string bad = validate(*cfg);
  if (!bad.empty()) {
    t_last_error = "invalid launch configuration: " + bad;
    return SDEMU_ERR_CONFIG;
  }
  return run_launch(it->second, *cfg, params, t_mode, t_seed, t_last_error);
}

}  // namespace

bool register_kernel(const char* name, Invoker invoke, int arity, char* shared_begin, char* shared_end) {
  registry()[name] = Kernel{invoke, arity, shared_begin, shared_end};
  return true;
}

}  // namespace sdemu

extern "C" int sdemu_launch(const char* name, const sdemu_cfg* cfg, void** params) {
  try {
    if (!name || !cfg) {
      sdemu::t_last_error = "sdemu_launch: null kernel name or configuration";
      return SDEMU_ERR_CONFIG;
    }
    return sdemu::launch(name, cfg, params);
  } catch (const std::exception& e) {
    sdemu::t_last_error = std::string("emulator failure: ") + e.what();
  } catch (...) {
    sdemu::t_last_error = "emulator failure: unknown C++ exception";
  }
  return SDEMU_ERR_INTERNAL;
}

extern "C" void sdemu_set_schedule(int mode, std::uint64_t seed) {
  sdemu::t_mode = (mode >= SDEMU_SCHEDULE_FIFO && mode <= SDEMU_SCHEDULE_RANDOM) ? mode : SDEMU_SCHEDULE_FIFO;
  sdemu::t_seed = seed;
}

extern "C" int sdemu_kernel_arity(const char* name) {
  try {
    std::lock_guard<std::mutex> lock(sdemu::g_launch_mutex);
    auto it = sdemu::registry().find(name ? name : "");
    return it == sdemu::registry().end() ? -1 : it->second.arity;
  } catch (...) {
    return -1;
  }
}

extern "C" const char* sdemu_last_error() { return sdemu::t_last_error.c_str(); }
