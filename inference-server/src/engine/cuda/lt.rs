//! GEMMs with a fused bias epilogue through cuBLASLt: `C = A·B + bias` in one kernel, the bias
//! added in f32 before the one rounding to C's dtype. Used by the driver for every [`Gemm`] that
//! carries a bias (the linear layers); plain GEMMs stay on cuBLAS.
//!
//! cuBLASLt needs a descriptor, four layouts and an algorithm per problem shape. Building them
//! and asking the heuristic costs more than a small GEMM, and the sampling loop repeats the same
//! shapes every step, so each shape's plan is built once and kept; only the bias pointer changes
//! per call.

use std::collections::HashMap;
use std::ffi::c_void;
use std::sync::Mutex;

use cudarc::cublas::sys::cublasOperation_t;
use cudarc::cublaslt::{result as lt, sys as lt_sys};
use cudarc::driver::sys as drv_sys;

use super::device::Gemm;
use super::error::CudaError;
use crate::engine::DType;

/// Workspace cuBLASLt may use per call: its heuristics pick faster split-K kernels with one.
pub(crate) const WORKSPACE_BYTES: usize = 32 << 20;

fn lt_err(call: &str, e: lt::CublasError) -> CudaError {
    CudaError::Driver {
        call: call.into(),
        message: format!("{:?}", e.0),
    }
}

/// The shape of a GEMM without its pointers: what a plan depends on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
struct Key {
    dtype: DType,
    mnk: (usize, usize, usize),
    ld: (usize, usize, usize),
    strides: (usize, usize, usize),
    trans: (bool, bool),
    batch: usize,
    accumulate: bool,
    /// Alignment in bytes (a power of two, at most 256) of A, B, C and the bias as passed.
    align: [u32; 4],
}

/// The largest power of two (at most 256) that divides `ptr`: cuBLASLt's fastest kernels need
/// 16-byte operands, and a view into a tensor (an offset) may have less, so the plan is asked
/// for with the alignment the pointers really have.
fn alignment(ptr: u64) -> u32 {
    1u32 << ptr.trailing_zeros().min(8)
}

impl Key {
    fn of(g: &Gemm) -> Key {
        Key {
            dtype: g.dtype,
            mnk: (g.m, g.n, g.k),
            ld: (g.lda, g.ldb, g.ldc),
            strides: (g.stride_a, g.stride_b, g.stride_c),
            trans: (g.trans_a, g.trans_b),
            batch: g.batch,
            accumulate: g.accumulate,
            align: [g.a, g.b, g.c, g.bias].map(alignment),
        }
    }
}

/// Descriptor, layouts and algorithm of one shape; `None` algo: cuBLASLt has no kernel for it.
struct Plan {
    desc: lt_sys::cublasLtMatmulDesc_t,
    layouts: [lt_sys::cublasLtMatrixLayout_t; 3],
    algo: Option<lt_sys::cublasLtMatmulAlgo_t>,
}

/// A cuBLASLt handle, its workspace and the plans built so far.
pub(crate) struct Lt {
    handle: lt_sys::cublasLtHandle_t,
    workspace: u64,
    /// The runtime's stream: every matmul is issued on it, in order with the kernels.
    stream: drv_sys::CUstream,
    plans: Mutex<HashMap<Key, Plan>>,
}

// SAFETY: the handle and descriptors are plain library handles; cuBLASLt handles may be used
// from any thread, and the plans (whose bias attribute is written per call) sit behind a mutex
// held across the call.
unsafe impl Send for Lt {}
// SAFETY: as above.
unsafe impl Sync for Lt {}

fn data_type(d: DType) -> lt_sys::cudaDataType {
    match d {
        DType::F32 => lt_sys::cudaDataType::CUDA_R_32F,
        DType::F16 => lt_sys::cudaDataType::CUDA_R_16F,
        DType::BF16 => lt_sys::cudaDataType::CUDA_R_16BF,
    }
}

/// Sets one attribute from a plain value.
macro_rules! set {
    ($f:path, $obj:expr, $attr:expr, $v:expr, $call:literal) => {{
        let v = $v;
        // SAFETY: `$obj` is a live descriptor and `v` has the attribute's documented type.
        unsafe {
            $f(
                $obj,
                $attr,
                &v as *const _ as *const c_void,
                size_of_val(&v),
            )
        }
        .map_err(|e| lt_err($call, e))
    }};
}

impl Lt {
    /// Creates the handle; `workspace` is a device buffer of [`WORKSPACE_BYTES`] that lives as
    /// long as this value (the driver allocates it).
    pub(crate) fn new(workspace: u64, stream: drv_sys::CUstream) -> Result<Lt, CudaError> {
        let handle = lt::create_handle().map_err(|e| lt_err("cublasLtCreate", e))?;
        Ok(Lt {
            handle,
            workspace,
            stream,
            plans: Mutex::default(),
        })
    }

