//! Mapping between PostgreSQL rows and domain types, the PostgreSQL twin of the SQLite
//! store's `rows.rs`: one reader per row type, each paired with the column list it reads, plus
//! the encoders for values stored in a non-obvious form. The encodings are the SQLite store's,
//! so a value means the same in both.
//!
//! Every reader returns [`StoreError::Corrupt`] naming `table.column` when a stored value cannot
//! be decoded; none panics. Secret columns are sealed ([`SecretBox`]): they are opened only into
//! [`Secret`] values, and decode errors never quote a stored text value.

use std::str::FromStr;

use prost::Message;
use sdserve_proto::v1::GenerationParams;
use tokio_postgres::Row;
use tokio_postgres::types::FromSql;

use crate::domain::{
    AttemptRecord, DeliveryRecord, DeliveryStatus, DeliveryTask, EventKind, Format, JobRecord,
    JobStatus, NewJob, NextStep, Secret, StoredImage, UnknownName, WebhookTarget,
};
use crate::store::StoreError;
use crate::store::secrets::SecretBox;

/// Columns read by [`job_from_row`], for `SELECT ... FROM jobs`.
pub(super) const JOB_COLUMNS: &str = "id, idempotency_key, params, webhook_url, webhook_secret, \
     signing_secret, format, events, vendor_context, status, created_at, started_at, \
     finished_at, progress_step, progress_total, model, error, \
     (SELECT COUNT(*) FROM images WHERE images.job_id = jobs.id), \
     owner, extra_parts, execution_timeout_ms, dispatched_at, queue_position, info_json";

/// How `jobs.extra_parts` is stored: a protobuf message holding the list (as in SQLite).
#[derive(Clone, PartialEq, prost::Message)]
struct Parts {
    #[prost(message, repeated, tag = "1")]
    items: Vec<GenerationParams>,
}

/// Encodes `jobs.extra_parts`: NULL for none.
pub(super) fn encode_parts(parts: &[GenerationParams]) -> Option<Vec<u8>> {
    (!parts.is_empty()).then(|| {
        Parts {
            items: parts.to_vec(),
        }
        .encode_to_vec()
    })
}

fn decode_parts(bytes: Option<Vec<u8>>) -> Result<Vec<GenerationParams>, StoreError> {
    let Some(bytes) = bytes else {
        return Ok(Vec::new());
    };
    Parts::decode(bytes.as_slice())
        .map(|p| p.items)
        .map_err(|e| StoreError::Corrupt {
            what: "jobs.extra_parts",
            detail: format!("not a list of GenerationParams: {e}"),
        })
}

/// How `jobs.idempotency_key` stores a caller's key: `<owner> U+001F <key>`, so the column's
/// UNIQUE constraint scopes keys per caller (the SQLite store's encoding).
pub(super) fn scope_key(owner: &str, key: &str) -> String {
    format!("{owner}\u{1f}{key}")
}

/// The caller's key from a stored scoped key.
fn unscope_key(stored: &str) -> &str {
    stored.split_once('\u{1f}').map_or(stored, |(_, key)| key)
}

/// Reads a job selected with [`JOB_COLUMNS`], opening its secrets with `secrets`.
pub(super) fn job_from_row(row: &Row, secrets: &SecretBox) -> Result<JobRecord, StoreError> {
    let id: String = col(row, 0, "jobs.id")?;
    let params: Vec<u8> = col(row, 2, "jobs.params")?;
    let params = GenerationParams::decode(params.as_slice()).map_err(|e| StoreError::Corrupt {
        what: "jobs.params",
        detail: format!("not a GenerationParams message: {e}"),
    })?;
    let vendor: String = col(row, 8, "jobs.vendor_context")?;
    let vendor_context = serde_json::from_str(&vendor).map_err(|e| StoreError::Corrupt {
        what: "jobs.vendor_context",
        detail: format!("not JSON: {e}"),
    })?;
    let events: String = col(row, 7, "jobs.events")?;
    let events = decode_events(&events)?;
    Ok(JobRecord {
        job: NewJob {
            params,
            owner: col(row, 18, "jobs.owner")?,
            extra_parts: decode_parts(col(row, 19, "jobs.extra_parts")?)?,
            execution_timeout_ms: col::<Option<i64>>(row, 20, "jobs.execution_timeout_ms")?
                .map(|ms| {
                    u64::try_from(ms).map_err(|_| out_of_range("jobs.execution_timeout_ms", ms))
                })
                .transpose()?,
            webhook: WebhookTarget {
                url: Some(col::<String>(row, 3, "jobs.webhook_url")?).filter(|url| !url.is_empty()),
                secret: sealed(row, 4, "jobs.webhook_secret", &id, secrets)?,
                format: parsed::<Format>(row, 6, "jobs.format")?,
                events,
                signing_secret: sealed(row, 5, "jobs.signing_secret", &id, secrets)?,
            },
            idempotency_key: col::<Option<String>>(row, 1, "jobs.idempotency_key")?
                .map(|stored| unscope_key(&stored).to_owned()),
            vendor_context,
            created_at_ms: col(row, 10, "jobs.created_at")?,
            id,
        },
        status: parsed::<JobStatus>(row, 9, "jobs.status")?,
        dispatched_at_ms: col(row, 21, "jobs.dispatched_at")?,
        queue_position: col::<Option<i64>>(row, 22, "jobs.queue_position")?
            .map(|p| u32::try_from(p).map_err(|_| out_of_range("jobs.queue_position", p)))
            .transpose()?,
        started_at_ms: col(row, 11, "jobs.started_at")?,
        finished_at_ms: col(row, 12, "jobs.finished_at")?,
        progress_step: count(row, 13, "jobs.progress_step")?,
        progress_total: count(row, 14, "jobs.progress_total")?,
        model: col(row, 15, "jobs.model")?,
        error: col(row, 16, "jobs.error")?,
        image_count: count(row, 17, "images.idx")?,
        info_json: col(row, 23, "jobs.info_json")?,
    })
}

