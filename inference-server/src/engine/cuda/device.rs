//! A CUDA device as the engine sees it: a [`Runtime`] (the real driver, or the CUDA-on-CPU
//! emulator) behind a cheap, clonable handle, plus the caching allocator every buffer of the
//! device goes through.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};

use super::conv_choice::{ConvChoices, ConvPolicy};
use super::error::CudaError;
use super::launch::Launcher;
use super::pool::Pool;
use crate::engine::DType;

/// One strided-batched GEMM in row-major terms: for each `i < batch`,
/// `C_i [m, n] = A_i [m, k] · B_i [k, n] (+ C_i when accumulate)`, where `A_i` is read at
/// `a + i·stride_a` elements with rows `lda` apart (or, when `trans_a`, as the transpose of a
/// row-major `[k, m]` matrix with rows `lda` apart), likewise `B_i`; all three of `dtype`,
/// accumulated in f32.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Gemm {
    /// Element type of A, B and C.
    pub dtype: DType,
    /// Rows of C.
    pub m: usize,
    /// Columns of C.
    pub n: usize,
    /// Inner dimension.
    pub k: usize,
    /// Device pointer of A.
    pub a: u64,
    /// Row stride of A as stored.
    pub lda: usize,
    /// Elements between consecutive A matrices (0: shared).
    pub stride_a: usize,
    /// A is stored transposed (`[k, m]`).
    pub trans_a: bool,
    /// Device pointer of B.
    pub b: u64,
    /// Row stride of B as stored.
    pub ldb: usize,
    /// Elements between consecutive B matrices (0: shared).
    pub stride_b: usize,
    /// B is stored transposed (`[n, k]`, PyTorch's linear weight).
    pub trans_b: bool,
    /// Device pointer of C (row-major).
    pub c: u64,
    /// Row stride of C (`n` when C is a whole matrix, more when it is a column block).
    pub ldc: usize,
    /// Elements between consecutive C matrices.
    pub stride_c: usize,
    /// Number of products.
    pub batch: usize,
    /// Add to C instead of overwriting it.
    pub accumulate: bool,
    /// Device pointer of `n` elements of `dtype` added to every row of every C in the GEMM's
    /// epilogue, before the one rounding to `dtype` (cuBLASLt's bias epilogue); 0: none.
    pub bias: u64,
}

/// What a CUDA backend needs from below: memory, copies, kernel launches by name and GEMM.
/// The driver implementation runs on a GPU; the emulator's runs the same kernel sources on the
/// host, so everything above it (storage, allocator, launch configurations) is one code path.
pub(crate) trait Runtime: Launcher {
    /// Allocates `bytes` of device memory.
    fn alloc(&self, bytes: usize) -> Result<u64, CudaError>;
    /// Frees memory from [`Runtime::alloc`].
    fn free(&self, ptr: u64, bytes: usize);
    /// Copies host bytes to device memory at `dst`.
    fn htod(&self, dst: u64, src: &[u8]) -> Result<(), CudaError>;
    /// Copies device bytes at `src` into `dst`.
    fn dtoh(&self, src: u64, dst: &mut [u8]) -> Result<(), CudaError>;
    /// Runs one strided-batched GEMM (cuBLAS on a GPU).
    fn gemm(&self, g: &Gemm) -> Result<(), CudaError>;
    /// Whether f16 attention may use the tensor-core (`mma.sync`, sm_80+) kernel.
    fn tensor_cores(&self) -> bool;
    /// Waits until all work issued so far has finished (to time it).
    fn synchronize(&self) -> Result<(), CudaError>;
    /// The device's model and architecture (`NVIDIA H200 sm_90`): what a measured choice of
    /// kernels holds for.
    fn model(&self) -> String;
    /// Copies `bytes` from device address `src` to `dst`, in order with the launches.
    fn dtod(&self, dst: u64, src: u64, bytes: usize) -> Result<(), CudaError>;
    /// Starts recording this thread's launches, GEMMs and device copies into a CUDA graph
    /// instead of running them; other threads wait until [`Runtime::end_capture`]. Copies
    /// to or from the host, synchronisation and frees are not allowed until then.
    fn begin_capture(&self) -> Result<(), CudaError>;
    /// Ends the recording and returns the graph, ready to launch (an executable-graph handle).
    /// Called after every successful [`Runtime::begin_capture`], also when the work failed.
    fn end_capture(&self) -> Result<u64, CudaError>;
    /// Runs a graph from [`Runtime::end_capture`], in order with other work.
    fn launch_graph(&self, exec: u64) -> Result<(), CudaError>;
    /// Frees a graph from [`Runtime::end_capture`].
    fn destroy_graph(&self, exec: u64);
    /// Under profiling (`SDSERVE_PROFILE=1` on a GPU): the GPU time per kernel of the work since
    /// the last call, once it has finished. `None` when this runtime does not profile.
    fn kernel_times(&self) -> Option<Result<Vec<super::profile::KernelTime>, CudaError>>;
}

