//! Linear layers of bf16 activations with the epilogue in the kernel: each C tile runs over all
//! of k in registers, then gets its bias and its rounding to bf16 and is stored once. Through
//! the general path the product went to an f32 matrix prefilled with the bias (read and
//! written again for every block of k) and was converted to bf16 in a further pass: on the
//! UNet's `[8192, 320] · [320, 2560]` that is 84 MB of f32 written three times and read twice
//! for 42 MB of result.
//!
//! With [`Epilogue::Geglu`] the gate is applied there too: B's panels are packed with 32 of
//! the projection's first half and the same 32 of its second (the gate) side by side, so one
//! tile holds both factors of 32 outputs, and only `a · gelu(gate)` is stored (half the
//! columns, no `[rows, 2h]` intermediate).
//!
//! Whole-k panels keep B's micro-panel in L2 rather than L1 (the kernel's 24 products per 4 B
//! loads leave L2 bandwidth to spare), so this path takes k up to [`K_MAX`]; longer rows go
//! the general way.

use super::{K6X64, Panels, Tile};
use crate::engine::cpu::fastmath;
use rayon::prelude::*;

/// What happens to a finished tile.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(in crate::engine::cpu::bf16gemm) enum Epilogue {
    /// `+ bias`, stored: the output has the weight's n rows as columns.
    Bias,
    /// `+ bias`, then `a · gelu(gate)` of the two halves (diffusers' GEGLU): n/2 columns out.
    Geglu,
}

/// Most k this path takes: a B panel (k/2 × 64 pairs, 640 KiB at 5120) and a task's A block
/// stay within a 1 MiB L2. SD's longest rows are the feed-forward outputs' (k = 5120 and
/// 2560); taking them here rather than the general way measured 0.128 → 0.102 s and
/// 0.107 → 0.083 s per UNet forward (batch 2, 2 cores, two alternating runs each).
pub(in crate::engine::cpu::bf16gemm) const K_MAX: usize = 5120;
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

