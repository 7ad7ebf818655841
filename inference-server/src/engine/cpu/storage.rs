//! Host storage: owned vectors or borrowed bytes, typed views of them, and dtype conversion
//! (parallel for large arrays).

use std::borrow::Cow;
use std::sync::Arc;

use half::{bf16, f16, slice::HalfFloatSliceExt};
use rayon::prelude::*;

use crate::engine::dtype::DType;
use crate::engine::error::{EngineError, Result};
use crate::engine::storage::SharedBytes;

/// Host storage: owned vectors, or borrowed aligned bytes (zero copy).
pub(crate) enum CpuStorage {
    F32(Vec<f32>),
    F16(Vec<f16>),
    BF16(Vec<bf16>),
    /// Bytes checked at construction to be aligned for `dtype` and a whole number of elements.
    Shared {
        bytes: Arc<dyn SharedBytes>,
        dtype: DType,
    },
}

/// A typed view of (part of) a CPU storage.
#[derive(Clone, Copy)]
pub(crate) enum CpuSlice<'a> {
    F32(&'a [f32]),
    F16(&'a [f16]),
    BF16(&'a [bf16]),
}

/// Above this many elements, dtype conversions run on rayon in chunks.
const PAR_CONVERT_MIN: usize = 1 << 16;

impl CpuStorage {
    /// An f32 kernel result stored as `dtype`: moved when `dtype` is f32, converted otherwise.
    /// The CPU kernels compute in f32; this is where a half-precision activation gets its dtype
    /// back.
    pub(crate) fn from_f32(data: Vec<f32>, dtype: DType) -> CpuStorage {
        match dtype {
            DType::F32 => CpuStorage::F32(data),
            DType::F16 => CpuStorage::F16(par_from_f32(&data)),
            DType::BF16 => CpuStorage::BF16(par_from_f32(&data)),
        }
    }

    /// Zeros of `dtype`.
    pub(crate) fn zeros(n: usize, dtype: DType) -> CpuStorage {
        match dtype {
            DType::F32 => CpuStorage::F32(vec![0.0; n]),
            DType::F16 => CpuStorage::F16(vec![f16::ZERO; n]),
            DType::BF16 => CpuStorage::BF16(vec![bf16::ZERO; n]),
        }
    }

    /// Elements `v` of the storage as a typed slice.
    pub(crate) fn view(&self, v: crate::engine::op::View) -> Result<CpuSlice<'_>> {
        self.slice()?.sub(v.start, v.len)
    }

    /// The whole storage as a typed slice.
    pub(crate) fn slice(&self) -> Result<CpuSlice<'_>> {
        Ok(match self {
            CpuStorage::F32(v) => CpuSlice::F32(v),
            CpuStorage::F16(v) => CpuSlice::F16(v),
            CpuStorage::BF16(v) => CpuSlice::BF16(v),
            CpuStorage::Shared { bytes, dtype } => {
                let b = bytes.as_bytes();
                let bad = |e: bytemuck::PodCastError| {
                    EngineError::invalid(
                        "storage",
                        format!("shared bytes no longer castable to {dtype}: {e:?}"),
                    )
                };
                match dtype {
                    DType::F32 => CpuSlice::F32(bytemuck::try_cast_slice(b).map_err(bad)?),
                    DType::F16 => CpuSlice::F16(bytemuck::try_cast_slice(b).map_err(bad)?),
                    DType::BF16 => CpuSlice::BF16(bytemuck::try_cast_slice(b).map_err(bad)?),
                }
            }
        })
    }
}

