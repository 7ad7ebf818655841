//! Launch wrappers for the kernels in `../kernels/*.cu`, one module per kernel family.
//!
//! Each wrapper takes a [`Launcher`](super::launch::Launcher), the dtype, device pointers (`u64`; under the emulator
//! they are host addresses) and sizes; it derives the launch configuration, packs the
//! parameters CUDA-style (`params[i]` points at argument `i`, with the exact C types the kernel
//! declares) and launches. Shapes are validated by the engine before; a wrapper only refuses
//! what would make a kernel index out of bounds (a size that overflows the kernel's integer
//! types, a rank or head size beyond what the kernel supports) with [`CudaError`].

// Until the CUDA backend (storage, dispatch) calls these, only the tests do: no dead-code
// warnings in the library build meanwhile. Remove once the backend is wired in.

pub(crate) mod attention;
pub(crate) mod conv;
// Called by the tests only until the backend's conv2d chooses it per shape; drop the allow then.
pub(crate) mod conv_igemm;
pub(crate) mod elementwise;
pub(crate) mod layout;
pub(crate) mod norm;
pub(crate) mod reduce;

#[cfg(all(test, feature = "cuda-emu"))]
pub(super) mod tests;

use super::error::CudaError;
use super::launch::LaunchCfg;

/// Threads per block of the 1-D grid-stride kernels.
const BLOCK_1D: u32 = 256;
/// Cap on the grid of 1-D grid-stride kernels: 65,536 blocks of 256 threads fill any current GPU
/// many times over; beyond that each thread loops.
const MAX_BLOCKS_1D: u64 = 1 << 16;

/// Launch configuration of a 1-D grid-stride kernel over `n` elements (`n > 0`).
fn cfg_1d(n: usize) -> LaunchCfg {
    let blocks = (n as u64).div_ceil(BLOCK_1D as u64).clamp(1, MAX_BLOCKS_1D) as u32;
    LaunchCfg {
        grid: [blocks, 1, 1],
        block: [BLOCK_1D, 1, 1],
        shared_mem_bytes: 0,
    }
}

/// `v` as a kernel's `unsigned int` argument, or an error naming the op and the argument: a
/// truncated size would make the kernel index the wrong elements.
fn u32_arg(op: &str, what: &str, v: usize) -> Result<u32, CudaError> {
    u32::try_from(v).map_err(|_| {
        unsupported(
            op,
            format!("{what} = {v} exceeds the kernel's 32-bit index"),
        )
    })
}

/// A launch the kernels cannot do (the engine should have chosen another path).
fn unsupported(op: &str, why: String) -> CudaError {
    CudaError::Unsupported(format!("{op}: {why}"))
}

/// Launches `kernel` with the given arguments, each passed by value as the C type of its Rust
/// expression (`u64` for `unsigned long long` and device pointers, `u32` for `unsigned int`,
/// `i32` for `int`, `f32` for `float`, a `#[repr(C)]` struct for a struct). Each argument is
/// moved into a temporary that lives until the launch returns.
macro_rules! launch {
    ($launcher:expr, $kernel:expr, $cfg:expr; $($arg:expr),* $(,)?) => {
        $launcher.launch(
            &$kernel,
            $cfg,
            &mut [$((&mut { $arg }) as *mut _ as *mut ::std::ffi::c_void),*],
        )
    };
}
pub(crate) use launch;
