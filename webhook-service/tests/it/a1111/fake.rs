//! An inference server for the A1111 tests: like `support::inference` it speaks the real gRPC
//! contract, and in addition it serves two models, sends previews, writes the A1111 infotext
//! into each PNG's `parameters` chunk (as the real server does) and records what it was asked.
//!
//! The prompt chooses: `fail` → a Failed event; `reject` → INVALID_ARGUMENT; `hold` → five
//! steps (a preview at each multiple of `preview_every`), then nothing until the call is
//! dropped (an interrupt) or 30 s pass; anything else succeeds with `batch_size` images.

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::Stream;
use sdserve_proto::v1 as pb;
use sdserve_proto::v1::generate_event::Event;
use sdserve_proto::v1::inference_server::Inference;
use tonic::{Request, Response, Status};

/// The models served: the default first.
pub fn models() -> Vec<pb::ModelInfo> {
    vec![
        pb::ModelInfo {
            name: "tiny-sd1".into(),
            variant: "sd1".into(),
            path: "/models/tiny-sd1.safetensors".into(),
            hash: "abc1234567".into(),
            device: "cpu".into(),
        },
        pb::ModelInfo {
            name: "other-sd2".into(),
            variant: "sd2".into(),
            path: "/models/other-sd2".into(),
            hash: String::new(),
            device: "cpu".into(),
        },
    ]
}

/// A `size`×`size` grey RGB PNG with these text chunks (`tEXt`, or `iTXt` for non-Latin-1).
pub fn png_with_text(size: u32, chunks: &[(&str, &str)]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut encoder = png::Encoder::new(&mut out, size, size);
    encoder.set_color(png::ColorType::Rgb);
    encoder.set_depth(png::BitDepth::Eight);
    for (key, text) in chunks {
        if text.chars().all(|c| u32::from(c) <= 0xFF) {
            encoder
                .add_text_chunk((*key).into(), (*text).into())
                .unwrap();
        } else {
            encoder
                .add_itxt_chunk((*key).into(), (*text).into())
                .unwrap();
        }
    }
    let mut writer = encoder.write_header().unwrap();
    writer
        .write_image_data(&vec![128; (size * size * 3) as usize])
        .unwrap();
    writer.finish().unwrap();
    out
}

/// The fake's state, shared with the test.
#[derive(Default)]
pub struct Fake {
    /// The parameters of every `Generate` call, in order.
    pub seen: Mutex<Vec<pb::GenerationParams>>,
}

impl Fake {
    /// The parameters of the last `Generate` call.
    pub fn last(&self) -> pb::GenerationParams {
        self.seen
            .lock()
            .unwrap()
            .last()
            .cloned()
            .expect("a Generate call")
    }
}

struct Server(Arc<Fake>);

type Events = Pin<Box<dyn Stream<Item = Result<pb::GenerateEvent, Status>> + Send>>;

fn event(e: Event) -> Result<pb::GenerateEvent, Status> {
    Ok(pb::GenerateEvent { event: Some(e) })
}

/// The A1111 infotext of one image, as the real server writes it.
fn infotext(p: &pb::GenerationParams, seed: i64, model: &str) -> String {
    let negative = if p.negative_prompt.is_empty() {
        String::new()
    } else {
        format!("\nNegative prompt: {}", p.negative_prompt)
    };
    format!(
        "{}{negative}\nSteps: {}, Sampler: {}, Schedule type: Automatic, CFG scale: 7.0, Seed: {seed}, Size: {}x{}, Model: {model}, Version: sdserve",
        p.prompt,
        p.steps.unwrap_or(20),
        p.sampler_name,
        p.width.unwrap_or(512),
        p.height.unwrap_or(512),
    )
}

#[tonic::async_trait]
impl Inference for Server {
    type GenerateStream = Events;

    async fn generate(
        &self,
        request: Request<pb::GenerateRequest>,
    ) -> Result<Response<Events>, Status> {
        let request = request.into_inner();
        let params = request.params.unwrap_or_default();
        self.0.seen.lock().unwrap().push(params.clone());
        if params.prompt == "reject" {
            return Err(Status::invalid_argument(
                "params.sampler_name: unknown sampler \"Nope\"",
            ));
        }
        let model = if params.model.is_empty() {
            "tiny-sd1".to_owned()
        } else {
            params.model.clone()
        };
        if !models().iter().any(|m| m.name == model) {
            return Err(Status::not_found(format!(
                "params.model: no model named {model:?} is loaded"
            )));
        }
        let preview_every = request.preview_every;
        let (tx, rx) = tokio::sync::mpsc::channel(8);
        tokio::spawn(async move {
            let seed = params.seed.filter(|s| *s >= 0).unwrap_or(1234);
            let steps = params.steps.unwrap_or(20);
            let hold = params.prompt == "hold";
            let _ = tx
                .send(event(Event::Started(pb::Started {
                    model: model.clone(),
                    seed,
                })))
                .await;
            for step in 1..=if hold { steps.min(5) } else { steps } {
                let preview = preview_every > 0 && step % preview_every == 0;
                let preview_png = if preview {
                    png_with_text(8, &[])
                } else {
                    Vec::new()
                };
                let _ = tx
                    .send(event(Event::Progress(pb::Progress {
                        step,
                        total: steps,
                        preview_png,
                    })))
                    .await;
            }
            if hold {
                let _ = tokio::time::timeout(Duration::from_secs(30), tx.closed()).await;
                return;
            }
            if params.prompt == "fail" {
                let failed = pb::Failed {
                    code: "INTERNAL".into(),
                    message: "out of memory".into(),
                };
                let _ = tx.send(event(Event::Failed(failed))).await;
                return;
            }
            let count = params.batch_size.unwrap_or(1) * params.n_iter.unwrap_or(1);
            let infotexts: Vec<String> = (0..count)
                .map(|i| infotext(&params, seed + i64::from(i), &model))
                .collect();
            for (i, text) in infotexts.iter().enumerate() {
                let png = png_with_text(8, &[("parameters", text)]);
                let image = pb::GeneratedImage {
                    index: i as u32,
                    png,
                    seed: seed + i as i64,
                    infotext: text.clone(),
                };
                let _ = tx.send(event(Event::Image(image))).await;
            }
            let info = serde_json::json!({"prompt": params.prompt, "seed": seed, "steps": steps, "infotexts": infotexts});
            let done = pb::Completed {
                timings: Some(pb::Timings {
                    queue_ms: 1,
                    execution_ms: 2,
                }),
                info_json: info.to_string(),
            };
            let _ = tx.send(event(Event::Completed(done))).await;
        });
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(rx),
        )))
    }

    async fn list_models(
        &self,
        _: Request<pb::ListModelsRequest>,
    ) -> Result<Response<pb::ListModelsResponse>, Status> {
        Ok(Response::new(pb::ListModelsResponse {
            models: models(),
            sampler_names: vec![],
        }))
    }
}

/// Starts the fake on 127.0.0.1:0; it runs until the test's runtime ends.
pub async fn start() -> (SocketAddr, Arc<Fake>) {
    let fake = Arc::new(Fake::default());
    (
        crate::support::inference::serve(Server(fake.clone())).await,
        fake,
    )
}