/// What a device's allocator holds, in bytes: the numbers a benchmark compares with PyTorch's
/// `max_memory_allocated` (buffers in use) and `max_memory_reserved` (taken from the driver,
/// pooled buffers included). The cuBLASLt workspace and the context are outside both.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MemoryStats {
    /// Bytes in buffers handed out and not yet dropped.
    pub in_use: usize,
    /// The most `in_use` has been since the device opened (or the last reset).
    pub peak_in_use: usize,
    /// Bytes taken from the driver and not given back (in use + pooled).
    pub held: usize,
    /// The most `held` has been since the device opened (or the last reset).
    pub peak_held: usize,
}

/// Index arrays a device keeps uploaded at most (see [`CudaDevice::cached_ids`]).
const ID_CACHE_MAX: usize = 1024;

struct Inner {
    label: String,
    rt: Box<dyn Runtime>,
    pool: Mutex<Pool>,
    conv: ConvChoices,
    /// Index arrays already in device memory, by value.
    ids: Mutex<HashMap<Vec<u32>, u64>>,
}

/// A CUDA device (or the emulator). Clones share one runtime and one allocator; two handles
/// are equal when they are the same device.
#[derive(Clone)]
pub struct CudaDevice(Arc<Inner>);

impl CudaDevice {
    /// Wraps a runtime under a display name (`cuda:0`, `cuda-emu`), choosing convolution
    /// kernels under `conv` (see `conv_choice.rs`).
    pub(crate) fn new(label: String, rt: Box<dyn Runtime>, conv: ConvChoices) -> CudaDevice {
        CudaDevice(Arc::new(Inner {
            label,
            rt,
            pool: Mutex::new(Pool::default()),
            conv,
            ids: Mutex::default(),
        }))
    }

    /// How this device picks a convolution kernel per shape.
    pub(crate) fn conv_choices(&self) -> &ConvChoices {
        &self.0.conv
    }

    /// The device's name as the user spelled it.
    pub fn label(&self) -> &str {
        &self.0.label
    }

    /// The GPU's model and architecture as its runtime reports them (`NVIDIA H200 sm_90`).
    pub fn model(&self) -> String {
        self.0.rt.model()
    }

    /// Whether this is the CUDA-on-CPU emulator rather than a GPU.
    pub fn is_emulated(&self) -> bool {
        self.0.label == "cuda-emu"
    }

    /// The runtime (launches, copies, GEMM).
    pub(crate) fn rt(&self) -> &dyn Runtime {
        &*self.0.rt
    }

