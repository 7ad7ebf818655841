//! The CUDA-on-CPU emulator, seen from Rust: FFI to the C++ runtime in `emu/` (compiled with
//! the kernels by build.rs under the `cuda-emu` feature).
//!
//! How it runs a kernel: blocks one after another on the calling thread; the threads of a block
//! as fibers that switch only at `__syncthreads`, warp shuffles, `__ballot_sync` and
//! `__syncwarp`. `__shared__` memory is poisoned (0xFF bytes: NaN, -1) before every block. A
//! deadlock (part of a warp skipping a collective), a shuffle reading an inactive lane, an
//! invalid configuration or a C++ exception comes back as [`CudaError::EmuLaunch`]. Launches are
//! serialized by a lock inside the runtime, so tests may launch from parallel threads.
//!
//! The emulator is not a race detector: a missing `__syncthreads` shows only under some thread
//! orders, so kernel tests run under each of [`Schedule::ALL`].

use std::ffi::{CStr, CString, c_char, c_int, c_void};

use super::error::CudaError;
use super::launch::LaunchCfg;

#[cfg(test)]
mod tests;

/// `sdemu_cfg` of `emu/sdemu.h`.
#[repr(C)]
struct SdemuCfg {
    grid: [u32; 3],
    block: [u32; 3],
    shared_mem_bytes: u32,
}

/// `SDEMU_ERR_UNKNOWN_KERNEL` of `emu/sdemu.h`; the other non-zero codes carry a message.
const ERR_UNKNOWN_KERNEL: c_int = 1;

unsafe extern "C" {
    fn sdemu_launch(name: *const c_char, cfg: *const SdemuCfg, params: *mut *mut c_void) -> c_int;
    fn sdemu_kernel_arity(name: *const c_char) -> c_int;
    #[cfg_attr(not(test), allow(dead_code))]
    fn sdemu_set_schedule(mode: c_int, seed: u64);
    fn sdemu_last_error() -> *const c_char;
}

/// The order in which the emulator resumes the runnable threads of a block. Different orders
/// expose different missing barriers; none is more "correct" than another.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(not(test), allow(dead_code))]
pub(crate) enum Schedule {
    /// Threads run in the order they became runnable (the default).
    Fifo,
    /// The lowest runnable thread index first: warp 0 runs ahead of the others.
    LowFirst,
    /// The highest runnable thread index first.
    HighFirst,
    /// A runnable thread chosen by a PRNG seeded with the value (reproducible).
    Random(u64),
}

impl Schedule {
    /// One of each order, for tests that run a kernel under all of them.
    #[cfg(test)]
    pub(crate) const ALL: [Schedule; 4] = [
        Schedule::Fifo,
        Schedule::LowFirst,
        Schedule::HighFirst,
        Schedule::Random(0x5d5e_2026),
    ];
}

/// Chooses the thread order for the emulator launches made from the calling OS thread (each
/// test runs on its own thread, so parallel tests don't change each other's order). Threads
/// that never call it use [`Schedule::Fifo`].
#[cfg_attr(not(test), allow(dead_code))]
pub(crate) fn set_schedule(schedule: Schedule) {
    let (mode, seed) = match schedule {
        Schedule::Fifo => (0, 0),
        Schedule::LowFirst => (1, 0),
        Schedule::HighFirst => (2, 0),
        Schedule::Random(seed) => (3, seed),
    };
    // SAFETY: plain values; the runtime only stores them in thread-local variables.
    unsafe { sdemu_set_schedule(mode, seed) };
}

/// Runs `kernel` (its `{op}_{dtype}` name, as exported with `SD_EXPORT`) on the host and waits
/// for it. `params[i]` points at the value of argument `i` with the kernel's C type; device
/// pointers are host addresses passed as `u64`, and the buffers behind them must be large
/// enough for every access the launch makes (as on a GPU, the kernel trusts them). The number
/// of params is checked against the kernel's signature.
pub(crate) fn launch(
    kernel: &str,
    cfg: LaunchCfg,
    params: &mut [*mut c_void],
) -> Result<(), CudaError> {
    let unknown = || CudaError::UnknownKernel {
        name: kernel.to_owned(),
    };
    let name = CString::new(kernel).map_err(|_| unknown())?;
    // SAFETY: `name` is a valid NUL-terminated string for the duration of the call.
    let arity = unsafe { sdemu_kernel_arity(name.as_ptr()) };
    if arity < 0 {
        return Err(unknown());
    }
    if arity as usize != params.len() {
        return Err(CudaError::EmuLaunch {
            kernel: kernel.to_owned(),
            message: format!(
                "the kernel takes {arity} parameters, the launch passed {}",
                params.len()
            ),
        });
    }
    let c = SdemuCfg {
        grid: cfg.grid,
        block: cfg.block,
        shared_mem_bytes: cfg.shared_mem_bytes,
    };
    // SAFETY: `name` and `c` outlive the call and `params` holds exactly as many argument
    // pointers as the kernel declares (checked above). What the arguments point at is the
    // caller's contract, documented above and on `Launcher`.
    let rc = unsafe { sdemu_launch(name.as_ptr(), &c, params.as_mut_ptr()) };
    match rc {
        0 => Ok(()),
        ERR_UNKNOWN_KERNEL => Err(unknown()),
        _ => Err(CudaError::EmuLaunch {
            kernel: kernel.to_owned(),
            message: last_error(),
        }),
    }
}

/// The message of this thread's last failed launch.
fn last_error() -> String {
    // SAFETY: the runtime returns a pointer to a thread-local NUL-terminated string that stays
    // valid until this thread's next launch; it is copied at once.
    unsafe { CStr::from_ptr(sdemu_last_error()) }
        .to_string_lossy()
        .into_owned()
}
