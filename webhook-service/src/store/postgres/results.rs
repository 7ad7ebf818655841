//! A job's ending and what it leaves behind: its final state, images and deliveries written
//! in one transaction (the outbox), reading the images back, and retention. The
//! [`Store`](crate::store::Store) methods document the contract.

use deadpool_postgres::GenericClient;

use super::listen::{DELIVERY_DUE, job_payload, notify};
use super::rows::col;
use crate::domain::{DeliveryStatus, JobFinish, StoredImage};
use crate::store::StoreError;
use crate::store::codec::{IMAGE_COLUMNS, image_from_row};

/// Refuses a non-final status: finishing means reaching one.
fn check_final(finish: &JobFinish) -> Result<(), StoreError> {
    if finish.status.is_final() {
        return Ok(());
    }
    Err(StoreError::Corrupt {
        what: "jobs.status",
        detail: format!("finish_job needs a final status, not {}", finish.status),
    })
}

/// Writes a job's final state, images and deliveries in one transaction. Returns false,
/// writing nothing, when the job is unknown or already final.
pub(super) async fn finish_job(
    client: &mut deadpool_postgres::Client,
    finish: &JobFinish,
) -> Result<bool, StoreError> {
    check_final(finish)?;
    let tx = client.transaction().await?;
    let written = finish_job_in(&tx, finish).await?;
    if written {
        tx.commit().await?;
    }
    Ok(written)
}

pub(super) async fn finish_job_in(
    tx: &impl GenericClient,
    finish: &JobFinish,
) -> Result<bool, StoreError> {
    let update = tx
        .prepare_cached(
            "UPDATE jobs SET status = $2, error = $3, finished_at = $4, \
             started_at = COALESCE($5, started_at), info_json = $6 \
             WHERE id = $1 AND status IN ('queued', 'running')",
        )
        .await?;
    let changed = tx
        .execute(
            &update,
            &[
                &finish.job_id,
                &finish.status.as_str(),
                &finish.error,
                &finish.finished_at_ms,
                &finish.started_at_ms,
                &finish.info_json,
            ],
        )
        .await?;
    if changed == 0 {
        return Ok(false); // the caller's transaction rolls back (nothing was written anyway)
    }
    let image = tx
        .prepare_cached(
            "INSERT INTO images (job_id, idx, seed, infotext, png) VALUES ($1, $2, $3, $4, $5)",
        )
        .await?;
    for img in &finish.images {
        tx.execute(
            &image,
            &[
                &finish.job_id,
                &i64::from(img.index),
                &img.seed,
                &img.infotext,
                &img.png,
            ],
        )
        .await?;
    }
    let delivery = tx
        .prepare_cached(
            "INSERT INTO deliveries (id, job_id, event, url, payload, status, attempts_made, \
             round_attempts, next_attempt_at, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $6, 0, 0, $7, $7, $7)",
        )
        .await?;
    for d in &finish.deliveries {
        tx.execute(
            &delivery,
            &[
                &d.id,
                &finish.job_id,
                &d.event.as_str(),
                &d.url,
                &d.payload,
                &DeliveryStatus::Pending.as_str(),
                &finish.finished_at_ms,
            ],
        )
        .await?;
    }
    notify(tx, &job_payload(&finish.job_id)).await?;
    if !finish.deliveries.is_empty() {
        notify(tx, DELIVERY_DUE).await?;
    }
    Ok(true)
}

/// A stored image's PNG bytes.
pub(super) async fn get_image(
    client: &impl GenericClient,
    job_id: &str,
    index: u32,
) -> Result<Option<Vec<u8>>, StoreError> {
    let stmt = client
        .prepare_cached("SELECT png FROM images WHERE job_id = $1 AND idx = $2")
        .await?;
    client
        .query_opt(&stmt, &[&job_id, &i64::from(index)])
        .await?
        .map(|row| col(&row, 0, "images.png"))
        .transpose()
}

/// A job's images, by index.
pub(super) async fn list_images(
    client: &impl GenericClient,
    job_id: &str,
) -> Result<Vec<StoredImage>, StoreError> {
    let stmt = client
        .prepare_cached(&format!(
            "SELECT {IMAGE_COLUMNS} FROM images WHERE job_id = $1 ORDER BY idx"
        ))
        .await?;
    client
        .query(&stmt, &[&job_id])
        .await?
        .iter()
        .map(image_from_row)
        .collect()
}

/// Deletes finished jobs older than `cutoff_ms` whose deliveries are all settled; the foreign
/// keys (ON DELETE CASCADE) remove their images, deliveries and attempts.
pub(super) async fn purge_finished(
    client: &impl GenericClient,
    cutoff_ms: i64,
) -> Result<u64, StoreError> {
    let stmt = client
        .prepare_cached(
            "DELETE FROM jobs WHERE status IN ('completed', 'failed', 'canceled', 'timed_out') \
             AND finished_at < $1 AND NOT EXISTS (SELECT 1 FROM deliveries d \
             WHERE d.job_id = jobs.id AND d.status IN ('pending', 'sending'))",
        )
        .await?;
    Ok(client.execute(&stmt, &[&cutoff_ms]).await?)
}
