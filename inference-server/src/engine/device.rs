//! Devices a tensor can live on.

use std::fmt;

use super::error::{EngineError, Result};

/// Where a tensor's data lives and its ops run. Chosen at start-up from a string. Not `Copy`:
/// a GPU device holds a context handle.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Device {
    /// The host CPU (rayon-parallel kernels).
    Cpu,
}

impl Device {
    /// Parses `cpu` or `cuda:N`. CUDA is recognised but not yet available, so `cuda:N`
    /// returns [`EngineError::DeviceUnavailable`].
    pub fn parse(spec: &str) -> Result<Device> {
        let s = spec.trim().to_ascii_lowercase();
        if s == "cpu" {
            return Ok(Device::Cpu);
        }
        let ordinal = if s == "cuda" { Some("0") } else { s.strip_prefix("cuda:") };
        match ordinal {
            Some(n) if !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()) => {
                Err(EngineError::DeviceUnavailable {
                    device: spec.to_string(),
                    reason: "the CUDA backend is not implemented yet; use \"cpu\"".to_string(),
                })
            }
            _ => Err(EngineError::UnknownDevice(spec.to_string())),
        }
    }
}

impl fmt::Display for Device {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Device::Cpu => f.write_str("cpu"),
        }
    }
}
