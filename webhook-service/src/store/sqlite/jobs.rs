//! Job and image queries. Each function is one transaction (or one statement) on the store's
//! connection; the [`Store`](crate::store::Store) methods document the contract.

use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};

use super::rows::col;
use crate::domain::{DeliveryStatus, JobFinish, JobRecord, JobStatus, NewJob, StoredImage};
use crate::store::codec::{
    Columns, IMAGE_COLUMNS, JOB_COLUMNS, JOB_INSERT_COLUMNS, JobValues, image_from_row,
    job_from_row, parsed,
};
use crate::store::secrets::SecretBox;
use crate::store::{Inserted, StoreError};

/// Inserts a queued job. An idempotency key already in use makes the insert do nothing (the
/// UNIQUE constraint decides, inside the transaction, so concurrent writers cannot both win)
/// and the earlier job's id is returned instead. Its secrets are stored sealed with `secrets`.
pub(super) fn insert_job(
    conn: &mut Connection,
    secrets: &SecretBox,
    job: &NewJob,
) -> Result<Inserted, StoreError> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let inserted = insert_job_in(&tx, secrets, job)?;
    tx.commit()?;
    Ok(inserted)
}

/// Inserts a job and writes its ending in the same transaction: a job answered at once (an
/// A1111 API call through RunPod's envelope) is never seen queued, so no dispatcher runs it.
/// A deduplicated job is returned as it is, without a second ending.
pub(super) fn insert_finished_job(
    conn: &mut Connection,
    secrets: &SecretBox,
    job: &NewJob,
    finish: &JobFinish,
) -> Result<Inserted, StoreError> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let inserted = insert_job_in(&tx, secrets, job)?;
    if !inserted.deduplicated {
        finish_job_in(&tx, finish)?;
    }
    tx.commit()?;
    Ok(inserted)
}

fn insert_job_in(
    tx: &rusqlite::Transaction<'_>,
    secrets: &SecretBox,
    job: &NewJob,
) -> Result<Inserted, StoreError> {
    let v = JobValues::new(job, secrets)?;
    let added = tx
        .prepare_cached(&format!(
            "INSERT INTO jobs ({JOB_INSERT_COLUMNS}) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15) \
             ON CONFLICT (idempotency_key) DO NOTHING"
        ))?
        .execute(params![
            v.id,
            v.idempotency_key,
            v.params,
            v.webhook_url,
            v.webhook_secret,
            v.signing_secret,
            v.format,
            v.events,
            v.vendor_context,
            v.status,
            v.created_at,
            v.owner,
            v.extra_parts,
            v.execution_timeout_ms,
            v.request_hash.as_slice(),
        ])?;
    let inserted = if added == 1 {
        Inserted {
            id: job.id.clone(),
            deduplicated: false,
            same_request: true,
        }
    } else {
        let (id, earlier): (String, Option<Vec<u8>>) = tx
            .prepare_cached("SELECT id, request_hash FROM jobs WHERE idempotency_key = ?1")?
            .query_row([&v.idempotency_key], |row| Ok((row.get(0)?, row.get(1)?)))?;
        Inserted {
            id,
            deduplicated: true,
            same_request: v.same_request(earlier.as_deref()),
        }
    };
    Ok(inserted)
}

/// A job by id.
pub(super) fn get_job(
    conn: &Connection,
    secrets: &SecretBox,
    id: &str,
) -> Result<Option<JobRecord>, StoreError> {
    let mut stmt = conn.prepare_cached(&format!("SELECT {JOB_COLUMNS} FROM jobs WHERE id = ?1"))?;
    let mut rows = stmt.query([id])?;
    rows.next()?
        .map(|row| job_from_row(row, secrets))
        .transpose()
}

