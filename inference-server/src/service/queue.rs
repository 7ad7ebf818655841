//! The generation queue: one generation at a time per device, first come first served, run
//! on a dedicated blocking thread so the async runtime never waits on model work.
//!
//! A request's events go to its own bounded channel. When the caller goes away (the gRPC
//! stream is dropped, closing the channel) a waiting request is skipped and a running one
//! stops at its next sampling step.

use std::cell::Cell;
use std::collections::VecDeque;
use std::ops::ControlFlow;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tokio::sync::mpsc;

use crate::pipeline::png::{encode_png, info_json, infotext};
use crate::pipeline::{PipelineError, Request, RunOptions, StepEvent};
use crate::sampling::rng::resolve_seed;
use crate::service::models::LoadedModel;

/// Events buffered per request before the worker waits for the caller to read.
const EVENT_BUFFER: usize = 32;

/// A validated generation request.
#[derive(Debug)]
pub struct Job {
    /// The model that runs it.
    pub model: Arc<LoadedModel>,
    /// What to generate (already validated).
    pub request: Request,
    /// Attach a preview to progress every this many steps; 0 = never.
    pub preview_every: u32,
    /// The caller's identifier, for logs.
    pub request_id: String,
}

/// Why a generation failed, as a gRPC status code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureCode {
    /// A parameter was refused by the pipeline.
    InvalidArgument,
    /// The model failed while running.
    Internal,
    /// The device ran out of memory for this request; the server keeps serving others.
    ResourceExhausted,
}

/// One event of a generation, in order: `Queued` (again each time the queue moves), `Started`,
/// `Progress`…, `Image`…, then `Completed` or `Failed`.
#[derive(Debug, Clone, PartialEq)]
pub enum JobEvent {
    /// Waiting behind `position` requests (the running one included).
    Queued {
        /// Requests ahead; 0 = next.
        position: u32,
    },
    /// Work has begun.
    Started {
        /// The model's name.
        model: String,
        /// The resolved seed of the first image.
        seed: i64,
    },
    /// A sampling step finished.
    Progress {
        /// Steps done across every batch.
        step: u32,
        /// Steps in all.
        total: u32,
        /// A PNG preview when asked for and available.
        preview_png: Option<Vec<u8>>,
    },
    /// An image is ready.
    Image {
        /// Position in the whole request.
        index: u32,
        /// PNG bytes with the `parameters` chunk.
        png: Vec<u8>,
        /// The image's seed.
        seed: i64,
        /// The A1111 infotext.
        infotext: String,
    },
    /// Every image was sent.
    Completed {
        /// From arrival to the start of work.
        queued: Duration,
        /// From the start of work to the last image.
        execution: Duration,
        /// A1111's `info` JSON.
        info_json: String,
    },
    /// The generation stopped.
    Failed {
        /// The kind of failure.
        code: FailureCode,
        /// What went wrong.
        message: String,
    },
}

struct Pending {
    job: Job,
    arrived: Instant,
    events: mpsc::Sender<JobEvent>,
}

#[derive(Default)]
struct State {
    pending: VecDeque<Pending>,
    busy: bool,
    closed: bool,
}

#[derive(Default)]
struct Shared {
    state: Mutex<State>,
    wake: Condvar,
    max_waiting: usize,
}

/// The queue already holds as many waiting requests as it may.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the queue is full: {waiting} requests are waiting (--max-queue); try again later")]
pub struct QueueFull {
    /// Requests waiting.
    pub waiting: usize,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// The queue of one device. Cloning shares it.
#[derive(Clone)]
pub struct Queue {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for Queue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Queue").finish_non_exhaustive()
    }
}

impl Queue {
    /// Starts the queue's worker on a blocking thread of the current tokio runtime. It runs
    /// until [`Queue::close`]. At most `max_waiting` requests wait (besides the running one):
    /// a bounded queue keeps memory and waiting times bounded, and tells callers to come back.
    pub fn start(max_waiting: usize) -> Queue {
        let shared = Arc::new(Shared {
            max_waiting: max_waiting.max(1),
            ..Shared::default()
        });
        let worker = shared.clone();
        tokio::task::spawn_blocking(move || work(&worker));
        Queue { shared }
    }