/// Columns read by [`image_from_row`], for `SELECT ... FROM images`.
pub(super) const IMAGE_COLUMNS: &str = "idx, seed, infotext, png";

/// Reads an image selected with [`IMAGE_COLUMNS`].
pub(super) fn image_from_row(row: &Row) -> Result<StoredImage, StoreError> {
    Ok(StoredImage {
        index: count(row, 0, "images.idx")?,
        seed: col(row, 1, "images.seed")?,
        infotext: col(row, 2, "images.infotext")?,
        png: col(row, 3, "images.png")?,
    })
}

/// Columns read by [`delivery_from_row`], for `SELECT ... FROM deliveries`.
pub(super) const DELIVERY_COLUMNS: &str =
    "id, job_id, event, url, status, next_attempt_at, last_error, created_at";

/// Reads a delivery selected with [`DELIVERY_COLUMNS`], without its attempts.
pub(super) fn delivery_from_row(row: &Row) -> Result<DeliveryRecord, StoreError> {
    Ok(DeliveryRecord {
        id: col(row, 0, "deliveries.id")?,
        job_id: col(row, 1, "deliveries.job_id")?,
        event: parsed::<EventKind>(row, 2, "deliveries.event")?,
        url: col(row, 3, "deliveries.url")?,
        status: parsed::<DeliveryStatus>(row, 4, "deliveries.status")?,
        next_attempt_at_ms: col(row, 5, "deliveries.next_attempt_at")?,
        last_error: col(row, 6, "deliveries.last_error")?,
        created_at_ms: col(row, 7, "deliveries.created_at")?,
        attempts: Vec::new(),
    })
}

/// Columns read by [`task_from_row`], in a `RETURNING` of `deliveries d` joined with `jobs j`.
pub(super) const TASK_COLUMNS: &str = "d.id, d.job_id, d.url, d.payload, j.webhook_secret, \
     j.signing_secret, d.attempts_made, d.round_attempts, j.format";

/// Reads a leased delivery selected with [`TASK_COLUMNS`], opening its job's secrets.
pub(super) fn task_from_row(row: &Row, secrets: &SecretBox) -> Result<DeliveryTask, StoreError> {
    let job_id: String = col(row, 1, "deliveries.job_id")?;
    Ok(DeliveryTask {
        id: col(row, 0, "deliveries.id")?,
        url: col(row, 2, "deliveries.url")?,
        payload: col(row, 3, "deliveries.payload")?,
        secret: sealed(row, 4, "jobs.webhook_secret", &job_id, secrets)?,
        signing_secret: sealed(row, 5, "jobs.signing_secret", &job_id, secrets)?,
        job_id,
        attempts_made: count(row, 6, "deliveries.attempts_made")?,
        round_attempts: count(row, 7, "deliveries.round_attempts")?,
        format: parsed::<Format>(row, 8, "jobs.format")?,
    })
}

/// Columns read by [`attempt_from_row`] and written by `record_attempt`, in `attempts`.
pub(super) const ATTEMPT_COLUMNS: &str =
    "delivery_id, number, at, status_code, error, duration_ms, response_excerpt, outcome, retry_at";

