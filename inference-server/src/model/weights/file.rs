//! Memory-mapped safetensors files: the header is parsed and checked once; tensor data stays in
//! the mapping and is handed out as byte ranges, never copied.

use std::collections::BTreeMap;
use std::fs::File;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use memmap2::Mmap;
use serde::Deserialize;

use super::WeightsError;

/// Largest header accepted (the safetensors crate uses the same bound).
const MAX_HEADER: u64 = 100_000_000;

/// Element types the engine can load.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum StoredDType {
    /// IEEE binary32.
    F32,
    /// IEEE binary16.
    F16,
    /// bfloat16.
    BF16,
}

impl StoredDType {
    /// Bytes per element.
    pub fn size(self) -> usize {
        match self {
            StoredDType::F32 => 4,
            StoredDType::F16 | StoredDType::BF16 => 2,
        }
    }

    /// The name the safetensors header uses.
    pub fn name(self) -> &'static str {
        match self {
            StoredDType::F32 => "F32",
            StoredDType::F16 => "F16",
            StoredDType::BF16 => "BF16",
        }
    }

    fn parse(name: &str) -> Option<StoredDType> {
        match name {
            "F32" => Some(StoredDType::F32),
            "F16" => Some(StoredDType::F16),
            "BF16" => Some(StoredDType::BF16),
            _ => None,
        }
    }
}

/// Element size of any dtype the safetensors format defines, for header validation.
fn any_dtype_size(name: &str) -> Option<usize> {
    Some(match name {
        "BOOL" | "U8" | "I8" | "F8_E5M2" | "F8_E4M3" => 1,
        "I16" | "U16" | "F16" | "BF16" => 2,
        "I32" | "U32" | "F32" => 4,
        "I64" | "U64" | "F64" => 8,
        _ => return None,
    })
}

/// A byte range of a shared memory map.
#[derive(Clone)]
pub struct MappedBytes {
    map: Arc<Mmap>,
    range: Range<usize>,
}

impl MappedBytes {
    /// The bytes, borrowed from the mapping.
    pub fn bytes(&self) -> &[u8] {
        &self.map[self.range.clone()]
    }

    /// Position of these bytes within the whole mapping.
    pub fn range(&self) -> Range<usize> {
        self.range.clone()
    }

    /// The whole mapping these bytes belong to.
    pub fn mapping(&self) -> &[u8] {
        &self.map[..]
    }

    /// Drops the pages wholly inside this range from the process's resident set, for bytes that
    /// have been copied out (a model cast to another dtype at load holds its own copy). The
    /// data stays in the page cache; a later read faults it back in from the file, unchanged.
    /// Without this, a cast model's peak memory counts the checkpoint twice: the mapped pages
    /// the cast read plus the copies (3.8 GiB instead of 2.1 for the SD 1.5 UNet in bf16).
    pub fn release_pages(&self) {
        #[cfg(unix)]
        {
            // SAFETY: sysconf has no preconditions.
            let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) }.max(1) as usize;
            let (start, end) = (
                self.range.start.next_multiple_of(page),
                self.range.end / page * page,
            );
            if end > start {
                // SAFETY: the mapping is a read-only shared mapping of a file (`Mmap::map`), so
                // MADV_DONTNEED only unmaps its pages: the next access reads the same file
                // bytes again, and no reference into the mapping sees different contents.
                let advised = unsafe {
                    self.map.unchecked_advise_range(
                        memmap2::UncheckedAdvice::DontNeed,
                        start,
                        end - start,
                    )
                };
                if let Err(e) = advised {
                    tracing::debug!(error = %e, "madvise(DONTNEED) on a cast tensor failed");
                }
            }
        }
    }
}

impl std::fmt::Debug for MappedBytes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MappedBytes")
            .field("range", &self.range)
            .finish_non_exhaustive()
    }
}

/// One tensor of a checkpoint: metadata plus its bytes inside a memory map (little endian).
#[derive(Debug, Clone)]
pub struct RawTensor {
    /// Name of the tensor (the diffusers name once it went through a [`super::WeightSet`]).
    pub name: String,
    /// Element type as stored.
    pub dtype: StoredDType,
    /// Dimensions, outermost first.
    pub shape: Vec<usize>,
    /// The data, `numel * dtype.size()` bytes.
    pub data: MappedBytes,
}

