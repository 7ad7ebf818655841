//! [`Store`] for [`PostgresStore`]: each method takes a pooled connection, runs the query
//! module's function on it and is bounded by [`bounded`]. Queries are prepared once per
//! connection (`prepare_cached`).

use async_trait::async_trait;

use super::{PostgresStore, bounded, deliveries, jobs, keys, results};
use crate::domain::{
    ApiKeyRecord, AttemptRecord, DeliveryRecord, DeliveryTask, JobFinish, JobRecord, JobStatus,
    NewApiKey, NewJob, StoredImage,
};
use crate::store::{Inserted, Redelivery, Store, StoreChange, StoreError};

#[async_trait]
impl Store for PostgresStore {
    /// Inserts the job as queued and announces it; the UNIQUE idempotency key decides, inside
    /// the transaction, whether an earlier job is returned instead.
    async fn insert_job(&self, job: NewJob) -> Result<Inserted, StoreError> {
        bounded(async { jobs::insert_job(&mut self.client().await?, &self.secrets, &job).await })
            .await
    }

    /// Inserts the job and writes its ending in one transaction.
    async fn insert_finished_job(
        &self,
        job: NewJob,
        finish: JobFinish,
    ) -> Result<Inserted, StoreError> {
        bounded(async {
            let mut client = self.client().await?;
            jobs::insert_finished_job(&mut client, &self.secrets, &job, &finish).await
        })
        .await
    }

    /// A job by id, with its image count.
    async fn get_job(&self, id: &str) -> Result<Option<JobRecord>, StoreError> {
        bounded(async { jobs::get_job(&self.client().await?, &self.secrets, id).await }).await
    }

    /// Takes the oldest claimable job `FOR UPDATE SKIP LOCKED` and announces the change.
    async fn claim_next_job(
        &self,
        replica: &str,
        now_ms: i64,
        lease_until_ms: i64,
    ) -> Result<Option<JobRecord>, StoreError> {
        bounded(async {
            let mut client = self.client().await?;
            jobs::claim_next_job(&mut client, &self.secrets, replica, now_ms, lease_until_ms).await
        })
        .await
    }

    /// Extends the lease when `replica` still holds the unfinished job.
    async fn renew_job_lease(
        &self,
        job_id: &str,
        replica: &str,
        lease_until_ms: i64,
    ) -> Result<bool, StoreError> {
        bounded(async {
            jobs::renew_job_lease(&self.client().await?, job_id, replica, lease_until_ms).await
        })
        .await
    }

    /// Replicas share the database: only jobs whose lease ran out before `now_ms` (or that have
    /// none) go back to the queue; the others are running elsewhere.
    async fn requeue_running_jobs(&self, now_ms: i64) -> Result<u64, StoreError> {
        bounded(async { jobs::requeue_running_jobs(&mut self.client().await?, now_ms).await }).await
    }

    /// Every replica's writes, heard through LISTEN/NOTIFY (this store's own included).
    fn changes(&self) -> Option<tokio::sync::broadcast::Receiver<StoreChange>> {
        Some(self.changes.subscribe())
    }

    /// Sets `queue_position` of a queued job.
    async fn set_queue_position(&self, job_id: &str, position: u32) -> Result<(), StoreError> {
        bounded(async { jobs::set_queue_position(&self.client().await?, job_id, position).await })
            .await
    }

    /// Queued → running at `now_ms`; a running job keeps its first `started_at`.
    async fn mark_started(&self, job_id: &str, now_ms: i64) -> Result<(), StoreError> {
        bounded(async { jobs::mark_started(&self.client().await?, job_id, now_ms).await }).await
    }

    /// Queued and running jobs of `owner`, newest first.
    async fn active_jobs(&self, owner: &str, limit: u32) -> Result<Vec<JobRecord>, StoreError> {
        bounded(async {
            jobs::active_jobs(&self.client().await?, &self.secrets, owner, limit).await
        })
        .await
    }

    /// `owner`'s jobs per status.
    async fn count_jobs(&self, owner: &str) -> Result<Vec<(JobStatus, u64)>, StoreError> {
        bounded(async { jobs::count_jobs(&self.client().await?, owner).await }).await
    }

    /// One `DELETE` on `jobs`; the foreign keys cascade to images, deliveries and attempts.
    async fn purge_finished(&self, cutoff_ms: i64) -> Result<u64, StoreError> {
        bounded(async { results::purge_finished(&self.client().await?, cutoff_ms).await }).await
    }