/// `out = a · bᵀ + bias` (n columns), or its GEGLU (n/2 columns), rounded to bf16 (bits),
/// where `a` has m panel rows (the input's rows) and `b` n (the weight's rows), both over k.
/// B is packed whole once; tasks (on rayon when `parallel`) take blocks of rows, pack them
/// over all of k, and run every 6 × 64 tile over all of k.
///
/// # Safety
/// The CPU has avx512f, avx512bw and avx512bf16; m, n, k > 0 and k ≤ [`K_MAX`]; both
/// operands hold their matrices.
#[target_feature(enable = "avx512f,avx512bw,avx512bf16")]
#[allow(clippy::too_many_arguments)]
pub(in crate::engine::cpu::bf16gemm) unsafe fn linear(
    (m, n, k): (usize, usize, usize),
    a: Panels<'_>,
    b: Panels<'_>,
    bias: Option<&[f32]>,
    epilogue: Epilogue,
    out: &mut [u16],
    parallel: bool,
) {
    let u = K6X64;
    let (mr, nr, kp) = (u.mr, u.nr, k.div_ceil(2));
    let geglu = epilogue == Epilogue::Geglu;
    // Output columns, and how many of them a 64-wide panel yields.
    let (n_out, per_panel) = if geglu { (n / 2, nr / 2) } else { (n, nr) };
    assert!(
        !geglu || n.is_multiple_of(2),
        "linear: GEGLU needs an even n"
    );
    let short = out.len() < m * n_out || bias.is_some_and(|b| b.len() < n);
    assert!(!short, "linear: short out or bias");
    let panels = n_out.div_ceil(per_panel);
    let mut bp = vec![0u32; panels * kp * nr];
    // Panel t holds the weight's rows 64t.. over all pairs; for GEGLU rows 32t.. and
    // n/2 + 32t.., 32 columns each, side by side (first rows < n, pair 0 < k, as `pack` needs).
    let pack_b = |(t, chunk): (usize, &mut [u32])| {
        if !geglu {
            return b.pack(t * nr, nr, 0, kp, chunk);
        }
        let mut half = vec![0u32; kp * per_panel];
        for (side, r0) in [(0, t * per_panel), (1, n_out + t * per_panel)] {
            b.pack(r0, per_panel, 0, kp, &mut half);
            for (p, row) in half.chunks_exact(per_panel).enumerate() {
                chunk[p * nr + side * per_panel..][..per_panel].copy_from_slice(row);
            }
        }
    };
    match parallel {
        true => bp.par_chunks_mut(kp * nr).enumerate().for_each(pack_b),
        false => bp.chunks_mut(kp * nr).enumerate().for_each(pack_b),
    }
    let rows = ((A_BLOCK_BYTES / (kp * 4 * mr)).max(1) * mr).min(m.next_multiple_of(mr));
    let dst = OutPtr(out.as_mut_ptr());
    let bp = &bp;
    let block = |ap: &mut Vec<u32>, ib: usize| {
        // The f32 tile a GEGLU epilogue reads: this task's own, in L1.
        let mut ct = [0f32; 6 * 64];
        let i0 = ib * rows;
        let a_panels = rows.min(m - i0).div_ceil(mr);
        ap.resize(a_panels * kp * mr, 0);
        for ti in 0..a_panels {
            // Row i0 + ti·mr < m, pair 0 < k.
            a.pack(i0 + ti * mr, mr, 0, kp, &mut ap[ti * kp * mr..]);
        }
        // B panel outside (held in L2), the block's A panels inside.
        for t in 0..panels {
            let j = t * per_panel;
            let cols = (n_out - j).min(per_panel);
            for ti in 0..a_panels {
                let i = i0 + ti * mr;
                let tile_rows = (m - i).min(mr);
                let (a_panel, b_panel) = (&ap[ti * kp * mr..], &bp[t * kp * nr..]);
                if !geglu {
                    let tile = Tile {
                        c: std::ptr::null_mut(),
                        rs: n,
                        mr: tile_rows,
                        nr: cols,
                        load: false,
                        out16: dst.get().wrapping_add(i * n + j),
                        bias: bias.map_or(std::ptr::null(), |b| b[j..].as_ptr()),
                    };
                    // SAFETY: rows i.. < m and columns j.. < n lie in `out` (asserted), in
                    // this task's row block; the bias has columns j.. < n; both panels hold
                    // kp pairs.
                    unsafe { (u.kernel)(kp, a_panel, b_panel, tile) };
                    continue;
                }
                let tile = Tile {
                    c: ct.as_mut_ptr(),
                    rs: nr,
                    mr: tile_rows,
                    nr,
                    load: false,
                    out16: std::ptr::null_mut(),
                    bias: std::ptr::null(),
                };
                // SAFETY: the tile is `ct` (6 × 64, this task's); both panels hold kp pairs.
                unsafe { (u.kernel)(kp, a_panel, b_panel, tile) };
                // The tile's a and gate halves side by side, bias added, then one gate pass and
                // one rounding over the whole tile (calls per row cost more than the maths).
                let (mut xa, mut ga) = ([0f32; 6 * 32], [0f32; 6 * 32]);
                for r in 0..tile_rows {
                    let (x, g) = ct[r * nr..][..nr].split_at(per_panel);
                    let (xr, gr) = (&mut xa[r * cols..][..cols], &mut ga[r * cols..][..cols]);
                    xr.copy_from_slice(&x[..cols]);
                    gr.copy_from_slice(&g[..cols]);
                    if let Some(b) = bias {
                        xr.iter_mut().zip(&b[j..]).for_each(|(v, b)| *v += b);
                        gr.iter_mut()
                            .zip(&b[n_out + j..])
                            .for_each(|(v, b)| *v += b);
                    }
                }
                let len = tile_rows * cols;
                let mut y = [0f32; 6 * 32];
                fastmath::geglu(&mut y[..len], &xa[..len], &ga[..len]);
                let mut h = [half::bf16::ZERO; 6 * 32];
                fastmath::to_bf16(&mut h[..len], &y[..len]);
                for (r, row) in h[..len].chunks_exact(cols).enumerate() {
                    // SAFETY: row i + r < m and columns j..j + cols ≤ n_out lie in `out`
                    // (asserted), in this task's row block.
                    let o = unsafe {
                        std::slice::from_raw_parts_mut(dst.get().add((i + r) * n_out + j), cols)
                    };
                    o.copy_from_slice(bytemuck::cast_slice(row));
                }
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
