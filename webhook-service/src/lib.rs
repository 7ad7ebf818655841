//! webhook-service: the front door for callers who want their generations as callbacks.
//!
//! It accepts jobs over gRPC ([`api::grpc`]) and HTTP ([`api::http`], including vendor
//! request shapes), stores them durably ([`store`]), runs them on an inference server
//! ([`jobs`]) and delivers each result to the job's webhook ([`delivery`]) in the JSON shape
//! the caller asked for ([`formats`]). [`run`] starts it all on listeners the caller binds,
//! so tests run the real service on port 0.

#![recursion_limit = "256"]
pub mod api;
pub mod auth;
pub mod clock;
pub mod config;
pub mod database;
pub mod delivery;
pub mod domain;
pub mod formats;
pub mod jobs;
pub mod keyfile;
pub mod media;
pub mod metrics;
pub mod store;

use std::future::Future;
use std::sync::Arc;

use sdserve_proto::v1::jobs_server::JobsServer;
use tokio::net::TcpListener;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use auth::layer::AuthLayer;
use auth::{AuthMode, KeyRing};
pub use config::Config;
use delivery::client::{ClientConfig, WebhookClient};
use delivery::signing::SigningKey;
use delivery::worker::{Deliverer, WorkerConfig};
use jobs::dispatch::Dispatcher;
use jobs::models::ModelCatalog;
use jobs::{JobService, JobSettings};

/// Why the service could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    /// The configuration is unusable.
    #[error("configuration: {0}")]
    Config(String),
    /// The store could not be opened.
    #[error(transparent)]
    Store(#[from] store::StoreError),
    /// A listener or server failed.
    #[error("server: {0}")]
    Server(String),
}

