//! Checkpoint components as the [`WeightSource`] the `nn` layers load from.

use std::sync::Arc;

use crate::engine::{DType, Device, SharedBytes, Tensor};
use crate::nn::{NnError, WeightSource};

use super::{MappedBytes, StoredDType, WeightSet};

impl SharedBytes for MappedBytes {
    fn as_bytes(&self) -> &[u8] {
        self.bytes()
    }
}

/// On the CPU the tensor borrows the memory-mapped file, so an f16 checkpoint is never held
/// twice. A missing or mis-shaped tensor is the [`WeightsError`](super::WeightsError) of
/// [`WeightSet::get`], naming the tensor and the expected shape.
impl WeightSource for WeightSet {
    fn get(&self, name: &str, shape: &[usize], device: &Device) -> Result<Tensor, NnError> {
        let raw = WeightSet::get(self, name, shape).map_err(|e| NnError::Weights(Box::new(e)))?;
        let dtype = match raw.dtype {
            StoredDType::F32 => DType::F32,
            StoredDType::F16 => DType::F16,
            StoredDType::BF16 => DType::BF16,
        };
        let mapped = raw.data.clone();
        let bytes: Arc<dyn SharedBytes> = Arc::new(raw.data);
        let t = Tensor::from_shared_bytes(bytes, dtype, shape, device)?;
        Ok(match self.cast() {
            Some(cast) if cast != dtype => {
                // The cast made a copy: the file's pages are no longer needed in memory.
                let copy = t.to_dtype(cast)?;
                drop(t);
                mapped.release_pages();
                copy
            }
            _ => t,
        })
    }
}
