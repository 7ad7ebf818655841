//! The emulator's [`Runtime`]: "device" memory is host memory (a device pointer is a host
//! address), kernels run through the CUDA-on-CPU emulator, and GEMM — cuBLAS on a GPU — runs on
//! the CPU backend's gemm. Everything above this file is the code path a GPU runs.

use std::alloc::{Layout, alloc_zeroed, dealloc};
use std::ffi::c_void;

use half::{bf16, f16};

use super::device::{Gemm, Runtime};
use super::error::CudaError;
use super::launch::{LaunchCfg, Launcher};
use crate::engine::DType;
use crate::engine::cpu::gemm::{Mat, Par, sgemm};

/// Alignment of emulated allocations, as `cudaMalloc` guarantees (at least 256 bytes).
const ALIGN: usize = 256;

/// The host-side runtime of the `cuda-emu` device.
pub(crate) struct EmuRuntime;

impl Launcher for EmuRuntime {
    fn launch(
        &self,
        kernel: &str,
        cfg: LaunchCfg,
        params: &mut [*mut c_void],
    ) -> Result<(), CudaError> {
        super::emu::launch(kernel, cfg, params)
    }
}

/// Reads `len` elements of `dtype` at host address `ptr` (offset `start` elements) as f32.
///
/// # Safety
/// `ptr` must address at least `start + len` elements of `dtype`.
unsafe fn read_f32(dtype: DType, ptr: u64, start: usize, len: usize) -> Vec<f32> {
    // SAFETY: the caller guarantees the range is inside one live allocation.
    unsafe {
        match dtype {
            DType::F32 => std::slice::from_raw_parts((ptr as *const f32).add(start), len).to_vec(),
            DType::F16 => std::slice::from_raw_parts((ptr as *const f16).add(start), len)
                .iter()
                .map(|x| x.to_f32())
                .collect(),
            DType::BF16 => std::slice::from_raw_parts((ptr as *const bf16).add(start), len)
                .iter()
                .map(|x| x.to_f32())
                .collect(),
        }
    }
}

/// Writes `src` as `dtype` at host address `ptr` (offset `start` elements), rounding to nearest.
///
/// # Safety
/// `ptr` must address at least `start + src.len()` elements of `dtype`.
unsafe fn write_f32(dtype: DType, ptr: u64, start: usize, src: &[f32]) {
    // SAFETY: the caller guarantees the range is inside one live allocation.
    unsafe {
        match dtype {
            DType::F32 => std::slice::from_raw_parts_mut((ptr as *mut f32).add(start), src.len())
                .copy_from_slice(src),
            DType::F16 => {
                let d = std::slice::from_raw_parts_mut((ptr as *mut f16).add(start), src.len());
                d.iter_mut()
                    .zip(src)
                    .for_each(|(d, &s)| *d = f16::from_f32(s));
            }
            DType::BF16 => {
                let d = std::slice::from_raw_parts_mut((ptr as *mut bf16).add(start), src.len());
                d.iter_mut()
                    .zip(src)
                    .for_each(|(d, &s)| *d = bf16::from_f32(s));
            }
        }
    }
}

/// Elements spanned by a `rows × cols` matrix with rows `ld` apart.
fn span(rows: usize, cols: usize, ld: usize) -> usize {
    if rows == 0 || cols == 0 {
        0
    } else {
        (rows - 1) * ld + cols
    }
}

impl Runtime for EmuRuntime {
    fn alloc(&self, bytes: usize) -> Result<u64, CudaError> {
        let layout =
            Layout::from_size_align(bytes.max(1), ALIGN).map_err(|_| CudaError::OutOfMemory {
                bytes: bytes as u64,
            })?;
        // SAFETY: the layout has a non-zero size.
        let p = unsafe { alloc_zeroed(layout) };
        if p.is_null() {
            return Err(CudaError::OutOfMemory {
                bytes: bytes as u64,
            });
        }
        Ok(p as u64)
    }

    fn free(&self, ptr: u64, bytes: usize) {
        if let Ok(layout) = Layout::from_size_align(bytes.max(1), ALIGN) {
            // SAFETY: `ptr` came from `alloc` with this size (the allocator passes it back).
            unsafe { dealloc(ptr as *mut u8, layout) }
        }
    }

