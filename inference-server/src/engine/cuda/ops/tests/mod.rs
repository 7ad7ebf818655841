//! Kernel tests under the CUDA-on-CPU emulator: each wrapper launches its kernel through
//! [`EmuLauncher`] on random data whose sizes are not multiples of the block or tile sizes, and
//! the result is compared with the CPU backend's kernel on the same values.
//!
//! Tolerances: `|got - want| <= tol · max(|want|, 1)`, i.e. relative for values of magnitude ≥ 1
//! and absolute below. f32 uses 1e-5 unless a test says why; f16/bf16 inputs are rounded to the
//! dtype first, so the CPU sees the same values, and the tolerance covers the output rounding
//! (2^-11 for f16, 2^-8 for bf16) plus f32 computation differences. Each test prints its
//! measured maximum error (`cargo test -- --nocapture`).

mod attention;
mod conv;
mod elementwise;
mod layout;
mod reduce_norm;

use half::{bf16, f16};

use crate::engine::DType;
use crate::engine::cuda::emu::{Schedule, set_schedule};
use crate::engine::cuda::launch::EmuLauncher;

/// The launcher every test uses.
const L: EmuLauncher = EmuLauncher;

/// f32 tolerance (the brief's bound).
const TOL_F32: f32 = 1e-5;
/// f16 tolerance: one rounding of the output (4.9e-4) plus a little for inputs that reach the
/// result through several f32 operations.
const TOL_F16: f32 = 1e-3;
/// bf16 tolerance: one rounding of the output (3.9e-3) plus the same margin.
const TOL_BF16: f32 = 8e-3;

/// Tolerance for results stored in `dtype`.
fn tol(dtype: DType) -> f32 {
    match dtype {
        DType::F32 => TOL_F32,
        DType::F16 => TOL_F16,
        DType::BF16 => TOL_BF16,
    }
}

/// Every dtype, for kernels that have all three.
const DTYPES: [DType; 3] = [DType::F32, DType::F16, DType::BF16];

/// A "device" buffer under the emulator: host memory, 16-byte aligned, holding `len` elements
/// of `dtype`; its device pointer is its address.
struct Buf {
    words: Vec<u128>,
    dtype: DType,
    len: usize,
}

impl Buf {
    /// `len` zeroed elements.
    fn zeros(dtype: DType, len: usize) -> Self {
        let words = vec![0u128; (len * dtype.size_in_bytes()).div_ceil(16).max(1)];
        Self { words, dtype, len }
    }

    /// `values` rounded to `dtype` (round to nearest even, as the `half` crate does).
    fn from_f32(dtype: DType, values: &[f32]) -> Self {
        let mut b = Self::zeros(dtype, values.len());
        let bytes: &mut [u8] = bytemuck::cast_slice_mut(&mut b.words);
        for (i, &v) in values.iter().enumerate() {
            match dtype {
                DType::F32 => bytes[4 * i..4 * i + 4].copy_from_slice(&v.to_le_bytes()),
                DType::F16 => bytes[2 * i..2 * i + 2]
                    .copy_from_slice(&f16::from_f32(v).to_bits().to_le_bytes()),
                DType::BF16 => bytes[2 * i..2 * i + 2]
                    .copy_from_slice(&bf16::from_f32(v).to_bits().to_le_bytes()),
            }
        }
        b
    }

    /// Raw `u32` values (index arrays).
    fn from_u32(values: &[u32]) -> Self {
        let mut b = Self::zeros(DType::F32, values.len());
        bytemuck::cast_slice_mut::<u128, u32>(&mut b.words)[..values.len()].copy_from_slice(values);
        b
    }

    /// The elements widened to f32.
    fn to_f32(&self) -> Vec<f32> {
        let bytes: &[u8] = bytemuck::cast_slice(&self.words);
        (0..self.len)
            .map(|i| match self.dtype {
                DType::F32 => f32::from_le_bytes(bytes[4 * i..4 * i + 4].try_into().unwrap()),
                DType::F16 => {
                    f16::from_bits(u16::from_le_bytes([bytes[2 * i], bytes[2 * i + 1]])).to_f32()
                }
                DType::BF16 => {
                    bf16::from_bits(u16::from_le_bytes([bytes[2 * i], bytes[2 * i + 1]])).to_f32()
                }
            })
            .collect()
    }

    /// The device pointer (a host address under the emulator). `&mut self` because kernels
    /// write through it.
    fn ptr(&mut self) -> u64 {
        self.words.as_mut_ptr() as u64
    }
}

/// Reproducible pseudo-random values in [-scale, scale) (xorshift64).
pub(in crate::engine::cuda) fn random(n: usize, seed: u64, scale: f32) -> Vec<f32> {
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            ((s >> 40) as f32 / (1u64 << 23) as f32 - 1.0) * scale
        })
        .collect()
}

/// `values` as the kernel sees them after rounding to `dtype`.
fn rounded(dtype: DType, values: &[f32]) -> Vec<f32> {
    Buf::from_f32(dtype, values).to_f32()
}

/// Asserts `|got - want| <= tol · max(|want|, 1)` everywhere and returns the largest
/// `|got - want| / max(|want|, 1)`, printed with `what`.
#[track_caller]
fn assert_close(what: &str, got: &[f32], want: &[f32], tol: f32) -> f32 {
    assert_eq!(got.len(), want.len(), "{what}: length");
    let mut worst = (0f32, 0usize);
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        let err = (g - w).abs() / w.abs().max(1.0);
        // NaN never compares greater: treat it as infinitely wrong.
        let err = if err.is_nan() { f32::INFINITY } else { err };
        if err > worst.0 {
            worst = (err, i);
        }
    }
    eprintln!("{what}: max error {:.3e} (tolerance {tol:.0e})", worst.0);
    assert!(
        worst.0 <= tol,
        "{what}: element {} is {} but the CPU says {} (error {:.3e} > {tol:.0e})",
        worst.1,
        got[worst.1],
        want[worst.1],
        worst.0
    );
    worst.0
}

/// Runs `f` under each of the emulator's four schedules (FIFO, low-first, high-first, seeded
/// random): a missing barrier shows under some orders only. Restores FIFO afterwards.
fn under_each_schedule(mut f: impl FnMut(Schedule)) {
    for s in Schedule::ALL {
        set_schedule(s);
        f(s);
    }
    set_schedule(Schedule::Fifo);
}