/// Marks the oldest undispatched queued job (by `created_at`, then insertion order) dispatched
/// at `now_ms`, and returns it; it stays queued until its generation starts.
pub(super) fn claim_next_job(
    conn: &mut Connection,
    secrets: &SecretBox,
    replica: &str,
    now_ms: i64,
    lease_until_ms: i64,
) -> Result<Option<JobRecord>, StoreError> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    // A job whose lease ran out starts over: queued, its start and progress cleared. A
    // replica never takes over its own lease: while it lives it knows whether it still runs
    // the job (a test's manual clock may jump past the lease while it does).
    let id: Option<String> = tx
        .prepare_cached(
            "UPDATE jobs SET status = 'queued', dispatched_at = ?1, claimed_by = ?2, lease_until = ?3, \
             started_at = NULL, queue_position = NULL, progress_step = 0 WHERE id = \
             (SELECT id FROM jobs WHERE (status = 'queued' AND dispatched_at IS NULL) \
                 OR (status IN ('queued', 'running') AND dispatched_at IS NOT NULL \
                     AND lease_until < ?1 AND claimed_by IS NOT ?2) \
              ORDER BY created_at, rowid LIMIT 1) \
             RETURNING id",
        )?
        .query_row(rusqlite::params![now_ms, replica, lease_until_ms], |row| row.get(0))
        .optional()?;
    let job = match id {
        Some(id) => get_job(&tx, secrets, &id)?,
        None => None,
    };
    tx.commit()?;
    Ok(job)
}

/// Extends `replica`'s lease on a job it holds; false when the job ended or is held by
/// another replica.
pub(super) fn renew_job_lease(
    conn: &Connection,
    job_id: &str,
    replica: &str,
    lease_until_ms: i64,
) -> Result<bool, StoreError> {
    let n = conn
        .prepare_cached(
            "UPDATE jobs SET lease_until = ?3 WHERE id = ?1 AND claimed_by = ?2 \
             AND status IN ('queued', 'running')",
        )?
        .execute(rusqlite::params![job_id, replica, lease_until_ms])?;
    Ok(n == 1)
}

/// Puts every dispatched or running job back in the queue, clearing its dispatch and start
/// times, lease and progress (it will start over). Returns how many were requeued.
pub(super) fn requeue_running_jobs(conn: &Connection) -> Result<u64, StoreError> {
    let n = conn
        .prepare_cached(
            "UPDATE jobs SET status = 'queued', started_at = NULL, dispatched_at = NULL, \
             claimed_by = NULL, lease_until = NULL, queue_position = NULL, progress_step = 0 \
             WHERE status = 'running' OR (status = 'queued' AND dispatched_at IS NOT NULL)",
        )?
        .execute([])?;
    Ok(n as u64)
}

/// Records the inference server's queue position of a queued job.
pub(super) fn set_queue_position(
    conn: &Connection,
    job_id: &str,
    position: u32,
) -> Result<(), StoreError> {
    conn.prepare_cached("UPDATE jobs SET queue_position = ?2 WHERE id = ?1 AND status = 'queued'")?
        .execute(params![job_id, position])?;
    Ok(())
}

/// Queued → running with `started_at = now_ms`; a running job keeps its first start.
pub(super) fn mark_started(conn: &Connection, job_id: &str, now_ms: i64) -> Result<(), StoreError> {
    conn.prepare_cached(
        "UPDATE jobs SET status = 'running', started_at = COALESCE(started_at, ?2), \
         queue_position = NULL WHERE id = ?1 AND status IN ('queued', 'running')",
    )?
    .execute(params![job_id, now_ms])?;
    Ok(())
}

/// Unfinished jobs of `owner`, newest first.
pub(super) fn active_jobs(
    conn: &Connection,
    secrets: &SecretBox,
    owner: &str,
    limit: u32,
) -> Result<Vec<JobRecord>, StoreError> {
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT {JOB_COLUMNS} FROM jobs WHERE owner = ?1 AND status IN ('queued', 'running') \
         ORDER BY created_at DESC, rowid DESC LIMIT ?2"
    ))?;
    let mut rows = stmt.query(params![owner, limit])?;
    let mut jobs = Vec::new();
    while let Some(row) = rows.next()? {
        jobs.push(job_from_row(row, secrets)?);
    }
    Ok(jobs)
}

/// Jobs of `owner` per status.
pub(super) fn count_jobs(
    conn: &Connection,
    owner: &str,
) -> Result<Vec<(JobStatus, u64)>, StoreError> {
    let mut stmt =
        conn.prepare_cached("SELECT status, COUNT(*) FROM jobs WHERE owner = ?1 GROUP BY status")?;
    let mut rows = stmt.query([owner])?;
    let mut counts = Vec::new();
    while let Some(row) = rows.next()? {
        let status: JobStatus = parsed(row, 0, "jobs.status")?;
        let n = row.int(1, "jobs.status")?;
        counts.push((status, n.max(0) as u64));
    }
    Ok(counts)
}

