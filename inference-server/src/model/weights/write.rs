//! Writing safetensors files (used by the test models; small and dependency-free).

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;

use super::{StoredDType, WeightsError};

/// A tensor held in memory, ready to be written.
#[derive(Debug, Clone, PartialEq)]
pub struct OwnedTensor {
    /// Name in the file.
    pub name: String,
    /// Element type of `data`.
    pub dtype: StoredDType,
    /// Dimensions, outermost first.
    pub shape: Vec<usize>,
    /// Little-endian element bytes.
    pub data: Vec<u8>,
}

impl OwnedTensor {
    /// Encodes `values` as `dtype`.
    pub fn from_f32(
        name: impl Into<String>,
        shape: Vec<usize>,
        values: &[f32],
        dtype: StoredDType,
    ) -> OwnedTensor {
        let mut data = Vec::with_capacity(values.len() * dtype.size());
        for &v in values {
            match dtype {
                StoredDType::F32 => data.extend_from_slice(&v.to_le_bytes()),
                StoredDType::F16 => data.extend_from_slice(&half::f16::from_f32(v).to_le_bytes()),
                StoredDType::BF16 => data.extend_from_slice(&half::bf16::from_f32(v).to_le_bytes()),
            }
        }
        OwnedTensor {
            name: name.into(),
            dtype,
            shape,
            data,
        }
    }
}

/// Writes `tensors` (in the given order) and the `__metadata__` map to a safetensors file.
pub fn write_safetensors(
    path: &Path,
    tensors: &[OwnedTensor],
    metadata: &BTreeMap<String, String>,
) -> Result<(), WeightsError> {
    let mut header = serde_json::Map::new();
    if !metadata.is_empty() {
        header.insert("__metadata__".into(), serde_json::json!(metadata));
    }
    let mut offset = 0usize;
    for t in tensors {
        let end = offset + t.data.len();
        header.insert(
            t.name.clone(),
            serde_json::json!({ "dtype": t.dtype.name(), "shape": t.shape, "data_offsets": [offset, end] }),
        );
        offset = end;
    }
    let mut text = serde_json::Value::Object(header).to_string().into_bytes();
    while !text.len().is_multiple_of(8) {
        text.push(b' ');
    }
    let io = |e| WeightsError::io(path, e);
    let mut out = std::io::BufWriter::new(std::fs::File::create(path).map_err(io)?);
    out.write_all(&(text.len() as u64).to_le_bytes())
        .map_err(io)?;
    out.write_all(&text).map_err(io)?;
    for t in tensors {
        out.write_all(&t.data).map_err(io)?;
    }
    out.flush().map_err(io)
}
