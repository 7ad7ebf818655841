use super::{Gemm, PAR_GEMM_MIN, Par, bf16_bits};

/// Attention on these kernels, transposed so that nothing is packed per key step.
pub(super) mod attention;
/// Linear layers with the bias and the bf16 rounding in the kernel's epilogue.
pub(super) mod linear;
use crate::engine::cpu::gemm::Src;
use rayon::prelude::*;
use std::arch::x86_64::*;

/// k-pairs per block: a B micro-panel of KC pairs is 32 KiB (64 columns) or 24 KiB (48), the
/// size of L1, where it stays while the A micro-panels stream past it from L2.
const KC: usize = 128;
/// Rows per packed A block (rounded down to MR): MC·KC·4 B ≈ 340 KiB of the 1 MiB L2.
const MC: usize = 672;
/// Columns per packed B block (rounded down to NR): KC·NC·4 B = 1 MiB, in L2/L3.
const NC: usize = 2048;

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

/// Where a packed operand comes from: panel rows (rows of A, columns of B) by k.
#[derive(Clone, Copy)]
pub(super) enum Panels<'a> {
    /// An f32 view, rounded to bf16 as it is packed.
    F32(Src<'a>),
    /// bf16 values, row-major `[rows, k]` with k even (a stored weight): each pair is one u32
    /// of the source, copied without a round trip through f32.
    Bits {
        /// The values' bits.
        bits: &'a [u16],
        /// Panel rows in the matrix.
        rows: usize,
        /// Values per row (even).
        k: usize,
    },
    /// Already in the packed layout, whole panels of `w` rows over all `kp` pairs
    /// (`panels[(panel · kp + p) · w + r]`): packing a block is one contiguous copy.
    Packed {
        /// The panels, zero-padded to whole panels.
        panels: &'a [u32],
        /// Pairs per panel.
        kp: usize,
        /// Panel width: the kernel's rows (for A) or columns (for B).
        w: usize,
    },
}

impl<'a> Panels<'a> {
    /// Whether the operand is already packed, so the kernel reads its panels in place.
    fn in_place(self) -> bool {
        matches!(self, Panels::Packed { .. })
    }

    /// The packed panel holding rows `r0..` (a multiple of `w`) from pair `p0` on, read in
    /// place: a block of it is contiguous, so copying it out (what [`Panels::pack`] does) would
    /// only add a pass over the operand. Needs an operand that is [`Panels::in_place`].
    fn panel(self, r0: usize, w: usize, p0: usize) -> &'a [u32] {
        match self {
            Panels::Packed { panels, kp, w: pw } => {
                assert!(
                    pw == w && r0.is_multiple_of(w),
                    "bf16 gemm: panels packed {pw} wide"
                );
                &panels[((r0 / w) * kp + p0) * w..]
            }
            _ => unreachable!("only packed operands are read in place"),
        }
    }

    /// Packs panel rows `r0..r0 + w` and k-pairs `p0..p0 + kcp` into `out[p * w + r]` as
    /// [`pack`] does, zero past the matrix. Needs `r0` and `2·p0` inside it.
    #[target_feature(enable = "avx512f,avx512bw,avx512bf16")]
    fn pack(self, r0: usize, w: usize, p0: usize, kcp: usize, out: &mut [u32]) {
        let (bits, rows, k) = match self {
            Panels::F32(s) => return pack(s, r0, w, p0, kcp, out),
            Panels::Bits { bits, rows, k } => (bits, rows, k),
            Panels::Packed { panels, kp, w: pw } => {
                assert!(
                    pw == w && r0.is_multiple_of(w),
                    "bf16 gemm: panels packed {pw} wide, not {w}"
                );
                let start = ((r0 / w) * kp + p0) * w;
                out[..kcp * w].copy_from_slice(&panels[start..start + kcp * w]);
                return;
            }
        };
        let out = &mut out[..kcp * w];
        let (n, pn) = ((rows - r0).min(w), (k / 2 - p0).min(kcp));
        if n < w || pn < kcp {
            out.fill(0);
        }
        for r in 0..n {
            let row = &bits[(r0 + r) * k + 2 * p0..][..2 * pn];
            for (p, pair) in row.chunks_exact(2).enumerate() {
                out[p * w + r] = pair[0] as u32 | (pair[1] as u32) << 16;
            }
        }
    }
}

/// A product's sizes and output: `dst[m, n] (+)= a · b` over k, `dst` rows `dst_rs` apart,
/// added to when `acc`.
#[derive(Clone, Copy)]
pub(super) struct Dims {
    pub m: usize,
    pub n: usize,
    pub k: usize,
    pub dst_rs: usize,
    pub acc: bool,
}