    /// A buffer of at least `bytes`, from the pool when one of that size is free. Out of memory
    /// empties the pool and retries once before giving up with [`CudaError::OutOfMemory`].
    pub(crate) fn alloc(&self, bytes: usize) -> Result<DeviceBuffer, CudaError> {
        let bytes = bytes.max(1).next_multiple_of(256);
        let reused = self.pool().take(bytes);
        let ptr = match reused {
            Some(p) => p,
            None => {
                let p = match self.0.rt.alloc(bytes) {
                    Ok(p) => p,
                    Err(CudaError::OutOfMemory { .. }) => {
                        self.trim();
                        self.0.rt.alloc(bytes)?
                    }
                    Err(e) => return Err(e),
                };
                self.pool().add_fresh(p, bytes);
                p
            }
        };
        Ok(DeviceBuffer {
            ptr,
            bytes,
            dev: self.clone(),
        })
    }

    /// The device address of `ids` uploaded once and kept for the device's lifetime, or `None`
    /// when [`ID_CACHE_MAX`] arrays are kept already. A UNet at a size that is not a power-of-two
    /// multiple resizes with the same few index arrays every step: uploading them once saves the
    /// copies, and lets the step be recorded as a graph (an upload cannot be recorded).
    pub(crate) fn cached_ids(&self, ids: &[u32]) -> Result<Option<u64>, CudaError> {
        let cache = || self.0.ids.lock().unwrap_or_else(|p| p.into_inner());
        {
            let cache = cache();
            if let Some(&ptr) = cache.get(ids) {
                return Ok(Some(ptr));
            }
            if cache.len() >= ID_CACHE_MAX {
                return Ok(None);
            }
        }
        // Not under the lock: the runtime may make this thread wait for another's capture,
        // which may itself be here.
        let bytes = (ids.len() * 4).max(4);
        let ptr = self.0.rt.alloc(bytes)?;
        if let Err(e) = self.0.rt.htod(ptr, bytemuck::cast_slice(ids)) {
            self.0.rt.free(ptr, bytes);
            return Err(e);
        }
        let mut cache = cache();
        if let Some(&first) = cache.get(ids) {
            // Another thread uploaded the same array meanwhile.
            drop(cache);
            self.0.rt.free(ptr, bytes);
            return Ok(Some(first));
        }
        cache.insert(ids.to_vec(), ptr);
        Ok(Some(ptr))
    }

    /// Under `SDSERVE_PROFILE=1` on a GPU: the GPU time per kernel (and per GEMM shape) of the
    /// work issued since the last call, largest first, once it has finished; `None` when this
    /// device does not profile (the CPU-side profile covers the emulator).
    pub fn kernel_times(
        &self,
    ) -> Option<Result<Vec<super::KernelTime>, crate::engine::EngineError>> {
        let times = self.0.rt.kernel_times()?;
        Some(times.map_err(|e| super::storage::engine_err("kernel times", e)))
    }

    /// The allocator's current and peak bytes (see [`MemoryStats`]).
    pub fn memory_stats(&self) -> MemoryStats {
        self.pool().stats()
    }

    /// The allocator's state.
    pub(crate) fn pool(&self) -> MutexGuard<'_, Pool> {
        self.0.pool.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Starts the peaks over from the current values, to measure one piece of work.
    pub fn reset_peak_memory(&self) {
        self.pool().reset_peaks();
    }

    /// Returns the pooled buffers no tensor or graph holds to the driver (PyTorch's
    /// `empty_cache`): a benchmark's steady state then holds only what its work needs, not what
    /// a first run's measurements (both convolution paths) left in the pool.
    pub fn empty_cache(&self) {
        self.trim();
    }

    /// Returns every pooled buffer to the driver.
    fn trim(&self) {
        let drained = self.pool().drain();
        for (bytes, ptrs) in drained {
            for p in ptrs {
                self.0.rt.free(p, bytes);
            }
        }
    }

    fn release(&self, ptr: u64, bytes: usize) {
        let to_driver = self.pool().give_back(ptr, bytes);
        if to_driver {
            self.0.rt.free(ptr, bytes);
        }
    }

