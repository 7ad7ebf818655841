//! A bf16 GEMM for `--precision bf16`: `dst (+)= lhs · rhs` where every product is of the two
//! inputs rounded to bf16 (round-to-nearest-even) and the sums are kept in f32. On CPUs with
//! AVX-512 BF16 it runs its own packing and a register-blocked `vdpbf16ps` microkernel (two bf16
//! products per f32 lane and instruction); elsewhere it rounds both operands into f32 scratch and
//! calls [`sgemm`], which gives the same products since a bf16 × bf16 product is exact in f32.

// Until the backend's `--precision bf16` path calls in, only the tests use these items.

use super::gemm::{Mat, Par, sgemm};
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

/// The bits of `x` rounded to bf16, round-to-nearest-even; a NaN stays a (quiet) NaN, bit for bit
/// what `vcvtne2ps2bf16` and `half::bf16::from_f32` give (subnormals: see [`sgemm_bf16`]).
#[inline(always)]
fn bf16_bits(x: f32) -> u32 {
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

/// The largest index a `rows × cols` view with strides `rs`, `cs` touches (`rows, cols > 0`).
fn max_index(rows: usize, cols: usize, rs: usize, cs: usize) -> usize {
    (rows - 1) * rs + (cols - 1) * cs
}

/// One product `dst (+)= lhs[m, k] · rhs[k, n]` (row-major `dst`, row stride `dst_rs`; `acc`
/// adds instead of overwriting), bundled so the internal functions can take and split it whole.
#[derive(Clone, Copy)]
struct Gemm<'a> {
    m: usize,
    n: usize,
    k: usize,
    lhs: Mat<'a>,
    rhs: Mat<'a>,
    dst_rs: usize,
    acc: bool,
}

impl<'a> Gemm<'a> {
    /// Bundles the arguments (in `sgemm`'s order).
    fn new(
        m: usize,
        n: usize,
        k: usize,
        lhs: Mat<'a>,
        rhs: Mat<'a>,
        dst_rs: usize,
        acc: bool,
    ) -> Self {
        Gemm {
            m,
            n,
            k,
            lhs,
            rhs,
            dst_rs,
            acc,
        }
    }
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
    let (m, n, k, lhs, rhs, dst_rs, acc) = (g.m, g.n, g.k, g.lhs, g.rhs, g.dst_rs, g.acc);
    if m == 0 || n == 0 {
        return;
    }
    let dst_ok = max_index(m, n, dst_rs, 1) < dst.len();
    assert!(dst_ok, "sgemm: dst view out of bounds");
    if k == 0 {
        if !acc {
            for i in 0..m {
                dst[i * dst_rs..i * dst_rs + n].fill(0.0);
            }
        }
        return;
    }
    let lhs_ok = max_index(m, k, lhs.rs, lhs.cs) < lhs.data.len();
    assert!(lhs_ok, "sgemm: lhs view out of bounds");
    let rhs_ok = max_index(k, n, rhs.rs, rhs.cs) < rhs.data.len();
    assert!(rhs_ok, "sgemm: rhs view out of bounds");
    #[cfg(target_arch = "x86_64")]
    if path == Bf16Path::Avx512Bf16 && cpu_has_avx512bf16() {
        // 6 × 64 measured a little faster, but wastes more of the last panel when n is small
        // or not a multiple of 64 (attention's n = 40): take the kernel that pads n less.
        let u = match n.next_multiple_of(64) > n.next_multiple_of(48) {
            true => avx512::K8X48,
            false => avx512::K6X64,
        };
        // SAFETY: the CPU has the features `gemm` is compiled for (checked above) and the asserts
        // above keep all three views inside their slices, as `gemm` requires.
        unsafe { avx512::gemm(u, g, dst, par) };
        return;
    }
    let _ = path;
    let big = par == Par::Auto && m * n * k >= PAR_GEMM_MIN;
    let (a, b) = (rounded(m, k, lhs, big), rounded(k, n, rhs, big));
    let (a, b) = (Mat::rows(&a, k), Mat::rows(&b, n));
    sgemm(m, n, k, a, b, dst, dst_rs, acc, par);
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
mod avx512 {
    use super::{Gemm, PAR_GEMM_MIN, Par, bf16_bits};
    use rayon::prelude::*;
    use std::arch::x86_64::*;

