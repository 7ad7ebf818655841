//! [`BackendStorage`] for device memory: each op allocates its output from the device's pool and
//! runs our kernels (`ops/`, `kernels/*.cu`) or a GEMM; nothing crosses to the host except
//! `to_host`. Weights of another dtype than the activation are converted on the device.

use super::convolution;
use super::device::Gemm;
use super::error::CudaError;
use super::ops::{attention as attn, elementwise as ew, layout, norm, reduce};
use super::storage::{CudaStorage, engine_err};
use crate::engine::DType;
use crate::engine::backend::{Arg, BackendStorage};
use crate::engine::cpu::{CpuSlice, CpuStorage};
use crate::engine::error::Result;
use crate::engine::op::{
    AttnGeom, AxisGeom, BinaryOp, BroadcastGeom, Conv2dGeom, GroupNormGeom, LinearGeom, MatmulGeom,
    PadGeom, ReduceOp, SinusoidGeom, StridedGeom, UnaryOp, View,
};

use super::device::CudaDevice;

/// Runs `f`, naming `op` in any error.
fn on<T>(op: &'static str, f: impl FnOnce() -> std::result::Result<T, CudaError>) -> Result<T> {
    f().map_err(|e| engine_err(op, e))
}

impl CudaStorage {
    /// A fresh output of `n` elements in this storage's dtype, filled by `f(out_ptr)`.
    fn produce(
        &self,
        op: &'static str,
        n: usize,
        f: impl FnOnce(u64) -> std::result::Result<(), CudaError>,
    ) -> Result<CudaStorage> {
        on(op, || {
            let out = CudaStorage::alloc(self.dev(), n, self.dtype())?;
            f(out.base())?;
            Ok(out)
        })
    }

    /// Attention for head sizes beyond the fused kernels' (the VAE's single 512-wide head):
    /// scores by GEMM, a softmax, then a GEMM with `v`. Holds one `lq × lk` score matrix per
    /// batch·head, which the VAE (one head, 4096² scores at 512×512) affords.
    fn attention_unfused(
        &self,
        q: View,
        k: Arg<'_, Self>,
        v: Arg<'_, Self>,
        g: AttnGeom,
    ) -> Result<CudaStorage> {
        if g.causal {
            return Err(engine_err(
                "attention",
                CudaError::Unsupported(format!(
                    "causal attention with head size {} > {}",
                    g.d,
                    attn::MAX_HEAD_DIM
                )),
            ));
        }
        let (dt, rt) = (self.dtype(), self.dev().rt());
        self.produce("attention", q.len, |out| {
            let scores = CudaStorage::alloc(self.dev(), g.bh * g.lq * g.lk, dt)?;
            let base = Gemm {
                dtype: dt,
                m: g.lq,
                n: g.lk,
                k: g.d,
                a: self.ptr(q),
                lda: g.d,
                stride_a: g.lq * g.d,
                trans_a: false,
                b: k.0.ptr(k.1),
                ldb: g.d,
                stride_b: g.lk * g.d,
                trans_b: true,
                c: scores.base(),
                ldc: g.lk,
                stride_c: g.lq * g.lk,
                batch: g.bh,
                accumulate: false,
                bias: 0,
            };
            self.gemm(base)?;
            let n = g.bh * g.lq * g.lk;
            ew::affine(rt, dt, scores.base(), scores.base(), n, g.scale, 0.0)?;
            reduce::softmax_last(rt, dt, scores.base(), scores.base(), g.bh * g.lq, g.lk)?;
            self.gemm(Gemm {
                m: g.lq,
                n: g.d,
                k: g.lk,
                a: scores.base(),
                lda: g.lk,
                stride_a: g.lq * g.lk,
                b: v.0.ptr(v.1),
                ldb: g.d,
                stride_b: g.lk * g.d,
                trans_b: false,
                c: out,
                ldc: g.d,
                stride_c: g.lq * g.d,
                ..base
            })
        })
    }

    /// Runs one GEMM on this storage's device.
    fn gemm(&self, g: Gemm) -> std::result::Result<(), CudaError> {
        self.dev().rt().gemm(&g)
    }
}

impl BackendStorage for CudaStorage {
    type Device = CudaDevice;

    fn dtype(&self) -> DType {
        CudaStorage::dtype(self)
    }