    /// Queues `job`; its events arrive on the returned receiver, `Queued` first. A full
    /// queue refuses it.
    pub fn submit(&self, job: Job) -> Result<mpsc::Receiver<JobEvent>, QueueFull> {
        let (tx, rx) = mpsc::channel(EVENT_BUFFER);
        let mut state = self.shared.lock();
        if state.closed {
            let message = "the server is shutting down".to_owned();
            let _ = tx.try_send(JobEvent::Failed {
                code: FailureCode::Internal,
                message,
            });
            return Ok(rx);
        }
        state.pending.retain(|p| !p.events.is_closed());
        if state.pending.len() >= self.shared.max_waiting {
            return Err(QueueFull {
                waiting: state.pending.len(),
            });
        }
        let position = state.pending.len() + usize::from(state.busy);
        let _ = tx.try_send(JobEvent::Queued {
            position: to_u32(position),
        });
        state.pending.push_back(Pending {
            job,
            arrived: Instant::now(),
            events: tx,
        });
        drop(state);
        self.shared.wake.notify_one();
        Ok(rx)
    }

    /// Stops the worker once the running generation ends; waiting requests are dropped
    /// (their streams end without a terminal event).
    pub fn close(&self) {
        let mut state = self.shared.lock();
        state.closed = true;
        state.pending.clear();
        drop(state);
        self.shared.wake.notify_all();
    }
}

/// The worker loop: takes requests in order and runs each to its end.
fn work(shared: &Shared) {
    loop {
        let next = {
            let mut state = shared.lock();
            loop {
                if state.closed {
                    return;
                }
                if let Some(next) = state.pending.pop_front() {
                    state.busy = true;
                    announce_positions(&mut state);
                    break next;
                }
                state = shared
                    .wake
                    .wait(state)
                    .unwrap_or_else(|poisoned| poisoned.into_inner());
            }
        };
        if !next.events.is_closed() {
            let events = next.events.clone();
            isolated(events, move || run(next));
        }
        shared.lock().busy = false;
    }
}

/// Runs one generation so that a panic in it fails that request only: the caller gets a
/// `Failed` (INTERNAL) event naming the panic, and the worker goes on with the next request.
fn isolated(events: mpsc::Sender<JobEvent>, generation: impl FnOnce()) {
    let Err(panic) = std::panic::catch_unwind(std::panic::AssertUnwindSafe(generation)) else {
        return;
    };
    let what = panic
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a non-text panic".to_owned());
    tracing::error!(panic = %what, "a generation panicked; its request fails, the queue goes on");
    let message = format!("the generation failed unexpectedly (panic: {what})");
    let _ = events.blocking_send(JobEvent::Failed {
        code: FailureCode::Internal,
        message,
    });
}

/// After the queue moved: forgets waiting requests whose caller has gone, and sends each of the
/// others its new `Queued` position. A full event buffer (a caller not reading) skips the
/// update rather than blocking the queue.
fn announce_positions(state: &mut State) {
    state.pending.retain(|p| !p.events.is_closed());
    let ahead = usize::from(state.busy);
    for (i, waiting) in state.pending.iter().enumerate() {
        let _ = waiting.events.try_send(JobEvent::Queued {
            position: to_u32(ahead + i),
        });
    }
}

