//! [`BackendStorage`] for host memory: each op converts its inputs to f32 where needed (borrowed
//! when already f32), runs a kernel of this module, and stores the result in the input's dtype.

use std::borrow::Cow;

use super::fastmath::Activation;
use super::gemm::Products;
use super::profile::scope;
use super::storage::{CpuSlice, CpuStorage};
use super::{attention, conv, elementwise as ew, layout, matmul, norm, sinusoid};
use crate::engine::backend::{Arg, BackendStorage};
use crate::engine::dtype::DType;
use crate::engine::error::Result;
use crate::engine::op::{
    AttnGeom, AxisGeom, BinaryOp, BroadcastGeom, Conv2dGeom, GroupNormGeom, LinearGeom, MatmulGeom,
    PadGeom, ReduceOp, SinusoidGeom, StridedGeom, UnaryOp, View,
};

/// Runs a generic kernel on whichever typed slice `$s` is, producing a storage of the same dtype.
macro_rules! same_dtype {
    ($s:expr, |$v:ident| $body:expr) => {
        match $s {
            CpuSlice::F32($v) => CpuStorage::F32($body),
            CpuSlice::F16($v) => CpuStorage::F16($body),
            CpuSlice::BF16($v) => CpuStorage::BF16($body),
        }
    };
}

/// The elements of an argument as f32 (borrowed when already f32).
fn f32_of<'a>((s, v): Arg<'a, CpuStorage>) -> Result<Cow<'a, [f32]>> {
    Ok(s.view(v)?.to_f32())
}

impl CpuStorage {
    /// `f(elements as f32)` stored back in this storage's dtype.
    fn map_f32(&self, v: View, f: impl FnOnce(&[f32]) -> Vec<f32>) -> Result<CpuStorage> {
        let x = f32_of((self, v))?;
        Ok(CpuStorage::from_f32(f(&x), BackendStorage::dtype(self)))
    }
}

impl BackendStorage for CpuStorage {
    /// The host needs no handle.
    type Device = ();

    fn upload(_device: &(), host: CpuSlice<'_>) -> Result<CpuStorage> {
        Ok(host.to_storage(host.dtype()))
    }

    fn dtype(&self) -> DType {
        match self {
            CpuStorage::F32(_) => DType::F32,
            CpuStorage::F16(_) => DType::F16,
            CpuStorage::BF16(_) => DType::BF16,
            CpuStorage::Shared { dtype, .. } => *dtype,
        }
    }

    fn to_host(&self, v: View) -> Result<CpuStorage> {
        Ok(self.view(v)?.to_storage(BackendStorage::dtype(self)))
    }

    fn to_dtype(&self, v: View, dtype: DType) -> Result<CpuStorage> {
        let _p = scope(|| format!("cast to {dtype:?}"), 0);
        Ok(self.view(v)?.to_storage(dtype))
    }

    fn unary(&self, v: View, op: UnaryOp) -> Result<CpuStorage> {
        let _p = scope(|| op.kernel_name().into(), 0);
        self.map_f32(v, |x| match op {
            UnaryOp::Silu => ew::activation_map(x, Activation::Silu),
            UnaryOp::Gelu => ew::activation_map(x, Activation::Gelu),
            UnaryOp::GeluQuick => ew::activation_map(x, Activation::GeluQuick),
            UnaryOp::Sin => ew::unary_map(x, f32::sin),
            UnaryOp::Cos => ew::unary_map(x, f32::cos),
            UnaryOp::Exp => ew::unary_map(x, f32::exp),
            UnaryOp::Sqrt => ew::unary_map(x, f32::sqrt),
            UnaryOp::Affine { mul, add } => ew::unary_map(x, |x| x * mul + add),
            UnaryOp::Clamp { min, max } => ew::unary_map(x, |x| x.clamp(min, max)),
        })
    }

    fn binary(
        &self,
        v: View,
        rhs: Arg<'_, Self>,
        op: BinaryOp,
        g: &BroadcastGeom,
    ) -> Result<CpuStorage> {
        let _p = scope(|| op.kernel_name().into(), 0);
        let (dims, ls, rs) = (&g.dims, &g.lhs_strides, &g.rhs_strides);
        // Two bf16 operands read in order (a residual add): chunk by chunk, no f32 copies.
        if let (CpuSlice::BF16(a), CpuSlice::BF16(b)) = (self.view(v)?, rhs.0.view(rhs.1)?)
            && ew::is_row_major(dims, ls)
            && ew::is_row_major(dims, rs)
            && a.len() == b.len()
            && a.len() == dims.iter().product::<usize>()
        {
            let out = match op {
                BinaryOp::Add => ew::zip_bf16(a, b, |x, y| x + y),
                BinaryOp::Sub => ew::zip_bf16(a, b, |x, y| x - y),
                BinaryOp::Mul => ew::zip_bf16(a, b, |x, y| x * y),
                BinaryOp::Div => ew::zip_bf16(a, b, |x, y| x / y),
            };
            return Ok(CpuStorage::BF16(out));
        }
        let b = f32_of(rhs)?;
        self.map_f32(v, |a| match op {
            BinaryOp::Add => ew::binary_broadcast(a, &b, dims, ls, rs, |x, y| x + y),
            BinaryOp::Sub => ew::binary_broadcast(a, &b, dims, ls, rs, |x, y| x - y),
            BinaryOp::Mul => ew::binary_broadcast(a, &b, dims, ls, rs, |x, y| x * y),
            BinaryOp::Div => ew::binary_broadcast(a, &b, dims, ls, rs, |x, y| x / y),
        })
    }

