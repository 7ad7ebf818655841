//! `sdserve.v1.Inference` over tonic: translates wire types to the queue's domain types and
//! back. Parameters are checked here, before queueing, so a bad request costs nothing.

use std::pin::Pin;
use std::sync::Arc;

use sdserve_proto::v1 as pb;
use sdserve_proto::v1::generate_event::Event;
use sdserve_proto::v1::inference_server::Inference;
use tokio_stream::{Stream, StreamExt};
use tonic::{Request, Response, Status};

use crate::pipeline::images::decode_image_rgb;
use crate::pipeline::{Img2ImgParams, PipelineError, Request as GenRequest, Txt2ImgParams};
use crate::service::models::Models;
use crate::service::queue::{FailureCode, Job, JobEvent, Queue};

/// The gRPC face of the loaded models and the queue.
#[derive(Debug, Clone)]
pub struct InferenceApi {
    models: Arc<Models>,
    queue: Queue,
}

impl InferenceApi {
    /// Serves `models` through `queue`.
    pub fn new(models: Arc<Models>, queue: Queue) -> InferenceApi {
        InferenceApi { models, queue }
    }
}

/// The stream of a `Generate` call.
pub type GenerateStream = Pin<Box<dyn Stream<Item = Result<pb::GenerateEvent, Status>> + Send>>;

#[tonic::async_trait]
impl Inference for InferenceApi {
    type GenerateStream = GenerateStream;

    async fn generate(
        &self,
        request: Request<pb::GenerateRequest>,
    ) -> Result<Response<GenerateStream>, Status> {
        let request = request.into_inner();
        let wire = request.params.unwrap_or_default();
        let model = self.models.get(&wire.model).ok_or_else(|| {
            Status::not_found(format!(
                "params.model: no model named {:?} is loaded (loaded: {})",
                wire.model,
                self.models.names()
            ))
        })?;
        // Decoding an init image is CPU work: keep it off the async runtime's threads.
        let request_params = tokio::task::spawn_blocking(move || to_params(&wire))
            .await
            .map_err(|e| Status::internal(format!("decoding the request failed: {e}")))??;
        request_params.validate().map_err(|e| invalid(&e))?;
        let job = Job {
            model,
            request: request_params,
            preview_every: request.preview_every,
            request_id: request.request_id,
        };
        let events = self
            .queue
            .submit(job)
            .map_err(|full| Status::resource_exhausted(full.to_string()))?;
        let stream = tokio_stream::wrappers::ReceiverStream::new(events).map(|e| Ok(to_wire(e)));
        Ok(Response::new(Box::pin(stream)))
    }

    async fn list_models(
        &self,
        _: Request<pb::ListModelsRequest>,
    ) -> Result<Response<pb::ListModelsResponse>, Status> {
        let models = self
            .models
            .iter()
            .map(|m| pb::ModelInfo {
                name: m.name.clone(),
                variant: m.variant.to_owned(),
                path: m.path.display().to_string(),
                hash: String::new(),
                device: m.pipeline.device.to_string(),
            })
            .collect();
        let sampler_names = crate::sampling::samplers::names::accepted_sampler_names();
        Ok(Response::new(pb::ListModelsResponse {
            models,
            sampler_names,
        }))
    }
}

/// `INVALID_ARGUMENT` naming the parameter (`params.<field>: rule`).
fn invalid(e: &PipelineError) -> Status {
    match e {
        PipelineError::Invalid { field, rule } => {
            Status::invalid_argument(format!("params.{field}: {rule}"))
        }
        PipelineError::Sampler(s) => {
            let field = if s.to_string().contains("schedule") {
                "scheduler"
            } else {
                "sampler_name"
            };
            Status::invalid_argument(format!("params.{field}: {s}"))
        }
        other => Status::invalid_argument(format!("params: {other}")),
    }
}

fn usize_or(v: Option<u32>, default: usize) -> usize {
    v.map_or(default, |v| v as usize)
}

/// img2img's `denoising_strength` when the request leaves it unset (A1111's default).
pub const DEFAULT_DENOISING_STRENGTH: f32 = 0.75;

/// The wire parameters as the pipeline's request, unset fields taking their documented defaults:
/// img2img when `init_image` holds an image (decoded here, so bad bytes are `INVALID_ARGUMENT`).
pub fn to_params(wire: &pb::GenerationParams) -> Result<GenRequest, Status> {
    let base = to_base(wire);
    if wire.init_image.is_empty() {
        // As A1111's txt2img, which takes denoising_strength for its hires pass, ignore it here.
        return Ok(GenRequest::Txt2Img(base));
    }
    let init_image = decode_image_rgb(&wire.init_image).map_err(|e| invalid(&e))?;
    let denoising_strength = wire
        .denoising_strength
        .unwrap_or(DEFAULT_DENOISING_STRENGTH);
    Ok(GenRequest::Img2Img(Img2ImgParams {
        base,
        init_image,
        denoising_strength,
    }))
}

fn to_base(wire: &pb::GenerationParams) -> Txt2ImgParams {
    let defaults = Txt2ImgParams::default();
    Txt2ImgParams {
        prompt: wire.prompt.clone(),
        negative_prompt: wire.negative_prompt.clone(),
        seed: wire.seed.unwrap_or(-1),
        subseed: wire.subseed.unwrap_or(-1),
        subseed_strength: wire.subseed_strength.unwrap_or(0.0),
        batch_size: usize_or(wire.batch_size, defaults.batch_size),
        n_iter: usize_or(wire.n_iter, defaults.n_iter),
        steps: usize_or(wire.steps, defaults.steps),
        cfg_scale: wire.cfg_scale.unwrap_or(defaults.cfg_scale),
        width: usize_or(wire.width, defaults.width),
        height: usize_or(wire.height, defaults.height),
        sampler_name: if wire.sampler_name.trim().is_empty() {
            defaults.sampler_name
        } else {
            wire.sampler_name.clone()
        },
        scheduler: Some(wire.scheduler.trim())
            .filter(|s| !s.is_empty())
            .map(str::to_owned),
        clip_skip: usize_or(wire.clip_skip, defaults.clip_skip),
        noise_source: defaults.noise_source,
        styles: wire.styles.clone(),
    }
}

/// A queue event as its wire message.
pub fn to_wire(event: JobEvent) -> pb::GenerateEvent {
    let event = match event {
        JobEvent::Queued { position } => Event::Queued(pb::Queued { position }),
        JobEvent::Started { model, seed } => Event::Started(pb::Started { model, seed }),
        JobEvent::Progress {
            step,
            total,
            preview_png,
        } => Event::Progress(pb::Progress {
            step,
            total,
            preview_png: preview_png.unwrap_or_default(),
        }),
        JobEvent::Image {
            index,
            png,
            seed,
            infotext,
        } => Event::Image(pb::GeneratedImage {
            index,
            png,
            seed,
            infotext,
        }),
        JobEvent::Completed {
            queued,
            execution,
            info_json,
        } => Event::Completed(pb::Completed {
            timings: Some(pb::Timings {
                queue_ms: queued.as_millis() as u64,
                execution_ms: execution.as_millis() as u64,
            }),
            info_json,
        }),
        JobEvent::Failed { code, message } => Event::Failed(pb::Failed {
            code: match code {
                FailureCode::InvalidArgument => "INVALID_ARGUMENT",
                FailureCode::Internal => "INTERNAL",
                FailureCode::ResourceExhausted => "RESOURCE_EXHAUSTED",
            }
            .to_owned(),
            message,
        }),
    };
    pb::GenerateEvent { event: Some(event) }
}
