//! CUDA graphs: a piece of work captured once on a device's stream and launched again as one
//! call. A guided UNet step is about 690 kernel launches and 380 GEMMs (docs/cuda-roofline.md);
//! issuing them costs the host about as long as the GPU needs to run them, so the sampling loop
//! records the step once and then replays it, which costs the host one launch.
//!
//! A replay runs the recorded kernels with the arguments they were recorded with: the same
//! device addresses, the same scalars. So the buffers the capture used stay the graph's until
//! it is dropped (`pool.rs`), inputs are written into the recorded input buffers before each
//! launch, and work that reads host values per call (the timestep's sinusoids) stays outside.

use super::device::CudaDevice;
use super::error::CudaError;
use super::pool::GraphId;

/// A captured graph on its device; dropping it frees the graph and gives its buffers back.
pub(crate) struct CudaGraph {
    exec: u64,
    id: GraphId,
    dev: CudaDevice,
}

impl CudaGraph {
    /// Launches the graph on the device's stream, after the work issued before.
    pub(crate) fn launch(&self) -> Result<(), CudaError> {
        self.dev.rt().launch_graph(self.exec)
    }
}

impl Drop for CudaGraph {
    fn drop(&mut self) {
        self.dev.rt().destroy_graph(self.exec);
        self.dev.pool().release_graph(self.id);
    }
}

impl CudaDevice {
    /// Runs `f` with the calling thread's device work recorded into a graph instead of run, and
    /// returns the graph with `f`'s result (whose buffers the graph writes when launched: they
    /// hold nothing until then). `f` must not copy to or from the host or synchronise. Any
    /// failure, `f`'s or the driver's (as `cuda_err` makes it an `E`), ends the capture and
    /// gives its buffers back.
    pub(crate) fn capture<T, E>(
        &self,
        f: impl FnOnce() -> Result<T, E>,
        cuda_err: impl Fn(CudaError) -> E,
    ) -> Result<(CudaGraph, T), E> {
        let busy =
            || CudaError::Unsupported("another graph is being captured on this device".into());
        let id = self
            .pool()
            .begin_capture()
            .ok_or_else(|| cuda_err(busy()))?;
        if let Err(e) = self.rt().begin_capture() {
            self.pool().release_graph(id);
            return Err(cuda_err(e));
        }
        let out = f();
        let exec = self.rt().end_capture();
        self.pool().end_capture();
        match (out, exec) {
            (Ok(v), Ok(exec)) => {
                let dev = self.clone();
                Ok((CudaGraph { exec, id, dev }, v))
            }
            (Ok(_), Err(e)) => {
                self.pool().release_graph(id);
                Err(cuda_err(e))
            }
            (Err(e), exec) => {
                if let Ok(exec) = exec {
                    self.rt().destroy_graph(exec);
                }
                self.pool().release_graph(id);
                Err(e)
            }
        }
    }
}
