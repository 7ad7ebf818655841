//! Upsampling, padding, strided copies, concatenation, gathers and casts. These move or convert
//! values, so they must match exactly.

use super::*;
use crate::engine::cpu::{conv as cpu_conv, layout as cpu_layout};
use crate::engine::cuda::ops::elementwise::contiguous_strides;
use crate::engine::cuda::ops::layout::{
    cast, copy_block, index_select, pad2d, strided_copy, upsample_nearest2x,
};
use crate::engine::op::PadGeom;

#[test]
fn upsample_nearest2x_matches_the_cpu() {
    for dtype in DTYPES {
        let (planes, h, w) = (7, 5, 9);
        let x = rounded(dtype, &random(planes * h * w, 71, 4.0));
        let mut xb = Buf::from_f32(dtype, &x);
        let mut out = Buf::zeros(dtype, planes * 4 * h * w);
        upsample_nearest2x(&L, dtype, xb.ptr(), out.ptr(), planes, h, w).unwrap();
        assert_close(
            &format!("upsample_nearest2x_{dtype}"),
            &out.to_f32(),
            &cpu_conv::upsample_nearest2x(&x, h, w),
            0.0,
        );
    }
}

#[test]
fn pad2d_matches_a_direct_definition() {
    for dtype in DTYPES {
        let (planes, h, w) = (3, 6, 5);
        let p = PadGeom {
            planes,
            h,
            w,
            left: 2,
            right: 1,
            top: 0,
            bottom: 3,
        };
        let x = rounded(dtype, &random(planes * h * w, 72, 4.0));
        let (oh, ow) = (h + p.top + p.bottom, w + p.left + p.right);
        let mut want = vec![0f32; planes * oh * ow];
        for pl in 0..planes {
            for y in 0..h {
                for xx in 0..w {
                    want[(pl * oh + y + p.top) * ow + xx + p.left] = x[(pl * h + y) * w + xx];
                }
            }
        }
        let mut xb = Buf::from_f32(dtype, &x);
        let mut out = Buf::zeros(dtype, want.len());
        pad2d(&L, dtype, xb.ptr(), out.ptr(), p).unwrap();
        assert_close(&format!("pad2d_{dtype}"), &out.to_f32(), &want, 0.0);
    }
}

#[test]
fn strided_copy_covers_permute_and_narrow() {
    for dtype in DTYPES {
        // A [2, 3, 5, 7] tensor permuted to (0, 2, 3, 1) (the NCHW -> NHWC of attention blocks),
        // and narrowed to [:, 1..3, 2..5, :] with its offset.
        let shape = [2, 3, 5, 7];
        let cs = contiguous_strides(&shape);
        let x = rounded(dtype, &random(shape.iter().product(), 73, 4.0));
        let views: [(usize, Vec<usize>, Vec<usize>); 2] = [
            (0, vec![2, 5, 7, 3], vec![cs[0], cs[2], cs[3], cs[1]]),
            (cs[1] + 2 * cs[2], vec![2, 2, 3, 7], cs.clone()),
        ];
        let mut xb = Buf::from_f32(dtype, &x);
        for (offset, dims, strides) in views {
            let mut out = Buf::zeros(dtype, dims.iter().product());
            strided_copy(&L, dtype, xb.ptr(), out.ptr(), offset, &dims, &strides).unwrap();
            let want = cpu_layout::strided_copy(&x, offset, &dims, &strides);
            assert_close(
                &format!("strided_copy_{dtype} {dims:?}"),
                &out.to_f32(),
                &want,
                0.0,
            );
        }
    }
}

#[test]
fn copy_block_concatenates_like_the_cpu() {
    for dtype in DTYPES {
        // cat of [3, 4, 5] and [3, 9, 5] along dim 1: rows of len·inner per outer index.
        let (outer, inner, lens) = (3, 5, [4usize, 9]);
        let parts: Vec<Vec<f32>> = lens
            .iter()
            .enumerate()
            .map(|(i, &l)| rounded(dtype, &random(outer * l * inner, 80 + i as u64, 4.0)))
            .collect();
        let total: usize = lens.iter().sum();
        let mut out = Buf::zeros(dtype, outer * total * inner);
        let mut col = 0;
        for (p, &len) in parts.iter().zip(&lens) {
            let mut pb = Buf::from_f32(dtype, p);
            copy_block(
                &L,
                dtype,
                pb.ptr(),
                out.ptr(),
                col * inner,
                outer,
                len * inner,
                total * inner,
            )
            .unwrap();
            col += len;
        }
        let refs: Vec<(&[f32], usize)> = parts
            .iter()
            .zip(lens)
            .map(|(p, l)| (p.as_slice(), l))
            .collect();
        assert_close(
            &format!("copy_block_{dtype}"),
            &out.to_f32(),
            &cpu_layout::cat(&refs, outer, inner),
            0.0,
        );
    }
}

#[test]
fn index_select_matches_the_cpu() {
    for dtype in DTYPES {
        let (outer, d, inner) = (3, 11, 6);
        let ids = [4u32, 0, 10, 4, 7];
        let x = rounded(dtype, &random(outer * d * inner, 74, 4.0));
        let mut xb = Buf::from_f32(dtype, &x);
        let mut ib = Buf::from_u32(&ids);
        let mut out = Buf::zeros(dtype, outer * ids.len() * inner);
        index_select(
            &L,
            dtype,
            xb.ptr(),
            ib.ptr(),
            out.ptr(),
            outer,
            d,
            inner,
            ids.len(),
        )
        .unwrap();
        assert_close(
            &format!("index_select_{dtype}"),
            &out.to_f32(),
            &cpu_layout::index_select(&x, outer, d, inner, &ids),
            0.0,
        );
    }
}

#[test]
fn casts_round_like_the_half_crate() {
    // Values across f16's range, including its subnormals, overflow and ties.
    let mut x = random(2000, 75, 70_000.0);
    x.extend([
        0.0,
        -0.0,
        1e-7,
        -3e-5,
        65504.0,
        65520.0,
        1.0 + 1.0 / 2048.0,
        1.0 + 3.0 / 2048.0,
        f32::INFINITY,
    ]);
    x.extend(random(500, 76, 1e-4));
    for from in DTYPES {
        let src = rounded(from, &x);
        let mut sb = Buf::from_f32(from, &x);
        for to in DTYPES {
            let mut out = Buf::zeros(to, x.len());
            cast(&L, from, to, sb.ptr(), out.ptr(), x.len()).unwrap();
            let got = out.to_f32();
            let want = rounded(to, &src);
            let same = got
                .iter()
                .zip(&want)
                .all(|(g, w)| g.to_bits() == w.to_bits());
            assert!(
                same,
                "cast_{from}_{to} differs from the half crate's rounding"
            );
        }
    }
}
