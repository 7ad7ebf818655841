//! SQLite implementation of [`Store`]: one file, one writing connection and a few read-only ones.
//!
//! Every call runs on [`tokio::task::spawn_blocking`]. Writes go through one connection behind a
//! [`Mutex`], so they are serialised in-process; reads go to read-only connections, which in WAL
//! mode see the last commit and never wait on a write. Every call waits at most 10 s, then
//! fails with [`StoreError::Busy`] (the APIs answer 503 with `Retry-After`). Statements are
//! prepared once and cached (`prepare_cached`).
//!
//! Durability: the database runs in WAL mode with `synchronous=NORMAL`. A committed
//! transaction survives a crash or kill of the process; an operating-system crash or power
//! loss may lose the last few transactions committed before it (never corrupting the file).
//! Deliveries are at-least-once in any case, so a lost "succeeded" mark means a resend.
//!
//! Secrets (`jobs.webhook_secret`, `jobs.signing_secret`, `api_keys.webhook_secret`) are stored
//! sealed with the [`SecretBox`] the store is opened with; see [`crate::store::secrets`].

mod deliveries;
mod jobs;
mod keys;
mod migrate;
mod reseal;
mod rows;
#[cfg(test)]
mod tests;

use std::fmt;
use std::path::Path;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use async_trait::async_trait;
use rusqlite::Connection;
use tokio::sync::oneshot;

use super::secrets::{SecretBox, SecretsKey};
use super::{Inserted, Redelivery, Store, StoreError};
use crate::domain::{
    ApiKeyRecord, AttemptRecord, DeliveryRecord, DeliveryTask, JobFinish, JobRecord, JobStatus,
    NewApiKey, NewJob, StoredImage,
};

impl From<rusqlite::Error> for StoreError {
    fn from(e: rusqlite::Error) -> Self {
        StoreError::Database(e.to_string())
    }
}

/// How long a statement waits for another process's write lock before failing.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// Prepared statements kept per connection (the store uses about 25).
const STATEMENT_CACHE: usize = 64;

/// Attempts queued for the next group commit, each with the channel its caller waits on.
type PendingAttempts = Arc<Mutex<Vec<(AttemptRecord, oneshot::Sender<Result<(), StoreError>>)>>>;

/// Read-only connections beside the writer, so reads never wait on writes (WAL mode lets
/// readers see the last commit while a write is in progress).
const READERS: usize = 2;

/// The longest a store call may wait (for a connection or the database); past it the caller
/// gets [`StoreError::Busy`], which the APIs answer with 503 and `Retry-After`.
const CALL_DEADLINE: Duration = Duration::from_secs(10);

/// A [`Store`] in one SQLite database file: one writing connection and a few read-only ones.
/// Cloning shares them.
#[derive(Clone)]
pub struct SqliteStore {
    conn: Arc<Mutex<Connection>>,
    readers: Arc<Vec<Mutex<Connection>>>,
    next_reader: Arc<std::sync::atomic::AtomicUsize>,
    pending_attempts: PendingAttempts,
    location: Arc<str>,
    secrets: Arc<SecretBox>,
}

impl fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SqliteStore")
            .field("location", &self.location)
            .finish_non_exhaustive()
    }
}

impl SqliteStore {
    /// The schema version this build creates and reads; a database with a higher one is
    /// refused by [`SqliteStore::open`].
    pub const SCHEMA_VERSION: i64 = migrate::SCHEMA_VERSION;