    /// Runs `g` (whose `bias` is non-zero) as one cuBLASLt matmul with the bias epilogue.
    /// `Ok(false)`: cuBLASLt has no algorithm for this shape, and nothing ran; the caller
    /// falls back to a plain GEMM and a bias pass.
    pub(crate) fn gemm_bias(&self, g: &Gemm) -> Result<bool, CudaError> {
        let mut plans = self.plans.lock().unwrap_or_else(|p| p.into_inner());
        let key = Key::of(g);
        let plan = match plans.entry(key) {
            std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
            std::collections::hash_map::Entry::Vacant(e) => e.insert(self.plan(g, key)?),
        };
        let Some(algo) = plan.algo else {
            return Ok(false);
        };
        use lt_sys::cublasLtMatmulDescAttributes_t as D;
        set!(
            lt::set_matmul_desc_attribute,
            plan.desc,
            D::CUBLASLT_MATMUL_DESC_BIAS_POINTER,
            g.bias as *const c_void,
            "cublasLtMatmulDescSetAttribute(BIAS_POINTER)"
        )?;
        let (alpha, beta) = (1f32, if g.accumulate { 1f32 } else { 0f32 });
        let [a, b, c] = plan.layouts;
        // SAFETY: the plan was built for this shape; the storage layer sized A, B and C (the
        // `Gemm` contract) and the bias (`n` elements); alpha and beta are f32 like the scale
        // type; the workspace holds WORKSPACE_BYTES. Column-major: our B is cuBLASLt's A.
        unsafe {
            lt::matmul(
                self.handle,
                plan.desc,
                &alpha as *const f32 as *const c_void,
                &beta as *const f32 as *const c_void,
                g.b as *const c_void,
                a,
                g.a as *const c_void,
                b,
                g.c as *const c_void,
                c,
                g.c as *mut c_void,
                c,
                &algo,
                self.workspace as *mut c_void,
                WORKSPACE_BYTES,
                self.stream as _,
            )
        }
        .map_err(|e| lt_err("cublasLtMatmul", e))?;
        Ok(true)
    }

