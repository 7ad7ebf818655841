//! Which dtype each network computes in. The UNet and text encoder follow the choice; the VAE
//! stays in f32 unless bf16 is asked for, because SD 1.x's VAE overflows in f16 at 512×512
//! (A1111 ships `--no-half-vae` for this).

use std::fmt;
use std::str::FromStr;

use crate::engine::{DType, Device};
use crate::model::weights::Checkpoint;

/// The compute precision of a loaded pipeline (`--precision`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Precision {
    /// Everything in f32: the CPU default, and the reference the others are checked against.
    F32,
    /// UNet and text encoder in f16 (f32 accumulation in the GEMMs), VAE in f32: the GPU default.
    F16,
    /// UNet, text encoder and VAE in bf16.
    BF16,
}

impl Precision {
    /// The default on `device`: f32 on the CPU (its kernels compute in f32 anyway, and the
    /// weights stay borrowed from the file), f16 on a GPU. The emulator defaults to f32: it is
    /// a correctness tool whose results are compared with the CPU's; `--precision f16` makes it
    /// run what a GPU runs by default.
    pub fn default_for(device: &Device) -> Precision {
        match device {
            Device::Cpu => Precision::F32,
            Device::Cuda(d) if d.is_emulated() => Precision::F32,
            Device::Cuda(_) => Precision::F16,
        }
    }

    /// The dtype of the UNet and the text encoder.
    pub fn unet_dtype(self) -> DType {
        match self {
            Precision::F32 => DType::F32,
            Precision::F16 => DType::F16,
            Precision::BF16 => DType::BF16,
        }
    }

    /// The dtype of the VAE.
    pub fn vae_dtype(self) -> DType {
        match self {
            Precision::F32 | Precision::F16 => DType::F32,
            Precision::BF16 => DType::BF16,
        }
    }

    /// Sets each component's weight cast (and so its activation dtype). On the CPU an f32
    /// component keeps its stored weights, borrowed from the file, widened block by block in
    /// the GEMMs; on a GPU every weight is converted once at upload, never per op.
    pub(crate) fn apply(self, checkpoint: &mut Checkpoint, device: &Device) {
        let cast = |dtype: DType| match (device, dtype) {
            (Device::Cpu, DType::F32) => None,
            _ => Some(dtype),
        };
        checkpoint.text_encoder.1.set_cast(cast(self.unet_dtype()));
        checkpoint.unet.1.set_cast(cast(self.unet_dtype()));
        checkpoint.vae.1.set_cast(cast(self.vae_dtype()));
    }
}

impl FromStr for Precision {
    type Err = String;

    fn from_str(s: &str) -> Result<Precision, String> {
        match s.trim().to_ascii_lowercase().as_str() {
            "f32" | "fp32" | "float32" => Ok(Precision::F32),
            "f16" | "fp16" | "float16" | "half" => Ok(Precision::F16),
            "bf16" | "bfloat16" => Ok(Precision::BF16),
            other => Err(format!(
                "unknown precision {other:?}: expected f32, f16 or bf16"
            )),
        }
    }
}

impl fmt::Display for Precision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Precision::F32 => "f32",
            Precision::F16 => "f16",
            Precision::BF16 => "bf16",
        })
    }
}