    /// Opens (creating if needed) the database at `path` with the secrets key kept beside it
    /// (`<path>.secrets-key`, created on first use), as the service does when no
    /// `--secrets-key-file` is given. See [`SqliteStore::open_with`].
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        let key = SecretsKey::beside(path)
            .map_err(|e| open_error(&path.display().to_string(), e.to_string()))?;
        Self::open_with(path, SecretBox::new(&key))
    }

    /// Opens (creating if needed) the database at `path`, migrates it to
    /// [`Self::SCHEMA_VERSION`] and seals, in one transaction, any secret an older build stored
    /// in clear. Fails with [`StoreError::Open`] if the file cannot be opened, a migration fails,
    /// or the database was written by a newer build, and with [`StoreError::Corrupt`] naming
    /// the column when stored secrets do not open with `secrets` (another key).
    pub fn open_with(path: &Path, secrets: SecretBox) -> Result<Self, StoreError> {
        let location = path.display().to_string();
        create_private(path).map_err(|e| open_error(&location, e.to_string()))?;
        let conn = Connection::open(path).map_err(|e| open_error(&location, e.to_string()))?;
        let mut store = Self::init(conn, location.clone(), true, secrets)?;
        // Opened after the migrations, which they must not race with.
        let readers = (0..READERS)
            .map(|_| {
                let flags = rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY
                    | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX;
                let reader = Connection::open_with_flags(path, flags)
                    .map_err(|e| open_error(&location, e.to_string()))?;
                reader
                    .busy_timeout(BUSY_TIMEOUT)
                    .map_err(|e| open_error(&location, e.to_string()))?;
                reader.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
                Ok(Mutex::new(reader))
            })
            .collect::<Result<Vec<_>, StoreError>>()?;
        store.readers = Arc::new(readers);
        Ok(store)
    }

    /// A private in-memory database, for tests, sealing with a random key; it disappears when
    /// the last clone is dropped.
    pub fn open_in_memory() -> Result<Self, StoreError> {
        let location = ":memory:".to_owned();
        let conn =
            Connection::open_in_memory().map_err(|e| open_error(&location, e.to_string()))?;
        Self::init(
            conn,
            location,
            false,
            SecretBox::new(&SecretsKey::generate()),
        )
    }

    fn init(
        mut conn: Connection,
        location: String,
        file: bool,
        secrets: SecretBox,
    ) -> Result<Self, StoreError> {
        configure(&conn, file).map_err(|e| open_error(&location, e))?;
        migrate::migrate(&mut conn).map_err(|e| open_error(&location, e))?;
        reseal::check_key(&conn, &secrets)?;
        let resealed = reseal::seal_clear_values(&mut conn, &secrets, file)?;
        if resealed > 0 {
            tracing::info!(resealed, database = %location, "encrypted secrets an older build had stored in clear");
        }
        Ok(Self {
            conn: Arc::new(Mutex::new(conn)),
            readers: Arc::new(Vec::new()),
            next_reader: Arc::default(),
            pending_attempts: PendingAttempts::default(),
            location: location.into(),
            secrets: Arc::new(secrets),
        })
    }

    /// Runs `f` with the connection on the blocking pool.
    /// Runs `f` with the connection and the secret box on the blocking pool.
    async fn call_sealed<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection, &SecretBox) -> Result<T, StoreError> + Send + 'static,
    {
        let secrets = Arc::clone(&self.secrets);
        self.call(move |c| f(c, &secrets)).await
    }

    async fn call<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> Result<T, StoreError> + Send + 'static,
    {
        let conn = Arc::clone(&self.conn);
        bounded(tokio::task::spawn_blocking(move || {
            // A panic while the lock was held unwound through any open `Transaction`, which
            // rolled it back, so the connection is still consistent.
            let mut conn = conn.lock().unwrap_or_else(PoisonError::into_inner);
            f(&mut conn)
        }))
        .await
    }

    /// Runs a read on one of the read-only connections (the writer when there are none, as
    /// in memory), so it does not queue behind writes.
    async fn read<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection, &SecretBox) -> Result<T, StoreError> + Send + 'static,
    {
        if self.readers.is_empty() {
            return self.call_sealed(move |c, s| f(c, s)).await;
        }
        let (readers, secrets) = (Arc::clone(&self.readers), Arc::clone(&self.secrets));
        let first = self
            .next_reader
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        bounded(tokio::task::spawn_blocking(move || {
            // Take a free reader if there is one, else wait for this call's turn.
            let n = readers.len();
            let conn = (0..n)
                .find_map(|i| readers[(first + i) % n].try_lock().ok())
                .unwrap_or_else(|| {
                    readers[first % n]
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner)
                });
            f(&conn, &secrets)
        }))
        .await
    }
}

