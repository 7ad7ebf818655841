//! Vectorisable softmax helpers: a polynomial `2^x` and lane-wise row maximum, compiled for
//! AVX2 + FMA when the CPU has them (chosen at run time) and for the baseline target otherwise.

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
fn exp2(x: f32) -> f32 {
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
    let mut lanes = [0f32; 8];
    let mut chunks = row.chunks_exact_mut(8);
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
    let mut lanes = [f32::NEG_INFINITY; 8];
    let mut chunks = row.chunks_exact(8);
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

#[cfg(target_arch = "x86_64")]
fn has_avx2_fma() -> bool {
    is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma")
}

/// Replaces each `x` of `row` by `2^(x - m)` and returns their sum.
pub(crate) fn exp2_sub_sum(row: &mut [f32], m: f32) -> f32 {
    #[cfg(target_arch = "x86_64")]
    if has_avx2_fma() {
        #[target_feature(enable = "avx2,fma")]
        unsafe fn avx2(row: &mut [f32], m: f32) -> f32 {
            exp2_sub_sum_impl(row, m)
        }
        // SAFETY: the CPU supports the enabled features (checked above).
        return unsafe { avx2(row, m) };
    }
    exp2_sub_sum_impl(row, m)
}

/// The largest element of `row` (NaNs are skipped; `-inf` when empty).
pub(crate) fn max(row: &[f32]) -> f32 {
    #[cfg(target_arch = "x86_64")]
    if has_avx2_fma() {
        #[target_feature(enable = "avx2,fma")]
        unsafe fn avx2(row: &[f32]) -> f32 {
            max_impl(row)
        }
        // SAFETY: the CPU supports the enabled features (checked above).
        return unsafe { avx2(row) };
    }
    max_impl(row)
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
}
