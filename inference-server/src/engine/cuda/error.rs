//! Errors of the CUDA backend and of the CUDA-on-CPU emulator. The engine maps them to its own
//! error type; `OutOfMemory` is kept apart so the service can answer `RESOURCE_EXHAUSTED` for
//! one request and keep serving.

/// Why a CUDA operation (library loading, compilation, allocation or a kernel launch) failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum CudaError {
    /// A kernel launch failed under the emulator: a deadlock, a shuffle reading an inactive
    /// lane, an invalid launch configuration or a C++ exception, as the emulator reported it.
    #[error("kernel `{kernel}` failed under the CUDA emulator: {message}")]
    #[cfg_attr(not(feature = "cuda-emu"), allow(dead_code))]
    EmuLaunch {
        /// The kernel's `{op}_{dtype}` name.
        kernel: String,
        /// The emulator's message (which block and thread, and what went wrong).
        message: String,
    },
    /// A CUDA library (libcuda, libnvrtc, cuBLAS) could not be found or loaded.
    #[error("{library} could not be loaded: {hint}")]
    LibraryMissing {
        /// The library's file name, e.g. `libnvrtc.so.12`.
        library: String,
        /// What to install or set (e.g. `LD_LIBRARY_PATH`) to make it loadable.
        hint: String,
    },
    /// A CUDA driver call returned an error.
    #[error("CUDA driver call {call} failed: {message}")]
    Driver {
        /// The driver function, e.g. `cuLaunchKernel`.
        call: String,
        /// The driver's error name and description.
        message: String,
    },
    /// NVRTC rejected a kernel source file.
    #[error("NVRTC could not compile {file}:\n{log}")]
    Nvrtc {
        /// The kernel file, e.g. `norm.cu`.
        file: String,
        /// NVRTC's compile log.
        log: String,
    },
    /// The device has not enough free memory for an allocation.
    #[error("out of device memory allocating {bytes} bytes")]
    OutOfMemory {
        /// The size of the allocation that failed.
        bytes: u64,
    },
    /// No kernel of this name is compiled (into the NVRTC module or into the emulator).
    #[error("no CUDA kernel named `{name}`")]
    UnknownKernel {
        /// The name that was asked for.
        name: String,
    },
    /// An operation the kernels cannot perform for these arguments (the engine should have
    /// chosen another path), with the op and the reason.
    #[error("unsupported CUDA launch: {0}")]
    Unsupported(String),
}
