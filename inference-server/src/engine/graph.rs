//! Recorded computations: tensor work captured once on a GPU as a CUDA graph and replayed with
//! new input values, so the host issues one launch instead of a thousand (`cuda/graph.rs`).
//! The sampling loop records its UNet step this way. On the CPU and the emulator nothing is
//! recorded and the caller runs the work itself.

use super::cuda::CudaDevice;
use super::cuda::graph::CudaGraph;
use super::cuda::storage::{CudaStorage, engine_err};
use super::device::Device;
use super::error::{EngineError, Result};
use super::op::View;
use super::storage::Storage;
use super::tensor::Tensor;

/// Whether GPU work may be recorded as CUDA graphs: yes unless `SDSERVE_CUDA_GRAPHS=0` (to
/// compare, or to rule graphs out when chasing a GPU problem).
pub fn graphs_enabled() -> bool {
    std::env::var("SDSERVE_CUDA_GRAPHS").map_or(true, |v| v != "0")
}

/// A computation recorded on a GPU: the input tensors a replay reads, the output it writes,
/// and the graph. The output holds the result of the latest launch.
pub struct Recorded {
    inputs: Vec<Tensor>,
    output: Tensor,
    graph: CudaGraph,
}

impl std::fmt::Debug for Recorded {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Recorded")
            .field("inputs", &self.inputs)
            .field("output", &self.output)
            .finish_non_exhaustive()
    }
}

impl Device {
    /// Records `f` applied to copies of `inputs` as a CUDA graph and launches it once, so the
    /// returned [`Recorded`]'s output is `f(inputs)`. `Ok(None)` when this device does not
    /// record (the CPU, the emulator, `SDSERVE_CUDA_GRAPHS=0`, `SDSERVE_PROFILE=1`): the caller
    /// runs `f` itself.
    /// `f` must issue device work only: no copies to or from the host and no reads of tensor
    /// values, which would fail the recording.
    pub fn record<E: From<EngineError>>(
        &self,
        inputs: &[&Tensor],
        f: impl FnOnce(&[Tensor]) -> std::result::Result<Tensor, E>,
    ) -> std::result::Result<Option<Recorded>, E> {
        let Device::Cuda(dev) = self else {
            return Ok(None);
        };
        // A profiled run (SDSERVE_PROFILE=1) times each kernel: a graph would hide them.
        if dev.is_emulated() || !graphs_enabled() || super::profile::enabled() {
            return Ok(None);
        }
        let inputs = inputs
            .iter()
            .map(|t| fresh_copy(dev, t))
            .collect::<Result<Vec<_>>>()?;
        let err = |e| E::from(engine_err("CUDA graph capture", e));
        let (graph, output) = dev.capture(|| f(&inputs), err)?;
        graph
            .launch()
            .map_err(|e| engine_err("CUDA graph launch", e))?;
        Ok(Some(Recorded {
            inputs,
            output,
            graph,
        }))
    }
}

impl Recorded {
    /// Whether `values` fit the recorded inputs (one each, same shapes and dtypes), so that
    /// [`Recorded::replay`] can take them.
    pub fn fits(&self, values: &[&Tensor]) -> bool {
        values.len() == self.inputs.len()
            && self
                .inputs
                .iter()
                .zip(values)
                .all(|(a, b)| a.shape() == b.shape() && a.dtype() == b.dtype())
    }

    /// Copies `values` into the inputs and launches the graph; returns the output, which the
    /// next replay overwrites (hence the borrow).
    pub fn replay(&mut self, values: &[&Tensor]) -> Result<&Tensor> {
        if !self.fits(values) {
            let shapes: Vec<String> = values.iter().map(|t| t.shape().to_string()).collect();
            return Err(EngineError::Invalid {
                op: "replay",
                msg: format!(
                    "the graph was recorded for {} inputs of other shapes or dtypes, got [{}]",
                    self.inputs.len(),
                    shapes.join(", ")
                ),
            });
        }
        for (dst, src) in self.inputs.iter().zip(values) {
            let Storage::Cuda(d) = dst.storage() else {
                return Err(EngineError::Invalid {
                    op: "replay",
                    msg: "a recorded input is not in device memory".into(),
                });
            };
            copy_into(d, dst.view_in_storage(), src, "replay")?;
        }
        self.graph
            .launch()
            .map_err(|e| engine_err("CUDA graph launch", e))?;
        Ok(&self.output)
    }

    /// The output of the latest launch.
    pub fn output(&self) -> &Tensor {
        &self.output
    }
}

/// The device storage of `t` on `dev`, or an error naming the op.
fn cuda_storage<'a>(dev: &CudaDevice, t: &'a Tensor, op: &'static str) -> Result<&'a CudaStorage> {
    match t.storage() {
        Storage::Cuda(s) if s.dev() == dev => Ok(s),
        _ => Err(EngineError::Invalid {
            op,
            msg: format!("input {t:?} is not on {}", dev.label()),
        }),
    }
}

/// A new tensor on `dev` holding `t`'s values: a recorded input of the graph's own, which no
/// one else holds and which a replay may therefore overwrite.
fn fresh_copy(dev: &CudaDevice, t: &Tensor) -> Result<Tensor> {
    let out =
        CudaStorage::alloc(dev, t.elem_count(), t.dtype()).map_err(|e| engine_err("record", e))?;
    let all = View {
        start: 0,
        len: t.elem_count(),
    };
    copy_into(&out, all, t, "record")?;
    Ok(Tensor::from_storage(Storage::Cuda(out), t.shape().clone()))
}

/// Writes `src`'s values into `dst` at `at` (as many elements, same dtype), in stream order.
fn copy_into(dst: &CudaStorage, at: View, src: &Tensor, op: &'static str) -> Result<()> {
    let s = cuda_storage(dst.dev(), src, op)?;
    let bytes = src.elem_count() * src.dtype().size_in_bytes();
    dst.dev()
        .rt()
        .dtod(dst.ptr(at), s.ptr(src.view_in_storage()), bytes)
        .map_err(|e| engine_err(op, e))
}
