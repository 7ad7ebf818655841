//! A bf16 GEMM for `--precision bf16`: `dst (+)= lhs · rhs` where every product is of the two
//! inputs rounded to bf16 (round-to-nearest-even) and the sums are kept in f32. On CPUs with
//! AVX-512 BF16 it runs its own packing and a register-blocked `vdpbf16ps` microkernel (two bf16
//! products per f32 lane and instruction); elsewhere it rounds both operands into f32 scratch and
//! calls [`sgemm`], which gives the same products since a bf16 × bf16 product is exact in f32.

use super::gemm::{Gemm, Mat, Par, Src, max_index, sgemm};
use crate::engine::op::AttnGeom;
use half::bf16;
use rayon::prelude::*;
use std::sync::OnceLock;

/// Multiply-adds above which one call spreads over rayon threads (the same as `sgemm`).
const PAR_GEMM_MIN: usize = 48 * 48 * 48;

/// Which implementation [`sgemm_bf16`] runs on this machine.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Bf16Path {
    /// Own packing and a `vdpbf16ps` microkernel (needs `avx512f`, `avx512bw`, `avx512bf16`).
    Avx512Bf16,
    /// Round both operands to bf16 into f32 scratch, then the f32 [`sgemm`] (any CPU).
    Portable,
}

/// Whether this CPU has the AVX-512 features the native path is compiled for.
fn cpu_has_avx512bf16() -> bool {
    #[cfg(target_arch = "x86_64")]
    return is_x86_feature_detected!("avx512f")
        && is_x86_feature_detected!("avx512bw")
        && is_x86_feature_detected!("avx512bf16");
    #[cfg(not(target_arch = "x86_64"))]
    false
}

/// The path [`sgemm_bf16`] takes: AVX-512 BF16 where the CPU has it, unless
/// `SDSERVE_CPU_BF16=portable` forces the portable one (to compare the two). Read once.
pub(crate) fn bf16_path() -> Bf16Path {
    static PATH: OnceLock<Bf16Path> = OnceLock::new();
    *PATH.get_or_init(|| {
        let native = match cpu_has_avx512bf16() {
            true => Bf16Path::Avx512Bf16,
            false => Bf16Path::Portable,
        };
        match std::env::var("SDSERVE_CPU_BF16").as_deref() {
            Ok("portable") => Bf16Path::Portable,
            Ok("auto") | Err(_) => native,
            Ok(other) => {
                let msg = "SDSERVE_CPU_BF16 must be auto or portable; using auto";
                tracing::warn!(value = other, "{msg}");
                native
            }
        }
    })
}

/// Whether [`sgemm_bf16`] runs on native bf16 instructions here (so bf16 is faster than f32).
pub(crate) fn bf16_native() -> bool {
    bf16_path() == Bf16Path::Avx512Bf16
}

/// `softmax(scale · q kᵀ) v` (no causal mask) with bf16 products, through the transposed
/// AVX-512 BF16 attention where [`bf16_path`] takes the native path; `None` elsewhere, for the
/// caller's general path (the same roundings through [`sgemm_bf16`]).
pub(crate) fn attention(q: &[f32], k: &[f32], v: &[f32], g: AttnGeom) -> Option<Vec<f32>> {
    #[cfg(target_arch = "x86_64")]
    if !g.causal && bf16_native() {
        let n = |l: usize| g.bh * l * g.d;
        assert!(
            q.len() >= n(g.lq) && k.len() >= n(g.lk) && v.len() >= n(g.lk),
            "attention: inputs shorter than their geometry"
        );
        // SAFETY: `bf16_native` checked the CPU features; the inputs hold g's shapes (asserted).
        return Some(unsafe { avx512::attention::attention(q, k, v, g) });
    }
    let _ = (q, k, v, g);
    None
}

/// The bits of `x` rounded to bf16, round-to-nearest-even; a NaN stays a (quiet) NaN, bit for bit
/// what `vcvtne2ps2bf16` and `half::bf16::from_f32` give (subnormals: see [`sgemm_bf16`]).
#[inline(always)]
pub(crate) fn bf16_bits(x: f32) -> u32 {
    let b = x.to_bits();
    match x.is_nan() {
        true => (b >> 16) | 0x40,
        // No overflow: a non-NaN has b ≤ 0xff80_0000.
        false => (b + 0x7fff + ((b >> 16) & 1)) >> 16,
    }
}

