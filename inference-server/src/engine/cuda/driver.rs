//! The GPU [`Runtime`]: the CUDA driver API and cuBLAS through cudarc with dynamic loading, so
//! the binary runs without CUDA installed and only `--device cuda:N` needs it. cudarc panics
//! when a library is missing, so each library is checked for before it is first touched, and a
//! missing one is a start-up error naming it.
//!
//! Kernels: every family in `kernels/` is compiled by NVRTC for this GPU's own architecture at
//! device creation (or read from the on-disk cache, see `nvrtc.rs`) and loaded as a module.
//! Work (launches, GEMMs, copies) is issued on one stream of the runtime's own, in order, so
//! each launch runs after the copies and launches before it and a copy back to the host waits
//! for them. It is not the legacy default stream because only a created stream can be captured
//! into a CUDA graph (see [`Runtime::begin_capture`]). While one thread captures, the others
//! wait at the runtime's entry (`gate.rs`): their work must not land in its graph.

use std::collections::HashMap;
use std::ffi::{CString, c_void};
use std::sync::Mutex;

use cudarc::cublas::{result as blas, sys as blas_sys};
use cudarc::driver::{result as drv, sys as drv_sys};

use super::device::{Gemm, Runtime};
use super::error::CudaError;
use super::gate::{Gate, Pass};
use super::launch::{LaunchCfg, Launcher};
use super::lt::{self, Lt};
use super::nvrtc::{self, KernelCache};
use super::ops::elementwise as ew;
use super::profile::{KernelTime, Profiler};
use crate::engine::DType;

/// A GPU's context, kernel modules and cuBLAS handle.
pub(crate) struct DriverRuntime {
    ctx: drv_sys::CUcontext,
    modules: Vec<drv_sys::CUmodule>,
    functions: Mutex<HashMap<String, usize>>,
    function_handles: Mutex<Vec<drv_sys::CUfunction>>,
    blas: blas_sys::cublasHandle_t,
    lt: Lt,
    stream: drv_sys::CUstream,
    /// Who may issue work on `stream` (one thread while it captures).
    gate: Gate,
    /// GPU time per kernel, under `SDSERVE_PROFILE=1`.
    profiler: Option<Profiler>,
    sm: (i32, i32),
    name: String,
}

// SAFETY: the handles are plain driver handles; the driver API is thread safe once the
// context is made current on the calling thread, which every entry point below does first.
unsafe impl Send for DriverRuntime {}
// SAFETY: as above; the only mutable state is behind mutexes.
unsafe impl Sync for DriverRuntime {}

/// A driver error as a [`CudaError`] naming `call` (out of memory kept recognisable).
pub(crate) fn driver_err(call: &str, e: drv::DriverError) -> CudaError {
    if e.0 == drv_sys::CUresult::CUDA_ERROR_OUT_OF_MEMORY {
        return CudaError::OutOfMemory { bytes: 0 };
    }
    let name = e
        .error_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|_| format!("{:?}", e.0));
    CudaError::Driver {
        call: call.into(),
        message: name,
    }
}

/// A module that does not load. PTX newer than the driver is the likely first-contact failure
/// (NVRTC from a newer CUDA than `nvidia-smi`'s, e.g. a pip wheel), so that one names both
/// versions and the remedy.
fn module_err(family: &str, e: drv::DriverError) -> CudaError {
    if e.0 != drv_sys::CUresult::CUDA_ERROR_UNSUPPORTED_PTX_VERSION {
        return driver_err(&format!("cuModuleLoadData({family})"), e);
    }
    let mut driver = 0;
    // SAFETY: writes one int; the driver library is loaded (cuInit succeeded).
    let _ = unsafe { drv_sys::cuDriverGetVersion(&mut driver) };
    let nvrtc = nvrtc::nvrtc_version()
        .map(|(major, minor)| format!("{major}.{minor}"))
        .unwrap_or_else(|_| "?".into());
    CudaError::Driver {
        call: format!("cuModuleLoadData({family})"),
        message: format!(
            "CUDA_ERROR_UNSUPPORTED_PTX_VERSION: the kernels were compiled by NVRTC {nvrtc}, newer \
             than this driver (CUDA {}.{}) can load; put the NVRTC of a CUDA release no newer \
             than the driver first on LD_LIBRARY_PATH, or update the driver",
            driver / 1000,
            driver % 1000 / 10
        ),
    }
}

