//! A scripted stand-in for the inference server, speaking the real `sdserve.v1.Inference`
//! gRPC contract on 127.0.0.1:0, so the webhook service is tested before the engine exists.

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine;
use futures::Stream;
use sdserve_proto::v1 as pb;
use sdserve_proto::v1::generate_event::Event;
use sdserve_proto::v1::inference_server::{Inference, InferenceServer};
use tonic::{Request, Response, Status};

/// A valid 1×1 PNG.
pub fn tiny_png() -> Vec<u8> {
    base64::engine::general_purpose::STANDARD
        .decode("iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAQAAAC1HAwCAAAAC0lEQVR42mNkYAAAAAYAAjCB0C8AAAAASUVORK5CYII=")
        .unwrap()
}

/// Behaviour chosen by the prompt: `fail` → a Failed event; `reject` → INVALID_ARGUMENT;
/// `slow` → 3 s before the images; `busy` → RESOURCE_EXHAUSTED (a full queue) for the first
/// three calls; `hang` → one progress event, then silence with the stream
/// open (a stalled server); `queued` → waits 1 s in the queue (position 2) before
/// starting and works 1 s; anything else succeeds with `batch_size` images.
#[derive(Default)]
pub struct FakeInference {
    /// Generate calls received.
    pub calls: AtomicUsize,
    /// The parameters of every Generate call received, in order.
    pub received: Mutex<Vec<pb::GenerationParams>>,
    /// When set the server is "down": calls fail UNAVAILABLE and running streams break.
    pub down: std::sync::atomic::AtomicBool,
}

/// The gRPC face of a shared [`FakeInference`].
pub struct FakeServer(Arc<FakeInference>);

type Events = Pin<Box<dyn Stream<Item = Result<pb::GenerateEvent, Status>> + Send>>;

fn event(e: Event) -> Result<pb::GenerateEvent, Status> {
    Ok(pb::GenerateEvent { event: Some(e) })
}

#[tonic::async_trait]
impl Inference for FakeServer {
    type GenerateStream = Events;

    async fn generate(
        &self,
        request: Request<pb::GenerateRequest>,
    ) -> Result<Response<Events>, Status> {
        if self.0.down.load(Ordering::SeqCst) {
            return Err(Status::unavailable("the server is down"));
        }
        let call = self.0.calls.fetch_add(1, Ordering::SeqCst) + 1;
        let params = request.into_inner().params.unwrap_or_default();
        if params.prompt == "busy" && call <= 3 {
            return Err(Status::resource_exhausted(
                "the queue is full: 64 requests are waiting (--max-queue); try again later",
            ));
        }
        self.0.received.lock().unwrap().push(params.clone());
        if params.prompt == "reject" {
            return Err(Status::invalid_argument(
                "params.steps: must be between 1 and 150",
            ));
        }
        let (tx, rx) = tokio::sync::mpsc::channel(8);
        let fake = self.0.clone();
        tokio::spawn(async move {
            let seed = params.seed.filter(|s| *s >= 0).unwrap_or(1234);
            let steps = params.steps.unwrap_or(20);
            let queued = params.prompt == "queued";
            let _ = tx
                .send(event(Event::Queued(pb::Queued {
                    position: if queued { 2 } else { 0 },
                })))
                .await;
            if queued {
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            let _ = tx
                .send(event(Event::Started(pb::Started {
                    model: "tiny-sd1".into(),
                    seed,
                })))
                .await;
            if queued {
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            if params.prompt == "hang" {
                let _ = tx
                    .send(event(Event::Progress(pb::Progress {
                        step: 1,
                        total: steps,
                        preview_png: vec![],
                    })))
                    .await;
                tx.closed().await; // silent until the caller gives up
                return;
            }
            for step in 1..=steps {
                let _ = tx
                    .send(event(Event::Progress(pb::Progress {
                        step,
                        total: steps,
                        preview_png: vec![],
                    })))
                    .await;
            }
            if params.prompt == "slow" {
                tokio::time::sleep(Duration::from_secs(3)).await;
                if fake.down.load(Ordering::SeqCst) {
                    let _ = tx
                        .send(Err(Status::unavailable("the server went down")))
                        .await;
                    return;
                }
            }
            if params.prompt == "fail" {
                let failed = pb::Failed {
                    code: "INTERNAL".into(),
                    message: "out of memory".into(),
                };
                let _ = tx.send(event(Event::Failed(failed))).await;
                return;
            }
            let count = params.batch_size.unwrap_or(1);
            let infotexts: Vec<String> = (0..count)
                .map(|i| {
                    format!(
                        "{}\nSteps: {steps}, Seed: {}, Model: tiny-sd1",
                        params.prompt,
                        seed + i64::from(i)
                    )
                })
                .collect();
            for (i, infotext) in infotexts.iter().enumerate() {
                let image = pb::GeneratedImage {
                    index: i as u32,
                    png: tiny_png(),
                    seed: seed + i as i64,
                    infotext: infotext.clone(),
                };
                let _ = tx.send(event(Event::Image(image))).await;
            }
            let info = serde_json::json!({"prompt": params.prompt, "seed": seed, "all_seeds": (0..count).map(|i| seed + i64::from(i)).collect::<Vec<_>>(), "infotexts": infotexts});
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
        if self.0.down.load(Ordering::SeqCst) {
            return Err(Status::unavailable("the server is down"));
        }
        let model = pb::ModelInfo {
            name: "tiny-sd1".into(),
            variant: "sd1".into(),
            device: "cpu".into(),
            ..Default::default()
        };
        Ok(Response::new(pb::ListModelsResponse {
            models: vec![model],
            sampler_names: vec![],
        }))
    }
}

/// Starts the fake on 127.0.0.1:0; it runs until the test's runtime ends.
pub async fn start() -> (SocketAddr, Arc<FakeInference>) {
    let fake = Arc::new(FakeInference::default());
    (serve(FakeServer(fake.clone())).await, fake)
}

/// A [`FakeInference`] that can be killed: [`Killable::kill`] closes its listener (new
/// connections are refused) and marks it down (calls on open connections fail, running
/// streams break), as a crashed server looks from outside.
pub struct Killable {
    /// Its address.
    pub addr: SocketAddr,
    /// Its state.
    pub fake: Arc<FakeInference>,
    serving: tokio::task::JoinHandle<()>,
}

impl Killable {
    /// Starts one.
    pub async fn start() -> Self {
        let fake = Arc::new(FakeInference::default());
        let (addr, serving) = serve_until_aborted(FakeServer(fake.clone())).await;
        Self {
            addr,
            fake,
            serving,
        }
    }

    /// Takes it down for good.
    pub fn kill(&self) {
        self.fake.down.store(true, Ordering::SeqCst);
        self.serving.abort();
    }
}

/// Serves any implementation of the Inference contract on 127.0.0.1:0 until the test's
/// runtime ends; returns its address.
pub async fn serve<S: Inference>(server: S) -> SocketAddr {
    serve_until_aborted(server).await.0
}

/// [`serve`], also returning the serving task, whose abort closes the listener.
async fn serve_until_aborted<S: Inference>(server: S) -> (SocketAddr, tokio::task::JoinHandle<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let serving = tokio::spawn(async move {
        tonic::transport::Server::builder()
            .add_service(InferenceServer::new(server))
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener))
            .await
            .unwrap();
    });
    (addr, serving)
}
