//! Our own f32 GEMM, with the instruction set chosen at run time. The `gemm` crate compiles its
//! AVX-512 microkernels only with its `nightly` feature, so on stable Rust every f32 product it
//! computes runs AVX2 code. [`sgemm_own`] has [`sgemm`]'s contract; on CPUs with AVX-512F it runs
//! its own packing and a register-blocked `vfmadd231ps zmm` microkernel ([`avx512`]); with AVX2
//! and FMA (or when `SDSERVE_CPU_ISA` says so, or when the 48/64-wide kernels would pad n by
//! more than an eighth) it calls [`sgemm`]; without either (or with `SDSERVE_CPU_ISA=portable`)
//! it runs our plain-Rust kernel ([`portable`]). [`super::gemm::gemm_with`] sends every f32
//! product here.

use super::gemm::{Gemm, Mat, Par, sgemm};
use std::sync::OnceLock;

/// Multiply-adds above which one call spreads over rayon threads (the same as `sgemm`).
const PAR_GEMM_MIN: usize = 48 * 48 * 48;

/// Which implementation [`sgemm_own`] runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Isa {
    /// Own packing and an AVX-512F microkernel (needs `avx512f`).
    Avx512,
    /// The `gemm` crate ([`sgemm`]), which runs its AVX2 + FMA kernels on such a CPU (and its
    /// own SIMD kernels on other architectures).
    Avx2,
    /// Our own plain-Rust kernel ([`portable`]), vectorised by the compiler for the baseline
    /// target only (SSE2 on x86-64): CPUs without AVX2 + FMA, and other architectures.
    Portable,
}

impl Isa {
    /// The name `SDSERVE_CPU_ISA` uses for this path (for logs).
    pub(crate) fn name(self) -> &'static str {
        match self {
            Isa::Avx512 => "avx512",
            Isa::Avx2 => "avx2",
            Isa::Portable => "portable",
        }
    }
}

/// Whether this CPU has the AVX-512 feature the own path is compiled for.
fn cpu_has_avx512f() -> bool {
    #[cfg(target_arch = "x86_64")]
    return is_x86_feature_detected!("avx512f");
    #[cfg(not(target_arch = "x86_64"))]
    false
}

/// Whether this CPU has AVX2 and FMA (what the `gemm` crate's fast kernels need).
fn cpu_has_avx2() -> bool {
    #[cfg(target_arch = "x86_64")]
    return is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma");
    #[cfg(not(target_arch = "x86_64"))]
    false
}

/// The best path this CPU runs. Off x86-64 that is the `gemm` crate, whose NEON kernels beat
/// the portable ones (the [`Isa::Avx2`] variant; its name is the x86 one).
fn native_isa() -> Isa {
    if cfg!(not(target_arch = "x86_64")) {
        return Isa::Avx2;
    }
    match (cpu_has_avx512f(), cpu_has_avx2()) {
        (true, _) => Isa::Avx512,
        (false, true) => Isa::Avx2,
        (false, false) => Isa::Portable,
    }
}

/// The path for a value of `SDSERVE_CPU_ISA` (`None`: unset) on this CPU: the named one, or the
/// native one (with a warning) for an unknown name or one the CPU cannot run.
fn isa_for(value: Option<&str>) -> Isa {
    let native = native_isa();
    let forced = match value {
        None | Some("auto") => return native,
        Some("avx512") => (Isa::Avx512, cpu_has_avx512f()),
        Some("avx2") => (Isa::Avx2, cpu_has_avx2()),
        Some("portable") => (Isa::Portable, true),
        Some(other) => {
            let msg = "SDSERVE_CPU_ISA must be auto, avx512, avx2 or portable; using auto";
            tracing::warn!(value = other, "{msg}");
            return native;
        }
    };
    if !forced.1 {
        let msg = "SDSERVE_CPU_ISA names an instruction set this CPU lacks; using auto";
        tracing::warn!(value = forced.0.name(), "{msg}");
        return native;
    }
    forced.0
}

/// The path [`sgemm_own`] takes: the best the CPU runs, unless `SDSERVE_CPU_ISA` forces one
/// (`avx512`, `avx2` or `portable`, to compare them). Read once.
pub(crate) fn isa() -> Isa {
    static ISA: OnceLock<Isa> = OnceLock::new();
    *ISA.get_or_init(|| isa_for(std::env::var("SDSERVE_CPU_ISA").ok().as_deref()))
}

