//! `webhook-service serve`: the command-line entry. Every flag can also be set through the
//! environment variable `SDSERVE_<FLAG>` (e.g. `SDSERVE_GRPC_LISTEN`).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand};
use webhook_service::Config;
use webhook_service::delivery::retry::{DEFAULT_SCHEDULE, RetryPolicy, Schedule};

#[derive(Parser)]
#[command(name = "webhook-service", version, about = "Accepts image-generation jobs and delivers results as signed JSON webhooks")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Runs the service until SIGINT or SIGTERM.
    Serve(Box<ServeArgs>),
}

#[derive(clap::Args)]
struct ServeArgs {
    /// Address of the gRPC API (Jobs, health, reflection).
    #[arg(long, env = "SDSERVE_GRPC_LISTEN", default_value = "127.0.0.1:50052")]
    grpc_listen: SocketAddr,
    /// Address of the HTTP API (jobs, vendor shapes, media, /metrics).
    #[arg(long, env = "SDSERVE_HTTP_LISTEN", default_value = "127.0.0.1:8080")]
    http_listen: SocketAddr,
    /// Database, as sqlite://PATH (the file is created if missing).
    #[arg(long, env = "SDSERVE_DATABASE", default_value = "sqlite://sdserve-webhooks.db")]
    database: String,
    /// Inference server endpoint; repeat to balance over several.
    #[arg(long, env = "SDSERVE_INFERENCE", value_delimiter = ',', default_value = "http://127.0.0.1:50051")]
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
    /// Standard Webhooks signing key (whsec_...) for jobs that bring none.
    #[arg(long, env = "SDSERVE_SIGNING_KEY", hide_env_values = true)]
    signing_key: Option<String>,
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
        let database = self
            .database
            .strip_prefix("sqlite://")
            .with_context(|| format!("--database must be sqlite://PATH, got {:?}", self.database))?;
        let ca_pem = match &self.ca_file {
            Some(path) => Some(std::fs::read(path).with_context(|| format!("--ca-file {}", path.display()))?),
            None => None,
        };
        let schedule: Schedule = self.retry_schedule.parse().context("--retry-schedule")?;
        Ok(Config {
            database: PathBuf::from(database),
            inference: self.inference.clone(),
            public_url: self.public_url.clone(),
            media_ttl: duration("media-ttl", &self.media_ttl)?,
            allow_private: self.allow_private.clone(),
            allow_http: self.allow_http,
            ca_pem,
            signing_key: self.signing_key.clone(),
            connect_timeout: duration("connect-timeout", &self.connect_timeout)?,
            timeout: duration("timeout", &self.timeout)?,
            retry: RetryPolicy { delays: schedule.0, ..RetryPolicy::default() },
            delivery_concurrency: self.delivery_concurrency,
            generation_concurrency: self.generation_concurrency,
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
    let Command::Serve(args) = Cli::parse().command;
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
        let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
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
