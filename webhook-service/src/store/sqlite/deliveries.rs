//! Delivery (outbox) queries. Each function is one transaction (or one statement) on the
//! store's connection; the [`Store`](crate::store::Store) methods document the contract.

use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};

use crate::domain::{AttemptRecord, DeliveryRecord, DeliveryStatus, DeliveryTask, NextStep};
use crate::store::codec::{
    ATTEMPT_COLUMNS, DELIVERY_COLUMNS, TASK_COLUMNS, attempt_from_row, delivery_from_row,
    step_columns, task_from_row,
};
use crate::store::secrets::SecretBox;
use crate::store::{Redelivery, StoreError};

/// `last_error` of a delivery moved to `gone` because its URL had answered 410 before.
pub(super) const GONE_ERROR: &str = "the endpoint answered 410 Gone to an earlier delivery; an operator can send it again with `webhook-service deliveries redeliver <id> --force`";

/// First moves every pending or sending delivery whose URL is in `gone_endpoints` to `gone`
/// (with [`GONE_ERROR`]); then leases until `lease_until_ms` up to `limit` deliveries that are
/// pending with `next_attempt_at <= now_ms` or sending with `lease_until <= now_ms` (an expired
/// lease, claimable again with the same id), oldest `next_attempt_at` first. A leased delivery
/// keeps its `next_attempt_at`. Returns them with their job's secrets.
pub(super) fn claim_due(
    conn: &mut Connection,
    secrets: &SecretBox,
    now_ms: i64,
    lease_until_ms: i64,
    limit: u32,
) -> Result<Vec<DeliveryTask>, StoreError> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    // `url IN (SELECT ...)` is answered from the deliveries_url index: the cost grows with the
    // deliveries to gone URLs, not with the backlog.
    tx.prepare_cached(
        "UPDATE deliveries SET status = 'gone', next_attempt_at = NULL, lease_until = NULL, \
         last_error = ?2, updated_at = ?1 \
         WHERE url IN (SELECT url FROM gone_endpoints) AND status IN ('pending', 'sending')",
    )?
    .execute(params![now_ms, GONE_ERROR])?;
    let mut tasks = Vec::new();
    {
        // Each branch walks its own index in order and stops at `limit`.
        let mut due = tx.prepare_cached(&format!(
            "WITH due (id) AS ( \
               SELECT id FROM (SELECT id FROM deliveries \
                 WHERE status = 'pending' AND next_attempt_at <= ?1 \
                 ORDER BY next_attempt_at LIMIT ?2) \
               UNION ALL \
               SELECT id FROM (SELECT id FROM deliveries \
                 WHERE status = 'sending' AND lease_until <= ?1 \
                 ORDER BY lease_until LIMIT ?2)) \
             SELECT {TASK_COLUMNS} FROM due \
             JOIN deliveries d ON d.id = due.id JOIN jobs j ON j.id = d.job_id \
             ORDER BY d.next_attempt_at, d.rowid LIMIT ?2"
        ))?;
        let mut rows = due.query(params![now_ms, limit])?;
        while let Some(row) = rows.next()? {
            tasks.push(task_from_row(row, secrets)?);
        }
        let mut lease = tx.prepare_cached(
            "UPDATE deliveries SET status = 'sending', lease_until = ?2, updated_at = ?3 \
             WHERE id = ?1",
        )?;
        for task in &tasks {
            lease.execute(params![task.id, lease_until_ms, now_ms])?;
        }
    }
    tx.commit()?;
    Ok(tasks)
}

/// Records a batch of attempts in one transaction (group commit: one WAL commit for many
/// concurrent deliveries). Each attempt runs in its own savepoint, so one that fails (an unknown
/// delivery id) leaves the others written; the returned results are in the batch's order.
/// If the commit itself fails, every attempt gets that error.
pub(super) fn record_attempts(
    conn: &mut Connection,
    batch: &[AttemptRecord],
) -> Result<Vec<Result<(), StoreError>>, StoreError> {
    let mut tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let mut results = Vec::with_capacity(batch.len());
    for attempt in batch {
        let mut sp = tx.savepoint()?;
        let result = record_one(&sp, attempt);
        if result.is_ok() {
            sp.commit()?;
        } else {
            sp.rollback()?;
        }
        results.push(result);
    }
    tx.commit()?;
    Ok(results)
}

