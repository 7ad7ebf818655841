//! Delivery (outbox) queries. Each function is one transaction (or one statement); the
//! [`Store`](crate::store::Store) methods document the contract. Writes that make deliveries due
//! announce it with `pg_notify` in the same transaction (see [`super::listen`]).

use deadpool_postgres::GenericClient;

use super::listen::{DELIVERY_DUE, notify};
use super::rows::col;
use crate::domain::{AttemptRecord, DeliveryRecord, DeliveryStatus, DeliveryTask, NextStep};
use crate::store::codec::{
    ATTEMPT_COLUMNS, DELIVERY_COLUMNS, TASK_COLUMNS, attempt_from_row, delivery_from_row,
    step_columns, task_from_row,
};
use crate::store::secrets::SecretBox;
use crate::store::{Redelivery, StoreError};

/// `last_error` of a delivery moved to `gone` because its URL had answered 410 before (the
/// SQLite store's text).
const GONE_ERROR: &str = "the endpoint answered 410 Gone to an earlier delivery; an operator can send it again with `webhook-service deliveries redeliver <id> --force`";

/// First moves pending or sending deliveries whose URL is in `gone_endpoints` to `gone`; then
/// leases until `lease_until_ms` up to `limit` deliveries that are pending with
/// `next_attempt_at <= now_ms` or sending with `lease_until <= now_ms` (an expired lease,
/// claimable again with the same id), oldest `next_attempt_at` first, and returns them with
/// their job's secrets.
///
/// Both steps lock their rows `FOR UPDATE SKIP LOCKED`: replicas claiming at once skip the
/// rows another has locked, so no delivery is handed to two of them and none waits (or
/// deadlocks) on another's claim. A row skipped this time is claimed by the next call.
pub(super) async fn claim_due(
    client: &mut deadpool_postgres::Client,
    secrets: &SecretBox,
    now_ms: i64,
    lease_until_ms: i64,
    limit: u32,
) -> Result<Vec<DeliveryTask>, StoreError> {
    let tx = client.transaction().await?;
    let gone = tx
        .prepare_cached(
            "UPDATE deliveries SET status = 'gone', next_attempt_at = NULL, lease_until = NULL, \
             last_error = $2, updated_at = $1 \
             WHERE id IN (SELECT id FROM deliveries \
               WHERE url IN (SELECT url FROM gone_endpoints) AND status IN ('pending', 'sending') \
               FOR UPDATE SKIP LOCKED)",
        )
        .await?;
    tx.execute(&gone, &[&now_ms, &GONE_ERROR]).await?;
    let lease = tx
        .prepare_cached(&format!(
            "WITH due AS ( \
               SELECT id FROM deliveries \
               WHERE (status = 'pending' AND next_attempt_at <= $1) \
                  OR (status = 'sending' AND lease_until <= $1) \
               ORDER BY next_attempt_at, seq LIMIT $3 \
               FOR UPDATE SKIP LOCKED) \
             UPDATE deliveries d SET status = 'sending', lease_until = $2, updated_at = $1 \
             FROM due, jobs j WHERE d.id = due.id AND j.id = d.job_id \
             RETURNING {TASK_COLUMNS}, d.next_attempt_at, d.seq"
        ))
        .await?;
    let rows = tx
        .query(&lease, &[&now_ms, &lease_until_ms, &i64::from(limit)])
        .await?;
    // RETURNING has no order: sort as the SELECT did (next_attempt_at, then insertion order;
    // NULLs last, as PostgreSQL sorts them).
    let mut keyed = Vec::with_capacity(rows.len());
    for row in &rows {
        let due: Option<i64> = col(row, 9, "deliveries.next_attempt_at")?;
        let seq: i64 = col(row, 10, "deliveries.seq")?;
        keyed.push(((due.is_none(), due, seq), task_from_row(row, secrets)?));
    }
    keyed.sort_by_key(|(key, _)| *key);
    tx.commit().await?;
    Ok(keyed.into_iter().map(|(_, task)| task).collect())
}

/// Stores one attempt, always counted in `attempts_made`, in its own transaction. If the
/// delivery is still `sending` it also counts in `round_attempts` and moves per
/// `attempt.next` (the SQLite store's rule, see its `record_one`); a delivery no longer
/// `sending` keeps its state. A retry announces deliveries due. An unknown delivery id is a
/// database error (foreign key).
pub(super) async fn record_attempt(
    client: &mut deadpool_postgres::Client,
    attempt: &AttemptRecord,
) -> Result<(), StoreError> {
    let step = step_columns(attempt.next);
    let updated_at = attempt.at_ms.saturating_add(i64::from(attempt.duration_ms));
    let tx = client.transaction().await?;
    let insert = tx
        .prepare_cached(&format!(
            "INSERT INTO attempts ({ATTEMPT_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)"
        ))
        .await?;
    tx.execute(
        &insert,
        &[
            &attempt.delivery_id,
            &i64::from(attempt.number),
            &attempt.at_ms,
            &attempt.status_code.map(i64::from),
            &attempt.error,
            &i64::from(attempt.duration_ms),
            &attempt.response_excerpt,
            &step.outcome,
            &step.retry_at,
        ],
    )
    .await?;
    let moved = tx
        .prepare_cached(
            "UPDATE deliveries SET attempts_made = attempts_made + 1, \
             round_attempts = round_attempts + 1, status = $2, next_attempt_at = $3, \
             lease_until = NULL, last_error = COALESCE($4, last_error), updated_at = $5 \
             WHERE id = $1 AND status = 'sending' RETURNING url",
        )
        .await?;
    let moved = tx
        .query_opt(
            &moved,
            &[
                &attempt.delivery_id,
                &step.status.as_str(),
                &step.retry_at,
                &attempt.error,
                &updated_at,
            ],
        )
        .await?;
    match moved {
        Some(row) => {
            let url: String = col(&row, 0, "deliveries.url")?;
            match attempt.next {
                NextStep::Gone => {
                    let mark = tx
                        .prepare_cached(
                            "INSERT INTO gone_endpoints (url, at) VALUES ($1, $2) \
                             ON CONFLICT (url) DO UPDATE SET at = excluded.at",
                        )
                        .await?;
                    tx.execute(&mark, &[&url, &attempt.at_ms]).await?;
                }
                NextStep::RetryAt(_) => notify(&tx, DELIVERY_DUE).await?,
                NextStep::Succeeded | NextStep::Exhausted => {}
            }
        }
        None => {
            let count = tx
                .prepare_cached(
                    "UPDATE deliveries SET attempts_made = attempts_made + 1, updated_at = $2 \
                     WHERE id = $1",
                )
                .await?;
            tx.execute(&count, &[&attempt.delivery_id, &updated_at])
                .await?;
        }
    }
    tx.commit().await?;
    Ok(())
}

