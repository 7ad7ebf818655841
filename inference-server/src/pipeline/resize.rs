//! Lanczos resampling of 8-bit RGB images as Pillow's `Image.resize(size, Image.LANCZOS)` does
//! it, which is what A1111's img2img "Just resize" runs: separable, horizontal pass first,
//! kernel widened by the scale when shrinking, coefficients normalised and rounded to 22-bit
//! fixed point, every pass rounded and clamped to a byte (so the ringing of the first pass is
//! clipped before the second, as in Pillow; a float-only resampler differs by up to ~10%).

use crate::pipeline::params::RgbImage;

/// Fractional bits of the fixed-point coefficients (Pillow's `PRECISION_BITS`, 32 − 8 − 2).
const PRECISION_BITS: u32 = 22;

/// Lanczos window radius (Pillow's `LANCZOS` support).
const SUPPORT: f64 = 3.0;

fn sinc(x: f64) -> f64 {
    if x == 0.0 {
        1.0
    } else {
        let px = x * std::f64::consts::PI;
        px.sin() / px
    }
}

fn lanczos(x: f64) -> f64 {
    if (-SUPPORT..SUPPORT).contains(&x) {
        sinc(x) * sinc(x / SUPPORT)
    } else {
        0.0
    }
}

/// For each output index: the first input index and the fixed-point weights from there.
fn coefficients(in_size: usize, out_size: usize) -> Vec<(usize, Vec<i64>)> {
    let scale = in_size as f64 / out_size as f64;
    let filter_scale = scale.max(1.0);
    let support = SUPPORT * filter_scale;
    (0..out_size)
        .map(|xx| {
            let center = (xx as f64 + 0.5) * scale;
            let xmin = ((center - support + 0.5) as i64).max(0) as usize;
            let xmax = (((center + support + 0.5) as i64).min(in_size as i64) as usize).max(xmin);
            let w: Vec<f64> = (xmin..xmax)
                .map(|x| lanczos((x as f64 - center + 0.5) / filter_scale))
                .collect();
            let total: f64 = w.iter().sum();
            let one = f64::from(1u32 << PRECISION_BITS);
            let fixed = w
                .iter()
                .map(|&k| {
                    let k = if total != 0.0 { k / total } else { k };
                    (k * one + if k < 0.0 { -0.5 } else { 0.5 }) as i64
                })
                .collect();
            (xmin, fixed)
        })
        .collect()
}

/// Rounds a fixed-point sum (which started at one half) to a byte, clamping.
fn clip8(sum: i64) -> u8 {
    (sum >> PRECISION_BITS).clamp(0, 255) as u8
}

/// One pass over `lines` lines; `src_at(line, i)` / `dst_at(line, i)` are the byte offsets of
/// pixel `i` of `line`.
fn pass(
    src: &[u8],
    dst: &mut [u8],
    lines: usize,
    coeffs: &[(usize, Vec<i64>)],
    src_at: impl Fn(usize, usize) -> usize,
    dst_at: impl Fn(usize, usize) -> usize,
) {
    for line in 0..lines {
        for (o, (first, k)) in coeffs.iter().enumerate() {
            for c in 0..3 {
                let mut sum = 1i64 << (PRECISION_BITS - 1);
                for (t, &w) in k.iter().enumerate() {
                    sum += i64::from(src[src_at(line, first + t) + c]) * w;
                }
                dst[dst_at(line, o) + c] = clip8(sum);
            }
        }
    }
}

/// `image` (whose `data` holds `width × height × 3` bytes, checked by the caller) resampled to
/// `width × height`.
pub(crate) fn lanczos_rgb(image: &RgbImage, width: usize, height: usize) -> RgbImage {
    let (w0, h0) = (image.width, image.height);
    let mut mid = vec![0u8; width * h0 * 3];
    if width == w0 {
        mid.copy_from_slice(&image.data);
    } else {
        let at_src = |y: usize, x: usize| (y * w0 + x) * 3;
        let at_mid = |y: usize, x: usize| (y * width + x) * 3;
        pass(
            &image.data,
            &mut mid,
            h0,
            &coefficients(w0, width),
            at_src,
            at_mid,
        );
    }
    if height == h0 {
        return RgbImage {
            width,
            height,
            data: mid,
        };
    }
    let mut out = vec![0u8; width * height * 3];
    let at = |x: usize, y: usize| (y * width + x) * 3;
    pass(&mid, &mut out, width, &coefficients(h0, height), at, at);
    RgbImage {
        width,
        height,
        data: out,
    }
}
