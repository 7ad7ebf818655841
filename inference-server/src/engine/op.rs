//! Ops as data: what a backend is asked to compute, without closures, so a GPU backend can map
//! each variant onto a kernel by name (`{kernel_name}_{dtype}`), and the geometry each op needs,
//! already validated by `ops/`.

use super::shape::Shape;

/// Element-wise maps of one input.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum UnaryOp {
    /// `x · σ(x)`.
    Silu,
    /// Exact (erf) GELU, PyTorch's default.
    Gelu,
    /// `x · σ(1.702 x)` (CLIP in SD 1.x).
    GeluQuick,
    /// Sine.
    Sin,
    /// Cosine.
    Cos,
    /// `e^x`.
    Exp,
    /// Square root.
    Sqrt,
    /// `x · mul + add`.
    Affine {
        /// Factor.
        mul: f32,
        /// Offset.
        add: f32,
    },
    /// `x` clamped into `[min, max]` (checked to be an interval by the op).
    Clamp {
        /// Lower bound.
        min: f32,
        /// Upper bound.
        max: f32,
    },
}

impl UnaryOp {
    /// The kernel family name; a backend appends the dtype (`silu_f16`). (The CPU backend maps
    /// variants to closures; the GPU backend is the first user of the name.)
    #[allow(dead_code)]
    pub(crate) fn kernel_name(self) -> &'static str {
        match self {
            UnaryOp::Silu => "silu",
            UnaryOp::Gelu => "gelu",
            UnaryOp::GeluQuick => "gelu_quick",
            UnaryOp::Sin => "sin",
            UnaryOp::Cos => "cos",
            UnaryOp::Exp => "exp",
            UnaryOp::Sqrt => "sqrt",
            UnaryOp::Affine { .. } => "affine",
            UnaryOp::Clamp { .. } => "clamp",
        }
    }
}

/// Element-wise ops of two inputs, with numpy broadcasting.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum BinaryOp {
    /// `a + b`.
    Add,
    /// `a - b`.
    Sub,
    /// `a · b`.
    Mul,
    /// `a / b`.
    Div,
}

impl BinaryOp {
    /// The kernel family name (`add`, ...); also the op name in error messages.
    pub(crate) fn kernel_name(self) -> &'static str {
        match self {
            BinaryOp::Add => "add",
            BinaryOp::Sub => "sub",
            BinaryOp::Mul => "mul",
            BinaryOp::Div => "div",
        }
    }
}

/// Reductions over one axis.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum ReduceOp {
    /// Sum.
    Sum,
    /// Arithmetic mean.
    Mean,
}

/// Where a tensor's elements sit in its storage: `len` contiguous elements from `start`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct View {
    /// First element, in elements.
    pub start: usize,
    /// Number of elements.
    pub len: usize,
}

/// A broadcast binary op's output dims and each input's strides over them (0 on broadcast
/// dims). Rank ≥ 1: a pair of scalars broadcasts as `[1]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct BroadcastGeom {
    /// Output dims.
    pub dims: Vec<usize>,
    /// Left input's strides over `dims`.
    pub lhs_strides: Vec<usize>,
    /// Right input's strides over `dims`.
    pub rhs_strides: Vec<usize>,
}

/// An array seen as `outer × mid × inner` around one axis (reductions, gathers, cat).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct AxisGeom {
    /// Product of the dims before the axis.
    pub outer: usize,
    /// The axis' size.
    pub mid: usize,
    /// Product of the dims after the axis.
    pub inner: usize,
}

/// A batched matmul `[batch.., m, k] · [batch.., k, n]`, batch dims broadcast.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct MatmulGeom {
    /// Broadcast batch dims of the output.
    pub batch_dims: Vec<usize>,
    /// Left operand's matrix strides over `batch_dims` (in matrices; 0 where broadcast).
    pub lhs_batch_strides: Vec<usize>,
    /// Right operand's matrix strides over `batch_dims`.
    pub rhs_batch_strides: Vec<usize>,
    /// Rows of each product.
    pub m: usize,
    /// Inner dimension.
    pub k: usize,
    /// Columns of each product.
    pub n: usize,
}

