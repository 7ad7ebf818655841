//! `webhook-service serve` runs the service; `webhook-service keys create|list|revoke` manages
//! API keys. Every `serve` flag can also be set through the environment variable
//! `SDSERVE_<FLAG>` (e.g. `SDSERVE_GRPC_LISTEN`).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand};
use webhook_service::Config;
use webhook_service::auth::{AuthMode, KeyRing, KeySpec};
use webhook_service::clock::Clock;
use webhook_service::database::Database;
use webhook_service::delivery::retry::{DEFAULT_SCHEDULE, RetryPolicy, Schedule};
use webhook_service::domain::{KeyLimits, KeyWebhook, Secret};
use webhook_service::jobs::dispatch::DispatchPolicy;
use webhook_service::store::secrets::SecretsKey;

#[derive(Parser)]
#[command(
    name = "webhook-service",
    version,
    about = "Accepts image-generation jobs and delivers results as signed JSON webhooks"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Runs the service until SIGINT or SIGTERM.
    Serve(Box<ServeArgs>),
    /// Creates, lists and revokes API keys.
    #[command(subcommand)]
    Keys(KeysCommand),
    /// Operator actions on deliveries.
    #[command(subcommand)]
    Deliveries(DeliveriesCommand),
}

#[derive(Subcommand)]
enum DeliveriesCommand {
    /// Sends a delivery again from the start of its schedule, keeping its webhook-id; with
    /// --force also to a receiver that answered 410 Gone (clearing that mark). A running
    /// service picks it up within 5 s.
    Redeliver {
        /// The delivery's id (its webhook-id, msg_...).
        id: String,
        /// Send even though the receiver answered 410 Gone.
        #[arg(long)]
        force: bool,
        /// Database, as sqlite://PATH or postgres://USER:PASSWORD@HOST/DB.
        #[arg(
            long,
            env = "SDSERVE_DATABASE",
            default_value = "sqlite://sdserve-webhooks.db"
        )]
        database: String,
        /// The secrets key the service uses (default: `<database>.secrets-key`).
        #[arg(long, env = "SDSERVE_SECRETS_KEY_FILE")]
        secrets_key_file: Option<PathBuf>,
    },
}

#[derive(Subcommand)]
enum KeysCommand {
    /// Creates a key and prints it, and nothing else, on stdout; it is shown only this once.
    Create {
        /// A name for the key (who or what uses it).
        #[arg(long)]
        name: String,
        /// Database, as sqlite://PATH or postgres://USER:PASSWORD@HOST/DB.
        #[arg(
            long,
            env = "SDSERVE_DATABASE",
            default_value = "sqlite://sdserve-webhooks.db"
        )]
        database: String,
        /// File holding the secrets key the database's webhook secrets are sealed with (as
        /// `serve --secrets-key-file`; default: `<database>.secrets-key`).
        #[arg(long, env = "SDSERVE_SECRETS_KEY_FILE")]
        secrets_key_file: Option<PathBuf>,
        /// Jobs this key may have queued or running at once (default: the service's).
        #[arg(long)]
        max_in_flight: Option<u32>,
        /// Submissions this key may make per minute (default: the service's).
        #[arg(long)]
        per_minute: Option<u32>,
        /// Leonardo-style callback URL of this key (https), used by its /api/rest/v1 jobs.
        #[arg(long)]
        webhook_url: Option<String>,
        /// Bearer key sent with those callbacks.
        #[arg(long, requires = "webhook_url", hide_env_values = true)]
        webhook_api_key: Option<String>,
    },
    /// Lists keys: id, name, prefix, created, revoked.
    List {
        /// Database, as sqlite://PATH or postgres://USER:PASSWORD@HOST/DB.
        #[arg(
            long,
            env = "SDSERVE_DATABASE",
            default_value = "sqlite://sdserve-webhooks.db"
        )]
        database: String,
        /// File holding the secrets key the database's webhook secrets are sealed with (as
        /// `serve --secrets-key-file`; default: `<database>.secrets-key`).
        #[arg(long, env = "SDSERVE_SECRETS_KEY_FILE")]
        secrets_key_file: Option<PathBuf>,
    },
    /// Revokes a key by id or name; it stops working within 10 seconds.
    Revoke {
        /// The key's id (key_...) or name.
        key: String,
        /// Database, as sqlite://PATH or postgres://USER:PASSWORD@HOST/DB.
        #[arg(
            long,
            env = "SDSERVE_DATABASE",
            default_value = "sqlite://sdserve-webhooks.db"
        )]
        database: String,
        /// File holding the secrets key the database's webhook secrets are sealed with (as
        /// `serve --secrets-key-file`; default: `<database>.secrets-key`).
        #[arg(long, env = "SDSERVE_SECRETS_KEY_FILE")]
        secrets_key_file: Option<PathBuf>,
    },
}

