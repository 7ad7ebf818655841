//! Vectorisable row kernels: a polynomial `2^x` and the softmax helpers built on it, the
//! activations (GELU, SiLU, GEGLU) and the group/layer norm statistics and affine pass. Each is
//! written once as plain lane-wise Rust and compiled three times (AVX-512F, AVX2 + FMA and the
//! baseline target), the copy chosen at run time by [`dispatch!`]. The activations and norms
//! were scalar loops around libm's `exp` in f64 before; as rows they run at vector width.

/// `1.5 · 2^23`: adding it rounds an f32 of magnitude below 2^22 to an integer in the low bits.
const ROUND_MAGIC: f32 = 12_582_912.0;

/// Taylor coefficients of `2^f = e^(f ln 2)` up to degree 6; on `|f| ≤ 0.5` the truncation error
/// is below 1.2e-7 relative, the size of one f32 rounding.
const C: [f32; 7] = [
    1.0,
    std::f32::consts::LN_2,
    0.240_226_5,
    0.055_504_11,
    0.009_618_129,
    0.001_333_355_8,
    0.000_154_035_3,
];

/// `2^x` for `x ≤ 127`; below -126 it returns 2^-126-ish instead of a subnormal, which is zero
/// for any softmax that also holds a term of size 1.
#[inline(always)]
pub(crate) fn exp2(x: f32) -> f32 {
    let x = x.clamp(-126.0, 127.0);
    let t = x + ROUND_MAGIC;
    let k = t - ROUND_MAGIC;
    let ki = (t.to_bits() as i32).wrapping_sub(ROUND_MAGIC.to_bits() as i32);
    let f = x - k;
    let p = C[0] + f * (C[1] + f * (C[2] + f * (C[3] + f * (C[4] + f * (C[5] + f * C[6])))));
    p * f32::from_bits(((ki + 127) << 23) as u32)
}

#[inline(always)]
fn exp2_sub_sum_impl(row: &mut [f32], m: f32) -> f32 {
    let mut lanes = [0f32; SUM_LANES];
    let mut chunks = row.chunks_exact_mut(SUM_LANES);
    for c in &mut chunks {
        for (x, s) in c.iter_mut().zip(lanes.iter_mut()) {
            *x = exp2(*x - m);
            *s += *x;
        }
    }
    let mut sum: f32 = lanes.iter().sum();
    for x in chunks.into_remainder() {
        *x = exp2(*x - m);
        sum += *x;
    }
    sum
}

#[inline(always)]
fn max_impl(row: &[f32]) -> f32 {
    let mut lanes = [f32::NEG_INFINITY; SUM_LANES];
    let mut chunks = row.chunks_exact(SUM_LANES);
    for c in &mut chunks {
        for (&x, l) in c.iter().zip(lanes.iter_mut()) {
            *l = if x > *l { x } else { *l };
        }
    }
    chunks
        .remainder()
        .iter()
        .chain(&lanes)
        .fold(f32::NEG_INFINITY, |a, &x| if x > a { x } else { a })
}

/// Calls `$imp($args)` compiled for the instruction set [`level`] picks: AVX-512F, AVX2 + FMA,
/// or the baseline. `$imp` must be `#[inline(always)]` so each copy is vectorised for its own
/// features.
macro_rules! dispatch {
    ($imp:ident ( $($arg:ident : $ty:ty),* ) -> $ret:ty) => {{
        #[cfg(target_arch = "x86_64")]
        {
            #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma")]
            unsafe fn avx512($($arg: $ty),*) -> $ret {
                $imp($($arg),*)
            }
            #[target_feature(enable = "avx2,fma")]
            unsafe fn avx2($($arg: $ty),*) -> $ret {
                $imp($($arg),*)
            }
            match level() {
                // SAFETY: `level` names only instruction sets this CPU has.
                Level::Avx512 => return unsafe { avx512($($arg),*) },
                // SAFETY: as above.
                Level::Avx2 => return unsafe { avx2($($arg),*) },
                Level::Portable => {}
            }
        }
        $imp($($arg),*)
    }};
}

/// The copy of a row kernel that runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Level {
    /// AVX-512F/BW/VL (with AVX2 and FMA).
    Avx512,
    /// AVX2 + FMA.
    Avx2,
    /// The baseline target (SSE2 on x86-64).
    Portable,
}