/// `x` rounded to bf16 and widened back to f32 (the widening is exact).
fn round_bf16(x: f32) -> f32 {
    f32::from_bits(bf16_bits(x) << 16)
}

/// `dst[m, n] (+)= lhs[m, k] · rhs[k, n]` with `sgemm`'s contract (strided views, row-major `dst`
/// with row stride `dst_rs`, `accumulate` adds instead of overwriting, `k == 0` gives zeros or
/// leaves `dst`), except that each product is of the inputs rounded to bf16, summed in f32.
/// The AVX-512 path treats subnormal inputs as zero (the instructions' DAZ); that changes a
/// product by under 2^-126 · |other factor|.
///
/// Panics (an internal bug, never user input) if a view exceeds its slice.
#[allow(clippy::too_many_arguments)]
pub(crate) fn sgemm_bf16(
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
    sgemm_bf16_on(bf16_path(), g, dst, par)
}

/// [`sgemm_bf16`] on a chosen path (the portable one if the CPU lacks AVX-512 BF16), so tests
/// can check both paths on one machine.
fn sgemm_bf16_on(path: Bf16Path, g: Gemm<'_>, dst: &mut [f32], par: Par) {
    if !g.has_work(dst) {
        return;
    }
    let (m, n, k, lhs, rhs, dst_rs, acc) = (g.m, g.n, g.k, g.lhs, g.rhs, g.dst_rs, g.acc);
    #[cfg(target_arch = "x86_64")]
    if path == Bf16Path::Avx512Bf16 && cpu_has_avx512bf16() {
        let u = avx512::micro_for(n);
        // SAFETY: the CPU has the features `gemm` is compiled for (checked above) and `has_work`'s
        // asserts keep all three views inside their slices, as `gemm` requires.
        unsafe { avx512::gemm(u, g, dst, par) };
        return;
    }
    let _ = path;
    let big = par == Par::Auto && m * n * k >= PAR_GEMM_MIN;
    let (a, b) = (rounded(m, k, lhs, big), rounded(k, n, rhs, big));
    let (a, b) = (Mat::rows(&a, k), Mat::rows(&b, n));
    sgemm(m, n, k, a, b, dst, dst_rs, acc, par);
}

