//! How the process's allocator treats the CPU backend's large, short-lived buffers.
//!
//! Why: every op returns a fresh output and many make scratch (converted weights, patch
//! matrices, transformed tiles), megabytes each, freed a moment later. glibc's malloc returns a
//! freed block at the top of the heap to the kernel once it exceeds its trim threshold, and its
//! dynamic mmap threshold starts at 128 KiB, so such buffers come back as fresh pages: each
//! first touch is a page fault and the kernel zeroes the page. On the SD 1.5 UNet forward (batch
//! 2, 2 cores) that cost 6–10% of the time (three alternating pairs, 10.6–11.0 s against
//! 9.6–10.2 s), for 41 MiB more peak memory (2,052 against 2,093 MiB). So the backend fixes the
//! mmap threshold at glibc's largest (32 MiB, which also stops it from adapting) and lifts the
//! trim threshold: freed memory stays in the heap for the next op. Buffers above 32 MiB are
//! still mapped and unmapped each time.
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
    /// glibc's largest mmap threshold on 64-bit targets (`DEFAULT_MMAP_THRESHOLD_MAX`).
    const MMAP_THRESHOLD: i32 = 32 << 20;
    // SAFETY: mallopt only changes malloc's tuning parameters; it is called once, before the
    // backend allocates, and glibc serialises it against concurrent allocation.
    let ok = unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD) == 1
            && libc::mallopt(libc::M_TRIM_THRESHOLD, i32::MAX) == 1
    };
    if !ok {
        tracing::debug!("mallopt refused the CPU backend's thresholds; glibc defaults kept");
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn set_glibc_thresholds() {}
