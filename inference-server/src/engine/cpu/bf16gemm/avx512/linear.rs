//! Linear layers of bf16 activations with the epilogue in the kernel: each C tile runs over all
//! of k in registers, then gets its bias and its rounding to bf16 and is stored once. Through
//! the general path the product went to an f32 matrix prefilled with the bias (read and
//! written again for every block of k) and was converted to bf16 in a further pass: on the
//! UNet's `[8192, 320] · [320, 2560]` that is 84 MB of f32 written three times and read twice
//! for 42 MB of result.
//!
//! Whole-k panels keep B's micro-panel in L2 rather than L1 (the kernel's 24 products per 4 B
//! loads leave L2 bandwidth to spare), so this path takes k up to [`K_MAX`]; longer rows go
//! the general way.

use super::{K6X64, Panels, Tile};
use rayon::prelude::*;

/// Most k this path takes: a B panel (k/2 × 64 pairs) and a task's A block stay within L2.
pub(in crate::engine::cpu::bf16gemm) const K_MAX: usize = 1280;
/// Bytes of one task's packed A block (its rows over all of k).
const A_BLOCK_BYTES: usize = 256 << 10;

/// The output as a pointer rayon tasks may share; each task writes its own rows.
#[derive(Clone, Copy)]
struct OutPtr(*mut u16);
// SAFETY: tasks write disjoint row blocks of the output (see `linear`).
unsafe impl Send for OutPtr {}
// SAFETY: as for Send.
unsafe impl Sync for OutPtr {}
impl OutPtr {
    /// The pointer (a method, so closures capture the whole Send wrapper).
    fn get(self) -> *mut u16 {
        self.0
    }
}

/// `out [m, n] = a · bᵀ + bias`, rounded to bf16 (bits), where `a` has m panel rows (the
/// input's rows) and `b` n (the weight's rows), both over k. B is packed whole once; tasks
/// (on rayon when `parallel`) take blocks of rows, pack them over all of k, and run every
/// 6 × 64 tile over all of k.
///
/// # Safety
/// The CPU has avx512f, avx512bw and avx512bf16; m, n, k > 0 and k ≤ [`K_MAX`]; both
/// operands hold their matrices; `out` holds m·n values and `bias`, if any, n.
#[target_feature(enable = "avx512f,avx512bw,avx512bf16")]
#[allow(clippy::too_many_arguments)]
pub(in crate::engine::cpu::bf16gemm) unsafe fn linear(
    (m, n, k): (usize, usize, usize),
    a: Panels<'_>,
    b: Panels<'_>,
    bias: Option<&[f32]>,
    out: &mut [u16],
    parallel: bool,
) {
    let u = K6X64;
    let (mr, nr, kp) = (u.mr, u.nr, k.div_ceil(2));
    assert!(
        out.len() >= m * n && bias.is_none_or(|b| b.len() >= n),
        "linear: short out or bias"
    );
    let panels = n.div_ceil(nr);
    let mut bp = vec![0u32; panels * kp * nr];
    // Panel t holds the weight's rows 64t.. over all pairs (rows 64t < n, pair 0 < k).
    let pack_b = |(t, chunk): (usize, &mut [u32])| b.pack(t * nr, nr, 0, kp, chunk);
    match parallel {
        true => bp.par_chunks_mut(kp * nr).enumerate().for_each(pack_b),
        false => bp.chunks_mut(kp * nr).enumerate().for_each(pack_b),
    }
    let rows = ((A_BLOCK_BYTES / (kp * 4 * mr)).max(1) * mr).min(m.next_multiple_of(mr));
    let dst = OutPtr(out.as_mut_ptr());
    let bp = &bp;
    let block = |ap: &mut Vec<u32>, ib: usize| {
        let i0 = ib * rows;
        let a_panels = rows.min(m - i0).div_ceil(mr);
        ap.resize(a_panels * kp * mr, 0);
        for ti in 0..a_panels {
            // Row i0 + ti·mr < m, pair 0 < k.
            a.pack(i0 + ti * mr, mr, 0, kp, &mut ap[ti * kp * mr..]);
        }
        // B panel outside (held in L2), the block's A panels inside.
        for t in 0..panels {
            let j = t * nr;
            for ti in 0..a_panels {
                let i = i0 + ti * mr;
                let tile = Tile {
                    c: std::ptr::null_mut(),
                    rs: n,
                    mr: (m - i).min(mr),
                    nr: (n - j).min(nr),
                    load: false,
                    out16: dst.get().wrapping_add(i * n + j),
                    bias: bias.map_or(std::ptr::null(), |b| b[j..].as_ptr()),
                };
                // SAFETY: rows i.. < m and columns j.. < n lie in `out` (asserted), in this
                // task's row block; the bias has columns j.. < n; both panels hold kp pairs.
                unsafe { (u.kernel)(kp, &ap[ti * kp * mr..], &bp[t * kp * nr..], tile) };
            }
        }
    };
    let blocks = m.div_ceil(rows);
    match parallel && blocks > 1 {
        true => (0..blocks).into_par_iter().for_each_init(Vec::new, block),
        false => {
            let mut ap = Vec::new();
            (0..blocks).for_each(|ib| block(&mut ap, ib));
        }
    }
}