/// The instruction sets this CPU runs, best first.
pub(crate) fn levels() -> Vec<Level> {
    #[cfg(target_arch = "x86_64")]
    {
        let avx2 = is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma");
        let avx512 = avx2
            && is_x86_feature_detected!("avx512f")
            && is_x86_feature_detected!("avx512bw")
            && is_x86_feature_detected!("avx512vl");
        let all = [
            (Level::Avx512, avx512),
            (Level::Avx2, avx2),
            (Level::Portable, true),
        ];
        all.into_iter().filter(|l| l.1).map(|l| l.0).collect()
    }
    #[cfg(not(target_arch = "x86_64"))]
    vec![Level::Portable]
}

#[inline(always)]
fn to_bf16_impl(dst: &mut [u16], src: &[f32]) {
    for (d, &x) in dst.iter_mut().zip(src) {
        *d = super::bf16gemm::bf16_bits(x) as u16;
    }
}

/// `src` rounded to bf16 into `dst` (nearest-even, NaN kept quiet): bit for bit
/// `half::bf16::from_f32`, at vector width (half's slice conversion is scalar for bf16).
pub(crate) fn to_bf16(dst: &mut [half::bf16], src: &[f32]) {
    let dst: &mut [u16] = bytemuck::cast_slice_mut(dst);
    dispatch!(to_bf16_impl(dst: &mut [u16], src: &[f32]) -> ())
}

#[inline(always)]
fn from_bf16_impl(dst: &mut [f32], src: &[u16]) {
    for (d, &x) in dst.iter_mut().zip(src) {
        *d = f32::from_bits((x as u32) << 16);
    }
}

/// `src` widened to f32 into `dst` (exact).
pub(crate) fn from_bf16(dst: &mut [f32], src: &[half::bf16]) {
    let src: &[u16] = bytemuck::cast_slice(src);
    dispatch!(from_bf16_impl(dst: &mut [f32], src: &[u16]) -> ())
}

#[cfg(test)]
thread_local! {
    /// A path forced on this thread by a test (see [`with_level`]).
    static FORCED: std::cell::Cell<Option<Level>> = const { std::cell::Cell::new(None) };
}

/// Runs `f` with this thread's row kernels forced onto `level` (which the CPU must have), so
/// one test process checks every path.
#[cfg(test)]
pub(crate) fn with_level<T>(level: Level, f: impl FnOnce() -> T) -> T {
    assert!(levels().contains(&level), "{level:?}: not on this CPU");
    FORCED.with(|c| c.set(Some(level)));
    let out = f();
    FORCED.with(|c| c.set(None));
    out
}

/// The path the row kernels take: the best this CPU has, capped by `SDSERVE_CPU_ISA` (`avx512`,
/// `avx2` or `portable`, the variable that also picks the GEMM's path), read once.
fn level() -> Level {
    #[cfg(test)]
    if let Some(l) = FORCED.with(|c| c.get()) {
        return l;
    }
    use std::sync::OnceLock;
    static L: OnceLock<Level> = OnceLock::new();
    *L.get_or_init(|| {
        let best = levels()[0];
        let cap = match super::f32gemm::isa() {
            super::f32gemm::Isa::Avx512 => Level::Avx512,
            super::f32gemm::Isa::Avx2 => Level::Avx2,
            super::f32gemm::Isa::Portable => Level::Portable,
        };
        // Levels are ordered best first: the later of the two is the one both allow.
        let rank = |l: Level| levels().iter().position(|&x| x == l).unwrap_or(usize::MAX);
        if rank(cap) > rank(best) { cap } else { best }
    })
}

/// Replaces each `x` of `row` by `2^(x - m)` and returns their sum.
pub(crate) fn exp2_sub_sum(row: &mut [f32], m: f32) -> f32 {
    dispatch!(exp2_sub_sum_impl(row: &mut [f32], m: f32) -> f32)
}

/// The largest element of `row` (NaNs are skipped; `-inf` when empty).
pub(crate) fn max(row: &[f32]) -> f32 {
    dispatch!(max_impl(row: &[f32]) -> f32)
}

/// `e^x` through [`exp2`] (relative error about 3e-7 for |x| < 20, growing with |x| by the
/// rounding of `x · log2 e`: 1.2e-7 · |x| · log2 e).
#[inline(always)]
fn exp(x: f32) -> f32 {
    exp2(x * std::f32::consts::LOG2_E)
}

/// `x · σ(x)`.
#[inline(always)]
pub(crate) fn silu1(x: f32) -> f32 {
    x / (1.0 + exp(-x))
}

