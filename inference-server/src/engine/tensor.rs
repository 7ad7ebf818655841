//! The `Tensor` type: constructors, accessors, dtype and device conversion, reshape.

use std::sync::Arc;

use half::{bf16, f16};

use super::cpu::CpuStorage;
use super::device::Device;
use super::dtype::DType;
use super::error::{EngineError, Result};
use super::op::View;
use super::shape::Shape;
use super::storage::{SharedBytes, Storage, StorageArg};

/// An n-dimensional array on a device. Always contiguous row-major; cloning is cheap (an `Arc`),
/// and ops that change the layout copy. Compute ops return their input's dtype.
#[derive(Clone)]
pub struct Tensor(Arc<Inner>);

struct Inner {
    storage: Arc<Storage>,
    /// First element of this tensor inside `storage`, in elements.
    offset: usize,
    shape: Shape,
    dtype: DType,
    device: Device,
}

impl std::fmt::Debug for Tensor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Tensor[{}, {}, {}]",
            self.shape(),
            self.dtype(),
            self.device()
        )
    }
}

fn check_len(op: &'static str, len: usize, shape: &Shape) -> Result<()> {
    if len != shape.checked_elem_count(op)? {
        return Err(EngineError::shape(
            op,
            format!(
                "{len} elements do not fill shape {shape} ({} elements)",
                shape.elem_count()
            ),
        ));
    }
    Ok(())
}

/// Copies little-endian bytes of any alignment into a new, aligned vector.
fn copy_unaligned<T: bytemuck::Pod + bytemuck::Zeroable>(b: &[u8]) -> Vec<T> {
    let mut v = vec![T::zeroed(); b.len() / std::mem::size_of::<T>()];
    bytemuck::cast_slice_mut::<T, u8>(&mut v).copy_from_slice(b);
    v
}

impl Tensor {
    /// A tensor over a whole new storage (an op's result, or an upload).
    pub(crate) fn from_storage(storage: Storage, shape: impl Into<Shape>) -> Tensor {
        let shape = shape.into();
        let (dtype, device) = (storage.dtype(), storage.device());
        Tensor(Arc::new(Inner {
            storage: Arc::new(storage),
            offset: 0,
            shape,
            dtype,
            device,
        }))
    }

    /// Host elements put on `device` as a tensor of `shape` (length checked by the caller).
    fn from_host(host: CpuStorage, shape: Shape, device: &Device) -> Result<Tensor> {
        Ok(Self::from_storage(Storage::upload(host, device)?, shape))
    }

    /// An f32 tensor owning `data`; `data.len()` must equal the shape's element count.
    pub fn from_vec(data: Vec<f32>, shape: impl Into<Shape>, device: &Device) -> Result<Tensor> {
        let shape = shape.into();
        check_len("from_vec", data.len(), &shape)?;
        Self::from_host(CpuStorage::F32(data), shape, device)
    }

    /// An f16 tensor owning `data`; `data.len()` must equal the shape's element count.
    pub fn from_f16_vec(
        data: Vec<f16>,
        shape: impl Into<Shape>,
        device: &Device,
    ) -> Result<Tensor> {
        let shape = shape.into();
        check_len("from_f16_vec", data.len(), &shape)?;
        Self::from_host(CpuStorage::F16(data), shape, device)
    }

    /// A bf16 tensor owning `data`; `data.len()` must equal the shape's element count.
    pub fn from_bf16_vec(
        data: Vec<bf16>,
        shape: impl Into<Shape>,
        device: &Device,
    ) -> Result<Tensor> {
        let shape = shape.into();
        check_len("from_bf16_vec", data.len(), &shape)?;
        Self::from_host(CpuStorage::BF16(data), shape, device)
    }

    /// A tensor over little-endian `bytes` of `dtype`. On CPU this is zero copy when the bytes are
    /// aligned for `dtype`; misaligned bytes are copied. The byte length must be
    /// `elem_count * dtype.size_in_bytes()`.
    pub fn from_shared_bytes(
        bytes: Arc<dyn SharedBytes>,
        dtype: DType,
        shape: impl Into<Shape>,
        device: &Device,
    ) -> Result<Tensor> {
        let shape = shape.into();
        let b = bytes.as_bytes();
        let want = shape
            .checked_elem_count("from_shared_bytes")?
            .saturating_mul(dtype.size_in_bytes());
        if b.len() != want {
            return Err(EngineError::shape(
                "from_shared_bytes",
                format!(
                    "{} bytes but shape {shape} of {dtype} needs {want}",
                    b.len()
                ),
            ));
        }
        let aligned = (b.as_ptr() as usize).is_multiple_of(dtype.size_in_bytes());
        let host = if aligned {
            CpuStorage::Shared {
                bytes: bytes.clone(),
                dtype,
            }
        } else {
            match dtype {
                DType::F32 => CpuStorage::F32(copy_unaligned(b)),
                DType::F16 => CpuStorage::F16(copy_unaligned(b)),
                DType::BF16 => CpuStorage::BF16(copy_unaligned(b)),
            }
        };
        Self::from_host(host, shape, device)
    }