/// Waits for a store call at most [`CALL_DEADLINE`]. A call past it keeps running on its
/// blocking thread (a write may still commit: callers retry with their idempotency key).
async fn bounded<T>(call: tokio::task::JoinHandle<Result<T, StoreError>>) -> Result<T, StoreError> {
    match tokio::time::timeout(CALL_DEADLINE, call).await {
        Ok(joined) => joined.map_err(|e| StoreError::Task(e.to_string()))?,
        Err(_) => Err(StoreError::Busy(format!(
            "the database did not answer within {CALL_DEADLINE:?}"
        ))),
    }
}

/// Creates the database file readable by its owner only (it holds webhook secrets and every
/// image); SQLite gives its `-wal` and `-shm` files the same mode. An existing file is left as is.
fn create_private(path: &Path) -> std::io::Result<()> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    match options.open(path) {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(e),
    }
}

/// Sets the connection's pragmas; see the module documentation for what they mean.
fn configure(conn: &Connection, file: bool) -> Result<(), String> {
    conn.busy_timeout(BUSY_TIMEOUT)
        .map_err(|e| format!("setting busy_timeout: {e}"))?;
    conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
    if file {
        let mode: String = conn
            .pragma_update_and_check(None, "journal_mode", "WAL", |row| row.get(0))
            .map_err(|e| format!("enabling WAL: {e}"))?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(format!("WAL journal mode is unavailable (got {mode})"));
        }
    }
    // NORMAL in WAL mode: commits survive a process crash; an OS crash may lose the last ones.
    for (name, value) in [("synchronous", "NORMAL"), ("foreign_keys", "ON")] {
        conn.pragma_update(None, name, value)
            .map_err(|e| format!("setting {name}: {e}"))?;
    }
    Ok(())
}

fn open_error(location: &str, detail: String) -> StoreError {
    StoreError::Open {
        path: location.to_owned(),
        detail,
    }
}

#[async_trait]
impl Store for SqliteStore {
    /// Inserts the job as queued. If its idempotency key is already used, nothing is written
    /// and the earlier job's id comes back with `deduplicated: true`; the UNIQUE constraint
    /// decides inside the transaction, so this is race-free.
    async fn insert_job(&self, job: NewJob) -> Result<Inserted, StoreError> {
        self.call_sealed(move |c, s| jobs::insert_job(c, s, &job))
            .await
    }

    /// Inserts the job and writes its ending in one transaction.
    async fn insert_finished_job(
        &self,
        job: NewJob,
        finish: JobFinish,
    ) -> Result<Inserted, StoreError> {
        self.call_sealed(move |c, s| jobs::insert_finished_job(c, s, &job, &finish))
            .await
    }

    /// A job by id, with its image count.
    async fn get_job(&self, id: &str) -> Result<Option<JobRecord>, StoreError> {
        let id = id.to_owned();
        self.read(move |c, s| jobs::get_job(c, s, &id)).await
    }

    /// Marks the oldest queued job no dispatcher holds dispatched by `replica` and returns it.
    async fn claim_next_job(
        &self,
        replica: &str,
        now_ms: i64,
        lease_until_ms: i64,
    ) -> Result<Option<JobRecord>, StoreError> {
        let replica = replica.to_owned();
        self.call_sealed(move |c, s| jobs::claim_next_job(c, s, &replica, now_ms, lease_until_ms))
            .await
    }

    /// Extends the lease when `replica` still holds the unfinished job.
    async fn renew_job_lease(
        &self,
        job_id: &str,
        replica: &str,
        lease_until_ms: i64,
    ) -> Result<bool, StoreError> {
        let (job_id, replica) = (job_id.to_owned(), replica.to_owned());
        self.call(move |c| jobs::renew_job_lease(c, &job_id, &replica, lease_until_ms))
            .await
    }

    /// One process writes a SQLite file, so at its start nothing can be running: every
    /// dispatched or running job goes back to queued.
    async fn requeue_running_jobs(&self, _now_ms: i64) -> Result<u64, StoreError> {
        self.call(|c| jobs::requeue_running_jobs(c)).await
    }