    /// Opens a transaction that takes the lock every write takes on `jobs` (ROW EXCLUSIVE,
    /// which only a schema change or an explicit table lock holds against it) within a short
    /// timeout, and rolls it back: a standby or read-only database, a held table lock or an
    /// unreachable server fail it.
    async fn ping(&self) -> Result<(), StoreError> {
        bounded(async {
            let mut client = self.client().await?;
            let tx = client.transaction().await?;
            tx.batch_execute(&format!(
                "SET LOCAL statement_timeout = '{}'; SET LOCAL lock_timeout = '{}'; \
                 LOCK TABLE jobs IN ROW EXCLUSIVE MODE",
                super::PING_TIMEOUT,
                super::PING_TIMEOUT
            ))
            .await?;
            tx.query_one("SELECT 1", &[]).await?;
            tx.rollback().await?;
            Ok(())
        })
        .await
    }

    /// Inserts into `api_keys`.
    async fn insert_key(&self, key: NewApiKey) -> Result<(), StoreError> {
        bounded(async { keys::insert(&self.client().await?, &self.secrets, &key).await }).await
    }

    /// Looks a key up by its SHA-256.
    async fn find_key(&self, hash: [u8; 32]) -> Result<Option<ApiKeyRecord>, StoreError> {
        bounded(async { keys::find(&self.client().await?, &self.secrets, &hash).await }).await
    }

    /// Every key, oldest first.
    async fn list_keys(&self) -> Result<Vec<ApiKeyRecord>, StoreError> {
        bounded(async { keys::list(&self.client().await?, &self.secrets).await }).await
    }

    /// Sets `revoked_at` of the active key with this id or name.
    async fn revoke_key(&self, id_or_name: &str, now_ms: i64) -> Result<bool, StoreError> {
        bounded(async { keys::revoke(&self.client().await?, id_or_name, now_ms).await }).await
    }

    /// Stores progress and model for a job that is not final, and announces the change.
    async fn set_progress(
        &self,
        job_id: &str,
        step: u32,
        total: u32,
        model: &str,
    ) -> Result<(), StoreError> {
        bounded(async {
            jobs::set_progress(&self.client().await?, job_id, step, total, model).await
        })
        .await
    }

    /// In one transaction: final status, images and deliveries (pending, due at
    /// `finished_at_ms`); false, writing nothing, if the job was already final.
    async fn finish_job(&self, finish: JobFinish) -> Result<bool, StoreError> {
        bounded(async { results::finish_job(&mut self.client().await?, &finish).await }).await
    }

    /// A stored image's PNG bytes; None if there is no such image.
    async fn get_image(&self, job_id: &str, index: u32) -> Result<Option<Vec<u8>>, StoreError> {
        bounded(async { results::get_image(&self.client().await?, job_id, index).await }).await
    }

    /// A job's images by index.
    async fn list_images(&self, job_id: &str) -> Result<Vec<StoredImage>, StoreError> {
        bounded(async { results::list_images(&self.client().await?, job_id).await }).await
    }

    /// Moves deliveries to gone URLs to `gone`, then leases due ones `FOR UPDATE SKIP LOCKED`.
    async fn claim_due_deliveries(
        &self,
        now_ms: i64,
        lease_until_ms: i64,
        limit: u32,
    ) -> Result<Vec<DeliveryTask>, StoreError> {
        bounded(async {
            let mut client = self.client().await?;
            deliveries::claim_due(&mut client, &self.secrets, now_ms, lease_until_ms, limit).await
        })
        .await
    }

    /// Stores the attempt and moves a still-sending delivery per `attempt.next`, in one
    /// transaction (the pool lets concurrent attempts commit in parallel, so there is no
    /// group commit as in SQLite).
    async fn record_attempt(&self, attempt: AttemptRecord) -> Result<(), StoreError> {
        bounded(async { deliveries::record_attempt(&mut self.client().await?, &attempt).await })
            .await
    }

    /// The minimum of pending deliveries' `next_attempt_at` and sending ones' `lease_until`.
    async fn next_delivery_due(&self) -> Result<Option<i64>, StoreError> {
        bounded(async { deliveries::next_due(&self.client().await?).await }).await
    }

    /// A job's deliveries, oldest first, each with its attempts oldest first.
    async fn list_deliveries(&self, job_id: &str) -> Result<Vec<DeliveryRecord>, StoreError> {
        bounded(async { deliveries::list(&self.client().await?, job_id).await }).await
    }

    /// A delivery by id, with its attempts oldest first.
    async fn get_delivery(&self, delivery_id: &str) -> Result<Option<DeliveryRecord>, StoreError> {
        bounded(async { deliveries::get(&self.client().await?, delivery_id).await }).await
    }

    /// Sets the delivery pending, due at `now_ms`, with a fresh round and no lease; a delivery
    /// to a gone URL only when `force`, which clears the mark. Announces deliveries due.
    async fn redeliver(
        &self,
        delivery_id: &str,
        now_ms: i64,
        force: bool,
    ) -> Result<Redelivery, StoreError> {
        bounded(async {
            deliveries::redeliver(&mut self.client().await?, delivery_id, now_ms, force).await
        })
        .await
    }
}
