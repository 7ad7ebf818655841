//! How the process's allocator treats the CPU backend's large, short-lived buffers.
//!
//! Why: every op returns a fresh output and many make scratch (converted weights, patch
//! matrices, transformed tiles), megabytes each, freed a moment later. glibc's malloc returns a
//! freed block at the top of the heap to the kernel once it exceeds its trim threshold, and its
//! dynamic mmap threshold starts at 128 KiB, so such buffers come back as fresh pages: each
//! first touch is a page fault and the kernel zeroes the page. On the SD 1.5 UNet forward (batch
//! 2, 2 cores) that cost 6–10% of the time (three alternating pairs, 10.6–11.0 s against
//! 9.6–10.2 s), for 41 MiB more peak memory (2,052 against 2,093 MiB). So the backend lifts the
//! trim threshold, so that freed memory stays in the heap for the next op, and turns off
//! malloc's use of mmap altogether (`M_MMAP_MAX` = 0), so that buffers of every size come from
//! the heap and return to it.
//!
//! Capping the mmap threshold at glibc's largest (32 MiB) was the first step; buffers above it
//! were still mapped and unmapped each time, and the VAE's activations at 256×256 and 512×512
//! are 32–256 MiB each: touching 64 MiB of fresh pages took 27 ms here. With no mmap at all
//! (2 cores, `SDSERVE_BENCH_RUNS=1`, alternating runs): bf16 VAE decode 7.02/6.61/6.79 s →
//! 5.92/5.77/6.50 s, f32 6.69 → 5.84 s, bf16 UNet 5.05 → 4.63 s, f32 8.18 → 7.90 s; peak
//! memory 598 → 622 MiB (bf16 VAE), 1,000 → 955 (f32 VAE), 2,128 → 2,096 (bf16 UNet): reusing
//! freed blocks costs no more than mapping new ones. The heap keeps its high-water mark for the
//! process's life, which the trim threshold already did for blocks below 32 MiB.
//!
//! `SDSERVE_CPU_MALLOC=default` leaves glibc's settings alone. Other allocators and C libraries
//! are left as they are.

/// Applies the settings above (once; later calls do nothing). Called with the worker pool's
/// setup, before any CPU kernel runs.
pub(crate) fn keep_freed_memory() {
    static DONE: std::sync::Once = std::sync::Once::new();
    DONE.call_once(|| {
        if std::env::var("SDSERVE_CPU_MALLOC").as_deref() == Ok("default") {
            return;
        }
        set_glibc_thresholds();
    });
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn set_glibc_thresholds() {
    // SAFETY: mallopt only changes malloc's tuning parameters; it is called once, before the
    // backend allocates, and glibc serialises it against concurrent allocation.
    let ok = unsafe {
        libc::mallopt(libc::M_MMAP_MAX, 0) == 1
            && libc::mallopt(libc::M_TRIM_THRESHOLD, i32::MAX) == 1
    };
    if !ok {
        tracing::debug!("mallopt refused the CPU backend's thresholds; glibc defaults kept");
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn set_glibc_thresholds() {}