impl MatmulGeom {
    /// The number of matrix products.
    pub(crate) fn batch(&self) -> usize {
        self.batch_dims.iter().product()
    }

    /// Matrix index of each operand for flat batch index `i`.
    pub(crate) fn locate(&self, i: usize) -> (usize, usize) {
        let (mut rem, mut ai, mut bi) = (i, 0, 0);
        for d in (0..self.batch_dims.len()).rev() {
            let idx = rem % self.batch_dims[d];
            rem /= self.batch_dims[d];
            ai += idx * self.lhs_batch_strides[d];
            bi += idx * self.rhs_batch_strides[d];
        }
        (ai, bi)
    }
}

/// `x [rows, n_in] · weight [n_out, n_in]ᵀ (+ bias [n_out])`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct LinearGeom {
    /// Rows of `x` (product of its leading dims).
    pub rows: usize,
    /// Input features.
    pub n_in: usize,
    /// Output features.
    pub n_out: usize,
    /// Apply diffusers' GEGLU to the product (`a · gelu(gate)` of its two halves): the result
    /// has `n_out / 2` columns (`n_out` even), with no `[rows, n_out]` intermediate where the
    /// backend fuses it.
    pub geglu: bool,
}

/// Geometry of one NCHW conv2d call, with the same stride and padding on both axes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Conv2dGeom {
    /// Batch.
    pub n: usize,
    /// Input channels.
    pub c: usize,
    /// Input height.
    pub h: usize,
    /// Input width.
    pub w: usize,
    /// Output channels.
    pub o: usize,
    /// Kernel height.
    pub kh: usize,
    /// Kernel width.
    pub kw: usize,
    /// Stride.
    pub stride: usize,
    /// Zero padding on every side.
    pub pad: usize,
    /// Output height.
    pub ho: usize,
    /// Output width.
    pub wo: usize,
}

/// Group norm of `[n, c, spatial..]` over `groups` channel groups, optionally followed by SiLU.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct GroupNormGeom {
    /// Channels.
    pub c: usize,
    /// Elements per channel plane.
    pub spatial: usize,
    /// Channel groups (divides `c`).
    pub groups: usize,
    /// Added to the variance.
    pub eps: f32,
    /// Apply SiLU after the affine.
    pub silu: bool,
}

/// Scaled dot-product attention dimensions.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct AttnGeom {
    /// Batch × heads.
    pub bh: usize,
    /// Queries per head.
    pub lq: usize,
    /// Keys per head.
    pub lk: usize,
    /// Head dim.
    pub d: usize,
    /// Score scale.
    pub scale: f32,
    /// Key `j` is hidden from query `i` when `j > i`.
    pub causal: bool,
}

/// Sinusoidal timestep embeddings (diffusers' `get_timestep_embedding` with `scale = 1`,
/// `max_period = 10000`): `[timesteps, dim]` in f32.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct SinusoidGeom {
    /// Columns per timestep; an odd `dim` ends in one zero column.
    pub dim: usize,
    /// `[cos | sin]` instead of `[sin | cos]`.
    pub flip_sin_to_cos: bool,
    /// `downscale_freq_shift`: frequency `i` is `exp(-ln(10000) · i / (dim/2 - shift))`.
    pub freq_shift: f64,
}

/// Zero padding of the last two dims of `planes` planes of `h × w`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct PadGeom {
    /// Product of the leading dims.
    pub planes: usize,
    /// Input height.
    pub h: usize,
    /// Input width.
    pub w: usize,
    /// Columns added on the left.
    pub left: usize,
    /// Columns added on the right.
    pub right: usize,
    /// Rows added on top.
    pub top: usize,
    /// Rows added at the bottom.
    pub bottom: usize,
}

/// A strided read of a storage into a new contiguous one: output element at multi-index `i`
/// comes from `start + Σ i_d · strides_d` (permute, transpose, narrow of inner dims).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct StridedGeom {
    /// First source element.
    pub start: usize,
    /// Output dims.
    pub dims: Vec<usize>,
    /// Source strides per output dim, in elements.
    pub strides: Vec<usize>,
}

impl StridedGeom {
    /// The output's shape.
    pub(crate) fn shape(&self) -> Shape {
        Shape::from(self.dims.clone())
    }
}