/// Exact (erf) GELU, `x · Φ(x) = 0.5 x erfc(-x / √2)`, with Numerical Recipes' `erfcc`
/// (fractional error < 1.2e-7) evaluated in f32: `z² = x² / 2` is formed from `x` directly so
/// the exponent, about `-z²`, carries one rounding; relative error below 5e-6 down to x = -6,
/// where the result is 6e-9 (the tail test in `tests/it/engine_ops.rs` holds it to 1e-5).
#[inline(always)]
pub(crate) fn gelu1(x: f32) -> f32 {
    let z = x.abs() * std::f32::consts::FRAC_1_SQRT_2;
    let t = 1.0 / (1.0 + 0.5 * z);
    let poly = -0.5 * (x * x) - 1.265_512_2
        + t * (1.000_023_7
            + t * (0.374_091_96
                + t * (0.096_784_18
                    + t * (-0.186_288_06
                        + t * (0.278_868_07
                            + t * (-1.135_204
                                + t * (1.488_515_9 + t * (-0.822_152_2 + t * 0.170_872_77))))))));
    // erfc(|x| / √2) for x < 0; erfc(-z) = 2 - erfc(z) for x ≥ 0.
    let tail = t * exp(poly);
    let erfc = if x >= 0.0 { 2.0 - tail } else { tail };
    0.5 * x * erfc
}

/// `x · σ(1.702 x)`.
#[inline(always)]
pub(crate) fn gelu_quick1(x: f32) -> f32 {
    x / (1.0 + exp(-1.702 * x))
}

/// The element-wise activations these rows kernels compute.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Activation {
    /// `x · σ(x)`.
    Silu,
    /// `x · Φ(x)` (erf form).
    Gelu,
    /// `x · σ(1.702 x)` (CLIP's quick GELU).
    GeluQuick,
}

#[inline(always)]
fn activate_impl(dst: &mut [f32], src: &[f32], act: Activation) {
    // One loop per activation, so each is vectorised on its own.
    match act {
        Activation::Silu => dst.iter_mut().zip(src).for_each(|(d, &x)| *d = silu1(x)),
        Activation::Gelu => dst.iter_mut().zip(src).for_each(|(d, &x)| *d = gelu1(x)),
        Activation::GeluQuick => dst
            .iter_mut()
            .zip(src)
            .for_each(|(d, &x)| *d = gelu_quick1(x)),
    }
}

/// `dst[i] = act(src[i])` (the shorter length of the two).
pub(crate) fn activate(dst: &mut [f32], src: &[f32], act: Activation) {
    dispatch!(activate_impl(dst: &mut [f32], src: &[f32], act: Activation) -> ())
}

#[inline(always)]
fn geglu_impl(dst: &mut [f32], a: &[f32], gate: &[f32]) {
    for ((d, &x), &g) in dst.iter_mut().zip(a).zip(gate) {
        *d = x * gelu1(g);
    }
}

/// GEGLU's gate on one row: `dst[i] = a[i] · gelu(gate[i])`.
pub(crate) fn geglu(dst: &mut [f32], a: &[f32], gate: &[f32]) {
    dispatch!(geglu_impl(dst: &mut [f32], a: &[f32], gate: &[f32]) -> ())
}

/// Lanes of the partial sums below: f32 lanes over at most [`SUM_CHUNK`] elements, then f64.
const SUM_LANES: usize = 16;
/// Elements summed in f32 before the partial sums move to f64 (keeps the f32 sums' relative
/// error near 256 / 16 · 6e-8 = 1e-6 however long the row).
const SUM_CHUNK: usize = 256;

#[inline(always)]
fn moments_impl(row: &[f32], center: f32) -> (f64, f64) {
    let (mut sum, mut sq) = (0f64, 0f64);
    for chunk in row.chunks(SUM_CHUNK) {
        let (mut ls, mut lq) = ([0f32; SUM_LANES], [0f32; SUM_LANES]);
        let mut it = chunk.chunks_exact(SUM_LANES);
        for c in &mut it {
            for ((s, q), &x) in ls.iter_mut().zip(lq.iter_mut()).zip(c) {
                let d = x - center;
                *s += d;
                *q += d * d;
            }
        }
        let (mut ps, mut pq): (f32, f32) = (ls.iter().sum(), lq.iter().sum());
        for &x in it.remainder() {
            let d = x - center;
            ps += d;
            pq += d * d;
        }
        sum += ps as f64;
        sq += pq as f64;
    }
    (sum, sq)
}

