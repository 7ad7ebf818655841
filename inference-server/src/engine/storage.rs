//! Tensor storage and the backend dispatch: the one file that matches on where a tensor lives.

use super::backend::{Arg, BackendStorage};
use super::cpu::CpuStorage;
use super::cuda::storage::CudaStorage;
use super::device::Device;
use super::dtype::DType;
use super::error::{EngineError, Result};
use super::op::{
    AttnGeom, AxisGeom, BinaryOp, BroadcastGeom, Conv2dGeom, GroupNormGeom, LinearGeom, MatmulGeom,
    PadGeom, ReduceOp, SinusoidGeom, StridedGeom, UnaryOp, View,
};

/// Immutable bytes shared with a tensor without copying, e.g. a window of an
/// `Arc<memmap2::Mmap>` holding a safetensors file.
///
/// `as_bytes` must return the same slice on every call.
pub trait SharedBytes: Send + Sync + 'static {
    /// The bytes.
    fn as_bytes(&self) -> &[u8];
}

impl SharedBytes for Vec<u8> {
    fn as_bytes(&self) -> &[u8] {
        self
    }
}

impl SharedBytes for memmap2::Mmap {
    fn as_bytes(&self) -> &[u8] {
        self
    }
}

/// Where a tensor's elements live: one variant per backend. Every `match` on a storage in the
/// engine is in this file; each arm hands the op to that backend's [`BackendStorage`] impl.
/// Adding a variant makes the compiler list every op below that must learn it.
pub(crate) enum Storage {
    /// Host memory.
    Cpu(CpuStorage),
    /// GPU memory (or the emulator's host memory standing in for it).
    Cuda(CudaStorage),
}

/// An op argument: a storage and the tensor's place in it.
pub(crate) type StorageArg<'a> = (&'a Storage, View);

/// Operands of one op on different backends. `ops` checks devices first, so this is the
/// backstop, not the usual path.
fn mismatch(op: &'static str) -> EngineError {
    EngineError::invalid(op, "operands are on different devices")
}

