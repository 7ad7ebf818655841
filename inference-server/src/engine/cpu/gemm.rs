//! A bounds-checked wrapper around `gemm::gemm` for f32, and [`gemm_with`], which picks f32 or
//! bf16 products for an op and the GEMM that computes them.

use gemm::Parallelism;

use crate::engine::dtype::DType;

/// A strided read-only f32 matrix: element (i, j) is `data[i * rs + j * cs]`.
#[derive(Clone, Copy)]
pub(crate) struct Mat<'a> {
    pub data: &'a [f32],
    pub rs: usize,
    pub cs: usize,
}

impl<'a> Mat<'a> {
    /// A row-major matrix with `cols` columns.
    pub(crate) fn rows(data: &'a [f32], cols: usize) -> Self {
        Mat {
            data,
            rs: cols,
            cs: 1,
        }
    }

    /// The transpose of a row-major matrix with `cols` columns (so element (i, j) is `data[j * cols + i]`).
    pub(crate) fn rows_t(data: &'a [f32], cols: usize) -> Self {
        Mat {
            data,
            rs: 1,
            cs: cols,
        }
    }
}

/// Multiply-adds above which a single gemm call uses all rayon threads.
const PAR_GEMM_MIN: usize = 48 * 48 * 48;

/// Whether to let gemm spread over threads.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Par {
    /// Use rayon when the product is large enough.
    Auto,
    /// Stay on this thread (the caller already parallelises).
    Serial,
}

/// The largest index a `rows × cols` view with strides `rs`, `cs` touches (`rows, cols > 0`).
pub(crate) fn max_index(rows: usize, cols: usize, rs: usize, cs: usize) -> usize {
    (rows - 1) * rs + (cols - 1) * cs
}

/// What every GEMM of the backend does first: checks that the three views stay inside their
/// slices (panicking on a violation, an internal bug) and settles the degenerate products: `m`
/// or `n` zero does nothing, `k` zero zeroes `dst` (or leaves it, with `accumulate`). Returns
/// whether a product is left to compute.
#[allow(clippy::too_many_arguments)]
pub(crate) fn prologue(
    m: usize,
    n: usize,
    k: usize,
    lhs: Mat<'_>,
    rhs: Mat<'_>,
    dst: &mut [f32],
    dst_rs: usize,
    accumulate: bool,
) -> bool {
    if m == 0 || n == 0 {
        return false;
    }
    assert!(
        max_index(m, n, dst_rs, 1) < dst.len(),
        "sgemm: dst view out of bounds"
    );
    if k == 0 {
        if !accumulate {
            for i in 0..m {
                dst[i * dst_rs..i * dst_rs + n].fill(0.0);
            }
        }
        return false;
    }
    assert!(
        max_index(m, k, lhs.rs, lhs.cs) < lhs.data.len(),
        "sgemm: lhs view out of bounds"
    );
    assert!(
        max_index(k, n, rhs.rs, rhs.cs) < rhs.data.len(),
        "sgemm: rhs view out of bounds"
    );
    true
}

/// A view the GEMMs pack into panels: element (r, q) — r across the panel (rows of A, columns
/// of B), q along k — is `data[r * sr + q * sq]`, for `r < rows`, `q < k`.
#[derive(Clone, Copy)]
pub(crate) struct Src<'a> {
    /// The matrix.
    pub data: &'a [f32],
    /// Stride across the panel.
    pub sr: usize,
    /// Stride along k.
    pub sq: usize,
    /// Panel rows in the view.
    pub rows: usize,
    /// Steps along k in the view.
    pub k: usize,
}

impl<'a> Src<'a> {
    /// The view `data[r * sr + q * sq]`, `r < rows`, `q < k`.
    pub(crate) fn new(data: &'a [f32], sr: usize, sq: usize, rows: usize, k: usize) -> Self {
        Src {
            data,
            sr,
            sq,
            rows,
            k,
        }
    }
}

/// One product `dst (+)= lhs[m, k] · rhs[k, n]` (row-major `dst`, row stride `dst_rs`; `acc`
/// adds instead of overwriting), bundled so the GEMMs' internal functions can take and split it
/// whole.
#[derive(Clone, Copy)]
pub(crate) struct Gemm<'a> {
    pub m: usize,
    pub n: usize,
    pub k: usize,
    pub lhs: Mat<'a>,
    pub rhs: Mat<'a>,
    pub dst_rs: usize,
    pub acc: bool,
}