    fn upload(device: &CudaDevice, host: CpuSlice<'_>) -> Result<CudaStorage> {
        CudaStorage::upload_host(device, host)
    }

    fn to_host(&self, v: View) -> Result<CpuStorage> {
        on("download", || self.download(v))
    }

    fn to_dtype(&self, v: View, dtype: DType) -> Result<CudaStorage> {
        on("to_dtype", || Ok(self.as_dtype(v, dtype)?.0))
    }

    fn unary(&self, v: View, op: UnaryOp) -> Result<CudaStorage> {
        let (l, dt, x) = (self.dev().rt(), self.dtype(), self.ptr(v));
        self.produce(op.kernel_name(), v.len, |y| match op {
            UnaryOp::Affine { mul, add } => ew::affine(l, dt, x, y, v.len, mul, add),
            UnaryOp::Clamp { min, max } => ew::clamp(l, dt, x, y, v.len, min, max),
            _ => ew::unary(l, op.kernel_name(), dt, x, y, v.len),
        })
    }

    fn binary(
        &self,
        v: View,
        rhs: Arg<'_, Self>,
        op: BinaryOp,
        g: &BroadcastGeom,
    ) -> Result<CudaStorage> {
        let n = g.dims.iter().product();
        self.produce(op.kernel_name(), n, |out| {
            let (a, b) = (self.ptr(v), rhs.0.ptr(rhs.1));
            ew::binary(
                self.dev().rt(),
                op.kernel_name(),
                self.dtype(),
                a,
                b,
                out,
                &g.dims,
                &g.lhs_strides,
                &g.rhs_strides,
            )
        })
    }

    fn reduce(&self, v: View, op: ReduceOp, g: AxisGeom) -> Result<CudaStorage> {
        let scale = match op {
            ReduceOp::Sum => 1.0,
            ReduceOp::Mean => 1.0 / g.mid.max(1) as f32,
        };
        self.produce("reduce", g.outer * g.inner, |out| {
            reduce::sum_middle(
                self.dev().rt(),
                self.dtype(),
                self.ptr(v),
                out,
                g.outer,
                g.mid,
                g.inner,
                scale,
            )
        })
    }

    fn softmax_last_dim(&self, v: View, cols: usize) -> Result<CudaStorage> {
        let rows = v.len.checked_div(cols).unwrap_or(0);
        self.produce("softmax_last_dim", v.len, |out| {
            reduce::softmax_last(self.dev().rt(), self.dtype(), self.ptr(v), out, rows, cols)
        })
    }

    fn geglu(&self, v: View, half: usize) -> Result<CudaStorage> {
        let rows = if half == 0 { 0 } else { v.len / (2 * half) };
        self.produce("geglu", rows * half, |out| {
            ew::geglu(self.dev().rt(), self.dtype(), self.ptr(v), out, rows, half)
        })
    }

    fn matmul(&self, v: View, rhs: Arg<'_, Self>, g: &MatmulGeom) -> Result<CudaStorage> {
        let (m, k, n, batch) = (g.m, g.k, g.n, g.batch());
        self.produce("matmul", batch * m * n, |out| {
            let one =
                |a_idx: usize, b_idx: usize, c_idx: usize, count: usize, sa: usize, sb: usize| {
                    Gemm {
                        dtype: self.dtype(),
                        m,
                        n,
                        k,
                        a: self.ptr(v) + (a_idx * m * k * self.dtype().size_in_bytes()) as u64,
                        lda: k,
                        stride_a: sa,
                        trans_a: false,
                        b: rhs.0.ptr(rhs.1) + (b_idx * k * n * self.dtype().size_in_bytes()) as u64,
                        ldb: n,
                        stride_b: sb,
                        trans_b: false,
                        c: out + (c_idx * m * n * self.dtype().size_in_bytes()) as u64,
                        ldc: n,
                        stride_c: m * n,
                        batch: count,
                        accumulate: false,
                        bias: 0,
                    }
                };
            // One strided-batched call when each operand's matrices are evenly spaced (the
            // usual case: equal or fully broadcast batches); otherwise one call per product.
            let (a1, b1) = if batch > 1 { g.locate(1) } else { (0, 0) };
            if (0..batch).all(|i| g.locate(i) == (i * a1, i * b1)) {
                return self.gemm(one(0, 0, 0, batch, a1 * m * k, b1 * k * n));
            }
            (0..batch).try_for_each(|i| {
                let (ai, bi) = g.locate(i);
                self.gemm(one(ai, bi, i, 1, 0, 0))
            })
        })
    }

