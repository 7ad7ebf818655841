//! The CPU backend's worker threads: rayon's global pool, built before its first use so that
//! every worker flushes denormals to zero (FTZ/DAZ).
//!
//! Why: an x86 core takes a microcode assist (tens to hundreds of cycles) for each f32 operation
//! that reads or produces a subnormal (|x| < 2^-126 ≈ 1.2e-38). Diffusion activations reach
//! that range in SiLU/GELU tails, attention probabilities and GroupNorm of near-constant
//! channels; flushing costs no accuracy that a 1e-38 term could carry against the O(1) values
//! they are summed with, and every parity test and golden passes with it on.
//! `SDSERVE_CPU_FTZ=off` keeps IEEE subnormals (to measure the difference or to rule it out).
//!
//! Only the pool's workers are switched: the flags are per thread, and a thread that merely
//! calls into the engine (a test harness, an embedding application) keeps its own settings.

use std::sync::OnceLock;

/// Whether the pool's workers flush denormals: from `SDSERVE_CPU_FTZ` (`on`, the default, or
/// `off`), read once.
pub(crate) fn ftz_requested() -> bool {
    static ON: OnceLock<bool> = OnceLock::new();
    *ON.get_or_init(|| match std::env::var("SDSERVE_CPU_FTZ").as_deref() {
        Ok("off") | Ok("0") => false,
        Ok("on") | Ok("1") | Err(_) => true,
        Ok(other) => {
            tracing::warn!(value = other, "SDSERVE_CPU_FTZ must be on or off; using on");
            true
        }
    })
}

/// What [`ensure_pool`] managed to set up, for logs and tests.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum PoolSetup {
    /// Our pool, workers flushing denormals.
    Ftz,
    /// Our pool, IEEE subnormals kept (`SDSERVE_CPU_FTZ=off`, or not an x86-64 CPU).
    Ieee,
    /// Rayon's pool had already been built by someone else; its workers are left as they are.
    Foreign,
}

/// A pool builder whose workers flush denormals when `ftz` is set.
fn builder(ftz: bool) -> rayon::ThreadPoolBuilder {
    rayon::ThreadPoolBuilder::new()
        .thread_name(|i| format!("sdserve-cpu-{i}"))
        .start_handler(move |_| {
            if ftz {
                flush_denormals_on_this_thread();
            }
        })
}

/// Builds rayon's global pool (once; later calls return the first result). Called where host
/// data enters the CPU backend, which is before any CPU kernel can run.
pub(crate) fn ensure_pool() -> PoolSetup {
    static SETUP: OnceLock<PoolSetup> = OnceLock::new();
    *SETUP.get_or_init(|| {
        super::alloc::keep_freed_memory();
        let ftz = ftz_requested() && cfg!(target_arch = "x86_64");
        match (builder(ftz).build_global(), ftz) {
            (Ok(()), true) => PoolSetup::Ftz,
            (Ok(()), false) => PoolSetup::Ieee,
            (Err(_), _) => {
                tracing::debug!("rayon's global pool was built elsewhere; denormals not flushed");
                PoolSetup::Foreign
            }
        }
    })
}

/// Sets MXCSR's flush-to-zero (bit 15) and denormals-are-zero (bit 6) on the calling thread.
#[cfg(target_arch = "x86_64")]
fn flush_denormals_on_this_thread() {
    let mut csr: u32 = 0;
    // SAFETY: stmxcsr/ldmxcsr read and write this thread's SSE control register through a
    // valid, aligned local; only the two denormal-mode bits change. The compiler assumes the
    // default floating-point environment only for constant folding, and FTZ/DAZ change results
    // only for subnormal operands and results, which the engine treats as zero anyway.
    unsafe {
        std::arch::asm!("stmxcsr [{}]", in(reg) &mut csr, options(nostack));
        csr |= (1 << 15) | (1 << 6);
        std::arch::asm!("ldmxcsr [{}]", in(reg) &csr, options(nostack, readonly));
    }
}

#[cfg(not(target_arch = "x86_64"))]
fn flush_denormals_on_this_thread() {}

#[cfg(test)]
mod tests {
    use super::*;

    /// `1e-30 · 1e-10` (a subnormal) and `subnormal · 1` computed on a worker of `pool`.
    fn on_worker(pool: &rayon::ThreadPool) -> (f32, f32) {
        let tiny = std::hint::black_box(1.0e-30f32);
        let scale = std::hint::black_box(1.0e-10f32);
        let sub = std::hint::black_box(f32::MIN_POSITIVE / 4.0);
        pool.install(|| {
            (
                std::hint::black_box(tiny * scale),
                std::hint::black_box(sub * std::hint::black_box(1.0f32)),
            )
        })
    }

    #[test]
    #[cfg(target_arch = "x86_64")]
    fn workers_flush_subnormal_results_and_operands_only_when_asked() {
        let flushing = builder(true).num_threads(1).build().unwrap();
        assert_eq!(on_worker(&flushing), (0.0, 0.0), "FTZ/DAZ workers");
        let ieee = builder(false).num_threads(1).build().unwrap();
        let (product, same) = on_worker(&ieee);
        assert!(product > 0.0 && product < f32::MIN_POSITIVE, "{product}");
        assert_eq!(same, f32::MIN_POSITIVE / 4.0);
        // Normal numbers are untouched either way.
        assert_eq!(flushing.install(|| std::hint::black_box(1.5f32) * 2.0), 3.0);
    }
}