impl<'a> Gemm<'a> {
    /// Bundles the arguments (in [`sgemm`]'s order).
    pub(crate) fn new(
        m: usize,
        n: usize,
        k: usize,
        lhs: Mat<'a>,
        rhs: Mat<'a>,
        dst_rs: usize,
        acc: bool,
    ) -> Self {
        Gemm {
            m,
            n,
            k,
            lhs,
            rhs,
            dst_rs,
            acc,
        }
    }

    /// [`prologue`] for this product: checks the views (panicking on a violation, an internal
    /// bug) and settles the degenerate products; true if a product with m, n, k > 0 remains.
    pub(crate) fn has_work(&self, dst: &mut [f32]) -> bool {
        let g = self;
        prologue(g.m, g.n, g.k, g.lhs, g.rhs, dst, g.dst_rs, g.acc)
    }
}

/// `dst[m, n] (+)= lhs[m, k] · rhs[k, n]`, all strided. `dst` is row-major with row stride `dst_rs`.
/// With `accumulate`, the product is added to `dst`; otherwise `dst` is overwritten.
///
/// Panics (an internal bug, never user input) if a view exceeds its slice.
#[allow(clippy::too_many_arguments)]
pub(crate) fn sgemm(
    m: usize,
    n: usize,
    k: usize,
    lhs: Mat<'_>,
    rhs: Mat<'_>,
    dst: &mut [f32],
    dst_rs: usize,
    accumulate: bool,
    par: Par,
) {
    if !prologue(m, n, k, lhs, rhs, dst, dst_rs, accumulate) {
        return;
    }
    let parallelism = if par == Par::Auto && m * n * k >= PAR_GEMM_MIN {
        Parallelism::Rayon(rayon::current_num_threads().max(1))
    } else {
        Parallelism::None
    };
    // SAFETY: `prologue`'s asserts keep every strided access of the three views inside their
    // slices; `dst` is a unique borrow so it cannot alias `lhs` or `rhs`.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst.as_mut_ptr(),
            1,
            dst_rs as isize,
            accumulate,
            lhs.data.as_ptr(),
            lhs.cs as isize,
            lhs.rs as isize,
            rhs.data.as_ptr(),
            rhs.cs as isize,
            rhs.rs as isize,
            1.0,
            1.0,
            false,
            false,
            false,
            parallelism,
        )
    }
}

/// How a product's operands are multiplied: exactly in f32 (the default, what the parity tests
/// hold), or rounded to bf16 with f32 accumulation (`--precision bf16`: twice the multiply rate
/// on CPUs with `avx512_bf16`, see [`super::bf16gemm`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Products {
    /// f32 × f32.
    F32,
    /// bf16 × bf16 summed in f32.
    Bf16,
}

impl Products {
    /// bf16 products for an op whose activations are bf16 (`--precision bf16`), f32
    /// otherwise: bf16 activations carry no more bits than the product uses, while f32
    /// activations keep exact f32 products even with bf16-stored weights.
    pub(crate) fn for_dtype(dtype: DType) -> Products {
        match dtype {
            DType::BF16 => Products::Bf16,
            DType::F32 | DType::F16 => Products::F32,
        }
    }
}

/// [`sgemm`]'s contract with the products `products` asks for: f32 through
/// [`super::f32gemm::sgemm_own`] (own AVX-512 kernels where the CPU has them, else [`sgemm`]),
/// bf16 through [`super::bf16gemm::sgemm_bf16`].
#[allow(clippy::too_many_arguments)]
pub(crate) fn gemm_with(
    products: Products,
    m: usize,
    n: usize,
    k: usize,
    lhs: Mat<'_>,
    rhs: Mat<'_>,
    dst: &mut [f32],
    dst_rs: usize,
    accumulate: bool,
    par: Par,
) {
    match products {
        Products::F32 => super::f32gemm::sgemm_own(m, n, k, lhs, rhs, dst, dst_rs, accumulate, par),
        Products::Bf16 => {
            super::bf16gemm::sgemm_bf16(m, n, k, lhs, rhs, dst, dst_rs, accumulate, par)
        }
    }
}