/// `(Σ (x - center), Σ (x - center)²)` over `row`: f32 vector lanes within chunks of 256
/// elements, the chunks added in f64.
pub(crate) fn moments(row: &[f32], center: f32) -> (f64, f64) {
    dispatch!(moments_impl(row: &[f32], center: f32) -> (f64, f64))
}

#[inline(always)]
fn affine_impl(dst: &mut [f32], src: &[f32], scale: f32, shift: f32, silu: bool) {
    if silu {
        for (d, &x) in dst.iter_mut().zip(src) {
            *d = silu1(x * scale + shift);
        }
    } else {
        for (d, &x) in dst.iter_mut().zip(src) {
            *d = x * scale + shift;
        }
    }
}

/// `dst = src · scale + shift`, then SiLU when `silu` (group norm's per-channel pass).
pub(crate) fn affine(dst: &mut [f32], src: &[f32], scale: f32, shift: f32, silu: bool) {
    dispatch!(affine_impl(dst: &mut [f32], src: &[f32], scale: f32, shift: f32, silu: bool) -> ())
}

#[inline(always)]
fn layer_affine_impl(dst: &mut [f32], src: &[f32], mean: f32, inv: f32, w: &[f32], b: &[f32]) {
    for (((d, &s), &wi), &bi) in dst.iter_mut().zip(src).zip(w).zip(b) {
        *d = (s - mean) * inv * wi + bi;
    }
}

