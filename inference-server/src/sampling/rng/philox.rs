//! A1111's "NV" noise: PyTorch's CUDA `randn` (Philox4x32-10) computed on the CPU.
//!
//! Restates the algorithm of stable-diffusion-webui's `modules/rng_philox.py`, which produces
//! the same numbers as `torch.randn(..., device="cuda")` on NVIDIA GPUs:
//!
//! * Element `i` of a request runs Philox4x32 with 10 rounds on the counter
//!   `(offset, 0, i, 0)` and the key `(seed low 32 bits, seed high 32 bits)`; the key is bumped
//!   by the Weyl constants `(0x9E3779B9, 0xBB67AE85)` between rounds.
//! * Output words 0 and 1 feed Box-Muller; only the sine half is kept:
//!   `u = w0·2^-32 + 2^-33`, `v = w1·(2π·2^-32) + π·2^-32`, `out = sqrt(-2 ln u)·sin v`.
//!   The constants are float32 (`2.3283064e-10`, `2.3283064e-10 · 6.2831855`) but, as NumPy
//!   promotes `uint32 × float32 array` to float64, the arithmetic is double precision and only
//!   the result is rounded to f32.
//! * A generator's first call uses offset 0 and each call advances it by one; initial noise is
//!   always a first call, so [`randn`] uses offset 0.

const M0: u32 = 0xD251_1F53;
const M1: u32 = 0xCD9E_8D57;
const W0: u32 = 0x9E37_79B9;
const W1: u32 = 0xBB67_AE85;

/// Philox4x32 with 10 rounds on one counter.
fn philox4x32_10(mut c: [u32; 4], key: [u32; 2]) -> [u32; 4] {
    let (mut k0, mut k1) = (key[0], key[1]);
    for round in 0..10 {
        let p0 = u64::from(c[0]) * u64::from(M0);
        let p1 = u64::from(c[2]) * u64::from(M1);
        c = [
            (p1 >> 32) as u32 ^ c[1] ^ k0,
            p1 as u32,
            (p0 >> 32) as u32 ^ c[3] ^ k1,
            p0 as u32,
        ];
        if round < 9 {
            k0 = k0.wrapping_add(W0);
            k1 = k1.wrapping_add(W1);
        }
    }
    c
}

/// `n` standard-normal values, A1111's `rng_philox.Generator(seed).randn((n,))` (offset 0).
/// The counter index is 32 bits wide, as in the reference: beyond 2^32 elements it wraps.
pub fn randn(seed: u64, n: usize) -> Vec<f32> {
    randn_at_offset(seed, 0, n)
}

/// Like [`randn`] for a generator that has already produced `offset` tensors.
pub fn randn_at_offset(seed: u64, offset: u32, n: usize) -> Vec<f32> {
    let key = [seed as u32, (seed >> 32) as u32];
    let inv32 = f64::from(2.328_306_4e-10f32);
    let inv32_2pi = (2.328_306_4e-10f64 * 6.283_185_5f64) as f32;
    let inv32_2pi = f64::from(inv32_2pi);
    (0..n)
        .map(|i| {
            let w = philox4x32_10([offset, 0, i as u32, 0], key);
            let u = f64::from(w[0]) * inv32 + inv32 / 2.0;
            let v = f64::from(w[1]) * inv32_2pi + inv32_2pi / 2.0;
            ((-2.0 * u.ln()).sqrt() * v.sin()) as f32
        })
        .collect()
}
