//! PostgreSQL implementation of [`Store`], for several replicas sharing one database.
//!
//! Its observable behaviour is [`SqliteStore`](super::sqlite::SqliteStore)'s (the trait's
//! contracts, the same encodings, the same sealed secrets); what differs is what sharing needs:
//!
//! - **Claims**: [`Store::claim_next_job`] and [`Store::claim_due_deliveries`] select their rows
//!   `FOR UPDATE SKIP LOCKED` in the claiming transaction, so concurrent replicas never take
//!   the same row and never wait on each other's claims.
//! - **Start-up requeue**: [`Store::requeue_running_jobs`] puts back only jobs whose lease ran
//!   out (or that have none): the others are running on live replicas.
//! - **Changes**: [`Store::changes`] is fed by LISTEN/NOTIFY (see the `listen` module).
//! - **Migrations** run under a transaction-scoped advisory lock, so replicas starting at once
//!   migrate a new database once; a database of a newer schema is refused.
//! - **Shared settings**: [`PostgresStore::shared_key`] gives every replica the same key.
//!
//! Connections: a pool of [`POOL_SIZE`] connections (deadpool) plus one dedicated listening
//! connection. **No TLS** (`NoTls`): the database must be reached over a trusted network or a
//! local socket. Every statement is bounded by the session's `statement_timeout`
//! ([`STATEMENT_TIMEOUT`]), waiting for a pooled connection by [`POOL_WAIT`], and every call by
//! [`CALL_DEADLINE`]; past them the caller gets [`StoreError::Busy`] (503 with `Retry-After`).
//!
//! Secrets (`jobs.webhook_secret`, `jobs.signing_secret`, `api_keys.webhook_secret`) are stored
//! sealed with the [`SecretBox`] the store is opened with; see [`crate::store::secrets`].

mod deliveries;
mod error;
mod jobs;
mod keys;
mod listen;
mod migrate;
mod results;
mod rows;
mod store_impl;

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use tokio::sync::broadcast;
use tokio_postgres::NoTls;
use tokio_postgres::config::Host;

pub use self::error::PgError;
use super::secrets::SecretBox;
use super::{StoreChange, StoreError};

/// Connections in the pool.
pub const POOL_SIZE: usize = 16;
/// `statement_timeout` of every connection: the longest one statement may run.
pub const STATEMENT_TIMEOUT: Duration = Duration::from_secs(10);
/// The longest a call waits for a free pooled connection (or for a new one to open).
pub const POOL_WAIT: Duration = Duration::from_secs(10);
/// The longest a store call may take in all; longer than [`STATEMENT_TIMEOUT`], so the
/// server's own timeout normally fires first, but a hung network cannot hold a caller forever.
pub const CALL_DEADLINE: Duration = Duration::from_secs(20);
/// Capacity of the [`Store::changes`] broadcast channel; a receiver that falls further behind
/// gets `Lagged` and re-reads the store.
const CHANGES_CAPACITY: usize = 1024;
/// How long [`Store::ping`]'s transaction may wait for its lock or run.
const PING_TIMEOUT: &str = "2s";

/// A [`Store`] in a PostgreSQL database, shared by any number of replicas. Cloning shares the
/// pool, the listening connection and the change channel.
#[derive(Clone)]
pub struct PostgresStore {
    pool: Pool,
    secrets: Arc<SecretBox>,
    changes: broadcast::Sender<StoreChange>,
    _listener: Arc<listen::Listener>,
    location: Arc<str>,
}

impl fmt::Debug for PostgresStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PostgresStore")
            .field("location", &self.location)
            .finish_non_exhaustive()
    }
}

impl PostgresStore {
    /// The schema version this build creates and reads; a database with a higher one is
    /// refused by [`PostgresStore::connect`].
    pub const SCHEMA_VERSION: i64 = migrate::SCHEMA_VERSION;