/// The CPU storages of an op's arguments.
fn cpu_args<'a>(op: &'static str, args: &[StorageArg<'a>]) -> Result<Vec<Arg<'a, CpuStorage>>> {
    args.iter()
        .map(|(s, v)| match s {
            Storage::Cpu(c) => Ok((c, *v)),
            Storage::Cuda(_) => Err(mismatch(op)),
        })
        .collect()
}

/// The device storages of an op's arguments.
fn cuda_args<'a>(op: &'static str, args: &[StorageArg<'a>]) -> Result<Vec<Arg<'a, CudaStorage>>> {
    args.iter()
        .map(|(s, v)| match s {
            Storage::Cuda(c) => Ok((c, *v)),
            Storage::Cpu(_) => Err(mismatch(op)),
        })
        .collect()
}

/// `cpu_args` or `cuda_args`: a backend's unwrapping of an op's arguments.
type Unwrap<'a, S> = fn(&'static str, &[StorageArg<'a>]) -> Result<Vec<Arg<'a, S>>>;

/// Unwraps an optional argument with `f` (`cpu_args` or `cuda_args`).
fn opt_arg<'a, S>(
    op: &'static str,
    arg: Option<StorageArg<'a>>,
    f: Unwrap<'a, S>,
) -> Result<Option<Arg<'a, S>>> {
    arg.map(|a| f(op, &[a]).map(|v| v[0])).transpose()
}

impl Storage {
    /// Puts host elements on `device` (zero copy on the CPU).
    pub(crate) fn upload(host: CpuStorage, device: &Device) -> Result<Storage> {
        match device {
            Device::Cpu => {
                // Every CPU tensor starts here, so the worker pool is set up (denormals
                // flushed) before the first kernel uses it.
                crate::engine::cpu::threads::ensure_pool();
                Ok(Storage::Cpu(host))
            }
            Device::Cuda(d) => Ok(Storage::Cuda(CudaStorage::upload_host(d, host.slice()?)?)),
        }
    }

    /// The device the elements live on.
    pub(crate) fn device(&self) -> Device {
        match self {
            Storage::Cpu(_) => Device::Cpu,
            Storage::Cuda(s) => Device::Cuda(s.dev().clone()),
        }
    }

    /// The element type.
    pub(crate) fn dtype(&self) -> DType {
        match self {
            Storage::Cpu(s) => BackendStorage::dtype(s),
            Storage::Cuda(s) => BackendStorage::dtype(s),
        }
    }

    /// Host address of element `start`, when the storage is in host memory (zero-copy checks).
    pub(crate) fn host_ptr(&self, v: View) -> Option<*const u8> {
        match self {
            Storage::Cpu(s) => s.view(v).ok().map(|s| s.as_ptr()),
            Storage::Cuda(_) => None,
        }
    }

    /// The elements of `v` in host memory, keeping the dtype (download).
    pub(crate) fn to_host(&self, v: View) -> Result<CpuStorage> {
        match self {
            Storage::Cpu(s) => s.to_host(v),
            Storage::Cuda(s) => s.to_host(v),
        }
    }

    /// The elements of `v` converted to `dtype`.
    pub(crate) fn to_dtype(&self, v: View, dtype: DType) -> Result<Storage> {
        match self {
            Storage::Cpu(s) => Ok(Storage::Cpu(s.to_dtype(v, dtype)?)),
            Storage::Cuda(s) => Ok(Storage::Cuda(s.to_dtype(v, dtype)?)),
        }
    }

    /// See [`BackendStorage::unary`].
    pub(crate) fn unary(&self, v: View, op: UnaryOp) -> Result<Storage> {
        match self {
            Storage::Cpu(s) => Ok(Storage::Cpu(s.unary(v, op)?)),
            Storage::Cuda(s) => Ok(Storage::Cuda(s.unary(v, op)?)),
        }
    }

    /// See [`BackendStorage::binary`].
    pub(crate) fn binary(
        &self,
        v: View,
        rhs: StorageArg<'_>,
        op: BinaryOp,
        g: &BroadcastGeom,
    ) -> Result<Storage> {
        let name = op.kernel_name();
        match self {
            Storage::Cpu(a) => Ok(Storage::Cpu(a.binary(
                v,
                cpu_args(name, &[rhs])?[0],
                op,
                g,
            )?)),
            Storage::Cuda(a) => Ok(Storage::Cuda(a.binary(
                v,
                cuda_args(name, &[rhs])?[0],
                op,
                g,
            )?)),
        }
    }

    /// See [`BackendStorage::reduce`].
    pub(crate) fn reduce(&self, v: View, op: ReduceOp, g: AxisGeom) -> Result<Storage> {
        match self {
            Storage::Cpu(s) => Ok(Storage::Cpu(s.reduce(v, op, g)?)),
            Storage::Cuda(s) => Ok(Storage::Cuda(s.reduce(v, op, g)?)),
        }
    }

    /// See [`BackendStorage::softmax_last_dim`].
    pub(crate) fn softmax_last_dim(&self, v: View, cols: usize) -> Result<Storage> {
        match self {
            Storage::Cpu(s) => Ok(Storage::Cpu(s.softmax_last_dim(v, cols)?)),
            Storage::Cuda(s) => Ok(Storage::Cuda(s.softmax_last_dim(v, cols)?)),
        }
    }

    /// See [`BackendStorage::geglu`].
    pub(crate) fn geglu(&self, v: View, half: usize) -> Result<Storage> {
        match self {
            Storage::Cpu(s) => Ok(Storage::Cpu(s.geglu(v, half)?)),
            Storage::Cuda(s) => Ok(Storage::Cuda(s.geglu(v, half)?)),
        }
    }

    /// See [`BackendStorage::matmul`].
    pub(crate) fn matmul(&self, v: View, rhs: StorageArg<'_>, g: &MatmulGeom) -> Result<Storage> {
        match self {
            Storage::Cpu(a) => Ok(Storage::Cpu(a.matmul(
                v,
                cpu_args("matmul", &[rhs])?[0],
                g,
            )?)),
            Storage::Cuda(a) => Ok(Storage::Cuda(a.matmul(
                v,
                cuda_args("matmul", &[rhs])?[0],
                g,
            )?)),
        }
    }

    /// See [`BackendStorage::linear`].
    pub(crate) fn linear(
        &self,
        v: View,
        weight: StorageArg<'_>,
        bias: Option<StorageArg<'_>>,
        g: LinearGeom,
    ) -> Result<Storage> {
        match self {
            Storage::Cpu(s) => {
                let (w, b) = (
                    cpu_args("linear", &[weight])?[0],
                    opt_arg("linear", bias, cpu_args)?,
                );
                Ok(Storage::Cpu(s.linear(v, w, b, g)?))
            }
            Storage::Cuda(s) => {
                let (w, b) = (
                    cuda_args("linear", &[weight])?[0],
                    opt_arg("linear", bias, cuda_args)?,
                );
                Ok(Storage::Cuda(s.linear(v, w, b, g)?))
            }
        }
    }

    /// See [`BackendStorage::conv2d`].
    pub(crate) fn conv2d(
        &self,
        v: View,
        weight: StorageArg<'_>,
        bias: Option<StorageArg<'_>>,
        residual: Option<StorageArg<'_>>,
        g: Conv2dGeom,
    ) -> Result<Storage> {
        match self {
            Storage::Cpu(s) => {
                let (w, b, r) = (
                    cpu_args("conv2d", &[weight])?[0],
                    opt_arg("conv2d", bias, cpu_args)?,
                    opt_arg("conv2d", residual, cpu_args)?,
                );
                Ok(Storage::Cpu(s.conv2d(v, w, b, r, g)?))
            }
            Storage::Cuda(s) => {
                let (w, b, r) = (
                    cuda_args("conv2d", &[weight])?[0],
                    opt_arg("conv2d", bias, cuda_args)?,
                    opt_arg("conv2d", residual, cuda_args)?,
                );
                Ok(Storage::Cuda(s.conv2d(v, w, b, r, g)?))
            }
        }
    }

    /// See [`BackendStorage::layer_norm`].
    pub(crate) fn layer_norm(
        &self,
        v: View,
        weight: StorageArg<'_>,
        bias: StorageArg<'_>,
        c: usize,
        eps: f32,
    ) -> Result<Storage> {
        match self {
            Storage::Cpu(s) => {
                let wb = cpu_args("layer_norm", &[weight, bias])?;
                Ok(Storage::Cpu(s.layer_norm(v, wb[0], wb[1], c, eps)?))
            }
            Storage::Cuda(s) => {
                let wb = cuda_args("layer_norm", &[weight, bias])?;
                Ok(Storage::Cuda(s.layer_norm(v, wb[0], wb[1], c, eps)?))
            }
        }
    }

    /// See [`BackendStorage::group_norm`].
    pub(crate) fn group_norm(
        &self,
        v: View,
        weight: StorageArg<'_>,
        bias: StorageArg<'_>,
        g: GroupNormGeom,
    ) -> Result<Storage> {
        match self {
            Storage::Cpu(s) => {
                let wb = cpu_args("group_norm", &[weight, bias])?;
                Ok(Storage::Cpu(s.group_norm(v, wb[0], wb[1], g)?))
            }
            Storage::Cuda(s) => {
                let wb = cuda_args("group_norm", &[weight, bias])?;
                Ok(Storage::Cuda(s.group_norm(v, wb[0], wb[1], g)?))
            }
        }
    }

    /// See [`BackendStorage::attention`].
    pub(crate) fn attention(
        &self,
        q: View,
        k: StorageArg<'_>,
        v: StorageArg<'_>,
        g: AttnGeom,
    ) -> Result<Storage> {
        match self {
            Storage::Cpu(s) => {
                let kv = cpu_args("attention", &[k, v])?;
                Ok(Storage::Cpu(s.attention(q, kv[0], kv[1], g)?))
            }
            Storage::Cuda(s) => {
                let kv = cuda_args("attention", &[k, v])?;
                Ok(Storage::Cuda(s.attention(q, kv[0], kv[1], g)?))
            }
        }
    }

    /// See [`BackendStorage::upsample_nearest2x`].
    pub(crate) fn upsample_nearest2x(
        &self,
        v: View,
        planes: usize,
        h: usize,
        w: usize,
    ) -> Result<Storage> {
        match self {
            Storage::Cpu(s) => Ok(Storage::Cpu(s.upsample_nearest2x(v, planes, h, w)?)),
            Storage::Cuda(s) => Ok(Storage::Cuda(s.upsample_nearest2x(v, planes, h, w)?)),
        }
    }

    /// See [`BackendStorage::pad2d`].
    pub(crate) fn pad2d(&self, v: View, g: PadGeom) -> Result<Storage> {
        match self {
            Storage::Cpu(s) => Ok(Storage::Cpu(s.pad2d(v, g)?)),
            Storage::Cuda(s) => Ok(Storage::Cuda(s.pad2d(v, g)?)),
        }
    }

    /// See [`BackendStorage::strided_copy`].
    pub(crate) fn strided_copy(&self, g: &StridedGeom) -> Result<Storage> {
        match self {
            Storage::Cpu(s) => Ok(Storage::Cpu(s.strided_copy(g)?)),
            Storage::Cuda(s) => Ok(Storage::Cuda(s.strided_copy(g)?)),
        }
    }

    /// See [`BackendStorage::cat`]; the parts must share the first part's device.
    pub(crate) fn cat(
        parts: &[StorageArg<'_>],
        mids: &[usize],
        outer: usize,
        inner: usize,
    ) -> Result<Storage> {
        match parts.first().map(|p| p.0) {
            Some(Storage::Cpu(_)) | None => Ok(Storage::Cpu(CpuStorage::cat(
                &cpu_args("cat", parts)?,
                mids,
                outer,
                inner,
            )?)),
            Some(Storage::Cuda(_)) => Ok(Storage::Cuda(CudaStorage::cat(
                &cuda_args("cat", parts)?,
                mids,
                outer,
                inner,
            )?)),
        }
    }

    /// See [`BackendStorage::index_select`].
    pub(crate) fn index_select(&self, v: View, ids: &[u32], g: AxisGeom) -> Result<Storage> {
        match self {
            Storage::Cpu(s) => Ok(Storage::Cpu(s.index_select(v, ids, g)?)),
            Storage::Cuda(s) => Ok(Storage::Cuda(s.index_select(v, ids, g)?)),
        }
    }

    /// See [`BackendStorage::sinusoids`].
    pub(crate) fn sinusoids(
        device: &Device,
        timesteps: &[f32],
        g: SinusoidGeom,
    ) -> Result<Storage> {
        match device {
            Device::Cpu => Ok(Storage::Cpu(CpuStorage::sinusoids(&(), timesteps, g)?)),
            Device::Cuda(d) => Ok(Storage::Cuda(CudaStorage::sinusoids(d, timesteps, g)?)),
        }
    }
}