/// Stores one attempt, always counted in `attempts_made`. If the delivery is still `sending`
/// it also counts in `round_attempts` and the delivery moves per `attempt.next`: `RetryAt(t)` →
/// pending due at `t`; `Succeeded`, `Exhausted`, `Gone` → that status with no due time. The
/// lease is cleared, `last_error` takes the attempt's error when it has one, and `Gone` marks
/// the URL gone. A delivery no longer `sending` (redelivered or moved to gone meanwhile) keeps
/// its state: the late answer must not undo a redelivery. An unknown delivery id is a database
/// error (foreign key).
fn record_one(tx: &Connection, attempt: &AttemptRecord) -> Result<(), StoreError> {
    let step = step_columns(attempt.next);
    let updated_at = attempt.at_ms.saturating_add(i64::from(attempt.duration_ms));
    tx.prepare_cached(&format!(
        "INSERT INTO attempts ({ATTEMPT_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)"
    ))?
    .execute(params![
        attempt.delivery_id,
        attempt.number,
        attempt.at_ms,
        attempt.status_code,
        attempt.error,
        attempt.duration_ms,
        attempt.response_excerpt,
        step.outcome,
        step.retry_at,
    ])?;
    let moved: Option<String> = tx
        .prepare_cached(
            "UPDATE deliveries SET attempts_made = attempts_made + 1, \
             round_attempts = round_attempts + 1, status = ?2, next_attempt_at = ?3, \
             lease_until = NULL, last_error = COALESCE(?4, last_error), updated_at = ?5 \
             WHERE id = ?1 AND status = 'sending' RETURNING url",
        )?
        .query_row(
            params![
                attempt.delivery_id,
                step.status.as_str(),
                step.retry_at,
                attempt.error,
                updated_at
            ],
            |row| row.get(0),
        )
        .optional()?;
    match moved {
        Some(url) if attempt.next == NextStep::Gone => {
            tx.prepare_cached(
                "INSERT INTO gone_endpoints (url, at) VALUES (?1, ?2) \
                 ON CONFLICT (url) DO UPDATE SET at = excluded.at",
            )?
            .execute(params![url, attempt.at_ms])?;
        }
        Some(_) => {}
        None => {
            tx.prepare_cached(
                "UPDATE deliveries SET attempts_made = attempts_made + 1, updated_at = ?2 \
                 WHERE id = ?1",
            )?
            .execute(params![attempt.delivery_id, updated_at])?;
        }
    }
    Ok(())
}

/// The earliest `next_attempt_at` of a pending delivery or `lease_until` of a sending one.
pub(super) fn next_due(conn: &Connection) -> Result<Option<i64>, StoreError> {
    let due = conn
        .prepare_cached(
            "SELECT MIN(t) FROM ( \
               SELECT MIN(next_attempt_at) AS t FROM deliveries WHERE status = 'pending' \
               UNION ALL \
               SELECT MIN(lease_until) FROM deliveries WHERE status = 'sending')",
        )?
        .query_row([], |row| row.get(0))?;
    Ok(due)
}

/// A job's deliveries with their attempts, by creation time then insertion order.
pub(super) fn list(conn: &Connection, job_id: &str) -> Result<Vec<DeliveryRecord>, StoreError> {
    let mut records = Vec::new();
    {
        let mut stmt = conn.prepare_cached(&format!(
            "SELECT {DELIVERY_COLUMNS} FROM deliveries WHERE job_id = ?1 \
             ORDER BY created_at, rowid"
        ))?;
        let mut rows = stmt.query([job_id])?;
        while let Some(row) = rows.next()? {
            records.push(delivery_from_row(row)?);
        }
    }
    for record in &mut records {
        record.attempts = attempts(conn, &record.id)?;
    }
    Ok(records)
}

/// A delivery by id, with its attempts.
pub(super) fn get(conn: &Connection, id: &str) -> Result<Option<DeliveryRecord>, StoreError> {
    let record = {
        let mut stmt = conn.prepare_cached(&format!(
            "SELECT {DELIVERY_COLUMNS} FROM deliveries WHERE id = ?1"
        ))?;
        let mut rows = stmt.query([id])?;
        rows.next()?.map(delivery_from_row).transpose()?
    };
    let Some(mut record) = record else {
        return Ok(None);
    };
    record.attempts = attempts(conn, id)?;
    Ok(Some(record))
}

/// Makes a delivery pending and due at `now_ms` with `round_attempts = 0` and no lease, keeping
/// its id, `attempts_made`, `last_error` and attempt history, and removes its URL from
/// `gone_endpoints`. None if there is no such delivery.
pub(super) fn redeliver(
    conn: &mut Connection,
    id: &str,
    now_ms: i64,
    force: bool,
) -> Result<Redelivery, StoreError> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let Some(current) = get(&tx, id)? else {
        return Ok(Redelivery::NotFound);
    };
    let gone = tx
        .prepare_cached("SELECT 1 FROM gone_endpoints WHERE url = ?1")?
        .query_row([&current.url], |_| Ok(()))
        .optional()?
        .is_some();
    if gone && !force {
        return Ok(Redelivery::Gone(current));
    }
    let url: Option<String> = tx
        .prepare_cached(
            "UPDATE deliveries SET status = ?3, next_attempt_at = ?2, round_attempts = 0, \
             lease_until = NULL, updated_at = ?2 WHERE id = ?1 RETURNING url",
        )?
        .query_row(
            params![id, now_ms, DeliveryStatus::Pending.as_str()],
            |row| row.get(0),
        )
        .optional()?;
    let Some(url) = url else {
        return Ok(Redelivery::NotFound);
    };
    tx.prepare_cached("DELETE FROM gone_endpoints WHERE url = ?1")?
        .execute([url])?;
    let record = get(&tx, id)?;
    tx.commit()?;
    Ok(record.map_or(Redelivery::NotFound, Redelivery::Redelivered))
}

fn attempts(conn: &Connection, delivery_id: &str) -> Result<Vec<AttemptRecord>, StoreError> {
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT {ATTEMPT_COLUMNS} FROM attempts WHERE delivery_id = ?1 ORDER BY at, rowid"
    ))?;
    let mut rows = stmt.query([delivery_id])?;
    let mut attempts = Vec::new();
    while let Some(row) = rows.next()? {
        attempts.push(attempt_from_row(row)?);
    }
    Ok(attempts)
}
