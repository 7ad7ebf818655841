//! `torch.randn` on PyTorch's CPU generator, float32.
//!
//! What PyTorch does (ATen `cpu/DistributionTemplates.h`, checked against torch 2.x outputs
//! by `tests/parity/rng_goldens.py`):
//!
//! * Fewer than 16 elements: element by element with `at::normal_distribution<double>`. Each
//!   pair of outputs takes two 53-bit uniforms `u1, u2` (`random64() & (2^53-1)` · 2^-53),
//!   `r = sqrt(-2 ln(1 - u2))`, `θ = 2π u1`, returns `r cos θ` and caches `r sin θ` for the
//!   next element; each value is rounded to f32.
//! * 16 or more (contiguous float32): every element first gets a 24-bit uniform
//!   (`(random() & 0xFFFFFF)` · 2^-24); then each block of 16 is turned into normals in place,
//!   pairing element `j` with `j + 8`: `r = sqrt(-2 ln(1 - u_j))`, `θ = 2π u_{j+8}`,
//!   `out_j = r cos θ`, `out_{j+8} = r sin θ`. If the count is not a multiple of 16, 16 fresh
//!   uniforms are drawn into the *last* 16 slots (overlapping the previous block) and that block
//!   is transformed again.
//! * On x86-64 with AVX2 (the build torch dispatches to on current CPUs) the block transform is
//!   `normal_fill_16_AVX2`, whose `log`/`sincos` are the Cephes single-precision polynomials of
//!   `avx_mathfun.h`, compiled with fused multiply-adds. They are restated here lane by lane,
//!   fma for fma, which makes the output bit-identical to torch on such machines. Builds that
//!   take the scalar `normal_fill` instead (`ATEN_CPU_CAPABILITY=default`, non-x86 CPUs) use
//!   libm `logf`/`cosf`/`sinf` and differ in the last bits (measured ≤ 1.2e-6 absolute on the
//!   goldens); which kernel torch's AVX-512 dispatch takes has not been checked.

use super::mt19937::Mt19937;

/// Standard-normal float32 values equal to `torch.randn(n, generator=manual_seed(seed))`.
pub fn randn(seed: u64, n: usize) -> Vec<f32> {
    TorchCpuGenerator::new(seed).randn(n)
}

/// PyTorch's CPU generator after `manual_seed(seed)`: consecutive [`TorchCpuGenerator::randn`]
/// calls return what consecutive `torch.randn(n, generator=g)` calls on one generator return.
/// Its state is the Mersenne Twister and the generator's cached second normal of the
/// element-by-element path (`next_double_normal_sample`), which survives between calls.
#[derive(Debug, Clone)]
pub struct TorchCpuGenerator {
    rng: Mt19937,
    next_normal: Option<f64>,
}

impl TorchCpuGenerator {
    /// `torch.Generator().manual_seed(seed)` (only the low 32 bits of `seed` count).
    pub fn new(seed: u64) -> TorchCpuGenerator {
        TorchCpuGenerator {
            rng: Mt19937::new(seed),
            next_normal: None,
        }
    }

    /// The next `torch.randn(n, generator=self)`.
    pub fn randn(&mut self, n: usize) -> Vec<f32> {
        let rng = &mut self.rng;
        if n < 16 {
            return scalar_path(rng, &mut self.next_normal, n);
        }
        let mut out: Vec<f32> = (0..n).map(|_| uniform_f32(rng)).collect();
        for block in out.chunks_exact_mut(16) {
            fill16(block);
        }
        if !n.is_multiple_of(16) {
            let tail = &mut out[n - 16..];
            for v in tail.iter_mut() {
                *v = uniform_f32(rng);
            }
            fill16(tail);
        }
        out
    }
}

/// `at::uniform_real_distribution<float>(0, 1)`: 24 random bits scaled by 2^-24.
fn uniform_f32(rng: &mut Mt19937) -> f32 {
    (rng.next_u32() & 0x00ff_ffff) as f32 * (1.0 / 16_777_216.0)
}

/// `at::uniform_real_distribution<double>(0, 1)`: 53 random bits scaled by 2^-53.
fn uniform_f64(rng: &mut Mt19937) -> f64 {
    (rng.next_u64() & ((1u64 << 53) - 1)) as f64 * (1.0 / 9_007_199_254_740_992.0)
}

/// `at::normal_distribution<double>` with the generator's one-value cache, narrowed to f32.
fn scalar_path(rng: &mut Mt19937, cached: &mut Option<f64>, n: usize) -> Vec<f32> {
    let mut out = Vec::with_capacity(n);
    while out.len() < n {
        if let Some(v) = cached.take() {
            out.push(v as f32);
            continue;
        }
        let u1 = uniform_f64(rng);
        let u2 = uniform_f64(rng);
        let r = (-2.0 * (-u2).ln_1p()).sqrt();
        let theta = 2.0 * std::f64::consts::PI * u1;
        *cached = Some(r * theta.sin());
        out.push((r * theta.cos()) as f32);
    }
    out
}