    fn linear(
        &self,
        v: View,
        weight: Arg<'_, Self>,
        bias: Option<Arg<'_, Self>>,
        g: LinearGeom,
    ) -> Result<CudaStorage> {
        if g.geglu {
            // The product (bias in cuBLASLt's epilogue), then our GEGLU kernel.
            let full = self.linear(v, weight, bias, LinearGeom { geglu: false, ..g })?;
            let len = g.rows * g.n_out;
            return full.geglu(View { start: 0, len }, g.n_out / 2);
        }
        let dt = self.dtype();
        self.produce("linear", g.rows * g.n_out, |out| {
            let (w, wv) = weight.0.as_dtype(weight.1, dt)?;
            // The bias joins the GEMM's epilogue (cuBLASLt on a GPU): no second pass over the
            // output, and one rounding instead of two. The converted copy lives past the call;
            // the stream orders any reuse of its memory after the GEMM.
            let bias = bias.map(|(b, bv)| b.as_dtype(bv, dt)).transpose()?;
            self.gemm(Gemm {
                dtype: dt,
                m: g.rows,
                n: g.n_out,
                k: g.n_in,
                a: self.ptr(v),
                lda: g.n_in,
                stride_a: 0,
                trans_a: false,
                b: w.ptr(wv),
                ldb: g.n_in,
                stride_b: 0,
                trans_b: true,
                c: out,
                ldc: g.n_out,
                stride_c: 0,
                batch: 1,
                accumulate: false,
                bias: bias.as_ref().map_or(0, |(b, bv)| b.ptr(*bv)),
            })
        })
    }

    fn conv2d(
        &self,
        v: View,
        weight: Arg<'_, Self>,
        bias: Option<Arg<'_, Self>>,
        residual: Option<Arg<'_, Self>>,
        g: Conv2dGeom,
    ) -> Result<CudaStorage> {
        let dt = self.dtype();
        self.produce("conv2d", g.n * g.o * g.ho * g.wo, |out| {
            // The converted copies live until the (possibly measured, repeated) runs are issued;
            // the stream orders any reuse of their memory after them.
            let (w, wv) = weight.0.as_dtype(weight.1, dt)?;
            let bias = bias.map(|(b, bv)| b.as_dtype(bv, DType::F32)).transpose()?;
            let residual = residual.map(|(r, rv)| r.as_dtype(rv, dt)).transpose()?;
            let call = convolution::ConvCall {
                dtype: dt,
                x: self.ptr(v),
                w: w.ptr(wv),
                bias: bias.as_ref().map(|(b, bv)| b.ptr(*bv)),
                residual: residual.as_ref().map(|(r, rv)| r.ptr(*rv)),
                out,
                g,
            };
            convolution::conv2d(self.dev(), &call)
        })
    }

    fn layer_norm(
        &self,
        v: View,
        weight: Arg<'_, Self>,
        bias: Arg<'_, Self>,
        c: usize,
        eps: f32,
    ) -> Result<CudaStorage> {
        let rows = v.len.checked_div(c).unwrap_or(0);
        self.produce("layer_norm", v.len, |out| {
            let (w, wv) = weight.0.as_dtype(weight.1, DType::F32)?;
            let (b, bv) = bias.0.as_dtype(bias.1, DType::F32)?;
            norm::layer_norm(
                self.dev().rt(),
                self.dtype(),
                self.ptr(v),
                out,
                w.ptr(wv),
                b.ptr(bv),
                rows,
                c,
                eps,
            )
        })
    }

    fn group_norm(
        &self,
        v: View,
        weight: Arg<'_, Self>,
        bias: Arg<'_, Self>,
        g: GroupNormGeom,
    ) -> Result<CudaStorage> {
        let per_sample = g.c * g.spatial;
        let n = v.len.checked_div(per_sample).unwrap_or(0);
        self.produce("group_norm", v.len, |out| {
            let (w, wv) = weight.0.as_dtype(weight.1, DType::F32)?;
            let (b, bv) = bias.0.as_dtype(bias.1, DType::F32)?;
            let geom = norm::GroupNormGeom {
                n,
                c: g.c,
                spatial: g.spatial,
                groups: g.groups,
                eps: g.eps,
                silu: g.silu,
            };
            norm::group_norm(
                self.dev().rt(),
                self.dtype(),
                self.ptr(v),
                out,
                w.ptr(wv),
                b.ptr(bv),
                geom,
            )
        })
    }

