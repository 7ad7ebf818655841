//! Unary maps, affine/clamp, broadcast binary ops and GEGLU against `cpu::elementwise`.

use super::*;
use crate::engine::cpu::elementwise as cpu;
use crate::engine::cpu::sinusoid::{frequency_constants, sinusoidal_embedding};
use crate::engine::cuda::ops::elementwise::{
    affine, binary, clamp, contiguous_strides, geglu, timestep_embedding, unary,
};
use crate::engine::op::SinusoidGeom;

/// 1-D grid-stride kernels: a size that leaves a partial last block.
const N: usize = 1000 * 3 + 17;

#[test]
fn unary_maps_match_the_cpu() {
    type F = fn(f32) -> f32;
    let ops: [(&str, F); 7] = [
        ("silu", cpu::silu),
        ("gelu", cpu::gelu),
        ("gelu_quick", cpu::gelu_quick),
        ("sin", f32::sin),
        ("cos", f32::cos),
        ("exp", f32::exp),
        ("sqrt", f32::sqrt),
    ];
    for dtype in DTYPES {
        for (name, f) in ops {
            // sin/cos up to 1000 rad: timestep embeddings' range, where the kernel's own range
            // reduction (not fast-math __sinf's) sets the accuracy.
            let scale = match name {
                "exp" => 4.0,
                "sin" | "cos" => 1000.0,
                _ => 6.0,
            };
            let mut x = random(N, 7, scale);
            if name == "sqrt" {
                x.iter_mut().for_each(|v| *v = v.abs());
            }
            let xr = rounded(dtype, &x);
            let mut xb = Buf::from_f32(dtype, &x);
            let mut yb = Buf::zeros(dtype, N);
            unary(&L, name, dtype, xb.ptr(), yb.ptr(), N).unwrap();
            let want = cpu::unary_map(&xr, f);
            // f32 GELU: the CPU evaluates Numerical Recipes' erfc in f32 (relative error below
            // 5e-6), the kernel uses erff; they agree within 1e-5.
            assert_close(&format!("{name}_{dtype}"), &yb.to_f32(), &want, tol(dtype));
        }
    }
}

#[test]
fn affine_and_clamp_match_the_cpu() {
    for dtype in DTYPES {
        let x = random(N, 3, 3.0);
        let xr = rounded(dtype, &x);
        let mut xb = Buf::from_f32(dtype, &x);
        let mut yb = Buf::zeros(dtype, N);
        affine(&L, dtype, xb.ptr(), yb.ptr(), N, 0.18215, -0.5).unwrap();
        assert_close(
            &format!("affine_{dtype}"),
            &yb.to_f32(),
            &cpu::unary_map(&xr, |v| v * 0.18215 - 0.5),
            tol(dtype),
        );
        clamp(&L, dtype, xb.ptr(), yb.ptr(), N, -1.0, 0.75).unwrap();
        assert_close(
            &format!("clamp_{dtype}"),
            &yb.to_f32(),
            &cpu::unary_map(&xr, |v| v.clamp(-1.0, 0.75)),
            0.0,
        );
    }
}

/// Strides of a broadcast input of shape `shape` (same rank as `dims`, 1 on broadcast dims).
fn bcast_strides(shape: &[usize]) -> Vec<usize> {
    let c = contiguous_strides(shape);
    shape
        .iter()
        .zip(c)
        .map(|(&d, s)| if d == 1 { 0 } else { s })
        .collect()
}