fn blas_err(call: &str, e: blas::CublasError) -> CudaError {
    CudaError::Driver {
        call: call.into(),
        message: format!("{:?}", e.0),
    }
}

impl DriverRuntime {
    /// Opens GPU `ordinal`: loads the driver, compiles (or reads cached) kernels for its
    /// architecture, creates the cuBLAS handle.
    pub(crate) fn new(ordinal: usize) -> Result<DriverRuntime, CudaError> {
        // SAFETY: only checks whether the shared library can be opened.
        if !unsafe { drv_sys::is_culib_present() } {
            return Err(CudaError::LibraryMissing {
                library: "libcuda.so (the NVIDIA driver)".into(),
                hint: "no NVIDIA driver is installed on this machine; use --device cpu".into(),
            });
        }
        drv::init().map_err(|e| driver_err("cuInit", e))?;
        let count = drv::device::get_count().map_err(|e| driver_err("cuDeviceGetCount", e))?;
        if ordinal >= count.max(0) as usize {
            return Err(CudaError::Driver {
                call: "cuDeviceGet".into(),
                message: format!("no GPU with ordinal {ordinal}: this machine has {count}"),
            });
        }
        let dev = drv::device::get(ordinal as i32).map_err(|e| driver_err("cuDeviceGet", e))?;
        use drv_sys::CUdevice_attribute as A;
        // SAFETY: `dev` came from cuDeviceGet.
        let (ctx, sm) = unsafe {
            let ctx = drv::primary_ctx::retain(dev)
                .map_err(|e| driver_err("cuDevicePrimaryCtxRetain", e))?;
            drv::ctx::set_current(ctx).map_err(|e| driver_err("cuCtxSetCurrent", e))?;
            let major =
                drv::device::get_attribute(dev, A::CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR)
                    .map_err(|e| driver_err("cuDeviceGetAttribute", e))?;
            let minor =
                drv::device::get_attribute(dev, A::CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR)
                    .map_err(|e| driver_err("cuDeviceGetAttribute", e))?;
            (ctx, (major, minor))
        };
        let name = drv::device::get_name(dev).unwrap_or_else(|_| "NVIDIA GPU".into());
        let arch = format!("sm_{}{}", sm.0, sm.1);
        let cache = KernelCache::new(
            KernelCache::default_dir()
                .unwrap_or_else(|| std::env::temp_dir().join("sdserve-kernels")),
        );
        let mut modules = Vec::new();
        for (family, _) in nvrtc::kernel_sources() {
            let (ptx, _cached) = cache.get_or_compile(family, &arch)?;
            let image = CString::new(ptx).map_err(|_| CudaError::Nvrtc {
                file: family.to_string(),
                log: "PTX holds a NUL byte".into(),
            })?;
            // SAFETY: the context is current; `image` is a NUL-terminated PTX text.
            let module = unsafe { drv::module::load_data(image.as_ptr() as *const c_void) }
                .map_err(|e| module_err(family, e))?;
            modules.push(module);
        }
        // SAFETY: only checks whether the shared library can be opened.
        if !unsafe { blas_sys::is_culib_present() } {
            return Err(CudaError::LibraryMissing {
                library: "libcublas.so (cuBLAS)".into(),
                hint: "install the CUDA toolkit's cuBLAS or the nvidia-cublas pip package and add it to LD_LIBRARY_PATH".into(),
            });
        }
        // Non-blocking: the legacy stream (which nothing here uses) never waits on it.
        let stream = drv::stream::create(drv::stream::StreamKind::NonBlocking)
            .map_err(|e| driver_err("cuStreamCreate", e))?;
        let blas = blas::create_handle().map_err(|e| blas_err("cublasCreate", e))?;
        // SAFETY: both handles are live; the stream outlives the handle (neither is destroyed).
        unsafe { blas::set_stream(blas, stream as _) }
            .map_err(|e| blas_err("cublasSetStream", e))?;
        // SAFETY: only checks whether the shared library can be opened.
        if !unsafe { cudarc::cublaslt::sys::is_culib_present() } {
            return Err(CudaError::LibraryMissing {
                library: "libcublasLt.so (cuBLASLt)".into(),
                hint: "it ships beside libcublas.so in the CUDA toolkit and the nvidia-cublas pip package; add its folder to LD_LIBRARY_PATH".into(),
            });
        }
        // SAFETY: the context is current. The workspace lives as long as the process: the
        // runtime is never torn down while the server runs.
        let workspace = unsafe { drv::malloc_sync(lt::WORKSPACE_BYTES) }
            .map_err(|e| driver_err("cuMemAlloc(GEMM workspace)", e))?;
        // cuBLAS gets the same workspace (one stream: its GEMMs and cuBLASLt's never overlap).
        // Its own default pool would be allocated on first use, which a graph capture must not
        // be; a workspace of the caller's is what NVIDIA's graph-capture notes ask for. After
        // cublasSetStream, which resets it.
        // SAFETY: the handle is live; the workspace is a device buffer of WORKSPACE_BYTES.
        unsafe {
            blas_sys::cublasSetWorkspace_v2(blas, workspace as *mut c_void, lt::WORKSPACE_BYTES)
        }
        .result()
        .map_err(|e| blas_err("cublasSetWorkspace", e))?;
        let lt = Lt::new(workspace, stream)?;
        Ok(DriverRuntime {
            ctx,
            modules,
            functions: Mutex::default(),
            function_handles: Mutex::default(),
            blas,
            lt,
            stream,
            gate: Gate::default(),
            profiler: Profiler::from_env(),
            sm,
            name,
        })
    }