#[derive(clap::Args)]
struct ServeArgs {
    /// Address of the gRPC API (Jobs, health, reflection).
    #[arg(long, env = "SDSERVE_GRPC_LISTEN", default_value = "127.0.0.1:50052")]
    grpc_listen: SocketAddr,
    /// Address of the HTTP API (jobs, vendor shapes, media, /metrics).
    #[arg(long, env = "SDSERVE_HTTP_LISTEN", default_value = "127.0.0.1:8080")]
    http_listen: SocketAddr,
    /// Database, as sqlite://PATH (the file is created if missing; one process) or
    /// postgres://USER:PASSWORD@HOST/DB (shared by any number of replicas; needs
    /// --secrets-key-file, the same file on every replica).
    #[arg(
        long,
        env = "SDSERVE_DATABASE",
        default_value = "sqlite://sdserve-webhooks.db"
    )]
    database: String,
    /// Inference server endpoint; repeat to balance over several.
    #[arg(
        long,
        env = "SDSERVE_INFERENCE",
        value_delimiter = ',',
        default_value = "http://127.0.0.1:50051"
    )]
    inference: Vec<String>,
    /// Public base URL of the HTTP API, used in media links (default: http://<http-listen>).
    #[arg(long, env = "SDSERVE_PUBLIC_URL")]
    public_url: Option<String>,
    /// How long media links in callbacks stay valid (e.g. 7d, 12h).
    #[arg(long, env = "SDSERVE_MEDIA_TTL", default_value = "7d")]
    media_ttl: String,
    /// Subnet that webhooks may reach although private or loopback (CIDR); repeatable.
    #[arg(long, env = "SDSERVE_ALLOW_PRIVATE", value_delimiter = ',')]
    allow_private: Vec<ipnet::IpNet>,
    /// Accept plain http:// webhook URLs (for local development only).
    #[arg(long, env = "SDSERVE_ALLOW_HTTP")]
    allow_http: bool,
    /// PEM bundle of extra CA certificates trusted for webhook TLS.
    #[arg(long, env = "SDSERVE_CA_FILE")]
    ca_file: Option<PathBuf>,
    /// Standard Webhooks signing key (whsec_...) for jobs that bring none. Prefer
    /// --signing-key-file: a flag's value is visible to every user in `ps`.
    #[arg(
        long,
        env = "SDSERVE_SIGNING_KEY",
        hide_env_values = true,
        conflicts_with = "signing_key_file"
    )]
    signing_key: Option<String>,
    /// File holding the Standard Webhooks signing key (whsec_...).
    #[arg(long, env = "SDSERVE_SIGNING_KEY_FILE")]
    signing_key_file: Option<PathBuf>,
    /// File holding the key that seals webhook secrets and signing keys in the database: 32
    /// raw bytes, 64 hex digits or base64 (`head -c32 /dev/urandom > FILE`). Default:
    /// `<database>.secrets-key`, created (mode 0600) on first start. `keys` commands need the
    /// same key.
    #[arg(long, env = "SDSERVE_SECRETS_KEY_FILE")]
    secrets_key_file: Option<PathBuf>,
    /// With a PostgreSQL database: this replica's folder for results that could not be
    /// stored yet (stored at its next start). Default: `sdserve-spool`. SQLite uses
    /// `<database>.spool/`.
    #[arg(long, env = "SDSERVE_SPOOL_DIR")]
    spool_dir: Option<PathBuf>,
    /// Webhook connect timeout.
    #[arg(long, env = "SDSERVE_CONNECT_TIMEOUT", default_value = "5s")]
    connect_timeout: String,
    /// Webhook total timeout per attempt.
    #[arg(long, env = "SDSERVE_TIMEOUT", default_value = "15s")]
    timeout: String,
    /// Delays between delivery attempts, comma-separated (units ms, s, m, h, d); ±20% jitter.
    #[arg(long, env = "SDSERVE_RETRY_SCHEDULE", default_value = DEFAULT_SCHEDULE)]
    retry_schedule: String,
    /// Delivery attempts in flight at once.
    #[arg(long, env = "SDSERVE_DELIVERY_CONCURRENCY", default_value_t = 64)]
    delivery_concurrency: usize,
    /// Generations sent to the inference servers at once.
    #[arg(long, env = "SDSERVE_GENERATION_CONCURRENCY", default_value_t = 2)]
    generation_concurrency: usize,
    /// Run without API keys: every caller is anonymous. For local development only.
    #[arg(long, env = "SDSERVE_NO_AUTH")]
    no_auth: bool,
    /// Jobs one key may have queued or running at once, unless the key sets its own.
    #[arg(long, env = "SDSERVE_MAX_IN_FLIGHT", default_value_t = 32)]
    max_in_flight: u32,
    /// Submissions one key may make per minute, unless the key sets its own.
    #[arg(long, env = "SDSERVE_PER_MINUTE", default_value_t = 120)]
    per_minute: u32,
    /// Largest callback body with its images embedded as base64 (RunPod, Cerebrium); above it
    /// the callback carries the images' signed media URLs instead.
    #[arg(long, env = "SDSERVE_MAX_CALLBACK_BYTES", default_value_t = 32 * 1024 * 1024)]
    max_callback_bytes: usize,
    /// Days a finished job (its images, callbacks and their bodies) is kept before it is
    /// deleted, once its deliveries are settled; 0 keeps everything.
    #[arg(long, env = "SDSERVE_RETAIN_DAYS", default_value_t = 30)]
    retain_days: u64,
    /// Most work one job may ask for, in pixel-steps: width × height × steps × images over all
    /// its parts (default: 16 images of 1024×1024 at 60 steps).
    #[arg(long, env = "SDSERVE_MAX_JOB_COST", default_value_t = 16 * 1024 * 1024 * 60)]
    max_job_cost: u64,
    /// Largest HTTP request body, in bytes (default 32 MiB: a 2048×2048 PNG in base64 fits).
    #[arg(long, env = "SDSERVE_BODY_LIMIT", default_value_t = 32 * 1024 * 1024)]
    body_limit: usize,
    /// Longest a synchronous call (/runsync, A1111 txt2img, Cerebrium without a webhook) waits.
    #[arg(long, env = "SDSERVE_SYNC_WAIT", default_value = "90s")]
    sync_wait: String,
    /// Ask for a preview every this many steps (A1111 progress current_image); 0 = never.
    #[arg(long, env = "SDSERVE_PREVIEW_EVERY", default_value_t = 5)]
    preview_every: u32,
    /// Longest silence of the inference server once a generation has started (e.g. 5s, 2m);
    /// past it the attempt is abandoned and retried.
    #[arg(long, env = "SDSERVE_STALL_TIMEOUT", default_value = "120s")]
    stall_timeout: String,
    /// How long a job claimed by this replica stays its own without a renewal (renewed every
    /// third of it): replicas sharing a PostgreSQL store take over the jobs of one that died
    /// this long after its last renewal.
    #[arg(long, env = "SDSERVE_JOB_LEASE", default_value = "30s")]
    job_lease: String,
    /// Longest wait in the inference server's queue without any news.
    #[arg(long, env = "SDSERVE_QUEUE_TIMEOUT", default_value = "30m")]
    queue_timeout: String,
    /// Execution timeout of jobs that bring none (RunPod's policy.executionTimeout overrides).
    #[arg(long, env = "SDSERVE_EXECUTION_TIMEOUT", default_value = "30m")]
    execution_timeout: String,
    /// Attempts a generation gets before its job fails (stalls, unreachable servers).
    #[arg(long, env = "SDSERVE_DISPATCH_ATTEMPTS", default_value_t = 5)]
    dispatch_attempts: u32,
}