#[test]
fn broadcast_binary_ops_match_the_cpu() {
    // (output dims, a's shape, b's shape): a per-channel bias, a row vector, both sides
    // broadcasting, rank 7 that merges to ≤ 6, and the contiguous fast path.
    let cases: [(&[usize], &[usize], &[usize]); 5] = [
        (&[2, 5, 7, 9], &[2, 5, 7, 9], &[1, 5, 1, 1]),
        (&[3, 77, 13], &[3, 77, 13], &[1, 1, 13]),
        (&[4, 1, 6, 5], &[4, 1, 1, 5], &[1, 1, 6, 1]),
        (
            &[2, 3, 2, 3, 2, 3, 5],
            &[2, 3, 2, 3, 2, 3, 5],
            &[1, 1, 1, 1, 1, 1, 5],
        ),
        (&[7, 131], &[7, 131], &[7, 131]),
    ];
    type F = fn(f32, f32) -> f32;
    let ops: [(&str, F); 4] = [
        ("add", |a, b| a + b),
        ("sub", |a, b| a - b),
        ("mul", |a, b| a * b),
        ("div", |a, b| a / b),
    ];
    for dtype in DTYPES {
        for (ci, (dims, ash, bsh)) in cases.iter().enumerate() {
            let (na, nb): (usize, usize) = (ash.iter().product(), bsh.iter().product());
            let n: usize = dims.iter().product();
            let a = random(na, 11 + ci as u64, 2.0);
            // Divisors kept away from 0 so the f16 comparison is about the kernel, not 1/ε.
            let b: Vec<f32> = random(nb, 5 + ci as u64, 1.0)
                .iter()
                .map(|v| v + v.signum() * 0.5)
                .collect();
            let (ar, br) = (rounded(dtype, &a), rounded(dtype, &b));
            let (sa, sb) = (bcast_strides(ash), bcast_strides(bsh));
            let (mut ab, mut bb) = (Buf::from_f32(dtype, &a), Buf::from_f32(dtype, &b));
            for (name, f) in ops {
                let mut out = Buf::zeros(dtype, n);
                binary(
                    &L,
                    name,
                    dtype,
                    ab.ptr(),
                    bb.ptr(),
                    out.ptr(),
                    dims,
                    &sa,
                    &sb,
                )
                .unwrap();
                let want = cpu::binary_broadcast(&ar, &br, dims, &sa, &sb, f);
                assert_close(
                    &format!("{name}_{dtype} {dims:?}"),
                    &out.to_f32(),
                    &want,
                    tol(dtype),
                );
            }
        }
    }
}

#[test]
fn broadcast_beyond_rank_six_is_refused_not_miscomputed() {
    // Seven dims where a alternates broadcast and not: nothing merges.
    let dims = [2, 2, 2, 2, 2, 2, 2];
    let sa = [0, 32, 0, 8, 0, 2, 0];
    let sb = contiguous_strides(&dims);
    let err = binary(&L, "add", DType::F32, 0, 0, 0, &dims, &sa, &sb).unwrap_err();
    assert!(err.to_string().contains("non-mergeable"), "{err}");
}

#[test]
fn geglu_matches_the_cpu() {
    for dtype in DTYPES {
        let (rows, half) = (37, 161);
        let x = random(rows * 2 * half, 21, 3.0);
        let mut xb = Buf::from_f32(dtype, &x);
        let mut out = Buf::zeros(dtype, rows * half);
        geglu(&L, dtype, xb.ptr(), out.ptr(), rows, half).unwrap();
        assert_close(
            &format!("geglu_{dtype}"),
            &out.to_f32(),
            &cpu::geglu(&rounded(dtype, &x), half),
            tol(dtype),
        );
    }
}

#[test]
fn timestep_embeddings_match_the_cpu() {
    // SD 1.5's 320 columns with flip (diffusers' UNet) at timesteps across the schedule, and an
    // odd dim with a shift and no flip (the trailing zero column, the other half order).
    // Tolerance 1e-4: each step is rounded like the CPU's, so the only difference is a last-ulp
    // disagreement between libm's f32 exp/sin/cos and the double ones rounded to f32; one ulp
    // of a frequency moves t·f by at most 999 · 6e-8 = 6e-5, and sin/cos by as much.
    let t = [999.0f32, 500.5, 1.0, 0.0, 47.25];
    for (dim, flip, shift) in [(320, true, 0.0), (7, false, 1.0)] {
        let g = SinusoidGeom {
            dim,
            flip_sin_to_cos: flip,
            freq_shift: shift,
        };
        let mut tb = Buf::from_f32(DType::F32, &t);
        let mut out = Buf::zeros(DType::F32, t.len() * dim);
        let (log_max, denom) = frequency_constants(g);
        timestep_embedding(&L, tb.ptr(), out.ptr(), t.len(), dim, log_max, denom, flip).unwrap();
        let want = sinusoidal_embedding(&t, dim, flip, shift);
        assert_close(
            &format!("timestep_embedding dim {dim}"),
            &out.to_f32(),
            &want,
            1e-4,
        );
    }
}