    /// Only this process writes the file: its own notifications cover every change.
    fn changes(&self) -> Option<tokio::sync::broadcast::Receiver<crate::store::StoreChange>> {
        None
    }

    /// Sets `queue_position` of a queued job.
    async fn set_queue_position(&self, job_id: &str, position: u32) -> Result<(), StoreError> {
        let job_id = job_id.to_owned();
        self.call(move |c| jobs::set_queue_position(c, &job_id, position))
            .await
    }

    /// Queued → running at `now_ms`; a running job keeps its first `started_at`.
    async fn mark_started(&self, job_id: &str, now_ms: i64) -> Result<(), StoreError> {
        let job_id = job_id.to_owned();
        self.call(move |c| jobs::mark_started(c, &job_id, now_ms))
            .await
    }

    /// Queued and running jobs of `owner`, newest first.
    async fn active_jobs(&self, owner: &str, limit: u32) -> Result<Vec<JobRecord>, StoreError> {
        let owner = owner.to_owned();
        self.read(move |c, s| jobs::active_jobs(c, s, &owner, limit))
            .await
    }

    /// `owner`'s jobs per status.
    async fn count_jobs(&self, owner: &str) -> Result<Vec<(JobStatus, u64)>, StoreError> {
        let owner = owner.to_owned();
        self.read(move |c, _| jobs::count_jobs(c, &owner)).await
    }

    /// One `DELETE` on `jobs`; the foreign keys cascade to images, deliveries and attempts.
    async fn purge_finished(&self, cutoff_ms: i64) -> Result<u64, StoreError> {
        self.call(move |c| jobs::purge_finished(c, cutoff_ms)).await
    }

    /// Takes the write lock and gives it back (`BEGIN IMMEDIATE; ROLLBACK`): a full disk, a
    /// read-only file or another process holding the lock fail it.
    async fn ping(&self) -> Result<(), StoreError> {
        self.call(|c| {
            let tx = c.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
            tx.rollback()?;
            Ok(())
        })
        .await
    }

    /// Inserts into `api_keys`.
    async fn insert_key(&self, key: NewApiKey) -> Result<(), StoreError> {
        self.call_sealed(move |c, s| keys::insert(c, s, &key)).await
    }

    /// Looks a key up by its SHA-256.
    async fn find_key(&self, hash: [u8; 32]) -> Result<Option<ApiKeyRecord>, StoreError> {
        self.read(move |c, s| keys::find(c, s, &hash)).await
    }

    /// Every key, oldest first.
    async fn list_keys(&self) -> Result<Vec<ApiKeyRecord>, StoreError> {
        self.read(keys::list).await
    }

    /// Sets `revoked_at` of the active key with this id or name.
    async fn revoke_key(&self, id_or_name: &str, now_ms: i64) -> Result<bool, StoreError> {
        let id = id_or_name.to_owned();
        self.call(move |c| keys::revoke(c, &id, now_ms)).await
    }

    /// Stores progress and model for a job that is not final; otherwise does nothing.
    async fn set_progress(
        &self,
        job_id: &str,
        step: u32,
        total: u32,
        model: &str,
    ) -> Result<(), StoreError> {
        let (job_id, model) = (job_id.to_owned(), model.to_owned());
        self.call(move |c| jobs::set_progress(c, &job_id, step, total, &model))
            .await
    }

    /// In one transaction: if the job exists and is not final, sets its status, error,
    /// `finished_at`, `started_at` (when given) and info JSON, inserts its images and its
    /// deliveries (pending, due at `finished_at_ms`, no attempts) and returns true. Otherwise
    /// returns false and writes nothing. A non-final `finish.status` is refused.
    async fn finish_job(&self, finish: JobFinish) -> Result<bool, StoreError> {
        self.call(move |c| jobs::finish_job(c, &finish)).await
    }

    /// A stored image's PNG bytes; None if there is no such image.
    async fn get_image(&self, job_id: &str, index: u32) -> Result<Option<Vec<u8>>, StoreError> {
        let job_id = job_id.to_owned();
        self.read(move |c, _| jobs::get_image(c, &job_id, index))
            .await
    }

