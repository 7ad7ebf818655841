//! Device storage: a pooled allocation and its dtype, plus the helpers the backend's ops share
//! (fresh outputs, dtype-converted operands, engine errors from CUDA errors).

use std::sync::Arc;

use super::device::{CudaDevice, DeviceBuffer};
use super::error::CudaError;
use super::ops;
use crate::engine::DType;
use crate::engine::cpu::CpuStorage;
use crate::engine::error::{EngineError, Result as EngineResult};
use crate::engine::op::View;

/// Elements of one dtype in device memory. Cloning shares the allocation.
#[derive(Clone)]
pub(crate) struct CudaStorage {
    buf: Arc<DeviceBuffer>,
    dtype: DType,
}

/// A CUDA error as the engine reports it for `op`; running out of device memory stays
/// recognisable so the service can answer `RESOURCE_EXHAUSTED` for that one request.
pub(crate) fn engine_err(op: &'static str, e: CudaError) -> EngineError {
    match e {
        CudaError::OutOfMemory { bytes } => EngineError::OutOfMemory { op, bytes },
        other => EngineError::Backend {
            op,
            msg: other.to_string(),
        },
    }
}

impl CudaStorage {
    /// Uninitialised room for `n` elements of `dtype` on `dev`.
    pub(crate) fn alloc(
        dev: &CudaDevice,
        n: usize,
        dtype: DType,
    ) -> Result<CudaStorage, CudaError> {
        Ok(CudaStorage {
            buf: Arc::new(dev.alloc(n * dtype.size_in_bytes())?),
            dtype,
        })
    }

    /// The element type.
    pub(crate) fn dtype(&self) -> DType {
        self.dtype
    }

    /// The device holding the elements.
    pub(crate) fn dev(&self) -> &CudaDevice {
        &self.buf.dev
    }

    /// Device address of the first element.
    pub(crate) fn base(&self) -> u64 {
        self.buf.ptr
    }

    /// Device address of element `v.start`.
    pub(crate) fn ptr(&self, v: View) -> u64 {
        self.buf.ptr + (v.start * self.dtype.size_in_bytes()) as u64
    }

    /// Copies host elements of `host` to a new device storage.
    pub(crate) fn upload_slice(
        dev: &CudaDevice,
        host: crate::engine::cpu::CpuSlice<'_>,
    ) -> Result<CudaStorage, CudaError> {
        let dtype = host.dtype();
        let out = CudaStorage::alloc(dev, host.len(), dtype)?;
        // SAFETY: the slice's bytes are its elements.
        let bytes = unsafe {
            std::slice::from_raw_parts(host.as_ptr(), host.len() * dtype.size_in_bytes())
        };
        dev.rt().htod(out.base(), bytes)?;
        Ok(out)
    }

    /// [`CudaStorage::upload_slice`] with the error as the engine reports it.
    pub(crate) fn upload_host(
        dev: &CudaDevice,
        host: crate::engine::cpu::CpuSlice<'_>,
    ) -> EngineResult<CudaStorage> {
        Self::upload_slice(dev, host).map_err(|e| engine_err("upload", e))
    }

    /// Copies the elements of `v` to host memory.
    pub(crate) fn download(&self, v: View) -> Result<CpuStorage, CudaError> {
        let mut bytes = vec![0u8; v.len * self.dtype.size_in_bytes()];
        self.dev().rt().dtoh(self.ptr(v), &mut bytes)?;
        Ok(match self.dtype {
            DType::F32 => CpuStorage::F32(bytemuck::pod_collect_to_vec(&bytes)),
            DType::F16 => CpuStorage::F16(bytemuck::pod_collect_to_vec(&bytes)),
            DType::BF16 => CpuStorage::BF16(bytemuck::pod_collect_to_vec(&bytes)),
        })
    }

    /// The elements of `v` as `dtype`: this storage when it already has it, else a converted copy.
    pub(crate) fn as_dtype(&self, v: View, dtype: DType) -> Result<(CudaStorage, View), CudaError> {
        if self.dtype == dtype {
            return Ok((self.clone(), v));
        }
        let out = CudaStorage::alloc(self.dev(), v.len, dtype)?;
        ops::layout::cast(
            self.dev().rt(),
            self.dtype,
            dtype,
            self.ptr(v),
            out.base(),
            v.len,
        )?;
        Ok((
            out,
            View {
                start: 0,
                len: v.len,
            },
        ))
    }
}
