//! How domain values are stored, whichever database holds them: the column lists both stores
//! select, the encodings of values stored in a non-obvious form (parts, events, scoped
//! idempotency keys, an attempt's next step, sealed secrets), the column values of a new job or
//! key, and (in [`records`]) the readers of whole records.
//!
//! Both stores use these so that a value means the same in SQLite and in PostgreSQL, and a fix
//! to an encoding cannot reach one store and miss the other. A backend keeps only its SQL and
//! its driver glue: binding [`JobValues`] and [`KeyValues`], and [`Columns`] for its row type.
//!
//! Every reader returns [`StoreError::Corrupt`] naming `table.column` when a stored value cannot
//! be decoded; none panics. Secret columns are sealed ([`SecretBox`]): they are opened only into
//! [`Secret`] values, and decode errors never quote a stored text value.

mod records;
mod values;

use std::str::FromStr;

use prost::Message;
use sdserve_proto::v1::GenerationParams;

pub(super) use self::records::{
    attempt_from_row, delivery_from_row, image_from_row, job_from_row, key_from_row, task_from_row,
};
pub(super) use self::values::{JOB_INSERT_COLUMNS, JobValues, KEY_INSERT_COLUMNS, KeyValues};
use crate::domain::{DeliveryStatus, EventKind, NextStep, Secret, UnknownName};
use crate::store::StoreError;
use crate::store::secrets::SecretBox;

