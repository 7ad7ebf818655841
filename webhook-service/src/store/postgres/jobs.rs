//! Job queries: submission, the queue and its leases, progress. Each function is one transaction (or one statement); the
//! [`Store`](crate::store::Store) methods document the contract. Writes that queue or change a
//! job announce it with `pg_notify` in the same transaction (see [`super::listen`]), which
//! PostgreSQL delivers at commit, so a listener never hears of a write it cannot yet read.

use deadpool_postgres::GenericClient;

use super::listen::{JOB_QUEUED, job_payload, notify};
use super::results::finish_job_in;
use super::rows::col;
use crate::domain::{JobFinish, JobRecord, JobStatus, NewJob};
use crate::store::codec::{
    Columns, JOB_COLUMNS, JOB_INSERT_COLUMNS, JobValues, job_from_row, parsed,
};
use crate::store::secrets::SecretBox;
use crate::store::{Inserted, StoreError};

/// Inserts a queued job, or returns the earlier job of the same owner with the same
/// idempotency key. `ON CONFLICT DO NOTHING` on the UNIQUE key decides: a concurrent insert of
/// the same key waits for the first to commit, then does nothing, so only one job is created.
pub(super) async fn insert_job(
    client: &mut deadpool_postgres::Client,
    secrets: &SecretBox,
    job: &NewJob,
) -> Result<Inserted, StoreError> {
    let tx = client.transaction().await?;
    let inserted = insert_job_in(&tx, secrets, job).await?;
    if !inserted.deduplicated {
        notify(&tx, JOB_QUEUED).await?;
    }
    tx.commit().await?;
    Ok(inserted)
}

/// Inserts a job and writes its ending in the same transaction: nobody ever sees it queued,
/// so no dispatcher runs it. A deduplicated job is returned as it is, without a second ending.
pub(super) async fn insert_finished_job(
    client: &mut deadpool_postgres::Client,
    secrets: &SecretBox,
    job: &NewJob,
    finish: &JobFinish,
) -> Result<Inserted, StoreError> {
    let tx = client.transaction().await?;
    let inserted = insert_job_in(&tx, secrets, job).await?;
    if !inserted.deduplicated {
        finish_job_in(&tx, finish).await?;
    }
    tx.commit().await?;
    Ok(inserted)
}

async fn insert_job_in(
    tx: &impl GenericClient,
    secrets: &SecretBox,
    job: &NewJob,
) -> Result<Inserted, StoreError> {
    let v = JobValues::new(job, secrets)?;
    let insert = tx
        .prepare_cached(&format!(
            "INSERT INTO jobs ({JOB_INSERT_COLUMNS}) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15) \
             ON CONFLICT (idempotency_key) DO NOTHING"
        ))
        .await?;
    let added = tx
        .execute(
            &insert,
            &[
                &v.id,
                &v.idempotency_key,
                &v.params,
                &v.webhook_url,
                &v.webhook_secret,
                &v.signing_secret,
                &v.format,
                &v.events,
                &v.vendor_context,
                &v.status,
                &v.created_at,
                &v.owner,
                &v.extra_parts,
                &v.execution_timeout_ms,
                &v.request_hash.as_slice(),
            ],
        )
        .await?;
    if added == 1 {
        return Ok(Inserted {
            id: job.id.clone(),
            deduplicated: false,
            same_request: true,
        });
    }
    let select = tx
        .prepare_cached("SELECT id, request_hash FROM jobs WHERE idempotency_key = $1")
        .await?;
    let row = tx.query_one(&select, &[&v.idempotency_key]).await?;
    Ok(Inserted {
        id: row.text(0, "jobs.id")?,
        deduplicated: true,
        same_request: v.same_request(row.opt_bytes(1, "jobs.request_hash")?.as_deref()),
    })
}

/// A job by id.
pub(super) async fn get_job(
    client: &impl GenericClient,
    secrets: &SecretBox,
    id: &str,
) -> Result<Option<JobRecord>, StoreError> {
    let stmt = client
        .prepare_cached(&format!("SELECT {JOB_COLUMNS} FROM jobs WHERE id = $1"))
        .await?;
    client
        .query_opt(&stmt, &[&id])
        .await?
        .map(|row| job_from_row(&row, secrets))
        .transpose()
}

/// Takes the oldest claimable job for `replica` (the SQLite store's rule: never dispatched, or
/// dispatched by another replica whose lease ran out before `now_ms`), resetting it to queued
/// with its start and progress cleared. `FOR UPDATE SKIP LOCKED` makes concurrent replicas
/// pass over a row another one is taking instead of both taking it (or waiting for it).
pub(super) async fn claim_next_job(
    client: &mut deadpool_postgres::Client,
    secrets: &SecretBox,
    replica: &str,
    now_ms: i64,
    lease_until_ms: i64,
) -> Result<Option<JobRecord>, StoreError> {
    let tx = client.transaction().await?;
    // A replica never takes over its own lease: while it lives it knows whether it still runs
    // the job (a test's manual clock may jump past the lease while it does).
    let claim = tx
        .prepare_cached(
            "WITH next AS ( \
               SELECT id FROM jobs \
               WHERE (status = 'queued' AND dispatched_at IS NULL) \
                  OR (status IN ('queued', 'running') AND dispatched_at IS NOT NULL \
                      AND lease_until < $1 AND claimed_by IS DISTINCT FROM $2) \
               ORDER BY created_at, seq LIMIT 1 \
               FOR UPDATE SKIP LOCKED) \
             UPDATE jobs SET status = 'queued', dispatched_at = $1, claimed_by = $2, \
               lease_until = $3, started_at = NULL, queue_position = NULL, progress_step = 0 \
             FROM next WHERE jobs.id = next.id \
             RETURNING jobs.id",
        )
        .await?;
    let Some(row) = tx
        .query_opt(&claim, &[&now_ms, &replica, &lease_until_ms])
        .await?
    else {
        return Ok(None);
    };
    let id: String = col(&row, 0, "jobs.id")?;
    let job = get_job(&tx, secrets, &id).await?;
    notify(&tx, &job_payload(&id)).await?;
    tx.commit().await?;
    Ok(job)
}