/// The C tile a microkernel call updates: rows `0..mr` (stride `rs`) × columns `0..nr` from
/// `c`, read first (added to) when `load`. With `out16` non-null the tile is instead the
/// finished output (the call ran over all of k): `bias` (per column, from the tile's first,
/// when non-null) is added and the values are stored as bf16 at `out16` (same stride); `c` and
/// `load` are then unused.
#[derive(Clone, Copy)]
struct Tile {
    c: *mut f32,
    rs: usize,
    mr: usize,
    nr: usize,
    load: bool,
    out16: *mut u16,
    bias: *const f32,
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
            // caller vouches for (in `c`, or in `out16` and `bias`); masked-off lanes are not
            // accessed.
            unsafe {
                let mut y = $acc[$i][$v];
                if $t.out16.is_null() {
                    let p = $t.c.add($i * $t.rs + 16 * $v);
                    if $t.load {
                        y = _mm512_add_ps(y, _mm512_maskz_loadu_ps(k, p));
                    }
                    _mm512_mask_storeu_ps(p, k, y);
                } else {
                    if !$t.bias.is_null() {
                        y = _mm512_add_ps(y, _mm512_maskz_loadu_ps(k, $t.bias.add(16 * $v)));
                    }
                    // Round to nearest even, as every other f32 → bf16 conversion here.
                    let h: __m256i = std::mem::transmute(_mm512_cvtneps_pbh(y));
                    let p = $t.out16.add($i * $t.rs + 16 * $v);
                    _mm512_mask_storeu_epi16(p.cast(), k as __mmask32, _mm512_castsi256_si512(h));
                }
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

/// The kernel for a product n columns wide: 6 × 64 measured a little faster, but wastes more
/// of the last panel when n is small or not a multiple of 64 (attention's n = 40), so the
/// kernel that pads n less.
pub(super) fn micro_for(n: usize) -> Micro {
    match n.next_multiple_of(64) > n.next_multiple_of(48) {
        true => K8X48,
        false => K6X64,
    }
}

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
    let (lhs, rhs) = (g.lhs, g.rhs);
    let a = Panels::F32(Src::new(lhs.data, lhs.rs, lhs.cs, g.m, g.k));
    let b = Panels::F32(Src::new(rhs.data, rhs.cs, rhs.rs, g.n, g.k));
    let dims = Dims {
        m: g.m,
        n: g.n,
        k: g.k,
        dst_rs: g.dst_rs,
        acc: g.acc,
    };
    // SAFETY: forwarded from the caller.
    unsafe { gemm_panels(u, dims, a, b, dst, par) }
}

/// [`gemm`] with operands given as [`Panels`] (A's rows, B's columns by k).
///
/// # Safety
/// The CPU has avx512f, avx512bw and avx512bf16; m, n, k > 0; both operands hold their
/// m × k and n × k matrices, and `dst` the m × n view with row stride `dst_rs`.
pub(super) unsafe fn gemm_panels(
    u: Micro,
    g: Dims,
    a: Panels<'_>,
    b: Panels<'_>,
    dst: &mut [f32],
    par: Par,
) {
    let par = par == Par::Auto && g.m * g.n * g.k >= PAR_GEMM_MIN && g.dst_rs >= g.n;
    let threads = if par { rayon::current_num_threads() } else { 1 };
    // SAFETY: forwarded from the caller; `dst` is a unique borrow covering the view.
    unsafe { run(u, g, a, b, DstPtr(dst.as_mut_ptr()), threads) }
}

/// `g` into `dst`. Each B block is packed once (by panels in parallel) and shared; with
/// `threads > 1` tasks take MC-row blocks (each packing its A block) when m ≥ n, else groups
/// of B panels against one shared packed A block.
///
/// # Safety
/// As for [`gemm`], and `dst` is valid for the m × n view with row stride `g.dst_rs`, used by
/// no one else; `threads > 1` only if `g.dst_rs ≥ g.n` (rows do not overlap).
#[target_feature(enable = "avx512f,avx512bw,avx512bf16")]
unsafe fn run(
    u: Micro,
    g: Dims,
    a_src: Panels<'_>,
    b_src: Panels<'_>,
    dst: DstPtr,
    threads: usize,
) {
    let (m, n, mr, nr, kp) = (g.m, g.n, u.mr, u.nr, g.k.div_ceil(2));
    let by_rows = threads > 1 && m >= n;
    let mc_max = (MC / mr).max(1) * mr;
    let mc = match by_rows {
        true => m.div_ceil(4 * threads).next_multiple_of(mr).min(mc_max),
        false => mc_max,
    };
    let nc = (NC / nr).max(1) * nr;
    // Already packed operands are read in place and need no block buffer.
    let (a_in_place, b_in_place) = (a_src.in_place(), b_src.in_place());
    let a_len = match a_in_place {
        true => 0,
        false => KC.min(kp) * mc.min(m).next_multiple_of(mr),
    };
    let mut ap = vec![0u32; if by_rows { 0 } else { a_len }];
    let b_len = KC.min(kp) * nc.min(n).next_multiple_of(nr);
    let mut bp = vec![0u32; if b_in_place { 0 } else { b_len }];
    for jc in (0..n).step_by(nc) {
        let ncur = nc.min(n - jc);
        let panels = ncur.div_ceil(nr);
        for pc in (0..kp).step_by(KC) {
            let kcp = KC.min(kp - pc);
            // Both packs (closures inherit the target features): rows jc + t·nr < n and
            // ic + i < m, and 2·pc < k, as `pack` needs.
            if !b_in_place {
                let b_panels = &mut bp[..panels * kcp * nr];
                let pack_b = |(t, out)| b_src.pack(jc + t * nr, nr, pc, kcp, out);
                match threads > 1 {
                    true => b_panels
                        .par_chunks_mut(kcp * nr)
                        .enumerate()
                        .for_each(pack_b),
                    false => b_panels.chunks_mut(kcp * nr).enumerate().for_each(pack_b),
                }
            }
            let pack_a = |ic: usize, ap: &mut [u32]| {
                if a_in_place {
                    return;
                }
                for (t, i) in (0..mc.min(m - ic)).step_by(mr).enumerate() {
                    a_src.pack(ic + i, mr, pc, kcp, &mut ap[t * kcp * mr..]);
                }
            };
            let bp = &bp;
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
                            out16: std::ptr::null_mut(),
                            bias: std::ptr::null(),
                        };
                        let a = match a_in_place {
                            true => a_src.panel(ic + i, mr, pc),
                            false => &ap[ti * kcp * mr..],
                        };
                        let b = match b_in_place {
                            true => b_src.panel(jc + t * nr, nr, pc),
                            false => &bp[t * kcp * nr..],
                        };
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