    fn reduce(&self, v: View, op: ReduceOp, g: AxisGeom) -> Result<CpuStorage> {
        let _p = scope(|| "reduce".into(), 0);
        let scale = match op {
            ReduceOp::Sum => 1.0,
            ReduceOp::Mean => 1.0 / g.mid.max(1) as f64,
        };
        self.map_f32(v, |x| ew::sum_middle(x, g.outer, g.mid, g.inner, scale))
    }

    fn softmax_last_dim(&self, v: View, cols: usize) -> Result<CpuStorage> {
        let _p = scope(|| "softmax".into(), 0);
        self.map_f32(v, |x| ew::map_rows(x, cols, ew::softmax_row))
    }

    fn geglu(&self, v: View, half: usize) -> Result<CpuStorage> {
        let _p = scope(|| "geglu".into(), 0);
        if let (CpuSlice::BF16(x), true) = (self.view(v)?, half > 0) {
            let out = ew::map_rows_bf16(x, 2 * half, half, |s, d| ew::geglu_rows(d, s, half));
            return Ok(CpuStorage::BF16(out));
        }
        self.map_f32(v, |x| ew::geglu(x, half))
    }

    fn matmul(&self, v: View, rhs: Arg<'_, Self>, g: &MatmulGeom) -> Result<CpuStorage> {
        let macs = (g.batch() * g.m * g.k * g.n) as u64;
        let _p = scope(|| format!("matmul {}x{}x{}", g.m, g.k, g.n), macs);
        let b = f32_of(rhs)?;
        let products = Products::for_dtype(BackendStorage::dtype(self));
        self.map_f32(v, |a| matmul::matmul(a, &b, g, products))
    }

    fn linear(
        &self,
        v: View,
        weight: Arg<'_, Self>,
        bias: Option<Arg<'_, Self>>,
        g: LinearGeom,
    ) -> Result<CpuStorage> {
        let gate = if g.geglu { " + geglu" } else { "" };
        let timing = scope(
            || format!("linear {}->{}{gate}", g.n_in, g.n_out),
            (g.rows * g.n_in * g.n_out) as u64,
        );
        let w = weight.0.view(weight.1)?;
        let bias_f32 = bias.map(f32_of).transpose()?;
        let bias_f32 = bias_f32.as_deref();
        // bf16 products only for bf16 activations (`--precision bf16`), whatever the weight.
        let products = Products::for_dtype(BackendStorage::dtype(self));
        if let (Products::Bf16, CpuSlice::BF16(x)) = (products, self.view(v)?) {
            // Bias, rounding and the GEGLU gate in the kernel's epilogue, where that runs.
            if let Some(out) = matmul::linear_bf16_out(x, w, bias_f32, g) {
                return Ok(CpuStorage::BF16(out));
            }
            if !g.geglu
                && let Some(out) = matmul::linear_bf16_activations(x, w, bias_f32, g)
            {
                return Ok(CpuStorage::from_f32(out, DType::BF16));
            }
        }
        if g.geglu {
            // The product, then the gate as its own pass (each timed as itself).
            drop(timing);
            let full = self.linear(v, weight, bias, LinearGeom { geglu: false, ..g })?;
            let len = g.rows * g.n_out;
            return full.geglu(View { start: 0, len }, g.n_out / 2);
        }
        self.map_f32(v, |x| matmul::linear(x, w, bias_f32, g, products))
    }

    fn conv2d(
        &self,
        v: View,
        weight: Arg<'_, Self>,
        bias: Option<Arg<'_, Self>>,
        residual: Option<Arg<'_, Self>>,
        g: Conv2dGeom,
    ) -> Result<CpuStorage> {
        let macs = (g.n * g.o * g.c * g.kh * g.kw * g.ho * g.wo) as u64;
        let _p = scope(
            || {
                format!(
                    "conv2d {}x{}/{} {}->{} @{}x{}",
                    g.kh, g.kw, g.stride, g.c, g.o, g.ho, g.wo
                )
            },
            macs,
        );
        let w = weight.0.view(weight.1)?;
        let bias = bias.map(f32_of).transpose()?;
        let products = Products::for_dtype(BackendStorage::dtype(self));
        if let (Products::Bf16, CpuSlice::BF16(x)) = (products, self.view(v)?) {
            let res = residual.map(|(s, rv)| s.view(rv)).transpose()?;
            if let Some(out) = conv::conv2d_bf16_activations(x, w, bias.as_deref(), res, g) {
                return Ok(CpuStorage::BF16(out));
            }
        }
        let residual = residual.map(f32_of).transpose()?;
        self.map_f32(v, |x| {
            conv::conv2d(x, w, bias.as_deref(), residual.as_deref(), g, products)
        })
    }