/// The database a `--database` URL names (`spool`: a PostgreSQL replica's spool folder).
fn database(url: &str, spool: Option<PathBuf>) -> anyhow::Result<Database> {
    Database::parse(url, spool).map_err(anyhow::Error::msg)
}

/// Opens the store a `--database` URL names, for the operator commands.
async fn open_store(
    url: &str,
    secrets_key_file: Option<&std::path::Path>,
) -> anyhow::Result<std::sync::Arc<dyn webhook_service::store::Store>> {
    let database = database(url, None)?;
    database
        .open(secrets_key(secrets_key_file)?.as_ref())
        .await
        .with_context(|| format!("opening {database}"))
}

fn duration(flag: &str, value: &str) -> anyhow::Result<Duration> {
    let schedule: Schedule = value.parse().with_context(|| format!("--{flag}"))?;
    match schedule.0.as_slice() {
        [one] => Ok(*one),
        _ => anyhow::bail!("--{flag}: expected one duration such as 5s, got {value:?}"),
    }
}

impl ServeArgs {
    fn config(&self) -> anyhow::Result<Config> {
        let database = database(&self.database, self.spool_dir.clone())?;
        let ca_pem = match &self.ca_file {
            Some(path) => {
                Some(std::fs::read(path).with_context(|| format!("--ca-file {}", path.display()))?)
            }
            None => None,
        };
        let schedule: Schedule = self.retry_schedule.parse().context("--retry-schedule")?;
        Ok(Config {
            database,
            inference: self.inference.clone(),
            public_url: self.public_url.clone(),
            media_ttl: duration("media-ttl", &self.media_ttl)?,
            allow_private: self.allow_private.clone(),
            allow_http: self.allow_http,
            ca_pem,
            signing_key: match &self.signing_key_file {
                Some(path) => Some(
                    std::fs::read_to_string(path)
                        .with_context(|| format!("--signing-key-file {}", path.display()))?
                        .trim()
                        .to_owned(),
                ),
                None => self.signing_key.clone(),
            },
            secrets_key: secrets_key(self.secrets_key_file.as_deref())?,
            connect_timeout: duration("connect-timeout", &self.connect_timeout)?,
            timeout: duration("timeout", &self.timeout)?,
            retry: RetryPolicy {
                delays: schedule.0,
                ..RetryPolicy::default()
            },
            delivery_concurrency: self.delivery_concurrency,
            generation_concurrency: self.generation_concurrency,
            auth: if self.no_auth {
                AuthMode::Disabled
            } else {
                AuthMode::Required
            },
            max_in_flight: self.max_in_flight,
            per_minute: self.per_minute,
            body_limit: self.body_limit,
            max_job_cost: self.max_job_cost,
            max_callback_bytes: self.max_callback_bytes,
            retain: (self.retain_days > 0)
                .then(|| Duration::from_secs(self.retain_days * 24 * 3600)),
            sync_wait: duration("sync-wait", &self.sync_wait)?,
            dispatch: DispatchPolicy {
                queue_timeout: duration("queue-timeout", &self.queue_timeout)?,
                stall_timeout: duration("stall-timeout", &self.stall_timeout)?,
                max_attempts: self.dispatch_attempts.max(1),
                default_execution_timeout: Some(duration(
                    "execution-timeout",
                    &self.execution_timeout,
                )?),
                preview_every: self.preview_every,
                lease: duration("job-lease", &self.job_lease)?.max(Duration::from_secs(1)),
            },
            ..Config::default()
        })
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
    let args = match Cli::parse().command {
        Command::Serve(args) => args,
        Command::Keys(command) => return keys(command).await,
        Command::Deliveries(command) => return deliveries(command).await,
    };
    let config = args.config()?;
    let grpc = tokio::net::TcpListener::bind(args.grpc_listen)
        .await
        .with_context(|| format!("binding --grpc-listen {}", args.grpc_listen))?;
    let http = tokio::net::TcpListener::bind(args.http_listen)
        .await
        .with_context(|| format!("binding --http-listen {}", args.http_listen))?;
    webhook_service::run(config, grpc, http, shutdown_signal()).await?;
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(term) => term,
                Err(_) => {
                    let _ = ctrl_c.await;
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}

/// The key in `--secrets-key-file`, if given.
fn secrets_key(file: Option<&std::path::Path>) -> anyhow::Result<Option<SecretsKey>> {
    file.map(|path| SecretsKey::read_file(path).context("--secrets-key-file"))
        .transpose()
}

async fn key_ring(
    database: &str,
    secrets_key_file: Option<&std::path::Path>,
) -> anyhow::Result<KeyRing> {
    let store = open_store(database, secrets_key_file).await?;
    Ok(KeyRing::new(store, Clock::system(), AuthMode::Required))
}

/// `keys create|list|revoke`. `create` prints only the key on stdout, so scripts can capture it.
async fn keys(command: KeysCommand) -> anyhow::Result<()> {
    match command {
        KeysCommand::Create {
            name,
            database,
            secrets_key_file,
            max_in_flight,
            per_minute,
            webhook_url,
            webhook_api_key,
        } => {
            if name.trim().is_empty() {
                anyhow::bail!("--name must not be empty");
            }
            let webhook = match webhook_url {
                Some(url) => {
                    let parsed = url::Url::parse(&url)
                        .with_context(|| format!("--webhook-url {url:?} is not a URL"))?;
                    if parsed.scheme() != "https" {
                        anyhow::bail!("--webhook-url must use https (Leonardo requires it)");
                    }
                    Some(KeyWebhook {
                        url,
                        secret: webhook_api_key.map(Secret::new),
                    })
                }
                None => None,
            };
            let spec = KeySpec {
                name,
                limits: KeyLimits {
                    max_in_flight,
                    per_minute,
                },
                webhook,
            };
            let created = key_ring(&database, secrets_key_file.as_deref())
                .await?
                .create(spec)
                .await?;
            eprintln!(
                "created key {} ({}); it is shown once, below",
                created.record.id, created.record.name
            );
            println!("{}", created.key);
        }
        KeysCommand::List {
            database,
            secrets_key_file,
        } => {
            println!(
                "{:<38} {:<24} {:<12} {:<25} REVOKED",
                "ID", "NAME", "PREFIX", "CREATED"
            );
            for key in key_ring(&database, secrets_key_file.as_deref())
                .await?
                .list()
                .await?
            {
                let when = |ms: i64| {
                    time::OffsetDateTime::from_unix_timestamp(ms / 1000)
                        .map(|t| t.to_string())
                        .unwrap_or_default()
                };
                let revoked = key
                    .revoked_at_ms
                    .map(when)
                    .unwrap_or_else(|| "-".to_owned());
                println!(
                    "{:<38} {:<24} {:<12} {:<25} {}",
                    key.id,
                    key.name,
                    key.prefix,
                    when(key.created_at_ms),
                    revoked
                );
            }
        }
        KeysCommand::Revoke {
            key,
            database,
            secrets_key_file,
        } => {
            if !key_ring(&database, secrets_key_file.as_deref())
                .await?
                .revoke(&key)
                .await?
            {
                anyhow::bail!("no active key has the id or name {key:?}");
            }
            eprintln!("revoked {key}");
        }
    }
    Ok(())
}

/// `deliveries redeliver`: the operator's redelivery, which may override a 410 Gone mark.
async fn deliveries(command: DeliveriesCommand) -> anyhow::Result<()> {
    use webhook_service::store::Redelivery;
    let DeliveriesCommand::Redeliver {
        id,
        force,
        database,
        secrets_key_file,
    } = command;
    let store = open_store(&database, secrets_key_file.as_deref()).await?;
    match store
        .redeliver(&id, Clock::system().now_ms(), force)
        .await?
    {
        Redelivery::NotFound => anyhow::bail!("no delivery has the id {id:?}"),
        Redelivery::Gone(record) => {
            anyhow::bail!(
                "the receiver at {} answered 410 Gone; add --force to send anyway",
                record.url
            )
        }
        Redelivery::Redelivered(record) => {
            eprintln!("delivery {} to {} is pending again", record.id, record.url)
        }
    }
    Ok(())
}
