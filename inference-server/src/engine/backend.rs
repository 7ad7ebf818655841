//! The one trait a backend implements: every storage-level op the models use.
//!
//! It has no default methods on purpose: a new backend (CUDA next) that misses an op does not
//! compile, instead of failing at run time. Shapes are checked in `ops/` before a backend is
//! called; geometry arrives validated (see `op.rs`). Each op returns a new storage holding just
//! its result, in the dtype of its (first) input: a backend may compute in f32 inside.

use super::dtype::DType;
use super::error::Result;
use super::op::{
    AttnGeom, AxisGeom, BinaryOp, BroadcastGeom, Conv2dGeom, GroupNormGeom, LinearGeom, MatmulGeom,
    PadGeom, ReduceOp, SinusoidGeom, StridedGeom, UnaryOp, View,
};

use super::cpu::{CpuSlice, CpuStorage};

/// A tensor argument of an op: a storage and where the tensor sits in it.
pub(crate) type Arg<'a, S> = (&'a S, View);

/// Storage of one backend and the ops on it.
pub(crate) trait BackendStorage: Sized {
    /// The handle of the device this backend's storages live on.
    type Device;

    /// The element type.
    fn dtype(&self) -> DType;

    /// Copies host elements onto `device` (upload), keeping the dtype. (The CPU storage wraps
    /// host memory without this copy; the GPU backend is its first caller.)
    #[allow(dead_code)]
    fn upload(device: &Self::Device, host: CpuSlice<'_>) -> Result<Self>;

    /// Copies the elements of `v` to host memory (download), keeping the dtype.
    fn to_host(&self, v: View) -> Result<CpuStorage>;

    /// The elements of `v` converted to `dtype`.
    fn to_dtype(&self, v: View, dtype: DType) -> Result<Self>;

    /// An element-wise map.
    fn unary(&self, v: View, op: UnaryOp) -> Result<Self>;

    /// A broadcast element-wise op; both inputs have the same dtype.
    fn binary(&self, v: View, rhs: Arg<'_, Self>, op: BinaryOp, g: &BroadcastGeom) -> Result<Self>;

    /// Sum or mean over the middle axis of `g`, giving `outer × inner`.
    fn reduce(&self, v: View, op: ReduceOp, g: AxisGeom) -> Result<Self>;

    /// Softmax over rows of `cols` elements.
    fn softmax_last_dim(&self, v: View, cols: usize) -> Result<Self>;

    /// GEGLU over rows of `2 · half`: `row[..half] · gelu(row[half..])`.
    fn geglu(&self, v: View, half: usize) -> Result<Self>;

    /// Batched matrix product; both inputs have the same dtype.
    fn matmul(&self, v: View, rhs: Arg<'_, Self>, g: &MatmulGeom) -> Result<Self>;

    /// `x · weightᵀ (+ bias)`; the weight and bias may be of another dtype than `x`.
    fn linear(
        &self,
        v: View,
        weight: Arg<'_, Self>,
        bias: Option<Arg<'_, Self>>,
        g: LinearGeom,
    ) -> Result<Self>;

    /// NCHW 2-D convolution; the weight and bias may be of another dtype than `x`. With
    /// `residual` (contiguous, `[n, o, ho, wo]`, `x`'s dtype) the result is `conv + residual`,
    /// which a backend may add while it writes the output (a ResNet skip connection without a
    /// separate pass), as `(conv + bias) + residual`.
    fn conv2d(
        &self,
        v: View,
        weight: Arg<'_, Self>,
        bias: Option<Arg<'_, Self>>,
        residual: Option<Arg<'_, Self>>,
        g: Conv2dGeom,
    ) -> Result<Self>;

    /// Layer norm over rows of `c` with affine weight and bias.
    fn layer_norm(
        &self,
        v: View,
        weight: Arg<'_, Self>,
        bias: Arg<'_, Self>,
        c: usize,
        eps: f32,
    ) -> Result<Self>;

    /// Group norm (+ SiLU) with per-channel affine weight and bias.
    fn group_norm(
        &self,
        v: View,
        weight: Arg<'_, Self>,
        bias: Arg<'_, Self>,
        g: GroupNormGeom,
    ) -> Result<Self>;

    /// Scaled dot-product attention of `q` (self) over `k`, `v`, all of one dtype, computed in
    /// tiles with an online softmax.
    fn attention(&self, q: View, k: Arg<'_, Self>, v: Arg<'_, Self>, g: AttnGeom) -> Result<Self>;

    /// Nearest-neighbour 2× upsampling of `planes` planes of `h × w`.
    fn upsample_nearest2x(&self, v: View, planes: usize, h: usize, w: usize) -> Result<Self>;

    /// Zero padding of the last two dims.
    fn pad2d(&self, v: View, g: PadGeom) -> Result<Self>;

    /// A strided read into a new contiguous storage (permute, narrow).
    fn strided_copy(&self, g: &StridedGeom) -> Result<Self>;

    /// Concatenation along the middle axis: part `i` is `outer × mids[i] × inner`; all parts
    /// have one dtype.
    fn cat(parts: &[Arg<'_, Self>], mids: &[usize], outer: usize, inner: usize) -> Result<Self>;

    /// Gathers `ids` (pre-checked `< g.mid`) along the middle axis of `g`.
    fn index_select(&self, v: View, ids: &[u32], g: AxisGeom) -> Result<Self>;

    /// The f32 sinusoidal embeddings `[timesteps.len(), g.dim]` of host timesteps, made on
    /// `device` (a GPU computes them there instead of uploading the table every step).
    fn sinusoids(device: &Self::Device, timesteps: &[f32], g: SinusoidGeom) -> Result<Self>;
}