    /// A job's images by index.
    async fn list_images(&self, job_id: &str) -> Result<Vec<StoredImage>, StoreError> {
        let job_id = job_id.to_owned();
        self.read(move |c, _| jobs::list_images(c, &job_id)).await
    }

    /// First moves pending/sending deliveries to gone URLs to `gone`; then leases up to `limit`
    /// due deliveries (pending and `next_attempt_at <= now_ms`, or sending with an expired
    /// lease, which keeps its id) in `next_attempt_at` order, setting `status = sending` and
    /// `lease_until = lease_until_ms`, and returns them with the job's secrets.
    async fn claim_due_deliveries(
        &self,
        now_ms: i64,
        lease_until_ms: i64,
        limit: u32,
    ) -> Result<Vec<DeliveryTask>, StoreError> {
        self.call_sealed(move |c, s| deliveries::claim_due(c, s, now_ms, lease_until_ms, limit))
            .await
    }

    /// Stores the attempt (always, counting it in `attempts_made`). If the delivery is still
    /// `sending`, bumps `round_attempts`, clears the lease and moves it per `attempt.next`
    /// (`RetryAt` → pending at that time; `Succeeded`/`Exhausted`/`Gone` → that status, no due
    /// time), sets `last_error` from the attempt's error, and for `Gone` marks the URL gone.
    /// A delivery that is no longer `sending` (redelivered meanwhile) keeps its state.
    ///
    /// Concurrent calls are committed together: each call queues its attempt, and whichever
    /// call gets the connection first writes everything queued in one transaction.
    async fn record_attempt(&self, attempt: AttemptRecord) -> Result<(), StoreError> {
        let (done, result) = oneshot::channel();
        self.pending_attempts
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push((attempt, done));
        let pending = Arc::clone(&self.pending_attempts);
        self.call(move |c| {
            let queued =
                std::mem::take(&mut *pending.lock().unwrap_or_else(PoisonError::into_inner));
            if queued.is_empty() {
                return Ok(());
            }
            let (batch, waiters): (Vec<_>, Vec<_>) = queued.into_iter().unzip();
            match deliveries::record_attempts(c, &batch) {
                Ok(results) => waiters.into_iter().zip(results).for_each(|(w, r)| {
                    let _ = w.send(r);
                }),
                Err(err) => {
                    let reason = err.to_string();
                    for waiter in waiters {
                        let _ = waiter.send(Err(StoreError::Batch(reason.clone())));
                    }
                }
            }
            Ok(())
        })
        .await?;
        result.await.map_err(|_| {
            StoreError::Task("the batch holding this attempt was dropped".to_owned())
        })?
    }

    /// The minimum of pending deliveries' `next_attempt_at` and sending ones' `lease_until`.
    async fn next_delivery_due(&self) -> Result<Option<i64>, StoreError> {
        self.read(|c, _| deliveries::next_due(c)).await
    }

    /// A job's deliveries, oldest first, each with its attempts oldest first.
    async fn list_deliveries(&self, job_id: &str) -> Result<Vec<DeliveryRecord>, StoreError> {
        let job_id = job_id.to_owned();
        self.read(move |c, _| deliveries::list(c, &job_id)).await
    }

    /// A delivery by id, with its attempts oldest first.
    async fn get_delivery(&self, delivery_id: &str) -> Result<Option<DeliveryRecord>, StoreError> {
        let id = delivery_id.to_owned();
        self.read(move |c, _| deliveries::get(c, &id)).await
    }

    /// Sets the delivery pending, due at `now_ms`, with `round_attempts = 0` and no lease,
    /// keeping its id and history; a delivery to a gone URL only when `force`, which removes
    /// the URL from the gone list.
    async fn redeliver(
        &self,
        delivery_id: &str,
        now_ms: i64,
        force: bool,
    ) -> Result<Redelivery, StoreError> {
        let id = delivery_id.to_owned();
        self.call(move |c| deliveries::redeliver(c, &id, now_ms, force))
            .await
    }
}