    fn attention(
        &self,
        q: View,
        k: Arg<'_, Self>,
        v: Arg<'_, Self>,
        g: AttnGeom,
    ) -> Result<CudaStorage> {
        let rt = self.dev().rt();
        if g.d > attn::MAX_HEAD_DIM {
            return self.attention_unfused(q, k, v, g);
        }
        self.produce("attention", q.len, |out| {
            attn::attention(
                rt,
                self.dtype(),
                self.ptr(q),
                k.0.ptr(k.1),
                v.0.ptr(v.1),
                out,
                g,
                rt.tensor_cores(),
            )
        })
    }

    fn upsample_nearest2x(
        &self,
        v: View,
        planes: usize,
        h: usize,
        w: usize,
    ) -> Result<CudaStorage> {
        self.produce("upsample_nearest2x", v.len * 4, |out| {
            layout::upsample_nearest2x(
                self.dev().rt(),
                self.dtype(),
                self.ptr(v),
                out,
                planes,
                h,
                w,
            )
        })
    }

    fn pad2d(&self, v: View, g: PadGeom) -> Result<CudaStorage> {
        let n = g.planes * (g.h + g.top + g.bottom) * (g.w + g.left + g.right);
        self.produce("pad2d", n, |out| {
            layout::pad2d(self.dev().rt(), self.dtype(), self.ptr(v), out, g)
        })
    }

    fn strided_copy(&self, g: &StridedGeom) -> Result<CudaStorage> {
        let n = g.dims.iter().product();
        self.produce("strided_copy", n, |out| {
            layout::strided_copy(
                self.dev().rt(),
                self.dtype(),
                self.base(),
                out,
                g.start,
                &g.dims,
                &g.strides,
            )
        })
    }

    fn cat(
        parts: &[Arg<'_, Self>],
        mids: &[usize],
        outer: usize,
        inner: usize,
    ) -> Result<CudaStorage> {
        let Some((first, _)) = parts.first() else {
            return Err(engine_err(
                "cat",
                CudaError::Unsupported("cat of no parts".into()),
            ));
        };
        let total: usize = mids.iter().sum();
        first.produce("cat", outer * total * inner, |out| {
            let mut col = 0;
            for ((s, v), &mid) in parts.iter().zip(mids) {
                layout::copy_block(
                    s.dev().rt(),
                    s.dtype(),
                    s.ptr(*v),
                    out,
                    col * inner,
                    outer,
                    mid * inner,
                    total * inner,
                )?;
                col += mid;
            }
            Ok(())
        })
    }

    fn index_select(&self, v: View, ids: &[u32], g: AxisGeom) -> Result<CudaStorage> {
        self.produce("index_select", g.outer * ids.len() * g.inner, |out| {
            // Uploaded once per distinct array; a full cache falls back to a buffer of its own.
            let mut own = None;
            let ids_ptr = match self.dev().cached_ids(ids)? {
                Some(p) => p,
                None => {
                    let buf = CudaStorage::alloc(self.dev(), ids.len().max(1) * 2, DType::F16)?;
                    self.dev()
                        .rt()
                        .htod(buf.base(), bytemuck::cast_slice(ids))?;
                    own.insert(buf).base()
                }
            };
            layout::index_select(
                self.dev().rt(),
                self.dtype(),
                self.ptr(v),
                ids_ptr,
                out,
                g.outer,
                g.mid,
                g.inner,
                ids.len(),
            )
        })
    }

    fn sinusoids(device: &CudaDevice, timesteps: &[f32], g: SinusoidGeom) -> Result<CudaStorage> {
        on("sinusoids", || {
            // The timesteps are the only upload: a few floats instead of the whole table.
            let t = CudaStorage::upload_slice(device, CpuSlice::F32(timesteps))?;
            let out = CudaStorage::alloc(device, timesteps.len() * g.dim, DType::F32)?;
            let (log_max, denom) = crate::engine::cpu::sinusoid::frequency_constants(g);
            ew::timestep_embedding(
                device.rt(),
                t.base(),
                out.base(),
                timesteps.len(),
                g.dim,
                log_max,
                denom,
                g.flip_sin_to_cos,
            )?;
            Ok(out)
        })
    }
}