    fn layer_norm(
        &self,
        v: View,
        weight: Arg<'_, Self>,
        bias: Arg<'_, Self>,
        c: usize,
        eps: f32,
    ) -> Result<CpuStorage> {
        let _p = scope(|| "layer_norm".into(), 0);
        let (w, b) = (f32_of(weight)?, f32_of(bias)?);
        if let (CpuSlice::BF16(x), true) = (self.view(v)?, c > 0) {
            let out = ew::map_rows_bf16(x, c, c, |src, dst| {
                for (s, d) in src.chunks(c).zip(dst.chunks_mut(c)) {
                    norm::layer_norm_row(s, d, &w, &b, eps);
                }
            });
            return Ok(CpuStorage::BF16(out));
        }
        self.map_f32(v, |x| norm::layer_norm(x, c, &w, &b, eps))
    }

    fn group_norm(
        &self,
        v: View,
        weight: Arg<'_, Self>,
        bias: Arg<'_, Self>,
        g: GroupNormGeom,
    ) -> Result<CpuStorage> {
        let _p = scope(
            || {
                if g.silu {
                    "group_norm+silu"
                } else {
                    "group_norm"
                }
                .into()
            },
            0,
        );
        let (w, b) = (f32_of(weight)?, f32_of(bias)?);
        if let CpuSlice::BF16(x) = self.view(v)? {
            return Ok(CpuStorage::BF16(norm::group_norm_bf16(x, &w, &b, g)));
        }
        self.map_f32(v, |x| norm::group_norm(x, &w, &b, g))
    }

    fn attention(
        &self,
        q: View,
        k: Arg<'_, Self>,
        v: Arg<'_, Self>,
        g: AttnGeom,
    ) -> Result<CpuStorage> {
        let _p = scope(
            || format!("attention {}x{} d{}", g.lq, g.lk, g.d),
            (2 * g.bh * g.lq * g.lk * g.d) as u64,
        );
        let (k, v) = (f32_of(k)?, f32_of(v)?);
        let products = Products::for_dtype(BackendStorage::dtype(self));
        self.map_f32(q, |q| attention::attention(q, &k, &v, g, products))
    }

    fn upsample_nearest2x(
        &self,
        v: View,
        _planes: usize,
        h: usize,
        w: usize,
    ) -> Result<CpuStorage> {
        let _p = scope(|| "upsample".into(), 0);
        // A copy: in the stored dtype, with no f32 round trip.
        Ok(same_dtype!(self.view(v)?, |s| conv::upsample_nearest2x(
            s, h, w
        )))
    }

    fn pad2d(&self, v: View, g: PadGeom) -> Result<CpuStorage> {
        let _p = scope(|| "pad".into(), 0);
        Ok(same_dtype!(self.view(v)?, |s| layout::pad2d(s, g)))
    }

    fn strided_copy(&self, g: &StridedGeom) -> Result<CpuStorage> {
        let _p = scope(|| "strided copy".into(), 0);
        Ok(same_dtype!(self.slice()?, |s| layout::strided_copy(
            s, g.start, &g.dims, &g.strides
        )))
    }

    fn cat(
        parts: &[Arg<'_, Self>],
        mids: &[usize],
        outer: usize,
        inner: usize,
    ) -> Result<CpuStorage> {
        let _p = scope(|| "cat".into(), 0);
        let slices = parts
            .iter()
            .map(|(s, v)| s.view(*v))
            .collect::<Result<Vec<_>>>()?;
        macro_rules! cat_as {
            ($variant:ident) => {{
                let typed: Vec<_> = slices
                    .iter()
                    .zip(mids)
                    .map(|(s, &mid)| match s {
                        CpuSlice::$variant(v) => Ok((*v, mid)),
                        _ => Err(crate::engine::error::EngineError::invalid(
                            "cat",
                            "parts differ in dtype",
                        )),
                    })
                    .collect::<Result<_>>()?;
                CpuStorage::$variant(layout::cat(&typed, outer, inner))
            }};
        }
        Ok(match slices.first() {
            Some(CpuSlice::F16(_)) => cat_as!(F16),
            Some(CpuSlice::BF16(_)) => cat_as!(BF16),
            _ => cat_as!(F32),
        })
    }

    fn index_select(&self, v: View, ids: &[u32], g: AxisGeom) -> Result<CpuStorage> {
        let _p = scope(|| "index_select".into(), 0);
        Ok(same_dtype!(self.view(v)?, |s| layout::index_select(
            s, g.outer, g.mid, g.inner, ids
        )))
    }

    fn sinusoids(_device: &(), timesteps: &[f32], g: SinusoidGeom) -> Result<CpuStorage> {
        Ok(CpuStorage::F32(sinusoid::embed(timesteps, g)))
    }
}