/// Runs the service on `grpc` and `http` until `shutdown` resolves, then stops taking
/// requests, lets attempts in flight finish and returns. Nothing accepted is lost at any
/// point: jobs and deliveries left unfinished resume at the next start.
pub async fn run(
    config: Config,
    grpc: TcpListener,
    http: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServiceError> {
    let (store, media_key) = config
        .database
        .open_with_media_key(config.secrets_key.as_ref(), config.media_key.clone())
        .await?;
    let http_addr = http
        .local_addr()
        .map_err(|e| ServiceError::Server(e.to_string()))?;
    let public_url = config.public_url.clone().unwrap_or_else(|| {
        // A listener on all interfaces has no address a receiver could use; loopback at least
        // works on this machine, and the log says to set the real one.
        let mut addr = http_addr;
        if addr.ip().is_unspecified() {
            addr.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
            tracing::warn!(%addr, "media links use {addr}: set --public-url to the address receivers reach this service at");
        }
        format!("http://{addr}")
    });
    let media = media::MediaSigner::new(media_key, &public_url, config.media_ttl);
    let media_for_callbacks = media.clone();
    let client = WebhookClient::new(&ClientConfig {
        connect_timeout: config.connect_timeout,
        timeout: config.timeout,
        allow_http: config.allow_http,
        allow_private: config.allow_private.clone(),
        extra_ca_pem: config.ca_pem.clone(),
        resolve_overrides: config.resolve_overrides.clone(),
        ..ClientConfig::default()
    })
    .map_err(|e| ServiceError::Config(e.to_string()))?;
    let signing_key = match &config.signing_key {
        Some(key) => Some(
            SigningKey::parse(key)
                .map_err(|e| ServiceError::Config(format!("signing key: {e}")))?,
        ),
        None => None,
    };
    let metrics = metrics::Metrics::new();
    let delivery_wake = Arc::new(Notify::new());
    let inference =
        jobs::endpoints::Endpoints::new(&config.inference).map_err(ServiceError::Config)?;
    let rules = api::validate::UrlRules {
        allow_http: config.allow_http,
    };
    let settings = JobSettings {
        rules,
        max_in_flight: config.max_in_flight,
        per_minute: config.per_minute,
        sync_wait: config.sync_wait,
        generation_slots: config.generation_concurrency.max(1),
        max_job_cost: config.max_job_cost,
        resolver: Arc::new(delivery::ssrf::GuardedResolver::new(
            delivery::ssrf::AddressPolicy::new(config.allow_private.clone()),
            config.resolve_overrides.clone(),
        )),
    };
    let jobs = JobService::new(
        store.clone(),
        config.clock.clone(),
        media,
        metrics.clone(),
        delivery_wake.clone(),
        settings,
        ModelCatalog::new(inference.clone()),
    );
    let keys = Arc::new(KeyRing::new(
        store.clone(),
        config.clock.clone(),
        config.auth,
    ));
    if config.auth == AuthMode::Disabled {
        tracing::warn!(
            "authentication is OFF (--no-auth): every caller is anonymous and sees every anonymous job; use this for local development only"
        );
    }
    let deliverer = Deliverer::new(
        store.clone(),
        client,
        config.clock.clone(),
        metrics,
        WorkerConfig {
            concurrency: config.delivery_concurrency,
            lease: config.timeout + std::time::Duration::from_secs(5),
            retry: config.retry.clone(),
            signing_key,
            max_callback_bytes: config.max_callback_bytes,
            media: media_for_callbacks,
        },
        delivery_wake,
    );
    let inference_for_health = inference.clone();
    let dispatcher = Dispatcher::new(
        jobs.clone(),
        inference,
        config.generation_concurrency,
        config.dispatch.clone(),
    )
    .with_spool(config.database.spool());

    let stop = CancellationToken::new();
    tokio::spawn({
        let stop = stop.clone();
        async move {
            shutdown.await;
            stop.cancel();
        }
    });
    let workers = tokio_util::task::TaskTracker::new();
    workers.spawn(deliverer.run(stop.clone()));
    workers.spawn(dispatcher.run(stop.clone()));
    workers.spawn(inference_for_health.check_health(stop.clone()));
    workers.spawn(jobs.clone().follow_store(stop.clone()));
    if let Some(retain) = config.retain {
        workers.spawn(retention(
            store.clone(),
            config.clock.clone(),
            retain,
            stop.clone(),
        ));
    }
    workers.close();

    let grpc_server = grpc_server(jobs.clone(), grpc, keys.clone(), stop.clone());
    let http_server = {
        let router = api::router(api::state::HttpState { jobs }, keys, config.body_limit);
        let stop = stop.clone();
        async move {
            axum::serve(http, router)
                .with_graceful_shutdown(async move { stop.cancelled().await })
                .await
                .map_err(|e| ServiceError::Server(format!("http: {e}")))
        }
    };
    tracing::info!(grpc = ?grpc_server.1, http = %http_addr, "webhook-service listening");
    let served = tokio::try_join!(grpc_server.0, http_server);
    stop.cancel();
    workers.wait().await;
    served.map(|_| ())
}

/// Deletes finished jobs older than `retain` (whose deliveries are settled) at start-up and
/// every hour, until `stop`.
async fn retention(
    store: Arc<dyn store::Store>,
    clock: clock::Clock,
    retain: std::time::Duration,
    stop: CancellationToken,
) {
    loop {
        let cutoff = clock.now_ms() - i64::try_from(retain.as_millis()).unwrap_or(i64::MAX);
        match store.purge_finished(cutoff).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(
                jobs = n,
                ?retain,
                "retention: deleted finished jobs, their images and callbacks"
            ),
            Err(err) => {
                tracing::warn!(error = %err, "retention: cannot delete old jobs; trying again in an hour")
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(std::time::Duration::from_secs(3600)) => {}
            _ = stop.cancelled() => return,
        }
    }
}

type GrpcServe = (
    std::pin::Pin<Box<dyn Future<Output = Result<(), ServiceError>> + Send>>,
    Option<std::net::SocketAddr>,
);

fn grpc_server(
    service: Arc<JobService>,
    listener: TcpListener,
    keys: Arc<KeyRing>,
    stop: CancellationToken,
) -> GrpcServe {
    let addr = listener.local_addr().ok();
    let jobs = JobsServer::new(api::grpc::JobsApi::new(service.clone()));
    let (health_reporter, health) = tonic_health::server::health_reporter();
    // gRPC health tells readiness, as /readyz does: NOT_SERVING while the store cannot take
    // writes or no inference server answers.
    tokio::spawn({
        let (reporter, stop) = (health_reporter.clone(), stop.clone());
        async move {
            loop {
                let ready = service.readiness().await.iter().all(|(_, r)| r.is_ok());
                match ready {
                    true => {
                        reporter
                            .set_serving::<JobsServer<api::grpc::JobsApi>>()
                            .await
                    }
                    false => {
                        reporter
                            .set_not_serving::<JobsServer<api::grpc::JobsApi>>()
                            .await
                    }
                }
                tokio::select! {
                    _ = tokio::time::sleep(std::time::Duration::from_secs(5)) => {}
                    _ = stop.cancelled() => return,
                }
            }
        }
    });
    // Both reflection versions: grpcurl 1.8 (the packaged one) speaks only v1alpha.
    let reflection = || {
        tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(sdserve_proto::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
    };
    let (v1, v1alpha) = (reflection().build_v1(), reflection().build_v1alpha());
    let serve = async move {
        let v1 = v1.map_err(|e| ServiceError::Server(format!("reflection: {e}")))?;
        let v1alpha = v1alpha.map_err(|e| ServiceError::Server(format!("reflection: {e}")))?;
        tonic::transport::Server::builder()
            .layer(AuthLayer::new(keys))
            .add_service(health)
            .add_service(v1)
            .add_service(v1alpha)
            .add_service(jobs)
            .serve_with_incoming_shutdown(
                tokio_stream::wrappers::TcpListenerStream::new(listener),
                async move { stop.cancelled().await },
            )
            .await
            .map_err(|e| ServiceError::Server(format!("grpc: {e}")))
    };
    (Box::pin(serve), addr)
}
