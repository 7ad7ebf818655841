//! Turning a checkpoint tensor into an engine tensor without copying its bytes.

use std::sync::Arc;

use crate::engine::{DType, Device, SharedBytes, Tensor};
use crate::model::ModelError;
use crate::model::weights::{MappedBytes, StoredDType, WeightSet};

impl SharedBytes for MappedBytes {
    fn as_bytes(&self) -> &[u8] {
        self.bytes()
    }
}

/// Loads `name` from `weights`, checking it has `shape`; on the CPU the tensor borrows the
/// memory-mapped file, so an f16 checkpoint is never held twice.
pub fn load_tensor(
    weights: &WeightSet,
    name: &str,
    shape: &[usize],
    device: &Device,
) -> Result<Tensor, ModelError> {
    let raw = weights.get(name, shape)?;
    let dtype = match raw.dtype {
        StoredDType::F32 => DType::F32,
        StoredDType::F16 => DType::F16,
        StoredDType::BF16 => DType::BF16,
    };
    let bytes: Arc<dyn SharedBytes> = Arc::new(raw.data);
    Ok(Tensor::from_shared_bytes(bytes, dtype, shape, device)?)
}