    /// Every entry point's first step, held for the call: waits while another thread captures
    /// a graph (its work would be recorded into that graph), then makes the context current on
    /// this thread.
    fn enter(&self) -> Result<Pass<'_>, CudaError> {
        let pass = self.gate.enter();
        self.make_current()?;
        Ok(pass)
    }

    fn make_current(&self) -> Result<(), CudaError> {
        // SAFETY: the context is retained for the runtime's lifetime.
        unsafe { drv::ctx::set_current(self.ctx) }.map_err(|e| driver_err("cuCtxSetCurrent", e))
    }

    /// The kernel `name`, looked up in the modules once and cached.
    fn function(&self, name: &str) -> Result<drv_sys::CUfunction, CudaError> {
        let mut index = self.functions.lock().unwrap_or_else(|p| p.into_inner());
        let mut handles = self
            .function_handles
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if let Some(&i) = index.get(name) {
            return Ok(handles[i]);
        }
        let cname =
            CString::new(name).map_err(|_| CudaError::UnknownKernel { name: name.into() })?;
        for &m in &self.modules {
            // SAFETY: the module is loaded for the runtime's lifetime.
            if let Ok(f) = unsafe { drv::module::get_function(m, cname.clone()) } {
                handles.push(f);
                index.insert(name.to_string(), handles.len() - 1);
                return Ok(f);
            }
        }
        Err(CudaError::UnknownKernel { name: name.into() })
    }
}

impl Launcher for DriverRuntime {
    fn launch(
        &self,
        kernel: &str,
        cfg: LaunchCfg,
        params: &mut [*mut c_void],
    ) -> Result<(), CudaError> {
        let _pass = self.enter()?;
        let f = self.function(kernel)?;
        let [gx, gy, gz] = cfg.grid;
        let [bx, by, bz] = cfg.block;
        let issue = || {
            // SAFETY: `f` is a loaded kernel; the ops wrappers pack `params` to its signature
            // and size every buffer for the launch (see `Launcher`).
            unsafe {
                drv::launch_kernel(
                    f,
                    (gx, gy, gz),
                    (bx, by, bz),
                    cfg.shared_mem_bytes,
                    self.stream,
                    params,
                )
            }
            .map_err(|e| driver_err(&format!("cuLaunchKernel({kernel})"), e))
        };
        self.timed(|| kernel.to_string(), issue)
    }
}

impl Runtime for DriverRuntime {
    fn alloc(&self, bytes: usize) -> Result<u64, CudaError> {
        let _pass = self.enter()?;
        // SAFETY: the context is current.
        unsafe { drv::malloc_sync(bytes) }.map_err(|e| match driver_err("cuMemAlloc", e) {
            CudaError::OutOfMemory { .. } => CudaError::OutOfMemory {
                bytes: bytes as u64,
            },
            other => other,
        })
    }

    fn free(&self, ptr: u64, _bytes: usize) {
        if let Ok(_pass) = self.enter() {
            // SAFETY: `ptr` came from cuMemAlloc and is not used after this.
            let _ = unsafe { drv::free_sync(ptr) };
        }
    }