/// Records progress and model of a job that has not finished; a finished or unknown job is left
/// unchanged.
pub(super) fn set_progress(
    conn: &Connection,
    job_id: &str,
    step: u32,
    total: u32,
    model: &str,
) -> Result<(), StoreError> {
    conn.prepare_cached(
        "UPDATE jobs SET progress_step = ?2, progress_total = ?3, model = ?4 \
         WHERE id = ?1 AND status IN ('queued', 'running')",
    )?
    .execute(params![job_id, step, total, model])?;
    Ok(())
}

/// Writes a job's final state, images and deliveries in one transaction. Returns false, writing
/// nothing, when the job is unknown or already final. Deliveries start pending, due at the
/// job's `finished_at`, with no attempts. `finish.started_at_ms` of None keeps the stored start.
pub(super) fn finish_job(conn: &mut Connection, finish: &JobFinish) -> Result<bool, StoreError> {
    if !finish.status.is_final() {
        return Err(StoreError::Corrupt {
            what: "jobs.status",
            detail: format!("finish_job needs a final status, not {}", finish.status),
        });
    }
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let written = finish_job_in(&tx, finish)?;
    if written {
        tx.commit()?;
    }
    Ok(written)
}

fn finish_job_in(tx: &rusqlite::Transaction<'_>, finish: &JobFinish) -> Result<bool, StoreError> {
    let changed = tx
        .prepare_cached(
            "UPDATE jobs SET status = ?2, error = ?3, finished_at = ?4, \
             started_at = COALESCE(?5, started_at), info_json = ?6 \
             WHERE id = ?1 AND status IN ('queued', 'running')",
        )?
        .execute(params![
            finish.job_id,
            finish.status.as_str(),
            finish.error,
            finish.finished_at_ms,
            finish.started_at_ms,
            finish.info_json,
        ])?;
    if changed == 0 {
        return Ok(false); // the caller's transaction rolls back (nothing was written anyway)
    }
    {
        let mut image = tx.prepare_cached(
            "INSERT INTO images (job_id, idx, seed, infotext, png) VALUES (?1, ?2, ?3, ?4, ?5)",
        )?;
        for img in &finish.images {
            image.execute(params![
                finish.job_id,
                img.index,
                img.seed,
                img.infotext,
                img.png
            ])?;
        }
        let mut delivery = tx.prepare_cached(
            "INSERT INTO deliveries (id, job_id, event, url, payload, status, attempts_made, \
             round_attempts, next_attempt_at, created_at, updated_at) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, 0, 0, ?7, ?7, ?7)",
        )?;
        for d in &finish.deliveries {
            delivery.execute(params![
                d.id,
                finish.job_id,
                d.event.as_str(),
                d.url,
                d.payload,
                DeliveryStatus::Pending.as_str(),
                finish.finished_at_ms,
            ])?;
        }
    }
    Ok(true)
}

/// A stored image's PNG bytes.
pub(super) fn get_image(
    conn: &Connection,
    job_id: &str,
    index: u32,
) -> Result<Option<Vec<u8>>, StoreError> {
    let mut stmt = conn.prepare_cached("SELECT png FROM images WHERE job_id = ?1 AND idx = ?2")?;
    let mut rows = stmt.query(params![job_id, index])?;
    rows.next()?
        .map(|row| col(row, 0, "images.png"))
        .transpose()
}

/// A job's images, by index.
pub(super) fn list_images(conn: &Connection, job_id: &str) -> Result<Vec<StoredImage>, StoreError> {
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT {IMAGE_COLUMNS} FROM images WHERE job_id = ?1 ORDER BY idx"
    ))?;
    let mut rows = stmt.query([job_id])?;
    let mut images = Vec::new();
    while let Some(row) = rows.next()? {
        images.push(image_from_row(row)?);
    }
    Ok(images)
}

/// Deletes finished jobs older than `cutoff_ms` whose deliveries are all settled; the
/// foreign keys (ON DELETE CASCADE) remove their images, deliveries and attempts.
pub(super) fn purge_finished(conn: &Connection, cutoff_ms: i64) -> Result<u64, StoreError> {
    let n = conn
        .prepare_cached(
            "DELETE FROM jobs WHERE status IN ('completed', 'failed', 'canceled', 'timed_out') \
             AND finished_at < ?1 AND NOT EXISTS (SELECT 1 FROM deliveries d \
             WHERE d.job_id = jobs.id AND d.status IN ('pending', 'sending'))",
        )?
        .execute([cutoff_ms])?;
    Ok(n as u64)
}