    /// k-pairs per block: a B micro-panel of KC pairs is 32 KiB (64 columns) or 24 KiB (48), the
    /// size of L1, where it stays while the A micro-panels stream past it from L2.
    const KC: usize = 128;
    /// Rows per packed A block (rounded down to MR): MC·KC·4 B ≈ 340 KiB of the 1 MiB L2.
    const MC: usize = 672;
    /// Columns per packed B block (rounded down to NR): KC·NC·4 B = 1 MiB, in L2/L3.
    const NC: usize = 2048;

    /// A view to pack: element (r, q) — r across the panel (rows of A, columns of B), q along
    /// k — is `data[r * sr + q * sq]`, for `r < rows`, `q < k`.
    #[derive(Clone, Copy)]
    pub(super) struct Src<'a> {
        pub data: &'a [f32],
        pub sr: usize,
        pub sq: usize,
        pub rows: usize,
        pub k: usize,
    }

    impl<'a> Src<'a> {
        /// The view `data[r * sr + q * sq]`, `r < rows`, `q < k`.
        pub(super) fn new(data: &'a [f32], sr: usize, sq: usize, rows: usize, k: usize) -> Self {
            Src {
                data,
                sr,
                sq,
                rows,
                k,
            }
        }
    }

    /// Lane mask of the first `n.min(16)` lanes.
    fn mask(n: usize) -> __mmask16 {
        if n >= 16 { 0xffff } else { (1u16 << n) - 1 }
    }

    /// The first `x.len().min(16)` values of `x` in a vector, zeros after.
    #[target_feature(enable = "avx512f")]
    fn load16(x: &[f32]) -> __m512 {
        // SAFETY: the mask enables only lanes below x.len(), which lie inside `x`.
        unsafe { _mm512_maskz_loadu_ps(mask(x.len()), x.as_ptr()) }
    }

    /// The 32 bf16 of `lo` (lanes 0..16) then `hi` as u32 pairs: lane t = (x[2t], x[2t+1]).
    #[target_feature(enable = "avx512f,avx512bf16")]
    fn bf16_pairs(lo: __m512, hi: __m512) -> [u32; 16] {
        // SAFETY: __m512bh and [u32; 16] have the same size and any bits are valid for both.
        unsafe { std::mem::transmute(_mm512_cvtne2ps_pbh(hi, lo)) }
    }

    /// `vpermw` indices interleaving two 16-lane bf16 halves: lane 2t ← t, lane 2t+1 ← 16 + t.
    const INTERLEAVE: [u16; 32] = {
        let mut idx = [0u16; 32];
        let mut t = 0;
        while t < 16 {
            (idx[2 * t], idx[2 * t + 1]) = (t as u16, 16 + t as u16);
            t += 1;
        }
        idx
    };

    /// Packs panel rows `r0..r0 + w` and k-pairs `p0..p0 + kcp` of `s` into `out[p * w + r]`,
    /// each u32 the bf16 pair (k = 2p in the low half, 2p + 1 in the high), zero past `s.rows`
    /// or `s.k`. Needs `r0 < s.rows`, `2·p0 < s.k` and every element of `s` inside `s.data`.
    #[target_feature(enable = "avx512f,avx512bw,avx512bf16")]
    pub(super) fn pack(s: Src<'_>, r0: usize, w: usize, p0: usize, kcp: usize, out: &mut [u32]) {
        let out = &mut out[..kcp * w];
        let (rows, q0) = ((s.rows - r0).min(w), 2 * p0);
        let qn = (s.k - q0).min(2 * kcp);
        if rows < w || qn < 2 * kcp {
            out.fill(0);
        }
        if s.sq == 1 {
            // Rows contiguous along k: 32 values → 16 pairs, scattered down the panel.
            for r in 0..rows {
                let start = (r0 + r) * s.sr + q0;
                for (c, x) in s.data[start..start + qn].chunks(32).enumerate() {
                    let pairs = bf16_pairs(load16(x), load16(x.get(16..).unwrap_or_default()));
                    for (t, &v) in pairs[..x.len().div_ceil(2)].iter().enumerate() {
                        out[(16 * c + t) * w + r] = v;
                    }
                }
            }
        } else if s.sr == 1 {
            // Each k contiguous across the panel: convert rows q and q + 1, interleave lanes.
            // SAFETY: [u16; 32] and __m512i have the same size; any bits are valid.
            let idx: __m512i = unsafe { std::mem::transmute(INTERLEAVE) };
            for p in 0..qn.div_ceil(2) {
                let q = q0 + 2 * p;
                for c in (0..rows).step_by(16) {
                    let len = (rows - c).min(16);
                    let lo = load16(&s.data[q * s.sq + r0 + c..][..len]);
                    let hi = match 2 * p + 1 < qn {
                        true => load16(&s.data[(q + 1) * s.sq + r0 + c..][..len]),
                        false => _mm512_setzero_ps(),
                    };
                    // SAFETY: [u32; 16] and __m512i have the same size; any bits are valid.
                    let ab: __m512i = unsafe { std::mem::transmute(bf16_pairs(lo, hi)) };
                    // SAFETY: as above.
                    let v: [u32; 16] =
                        unsafe { std::mem::transmute(_mm512_permutexvar_epi16(idx, ab)) };
                    out[p * w + c..][..len].copy_from_slice(&v[..len]);
                }
            }
        } else {
            for p in 0..qn.div_ceil(2) {
                for r in 0..rows {
                    let at = |q: usize| bf16_bits(s.data[(r0 + r) * s.sr + (q0 + q) * s.sq]);
                    let hi = if 2 * p + 1 < qn { at(2 * p + 1) } else { 0 };
                    out[p * w + r] = at(2 * p) | hi << 16;
                }
            }
        }
    }