    fn htod(&self, dst: u64, src: &[u8]) -> Result<(), CudaError> {
        let _pass = self.enter()?;
        // SAFETY: `dst` is an allocation of at least `src.len()` bytes. From pageable memory
        // the call returns once `src` has been staged, so it may be dropped after it.
        unsafe { drv::memcpy_htod_async(dst, src, self.stream) }
            .map_err(|e| driver_err("cuMemcpyHtoDAsync", e))
    }

    fn dtoh(&self, src: u64, dst: &mut [u8]) -> Result<(), CudaError> {
        let _pass = self.enter()?;
        // SAFETY: `src` is an allocation of at least `dst.len()` bytes; the stream is synchronised
        // before `dst` is handed back.
        unsafe { drv::memcpy_dtoh_async(dst, src, self.stream) }
            .map_err(|e| driver_err("cuMemcpyDtoHAsync", e))?;
        self.sync_stream()
    }

    fn dtod(&self, dst: u64, src: u64, bytes: usize) -> Result<(), CudaError> {
        let _pass = self.enter()?;
        // SAFETY: both are allocations of at least `bytes` bytes (the caller's contract).
        unsafe { drv::memcpy_dtod_async(dst, src, bytes, self.stream) }
            .map_err(|e| driver_err("cuMemcpyDtoDAsync", e))
    }

    fn begin_capture(&self) -> Result<(), CudaError> {
        self.gate.begin_capture();
        if let Err(e) = self.make_current() {
            self.gate.end_capture();
            return Err(e);
        }
        // Relaxed: a pool miss may still call cuMemAlloc during the capture (legal in this mode;
        // the buffer then simply exists before the graph runs).
        let mode = drv_sys::CUstreamCaptureMode::CU_STREAM_CAPTURE_MODE_RELAXED;
        // SAFETY: the stream is live and not capturing (one capture at a time, this thread's).
        let r = unsafe { drv_sys::cuStreamBeginCapture_v2(self.stream, mode) }.result();
        r.map_err(|e| {
            self.gate.end_capture();
            driver_err("cuStreamBeginCapture", e)
        })
    }

    fn end_capture(&self) -> Result<u64, CudaError> {
        let mut graph = std::ptr::null_mut();
        // SAFETY: this thread began the capture on the stream.
        let ended = unsafe { drv_sys::cuStreamEndCapture(self.stream, &mut graph) }.result();
        self.gate.end_capture();
        ended.map_err(|e| driver_err("cuStreamEndCapture", e))?;
        let mut exec = std::ptr::null_mut();
        // SAFETY: `graph` is the graph just captured; the executable copies what it needs, so
        // the graph is destroyed right after.
        let made = unsafe {
            let made = drv_sys::cuGraphInstantiateWithFlags(&mut exec, graph, 0).result();
            let _ = drv_sys::cuGraphDestroy(graph);
            made
        };
        made.map_err(|e| driver_err("cuGraphInstantiate", e))?;
        Ok(exec as u64)
    }

    fn launch_graph(&self, exec: u64) -> Result<(), CudaError> {
        let _pass = self.enter()?;
        // SAFETY: `exec` came from `end_capture` and is not destroyed yet (the caller's contract).
        unsafe { drv_sys::cuGraphLaunch(exec as drv_sys::CUgraphExec, self.stream) }
            .result()
            .map_err(|e| driver_err("cuGraphLaunch", e))
    }

    fn destroy_graph(&self, exec: u64) {
        if let Ok(_pass) = self.enter() {
            // SAFETY: as in `launch_graph`; it is not used after this. Launches already issued
            // complete (the driver defers the release).
            let _ = unsafe { drv_sys::cuGraphExecDestroy(exec as drv_sys::CUgraphExec) };
        }
    }

