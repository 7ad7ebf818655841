//! Launch configuration and the [`Launcher`] seam: the CUDA backend computes grid, block and
//! shared-memory sizes once and hands them to a launcher, which is the real driver on a GPU or
//! the CUDA-on-CPU emulator in tests, so both run the exact same launch code path.

use std::ffi::c_void;

use super::error::CudaError;

/// Grid, block and dynamic shared memory of one kernel launch, as `cuLaunchKernel` takes them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct LaunchCfg {
    /// Blocks in x, y, z.
    pub grid: [u32; 3],
    /// Threads per block in x, y, z (at most 1024 in total).
    pub block: [u32; 3],
    /// Bytes of dynamic shared memory per block (`SD_DYNAMIC_SMEM` in the kernel).
    pub shared_mem_bytes: u32,
}

// The ops wrappers build their configurations directly; these constructors serve the
// emulator's self-tests.
#[cfg_attr(not(test), allow(dead_code))]
impl LaunchCfg {
    /// A launch of `grid` blocks of `block` threads, without dynamic shared memory.
    pub(crate) const fn new(grid: [u32; 3], block: [u32; 3]) -> Self {
        Self {
            grid,
            block,
            shared_mem_bytes: 0,
        }
    }

    /// A 1-D launch with at least `n_threads_total` threads in blocks of `block` threads (the
    /// kernel guards the tail with `i < n`). Always at least one block, so a launch over zero
    /// elements stays a valid configuration; a grid beyond `u32` saturates, which the launcher
    /// then rejects as over CUDA's limit instead of silently covering fewer elements.
    pub(crate) fn linear(n_threads_total: usize, block: u32) -> Self {
        let block = block.max(1);
        let blocks = (n_threads_total as u64).div_ceil(u64::from(block)).max(1);
        Self::new(
            [u32::try_from(blocks).unwrap_or(u32::MAX), 1, 1],
            [block, 1, 1],
        )
    }

    /// The same launch with `bytes` of dynamic shared memory per block.
    pub(crate) const fn with_shared_mem(self, bytes: u32) -> Self {
        Self {
            shared_mem_bytes: bytes,
            ..self
        }
    }

    /// Threads in one block.
    pub(crate) const fn threads_per_block(&self) -> u32 {
        self.block[0] * self.block[1] * self.block[2]
    }
}

/// Something that runs a compiled kernel by name: the CUDA driver on a GPU, the emulator on the
/// host. `params` follows `cuLaunchKernel`: `params[i]` points at the value of the kernel's
/// argument `i`, with exactly the C type the kernel declares. Device pointers travel as `u64`
/// values; under the emulator they are host addresses.
///
/// Callers (the `ops` wrappers) must pass arguments matching the kernel's signature and
/// pointers to buffers large enough for the launch: the kernel trusts them, as on a GPU.
pub(crate) trait Launcher: Send + Sync {
    /// Runs `kernel` with `cfg` and waits for it; errors name the kernel.
    fn launch(
        &self,
        kernel: &str,
        cfg: LaunchCfg,
        params: &mut [*mut c_void],
    ) -> Result<(), CudaError>;
}

/// The CUDA-on-CPU emulator as a [`Launcher`]: kernels compiled from the same `.cu` sources
/// with the host C++ compiler (see `emu/`), run through [`super::emu::launch`].
#[cfg(feature = "cuda-emu")]
#[derive(Clone, Copy, Debug, Default)]
#[cfg_attr(not(test), allow(dead_code))]
pub(crate) struct EmuLauncher;

#[cfg(feature = "cuda-emu")]
impl Launcher for EmuLauncher {
    fn launch(
        &self,
        kernel: &str,
        cfg: LaunchCfg,
        params: &mut [*mut c_void],
    ) -> Result<(), CudaError> {
        super::emu::launch(kernel, cfg, params)
    }
}

#[cfg(test)]
mod tests {
    use super::LaunchCfg;

    #[test]
    fn linear_covers_every_thread_with_whole_blocks() {
        assert_eq!(LaunchCfg::linear(1000, 256).grid, [4, 1, 1]);
        assert_eq!(LaunchCfg::linear(1024, 256).grid, [4, 1, 1]);
        assert_eq!(LaunchCfg::linear(0, 256).grid, [1, 1, 1]);
        assert_eq!(
            LaunchCfg::linear(10, 256)
                .with_shared_mem(64)
                .shared_mem_bytes,
            64
        );
        assert_eq!(
            LaunchCfg::new([2, 3, 1], [32, 4, 2]).threads_per_block(),
            256
        );
    }
}