impl RawTensor {
    /// Number of elements.
    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }

    /// The bytes, borrowed from the mapping.
    pub fn bytes(&self) -> &[u8] {
        self.data.bytes()
    }

    /// Rows `rows` along dimension 0 as a new tensor named `name`, sharing the same bytes.
    pub fn rows(
        &self,
        rows: Range<usize>,
        name: impl Into<String>,
    ) -> Result<RawTensor, WeightsError> {
        let name = name.into();
        let outer = self.shape.first().copied().unwrap_or(0);
        if self.shape.is_empty() || rows.start > rows.end || rows.end > outer {
            return Err(WeightsError::Shape {
                tensor: self.name.clone(),
                expected: vec![rows.end],
                found: self.shape.clone(),
            });
        }
        let row_bytes = self.shape.iter().skip(1).product::<usize>() * self.dtype.size();
        let start = self.data.range.start + rows.start * row_bytes;
        let end = self.data.range.start + rows.end * row_bytes;
        let mut shape = self.shape.clone();
        shape[0] = rows.end - rows.start;
        Ok(RawTensor {
            name,
            dtype: self.dtype,
            shape,
            data: MappedBytes {
                map: Arc::clone(&self.data.map),
                range: start..end,
            },
        })
    }

    /// The same bytes seen with another shape of the same element count (metadata only).
    pub fn reshape(mut self, shape: &[usize]) -> Result<RawTensor, WeightsError> {
        if shape.iter().product::<usize>() != self.numel() {
            return Err(WeightsError::Shape {
                tensor: self.name,
                expected: shape.to_vec(),
                found: self.shape,
            });
        }
        self.shape = shape.to_vec();
        Ok(self)
    }

    /// The values decoded to `f32` (a copy; for tests and small tensors).
    pub fn to_f32_vec(&self) -> Vec<f32> {
        let bytes = self.bytes();
        match self.dtype {
            StoredDType::F32 => bytes
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect(),
            StoredDType::F16 => bytes
                .chunks_exact(2)
                .map(|c| half::f16::from_le_bytes([c[0], c[1]]).to_f32())
                .collect(),
            StoredDType::BF16 => bytes
                .chunks_exact(2)
                .map(|c| half::bf16::from_le_bytes([c[0], c[1]]).to_f32())
                .collect(),
        }
    }
}

#[derive(Debug, Deserialize)]
struct HeaderEntry {
    dtype: String,
    shape: Vec<usize>,
    data_offsets: [u64; 2],
}

#[derive(Debug, Clone)]
struct Entry {
    dtype: String,
    shape: Vec<usize>,
    range: Range<usize>,
}

/// A memory-mapped safetensors file whose header has been checked against the file length.
pub struct SafetensorsFile {
    path: PathBuf,
    map: Arc<Mmap>,
    entries: BTreeMap<String, Entry>,
    metadata: BTreeMap<String, String>,
}

impl std::fmt::Debug for SafetensorsFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SafetensorsFile")
            .field("path", &self.path)
            .field("tensors", &self.entries.len())
            .finish_non_exhaustive()
    }
}