/// Box-Muller over one block of 16 uniforms, in place (`normal_fill_16_AVX2` with mean 0,
/// std 1). `block` must hold exactly 16 values.
fn fill16(block: &mut [f32]) {
    // `_mm256_set1_ps(2.0f * c10::pi<double>)`: 2π computed in double, rounded to f32.
    let two_pi = (2.0 * std::f64::consts::PI) as f32;
    for j in 0..8 {
        let u1 = 1.0 - block[j];
        let u2 = block[j + 8];
        let radius = (-2.0 * cephes_log(u1)).sqrt();
        let (sin, cos) = cephes_sincos(two_pi * u2);
        // `_mm256_fmadd_ps(n, std, mean)` with std 1, mean 0: exact, but turns -0 into +0.
        block[j] = (radius * cos).mul_add(1.0, 0.0);
        block[j + 8] = (radius * sin).mul_add(1.0, 0.0);
    }
}

// The constants keep the digits of `avx_mathfun.h` so each rounds to the same f32.
/// `log256_ps` of `avx_mathfun.h` for one lane, `x` in (0, 1] (no NaN/denormal handling needed
/// by the caller; non-positive input is clamped to the smallest normal like the original).
#[allow(clippy::excessive_precision)]
fn cephes_log(x: f32) -> f32 {
    let x = x.max(f32::MIN_POSITIVE);
    let bits = x.to_bits();
    let mut e = ((bits >> 23) as i32 - 0x7f) as f32 + 1.0;
    // Mantissa in [0.5, 1).
    let mut m = f32::from_bits((bits & !0x7f80_0000) | 0.5f32.to_bits());
    let below = m < std::f32::consts::FRAC_1_SQRT_2; // cephes SQRTHF
    let tmp = if below { m } else { 0.0 };
    m -= 1.0;
    if below {
        e -= 1.0;
    }
    m += tmp;
    let z = m * m;
    let mut y = 7.037_683_629_2e-2f32;
    for c in [
        -1.151_461_031e-1f32,
        1.167_699_874e-1,
        -1.242_014_084_6e-1,
        1.424_932_278_7e-1,
        -1.666_805_766_5e-1,
        2.000_071_476_5e-1,
        -2.499_999_399_3e-1,
        3.333_333_117_4e-1,
    ] {
        y = y.mul_add(m, c);
    }
    y *= m;
    y = y.mul_add(z, e * -2.121_944_40e-4);
    y = z.mul_add(-0.5, y);
    let r = m + y;
    e.mul_add(0.693_359_375, r)
}

/// `sincos256_ps` of `avx_mathfun.h` for one lane: `(sin x, cos x)`.
#[allow(clippy::excessive_precision)]
fn cephes_sincos(x: f32) -> (f32, f32) {
    const FOPI: f32 = 1.273_239_544_735_16; // 4 / π
    let mut sign_sin = x.to_bits() & 0x8000_0000;
    let ax = x.abs();
    // Truncating conversion, as `_mm256_cvttps_epi32` (inputs here are in [0, 2π)).
    let mut j = (ax * FOPI) as i32;
    j = (j + 1) & !1;
    let yq = j as f32;
    let swap_sign = ((j & 4) as u32) << 29;
    let use_sin_poly = j & 2 == 0;
    sign_sin ^= swap_sign;
    let sign_cos = ((!(j - 2) & 4) as u32) << 29;
    // Extended-precision modular arithmetic: x - yq·π/4 in three parts.
    let mut r = yq.mul_add(-0.785_156_25, ax);
    r = yq.mul_add(-2.418_756_484_985_351_562_5e-4, r);
    r = yq.mul_add(-3.774_894_977_445_941_08e-8, r);
    let z = r * r;
    let mut c = 2.443_315_711_809_948e-5f32.mul_add(z, -1.388_731_625_493_765e-3);
    c = c.mul_add(z, 4.166_664_568_298_827e-2);
    c *= z;
    c = c.mul_add(z, -(z * 0.5));
    c += 1.0;
    let mut s = (-1.951_529_589_1e-4f32).mul_add(z, 8.332_160_873_6e-3);
    s = s.mul_add(z, -1.666_665_461_1e-1);
    s *= z;
    s = s.mul_add(r, r);
    let (sin, cos) = if use_sin_poly { (s, c) } else { (c, s) };
    (
        f32::from_bits(sin.to_bits() ^ sign_sin),
        f32::from_bits(cos.to_bits() ^ sign_cos),
    )
}
