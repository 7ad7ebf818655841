//! Shared helpers for the engine and layer tests: a small PRNG, random tensors, tolerances,
//! byte sources for `Tensor::from_shared_bytes`.

use std::sync::Arc;

use inference_server::engine::{Device, SharedBytes, Tensor};

/// A small deterministic PRNG (xorshift64*), so tests need no extra crates.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Uniform in [lo, hi).
    pub fn uniform(&mut self, lo: f32, hi: f32) -> f32 {
        let u = (self.next_u64() >> 40) as f32 / (1u64 << 24) as f32;
        lo + (hi - lo) * u
    }

    pub fn vec(&mut self, n: usize, lo: f32, hi: f32) -> Vec<f32> {
        (0..n).map(|_| self.uniform(lo, hi)).collect()
    }
}

/// A random f32 tensor on `device` with values in [-1, 1) and its data.
pub fn rand_tensor(rng: &mut Rng, dims: &[usize], device: &Device) -> (Tensor, Vec<f32>) {
    let n = dims.iter().product();
    let data = rng.vec(n, -1.0, 1.0);
    (Tensor::from_vec(data.clone(), dims, device).unwrap(), data)
}

pub fn f64s(v: &[f32]) -> Vec<f64> {
    v.iter().map(|&x| x as f64).collect()
}

/// Asserts `|got - want| <= tol · (1 + |want|)` element-wise (mixed absolute/relative tolerance).
pub fn assert_close(what: &str, got: &[f32], want: &[f64], tol: f64) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        let err = (g as f64 - w).abs();
        assert!(
            err <= tol * (1.0 + w.abs()),
            "{what}: element {i}: got {g}, want {w} (err {err:e}, tol {tol:e})"
        );
    }
}

/// A window of a memory map, shared with tensors without copying.
pub struct MmapSlice {
    pub map: Arc<memmap2::Mmap>,
    pub start: usize,
    pub len: usize,
}

impl SharedBytes for MmapSlice {
    fn as_bytes(&self) -> &[u8] {
        &self.map[self.start..self.start + self.len]
    }
}

/// Owned f32 data exposed as bytes (always 4-byte aligned).
pub struct F32Bytes(pub Vec<f32>);

impl SharedBytes for F32Bytes {
    fn as_bytes(&self) -> &[u8] {
        bytemuck::cast_slice(&self.0)
    }
}

/// Bytes starting `skip` bytes into an aligned buffer (misaligned when `skip` is odd).
pub struct OffsetBytes {
    pub buf: Vec<u64>,
    pub skip: usize,
    pub len: usize,
}

impl SharedBytes for OffsetBytes {
    fn as_bytes(&self) -> &[u8] {
        &bytemuck::cast_slice::<u64, u8>(&self.buf)[self.skip..self.skip + self.len]
    }
}