impl SafetensorsFile {
    /// Maps `path` and validates its header: every tensor's byte range must lie inside the file.
    pub fn open(path: impl AsRef<Path>) -> Result<SafetensorsFile, WeightsError> {
        let path = path.as_ref().to_path_buf();
        let file = File::open(&path).map_err(|e| WeightsError::io(&path, e))?;
        let file_len = file
            .metadata()
            .map_err(|e| WeightsError::io(&path, e))?
            .len();
        let header_err = |reason: String| WeightsError::Header {
            path: path.clone(),
            reason,
        };
        if file_len < 8 {
            return Err(header_err(format!(
                "file is {file_len} bytes, shorter than the 8-byte header length"
            )));
        }
        // SAFETY: the mapping is read-only; like every mmap-based loader we rely on checkpoint
        // files not being modified while the server runs.
        let map = unsafe { Mmap::map(&file) }.map_err(|e| WeightsError::io(&path, e))?;
        let mut len_bytes = [0u8; 8];
        len_bytes.copy_from_slice(&map[..8]);
        let header_len = u64::from_le_bytes(len_bytes);
        if header_len > MAX_HEADER || 8 + header_len > file_len {
            return Err(header_err(format!(
                "header length {header_len} does not fit in a {file_len}-byte file"
            )));
        }
        let data_start = 8 + header_len as usize;
        let text = std::str::from_utf8(&map[8..data_start])
            .map_err(|e| header_err(format!("header is not UTF-8: {e}")))?;
        let raw: BTreeMap<String, serde_json::Value> = serde_json::from_str(text)
            .map_err(|e| header_err(format!("header is not a JSON object: {e}")))?;

        let mut metadata = BTreeMap::new();
        let mut entries = BTreeMap::new();
        for (name, value) in raw {
            if name == "__metadata__" {
                metadata = serde_json::from_value(value)
                    .map_err(|e| header_err(format!("__metadata__ is not a string map: {e}")))?;
                continue;
            }
            let e: HeaderEntry = serde_json::from_value(value)
                .map_err(|e| header_err(format!("tensor `{name}`: {e}")))?;
            let size = any_dtype_size(&e.dtype)
                .ok_or_else(|| header_err(format!("tensor `{name}`: unknown dtype {}", e.dtype)))?;
            let numel = e.shape.iter().try_fold(1usize, |a, &d| a.checked_mul(d));
            let bytes = numel.and_then(|n| n.checked_mul(size));
            let [begin, end] = e.data_offsets;
            if end < begin || Some(end - begin) != bytes.map(|b| b as u64) {
                return Err(header_err(format!(
                    "tensor `{name}`: offsets {begin}..{end} do not hold {:?} of {}",
                    e.shape, e.dtype
                )));
            }
            entries.insert(name, (e, begin, end));
        }

        let mut by_offset: Vec<(&String, &(HeaderEntry, u64, u64))> = entries.iter().collect();
        by_offset.sort_by_key(|(_, (_, begin, end))| (*begin, *end));
        for (name, (_, _, end)) in by_offset {
            let needed = (data_start as u64).saturating_add(*end);
            if needed > file_len {
                return Err(WeightsError::Truncated {
                    path,
                    tensor: name.clone(),
                    needed,
                    file_len,
                });
            }
        }
        let entries = entries
            .into_iter()
            .map(|(name, (e, begin, end))| {
                let range = data_start + begin as usize..data_start + end as usize;
                (
                    name,
                    Entry {
                        dtype: e.dtype,
                        shape: e.shape,
                        range,
                    },
                )
            })
            .collect();
        Ok(SafetensorsFile {
            path,
            map: Arc::new(map),
            entries,
            metadata,
        })
    }

    /// The file this was opened from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Names of all tensors, sorted.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.entries.keys().map(String::as_str)
    }

    /// Number of tensors.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether the file holds no tensor.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Shape of tensor `name`, if present.
    pub fn shape(&self, name: &str) -> Option<&[usize]> {
        self.entries.get(name).map(|e| e.shape.as_slice())
    }

    /// The `__metadata__` string map of the header (empty if absent).
    pub fn metadata(&self) -> &BTreeMap<String, String> {
        &self.metadata
    }

    /// Tensor `name`, borrowed from the mapping. Missing names and dtypes other than
    /// F32/F16/BF16 are errors.
    pub fn tensor(&self, name: &str) -> Result<RawTensor, WeightsError> {
        let entry = self
            .entries
            .get(name)
            .ok_or_else(|| WeightsError::Missing {
                tensor: name.to_string(),
                expected_shape: Vec::new(),
            })?;
        let dtype = StoredDType::parse(&entry.dtype).ok_or_else(|| WeightsError::DType {
            tensor: name.to_string(),
            found: entry.dtype.clone(),
        })?;
        Ok(RawTensor {
            name: name.to_string(),
            dtype,
            shape: entry.shape.clone(),
            data: MappedBytes {
                map: Arc::clone(&self.map),
                range: entry.range.clone(),
            },
        })
    }
}
