//! Devices a tensor can live on.

use std::fmt;

use super::cuda::CudaDevice;
use super::error::{EngineError, Result};

/// Where a tensor's data lives and its ops run. Chosen at start-up from a string. Not `Copy`:
/// a GPU device holds a context handle.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Device {
    /// The host CPU (rayon-parallel kernels).
    Cpu,
    /// An NVIDIA GPU (`cuda:N`), or the CUDA-on-CPU emulator (`cuda-emu`, in builds with the
    /// `cuda-emu` feature) that runs the same backend code and kernel sources on the host.
    Cuda(CudaDevice),
}

impl Device {
    /// Parses `cpu`, `cuda:N` (`cuda` is `cuda:0`) or `cuda-emu`. A GPU is opened here (driver
    /// loaded, kernels compiled or read from the cache); a machine without one gets
    /// [`EngineError::DeviceUnavailable`] saying what is missing.
    pub fn parse(spec: &str) -> Result<Device> {
        let s = spec.trim().to_ascii_lowercase();
        if s == "cpu" {
            return Ok(Device::Cpu);
        }
        let unavailable = |reason: String| EngineError::DeviceUnavailable {
            device: spec.to_string(),
            reason,
        };
        if s == "cuda-emu" {
            #[cfg(feature = "cuda-emu")]
            return Ok(Device::Cuda(CudaDevice::emulated()));
            #[cfg(not(feature = "cuda-emu"))]
            return Err(unavailable(
                "this binary was built without the CUDA emulator (cargo feature `cuda-emu`)"
                    .to_string(),
            ));
        }
        let ordinal = if s == "cuda" {
            Some("0")
        } else {
            s.strip_prefix("cuda:")
        };
        match ordinal.and_then(|n| {
            n.parse::<usize>()
                .ok()
                .filter(|_| n.bytes().all(|b| b.is_ascii_digit()))
        }) {
            Some(n) => CudaDevice::gpu(n)
                .map(Device::Cuda)
                .map_err(|e| unavailable(e.to_string())),
            None => Err(EngineError::UnknownDevice(spec.to_string())),
        }
    }

    /// The device for people: its name plus, for a GPU, the model and architecture the driver
    /// reports (`cuda:0 (NVIDIA H200 sm_90)`); the CPU and the emulator are just their names.
    pub fn describe(&self) -> String {
        match self {
            Device::Cuda(d) if !d.is_emulated() => format!("{} ({})", d.label(), d.model()),
            other => other.to_string(),
        }
    }
}

impl fmt::Display for Device {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Device::Cpu => f.write_str("cpu"),
            Device::Cuda(d) => f.write_str(d.label()),
        }
    }
}