/// The earliest `next_attempt_at` of a pending delivery or `lease_until` of a sending one.
pub(super) async fn next_due(client: &impl GenericClient) -> Result<Option<i64>, StoreError> {
    let stmt = client
        .prepare_cached(
            "SELECT MIN(t) FROM ( \
               SELECT MIN(next_attempt_at) AS t FROM deliveries WHERE status = 'pending' \
               UNION ALL \
               SELECT MIN(lease_until) FROM deliveries WHERE status = 'sending') AS due",
        )
        .await?;
    let row = client.query_one(&stmt, &[]).await?;
    col(&row, 0, "deliveries.next_attempt_at")
}

/// A job's deliveries with their attempts, by creation time then insertion order.
pub(super) async fn list(
    client: &impl GenericClient,
    job_id: &str,
) -> Result<Vec<DeliveryRecord>, StoreError> {
    let stmt = client
        .prepare_cached(&format!(
            "SELECT {DELIVERY_COLUMNS} FROM deliveries WHERE job_id = $1 \
             ORDER BY created_at, seq"
        ))
        .await?;
    let mut records = client
        .query(&stmt, &[&job_id])
        .await?
        .iter()
        .map(delivery_from_row)
        .collect::<Result<Vec<_>, _>>()?;
    for record in &mut records {
        record.attempts = attempts(client, &record.id).await?;
    }
    Ok(records)
}

/// A delivery by id, with its attempts.
pub(super) async fn get(
    client: &impl GenericClient,
    id: &str,
) -> Result<Option<DeliveryRecord>, StoreError> {
    let stmt = client
        .prepare_cached(&format!(
            "SELECT {DELIVERY_COLUMNS} FROM deliveries WHERE id = $1"
        ))
        .await?;
    let Some(row) = client.query_opt(&stmt, &[&id]).await? else {
        return Ok(None);
    };
    let mut record = delivery_from_row(&row)?;
    record.attempts = attempts(client, id).await?;
    Ok(Some(record))
}

/// Makes a delivery pending and due at `now_ms` with `round_attempts = 0` and no lease,
/// keeping its id, `attempts_made`, `last_error` and history, and removes its URL from
/// `gone_endpoints`; a delivery to a gone URL only when `force`.
pub(super) async fn redeliver(
    client: &mut deadpool_postgres::Client,
    id: &str,
    now_ms: i64,
    force: bool,
) -> Result<Redelivery, StoreError> {
    let tx = client.transaction().await?;
    let Some(current) = get(&tx, id).await? else {
        return Ok(Redelivery::NotFound);
    };
    let is_gone = tx
        .prepare_cached("SELECT 1 FROM gone_endpoints WHERE url = $1")
        .await?;
    let gone = tx.query_opt(&is_gone, &[&current.url]).await?.is_some();
    if gone && !force {
        return Ok(Redelivery::Gone(current)); // rolled back: nothing was written
    }
    let update = tx
        .prepare_cached(
            "UPDATE deliveries SET status = $3, next_attempt_at = $2, round_attempts = 0, \
             lease_until = NULL, updated_at = $2 WHERE id = $1 RETURNING url",
        )
        .await?;
    let Some(row) = tx
        .query_opt(&update, &[&id, &now_ms, &DeliveryStatus::Pending.as_str()])
        .await?
    else {
        return Ok(Redelivery::NotFound);
    };
    let url: String = col(&row, 0, "deliveries.url")?;
    let clear = tx
        .prepare_cached("DELETE FROM gone_endpoints WHERE url = $1")
        .await?;
    tx.execute(&clear, &[&url]).await?;
    notify(&tx, DELIVERY_DUE).await?;
    let record = get(&tx, id).await?;
    tx.commit().await?;
    Ok(record.map_or(Redelivery::NotFound, Redelivery::Redelivered))
}

async fn attempts(
    client: &impl GenericClient,
    delivery_id: &str,
) -> Result<Vec<AttemptRecord>, StoreError> {
    let stmt = client
        .prepare_cached(&format!(
            "SELECT {ATTEMPT_COLUMNS} FROM attempts WHERE delivery_id = $1 ORDER BY at, seq"
        ))
        .await?;
    client
        .query(&stmt, &[&delivery_id])
        .await?
        .iter()
        .map(attempt_from_row)
        .collect()
}
