//! The portable f32 GEMM: plain Rust with no intrinsics, written so the compiler vectorises it for
//! the baseline target (SSE2 on x86-64, NEON on aarch64). It is what `SDSERVE_CPU_ISA=portable`
//! runs (so the tests can check the path a CPU without AVX2 takes on any machine) and the native
//! path on such CPUs.
//!
//! Goto-style blocking like the AVX-512 path, kept small: B is packed once per `KC × NC` block
//! into `NR`-wide panels shared by all threads, each thread packs its `MR` rows of A per block,
//! and an `MR × NR` block of C is accumulated in registers across the block's `k`.

use rayon::prelude::*;

use super::super::gemm::{Gemm, Par};
use super::PAR_GEMM_MIN;

/// Rows of C per register block.
const MR: usize = 4;
/// Columns of C per register block: `MR × NR / 4` = 8 SSE accumulators, leaving registers for
/// the operands (16 on x86-64).
const NR: usize = 8;
/// Depth of one packed block: `KC × NR` floats of B (8 KiB) stay in L1 while a panel is used.
const KC: usize = 256;
/// Columns of one packed B block (`KC × NC` floats = 1 MiB, an L2's share).
const NC: usize = 1024;
/// Rows of C one rayon task takes.
const ROWS_PER_TASK: usize = 4 * MR;

/// `dst (+)= lhs · rhs` for `g` (views already checked by `has_work`, `m, n, k > 0`).
pub(super) fn gemm(g: Gemm<'_>, dst: &mut [f32], par: Par) {
    let parallel = matches!(par, Par::Auto) && g.m * g.n * g.k >= PAR_GEMM_MIN;
    let mut panels = Vec::new();
    for jc in (0..g.n).step_by(NC) {
        let nc = NC.min(g.n - jc);
        for pc in (0..g.k).step_by(KC) {
            let kc = KC.min(g.k - pc);
            pack_b(&g, pc, kc, jc, nc, &mut panels);
            // The first depth block overwrites C unless the product accumulates.
            let add = g.acc || pc > 0;
            let block = Block {
                g: &g,
                panels: &panels,
                pc,
                kc,
                jc,
                nc,
                add,
            };
            let rows = ROWS_PER_TASK * g.dst_rs;
            if parallel {
                dst.par_chunks_mut(rows)
                    .enumerate()
                    .for_each(|(t, c)| block.rows(t * ROWS_PER_TASK, c));
            } else {
                dst.chunks_mut(rows)
                    .enumerate()
                    .for_each(|(t, c)| block.rows(t * ROWS_PER_TASK, c));
            }
        }
    }
}

/// Packs `rhs[pc .. pc+kc, jc .. jc+nc]` as panels of `NR` columns, each `kc` rows of `NR`
/// floats, the last panel padded with zeros.
fn pack_b(g: &Gemm<'_>, pc: usize, kc: usize, jc: usize, nc: usize, out: &mut Vec<f32>) {
    let panels = nc.div_ceil(NR);
    out.clear();
    out.resize(panels * kc * NR, 0.0);
    let b = g.rhs;
    for (jp, panel) in out.chunks_exact_mut(kc * NR).enumerate() {
        let j0 = jc + jp * NR;
        let cols = NR.min(jc + nc - j0);
        for (p, row) in panel.chunks_exact_mut(NR).enumerate() {
            let base = (pc + p) * b.rs + j0 * b.cs;
            for (j, v) in row[..cols].iter_mut().enumerate() {
                *v = b.data[base + j * b.cs];
            }
        }
    }
}

/// One `KC × NC` block of the product, shared by the threads.
struct Block<'a, 'g> {
    g: &'a Gemm<'g>,
    panels: &'a [f32],
    pc: usize,
    kc: usize,
    jc: usize,
    nc: usize,
    add: bool,
}

impl Block<'_, '_> {
    /// The block's contribution to rows `r0 ..` of C, whose storage starts at `c` (up to
    /// `ROWS_PER_TASK` rows of `dst_rs`; the last chunk of `dst` may be shorter).
    fn rows(&self, r0: usize, c: &mut [f32]) {
        let g = self.g;
        if r0 >= g.m {
            return;
        }
        let rows = ROWS_PER_TASK.min(g.m - r0);
        let mut a_pack = [0f32; KC * MR];
        for i0 in (0..rows).step_by(MR) {
            let mr = MR.min(rows - i0);
            // A's rows i0.. as [p][i], zero for rows past mr.
            for p in 0..self.kc {
                for i in 0..MR {
                    a_pack[p * MR + i] = if i < mr {
                        g.lhs.data[(r0 + i0 + i) * g.lhs.rs + (self.pc + p) * g.lhs.cs]
                    } else {
                        0.0
                    };
                }
            }
            for (jp, panel) in self.panels.chunks_exact(self.kc * NR).enumerate() {
                let j0 = self.jc + jp * NR;
                let nr = NR.min(self.jc + self.nc - j0);
                let acc = micro(&a_pack[..self.kc * MR], panel);
                for (i, acc_row) in acc.iter().enumerate().take(mr) {
                    let start = (i0 + i) * g.dst_rs + j0;
                    let out = &mut c[start..start + nr];
                    if self.add {
                        out.iter_mut().zip(acc_row).for_each(|(o, a)| *o += a);
                    } else {
                        out.copy_from_slice(&acc_row[..nr]);
                    }
                }
            }
        }
    }
}

/// `MR × NR` sums of `a[p][i] · b[p][j]` over the block's depth. Fixed-size rows let the
/// compiler keep the accumulators in vector registers and unroll the inner loops.
#[inline(always)]
fn micro(a: &[f32], b: &[f32]) -> [[f32; NR]; MR] {
    let mut acc = [[0f32; NR]; MR];
    for (ap, bp) in a.chunks_exact(MR).zip(b.chunks_exact(NR)) {
        let bp: &[f32; NR] = bp.try_into().expect("NR-wide panel row");
        for (row, &ai) in acc.iter_mut().zip(ap) {
            for (s, &bj) in row.iter_mut().zip(bp) {
                *s += ai * bj;
            }
        }
    }
    acc
}