    /// The process-wide handle of the emulated device, so every `cuda-emu` tensor shares it.
    #[cfg(feature = "cuda-emu")]
    pub(crate) fn emulated() -> CudaDevice {
        static EMU: OnceLock<CudaDevice> = OnceLock::new();
        EMU.get_or_init(|| {
            let im2col = ConvPolicy::Always(super::conv_choice::ConvPath::Im2col);
            let policy = ConvPolicy::from_env(im2col);
            Self::emulated_with(policy)
        })
        .clone()
    }

    /// A new emulated device (not the shared one) whose convolutions follow `policy`: how the
    /// tests run each convolution path through the whole backend.
    #[cfg(feature = "cuda-emu")]
    pub(crate) fn emulated_with(policy: ConvPolicy) -> CudaDevice {
        let rt = Box::new(super::emu_runtime::EmuRuntime);
        CudaDevice::new("cuda-emu".into(), rt, ConvChoices::new(policy, None))
    }

    /// The process-wide handle of GPU `ordinal`, created (driver loaded, kernels compiled or
    /// read from the cache) on first use.
    pub(crate) fn gpu(ordinal: usize) -> Result<CudaDevice, CudaError> {
        static GPUS: OnceLock<Mutex<HashMap<usize, CudaDevice>>> = OnceLock::new();
        let mut gpus = GPUS
            .get_or_init(Default::default)
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if let Some(d) = gpus.get(&ordinal) {
            return Ok(d.clone());
        }
        let rt = super::driver::DriverRuntime::new(ordinal)?;
        let policy = ConvPolicy::from_env(ConvPolicy::Measure);
        let file = super::nvrtc::conv_choices_file(&rt.model());
        let conv = ConvChoices::new(policy, file);
        let dev = CudaDevice::new(format!("cuda:{ordinal}"), Box::new(rt), conv);
        gpus.insert(ordinal, dev.clone());
        Ok(dev)
    }
}

impl PartialEq for CudaDevice {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

impl Eq for CudaDevice {}

impl std::hash::Hash for CudaDevice {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.0.label.hash(state)
    }
}

impl fmt::Debug for CudaDevice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CudaDevice({})", self.0.label)
    }
}

/// A device allocation, returned to its device's pool when dropped.
pub(crate) struct DeviceBuffer {
    /// Device address of the first byte.
    pub ptr: u64,
    /// Size in bytes.
    pub bytes: usize,
    /// The owning device.
    pub dev: CudaDevice,
}

impl Drop for DeviceBuffer {
    fn drop(&mut self) {
        self.dev.release(self.ptr, self.bytes);
    }
}

#[cfg(all(test, feature = "cuda-emu"))]
mod tests {
    use super::{CudaDevice, MemoryStats};
    use crate::engine::cuda::conv_choice::{ConvPath, ConvPolicy};

    #[test]
    fn memory_stats_follow_buffers_the_pool_and_its_trim() {
        let dev = CudaDevice::emulated_with(ConvPolicy::Always(ConvPath::Im2col));
        let stats = |in_use, peak_in_use, held, peak_held| MemoryStats {
            in_use,
            peak_in_use,
            held,
            peak_held,
        };
        let a = dev.alloc(1000).unwrap(); // rounded up to 1024
        let b = dev.alloc(256).unwrap();
        assert_eq!(dev.memory_stats(), stats(1280, 1280, 1280, 1280));
        drop(a);
        // Pooled, not freed: out of use, still held from the driver.
        assert_eq!(dev.memory_stats(), stats(256, 1280, 1280, 1280));
        let c = dev.alloc(1024).unwrap(); // the pooled buffer again: nothing new held
        assert_eq!(dev.memory_stats(), stats(1280, 1280, 1280, 1280));
        drop((b, c));
        dev.reset_peak_memory();
        assert_eq!(dev.memory_stats(), stats(0, 0, 1280, 1280));
        dev.trim();
        assert_eq!(dev.memory_stats(), stats(0, 0, 0, 1280));
    }
}
