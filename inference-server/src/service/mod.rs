//! The `sdserve.v1.Inference` gRPC service: [`run`] loads the models, starts the queue and
//! serves on a listener the caller binds (tests use 127.0.0.1:0), with gRPC health
//! (`grpc.health.v1.Health`) and reflection, until `shutdown` resolves.
//!
//! Layers: [`grpc`] translates wire ↔ domain only; [`queue`] runs one generation at a time
//! on the device, first come first served; [`models`] holds the loaded checkpoints.

pub mod grpc;
pub mod models;
pub mod queue;

use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;

use sdserve_proto::v1::inference_server::InferenceServer;
use tokio::net::TcpListener;

use crate::engine::Device;
use crate::pipeline::Precision;
pub use models::{ModelSpec, Models};
pub use queue::Queue;

/// Largest gRPC message sent (an image event carries a PNG; 2048² RGB is ~12 MB raw).
const MAX_MESSAGE: usize = 64 * 1024 * 1024;

/// What the server runs.
#[derive(Debug, Clone)]
pub struct ServiceConfig {
    /// The models to load, the default first.
    pub models: Vec<ModelSpec>,
    /// Where they run.
    pub device: Device,
    /// What they compute in; `None` takes the device's default (f32 on the CPU, f16 on a GPU).
    pub precision: Option<Precision>,
    /// Requests that may wait in the queue; more are refused with `RESOURCE_EXHAUSTED`.
    pub max_queue: usize,
}

/// The default of [`ServiceConfig::max_queue`].
pub const DEFAULT_MAX_QUEUE: usize = 64;

/// Why the service could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    /// The configuration is unusable.
    #[error("configuration: {0}")]
    Config(String),
    /// A model could not be loaded.
    #[error("model {}: {message}", path.display())]
    Model {
        /// The model's path.
        path: PathBuf,
        /// What went wrong.
        message: String,
    },
    /// The server failed.
    #[error("server: {0}")]
    Server(String),
}

/// Closes the queue when [`run`] returns or is dropped, so the worker thread ends.
struct CloseOnDrop(Queue);

impl Drop for CloseOnDrop {
    fn drop(&mut self) {
        self.0.close();
    }
}

/// Loads the models, then serves `sdserve.v1.Inference`, health and reflection on
/// `listener` until `shutdown` resolves; calls in flight finish before it returns.
pub async fn run(
    config: ServiceConfig,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServiceError> {
    let ServiceConfig {
        models,
        device,
        precision,
        max_queue,
    } = config;
    let precision = precision.unwrap_or_else(|| Precision::default_for(&device));
    let load_device = device.clone();
    let models =
        tokio::task::spawn_blocking(move || Models::load(&models, &load_device, precision))
            .await
            .map_err(|e| ServiceError::Server(format!("loading models: {e}")))??;
    let models = Arc::new(models);
    let queue = CloseOnDrop(Queue::start(max_queue));
    let api = grpc::InferenceApi::new(models.clone(), queue.0.clone());
    let inference = InferenceServer::new(api).max_encoding_message_size(MAX_MESSAGE);

    let (health_reporter, health) = tonic_health::server::health_reporter();
    health_reporter
        .set_serving::<InferenceServer<grpc::InferenceApi>>()
        .await;
    // Both reflection versions: grpcurl 1.8 (the packaged one) speaks only v1alpha.
    let reflection = || {
        tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(sdserve_proto::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
    };
    let reflection_error =
        |e: tonic_reflection::server::Error| ServiceError::Server(format!("reflection: {e}"));
    let reflection_v1 = reflection().build_v1().map_err(reflection_error)?;
    let reflection_v1alpha = reflection().build_v1alpha().map_err(reflection_error)?;
    let addr = listener.local_addr().ok();
    tracing::info!(addr = ?addr, models = %models.names(), device = %device, "inference-server listening");
    tonic::transport::Server::builder()
        .add_service(health)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha)
        .add_service(inference)
        .serve_with_incoming_shutdown(
            tokio_stream::wrappers::TcpListenerStream::new(listener),
            shutdown,
        )
        .await
        .map_err(|e| ServiceError::Server(format!("grpc: {e}")))?;
    drop(queue);
    Ok(())
}
