//! The UNet step of a sampling run, recorded as a CUDA graph on a GPU: the first step runs as
//! it comes (it measures convolution kernels and fills the allocator's pool), the second is
//! recorded and launched, the rest replay the recording with the step's latents and time
//! embedding written into its inputs. The time embedding is computed per step outside the
//! graph because it comes from a host value. Where nothing can be recorded (the CPU, the
//! emulator, `SDSERVE_CUDA_GRAPHS=0`) or recording fails, every step runs as it comes; a failed
//! recording is logged once and costs nothing but that step's time.

use std::cell::RefCell;

use crate::engine::{Device, Recorded, Tensor};
use crate::model::ModelError;
use crate::model::unet::UNet;

/// Where a run's recording stands.
#[derive(Debug, Default)]
enum State {
    /// No step has run yet.
    #[default]
    First,
    /// One step ran: the next is recorded.
    Warm,
    /// The recording every later step replays.
    Recorded(Recorded),
    /// Steps run as they come.
    Off,
}

/// One run's UNet step (a run: one batch at one size with one text context).
#[derive(Debug, Default)]
pub(crate) struct StepGraph(RefCell<State>);

impl StepGraph {
    /// Whether later steps replay a recording.
    #[cfg(all(test, feature = "cuda-emu"))]
    pub(crate) fn is_recorded(&self) -> bool {
        matches!(*self.0.borrow(), State::Recorded(_))
    }

    /// Drops the recording (its buffers return to the pool); a later step starts over.
    pub(crate) fn finish(&self) {
        *self.0.borrow_mut() = State::First;
    }

    /// The UNet's prediction for `input` at `timestep` given `ctx`, through the recording when
    /// there is one. Returns the f32 values of `[B, C, h, w]`.
    pub(crate) fn predict(
        &self,
        unet: &UNet,
        device: &Device,
        input: &Tensor,
        timestep: f32,
        ctx: &Tensor,
    ) -> Result<Vec<f32>, ModelError> {
        let temb = unet.time_embedding(&[timestep], input.dims()[0])?;
        let values = [input, &temb];
        let mut state = self.0.borrow_mut();
        match &mut *state {
            State::Recorded(rec) if rec.fits(&values) => {
                return Ok(rec.replay(&values)?.to_vec_f32()?);
            }
            State::First => *state = State::Warm,
            State::Warm => {
                let recorded = device.record(&values, |x| unet.forward_embedded(&x[0], &x[1], ctx));
                match recorded {
                    Ok(Some(rec)) => {
                        let out = rec.output().to_vec_f32()?;
                        *state = State::Recorded(rec);
                        return Ok(out);
                    }
                    Ok(None) => *state = State::Off,
                    Err(e) => {
                        tracing::warn!(
                            error = %e,
                            "recording the UNet step as a CUDA graph failed; this run's steps \
                             run one launch at a time"
                        );
                        *state = State::Off;
                    }
                }
            }
            State::Recorded(_) | State::Off => {}
        }
        drop(state);
        Ok(unet.forward_embedded(input, &temb, ctx)?.to_vec_f32()?)
    }
}
