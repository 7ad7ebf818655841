use super::pack::{Src, mask, pack};
use super::{Gemm, PAR_GEMM_MIN, Par};
use rayon::prelude::*;
use std::arch::x86_64::*;

/// Elements of a B block below which one thread packs it.
const PAR_PACK_MIN: usize = 1 << 16;
/// Most k per block (see [`Cfg::kc`]): k is split into equal blocks of at most this.
const KC_MAX: usize = 768;
/// Rows per A block (see [`Cfg::mc`]).
const MC: usize = 96;
/// Columns per packed B block (see [`Cfg::nc`]).
const NC: usize = 2048;

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

/// The A operand of a microkernel call: packed (`data[p·MR + i]`) or read in place from a
/// matrix whose rows are contiguous along k (`data[i·rs + p]`).
#[derive(Clone, Copy)]
struct APanel<'a> {
    data: &'a [f32],
    rs: usize,
    packed: bool,
}

/// A microkernel: `tile (+)=` the sum over `kc` steps of A (see [`APanel`]) times the packed B
/// panel (`b[p·NR + j]`). All MR rows of A are read (and must exist); only the tile's are stored.
///
/// # Safety
/// The CPU has avx512f; the tile's rows `0..mr` × columns `0..nr` are valid for reads and
/// writes and touched by no other thread.
type Kernel = unsafe fn(usize, APanel<'_>, &[f32], Tile);

/// A microkernel and its register-block shape.
#[derive(Clone, Copy)]
pub(super) struct Micro {
    mr: usize,
    nr: usize,
    kernel: Kernel,
    /// Kernels of 1..MR rows (same NR) for a last partial row panel, or none (then the full
    /// kernel runs on a zero-padded packed panel).
    edges: &'static [Micro],
}

/// Defines an MR × 16·NRV [`Kernel`] (row indices `$i`, vector indices `$v`) written out in
/// full, so that the MR·NRV accumulators stay in zmm registers in every build profile.
macro_rules! kernel {
    ($(#[$attr:meta])* $name:ident, $is:tt, $vs:tt) => {
        $(#[$attr])*
        pub(super) const $name: Micro = {
            const MR: usize = kernel!(@len $is);
            const W: usize = 16 * kernel!(@len $vs);
            /// The microkernel of this shape; see [`Kernel`].
            #[target_feature(enable = "avx512f")]
            unsafe fn kernel(kc: usize, a: APanel<'_>, b: &[f32], t: Tile) {
                let (ars, acs) = if a.packed { (1, MR) } else { (a.rs, 1) };
                let a_last = (MR - 1) * ars + (kc - 1) * acs;
                assert!(a.data.len() > a_last && b.len() >= kc * W, "f32 kernel: short panel");
                let mut acc = [[_mm512_setzero_ps(); kernel!(@len $vs)]; MR];
                let (mut ap, mut bp) = (a.data.as_ptr(), b.as_ptr());
                // Two copies of the loop, so the packed one has constant strides.
                if a.packed {
                    for _ in 0..kc {
                        // SAFETY: after p < kc steps ap = a + p·MR and bp = b + p·W, so the
                        // reads end at a_last and kc·W − 1, inside the panels (asserted above).
                        unsafe { kernel!(@step acc, ap, bp, 1, $is, $vs); }
                        (ap, bp) = (ap.wrapping_add(MR), bp.wrapping_add(W));
                    }
                } else {
                    for _ in 0..kc {
                        // SAFETY: after p < kc steps ap = a + p, bp = b + p·W: A reads
                        // i·rs + p ≤ a_last, B as above.
                        unsafe { kernel!(@step acc, ap, bp, ars, $is, $vs); }
                        (ap, bp) = (ap.wrapping_add(1), bp.wrapping_add(W));
                    }
                }
                kernel!(@store acc, t, $is, $vs);
            }
            Micro { mr: MR, nr: W, kernel, edges: &[] }
        };
    };
    (@len [$($x:literal)+]) => { [$($x),+].len() };
    (@step $acc:ident, $ap:ident, $bp:ident, $rs:expr, [$($i:literal)+], $vs:tt) => {
        let bv = kernel!(@loadb $bp, $vs);
        $( kernel!(@row $acc, $ap, bv, $i, $rs, $vs); )+
    };
    (@loadb $bp:ident, [$($v:literal)+]) => {
        [$( _mm512_loadu_ps($bp.wrapping_add(16 * $v)) ),+]
    };
    (@row $acc:ident, $ap:ident, $bv:ident, $i:literal, $rs:expr, [$($v:literal)+]) => {
        let ai = _mm512_set1_ps(*$ap.wrapping_add($i * $rs));
        $( $acc[$i][$v] = _mm512_fmadd_ps(ai, $bv[$v], $acc[$i][$v]); )+
    };
    (@store $acc:ident, $t:ident, [$($i:literal)+], $vs:tt) => {
        $( kernel!(@store_row $acc, $t, $i, $vs); )+
    };
    (@store_row $acc:ident, $t:ident, $i:literal, [$($v:literal)+]) => {
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
    /// 6 × 64 without edge kernels.
    K6X64_ALONE, [0 1 2 3 4 5], [0 1 2 3]
);
/// 6 × 64 (24 accumulators, 4 B vectors, 1 broadcast: 29 of the 32 zmm registers, no spills),
/// with 1..5 × 64 kernels for a last partial panel.
pub(super) const K6X64: Micro = Micro {
    edges: &[K1X64, K2X64, K3X64, K4X64, K5X64],
    ..K6X64_ALONE
};
kernel!(K1X64, [0], [0 1 2 3]);
kernel!(K2X64, [0 1], [0 1 2 3]);
kernel!(K3X64, [0 1 2], [0 1 2 3]);
kernel!(K4X64, [0 1 2 3], [0 1 2 3]);
kernel!(K5X64, [0 1 2 3 4], [0 1 2 3]);
kernel!(
    /// 8 × 48 without edge kernels.
    K8X48_ALONE, [0 1 2 3 4 5 6 7], [0 1 2]
);
/// 8 × 48 (24 accumulators, 3 B vectors, 1 broadcast), for n that pads less to 48, with
/// 1..7 × 48 kernels for a last partial panel.
pub(super) const K8X48: Micro = Micro {
    edges: &[K1X48, K2X48, K3X48, K4X48, K5X48, K6X48, K7X48],
    ..K8X48_ALONE
};
kernel!(K1X48, [0], [0 1 2]);
kernel!(K2X48, [0 1], [0 1 2]);
kernel!(K3X48, [0 1 2], [0 1 2]);
kernel!(K4X48, [0 1 2 3], [0 1 2]);
kernel!(K5X48, [0 1 2 3 4], [0 1 2]);
kernel!(K6X48, [0 1 2 3 4 5], [0 1 2]);
kernel!(K7X48, [0 1 2 3 4 5 6], [0 1 2]);
kernel!(
    /// 12 × 32 (24 accumulators, 2 B vectors, more broadcasts per B load); kept to measure.
    #[cfg(test)] K12X32, [0 1 2 3 4 5 6 7 8 9 10 11], [0 1]
);
kernel!(
    /// 14 × 32 (28 accumulators); kept to measure.
    #[cfg(test)] K14X32, [0 1 2 3 4 5 6 7 8 9 10 11 12 13], [0 1]
);

/// How [`gemm`] blocks a product.
#[derive(Clone, Copy)]
pub(super) struct Cfg {
    /// The microkernel.
    pub micro: Micro,
    /// k per block: the C tiles are read and written once per KC steps.
    pub kc: usize,
    /// Rows per A block (rounded down to MR): the rows a thread takes at a time when the rows
    /// are split, and the rows packed at a time when A is packed.
    pub mc: usize,
    /// Columns per packed B block (rounded down to NR): KC × NC, shared by the threads.
    pub nc: usize,
    /// Pack A even where its rows are contiguous along k (else read in place).
    pub pack_a: bool,
    /// Loop over A panels outside B panels (A panel in L1, B panels streaming from L2 or L3,
    /// C tiles written along rows) instead of B panel outside (B panel held, A panels streaming).
    pub a_outer: bool,
}

/// The blocking for a product with `n` columns and depth `k`: the 6 × 64 kernel unless n pads
/// less to 48 (e.g. attention's n = 40); k in equal blocks of at most [`KC_MAX`]; the A-outer
/// order (measured on Zen 4: as fast or faster on every SD shape, +15% on attention's QKᵀ with
/// k = 40, where C traffic dominates and its writes then run along rows).
pub(super) fn choose(n: usize, k: usize) -> Cfg {
    let micro = match n.next_multiple_of(64) > n.next_multiple_of(48) {
        true => K8X48,
        false => K6X64,
    };
    Cfg {
        micro,
        kc: k.div_ceil(k.div_ceil(KC_MAX).max(1)).max(1),
        mc: MC,
        nc: NC,
        pack_a: false,
        a_outer: true,
    }
}

/// Whether `cfg`'s kernel pads `n` columns by at most an eighth. More padding (n = 40, 80,
/// 160: attention's PV products) leaves the `gemm` crate, whose AVX2 panels are 8 lanes wide,
/// measurably faster (on Zen 4 a zmm FMA costs two ymm ones).
pub(super) fn pads_little(cfg: Cfg, n: usize) -> bool {
    n.next_multiple_of(cfg.micro.nr) * 8 <= n * 9
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

/// `g` with the blocking `cfg`, on rayon when `par` is Auto and the product large (and rows of
/// `dst` cannot overlap).
///
/// # Safety
/// The CPU has avx512f; `g.m, g.n, g.k > 0` and all three views lie inside their slices (what
/// `has_work` asserts).
pub(super) unsafe fn gemm(cfg: Cfg, g: Gemm<'_>, dst: &mut [f32], par: Par) {
    let par = par == Par::Auto && g.m * g.n * g.k >= PAR_GEMM_MIN && g.dst_rs >= g.n;
    let threads = if par { rayon::current_num_threads() } else { 1 };
    // SAFETY: forwarded from the caller; `dst` is a unique borrow covering the view.
    unsafe { run(cfg, g, DstPtr(dst.as_mut_ptr()), threads, None) }
}

/// `g` on one thread with B already in the 6 × 64 kernel's panel layout (`b[(j / 64)·k·64 +
/// p·64 + j % 64]`, whole k per panel; `g.rhs` is not read): for callers that write B's values
/// straight into panels instead of a matrix the GEMM would copy again.
///
/// # Safety
/// As for [`gemm`] (for lhs and dst), and `b` holds `⌈n / 64⌉·k·64` values.
pub(super) unsafe fn gemm_packed_b(g: Gemm<'_>, b: &[f32], dst: &mut [f32]) {
    let cfg = Cfg {
        micro: K6X64,
        ..choose(g.n, g.k)
    };
    assert!(b.len() >= g.n.div_ceil(64) * g.k * 64, "packed B too short");
    // SAFETY: forwarded from the caller; B's length is checked above.
    unsafe { run(cfg, g, DstPtr(dst.as_mut_ptr()), 1, Some(b)) }
}

/// `g` into `dst`. Each B block is packed once (by panels in parallel) and shared (or, with
/// `b_packed`, read from the caller's panels, whole k per panel); with
/// `threads > 1` tasks take MC-row blocks when m ≥ n, else groups of B panels against one A
/// block. A is read in place when its rows are contiguous along k (only a last partial panel
/// is packed), else each task packs its A block.
///
/// # Safety
/// As for [`gemm`], and `dst` is valid for the m × n view with row stride `g.dst_rs`, used by
/// no one else; `threads > 1` only if `g.dst_rs ≥ g.n` (rows do not overlap).
#[target_feature(enable = "avx512f")]
unsafe fn run(cfg: Cfg, g: Gemm<'_>, dst: DstPtr, threads: usize, b_packed: Option<&[f32]>) {
    let (m, n, k, u) = (g.m, g.n, g.k, cfg.micro);
    let (mr, nr) = (u.mr, u.nr);
    let by_rows = threads > 1 && m >= n;
    let (lhs, rhs) = (g.lhs, g.rhs);
    let in_place = !cfg.pack_a && lhs.cs == 1;
    // Split by rows, about 8 blocks a thread balance the load; only a packed A block (in
    // L2) needs the MC bound.
    let mc_max = (cfg.mc / mr).max(1) * mr;
    let mc = match (by_rows, in_place) {
        (true, true) => m.div_ceil(8 * threads).next_multiple_of(mr),
        (true, false) => m.div_ceil(8 * threads).next_multiple_of(mr).min(mc_max),
        // Split by columns, A read in place needs no row blocks.
        (false, true) if threads > 1 => m,
        (false, _) => mc_max,
    };
    let (nc, kc_max) = ((cfg.nc / nr).max(1) * nr, cfg.kc.min(k));
    let (a_src, b_src) = (
        Src::new(lhs.data, lhs.rs, lhs.cs, m, k),
        Src::new(rhs.data, rhs.cs, rhs.rs, n, k),
    );
    // Read in place, only a last partial panel is packed, at the start of the buffer.
    let a_rows = if in_place {
        mr
    } else {
        mc.min(m).next_multiple_of(mr)
    };
    let a_len = kc_max * a_rows;
    let a_at = |ti: usize, kc: usize| if in_place { 0 } else { ti * kc * mr };
    // The kernel for a panel of rows (of `rows` left): an edge kernel for a last partial one.
    let pick = |rows: usize| match rows < mr && !u.edges.is_empty() {
        true => u.edges[rows - 1],
        false => u,
    };
    let mut ap = vec![0f32; if by_rows { 0 } else { a_len }];
    let b_len = kc_max * nc.min(n).next_multiple_of(nr);
    let mut bp = vec![0f32; if b_packed.is_some() { 0 } else { b_len }];
    for jc in (0..n).step_by(nc) {
        let ncur = nc.min(n - jc);
        let panels = ncur.div_ceil(nr);
        for pc in (0..k).step_by(cfg.kc) {
            let kc = cfg.kc.min(k - pc);
            if b_packed.is_none() {
                let b_panels = &mut bp[..panels * kc * nr];
                // Panel rows jc + t·nr < n and pc + kc ≤ k, as `pack` needs.
                let pack_b = |(t, out)| pack(b_src, jc + t * nr, nr, pc, kc, out);
                match threads > 1 && panels * kc * nr >= PAR_PACK_MIN {
                    true => b_panels
                        .par_chunks_mut(kc * nr)
                        .enumerate()
                        .for_each(pack_b),
                    false => b_panels.chunks_mut(kc * nr).enumerate().for_each(pack_b),
                }
            }
            // Panel t of this block: packed here (kc rows), or the caller's (k rows, from pc).
            let b_at = |t: usize| match b_packed {
                Some(b) => &b[((jc / nr + t) * k + pc) * nr..],
                None => &bp[t * kc * nr..],
            };
            // Packs the A panels of rows ic.. that are not read in place (rows ic + i < m), each
            // as wide as the kernel that takes it.
            let pack_a = |ic: usize, ap: &mut [f32]| {
                let mcur = mc.min(m - ic);
                for (t, i) in (0..mcur).step_by(mr).enumerate() {
                    let w = pick(mcur - i).mr;
                    if !in_place || w > mcur - i {
                        pack(a_src, ic + i, w, pc, kc, &mut ap[a_at(t, kc)..]);
                    }
                }
            };
            // Rows ic.. (up to mc) against B panels `js`, with that A block packed in `ap`.
            let block = |ic: usize, ap: &[f32], js: std::ops::Range<usize>| {
                let mcur = mc.min(m - ic);
                let tile = |ti: usize, t: usize| {
                    let (i, j) = (ti * mr, t * nr);
                    let (rows, cols) = ((mcur - i).min(mr), (ncur - j).min(nr));
                    let e = pick(mcur - i);
                    let a = match in_place && e.mr <= rows {
                        true => APanel {
                            data: &lhs.data[(ic + i) * lhs.rs + pc..],
                            rs: lhs.rs,
                            packed: false,
                        },
                        false => APanel {
                            data: &ap[a_at(ti, kc)..],
                            rs: 0,
                            packed: true,
                        },
                    };
                    let tile = Tile {
                        c: dst.get().wrapping_add((ic + i) * g.dst_rs + jc + j),
                        rs: g.dst_rs,
                        mr: rows,
                        nr: cols,
                        load: pc > 0 || g.acc,
                    };
                    // SAFETY: the tile's rows ic + i.. < m and columns jc + j.. < n lie in
                    // the caller's view; tasks own disjoint rows or columns. In place, rows
                    // ic + i + e.mr − 1 < m and k pc + kc − 1 < k lie inside lhs.data.
                    unsafe { (e.kernel)(kc, a, b_at(t), tile) };
                };
                let a_panels = mcur.div_ceil(mr);
                match cfg.a_outer {
                    true => (0..a_panels).for_each(|ti| js.clone().for_each(|t| tile(ti, t))),
                    false => js.for_each(|t| (0..a_panels).for_each(|ti| tile(ti, t))),
                }
            };
            if by_rows {
                let blocks = (0..m.div_ceil(mc)).into_par_iter();
                blocks.for_each_init(
                    || vec![0f32; a_len],
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
                    let per = panels.div_ceil(8 * threads);
                    let groups = (0..panels.div_ceil(per)).into_par_iter();
                    groups.for_each(|t| block(ic, &ap, t * per..((t + 1) * per).min(panels)));
                }
            }
        }
    }
}
