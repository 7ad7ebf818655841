/* The emulator's C ABI, as the Rust side (engine/cuda/emu.rs) declares it. Kept C-compatible
 * and free of C++ types so it can never pass an exception or a std type across the boundary. */
#pragma once
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Launch geometry, as in cuLaunchKernel. */
typedef struct sdemu_cfg {
  unsigned grid[3];
  unsigned block[3];
  unsigned shared_mem_bytes;
} sdemu_cfg;

/* Return codes of sdemu_launch; the message is in sdemu_last_error(). */
enum {
  SDEMU_OK = 0,
  SDEMU_ERR_UNKNOWN_KERNEL = 1,
  SDEMU_ERR_CONFIG = 2,    /* invalid grid, block or shared memory size */
  SDEMU_ERR_KERNEL = 3,    /* deadlock, inactive-lane shuffle, __trap, warp divergence */
  SDEMU_ERR_EXCEPTION = 4, /* the kernel threw a C++ exception */
  SDEMU_ERR_INTERNAL = 5   /* the emulator itself failed (e.g. out of memory) */
};

/* Orders in which the scheduler resumes runnable threads of a block. */
enum {
  SDEMU_SCHEDULE_FIFO = 0,
  SDEMU_SCHEDULE_LOW_FIRST = 1,
  SDEMU_SCHEDULE_HIGH_FIRST = 2,
  SDEMU_SCHEDULE_RANDOM = 3
};

/* Runs kernel `name` (registered by SD_EXPORT) with CUDA-style params: params[i] points at
 * argument i. Blocks the caller until every block ran or one failed. Thread-safe (serialized). */
int sdemu_launch(const char* name, const sdemu_cfg* cfg, void** params);
/* The number of parameters kernel `name` takes, or -1 if no such kernel is compiled in. */
int sdemu_kernel_arity(const char* name);
/* Chooses the order for launches made from the calling OS thread (parallel tests don't
 * disturb each other); `seed` drives SDEMU_SCHEDULE_RANDOM. */
void sdemu_set_schedule(int mode, uint64_t seed);
/* The message of the calling thread's last failed launch ("" after a success). */
const char* sdemu_last_error(void);

#ifdef __cplusplus
}
#endif
