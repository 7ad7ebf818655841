//! The `Tensor` type: constructors, accessors, dtype conversion and reshape.

use std::borrow::Cow;
use std::sync::Arc;

use half::{bf16, f16};

use super::device::Device;
use super::dtype::DType;
use super::error::{EngineError, Result};
use super::shape::Shape;
use super::storage::{CpuSlice, CpuStorage, SharedBytes, Storage};

/// An n-dimensional array on a device. Always contiguous row-major; cloning is cheap (an `Arc`),
/// and ops that change the layout copy. Ops compute in f32 and return F32 unless stated.
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
        write!(f, "Tensor[{}, {}, {}]", self.shape(), self.dtype(), self.device())
    }
}

fn check_len(op: &'static str, len: usize, shape: &Shape) -> Result<()> {
    if len != shape.checked_elem_count(op)? {
        return Err(EngineError::shape(
            op,
            format!("{len} elements do not fill shape {shape} ({} elements)", shape.elem_count()),
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
    fn from_storage(storage: CpuStorage, dtype: DType, shape: Shape, device: &Device) -> Tensor {
        let storage = match device {
            Device::Cpu => Storage::Cpu(storage),
        };
        Tensor(Arc::new(Inner { storage: Arc::new(storage), offset: 0, shape, dtype, device: *device }))
    }

    /// An f32 tensor owning `data`; `data.len()` must equal the shape's element count.
    pub fn from_vec(data: Vec<f32>, shape: impl Into<Shape>, device: &Device) -> Result<Tensor> {
        let shape = shape.into();
        check_len("from_vec", data.len(), &shape)?;
        Ok(Self::from_storage(CpuStorage::F32(data), DType::F32, shape, device))
    }

    /// An f16 tensor owning `data`; `data.len()` must equal the shape's element count.
    pub fn from_f16_vec(data: Vec<f16>, shape: impl Into<Shape>, device: &Device) -> Result<Tensor> {
        let shape = shape.into();
        check_len("from_f16_vec", data.len(), &shape)?;
        Ok(Self::from_storage(CpuStorage::F16(data), DType::F16, shape, device))
    }

    /// A bf16 tensor owning `data`; `data.len()` must equal the shape's element count.
    pub fn from_bf16_vec(data: Vec<bf16>, shape: impl Into<Shape>, device: &Device) -> Result<Tensor> {
        let shape = shape.into();
        check_len("from_bf16_vec", data.len(), &shape)?;
        Ok(Self::from_storage(CpuStorage::BF16(data), DType::BF16, shape, device))
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
        let want = shape.checked_elem_count("from_shared_bytes")?.saturating_mul(dtype.size_in_bytes());
        if b.len() != want {
            return Err(EngineError::shape(
                "from_shared_bytes",
                format!("{} bytes but shape {shape} of {dtype} needs {want}", b.len()),
            ));
        }
        let aligned = (b.as_ptr() as usize).is_multiple_of(dtype.size_in_bytes());
        let storage = if aligned {
            CpuStorage::Shared { bytes: bytes.clone(), dtype }
        } else {
            match dtype {
                DType::F32 => CpuStorage::F32(copy_unaligned(b)),
                DType::F16 => CpuStorage::F16(copy_unaligned(b)),
                DType::BF16 => CpuStorage::BF16(copy_unaligned(b)),
            }
        };
        Ok(Self::from_storage(storage, dtype, shape, device))
    }

    /// A tensor of zeros.
    pub fn zeros(shape: impl Into<Shape>, dtype: DType, device: &Device) -> Result<Tensor> {
        let shape = shape.into();
        let n = shape.checked_elem_count("zeros")?;
        let storage = match dtype {
            DType::F32 => CpuStorage::F32(vec![0.0; n]),
            DType::F16 => CpuStorage::F16(vec![f16::ZERO; n]),
            DType::BF16 => CpuStorage::BF16(vec![bf16::ZERO; n]),
        };
        Ok(Self::from_storage(storage, dtype, shape, device))
    }

    /// A tensor over a new CPU storage (dtype taken from the storage).
    pub(crate) fn from_cpu(storage: CpuStorage, shape: Shape, device: &Device) -> Tensor {
        let dtype = match &storage {
            CpuStorage::F32(_) => DType::F32,
            CpuStorage::F16(_) => DType::F16,
            CpuStorage::BF16(_) => DType::BF16,
            CpuStorage::Shared { dtype, .. } => *dtype,
        };
        Self::from_storage(storage, dtype, shape, device)
    }

    /// An f32 tensor with every element `value`.
    pub fn full(value: f32, shape: impl Into<Shape>, device: &Device) -> Result<Tensor> {
        let shape = shape.into();
        let n = shape.checked_elem_count("full")?;
        Ok(Self::from_storage(CpuStorage::F32(vec![value; n]), DType::F32, shape, device))
    }

    /// An f32 result of an op on `device`. The caller guarantees the length matches.
    pub(crate) fn from_f32_out(data: Vec<f32>, shape: impl Into<Shape>, device: &Device) -> Tensor {
        let shape = shape.into();
        debug_assert_eq!(data.len(), shape.elem_count());
        Self::from_storage(CpuStorage::F32(data), DType::F32, shape, device)
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

    /// This tensor's elements as a typed CPU slice.
    pub(crate) fn cpu_slice(&self) -> Result<CpuSlice<'_>> {
        match &*self.0.storage {
            Storage::Cpu(s) => s.slice()?.sub(self.0.offset, self.elem_count()),
        }
    }

    /// This tensor's elements as f32, borrowed when the tensor is already f32.
    pub(crate) fn f32_data(&self) -> Result<Cow<'_, [f32]>> {
        Ok(self.cpu_slice()?.to_f32())
    }

    /// Address of the first element in host memory, for zero-copy checks in tests.
    #[doc(hidden)]
    pub fn storage_ptr(&self) -> Option<*const u8> {
        self.cpu_slice().ok().map(|s| s.as_ptr())
    }

    /// The elements as f32 in row-major order.
    pub fn to_vec_f32(&self) -> Result<Vec<f32>> {
        Ok(self.f32_data()?.into_owned())
    }

    /// A copy converted to `dtype` (a cheap clone when the dtype already matches).
    pub fn to_dtype(&self, dtype: DType) -> Result<Tensor> {
        if dtype == self.dtype() {
            return Ok(self.clone());
        }
        let storage = self.cpu_slice()?.to_storage(dtype);
        Ok(Self::from_storage(storage, dtype, self.shape().clone(), self.device()))
    }

    /// This tensor on `device` (a cheap clone when it is already there).
    pub fn to_device(&self, device: &Device) -> Result<Tensor> {
        match device {
            Device::Cpu => Ok(self.clone()),
        }
    }

    /// The same elements with another shape of equal element count; shares storage.
    pub fn reshape(&self, shape: impl Into<Shape>) -> Result<Tensor> {
        let shape = shape.into();
        if shape.checked_elem_count("reshape")? != self.elem_count() {
            return Err(EngineError::shape(
                "reshape",
                format!("cannot reshape {} ({} elements) to {shape}", self.shape(), self.elem_count()),
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
            device: self.0.device,
        }))
    }

    /// Offset of the first element in the storage.
    pub(crate) fn offset(&self) -> usize {
        self.0.offset
    }
}