/// Layer norm's pass: `dst = (src - mean) · inv · w + b`.
pub(crate) fn layer_affine(
    dst: &mut [f32],
    src: &[f32],
    mean: f32,
    inv: f32,
    w: &[f32],
    b: &[f32],
) {
    dispatch!(layer_affine_impl(dst: &mut [f32], src: &[f32], mean: f32, inv: f32, w: &[f32], b: &[f32]) -> ())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exp2_is_within_two_ulp_of_std() {
        let mut x = -126.0f32;
        while x <= 127.0 {
            let (got, want) = (exp2(x), (x as f64).exp2());
            assert!(
                ((got as f64 - want) / want).abs() < 2.5e-7,
                "2^{x}: {got} vs {want}"
            );
            x += 0.013;
        }
    }

    #[test]
    fn row_helpers_match_scalar_loops() {
        let mut row: Vec<f32> = (0..37)
            .map(|i| ((i * 7919) % 101) as f32 * 0.17 - 9.0)
            .collect();
        let m = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        assert_eq!(max(&row), m);
        let want: Vec<f64> = row.iter().map(|&x| ((x - m) as f64).exp2()).collect();
        let sum = exp2_sub_sum(&mut row, m);
        for (g, w) in row.iter().zip(&want) {
            assert!((*g as f64 - w).abs() <= 2.5e-7 * w, "{g} vs {w}");
        }
        assert!((sum as f64 - want.iter().sum::<f64>()).abs() < 1e-5);
        assert_eq!(max(&[]), f32::NEG_INFINITY);
    }

    /// erf by its Taylor series (f64, accurate for |x| ≤ 6 to well below f32's rounding).
    fn erf(x: f64) -> f64 {
        let (mut term, mut sum, mut n) = (x, x, 0.0);
        while term.abs() > 1e-17 * sum.abs().max(1e-300) {
            n += 1.0;
            term *= -x * x / n;
            sum += term / (2.0 * n + 1.0);
        }
        sum * 2.0 / std::f64::consts::PI.sqrt()
    }

    /// Every row kernel on every instruction set this CPU has, against f64 references: a
    /// kernel miscompiled or mis-vectorised for one path fails here even where the others hold.
    #[test]
    fn every_row_kernel_on_every_path_matches_f64() {
        // 1037 elements: whole 16- and 8-lane blocks plus a remainder; values in [-6, 6).
        let x: Vec<f32> = (0..1037)
            .map(|i| ((i * 7919) % 1201) as f32 / 100.0 - 6.0)
            .collect();
        let sig = |v: f64| 1.0 / (1.0 + (-v).exp());
        let refs: [(Activation, &dyn Fn(f64) -> f64); 3] = [
            (Activation::Silu, &|v| v * sig(v)),
            (Activation::Gelu, &|v| {
                0.5 * v * (1.0 + erf(v / 2f64.sqrt()))
            }),
            (Activation::GeluQuick, &|v| v * sig(1.702 * v)),
        ];
        for level in levels() {
            with_level(level, || {
                let mut y = vec![0f32; x.len()];
                for (act, f) in refs {
                    activate(&mut y, &x, act);
                    for (&g, &v) in y.iter().zip(&x) {
                        let want = f(v as f64);
                        let err = (g as f64 - want).abs();
                        assert!(
                            err <= 1e-6 * want.abs().max(1.0),
                            "{level:?} {act:?}({v}) = {g}, want {want}"
                        );
                    }
                }
                let (a, gate) = x.split_at(518);
                let mut out = vec![0f32; 518];
                geglu(&mut out, a, gate);
                for ((&o, &av), &gv) in out.iter().zip(a).zip(gate) {
                    let want = av as f64 * refs[1].1(gv as f64);
                    assert!(
                        (o as f64 - want).abs() <= 1e-6 * want.abs().max(1.0),
                        "{level:?} geglu"
                    );
                }
                // Moments around a shift, against f64 sums.
                let center = 0.75f32;
                let (s, q) = moments(&x, center);
                let ws: f64 = x.iter().map(|&v| v as f64 - center as f64).sum();
                let wq: f64 = x.iter().map(|&v| (v as f64 - center as f64).powi(2)).sum();
                assert!(
                    (s - ws).abs() <= 1e-5 * wq.sqrt() * 32.0,
                    "{level:?} sum {s} vs {ws}"
                );
                assert!((q - wq).abs() <= 1e-6 * wq, "{level:?} squares {q} vs {wq}");
                for silu in [false, true] {
                    affine(&mut y, &x, 0.5, -0.25, silu);
                    for (&g, &v) in y.iter().zip(&x) {
                        let t = v as f64 * 0.5 - 0.25;
                        let want = if silu { t * sig(t) } else { t };
                        assert!(
                            (g as f64 - want).abs() <= 1e-6 * want.abs().max(1.0),
                            "{level:?} affine"
                        );
                    }
                }
                let w: Vec<f32> = (0..x.len()).map(|i| 1.0 + i as f32 * 1e-3).collect();
                let b: Vec<f32> = (0..x.len()).map(|i| i as f32 * -1e-3).collect();
                layer_affine(&mut y, &x, 0.1, 2.0, &w, &b);
                for (i, &g) in y.iter().enumerate() {
                    let want = (x[i] as f64 - 0.1) * 2.0 * w[i] as f64 + b[i] as f64;
                    assert!(
                        (g as f64 - want).abs() <= 1e-5 * want.abs().max(1.0),
                        "{level:?} layer"
                    );
                }
                let mut row = x.clone();
                let top = x.iter().copied().fold(f32::NEG_INFINITY, f32::max);
                assert_eq!(max(&row), top, "{level:?} max");
                let sum = exp2_sub_sum(&mut row, top);
                let want: f64 = x.iter().map(|&v| (v as f64 - top as f64).exp2()).sum();
                assert!(
                    (sum as f64 - want).abs() <= 1e-5 * want,
                    "{level:?} exp2 sum"
                );
            });
        }
    }

    #[test]
    fn bf16_conversions_match_half_on_every_path() {
        let mut xs: Vec<f32> = (0..4096).map(|i| (i as f32 - 2048.0) * 0.372_1).collect();
        xs.extend((0..4096u32).map(|i| f32::from_bits(i.wrapping_mul(0x9e37_79b9))));
        xs.extend([
            0.0,
            -0.0,
            f32::INFINITY,
            f32::NEG_INFINITY,
            f32::NAN,
            f32::MAX,
            f32::MIN,
        ]);
        xs.extend([
            1.0 + f32::EPSILON * 64.0,
            1.0 + f32::EPSILON * 192.0,
            1e-40,
            -3e-39,
        ]);
        let want: Vec<u16> = xs
            .iter()
            .map(|&x| half::bf16::from_f32(x).to_bits())
            .collect();
        for level in levels() {
            let mut got = vec![half::bf16::ZERO; xs.len()];
            with_level(level, || to_bf16(&mut got, &xs));
            let got: Vec<u16> = got.iter().map(|x| x.to_bits()).collect();
            assert_eq!(got, want, "{level:?}: f32 -> bf16");
            let back_want: Vec<u32> = want.iter().map(|&b| (b as u32) << 16).collect();
            let mut back = vec![0f32; xs.len()];
            let halves: Vec<half::bf16> = want.iter().map(|&b| half::bf16::from_bits(b)).collect();
            with_level(level, || from_bf16(&mut back, &halves));
            let back: Vec<u32> = back.iter().map(|x| x.to_bits()).collect();
            assert_eq!(back, back_want, "{level:?}: bf16 -> f32");
        }
    }
}
