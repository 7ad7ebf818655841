//! Durable storage of jobs, results and deliveries.
//!
//! [`Store`] is the one interface the rest of the service uses, so that PostgreSQL can be
//! added beside [`sqlite::SqliteStore`] for multi-replica deployments. Every method is one
//! transaction; [`Store::finish_job`] writes a job's result and its callbacks together (the
//! outbox), so a crash at any point leaves either both or neither.

mod codec;
pub mod postgres;
pub mod secrets;
pub mod sqlite;

use async_trait::async_trait;

use crate::domain::{
    ApiKeyRecord, AttemptRecord, DeliveryRecord, DeliveryTask, JobFinish, JobRecord, JobStatus,
    NewApiKey, NewJob, StoredImage,
};

/// What can go wrong in the store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database reported an error (its text: the store's backend types stay inside it).
    #[error("database error: {0}")]
    Database(String),
    /// A stored value could not be read back (a schema or encoding mismatch).
    #[error("corrupt stored value in {what}: {detail}")]
    Corrupt {
        /// Table and column.
        what: &'static str,
        /// What was wrong.
        detail: String,
    },
    /// The database file could not be opened or migrated.
    #[error("cannot open database {path}: {detail}")]
    Open {
        /// The file.
        path: String,
        /// Why.
        detail: String,
    },
    /// The transaction that held this write among others (a group commit) failed.
    #[error("database error in a batched commit: {0}")]
    Batch(String),
    /// The database did not answer in time (a held lock, a slow disk); try again shortly.
    #[error("the job store is busy: {0}")]
    Busy(String),
    /// The blocking task running the query panicked or was cancelled.
    #[error("store task failed: {0}")]
    Task(String),
}

/// Result of [`Store::insert_job`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Inserted {
    /// The job's id: the new one, or the earlier job's when deduplicated.
    pub id: String,
    /// True when the idempotency key matched an earlier job.
    pub deduplicated: bool,
    /// False when the key matched an earlier job of different content (the caller reused a
    /// key for another request); true otherwise.
    pub same_request: bool,
}