    fn htod(&self, dst: u64, src: &[u8]) -> Result<(), CudaError> {
        // SAFETY: `dst` is a live allocation of at least `src.len()` bytes (the storage sized it).
        unsafe { std::ptr::copy_nonoverlapping(src.as_ptr(), dst as *mut u8, src.len()) };
        Ok(())
    }

    fn dtoh(&self, src: u64, dst: &mut [u8]) -> Result<(), CudaError> {
        // SAFETY: `src` is a live allocation of at least `dst.len()` bytes.
        unsafe { std::ptr::copy_nonoverlapping(src as *const u8, dst.as_mut_ptr(), dst.len()) };
        Ok(())
    }

    fn gemm(&self, g: &Gemm) -> Result<(), CudaError> {
        let (ar, ac) = if g.trans_a { (g.k, g.m) } else { (g.m, g.k) };
        let (br, bc) = if g.trans_b { (g.n, g.k) } else { (g.k, g.n) };
        // The bias epilogue as cuBLASLt runs it: added in f32 before C is rounded to its dtype.
        let bias = (g.bias != 0).then(|| {
            // SAFETY: a non-zero bias pointer holds `n` elements (the `Gemm` contract).
            unsafe { read_f32(g.dtype, g.bias, 0, g.n) }
        });
        for i in 0..g.batch {
            // SAFETY: the storage layer sized every operand for `batch` strided matrices.
            let (a, b, mut c) = unsafe {
                (
                    read_f32(g.dtype, g.a, i * g.stride_a, span(ar, ac, g.lda)),
                    read_f32(g.dtype, g.b, i * g.stride_b, span(br, bc, g.ldb)),
                    read_f32(g.dtype, g.c, i * g.stride_c, span(g.m, g.n, g.ldc)),
                )
            };
            let lhs = if g.trans_a {
                Mat {
                    data: &a,
                    rs: 1,
                    cs: g.lda,
                }
            } else {
                Mat {
                    data: &a,
                    rs: g.lda,
                    cs: 1,
                }
            };
            let rhs = if g.trans_b {
                Mat {
                    data: &b,
                    rs: 1,
                    cs: g.ldb,
                }
            } else {
                Mat {
                    data: &b,
                    rs: g.ldb,
                    cs: 1,
                }
            };
            // C is read whole (with the gaps between its rows) so they are written back as they were.
            sgemm(
                g.m,
                g.n,
                g.k,
                lhs,
                rhs,
                &mut c,
                g.ldc,
                g.accumulate,
                Par::Auto,
            );
            if let Some(bias) = &bias {
                for row in c.chunks_mut(g.ldc) {
                    let cols = row.len().min(g.n);
                    row[..cols].iter_mut().zip(bias).for_each(|(v, b)| *v += b);
                }
            }
            // SAFETY: as above.
            unsafe { write_f32(g.dtype, g.c, i * g.stride_c, &c) };
        }
        Ok(())
    }

    fn synchronize(&self) -> Result<(), CudaError> {
        // Launches and GEMMs run to completion before they return.
        Ok(())
    }

    fn model(&self) -> String {
        "cuda-emu".into()
    }

    fn dtod(&self, dst: u64, src: u64, bytes: usize) -> Result<(), CudaError> {
        // SAFETY: both are live allocations of at least `bytes` (the caller's contract).
        unsafe { std::ptr::copy(src as *const u8, dst as *mut u8, bytes) };
        Ok(())
    }

    // Kernels run when launched here, so there is nothing to record: the emulated device runs
    // every step as it comes (graphs are exercised through the standin driver instead).
    fn begin_capture(&self) -> Result<(), CudaError> {
        Err(CudaError::Unsupported(
            "the CUDA emulator does not record graphs".into(),
        ))
    }

    fn end_capture(&self) -> Result<u64, CudaError> {
        Err(CudaError::Unsupported(
            "the CUDA emulator does not record graphs".into(),
        ))
    }

    fn launch_graph(&self, _exec: u64) -> Result<(), CudaError> {
        Err(CudaError::Unsupported(
            "the CUDA emulator does not record graphs".into(),
        ))
    }

    fn destroy_graph(&self, _exec: u64) {}

    fn kernel_times(&self) -> Option<Result<Vec<super::profile::KernelTime>, CudaError>> {
        None
    }

    fn tensor_cores(&self) -> bool {
        // The emulator runs the mma.sync path's per-lane twin, so f16 attention takes the
        // same kernel a sm_80+ GPU does.
        true
    }
}
