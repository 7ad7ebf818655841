//! The service's configuration, as `run` takes it. The command line (see `main.rs`) and tests
//! build one of these; defaults suit a local run.

use std::collections::HashMap;
use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use crate::auth::AuthMode;
use crate::clock::Clock;
use crate::delivery::retry::RetryPolicy;
use crate::jobs::dispatch::DispatchPolicy;
use crate::store::secrets::SecretsKey;

/// Everything `run` needs besides its listeners.
#[derive(Debug, Clone)]
pub struct Config {
    /// Where jobs are kept: a SQLite file or a PostgreSQL database shared by replicas.
    pub database: crate::database::Database,
    /// Inference server endpoints (`http://host:port`); generations are balanced over them.
    pub inference: Vec<String>,
    /// The service's public HTTP base URL, used in media links; None = the HTTP listener's.
    pub public_url: Option<String>,
    /// Key for media URL signatures; None = the database's own (see [`crate::database::Database::open_with_media_key`]).
    pub media_key: Option<Vec<u8>>,
    /// Key sealing webhook secrets and signing keys in the database; None = read or create
    /// `<database>.secrets-key` (SQLite only: PostgreSQL replicas must be given one).
    pub secrets_key: Option<SecretsKey>,
    /// How long media links stay valid.
    pub media_ttl: Duration,
    /// Subnets webhooks may reach although private, loopback, etc.
    pub allow_private: Vec<ipnet::IpNet>,
    /// Accept `http://` webhook URLs.
    pub allow_http: bool,
    /// Extra trusted CA certificates (PEM), besides the webpki roots.
    pub ca_pem: Option<Vec<u8>>,
    /// Fixed host → address mappings used instead of DNS (still subject to the address policy).
    pub resolve_overrides: HashMap<String, Vec<IpAddr>>,
    /// Standard Webhooks key (`whsec_...`) for jobs that bring none.
    pub signing_key: Option<String>,
    /// Webhook connect timeout.
    pub connect_timeout: Duration,
    /// Webhook total timeout per attempt.
    pub timeout: Duration,
    /// When failed deliveries are retried.
    pub retry: RetryPolicy,
    /// Delivery attempts in flight at once.
    pub delivery_concurrency: usize,
    /// Generations sent to the inference servers at once.
    pub generation_concurrency: usize,
    /// Whether callers must present an API key (`--no-auth` turns it off, for local use).
    pub auth: AuthMode,
    /// Jobs one key may have queued or running at once, unless the key sets its own.
    pub max_in_flight: u32,
    /// Submissions one key may make per minute, unless the key sets its own.
    pub per_minute: u32,
    /// Finished jobs (with their images and callbacks) are deleted this long after they
    /// finished, once their deliveries are settled; None keeps them forever.
    pub retain: Option<Duration>,
    /// Largest callback body with its images embedded (RunPod, Cerebrium); above it the
    /// callback carries the images' media URLs instead.
    pub max_callback_bytes: usize,
    /// Most work one job may ask for, in pixel-steps (width × height × steps × images).
    pub max_job_cost: u64,
    /// Largest HTTP request body accepted, in bytes.
    pub body_limit: usize,
    /// Longest a synchronous call (RunPod `/runsync`, A1111 `txt2img`, Cerebrium without a
    /// webhook) waits for its job before answering with the status so far.
    pub sync_wait: Duration,
    /// Deadlines and attempts of generations (so every job ends), and how often to ask for
    /// previews (A1111 `progress` `current_image`).
    pub dispatch: DispatchPolicy,
    /// Time source (a manual clock in tests).
    pub clock: Clock,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            database: PathBuf::from("sdserve-webhooks.db").into(),
            inference: vec!["http://127.0.0.1:50051".to_owned()],
            public_url: None,
            media_key: None,
            secrets_key: None,
            media_ttl: Duration::from_secs(7 * 24 * 3600),
            allow_private: Vec::new(),
            allow_http: false,
            ca_pem: None,
            resolve_overrides: HashMap::new(),
            signing_key: None,
            connect_timeout: Duration::from_secs(5),
            timeout: Duration::from_secs(15),
            retry: RetryPolicy::default(),
            delivery_concurrency: 64,
            generation_concurrency: 2,
            auth: AuthMode::Required,
            max_in_flight: 32,
            per_minute: 120,
            max_callback_bytes: 32 * 1024 * 1024,
            retain: Some(Duration::from_secs(30 * 24 * 3600)),
            // 16 images of 1024×1024 at 60 steps.
            max_job_cost: 16 * 1024 * 1024 * 60,
            body_limit: 32 * 1024 * 1024,
            sync_wait: Duration::from_secs(90),
            dispatch: DispatchPolicy::default(),
            clock: Clock::system(),
        }
    }
}