/// One operand of [`sgemm_bf16_weight`]: an f32 view (rounded to bf16 as it is packed), or a
/// stored bf16 weight, row-major with k values per row (A's rows or B's columns).
#[derive(Clone, Copy)]
pub(crate) enum Operand<'a> {
    /// A strided f32 view, as for [`sgemm_bf16`].
    View(Mat<'a>),
    /// bf16 values `[rows, k]` (a stored weight, or bf16 activations): A `[m, k]` as the lhs,
    /// Bᵀ `[n, k]` as the rhs.
    Bf16(&'a [bf16]),
    /// Already in [`sgemm_bf16_packed`]'s layout ([`PACKED_MR`]-row panels as the lhs,
    /// [`PACKED_NR`]-column panels as the rhs, over all ⌈k / 2⌉ pairs): an operand produced in
    /// that layout (the patches of a convolution), which the GEMM reads in place.
    Packed(&'a [u32]),
}

/// [`sgemm_bf16`] with either operand a stored bf16 weight, which the AVX-512 BF16 path packs
/// from its bits (no f32 copy of the weight, half the bytes read), or already packed
/// ([`Operand::Packed`]). Returns false, computing nothing, where that path does not run (no
/// native bf16, `SDSERVE_CPU_BF16=portable`, or an odd k with a bf16 operand, whose pairs would
/// straddle rows): the caller then converts the weight and calls [`sgemm_bf16`], which gives
/// the same products.
///
/// Panics (an internal bug) if an operand or `dst` is shorter than its view.
#[allow(clippy::too_many_arguments)]
pub(crate) fn sgemm_bf16_weight(
    m: usize,
    n: usize,
    k: usize,
    lhs: Operand<'_>,
    rhs: Operand<'_>,
    dst: &mut [f32],
    dst_rs: usize,
    accumulate: bool,
    par: Par,
) -> bool {
    // A stored bf16 operand is packed a u32 (two values of a row) at a time: k must be even.
    let bits = |o: Operand<'_>| matches!(o, Operand::Bf16(_));
    if !bf16_native() || (k % 2 == 1 && (bits(lhs) || bits(rhs))) {
        return false;
    }
    #[cfg(target_arch = "x86_64")]
    {
        let (a, b) = (panels(lhs, m, k, true), panels(rhs, n, k, false));
        // Packed panels fix the kernel's shape.
        let packed = |o: Operand<'_>| matches!(o, Operand::Packed(_));
        let u = match packed(lhs) || packed(rhs) {
            true => avx512::K6X64,
            false => avx512::micro_for(n),
        };
        if m == 0 || n == 0 {
            return true;
        }
        assert!(
            max_index(m, n, dst_rs, 1) < dst.len(),
            "sgemm_bf16_weight: dst out of bounds"
        );
        if k == 0 {
            if !accumulate {
                dst.chunks_mut(dst_rs)
                    .take(m)
                    .for_each(|r| r[..n].fill(0.0));
            }
            return true;
        }
        let dims = avx512::Dims {
            m,
            n,
            k,
            dst_rs,
            acc: accumulate,
        };
        // SAFETY: `bf16_native` checked the features; the asserts keep both operands and `dst`
        // inside their slices; m, n, k > 0.
        unsafe { avx512::gemm_panels(u, dims, a, b, dst, par) };
        true
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = (m, n, lhs, rhs, dst, dst_rs, accumulate, par);
        false
    }
}

/// `x [rows, k] · wᵀ + bias` (w `[n, k]`: a stored bf16 weight, or an f32 one as a view)
/// rounded to bf16, with the bias and the rounding done as each tile leaves the kernel (no f32
/// output: see `avx512/linear.rs`); with `geglu`, diffusers' GEGLU of that (`a · gelu(gate)`
/// of its two halves, `[rows, n/2]`) in the same epilogue, from the unrounded f32 sums.
/// Products as in [`sgemm_bf16_weight`]; the sums run over all of k before the bias is added,
/// so a result may differ from that path's (bias first, then k in blocks) by one bf16 rounding
/// step. `None`, computing nothing, where this path does not run: no native bf16, k odd, zero
/// or above what it keeps in cache, or an odd n for GEGLU.
///
/// Panics (an internal bug) if an operand or the bias is shorter than its view.
pub(crate) fn linear_bf16_out(
    x: &[bf16],
    w: Operand<'_>,
    bias: Option<&[f32]>,
    (rows, n, k): (usize, usize, usize),
    geglu: bool,
) -> Option<Vec<bf16>> {
    if !bf16_native() || k % 2 == 1 || k > avx512::linear::K_MAX || (geglu && n % 2 == 1) {
        return None;
    }
    #[cfg(target_arch = "x86_64")]
    {
        use avx512::linear::Epilogue;
        let n_out = if geglu { n / 2 } else { n };
        let mut out = vec![bf16::ZERO; rows * n_out];
        if rows == 0 || n == 0 {
            return Some(out);
        }
        if k == 0 {
            // No products: leave it to the general path (bias alone, then the gate if any).
            return None;
        }
        let (a, b) = (
            panels(Operand::Bf16(x), rows, k, true),
            panels(w, n, k, false),
        );
        let parallel = rows * n * k >= PAR_GEMM_MIN;
        // SAFETY: `bf16_native` checked the features; `panels` asserted both operands' sizes;
        // m, n, k > 0 and k ≤ K_MAX; `linear` asserts `out` and the bias.
        unsafe {
            avx512::linear::linear(
                (rows, n, k),
                a,
                b,
                bias,
                if geglu {
                    Epilogue::Geglu
                } else {
                    Epilogue::Bias
                },
                bytemuck::cast_slice_mut(&mut out),
                parallel,
            )
        };
        Some(out)
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = (x, w, bias, rows, n, geglu);
        None
    }
}

/// Rows of the A panels that [`sgemm_bf16_packed`] takes (its kernel's).
pub(crate) const PACKED_MR: usize = 6;
/// Columns of its B panels.
pub(crate) const PACKED_NR: usize = 64;

/// `dst[m, n] = a · b` (row stride `dst_rs`, overwritten, on this thread) from operands already
/// in the packed layout, bf16 pairs along k: `a[(panel · kp + p) · PACKED_MR + r]` holds
/// A(panel · PACKED_MR + r, 2p) in its low half and A(.., 2p + 1) in its high half, `b` likewise
/// with [`PACKED_NR`] columns of B per panel, kp = ⌈k / 2⌉, both zero-padded to whole panels.
/// For operands packed once and multiplied many times (Winograd's transformed weights) or
/// produced in this layout (its transformed inputs). Returns false, computing nothing, where
/// the AVX-512 BF16 path does not run.
///
/// Panics (an internal bug) if an operand or `dst` is shorter than the above.
#[allow(clippy::too_many_arguments)]
pub(crate) fn sgemm_bf16_packed(
    m: usize,
    n: usize,
    k: usize,
    a: &[u32],
    b: &[u32],
    dst: &mut [f32],
    dst_rs: usize,
) -> bool {
    let (a, b) = (Operand::Packed(a), Operand::Packed(b));
    sgemm_bf16_weight(m, n, k, a, b, dst, dst_rs, false, Par::Serial)
}

/// Packs `rows × k` of the f32 view `v` (element (r, q) at `v.data[r·v.rs + q·v.cs]`) into
/// whole panels of `w` rows in [`sgemm_bf16_packed`]'s layout (`w` = [`PACKED_MR`] for A,
/// [`PACKED_NR`] for Bᵀ), rounding to bf16; `out` is resized to fit. False where the AVX-512
/// BF16 path does not run.
pub(crate) fn pack_panels(v: Mat<'_>, rows: usize, k: usize, w: usize, out: &mut Vec<u32>) -> bool {
    if !bf16_native() {
        return false;
    }
    let kp = k.div_ceil(2);
    out.clear();
    out.resize(rows.div_ceil(w) * kp * w, 0);
    if rows == 0 || k == 0 {
        return true;
    }
    assert!(
        max_index(rows, k, v.rs, v.cs) < v.data.len(),
        "pack_panels: view out of bounds"
    );
    #[cfg(target_arch = "x86_64")]
    {
        let src = Src::new(v.data, v.rs, v.cs, rows, k);
        for (t, panel) in out.chunks_mut(kp * w).enumerate() {
            // SAFETY: `bf16_native` checked the features; the view lies in its slice.
            unsafe { avx512::pack(src, t * w, w, 0, kp, panel) };
        }
    }
    true
}

/// `o` as the packing source of an operand with `rows` panel rows by `k` (`lhs`: A's rows, else
/// B's columns). Panics (an internal bug) if `o` is shorter than that.
#[cfg(target_arch = "x86_64")]
fn panels(o: Operand<'_>, rows: usize, k: usize, lhs: bool) -> avx512::Panels<'_> {
    match o {
        Operand::View(v) => {
            let inside = rows == 0 || k == 0 || {
                let (rs, cs) = if lhs { (v.rs, v.cs) } else { (v.cs, v.rs) };
                max_index(rows, k, rs, cs) < v.data.len()
            };
            assert!(inside, "sgemm_bf16_weight: view out of bounds");
            let (sr, sq) = if lhs { (v.rs, v.cs) } else { (v.cs, v.rs) };
            avx512::Panels::F32(Src::new(v.data, sr, sq, rows, k))
        }
        Operand::Bf16(w) => {
            assert!(
                w.len() >= rows * k,
                "sgemm_bf16_weight: weight shorter than its view"
            );
            let bits: &[u16] = bytemuck::cast_slice(w);
            avx512::Panels::Bits { bits, rows, k }
        }
        Operand::Packed(panels) => {
            let w = if lhs { PACKED_MR } else { PACKED_NR };
            let kp = k.div_ceil(2);
            assert!(
                panels.len() >= rows.div_ceil(w) * kp * w,
                "sgemm_bf16_weight: packed operand shorter than its panels"
            );
            avx512::Panels::Packed { panels, kp, w }
        }
    }
}

/// The `rows × cols` view `v` rounded to bf16 into a row-major f32 matrix (rayon if `par`).
fn rounded(rows: usize, cols: usize, v: Mat<'_>, par: bool) -> Vec<f32> {
    let mut out = vec![0f32; rows * cols];
    let fill = |(i, row): (usize, &mut [f32])| {
        for (j, x) in row.iter_mut().enumerate() {
            *x = round_bf16(v.data[i * v.rs + j * v.cs]);
        }
    };
    match par {
        true => out.par_chunks_mut(cols).enumerate().for_each(fill),
        false => out.chunks_mut(cols).enumerate().for_each(fill),
    }
    out
}

/// The AVX-512 BF16 path: Goto-style blocking (B blocks of KC k-pairs × NC columns, packed once
/// and shared by all threads; A blocks of MC rows × KC pairs), both packed to bf16 pairs, around
/// an MR × NR register microkernel.
#[cfg(target_arch = "x86_64")]
mod avx512;

/// Both paths against an f64 reference of the bf16-rounded inputs; rounding against `half`.
#[cfg(test)]
mod tests;
