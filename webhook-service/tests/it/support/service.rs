//! Starts the real webhook service in-process on port 0 with a database in a temp dir.

use std::net::SocketAddr;

use sdserve_proto::v1 as pb;
use sdserve_proto::v1::jobs_client::JobsClient;
use tokio::sync::oneshot;
use tonic::transport::Channel;
use webhook_service::Config;
use webhook_service::clock::Clock;

/// A running service.
pub struct Service {
    /// gRPC address.
    pub grpc: SocketAddr,
    /// HTTP address.
    pub http: SocketAddr,
    /// Its clock (manual unless the config said otherwise).
    pub clock: Clock,
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<Result<(), webhook_service::ServiceError>>,
    /// Keeps the database directory alive.
    pub dir: tempfile::TempDir,
}

/// A config for tests: temp database, plain HTTP and loopback allowed, a manual clock, and
/// the given inference server.
pub fn test_config(dir: &tempfile::TempDir, inference: SocketAddr) -> Config {
    Config {
        database: dir.path().join("jobs.db").into(),
        inference: vec![format!("http://{inference}")],
        allow_http: true,
        allow_private: vec!["127.0.0.0/8".parse().unwrap()],
        clock: Clock::manual(1_700_000_000_000),
        signing_key: Some("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw".into()),
        // These tests are about jobs and deliveries; `auth.rs` runs with keys required.
        auth: webhook_service::auth::AuthMode::Disabled,
        ..Config::default()
    }
}

impl Service {
    /// Starts the service with `config`, keeping `dir` alive as long as it runs.
    pub async fn start(config: Config, dir: tempfile::TempDir) -> Service {
        let grpc = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let http = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let (grpc_addr, http_addr) = (grpc.local_addr().unwrap(), http.local_addr().unwrap());
        let clock = config.clock.clone();
        let (stop, stopped) = oneshot::channel();
        let mut task = tokio::spawn(webhook_service::run(config, grpc, http, async move {
            let _ = stopped.await;
        }));
        // Wait until it answers, so a service that failed to start fails the test here with
        // its own error instead of as a refused connection somewhere later.
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(15);
        let client = super::http();
        loop {
            if task.is_finished() {
                panic!(
                    "webhook-service stopped while starting: {:?}",
                    (&mut task).await
                );
            }
            if client
                .get(format!("http://{http_addr}/healthz"))
                .send()
                .await
                .is_ok_and(|r| r.status().is_success())
            {
                break;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "webhook-service did not answer /healthz within 15 s"
            );
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        Service {
            grpc: grpc_addr,
            http: http_addr,
            clock,
            stop: Some(stop),
            task,
            dir,
        }
    }

    /// A gRPC client of the Jobs service.
    pub async fn jobs(&self) -> JobsClient<Channel> {
        JobsClient::connect(format!("http://{}", self.grpc))
            .await
            .unwrap()
    }

    /// Graceful shutdown; returns the database directory for a restart.
    pub async fn stop(mut self) -> tempfile::TempDir {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        (&mut self.task).await.unwrap().unwrap();
        self.dir
    }
}

/// A submission of `prompt` to `url` in `format` with a bearer `secret`.
pub fn submit_request(prompt: &str, url: &str, format: &str, secret: &str) -> pb::SubmitJobRequest {
    pb::SubmitJobRequest {
        params: Some(pb::GenerationParams {
            prompt: prompt.into(),
            steps: Some(4),
            ..Default::default()
        }),
        webhook: Some(pb::Webhook {
            url: url.into(),
            secret: secret.into(),
            format: format.into(),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// Polls `ListDeliveries` until `done` holds for the job's deliveries (30 s at most).
pub async fn wait_deliveries(
    client: &mut JobsClient<Channel>,
    job_id: &str,
    mut done: impl FnMut(&[pb::Delivery]) -> bool,
) -> Vec<pb::Delivery> {
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let list = client
            .list_deliveries(pb::ListDeliveriesRequest {
                job_id: job_id.into(),
            })
            .await
            .unwrap()
            .into_inner()
            .deliveries;
        if done(&list) {
            return list;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "deliveries never reached the expected state: {list:#?}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

impl Service {
    /// Creates an API key in the service's database (as `webhook-service keys create` does)
    /// and returns it.
    pub async fn create_key(&self, name: &str) -> String {
        create_key_in(
            &self.dir.path().join("jobs.db"),
            webhook_service::auth::KeySpec {
                name: name.into(),
                ..Default::default()
            },
        )
        .await
    }
}

/// Creates a key with `spec` in the database at `path`.
pub async fn create_key_in(path: &std::path::Path, spec: webhook_service::auth::KeySpec) -> String {
    let store = webhook_service::store::sqlite::SqliteStore::open(path).unwrap();
    let ring = webhook_service::auth::KeyRing::new(
        std::sync::Arc::new(store),
        Clock::system(),
        webhook_service::auth::AuthMode::Required,
    );
    ring.create(spec).await.unwrap().key
}

/// A config like [`test_config`] with API keys required.
pub fn test_config_with_auth(dir: &tempfile::TempDir, inference: SocketAddr) -> Config {
    Config {
        auth: webhook_service::auth::AuthMode::Required,
        ..test_config(dir, inference)
    }
}

/// A gRPC request carrying `key` as `authorization: Bearer`.
pub fn with_key<T>(message: T, key: &str) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request
        .metadata_mut()
        .insert("authorization", format!("Bearer {key}").parse().unwrap());
    request
}

/// [`wait_deliveries`] for a service with keys required: each call carries `key`.
pub async fn wait_deliveries_with_key(
    client: &mut JobsClient<Channel>,
    job_id: &str,
    key: &str,
    mut done: impl FnMut(&[pb::Delivery]) -> bool,
) -> Vec<pb::Delivery> {
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let request = with_key(
            pb::ListDeliveriesRequest {
                job_id: job_id.into(),
            },
            key,
        );
        let list = client
            .list_deliveries(request)
            .await
            .unwrap()
            .into_inner()
            .deliveries;
        if done(&list) {
            return list;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "deliveries never reached the expected state: {list:#?}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}