/// Durable storage of jobs, results and deliveries. Times are ms since the Unix epoch.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// Stores a queued job, or returns the earlier job of the same owner with the same
    /// idempotency key (keys are scoped per owner).
    async fn insert_job(&self, job: NewJob) -> Result<Inserted, StoreError>;

    /// Stores a job that is already finished (its ending written in the same transaction), so
    /// no dispatcher ever takes it; an idempotent twin is returned unchanged.
    async fn insert_finished_job(
        &self,
        job: NewJob,
        finish: JobFinish,
    ) -> Result<Inserted, StoreError>;

    /// A job by id.
    async fn get_job(&self, id: &str) -> Result<Option<JobRecord>, StoreError>;

    /// Takes the oldest queued job that no dispatcher holds (never dispatched, or dispatched by
    /// a replica whose lease on it ran out before `now_ms`) for `replica` until
    /// `lease_until_ms`, marking it dispatched at `now_ms`, and returns it. A job taken over
    /// from an expired lease starts over: queued again, its start and progress cleared. Its
    /// status stays queued until [`Store::mark_started`].
    async fn claim_next_job(
        &self,
        replica: &str,
        now_ms: i64,
        lease_until_ms: i64,
    ) -> Result<Option<JobRecord>, StoreError>;

    /// Extends `replica`'s lease on a job it claimed to `lease_until_ms`. False when the job
    /// has ended or another replica holds it now: the caller stops working on it.
    async fn renew_job_lease(
        &self,
        job_id: &str,
        replica: &str,
        lease_until_ms: i64,
    ) -> Result<bool, StoreError>;

    /// Puts back in the queue the dispatched or running jobs that no process can still be
    /// running, at start-up: with one process per store (SQLite) every one of them; with
    /// replicas sharing the store (PostgreSQL) those whose lease ran out before `now_ms`.
    /// Returns how many were requeued.
    async fn requeue_running_jobs(&self, now_ms: i64) -> Result<u64, StoreError>;

    /// Changes other processes sharing the store made, announced so that this one need not
    /// poll (PostgreSQL's LISTEN/NOTIFY). None for a store only this process writes.
    fn changes(&self) -> Option<tokio::sync::broadcast::Receiver<StoreChange>>;

    /// Records the job's place in the inference server's queue (its `Queued` event).
    async fn set_queue_position(&self, job_id: &str, position: u32) -> Result<(), StoreError>;

    /// Moves a queued job to running, its generation having started at `now_ms` (the first
    /// start counts; later parts of the job keep it). A final job is left unchanged.
    async fn mark_started(&self, job_id: &str, now_ms: i64) -> Result<(), StoreError>;

    /// Jobs of `owner` that have not finished, newest first, at most `limit`.
    async fn active_jobs(&self, owner: &str, limit: u32) -> Result<Vec<JobRecord>, StoreError>;

    /// How many jobs `owner` has in each status (statuses with none are left out).
    async fn count_jobs(&self, owner: &str) -> Result<Vec<(JobStatus, u64)>, StoreError>;

    /// Deletes jobs that finished before `cutoff_ms` and have no delivery still pending or in
    /// flight, with their images, deliveries and attempts (retention). Returns how many.
    async fn purge_finished(&self, cutoff_ms: i64) -> Result<u64, StoreError>;

    /// Checks that the store can take a write now (readiness); fails when it cannot.
    async fn ping(&self) -> Result<(), StoreError>;

    /// Stores a new API key.
    async fn insert_key(&self, key: NewApiKey) -> Result<(), StoreError>;

    /// The key whose SHA-256 is `hash`, revoked or not.
    async fn find_key(&self, hash: [u8; 32]) -> Result<Option<ApiKeyRecord>, StoreError>;

    /// Every key, oldest first.
    async fn list_keys(&self) -> Result<Vec<ApiKeyRecord>, StoreError>;

    /// Revokes the key with this id or name at `now_ms`; false if there is no such key that
    /// is still active.
    async fn revoke_key(&self, id_or_name: &str, now_ms: i64) -> Result<bool, StoreError>;

    /// Records sampling progress and the model running a job.
    async fn set_progress(
        &self,
        job_id: &str,
        step: u32,
        total: u32,
        model: &str,
    ) -> Result<(), StoreError>;

    /// Writes a job's final status, images and callbacks in one transaction. Does nothing and
    /// returns false if the job had already finished (for example, it was cancelled).
    async fn finish_job(&self, finish: JobFinish) -> Result<bool, StoreError>;

    /// A stored image's PNG bytes.
    async fn get_image(&self, job_id: &str, index: u32) -> Result<Option<Vec<u8>>, StoreError>;

    /// A job's images, in order.
    async fn list_images(&self, job_id: &str) -> Result<Vec<StoredImage>, StoreError>;

    /// Leases up to `limit` deliveries that are due at `now_ms` (pending and due, or sending
    /// with an expired lease) until `lease_until_ms`, and returns them. Deliveries to a URL
    /// marked gone are moved to `gone` instead of being returned.
    async fn claim_due_deliveries(
        &self,
        now_ms: i64,
        lease_until_ms: i64,
        limit: u32,
    ) -> Result<Vec<DeliveryTask>, StoreError>;

    /// Stores an attempt and moves its delivery to `attempt.next`; a `Gone` outcome also
    /// marks the URL gone.
    async fn record_attempt(&self, attempt: AttemptRecord) -> Result<(), StoreError>;

    /// The earliest time a pending delivery or an expired lease becomes due, if any.
    async fn next_delivery_due(&self) -> Result<Option<i64>, StoreError>;

    /// A job's deliveries with their attempts, oldest first.
    async fn list_deliveries(&self, job_id: &str) -> Result<Vec<DeliveryRecord>, StoreError>;

    /// A delivery by id, with its attempts.
    async fn get_delivery(&self, delivery_id: &str) -> Result<Option<DeliveryRecord>, StoreError>;

    /// Makes a delivery pending again, due at `now_ms`, with a fresh retry schedule and the
    /// same id. A delivery whose URL is marked gone (the receiver answered 410) is left alone
    /// unless `force`, which also clears the mark.
    async fn redeliver(
        &self,
        delivery_id: &str,
        now_ms: i64,
        force: bool,
    ) -> Result<Redelivery, StoreError>;
}

/// A change announced by [`Store::changes`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreChange {
    /// A job was queued (or put back in the queue): dispatchers look for work.
    JobQueued,
    /// This job changed (progress, start, end): its watchers re-read it.
    Job(String),
    /// Deliveries became due: delivery workers look for work.
    DeliveryDue,
}

/// What [`Store::redeliver`] did.
#[derive(Debug, Clone)]
pub enum Redelivery {
    /// No delivery has that id.
    NotFound,
    /// Its URL is marked gone and the redelivery was not forced: nothing changed.
    Gone(DeliveryRecord),
    /// It is pending again.
    Redelivered(DeliveryRecord),
}