/// One row of a query result, read column by column; each backend implements it for its row
/// type, turning a NULL where none is allowed or a value of another type into
/// [`StoreError::Corrupt`] naming `what` (`table.column`).
pub(super) trait Columns {
    /// A non-null text column.
    fn text(&self, index: usize, what: &'static str) -> Result<String, StoreError>;
    /// A nullable text column.
    fn opt_text(&self, index: usize, what: &'static str) -> Result<Option<String>, StoreError>;
    /// A non-null integer column (SQLite INTEGER, PostgreSQL BIGINT).
    fn int(&self, index: usize, what: &'static str) -> Result<i64, StoreError>;
    /// A nullable integer column.
    fn opt_int(&self, index: usize, what: &'static str) -> Result<Option<i64>, StoreError>;
    /// A non-null binary column (SQLite BLOB, PostgreSQL BYTEA).
    fn bytes(&self, index: usize, what: &'static str) -> Result<Vec<u8>, StoreError>;
    /// A nullable binary column.
    fn opt_bytes(&self, index: usize, what: &'static str) -> Result<Option<Vec<u8>>, StoreError>;
}

/// Implements [`Columns`] for a backend's row type `$row` through its generic one-column
/// reader `$col(row, index, what)`. A macro, not a blanket impl: the two drivers' `FromSql`
/// traits differ (PostgreSQL's borrows from the row), so no one bound covers both.
macro_rules! columns_through {
    ($row:ty, $col:path) => {
        impl $crate::store::codec::Columns for $row {
            fn text(
                &self,
                index: usize,
                what: &'static str,
            ) -> Result<String, $crate::store::StoreError> {
                $col(self, index, what)
            }

            fn opt_text(
                &self,
                index: usize,
                what: &'static str,
            ) -> Result<Option<String>, $crate::store::StoreError> {
                $col(self, index, what)
            }

            fn int(
                &self,
                index: usize,
                what: &'static str,
            ) -> Result<i64, $crate::store::StoreError> {
                $col(self, index, what)
            }

            fn opt_int(
                &self,
                index: usize,
                what: &'static str,
            ) -> Result<Option<i64>, $crate::store::StoreError> {
                $col(self, index, what)
            }

            fn bytes(
                &self,
                index: usize,
                what: &'static str,
            ) -> Result<Vec<u8>, $crate::store::StoreError> {
                $col(self, index, what)
            }

            fn opt_bytes(
                &self,
                index: usize,
                what: &'static str,
            ) -> Result<Option<Vec<u8>>, $crate::store::StoreError> {
                $col(self, index, what)
            }
        }
    };
}
pub(super) use columns_through;

/// Columns read by [`job_from_row`], for `SELECT ... FROM jobs`.
pub(super) const JOB_COLUMNS: &str = "id, idempotency_key, params, webhook_url, webhook_secret, \
     signing_secret, format, events, vendor_context, status, created_at, started_at, \
     finished_at, progress_step, progress_total, model, error, \
     (SELECT COUNT(*) FROM images WHERE images.job_id = jobs.id), \
     owner, extra_parts, execution_timeout_ms, dispatched_at, queue_position, info_json";

/// Columns read by [`image_from_row`], for `SELECT ... FROM images`.
pub(super) const IMAGE_COLUMNS: &str = "idx, seed, infotext, png";

/// Columns read by [`delivery_from_row`], for `SELECT ... FROM deliveries`.
pub(super) const DELIVERY_COLUMNS: &str =
    "id, job_id, event, url, status, next_attempt_at, last_error, created_at";

/// Columns read by [`task_from_row`], from `deliveries d` joined with `jobs j ON j.id = d.job_id`.
pub(super) const TASK_COLUMNS: &str = "d.id, d.job_id, d.url, d.payload, j.webhook_secret, \
     j.signing_secret, d.attempts_made, d.round_attempts, j.format";

/// Columns read by [`attempt_from_row`] and written by `record_attempt`, in `attempts`.
pub(super) const ATTEMPT_COLUMNS: &str =
    "delivery_id, number, at, status_code, error, duration_ms, response_excerpt, outcome, retry_at";

/// Columns read by [`key_from_row`], for `SELECT ... FROM api_keys`.
pub(super) const KEY_COLUMNS: &str = "id, name, prefix, created_at, revoked_at, max_in_flight, \
     per_minute, webhook_url, webhook_secret";

/// The sealed columns: table, column, and `table.column` (the name in errors and in the
/// associated data). Each table's rows are keyed by `id`.
pub(super) const SEALED_COLUMNS: [(&str, &str, &str); 3] = [
    ("jobs", "webhook_secret", "jobs.webhook_secret"),
    ("jobs", "signing_secret", "jobs.signing_secret"),
    ("api_keys", "webhook_secret", "api_keys.webhook_secret"),
];

/// How `jobs.extra_parts` is stored: a protobuf message holding the list.
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

/// Decodes `jobs.extra_parts`; [`encode_parts`] is its inverse.
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
/// UNIQUE constraint scopes keys per caller.
pub(super) fn scope_key(owner: &str, key: &str) -> String {
    format!("{owner}\u{1f}{key}")
}

/// The caller's key from a stored scoped key; [`scope_key`] is its inverse.
fn unscope_key(stored: &str) -> &str {
    stored.split_once('\u{1f}').map_or(stored, |(_, key)| key)
}

/// Encodes `jobs.events` as a comma-separated list of event names.
pub(super) fn encode_events(events: &[EventKind]) -> String {
    events
        .iter()
        .map(|e| e.as_str())
        .collect::<Vec<_>>()
        .join(",")
}

/// Decodes `jobs.events`; [`encode_events`] is its inverse.
fn decode_events(text: &str) -> Result<Vec<EventKind>, StoreError> {
    text.split(',')
        .filter(|name| !name.is_empty())
        .map(|name| EventKind::from_str(name).map_err(|e| unknown("jobs.events", e)))
        .collect()
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

/// Encodes a [`NextStep`]; [`next_step`] is its inverse.
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

/// Decodes an attempt's `outcome` and `retry_at`.
fn next_step(outcome: &str, retry_at: Option<i64>) -> Result<NextStep, StoreError> {
    match (outcome, retry_at) {
        ("succeeded", _) => Ok(NextStep::Succeeded),
        ("exhausted", _) => Ok(NextStep::Exhausted),
        ("gone", _) => Ok(NextStep::Gone),
        ("retry", Some(at)) => Ok(NextStep::RetryAt(at)),
        ("retry", None) => Err(StoreError::Corrupt {
            what: "attempts.retry_at",
            detail: "missing for a retry outcome".into(),
        }),
        (other, _) => Err(StoreError::Corrupt {
            what: "attempts.outcome",
            detail: format!("unknown outcome {other:?}"),
        }),
    }
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

/// Reads a nullable sealed secret of the row `row_id`, opening it with `secrets` (a clear value
/// from an older SQLite build passes as is); the value goes straight into a [`Secret`].
fn sealed(
    row: &impl Columns,
    index: usize,
    what: &'static str,
    row_id: &str,
    secrets: &SecretBox,
) -> Result<Option<Secret>, StoreError> {
    row.opt_text(index, what)?
        .map(|stored| secrets.open(what, row_id, stored))
        .transpose()
}

/// Reads a non-negative count or index that fits a `u32`.
fn count(row: &impl Columns, index: usize, what: &'static str) -> Result<u32, StoreError> {
    let value = row.int(index, what)?;
    u32::try_from(value).map_err(|_| out_of_range(what, value))
}

/// Reads a nullable number that fits a `u32`.
fn opt_u32(
    row: &impl Columns,
    index: usize,
    what: &'static str,
) -> Result<Option<u32>, StoreError> {
    row.opt_int(index, what)?
        .map(|v| u32::try_from(v).map_err(|_| out_of_range(what, v)))
        .transpose()
}

/// Reads an enumeration stored as its name.
pub(super) fn parsed<T: FromStr<Err = UnknownName>>(
    row: &impl Columns,
    index: usize,
    what: &'static str,
) -> Result<T, StoreError> {
    row.text(index, what)?.parse().map_err(|e| unknown(what, e))
}

/// A stored name that is not one of its enumeration's.
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