    /// A tensor of zeros.
    pub fn zeros(shape: impl Into<Shape>, dtype: DType, device: &Device) -> Result<Tensor> {
        let shape = shape.into();
        let n = shape.checked_elem_count("zeros")?;
        Self::from_host(CpuStorage::zeros(n, dtype), shape, device)
    }

    /// An f32 tensor with every element `value`.
    pub fn full(value: f32, shape: impl Into<Shape>, device: &Device) -> Result<Tensor> {
        let shape = shape.into();
        let n = shape.checked_elem_count("full")?;
        Self::from_host(CpuStorage::F32(vec![value; n]), shape, device)
    }

    /// The shape.
    pub fn shape(&self) -> &Shape {
        &self.0.shape
    }

    /// The dimensions.
    pub fn dims(&self) -> &[usize] {
        self.0.shape.dims()
    }

    /// The number of dimensions.
    pub fn rank(&self) -> usize {
        self.0.shape.rank()
    }

    /// The element type.
    pub fn dtype(&self) -> DType {
        self.0.dtype
    }

    /// The device.
    pub fn device(&self) -> &Device {
        &self.0.device
    }

    /// The number of elements.
    pub fn elem_count(&self) -> usize {
        self.0.shape.elem_count()
    }

    /// The storage holding this tensor's elements.
    pub(crate) fn storage(&self) -> &Storage {
        &self.0.storage
    }

    /// Where this tensor's elements sit in its storage.
    pub(crate) fn view_in_storage(&self) -> View {
        View {
            start: self.0.offset,
            len: self.elem_count(),
        }
    }

    /// This tensor as an op argument.
    pub(crate) fn arg(&self) -> StorageArg<'_> {
        (self.storage(), self.view_in_storage())
    }

    /// Address of the first element in host memory, for zero-copy checks in tests.
    #[doc(hidden)]
    pub fn storage_ptr(&self) -> Option<*const u8> {
        self.storage().host_ptr(self.view_in_storage())
    }

    /// The elements as f32 in row-major order (downloaded from the device when needed).
    pub fn to_vec_f32(&self) -> Result<Vec<f32>> {
        let host = self.storage().to_host(self.view_in_storage())?;
        Ok(host.slice()?.to_f32().into_owned())
    }

    /// A copy converted to `dtype` (a cheap clone when the dtype already matches).
    pub fn to_dtype(&self, dtype: DType) -> Result<Tensor> {
        if dtype == self.dtype() {
            return Ok(self.clone());
        }
        let storage = self.storage().to_dtype(self.view_in_storage(), dtype)?;
        Ok(Self::from_storage(storage, self.shape().clone()))
    }

    /// This tensor on `device` (a cheap clone when it is already there).
    pub fn to_device(&self, device: &Device) -> Result<Tensor> {
        if device == self.device() {
            return Ok(self.clone());
        }
        let host = self.storage().to_host(self.view_in_storage())?;
        Self::from_host(host, self.shape().clone(), device)
    }

    /// Checks that every tensor of an op is on `self`'s device.
    pub(crate) fn same_device(&self, op: &'static str, others: &[&Tensor]) -> Result<()> {
        match others.iter().find(|t| t.device() != self.device()) {
            Some(t) => Err(EngineError::invalid(
                op,
                format!(
                    "operands are on different devices ({} and {})",
                    self.device(),
                    t.device()
                ),
            )),
            None => Ok(()),
        }
    }

    /// The same elements with another shape of equal element count; shares storage.
    pub fn reshape(&self, shape: impl Into<Shape>) -> Result<Tensor> {
        let shape = shape.into();
        if shape.checked_elem_count("reshape")? != self.elem_count() {
            return Err(EngineError::shape(
                "reshape",
                format!(
                    "cannot reshape {} ({} elements) to {shape}",
                    self.shape(),
                    self.elem_count()
                ),
            ));
        }
        Ok(self.view(self.0.offset, shape))
    }

    /// A view of `shape.elem_count()` contiguous elements starting at `offset` of the storage.
    pub(crate) fn view(&self, offset: usize, shape: Shape) -> Tensor {
        Tensor(Arc::new(Inner {
            storage: self.0.storage.clone(),
            offset,
            shape,
            dtype: self.0.dtype,
            device: self.0.device.clone(),
        }))
    }

    /// Offset of the first element in the storage.
    pub(crate) fn offset(&self) -> usize {
        self.0.offset
    }
}
