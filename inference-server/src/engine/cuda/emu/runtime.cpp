// The emulator's scheduler: runs the blocks of one launch (abi.cpp holds the C ABI).
//
// A launch runs its blocks one after another on the calling OS thread. The threads of a block
// are fibers; the scheduler resumes one runnable fiber at a time, in an order chosen per test
// (the emulator is not a race detector: a missing __syncthreads shows only under some orders).
// Misuse that real hardware would turn into a hang or garbage (a deadlock, a shuffle from an
// inactive lane, a C++ exception) ends the launch with an error code and a message; it never
// aborts the process and never lets a C++ exception reach Rust.
#include <algorithm>
#include <string>
#include <vector>

#include "emu.h"
#include "fiber.h"
#include "runtime.h"
#include "sdemu.h"

namespace sdemu {

ThreadCtx* g_cur = nullptr;
uint3 g_block_idx{0, 0, 0};
dim3 g_block_dim;
dim3 g_grid_dim;
unsigned char* g_dyn_smem = nullptr;

namespace {

enum class State : unsigned char { Runnable, Running, WaitBlock, WaitWarp, Done };

struct Fiber : ThreadCtx {
  FiberContext ctx;
  unsigned tid = 0;
  unsigned warp = 0;
  State state = State::Runnable;
  // The warp collective this fiber waits in, and its result once the warp completes it.
  WarpOp op = kSyncWarp;
  const char* what = "";
  unsigned mask = 0;
  std::uint64_t value = 0;
  int src = -1;
  std::uint64_t result = 0;
};

struct Warp {
  unsigned live = 0;     // lanes that exist and have not returned
  unsigned waiting = 0;  // lanes blocked in a warp collective
};

// Everything about the launch in progress. Launches are serialized (abi.cpp), so one instance.
struct Launch {
  const Kernel* kernel = nullptr;
  void** params = nullptr;
  std::vector<Fiber> fibers;
  std::vector<Warp> warps;
  unsigned n = 0, done = 0, at_barrier = 0;
  // Ready set: a FIFO ring for the FIFO order, a bitmap for the others.
  std::vector<unsigned> ring;
  unsigned ring_head = 0, ring_len = 0;
  std::uint64_t ready_bits[kMaxBlockThreads / 64] = {};
  int mode = SDEMU_SCHEDULE_FIFO;
  std::uint64_t rng = 0;
  FiberContext scheduler;
  bool failed = false;
  int code = SDEMU_OK;
  std::string error;
};

Launch g;
alignas(128) unsigned char g_dyn_buffer[kMaxDynamicSmem];

Fiber* current() { return static_cast<Fiber*>(g_cur); }

std::string block_name() {
  return "block (" + std::to_string(g_block_idx.x) + "," + std::to_string(g_block_idx.y) + "," +
         std::to_string(g_block_idx.z) + ")";
}

std::string hex(unsigned v) {
  char buf[16];
  std::snprintf(buf, sizeof buf, "0x%08x", v);
  return buf;
}

void make_ready(Fiber& f) {
  f.state = State::Runnable;
  if (g.mode == SDEMU_SCHEDULE_FIFO) {
    g.ring[(g.ring_head + g.ring_len++) % g.ring.size()] = f.tid;
  } else {
    g.ready_bits[f.tid / 64] |= std::uint64_t(1) << (f.tid % 64);
  }
}

std::uint64_t next_random() {  // xorshift64*: cheap, and reproducible from the seed
  g.rng ^= g.rng >> 12;
  g.rng ^= g.rng << 25;
  g.rng ^= g.rng >> 27;
  return g.rng * 0x2545F4914F6CDD1DULL;
}

// Removes and returns the next fiber to run under the launch's order, or null if none is ready.
Fiber* pick() {
  if (g.mode == SDEMU_SCHEDULE_FIFO) {
    if (g.ring_len == 0) return nullptr;
    unsigned tid = g.ring[g.ring_head];
    g.ring_head = (g.ring_head + 1) % g.ring.size();
    --g.ring_len;
    return &g.fibers[tid];
  }
  const unsigned words = (g.n + 63) / 64;
  int chosen = -1;
  if (g.mode == SDEMU_SCHEDULE_LOW_FIRST) {
    for (unsigned w = 0; w < words && chosen < 0; ++w)
      if (g.ready_bits[w]) chosen = int(w * 64 + __builtin_ctzll(g.ready_bits[w]));
  } else if (g.mode == SDEMU_SCHEDULE_HIGH_FIRST) {
    for (unsigned w = words; w-- > 0 && chosen < 0;)
      if (g.ready_bits[w]) chosen = int(w * 64 + 63 - __builtin_clzll(g.ready_bits[w]));
  } else {
    unsigned count = 0;
    for (unsigned w = 0; w < words; ++w) count += unsigned(__builtin_popcountll(g.ready_bits[w]));
    if (count == 0) return nullptr;
    unsigned k = unsigned(next_random() % count);
    for (unsigned w = 0; w < words && chosen < 0; ++w) {
      std::uint64_t bits = g.ready_bits[w];
      unsigned c = unsigned(__builtin_popcountll(bits));
      if (k >= c) { k -= c; continue; }
      while (k--) bits &= bits - 1;  // drop the k lowest set bits
      chosen = int(w * 64 + __builtin_ctzll(bits));
    }
  }
  if (chosen < 0) return nullptr;
  g.ready_bits[chosen / 64] &= ~(std::uint64_t(1) << (chosen % 64));
  return &g.fibers[unsigned(chosen)];
}

// Gives control back to the scheduler; returns when the scheduler resumes this fiber.
void yield(Fiber* f) { fiber_switch(&f->ctx, &g.scheduler); }

// Records the first error of the launch and leaves the running fiber for good: the scheduler
// sees `failed` and abandons the block. Never call it from inside a catch block (the exception
// would stay "being handled" on this OS thread).
[[noreturn]] void fail_in_fiber(int code, const std::string& message) {
  if (!g.failed) {
    g.failed = true;
    g.code = code;
    g.error = message;
  }
  Fiber* f = current();
  f->state = State::Done;
  yield(f);
  std::abort();  // unreachable: a failed block is never resumed
}

void release_block_barrier() {
  g.at_barrier = 0;
  for (Fiber& f : g.fibers)
    if (f.state == State::WaitBlock) make_ready(f);
}

// Completes the warp collective of the lanes waiting with `mask` once every live lane it names
// has arrived. Lanes that returned from the kernel no longer count (CUDA allows exited threads
// in a mask), but reading such a lane's value is an error.
void try_complete(unsigned w, unsigned mask) {
  Warp& wp = g.warps[w];
  const unsigned eff = mask & wp.live;
  if (eff == 0 || (eff & wp.waiting) != eff) return;
  Fiber* lanes = &g.fibers[w * 32];
  for (unsigned m = eff; m; m &= m - 1)
    if (lanes[__builtin_ctz(m)].mask != mask) return;
  const Fiber& first = lanes[__builtin_ctz(eff)];
  std::uint64_t ballot = 0;
  for (unsigned m = eff; m; m &= m - 1) {
    const Fiber& f = lanes[__builtin_ctz(m)];
    if (f.op != first.op || std::strcmp(f.what, first.what) != 0)
      fail_in_fiber(SDEMU_ERR_KERNEL, "warp divergence in " + block_name() + ", warp " + std::to_string(w) +
                                          ": thread " + std::to_string(first.tid) + " is in " + first.what +
                                          " while thread " + std::to_string(f.tid) + " is in " + f.what);
    if (f.op == kBallot && f.value) ballot |= std::uint64_t(1) << f.lane;
  }
  for (unsigned m = eff; m; m &= m - 1) {
    Fiber& f = lanes[__builtin_ctz(m)];
    if (f.op == kBallot) {
      f.result = ballot;
    } else if (f.op == kShfl) {
      if (f.src < 0 || unsigned(f.src) == f.lane) {
        f.result = f.value;
      } else if (!(eff & (1u << f.src))) {
        fail_in_fiber(SDEMU_ERR_KERNEL, std::string(f.what) + " in " + block_name() + ": thread " +
                                            std::to_string(f.tid) + " reads lane " + std::to_string(f.src) +
                                            " of warp " + std::to_string(w) + ", which is not active (mask " +
                                            hex(mask) + ", live lanes " + hex(wp.live) + ")");
      } else {
        f.result = lanes[f.src].value;
      }
    }
  }
  wp.waiting &= ~eff;
  for (unsigned m = eff; m; m &= m - 1) make_ready(lanes[__builtin_ctz(m)]);
}

void thread_returned(Fiber* f) {
  f->state = State::Done;
  ++g.done;
  Warp& wp = g.warps[f->warp];
  wp.live &= ~(1u << f->lane);
  // Lanes waiting for this one may now be complete without it.
  for (unsigned m = wp.waiting; m; m &= m - 1) {
    unsigned lane = unsigned(__builtin_ctz(m));
    if (wp.waiting & (1u << lane)) try_complete(f->warp, g.fibers[f->warp * 32 + lane].mask);
  }
  if (g.at_barrier > 0 && g.at_barrier == g.n - g.done) release_block_barrier();
}

void fiber_main(void* arg) {
  auto* f = static_cast<Fiber*>(arg);
  bool threw = false;
  try {
    g.kernel->invoke(g.params);
  } catch (const std::exception& e) {
    threw = true;
    g.error = std::string("C++ exception in ") + block_name() + ", thread " + std::to_string(f->tid) + ": " + e.what();
  } catch (...) {
    threw = true;
    g.error = "unknown C++ exception in " + block_name() + ", thread " + std::to_string(f->tid);
  }
  if (threw && !g.failed) {
    g.failed = true;
    g.code = SDEMU_ERR_EXCEPTION;
  }
  if (!g.failed) thread_returned(f);
  f->state = State::Done;
  yield(f);
  std::abort();  // unreachable: a returned fiber is never resumed
}

// Describes who waits where, in runs of consecutive threads, for a deadlock message.
std::string describe_waits() {
  std::string out;
  unsigned groups = 0;
  for (unsigned t = 0; t < g.n;) {
    const Fiber& f = g.fibers[t];
    unsigned end = t + 1;
    auto same = [&](const Fiber& o) {
      return o.state == f.state && (f.state != State::WaitWarp || (o.mask == f.mask && o.what == f.what));
    };
    while (end < g.n && same(g.fibers[end])) ++end;
    if (f.state == State::WaitBlock || f.state == State::WaitWarp) {
      if (++groups > 8) { out += "; ..."; break; }
      out += out.empty() ? "" : "; ";
      out += "threads " + std::to_string(t) + "-" + std::to_string(end - 1) + " wait in ";
      out += f.state == State::WaitBlock ? std::string("__syncthreads") : std::string(f.what) + " (mask " + hex(f.mask) + ")";
    }
    t = end;
  }
  return out;
}

void run_block(unsigned shared_bytes) {
  // Poison shared memory so a read of a value no thread of this block wrote shows up as NaN/-1
  // instead of a stale value from the previous block (statics keep their contents).
  if (g.kernel->shared_begin && g.kernel->shared_end > g.kernel->shared_begin)
    std::memset(g.kernel->shared_begin, 0xFF, std::size_t(g.kernel->shared_end - g.kernel->shared_begin));
  // Also the first 4 KiB past the launch's size, so a read just beyond it is a NaN too.
  std::memset(g_dyn_buffer, 0xFF, std::min<std::size_t>(kMaxDynamicSmem, std::size_t(shared_bytes) + 4096));
  g.done = g.at_barrier = 0;
  g.ring_head = g.ring_len = 0;
  std::fill(std::begin(g.ready_bits), std::end(g.ready_bits), 0);
  for (Warp& w : g.warps) w = Warp{};
  for (unsigned t = 0; t < g.n; ++t) {
    Fiber& f = g.fibers[t];
    f.tid = t;
    f.idx = uint3{t % g_block_dim.x, (t / g_block_dim.x) % g_block_dim.y, t / (g_block_dim.x * g_block_dim.y)};
    f.lane = t % 32;
    f.warp = t / 32;
    g.warps[f.warp].live |= 1u << f.lane;
    fiber_init(&f.ctx, t, fiber_main, &f);
    make_ready(f);
  }
  while (!g.failed) {
    Fiber* f = pick();
    if (!f) {
      if (g.done == g.n) break;
      g.failed = true;
      g.code = SDEMU_ERR_KERNEL;
      g.error = "deadlock in " + block_name() + ": " + describe_waits();
      break;
    }
    f->state = State::Running;
    g_cur = f;
    fiber_switch(&g.scheduler, &f->ctx);
  }
  g_cur = nullptr;
}

}  // namespace

int run_launch(const Kernel& kernel, const sdemu_cfg& cfg, void** params, int mode, std::uint64_t seed,
               std::string& error) {
  g.kernel = &kernel;
  g.params = params;
  g.n = cfg.block[0] * cfg.block[1] * cfg.block[2];
  g.fibers.resize(g.n);
  g.warps.resize((g.n + 31) / 32);
  g.ring.resize(g.n);
  g.mode = mode;
  g.rng = seed * 0x9E3779B97F4A7C15ULL + 0x632BE59BD9B4E019ULL;
  g.failed = false;
  g.code = SDEMU_OK;
  g.error.clear();
  g_grid_dim = dim3(cfg.grid[0], cfg.grid[1], cfg.grid[2]);
  g_block_dim = dim3(cfg.block[0], cfg.block[1], cfg.block[2]);
  g_dyn_smem = g_dyn_buffer;
  for (unsigned z = 0; z < cfg.grid[2] && !g.failed; ++z)
    for (unsigned y = 0; y < cfg.grid[1] && !g.failed; ++y)
      for (unsigned x = 0; x < cfg.grid[0] && !g.failed; ++x) {
        g_block_idx = uint3{x, y, z};
        run_block(cfg.shared_mem_bytes);
      }
  error = g.error;
  return g.code;
}

std::uint64_t warp_op(WarpOp op, const char* what, unsigned mask, std::uint64_t value, int src) {
  Fiber* f = current();
  if (!(mask & (1u << f->lane)))
    fail_in_fiber(SDEMU_ERR_KERNEL, std::string(what) + " in " + block_name() + ": thread " + std::to_string(f->tid) +
                                        " is not in its own mask " + hex(mask));
  f->op = op;
  f->what = what;
  f->mask = mask;
  f->value = value;
  f->src = src;
  f->state = State::WaitWarp;
  g.warps[f->warp].waiting |= 1u << f->lane;
  try_complete(f->warp, mask);
  yield(f);
  return f->result;
}

void sync_threads() {
  Fiber* f = current();
  f->state = State::WaitBlock;
  if (++g.at_barrier == g.n - g.done) release_block_barrier();
  yield(f);
}

void trap(const char* why) { fail_in_fiber(SDEMU_ERR_KERNEL, std::string(why) + " in " + block_name()); }

}  // namespace sdemu