impl<'a> CpuSlice<'a> {
    /// Elements `start..start + len`.
    pub(crate) fn sub(self, start: usize, len: usize) -> Result<CpuSlice<'a>> {
        let n = self.len();
        if start + len > n {
            return Err(EngineError::invalid(
                "storage",
                format!("view {start}+{len} exceeds storage of {n}"),
            ));
        }
        Ok(match self {
            CpuSlice::F32(s) => CpuSlice::F32(&s[start..start + len]),
            CpuSlice::F16(s) => CpuSlice::F16(&s[start..start + len]),
            CpuSlice::BF16(s) => CpuSlice::BF16(&s[start..start + len]),
        })
    }

    /// The element type.
    pub(crate) fn dtype(self) -> DType {
        match self {
            CpuSlice::F32(_) => DType::F32,
            CpuSlice::F16(_) => DType::F16,
            CpuSlice::BF16(_) => DType::BF16,
        }
    }

    /// Number of elements.
    pub(crate) fn len(self) -> usize {
        match self {
            CpuSlice::F32(s) => s.len(),
            CpuSlice::F16(s) => s.len(),
            CpuSlice::BF16(s) => s.len(),
        }
    }

    /// First byte of the view.
    pub(crate) fn as_ptr(self) -> *const u8 {
        match self {
            CpuSlice::F32(s) => s.as_ptr() as *const u8,
            CpuSlice::F16(s) => s.as_ptr() as *const u8,
            CpuSlice::BF16(s) => s.as_ptr() as *const u8,
        }
    }

    /// Converts elements `start..start + dst.len()` into `dst` as f32.
    pub(crate) fn convert_range(self, start: usize, dst: &mut [f32]) {
        let end = start + dst.len();
        match self {
            CpuSlice::F32(s) => dst.copy_from_slice(&s[start..end]),
            CpuSlice::F16(s) => s[start..end].convert_to_f32_slice(dst),
            CpuSlice::BF16(s) => super::fastmath::from_bf16(dst, &s[start..end]),
        }
    }

    /// Like [`CpuSlice::convert_range`], in parallel chunks when `dst` is large.
    pub(crate) fn convert_range_par(self, start: usize, dst: &mut [f32]) {
        if dst.len() < PAR_CONVERT_MIN {
            return self.convert_range(start, dst);
        }
        let chunk = PAR_CONVERT_MIN / 4;
        dst.par_chunks_mut(chunk)
            .enumerate()
            .for_each(|(i, d)| self.convert_range(start + i * chunk, d));
    }

    /// The view as f32: borrowed when already f32, converted (in parallel if large) otherwise.
    pub(crate) fn to_f32(self) -> Cow<'a, [f32]> {
        if let CpuSlice::F32(s) = self {
            return Cow::Borrowed(s);
        }
        let mut out = vec![0f32; self.len()];
        self.convert_range_par(0, &mut out);
        Cow::Owned(out)
    }

    /// Copies the view into a new owned storage of `dtype`.
    pub(crate) fn to_storage(self, dtype: DType) -> CpuStorage {
        match (self, dtype) {
            (CpuSlice::F16(s), DType::F16) => CpuStorage::F16(s.to_vec()),
            (CpuSlice::BF16(s), DType::BF16) => CpuStorage::BF16(s.to_vec()),
            (src, DType::F32) => CpuStorage::F32(src.to_f32().into_owned()),
            (src, DType::F16) => CpuStorage::F16(par_from_f32(&src.to_f32())),
            (src, DType::BF16) => CpuStorage::BF16(par_from_f32(&src.to_f32())),
        }
    }
}

/// Converts f32 to a half type in parallel chunks.
fn par_from_f32<T: Copy + Default + Send + HalfFromF32>(src: &[f32]) -> Vec<T> {
    let mut out = vec![T::default(); src.len()];
    out.par_chunks_mut(PAR_CONVERT_MIN / 4)
        .zip(src.par_chunks(PAR_CONVERT_MIN / 4))
        .for_each(|(d, s)| T::fill_from_f32(d, s));
    out
}

/// Slice conversion from f32 for the half types.
trait HalfFromF32: Sized {
    fn fill_from_f32(dst: &mut [Self], src: &[f32]);
}

impl HalfFromF32 for f16 {
    fn fill_from_f32(dst: &mut [Self], src: &[f32]) {
        dst.convert_from_f32_slice(src)
    }
}

impl HalfFromF32 for bf16 {
    fn fill_from_f32(dst: &mut [Self], src: &[f32]) {
        super::fastmath::to_bf16(dst, src)
    }
}