/// Reads an attempt selected with [`ATTEMPT_COLUMNS`].
pub(super) fn attempt_from_row(row: &Row) -> Result<AttemptRecord, StoreError> {
    let status_code = match col::<Option<i64>>(row, 3, "attempts.status_code")? {
        None => None,
        Some(code) => {
            Some(u16::try_from(code).map_err(|_| out_of_range("attempts.status_code", code))?)
        }
    };
    let outcome: String = col(row, 7, "attempts.outcome")?;
    let retry_at: Option<i64> = col(row, 8, "attempts.retry_at")?;
    let next = match (outcome.as_str(), retry_at) {
        ("succeeded", _) => NextStep::Succeeded,
        ("exhausted", _) => NextStep::Exhausted,
        ("gone", _) => NextStep::Gone,
        ("retry", Some(at)) => NextStep::RetryAt(at),
        ("retry", None) => {
            return Err(StoreError::Corrupt {
                what: "attempts.retry_at",
                detail: "missing for a retry outcome".into(),
            });
        }
        (other, _) => {
            return Err(StoreError::Corrupt {
                what: "attempts.outcome",
                detail: format!("unknown outcome {other:?}"),
            });
        }
    };
    Ok(AttemptRecord {
        delivery_id: col(row, 0, "attempts.delivery_id")?,
        number: count(row, 1, "attempts.number")?,
        at_ms: col(row, 2, "attempts.at")?,
        status_code,
        error: col(row, 4, "attempts.error")?,
        duration_ms: count(row, 5, "attempts.duration_ms")?,
        response_excerpt: col(row, 6, "attempts.response_excerpt")?,
        next,
    })
}

/// How a [`NextStep`] is stored: the attempt's `outcome` and `retry_at`, and the delivery's new
/// `status` and `next_attempt_at`.
pub(super) struct StepColumns {
    /// `attempts.outcome`.
    pub outcome: &'static str,
    /// `attempts.retry_at` and `deliveries.next_attempt_at`.
    pub retry_at: Option<i64>,
    /// `deliveries.status`.
    pub status: DeliveryStatus,
}

/// Encodes a [`NextStep`]; [`attempt_from_row`] is its inverse.
pub(super) fn step_columns(next: NextStep) -> StepColumns {
    let (outcome, retry_at, status) = match next {
        NextStep::Succeeded => ("succeeded", None, DeliveryStatus::Succeeded),
        NextStep::RetryAt(at) => ("retry", Some(at), DeliveryStatus::Pending),
        NextStep::Exhausted => ("exhausted", None, DeliveryStatus::Exhausted),
        NextStep::Gone => ("gone", None, DeliveryStatus::Gone),
    };
    StepColumns {
        outcome,
        retry_at,
        status,
    }
}

/// Encodes `jobs.events` as a comma-separated list of event names.
pub(super) fn encode_events(events: &[EventKind]) -> String {
    events
        .iter()
        .map(|e| e.as_str())
        .collect::<Vec<_>>()
        .join(",")
}

fn decode_events(text: &str) -> Result<Vec<EventKind>, StoreError> {
    text.split(',')
        .filter(|name| !name.is_empty())
        .map(|name| EventKind::from_str(name).map_err(|e| unknown("jobs.events", e)))
        .collect()
}

/// Reads one column, turning a type mismatch or NULL where none is allowed into
/// [`StoreError::Corrupt`]. The conversion error names types, never the stored value.
pub(super) fn col<'a, T: FromSql<'a>>(
    row: &'a Row,
    index: usize,
    what: &'static str,
) -> Result<T, StoreError> {
    row.try_get(index).map_err(|e| StoreError::Corrupt {
        what,
        detail: e.to_string(),
    })
}

/// Reads a non-negative count or index that fits a `u32` (stored as BIGINT).
pub(super) fn count(row: &Row, index: usize, what: &'static str) -> Result<u32, StoreError> {
    let value: i64 = col(row, index, what)?;
    u32::try_from(value).map_err(|_| out_of_range(what, value))
}

/// Reads a nullable sealed secret of the row `row_id`, opening it with `secrets`; the value
/// goes straight into a [`Secret`].
pub(super) fn sealed(
    row: &Row,
    index: usize,
    what: &'static str,
    row_id: &str,
    secrets: &SecretBox,
) -> Result<Option<Secret>, StoreError> {
    col::<Option<String>>(row, index, what)?
        .map(|stored| secrets.open(what, row_id, stored))
        .transpose()
}

/// Seals a nullable secret for `what` (`table.column`) of the row `row_id`.
pub(super) fn seal(
    secret: Option<&Secret>,
    what: &'static str,
    row_id: &str,
    secrets: &SecretBox,
) -> Result<Option<String>, StoreError> {
    secret
        .map(|s| secrets.seal(what, row_id, s.expose()))
        .transpose()
}

/// Reads an enumeration stored as its name.
fn parsed<T: FromStr<Err = UnknownName>>(
    row: &Row,
    index: usize,
    what: &'static str,
) -> Result<T, StoreError> {
    let name: String = col(row, index, what)?;
    name.parse().map_err(|e| unknown(what, e))
}

fn unknown(what: &'static str, e: UnknownName) -> StoreError {
    StoreError::Corrupt {
        what,
        detail: e.to_string(),
    }
}

/// A stored number outside the range of its domain type.
pub(super) fn out_of_range(what: &'static str, value: i64) -> StoreError {
    StoreError::Corrupt {
        what,
        detail: format!("value {value} is out of range"),
    }
}