/// Extends `replica`'s lease on a job it holds; false when the job ended or another replica
/// holds it.
pub(super) async fn renew_job_lease(
    client: &impl GenericClient,
    job_id: &str,
    replica: &str,
    lease_until_ms: i64,
) -> Result<bool, StoreError> {
    let stmt = client
        .prepare_cached(
            "UPDATE jobs SET lease_until = $3 WHERE id = $1 AND claimed_by = $2 \
             AND status IN ('queued', 'running')",
        )
        .await?;
    let n = client
        .execute(&stmt, &[&job_id, &replica, &lease_until_ms])
        .await?;
    Ok(n == 1)
}

/// Puts back in the queue the dispatched or running jobs whose lease ran out before `now_ms`
/// (or that have none), clearing dispatch, start, lease and progress. Jobs under a live lease
/// are left alone: another replica is running them.
pub(super) async fn requeue_running_jobs(
    client: &mut deadpool_postgres::Client,
    now_ms: i64,
) -> Result<u64, StoreError> {
    let tx = client.transaction().await?;
    let stmt = tx
        .prepare_cached(
            "UPDATE jobs SET status = 'queued', started_at = NULL, dispatched_at = NULL, \
             claimed_by = NULL, lease_until = NULL, queue_position = NULL, progress_step = 0 \
             WHERE (status = 'running' OR (status = 'queued' AND dispatched_at IS NOT NULL)) \
             AND (lease_until IS NULL OR lease_until < $1) \
             RETURNING id",
        )
        .await?;
    let rows = tx.query(&stmt, &[&now_ms]).await?;
    if !rows.is_empty() {
        notify(&tx, JOB_QUEUED).await?;
        for row in &rows {
            let id: String = col(row, 0, "jobs.id")?;
            notify(&tx, &job_payload(&id)).await?;
        }
    }
    tx.commit().await?;
    Ok(rows.len() as u64)
}

/// Runs a single `UPDATE jobs ... RETURNING id` and announces the job when it changed, in one
/// statement (so in one transaction: the notification goes out only if the update commits).
async fn update_and_announce(
    client: &impl GenericClient,
    update: &str,
    params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
) -> Result<(), StoreError> {
    let stmt = client
        .prepare_cached(&format!(
            "WITH changed AS ({update} RETURNING id) \
             SELECT pg_notify('{}', 'job:' || id) FROM changed",
            super::listen::CHANNEL
        ))
        .await?;
    client.execute(&stmt, params).await?;
    Ok(())
}

/// Records the inference server's queue position of a queued job.
pub(super) async fn set_queue_position(
    client: &impl GenericClient,
    job_id: &str,
    position: u32,
) -> Result<(), StoreError> {
    update_and_announce(
        client,
        "UPDATE jobs SET queue_position = $2 WHERE id = $1 AND status = 'queued'",
        &[&job_id, &i64::from(position)],
    )
    .await
}

/// Queued → running with `started_at = now_ms`; a running job keeps its first start.
pub(super) async fn mark_started(
    client: &impl GenericClient,
    job_id: &str,
    now_ms: i64,
) -> Result<(), StoreError> {
    update_and_announce(
        client,
        "UPDATE jobs SET status = 'running', started_at = COALESCE(started_at, $2), \
         queue_position = NULL WHERE id = $1 AND status IN ('queued', 'running')",
        &[&job_id, &now_ms],
    )
    .await
}

/// Records progress and model of a job that has not finished.
pub(super) async fn set_progress(
    client: &impl GenericClient,
    job_id: &str,
    step: u32,
    total: u32,
    model: &str,
) -> Result<(), StoreError> {
    update_and_announce(
        client,
        "UPDATE jobs SET progress_step = $2, progress_total = $3, model = $4 \
         WHERE id = $1 AND status IN ('queued', 'running')",
        &[&job_id, &i64::from(step), &i64::from(total), &model],
    )
    .await
}

/// Unfinished jobs of `owner`, newest first.
pub(super) async fn active_jobs(
    client: &impl GenericClient,
    secrets: &SecretBox,
    owner: &str,
    limit: u32,
) -> Result<Vec<JobRecord>, StoreError> {
    let stmt = client
        .prepare_cached(&format!(
            "SELECT {JOB_COLUMNS} FROM jobs WHERE owner = $1 AND status IN ('queued', 'running') \
             ORDER BY created_at DESC, seq DESC LIMIT $2"
        ))
        .await?;
    client
        .query(&stmt, &[&owner, &i64::from(limit)])
        .await?
        .iter()
        .map(|row| job_from_row(row, secrets))
        .collect()
}

/// Jobs of `owner` per status.
pub(super) async fn count_jobs(
    client: &impl GenericClient,
    owner: &str,
) -> Result<Vec<(JobStatus, u64)>, StoreError> {
    let stmt = client
        .prepare_cached("SELECT status, COUNT(*) FROM jobs WHERE owner = $1 GROUP BY status")
        .await?;
    let mut counts = Vec::new();
    for row in client.query(&stmt, &[&owner]).await? {
        let status: JobStatus = parsed(&row, 0, "jobs.status")?;
        let n = row.int(1, "jobs.status")?;
        counts.push((status, n.max(0) as u64));
    }
    Ok(counts)
}