    fn gemm(&self, g: &Gemm) -> Result<(), CudaError> {
        let _pass = self.enter()?;
        let name = || {
            let batch = if g.batch > 1 {
                format!(" ×{}", g.batch)
            } else {
                String::new()
            };
            format!("gemm {} {}×{}×{}{batch}", g.dtype, g.m, g.n, g.k)
        };
        if g.bias == 0 {
            return self.timed(name, || self.blas_gemm(g));
        }
        if self.timed(name, || self.lt.gemm_bias(g))? {
            return Ok(());
        }
        // No cuBLASLt kernel for this shape: cuBLAS, then the bias as a broadcast add over the
        // rows (C must then be whole matrices back to back).
        if g.ldc != g.n || (g.batch > 1 && g.stride_c != g.m * g.n) {
            return Err(CudaError::Unsupported(format!(
                "gemm: no cuBLASLt algorithm for a biased GEMM with ldc {} and n {}",
                g.ldc, g.n
            )));
        }
        self.timed(name, || self.blas_gemm(g))?;
        let dims = [g.batch * g.m, g.n];
        ew::binary(
            self,
            "add",
            g.dtype,
            g.c,
            g.bias,
            g.c,
            &dims,
            &[g.n, 1],
            &[0, 1],
        )
    }

    fn tensor_cores(&self) -> bool {
        self.sm.0 >= 8
    }

    fn synchronize(&self) -> Result<(), CudaError> {
        let _pass = self.enter()?;
        self.sync_stream()
    }

    fn model(&self) -> String {
        format!("{} sm_{}{}", self.name, self.sm.0, self.sm.1)
    }

    fn kernel_times(&self) -> Option<Result<Vec<KernelTime>, CudaError>> {
        let profiler = self.profiler.as_ref()?;
        Some(self.enter().and_then(|_pass| profiler.take()))
    }
}

impl DriverRuntime {
    /// Issues `work`, between profiling events when profiling.
    fn timed<T>(
        &self,
        name: impl FnOnce() -> String,
        work: impl FnOnce() -> Result<T, CudaError>,
    ) -> Result<T, CudaError> {
        match &self.profiler {
            Some(p) => p.time(self.stream, name, work),
            None => work(),
        }
    }

    /// Waits for the stream's work (the context is current).
    fn sync_stream(&self) -> Result<(), CudaError> {
        // SAFETY: the stream is live for the runtime's lifetime.
        unsafe { drv::stream::synchronize(self.stream) }
            .map_err(|e| driver_err("cuStreamSynchronize", e))
    }

    /// `g` without its bias on cuBLAS (`GemmStridedBatchedEx`, f32 compute).
    fn blas_gemm(&self, g: &Gemm) -> Result<(), CudaError> {
        use blas_sys::cublasOperation_t::{CUBLAS_OP_N, CUBLAS_OP_T};
        let ty = match g.dtype {
            DType::F32 => blas_sys::cudaDataType::CUDA_R_32F,
            DType::F16 => blas_sys::cudaDataType::CUDA_R_16F,
            DType::BF16 => blas_sys::cudaDataType::CUDA_R_16BF,
        };
        let (alpha, beta) = (1f32, if g.accumulate { 1f32 } else { 0f32 });
        let int = |v: usize, what: &str| {
            i32::try_from(v).map_err(|_| {
                CudaError::Unsupported(format!("gemm: {what} = {v} exceeds cuBLAS's int"))
            })
        };
        // cuBLAS is column-major: a row-major C = A·B is the column-major Cᵀ = Bᵀ·Aᵀ, so B goes
        // first, and a row-major matrix read as column-major is already its transpose.
        let op_b = if g.trans_b { CUBLAS_OP_T } else { CUBLAS_OP_N };
        let op_a = if g.trans_a { CUBLAS_OP_T } else { CUBLAS_OP_N };
        // SAFETY: the storage layer sized A, B and C for `batch` strided matrices; alpha and
        // beta are f32 host values, matching the f32 compute type.
        unsafe {
            blas::gemm_strided_batched_ex(
                self.blas,
                op_b,
                op_a,
                int(g.n, "n")?,
                int(g.m, "m")?,
                int(g.k, "k")?,
                &alpha as *const f32 as *const c_void,
                g.b as *const c_void,
                ty,
                int(g.ldb, "ldb")?,
                g.stride_b as i64,
                g.a as *const c_void,
                ty,
                int(g.lda, "lda")?,
                g.stride_a as i64,
                &beta as *const f32 as *const c_void,
                g.c as *mut c_void,
                ty,
                int(g.ldc, "ldc")?,
                g.stride_c as i64,
                int(g.batch, "batch")?,
                blas_sys::cublasComputeType_t::CUBLAS_COMPUTE_32F,
                blas_sys::cublasGemmAlgo_t::CUBLAS_GEMM_DEFAULT,
            )
        }
        .map_err(|e| blas_err("cublasGemmStridedBatchedEx", e))
    }
}