    /// Connects to the database at `url` (a `postgres://` URL or a libpq key=value string;
    /// without TLS), migrates it to [`Self::SCHEMA_VERSION`], checks that `secrets` opens the
    /// secrets stored there and starts listening for changes. Fails with [`StoreError::Open`]
    /// (naming the database without its password) when it cannot connect, a migration fails
    /// or the schema is newer than this build, and with [`StoreError::Corrupt`] naming the
    /// column when stored secrets do not open with `secrets` (another key).
    pub async fn connect(url: &str, secrets: SecretBox) -> Result<Self, StoreError> {
        let mut config: tokio_postgres::Config = url.parse().map_err(|e| StoreError::Open {
            path: "<the PostgreSQL URL>".to_owned(),
            detail: format!("not a PostgreSQL connection URL: {e}"),
        })?;
        let location = describe(&config);
        let open_error = |detail: String| StoreError::Open {
            path: location.clone(),
            detail,
        };
        configure(&mut config);
        let manager = Manager::from_config(
            config.clone(),
            NoTls,
            ManagerConfig {
                // A broken connection is noticed by the query that uses it (an error the
                // caller retries); checking each one on checkout would cost a round trip.
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(POOL_SIZE)
            .runtime(Runtime::Tokio1)
            .wait_timeout(Some(POOL_WAIT))
            .create_timeout(Some(POOL_WAIT))
            .recycle_timeout(Some(POOL_WAIT))
            .build()
            .map_err(|e| open_error(format!("cannot create the connection pool: {e}")))?;
        {
            let mut client = pool
                .get()
                .await
                .map_err(|e| open_error(PgError::from(e).to_string()))?;
            migrate::migrate(&mut client).await.map_err(open_error)?;
        }
        let secrets = Arc::new(secrets);
        {
            let client = pool.get().await?;
            keys::check_secrets_key(&client, &secrets).await?;
        }
        let (changes, _) = broadcast::channel(CHANGES_CAPACITY);
        let listener = listen::start(config, changes.clone())
            .await
            .map_err(|e| open_error(format!("cannot LISTEN for changes: {e}")))?;
        Ok(Self {
            pool,
            secrets,
            changes,
            _listener: Arc::new(listener),
            location: location.into(),
        })
    }

    /// The 32-byte value stored under `name` in the `settings` table, created with random
    /// bytes on first use, so every replica gets the same one (the media URL signing key).
    pub async fn shared_key(&self, name: &str) -> Result<Vec<u8>, StoreError> {
        bounded(async { keys::shared_key(&self.client().await?, name).await }).await
    }

    async fn client(&self) -> Result<deadpool_postgres::Client, StoreError> {
        Ok(self.pool.get().await?)
    }
}

/// Sets what every connection of the store needs: the statement timeout, a connect timeout and
/// TCP keepalives (so a silently dead connection, the listening one above all, is noticed),
/// and a name in `pg_stat_activity`. Values the URL set explicitly are kept.
fn configure(config: &mut tokio_postgres::Config) {
    let options = format!(
        "{} -c statement_timeout={}",
        config.get_options().unwrap_or_default(),
        STATEMENT_TIMEOUT.as_millis()
    );
    config.options(options.trim_start());
    if config.get_connect_timeout().is_none() {
        config.connect_timeout(POOL_WAIT);
    }
    config
        .keepalives(true)
        .keepalives_idle(Duration::from_secs(30));
    if config.get_application_name().is_none() {
        config.application_name("sdserve-webhook-service");
    }
}

/// The database a config points at, for messages: `user@host:port/dbname`, never the password.
fn describe(config: &tokio_postgres::Config) -> String {
    let host = match config.get_hosts().first() {
        Some(Host::Tcp(host)) => host.clone(),
        #[cfg(unix)]
        Some(Host::Unix(path)) => path.display().to_string(),
        None => "localhost".to_owned(),
    };
    let port = config.get_ports().first().copied().unwrap_or(5432);
    format!(
        "postgres://{}@{host}:{port}/{}",
        config.get_user().unwrap_or_default(),
        config.get_dbname().unwrap_or_default()
    )
}

/// Waits for a store call at most [`CALL_DEADLINE`]. A call cut off here is dropped: its open
/// transaction, if any, is rolled back when its connection goes back to the pool.
async fn bounded<T>(call: impl Future<Output = Result<T, StoreError>>) -> Result<T, StoreError> {
    tokio::time::timeout(CALL_DEADLINE, call)
        .await
        .unwrap_or_else(|_| {
            Err(StoreError::Busy(format!(
                "the database did not answer within {CALL_DEADLINE:?}"
            )))
        })
}