/// Runs one request, sending its events; returns early when the caller has gone.
fn run(pending: Pending) {
    let Pending {
        job,
        arrived,
        events,
    } = pending;
    let start = Instant::now();
    let mut request = job.request;
    let base = request.base_mut();
    base.seed = resolve_seed(base.seed) as i64;
    base.subseed = resolve_seed(base.subseed) as i64;
    let params = request.base().clone();
    let model = job.model;
    tracing::info!(request_id = %job.request_id, model = %model.name, seed = params.seed, "generation started");
    if events
        .blocking_send(JobEvent::Started {
            model: model.name.clone(),
            seed: params.seed,
        })
        .is_err()
    {
        return;
    }
    let n_iter = params.n_iter.max(1);
    let total = Cell::new(params.steps * n_iter);
    let every = job.preview_every as usize;
    let result = {
        let mut on_step = |event: &StepEvent<'_>| -> ControlFlow<()> {
            total.set(event.total * n_iter);
            let done = event.iteration * event.total + event.step;
            if done == 0 {
                return if events.is_closed() {
                    ControlFlow::Break(())
                } else {
                    ControlFlow::Continue(())
                };
            }
            let preview_png = match event.previews.and_then(|p| p.first()) {
                Some(image) if every > 0 && done.is_multiple_of(every) => {
                    encode_png(image, "").ok()
                }
                _ => None,
            };
            let progress = JobEvent::Progress {
                step: to_u32(done),
                total: to_u32(total.get()),
                preview_png,
            };
            match events.blocking_send(progress) {
                Ok(()) => ControlFlow::Continue(()),
                Err(_) => ControlFlow::Break(()),
            }
        };
        model
            .pipeline
            .generate(&request, RunOptions { preview: every > 0 }, &mut on_step)
    };
    let mut generation = match result {
        Ok(generation) => generation,
        Err(PipelineError::Cancelled) => {
            tracing::info!(request_id = %job.request_id, "generation cancelled: the caller went away");
            return;
        }
        Err(e) => {
            let code = match e {
                PipelineError::Invalid { .. } => FailureCode::InvalidArgument,
                _ if e.is_out_of_device_memory() => FailureCode::ResourceExhausted,
                _ => FailureCode::Internal,
            };
            tracing::warn!(request_id = %job.request_id, error = %e, "generation failed");
            let _ = events.blocking_send(JobEvent::Failed {
                code,
                message: e.to_string(),
            });
            return;
        }
    };
    let total = to_u32(total.get());
    let last = JobEvent::Progress {
        step: total,
        total,
        preview_png: None,
    };
    if events.blocking_send(last).is_err() {
        return;
    }
    generation.model_name = model.name.clone();
    for (index, image) in generation.images.iter().enumerate() {
        let text = infotext(&generation, index);
        let png = match encode_png(image, &text) {
            Ok(png) => png,
            Err(e) => {
                let _ = events.blocking_send(JobEvent::Failed {
                    code: FailureCode::Internal,
                    message: e.to_string(),
                });
                return;
            }
        };
        let seed = generation
            .all_seeds
            .get(index)
            .map_or(params.seed, |s| *s as i64);
        let event = JobEvent::Image {
            index: to_u32(index),
            png,
            seed,
            infotext: text,
        };
        if events.blocking_send(event).is_err() {
            return;
        }
    }
    let completed = JobEvent::Completed {
        queued: start - arrived,
        execution: start.elapsed(),
        info_json: info_json(&generation),
    };
    let _ = events.blocking_send(completed);
    tracing::info!(request_id = %job.request_id, ms = start.elapsed().as_millis() as u64, "generation completed");
}

fn to_u32(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_out_of_memory_is_found_through_every_wrapper() {
        use crate::engine::EngineError;
        use crate::model::ModelError;
        use crate::nn::NnError;
        let oom = || EngineError::OutOfMemory {
            op: "conv2d",
            bytes: 1 << 30,
        };
        // The ways a generation's error can carry the engine's: straight from an op, through a
        // layer (NnError), and through the sampler's boxed model failure.
        let direct = PipelineError::from(oom());
        let layer = PipelineError::Model(ModelError::Nn(NnError::Engine(oom())));
        let sampled = PipelineError::from(crate::sampling::samplers::SamplerError::model(
            ModelError::Nn(NnError::Engine(oom())),
        ));
        for e in [direct, layer, sampled] {
            assert!(
                e.is_out_of_device_memory(),
                "not recognised as out of memory: {e:?}"
            );
        }
        let other = PipelineError::from(EngineError::UnknownDevice("tpu".into()));
        assert!(!other.is_out_of_device_memory());
    }

    #[test]
    fn a_panicking_generation_fails_its_request_and_the_next_one_runs() {
        let (tx, mut rx) = mpsc::channel(4);
        isolated(tx.clone(), || panic!("index out of bounds"));
        match rx.try_recv() {
            Ok(JobEvent::Failed {
                code: FailureCode::Internal,
                message,
            }) => {
                assert!(message.contains("index out of bounds"), "{message}");
            }
            other => panic!("expected a Failed event, got {other:?}"),
        }
        let mut ran = false;
        isolated(tx, || ran = true);
        assert!(
            ran && rx.try_recv().is_err(),
            "a generation that does not panic sends nothing extra"
        );
    }
}