    /// The C tile a microkernel call updates: rows `0..mr` (stride `rs`) × columns `0..nr` from
    /// `c`, read first (added to) when `load`.
    #[derive(Clone, Copy)]
    struct Tile {
        c: *mut f32,
        rs: usize,
        mr: usize,
        nr: usize,
        load: bool,
    }

    /// A microkernel: `tile (+)=` the sum over `kcp` k-pairs of the packed A panel (`a[p·MR + i]`)
    /// times the packed B panel (`b[p·NR + j]`).
    ///
    /// # Safety
    /// The CPU has the kernel's features; the tile's rows `0..mr` × columns `0..nr` are valid for
    /// reads and writes and touched by no other thread.
    type Kernel = unsafe fn(usize, &[u32], &[u32], Tile);

    /// A microkernel and its register-block shape.
    #[derive(Clone, Copy)]
    pub(super) struct Micro {
        mr: usize,
        nr: usize,
        kernel: Kernel,
    }

    /// Defines an MR × 16·NRV [`Kernel`] (row indices `$i`, vector indices `$v`) written out in
    /// full, so that the MR·NRV accumulators stay in zmm registers in every build profile.
    macro_rules! kernel {
        ($(#[$attr:meta])* $name:ident, [$($i:literal)+], $vs:tt) => {
            $(#[$attr])*
            pub(super) const $name: Micro = {
                const MR: usize = [$($i),+].len();
                const W: usize = 16 * kernel!(@len $vs);
                /// The microkernel of this shape; see [`Kernel`].
                #[target_feature(enable = "avx512f,avx512bw,avx512bf16")]
                unsafe fn kernel(kcp: usize, a: &[u32], b: &[u32], t: Tile) {
                    assert!(a.len() >= kcp * MR && b.len() >= kcp * W, "bf16 kernel: short panel");
                    let mut acc = [[_mm512_setzero_ps(); kernel!(@len $vs)]; MR];
                    let (mut ap, mut bp) = (a.as_ptr(), b.as_ptr());
                    for _ in 0..kcp {
                        // SAFETY: after p steps bp = b + p·W, and p < kcp, so lanes up to
                        // p·W + W − 1 < b.len() are read (asserted above); likewise for ap.
                        unsafe {
                            let bv = kernel!(@loadb bp, $vs);
                            $( kernel!(@row acc, ap, bv, $i, $vs); )+
                        }
                        (ap, bp) = (ap.wrapping_add(MR), bp.wrapping_add(W));
                    }
                    $( kernel!(@store acc, t, $i, $vs); )+
                }
                Micro { mr: MR, nr: W, kernel }
            };
        };
        (@len [$($v:literal)+]) => { [$($v),+].len() };
        (@loadb $bp:ident, [$($v:literal)+]) => {
            [$( std::mem::transmute::<__m512i, __m512bh>(
                _mm512_loadu_si512($bp.wrapping_add(16 * $v).cast())) ),+]
        };
        (@row $acc:ident, $ap:ident, $bv:ident, $i:literal, [$($v:literal)+]) => {
            let ai = std::mem::transmute::<__m512i, __m512bh>(
                _mm512_set1_epi32(*$ap.wrapping_add($i) as i32));
            $( $acc[$i][$v] = _mm512_dpbf16_ps($acc[$i][$v], $bv[$v], ai); )+
        };
        (@store $acc:ident, $t:ident, $i:literal, [$($v:literal)+]) => {
            $( if $i < $t.mr && 16 * $v < $t.nr {
                let k = mask($t.nr - 16 * $v);
                // SAFETY: row $i < mr and the unmasked columns 16v.. < nr lie in the tile the
                // caller vouches for; masked-off lanes are not accessed.
                unsafe {
                    let p = $t.c.add($i * $t.rs + 16 * $v);
                    let mut y = $acc[$i][$v];
                    if $t.load {
                        y = _mm512_add_ps(y, _mm512_maskz_loadu_ps(k, p));
                    }
                    _mm512_mask_storeu_ps(p, k, y);
                }
            } )+
        };
    }
    kernel!(
        /// 6 × 64 (24 accumulators, 4 B vectors, 1 broadcast: 29 of the 32 zmm registers, no
        /// spills): the fastest measured here (Zen 4), used when n pads to 64 no worse than to 48.
        K6X64, [0 1 2 3 4 5], [0 1 2 3]
    );
    kernel!(
        /// 8 × 48 (24 accumulators, 3 B vectors, 1 broadcast; no spills): within a few per cent
        /// of 6 × 64, used when n pads less to 48 (e.g. n = 40).
        K8X48, [0 1 2 3 4 5 6 7], [0 1 2]
    );
    kernel!(
        /// 14 × 32 (28 accumulators): LLVM hoists the 14 broadcasts and spills; kept to measure.
        #[cfg(test)] K14X32, [0 1 2 3 4 5 6 7 8 9 10 11 12 13], [0 1]
    );
    kernel!(
        /// 12 × 32 (24 accumulators, more broadcasts per B load); kept to measure.
        #[cfg(test)] K12X32, [0 1 2 3 4 5 6 7 8 9 10 11], [0 1]
    );

    /// `dst` as a pointer rayon tasks may share; each task writes a disjoint block of it.
    #[derive(Clone, Copy)]
    struct DstPtr(*mut f32);
    // SAFETY: tasks get disjoint row or column blocks of `dst` (see `run`), so no element is
    // written by two threads.
    unsafe impl Send for DstPtr {}
    // SAFETY: as for Send.
    unsafe impl Sync for DstPtr {}
    impl DstPtr {
        /// The pointer (a method, so closures capture the whole Send wrapper).
        fn get(self) -> *mut f32 {
            self.0
        }
    }

    /// `g` with the kernel `u`, on rayon when `par` is Auto and the product large (and rows of
    /// `dst` cannot overlap).
    ///
    /// # Safety
    /// The CPU has avx512f, avx512bw and avx512bf16; `g.m, g.n, g.k > 0` and all three views lie
    /// inside their slices (the asserts of `sgemm_bf16_on`).
    pub(super) unsafe fn gemm(u: Micro, g: Gemm<'_>, dst: &mut [f32], par: Par) {
        let par = par == Par::Auto && g.m * g.n * g.k >= PAR_GEMM_MIN && g.dst_rs >= g.n;
        let threads = if par { rayon::current_num_threads() } else { 1 };
        // SAFETY: forwarded from the caller; `dst` is a unique borrow covering the view.
        unsafe { run(u, g, DstPtr(dst.as_mut_ptr()), threads) }
    }

    /// `g` into `dst`. Each B block is packed once (by panels in parallel) and shared; with
    /// `threads > 1` tasks take MC-row blocks (each packing its A block) when m ≥ n, else groups
    /// of B panels against one shared packed A block.
    ///
    /// # Safety
    /// As for [`gemm`], and `dst` is valid for the m × n view with row stride `g.dst_rs`, used by
    /// no one else; `threads > 1` only if `g.dst_rs ≥ g.n` (rows do not overlap).
    #[target_feature(enable = "avx512f,avx512bw,avx512bf16")]
    unsafe fn run(u: Micro, g: Gemm<'_>, dst: DstPtr, threads: usize) {
        let (m, n, mr, nr, kp) = (g.m, g.n, u.mr, u.nr, g.k.div_ceil(2));
        let by_rows = threads > 1 && m >= n;
        let mc_max = (MC / mr).max(1) * mr;
        let mc = match by_rows {
            true => m.div_ceil(4 * threads).next_multiple_of(mr).min(mc_max),
            false => mc_max,
        };
        let nc = (NC / nr).max(1) * nr;
        let (lhs, rhs, k) = (g.lhs, g.rhs, g.k);
        let a_src = Src::new(lhs.data, lhs.rs, lhs.cs, m, k);
        let b_src = Src::new(rhs.data, rhs.cs, rhs.rs, n, k);
        let a_len = KC.min(kp) * mc.min(m).next_multiple_of(mr);
        let mut ap = vec![0u32; if by_rows { 0 } else { a_len }];
        let mut bp = vec![0u32; KC.min(kp) * nc.min(n).next_multiple_of(nr)];
        for jc in (0..n).step_by(nc) {
            let ncur = nc.min(n - jc);
            let panels = ncur.div_ceil(nr);
            for pc in (0..kp).step_by(KC) {
                let kcp = KC.min(kp - pc);
                let b_panels = &mut bp[..panels * kcp * nr];
                // Both packs (closures inherit the target features): rows jc + t·nr < n and
                // ic + i < m, and 2·pc < k, as `pack` needs.
                let pack_b = |(t, out)| pack(b_src, jc + t * nr, nr, pc, kcp, out);
                match threads > 1 {
                    true => b_panels
                        .par_chunks_mut(kcp * nr)
                        .enumerate()
                        .for_each(pack_b),
                    false => b_panels.chunks_mut(kcp * nr).enumerate().for_each(pack_b),
                }
                let pack_a = |ic: usize, ap: &mut [u32]| {
                    for (t, i) in (0..mc.min(m - ic)).step_by(mr).enumerate() {
                        pack(a_src, ic + i, mr, pc, kcp, &mut ap[t * kcp * mr..]);
                    }
                };
                // Rows ic.. (up to mc) against B panels `js`, with that A block packed in `ap`.
                let block = |ic: usize, ap: &[u32], js: std::ops::Range<usize>| {
                    let mcur = mc.min(m - ic);
                    for t in js {
                        for (ti, i) in (0..mcur).step_by(mr).enumerate() {
                            let c = (ic + i) * g.dst_rs + jc + t * nr;
                            let (rows, cols) = ((mcur - i).min(mr), (ncur - t * nr).min(nr));
                            let load = pc > 0 || g.acc;
                            let tile = Tile {
                                c: dst.get().wrapping_add(c),
                                rs: g.dst_rs,
                                mr: rows,
                                nr: cols,
                                load,
                            };
                            let (a, b) = (&ap[ti * kcp * mr..], &bp[t * kcp * nr..]);
                            // SAFETY: the tile's rows ic + i.. < m and columns jc + t·nr.. < n
                            // lie in the caller's view; tasks own disjoint rows or columns.
                            unsafe { (u.kernel)(kcp, a, b, tile) };
                        }
                    }
                };
                if by_rows {
                    let blocks = (0..m.div_ceil(mc)).into_par_iter();
                    blocks.for_each_init(
                        || vec![0u32; a_len],
                        |ap, b| {
                            pack_a(b * mc, ap);
                            block(b * mc, ap, 0..panels)
                        },
                    );
                } else {
                    for ic in (0..m).step_by(mc) {
                        pack_a(ic, &mut ap);
                        if threads == 1 {
                            block(ic, &ap, 0..panels);
                            continue;
                        }
                        let per = panels.div_ceil(4 * threads);
                        let groups = (0..panels.div_ceil(per)).into_par_iter();
                        groups.for_each(|t| block(ic, &ap, t * per..((t + 1) * per).min(panels)));
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Deterministic values in [-1, 1) with 24 significant bits, so the bf16 rounding matters.
    fn values(len: usize, seed: u64) -> Vec<f32> {
        let mut s = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
        let mut next = move || {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            s
        };
        (0..len)
            .map(|_| (next() >> 40) as f32 / (1u32 << 23) as f32 - 1.0)
            .collect()
    }

    /// A rows × cols operand: layout 0 row-major, 1 transposed (rs = 1), 2 neither stride 1.
    fn operand(rows: usize, cols: usize, layout: u8, seed: u64) -> (Vec<f32>, usize, usize) {
        let (rs, cs) = [(cols, 1), (1, rows), (2 * cols + 1, 2)][layout as usize];
        (values(max_index(rows, cols, rs, cs) + 1, seed), rs, cs)
    }

    /// The largest |got − exact| / bound over the m × n block of `got` (row stride `g.dst_rs`),
    /// `exact` being the f64 product of the bf16-rounded inputs (plus `c0` when accumulating).
    /// A product of two bf16 values is exact in f32 (8 + 8 significant bits ≤ 24), so the only
    /// error is the f32 summation of k + 1 terms, at most γ_k·Σ|terms| in any order, with
    /// γ_k = k·u / (1 − k·u) and u = 2^-24 (Higham, Accuracy and Stability, §4.2). Every k here
    /// has k·u < 1e-3, so bound = 1.01·(k + 1)·u·Σ|terms| (+1e-30 for an all-zero row) holds.
    fn error_ratio(g: Gemm<'_>, c0: &[f32], got: &[f32]) -> f64 {
        let (r, (lhs, rhs)) = (|x: f32| half::bf16::from_f32(x).to_f64(), (g.lhs, g.rhs));
        let mut worst = 0f64;
        for (i, j) in (0..g.m).flat_map(|i| (0..g.n).map(move |j| (i, j))) {
            let c = if g.acc {
                c0[i * g.dst_rs + j] as f64
            } else {
                0.0
            };
            let (mut exact, mut abs) = (c, c.abs());
            for p in 0..g.k {
                let t = r(lhs.data[i * lhs.rs + p * lhs.cs]) * r(rhs.data[p * rhs.rs + j * rhs.cs]);
                (exact, abs) = (exact + t, abs + t.abs());
            }
            let bound = 1.01 * (g.k + 1) as f64 * 2f64.powi(-24) * abs + 1e-30;
            worst = worst.max((got[i * g.dst_rs + j] as f64 - exact).abs() / bound);
        }
        worst
    }

    /// Runs `path` on an m × n × k case with operand layouts `lay`, multiplying only the first
    /// `k_used` terms, and returns `error_ratio` against all k; checks `dst`'s padding is kept.
    fn run(
        path: Bf16Path,
        (m, n, k): (usize, usize, usize),
        lay: (u8, u8),
        acc: bool,
        par: Par,
        k_used: usize,
    ) -> f64 {
        let (a, ars, acs) = operand(m, k, lay.0, 1 + m as u64);
        let (b, brs, bcs) = operand(k, n, lay.1, 2 + n as u64);
        let (lhs, rhs) = (
            Mat {
                data: &a,
                rs: ars,
                cs: acs,
            },
            Mat {
                data: &b,
                rs: brs,
                cs: bcs,
            },
        );
        let g = Gemm::new(m, n, k, lhs, rhs, n + 3, acc);
        let c0 = values(m * g.dst_rs, 3);
        let mut got = c0.clone();
        sgemm_bf16_on(path, Gemm { k: k_used, ..g }, &mut got, par);
        for i in 0..m {
            let pad = i * g.dst_rs + n..(i + 1) * g.dst_rs;
            assert_eq!(got[pad.clone()], c0[pad], "{path:?}: padding of row {i}");
        }
        error_ratio(g, &c0, &got)
    }

    /// The paths this CPU can run: portable always, AVX-512 BF16 where the CPU has it.
    fn paths() -> Vec<Bf16Path> {
        if cpu_has_avx512bf16() {
            return vec![Bf16Path::Portable, Bf16Path::Avx512Bf16];
        }
        eprintln!("note: this CPU lacks avx512bf16; only the portable path is checked");
        vec![Bf16Path::Portable]
    }

    #[test]
    fn both_paths_match_the_bf16_reference() {
        // Odd sizes, and ones crossing the KC (k = 301), MC (m = 700) and NC (n = 2100) blocks;
        // Par::Auto splits 130×70×301 and 700×40×20 by rows, 40×300×64 and 20×2100×6 by columns.
        // n = 300 and 2100 take the 6 × 64 kernel, the other n the 8 × 48 one.
        let shapes = [
            (1, 1, 1),
            (7, 13, 5),
            (33, 47, 65),
            (130, 70, 301),
            (40, 300, 64),
        ];
        let big = [(700, 40, 20), (20, 2100, 6)];
        for path in paths() {
            for (s, &mnk) in shapes.iter().chain(&big).enumerate() {
                for lay in [(0, 0), (1, 1), (0, 1), (1, 0), (2, 2)] {
                    if s >= shapes.len() && lay != (0, 1) {
                        continue;
                    }
                    for (acc, par) in [
                        (false, Par::Serial),
                        (true, Par::Serial),
                        (false, Par::Auto),
                        (true, Par::Auto),
                    ] {
                        let e = run(path, mnk, lay, acc, par, mnk.2);
                        assert!(
                            e <= 1.0,
                            "{path:?} {mnk:?} {lay:?} acc={acc}: error {e} × bound"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn bound_catches_wrong_results() {
        let mnk = (130, 70, 301);
        for path in paths() {
            let e = run(path, mnk, (0, 1), false, Par::Serial, mnk.2 - 1);
            assert!(
                e > 1.0,
                "{path:?}: dropping the last k stays within the bound ({e})"
            );
        }
        // Unrounded f32 products fail too: the bound is tight enough to see the bf16 rounding.
        let (a, b, mut got) = (
            values(130 * 301, 5),
            values(301 * 70, 6),
            vec![0f32; 130 * 70],
        );
        let (lhs, rhs) = (Mat::rows(&a, 301), Mat::rows(&b, 70));
        sgemm(130, 70, 301, lhs, rhs, &mut got, 70, false, Par::Serial);
        let e = error_ratio(Gemm::new(130, 70, 301, lhs, rhs, 70, false), &[], &got);
        assert!(e > 1.0, "f32 products stay within the bf16 bound ({e})");
    }

    #[test]
    fn k_zero_nan_empty_and_the_public_entry() {
        let one = [1.0f32; 8];
        let (lhs, rhs) = (Mat::rows(&one, 1), Mat::rows(&one, 3));
        for path in paths() {
            for acc in [false, true] {
                let mut d = [7.0f32; 8];
                let g = Gemm::new(2, 3, 0, lhs, rhs, 4, acc);
                sgemm_bf16_on(path, g, &mut d, Par::Auto);
                let want = if acc {
                    [7.0; 8]
                } else {
                    [0., 0., 0., 7., 0., 0., 0., 7.]
                };
                assert_eq!(d, want, "{path:?} acc={acc}");
            }
            sgemm_bf16_on(
                path,
                Gemm::new(0, 3, 1, lhs, rhs, 3, false),
                &mut [],
                Par::Auto,
            );
            let (mut a, b, mut d) = (values(3 * 5, 7), values(5 * 4, 8), vec![0f32; 12]);
            a[5] = f32::NAN; // row 1
            let (lhs, rhs) = (Mat::rows(&a, 5), Mat::rows(&b, 4));
            sgemm_bf16_on(
                path,
                Gemm::new(3, 4, 5, lhs, rhs, 4, false),
                &mut d,
                Par::Serial,
            );
            assert!(d[4..8].iter().all(|x| x.is_nan()), "{path:?}: {d:?}");
            assert!(
                d[..4].iter().chain(&d[8..]).all(|x| x.is_finite()),
                "{path:?}: {d:?}"
            );
        }
        let forced = std::env::var("SDSERVE_CPU_BF16").is_ok_and(|v| v == "portable");
        assert_eq!(bf16_native(), cpu_has_avx512bf16() && !forced);
        assert_eq!(bf16_native(), bf16_path() == Bf16Path::Avx512Bf16);
        let (a, b, mut d) = (values(9 * 17, 9), values(17 * 11, 10), vec![0f32; 9 * 11]);
        let (lhs, rhs) = (Mat::rows(&a, 17), Mat::rows(&b, 11));
        sgemm_bf16(9, 11, 17, lhs, rhs, &mut d, 11, false, Par::Auto);
        let e = error_ratio(Gemm::new(9, 11, 17, lhs, rhs, 11, false), &[], &d);
        assert!(
            e <= 1.0,
            "sgemm_bf16 on {:?}: error {e} × bound",
            bf16_path()
        );
    }

    #[test]
    fn rounding_is_nearest_even_and_matches_half() {
        let (one, f) = (1f32.to_bits(), f32::from_bits);
        assert_eq!(
            round_bf16(f(one | 0x8000)),
            1.0,
            "1 + 2^-8 is a tie: to even (down)"
        );
        assert_eq!(
            round_bf16(f(one | 0x1_8000)),
            f(one | 0x2_0000),
            "1 + 3·2^-8: to even (up)"
        );
        assert_eq!(
            round_bf16(f(one | 0x8001)),
            f(one | 0x1_0000),
            "above the tie: up"
        );
        assert_eq!(round_bf16(f(one | 0x7fff)), 1.0, "below the tie: down");
        let mut xs = vec![
            0.0,
            -0.0,
            f32::INFINITY,
            f32::NEG_INFINITY,
            f32::NAN,
            f32::MAX,
            -f32::MAX,
        ];
        xs.extend([
            f32::MIN_POSITIVE,
            1e-40,
            -3e-39,
            65504.0,
            f(0x3f80_8000),
            f(0xbf81_8000),
        ]);
        let mut s = 0x1234_5678u32;
        for _ in 0..4000 {
            s ^= s << 13;
            s ^= s >> 17;
            s ^= s << 5;
            // Every fourth value is an exact tie (low 16 bits 0x8000).
            xs.push(f(if s.is_multiple_of(4) {
                (s & !0xffff) | 0x8000
            } else {
                s
            }));
        }
        let want = |x: f32| half::bf16::from_f32(x).to_bits() as u32;
        for &x in &xs {
            assert_eq!(bf16_bits(x), want(x), "{x:e} ({:#x})", x.to_bits());
        }
        #[cfg(target_arch = "x86_64")]
        if cpu_has_avx512bf16() {
            // Both vector packers; the hardware flushes subnormal inputs to zero (DAZ).
            let n = xs.len();
            let (mut along_k, mut across) = (vec![0u32; n.div_ceil(2)], vec![0u32; n]);
            let row = avx512::Src::new(&xs, 0, 1, 1, n);
            let col = avx512::Src::new(&xs, 1, 0, n, 1);
            // SAFETY: the CPU has the features (checked above); the views lie in `xs`.
            unsafe {
                avx512::pack(row, 0, 1, 0, n.div_ceil(2), &mut along_k);
                avx512::pack(col, 0, n, 0, 1, &mut across);
            }
            for (i, &x) in xs.iter().enumerate() {
                let sub = x != 0.0 && x.abs() < f32::MIN_POSITIVE;
                for got in [(along_k[i / 2] >> (16 * (i % 2))) & 0xffff, across[i]] {
                    assert!(
                        got == want(x) || sub && got & 0x7fff == 0,
                        "{x:e}: {got:#x}"
                    );
                }
            }
        }
    }

    #[test]
    #[ignore = "timing: cargo test --release -p inference-server --lib bf16gemm -- --ignored --nocapture"]
    fn throughput() {
        // Best-of-3 seconds of `f` after one warm-up run.
        let best = |f: &mut dyn FnMut()| {
            f();
            let time = |_| {
                let t = std::time::Instant::now();
                f();
                t.elapsed().as_secs_f64()
            };
            (0..3).map(time).fold(f64::INFINITY, f64::min)
        };
        for (m, n, k) in [(4096, 1280, 1280), (4096, 4096, 40), (1280, 1024, 1280)] {
            let (a, b, mut c) = (values(m * k, 1), values(k * n, 2), vec![0f32; m * n]);
            let (lhs, rhs) = (Mat::rows(&a, k), Mat::rows(&b, n));
            let g = Gemm::new(m, n, k, lhs, rhs, n, false);
            let gf = |s: f64| format!("{:6.1}", 2.0 * (m * n * k) as f64 / s / 1e9);
            eprintln!("{m}x{n}x{k}, GFLOP/s (Auto = all rayon threads):");
            for par in [Par::Auto, Par::Serial] {
                let s = best(&mut || sgemm(m, n, k, lhs, rhs, &mut c, n, false, par));
                let p = best(&mut || sgemm_bf16_on(Bf16Path::Portable, g, &mut c, par));
                let par = if par == Par::Auto { "Auto  " } else { "Serial" };
                eprintln!("  {par} f32 sgemm {} | bf16 portable {}", gf(s), gf(p));
            }
            #[cfg(target_arch = "x86_64")]
            if cpu_has_avx512bf16() {
                use avx512::*;
                // The same product with rhs a transposed view (as the linear layers pass weights).
                let gt = Gemm::new(m, n, k, lhs, Mat::rows_t(&b, k), n, false);
                let kernels = [
                    ("6x64", K6X64),
                    ("8x48", K8X48),
                    ("14x32", K14X32),
                    ("12x32", K12X32),
                ];
                for (i, (name, u)) in kernels.into_iter().enumerate() {
                    // SAFETY: the CPU has the features (checked above); the views fit their slices.
                    let mut t = |g, par| best(&mut || unsafe { gemm(u, g, &mut c, par) });
                    eprint!("  bf16 avx512 {name}: Auto {}", gf(t(g, Par::Auto)));
                    if i < 2 {
                        eprint!(" | Serial {}", gf(t(g, Par::Serial)));
                        eprint!(" | Auto, rhs transposed {}", gf(t(gt, Par::Auto)));
                    }
                    eprintln!();
                }
            }
        }
    }
}
