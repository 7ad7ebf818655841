//! Starts the whole product in-process: the tiny model written to a temp folder, an
//! inference-server serving it on 127.0.0.1:0, a webhook-service (keys required, plain HTTP and
//! loopback webhooks allowed) on 127.0.0.1:0, and a receiver that records callbacks.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::http::HeaderMap;
use inference_server::engine::Device;
use inference_server::model::testmodel::write_test_model;
use inference_server::model::weights::{Layout, StoredDType, Variant};
use inference_server::service::{ModelSpec, ServiceConfig};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use webhook_service::auth::{AuthMode, KeyRing, KeySpec};
use webhook_service::clock::Clock;

/// The name the tiny model is served under.
pub const MODEL: &str = "tiny-sd1";

/// Both services and a receiver, stopped when dropped.
pub struct Product {
    /// The inference server's gRPC address.
    pub inference: SocketAddr,
    /// The webhook-service's gRPC address.
    pub grpc: SocketAddr,
    /// The webhook-service's HTTP address.
    pub http: SocketAddr,
    /// Records the callbacks.
    pub receiver: Receiver,
    database: std::path::PathBuf,
    _stops: Vec<oneshot::Sender<()>>,
    _dir: tempfile::TempDir,
}

impl Product {
    /// Starts everything; returns once both services answer.
    pub async fn start() -> Product {
        Self::start_with(|_| {}).await
    }

    /// Starts everything with the webhook-service config adjusted by `tweak`.
    pub async fn start_with(tweak: impl FnOnce(&mut webhook_service::Config)) -> Product {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let dir = tempfile::tempdir().unwrap();
        let model = write_test_model(
            &dir.path().join("model"),
            Variant::Sd1,
            Layout::Diffusers,
            StoredDType::F32,
        )
        .unwrap();
        let (mut stops, mut waits) = (Vec::new(), Vec::new());
        for _ in 0..2 {
            let (tx, rx) = oneshot::channel::<()>();
            stops.push(tx);
            waits.push(async move {
                let _ = rx.await;
            });
        }
        let inference_listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let inference = inference_listener.local_addr().unwrap();
        let config = ServiceConfig {
            models: vec![ModelSpec {
                path: model,
                name: Some(MODEL.into()),
            }],
            device: Device::Cpu,
            precision: None,
            max_queue: inference_server::service::DEFAULT_MAX_QUEUE,
        };
        let wait_inference = waits.remove(0);
        tokio::spawn(async move {
            inference_server::service::run(config, inference_listener, wait_inference)
                .await
                .unwrap()
        });

        let database = dir.path().join("webhooks.db");
        let mut config = webhook_service::Config {
            database: database.clone().into(),
            inference: vec![format!("http://{inference}")],
            allow_http: true,
            allow_private: vec!["127.0.0.0/8".parse().unwrap()],
            auth: AuthMode::Required,
            sync_wait: Duration::from_secs(60),
            ..webhook_service::Config::default()
        };
        tweak(&mut config);
        let grpc_listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let http_listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let (grpc, http) = (
            grpc_listener.local_addr().unwrap(),
            http_listener.local_addr().unwrap(),
        );
        let wait_webhooks = waits.remove(0);
        tokio::spawn(async move {
            webhook_service::run(config, grpc_listener, http_listener, wait_webhooks)
                .await
                .unwrap()
        });

        let receiver = Receiver::start().await;
        let product = Product {
            inference,
            grpc,
            http,
            receiver,
            database,
            _stops: stops,
            _dir: dir,
        };
        product.wait_ready().await;
        product
    }

    async fn wait_ready(&self) {
        for _ in 0..600 {
            let healthy = http()
                .get(self.url("/healthz"))
                .send()
                .await
                .is_ok_and(|r| r.status().is_success());
            let inference = tokio::net::TcpStream::connect(self.inference).await.is_ok();
            if healthy && inference {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("the services did not start within 30 s");
    }

    /// An API key for a new caller, as `webhook-service keys create` makes one.
    pub async fn key(&self, spec: KeySpec) -> String {
        let store = webhook_service::store::sqlite::SqliteStore::open(&self.database).unwrap();
        KeyRing::new(Arc::new(store), Clock::system(), AuthMode::Required)
            .create(spec)
            .await
            .unwrap()
            .key
    }

    /// A key with only a name.
    pub async fn named_key(&self, name: &str) -> String {
        self.key(KeySpec {
            name: name.into(),
            ..KeySpec::default()
        })
        .await
    }

    /// `http://<webhook-service>{path}`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.http)
    }
}

/// A reqwest client (with the rustls provider installed).
pub fn http() -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder()
        .timeout(Duration::from_secs(120))
        .build()
        .unwrap()
}

/// One callback as received.
#[derive(Debug, Clone)]
pub struct Callback {
    /// The path it was sent to.
    pub path: String,
    /// Its headers.
    pub headers: HeaderMap,
    /// Its body as JSON.
    pub body: serde_json::Value,
}

impl Callback {
    /// A header's value, if present.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

/// A webhook receiver on 127.0.0.1:0 answering 200 to every POST.
#[derive(Clone)]
pub struct Receiver {
    addr: SocketAddr,
    seen: Arc<Mutex<Vec<Callback>>>,
}

impl Receiver {
    async fn start() -> Receiver {
        let seen: Arc<Mutex<Vec<Callback>>> = Arc::default();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let record = seen.clone();
        let app = axum::Router::new().fallback(
            move |uri: axum::http::Uri, headers: HeaderMap, body: axum::body::Bytes| {
                let record = record.clone();
                async move {
                    let body = serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null);
                    record.lock().unwrap().push(Callback {
                        path: uri.path().to_owned(),
                        headers,
                        body,
                    });
                    "ok"
                }
            },
        );
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Receiver { addr, seen }
    }

    /// `http://<receiver>{path}`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Waits (60 s at most) for a callback on `path` and returns it.
    pub async fn callback(&self, path: &str) -> Callback {
        for _ in 0..1200 {
            if let Some(found) = self.seen.lock().unwrap().iter().find(|c| c.path == path) {
                return found.clone();
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("no callback on {path} within 60 s");
    }
}