    /// Builds the descriptor, layouts and algorithm for `g`'s shape.
    ///
    /// cuBLASLt is column-major, so the row-major `C[m×n] = A·B` is issued as the column-major
    /// `Cᵀ[n×m] = Bᵀ·Aᵀ`: our B is its first operand. A row-major matrix read column-major is
    /// its own transpose, so `trans_b` becomes cuBLASLt's `TRANSA` unchanged, and the bias (one
    /// value per column of our C) is one value per row of its D, which is what the BIAS
    /// epilogue adds.
    fn plan(&self, g: &Gemm, key: Key) -> Result<Plan, CudaError> {
        use lt_sys::cublasLtMatmulDescAttributes_t as D;
        use lt_sys::cublasLtMatrixLayoutAttribute_t as L;
        let op = |t: bool| {
            (if t {
                cublasOperation_t::CUBLAS_OP_T
            } else {
                cublasOperation_t::CUBLAS_OP_N
            }) as i32
        };
        let desc = lt::create_matmul_desc(
            lt_sys::cublasComputeType_t::CUBLAS_COMPUTE_32F,
            lt_sys::cudaDataType::CUDA_R_32F,
        )
        .map_err(|e| lt_err("cublasLtMatmulDescCreate", e))?;
        let ty = data_type(g.dtype);
        // (rows, cols, ld, batch stride) of each operand as cuBLASLt sees it.
        let first = if g.trans_b {
            (g.k, g.n, g.ldb, g.stride_b)
        } else {
            (g.n, g.k, g.ldb, g.stride_b)
        };
        let second = if g.trans_a {
            (g.m, g.k, g.lda, g.stride_a)
        } else {
            (g.k, g.m, g.lda, g.stride_a)
        };
        let out = (g.n, g.m, g.ldc, g.stride_c);
        let mut layouts = Vec::with_capacity(3);
        for (rows, cols, ld, stride) in [first, second, out] {
            let l = lt::create_matrix_layout(ty, rows as u64, cols as u64, ld as i64)
                .map_err(|e| lt_err("cublasLtMatrixLayoutCreate", e))?;
            if g.batch > 1 {
                let count = i32::try_from(g.batch).map_err(|_| {
                    CudaError::Unsupported(format!("gemm: batch {} exceeds int", g.batch))
                })?;
                set!(
                    lt::set_matrix_layout_attribute,
                    l,
                    L::CUBLASLT_MATRIX_LAYOUT_BATCH_COUNT,
                    count,
                    "cublasLtMatrixLayoutSetAttribute(BATCH_COUNT)"
                )?;
                set!(
                    lt::set_matrix_layout_attribute,
                    l,
                    L::CUBLASLT_MATRIX_LAYOUT_STRIDED_BATCH_OFFSET,
                    stride as i64,
                    "cublasLtMatrixLayoutSetAttribute(STRIDED_BATCH_OFFSET)"
                )?;
            }
            layouts.push(l);
        }
        let layouts = [layouts[0], layouts[1], layouts[2]];
        set!(
            lt::set_matmul_desc_attribute,
            desc,
            D::CUBLASLT_MATMUL_DESC_TRANSA,
            op(g.trans_b),
            "cublasLtMatmulDescSetAttribute(TRANSA)"
        )?;
        set!(
            lt::set_matmul_desc_attribute,
            desc,
            D::CUBLASLT_MATMUL_DESC_TRANSB,
            op(g.trans_a),
            "cublasLtMatmulDescSetAttribute(TRANSB)"
        )?;
        set!(
            lt::set_matmul_desc_attribute,
            desc,
            D::CUBLASLT_MATMUL_DESC_EPILOGUE,
            lt_sys::cublasLtEpilogue_t::CUBLASLT_EPILOGUE_BIAS,
            "cublasLtMatmulDescSetAttribute(EPILOGUE)"
        )?;
        let pref =
            lt::create_matmul_pref().map_err(|e| lt_err("cublasLtMatmulPreferenceCreate", e))?;
        set!(
            lt::set_matmul_pref_attribute,
            pref,
            lt_sys::cublasLtMatmulPreferenceAttributes_t::CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES,
            WORKSPACE_BYTES as u64,
            "cublasLtMatmulPreferenceSetAttribute(MAX_WORKSPACE_BYTES)"
        )?;
        // The heuristic reads the bias pointer's value for its alignment (cublasLt.h, on
        // BIAS_POINTER), so it is set before asking; the key holds that alignment.
        set!(
            lt::set_matmul_desc_attribute,
            desc,
            D::CUBLASLT_MATMUL_DESC_BIAS_POINTER,
            g.bias as *const c_void,
            "cublasLtMatmulDescSetAttribute(BIAS_POINTER)"
        )?;
        // Our B is cuBLASLt's A (see above); D is C.
        let [al_a, al_b, al_c, _] = key.align;
        use lt_sys::cublasLtMatmulPreferenceAttributes_t as P;
        for (attr, bytes) in [
            (P::CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, al_b),
            (P::CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES, al_a),
            (P::CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, al_c),
            (P::CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES, al_c),
        ] {
            set!(
                lt::set_matmul_pref_attribute,
                pref,
                attr,
                bytes,
                "cublasLtMatmulPreferenceSetAttribute(MIN_ALIGNMENT)"
            )?;
        }
        let [a, b, c] = layouts;
        // SAFETY: every descriptor above is live. A shape cuBLASLt cannot run comes back as
        // NOT_SUPPORTED (or no result), which the caller turns into the fallback path.
        let found = unsafe { lt::get_matmul_algo_heuristic(self.handle, desc, a, b, c, c, pref) };
        // SAFETY: `pref` is not used after this.
        let _ = unsafe { lt::destroy_matmul_pref(pref) };
        let algo = match found {
            Ok(h) => Some(h.algo),
            Err(lt::CublasError(lt_sys::cublasStatus_t::CUBLAS_STATUS_NOT_SUPPORTED)) => None,
            Err(e) => return Err(lt_err("cublasLtMatmulAlgoGetHeuristic", e)),
        };
        Ok(Plan {
            desc,
            layouts,
            algo,
        })
    }
}

impl Drop for Lt {
    fn drop(&mut self) {
        let plans = self.plans.get_mut().unwrap_or_else(|p| p.into_inner());
        for plan in plans.values() {
            // SAFETY: each descriptor belongs to this plan alone and is not used again.
            unsafe {
                let _ = lt::destroy_matmul_desc(plan.desc);
                for l in plan.layouts {
                    let _ = lt::destroy_matrix_layout(l);
                }
            }
        }
        // SAFETY: no plan or call uses the handle after this.
        let _ = unsafe { lt::destroy_handle(self.handle) };
    }
}

#[cfg(test)]
mod tests {
    use super::alignment;

    #[test]
    fn alignment_is_the_largest_power_of_two_up_to_256() {
        assert_eq!(alignment(0x7f00_0000_1000), 256);
        assert_eq!(alignment(0x7f00_0000_1080), 128);
        assert_eq!(alignment(0x7f00_0000_1002), 2);
        // An f16 view one element into a buffer.
        assert_eq!(alignment(0x7f00_0000_1000 + 2 * 3), 2);
    }
}