/// `dst[m, n] (+)= lhs[m, k] · rhs[k, n]`, exactly [`sgemm`]'s contract (strided views, row-major
/// `dst` with row stride `dst_rs`, `accumulate` adds instead of overwriting, `k == 0` gives zeros
/// or leaves `dst`, elements of `dst` outside the m × n view untouched), on the path [`isa`]
/// names. Products and sums are f32 on every path; only the order of the sums differs.
///
/// Panics (an internal bug, never user input) if a view exceeds its slice.
#[allow(clippy::too_many_arguments)]
pub(crate) fn sgemm_own(
    m: usize,
    n: usize,
    k: usize,
    lhs: Mat<'_>,
    rhs: Mat<'_>,
    dst: &mut [f32],
    dst_rs: usize,
    accumulate: bool,
    par: Par,
) {
    let g = Gemm::new(m, n, k, lhs, rhs, dst_rs, accumulate);
    sgemm_own_on(isa(), g, dst, par)
}

/// Columns per panel of a pre-packed B ([`sgemm_packed_b`]).
pub(crate) const PACKED_B_NR: usize = 64;

/// Values in a pre-packed `k × n` B: `⌈n / 64⌉` panels of `k` rows of 64 columns, element
/// `(p, j)` at `(j / 64)·k·64 + p·64 + j % 64`. The layout does not depend on n, so one buffer
/// serves products of any width up to its length.
pub(crate) fn packed_b_len(k: usize, n: usize) -> usize {
    n.div_ceil(PACKED_B_NR) * k * PACKED_B_NR
}

/// Whether [`sgemm_packed_b`] runs here: the own AVX-512 path is the one [`isa`] picked.
pub(crate) fn packed_b_available() -> bool {
    isa() == Isa::Avx512 && cpu_has_avx512f()
}

/// `dst[m, n] = lhs[m, k] · B` (overwriting; `dst` row-major with row stride `dst_rs`) on this
/// thread, with B given pre-packed (`b`, the [`packed_b_len`] layout and at least that many
/// values; columns past n are read but their results dropped). Lets a caller
/// that computes B (Winograd's input transform) write it once, in the kernel's layout, instead
/// of into a matrix the GEMM packs again. Returns false, computing nothing, where
/// [`packed_b_available`] is false.
///
/// Panics (an internal bug, never user input) if `lhs`, `b` or `dst` is too short.
pub(crate) fn sgemm_packed_b(
    (m, n, k): (usize, usize, usize),
    lhs: Mat<'_>,
    b: &[f32],
    dst: &mut [f32],
    dst_rs: usize,
) -> bool {
    if !packed_b_available() {
        return false;
    }
    // The dense rhs view only satisfies the shared checks (`has_work`); `b` is what is read.
    let rhs = Mat {
        data: b,
        rs: 0,
        cs: 0,
    };
    let g = Gemm::new(m, n, k, lhs, rhs, dst_rs, false);
    if g.has_work(dst) {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: the CPU has avx512f (packed_b_available); `has_work` checked lhs and dst and
        // m, n, k > 0; `gemm_packed_b` checks b's length.
        unsafe {
            avx512::gemm_packed_b(g, b, dst)
        };
    }
    true
}

/// [`sgemm_own`] on a chosen path (the `gemm` crate for [`Isa::Avx2`], or for [`Isa::Avx512`]
/// when the CPU lacks AVX-512F or its kernels would pad n by more than an eighth), so tests can
/// check every path on one machine.
fn sgemm_own_on(isa: Isa, g: Gemm<'_>, dst: &mut [f32], par: Par) {
    #[cfg(target_arch = "x86_64")]
    if isa == Isa::Avx512 && cpu_has_avx512f() {
        let cfg = avx512::choose(g.n, g.k);
        if avx512::pads_little(cfg, g.n) {
            if g.has_work(dst) {
                // SAFETY: the CPU has avx512f (checked above), `has_work` asserted that all
                // three views lie inside their slices and that m, n, k > 0, as `gemm` requires.
                unsafe { avx512::gemm(cfg, g, dst, par) };
            }
            return;
        }
    }
    if isa == Isa::Portable {
        if g.has_work(dst) {
            portable::gemm(g, dst, par);
        }
        return;
    }
    let (m, n, k, lhs, rhs, dst_rs, acc) = (g.m, g.n, g.k, g.lhs, g.rhs, g.dst_rs, g.acc);
    sgemm(m, n, k, lhs, rhs, dst, dst_rs, acc, par);
}

/// The portable path: plain Rust, register-blocked, that the compiler vectorises for any target.
mod portable;

/// The AVX-512F path: Goto-style blocking (B blocks of KC × NC packed once and shared by all
/// threads; A read in place when its rows are contiguous, else packed per MC × KC block) around
/// an MR × NR register microkernel.
#[cfg(target_arch = "x86_64")]
mod avx512;

/// Packing of A and B blocks for [`avx512`], with a 16 × 16 in-register transpose.
#[cfg(target_arch = "x86_64")]
mod pack;

/// Every path against an f64 reference; block-crossing shapes; throughput against `gemm`.
#[cfg(test)]
mod tests;

/// Timings (ignored tests): the `gemm` crate against [`avx512`], and a blocking sweep.
#[cfg(test)]
mod timing;
