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

use std::str::FromStr;

use prost::Message;
use sdserve_proto::v1::GenerationParams;

pub(super) use self::records::{
    attempt_from_row, delivery_from_row, image_from_row, job_from_row, key_from_row, task_from_row,
};
use crate::domain::{
    DeliveryStatus, EventKind, JobStatus, NewApiKey, NewJob, NextStep, Secret, UnknownName,
};
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

/// The columns of `jobs` a new job is inserted with, in the order of [`JobValues`]'s fields.
pub(super) const JOB_INSERT_COLUMNS: &str = "id, idempotency_key, params, webhook_url, \
     webhook_secret, signing_secret, format, events, vendor_context, status, created_at, owner, \
     extra_parts, execution_timeout_ms, request_hash";

/// A [`NewJob`] encoded as the values of [`JOB_INSERT_COLUMNS`], secrets sealed.
pub(super) struct JobValues<'a> {
    /// `id`.
    pub id: &'a str,
    /// `idempotency_key`, scoped to the owner ([`scope_key`]).
    pub idempotency_key: Option<String>,
    /// `params`: the protobuf-encoded `GenerationParams`.
    pub params: Vec<u8>,
    /// `webhook_url`: empty for none.
    pub webhook_url: &'a str,
    /// `webhook_secret`, sealed.
    pub webhook_secret: Option<String>,
    /// `signing_secret`, sealed.
    pub signing_secret: Option<String>,
    /// `format`.
    pub format: &'static str,
    /// `events` ([`encode_events`]).
    pub events: String,
    /// `vendor_context` as JSON.
    pub vendor_context: String,
    /// `status`: always queued (a finished job gets its ending in the same transaction).
    pub status: &'static str,
    /// `created_at`.
    pub created_at: i64,
    /// `owner`.
    pub owner: &'a str,
    /// `extra_parts` ([`encode_parts`]).
    pub extra_parts: Option<Vec<u8>>,
    /// `execution_timeout_ms`, saturated to `i64::MAX` (no database column holds a `u64`).
    pub execution_timeout_ms: Option<i64>,
    /// `request_hash`: [`NewJob::fingerprint`], to tell a repeated request from a reused key.
    pub request_hash: [u8; 32],
}

impl<'a> JobValues<'a> {
    /// Encodes `job`, sealing its secrets with `secrets`.
    pub fn new(job: &'a NewJob, secrets: &SecretBox) -> Result<Self, StoreError> {
        let vendor_context =
            serde_json::to_string(&job.vendor_context).map_err(|e| StoreError::Corrupt {
                what: "jobs.vendor_context",
                detail: format!("cannot encode: {e}"),
            })?;
        let webhook = &job.webhook;
        Ok(JobValues {
            id: &job.id,
            idempotency_key: job
                .idempotency_key
                .as_deref()
                .map(|key| scope_key(&job.owner, key)),
            params: job.params.encode_to_vec(),
            webhook_url: webhook.url.as_deref().unwrap_or_default(),
            webhook_secret: seal(
                webhook.secret.as_ref(),
                "jobs.webhook_secret",
                &job.id,
                secrets,
            )?,
            signing_secret: seal(
                webhook.signing_secret.as_ref(),
                "jobs.signing_secret",
                &job.id,
                secrets,
            )?,
            format: webhook.format.as_str(),
            events: encode_events(&webhook.events),
            vendor_context,
            status: JobStatus::Queued.as_str(),
            created_at: job.created_at_ms,
            owner: &job.owner,
            extra_parts: encode_parts(&job.extra_parts),
            execution_timeout_ms: job
                .execution_timeout_ms
                .map(|ms| i64::try_from(ms).unwrap_or(i64::MAX)),
            request_hash: job.fingerprint(),
        })
    }

    /// Whether an earlier job's stored `request_hash` says it was this same request. A job
    /// stored before hashes were kept (NULL) counts as the same.
    pub fn same_request(&self, earlier: Option<&[u8]>) -> bool {
        earlier.is_none_or(|hash| hash == self.request_hash)
    }
}

/// The columns of `api_keys` a new key is inserted with, in the order of [`KeyValues`]'s fields.
pub(super) const KEY_INSERT_COLUMNS: &str = "id, name, hash, prefix, created_at, revoked_at, \
     max_in_flight, per_minute, webhook_url, webhook_secret";

/// A [`NewApiKey`] encoded as the values of [`KEY_INSERT_COLUMNS`], its secret sealed.
pub(super) struct KeyValues<'a> {
    /// `id`.
    pub id: &'a str,
    /// `name`.
    pub name: &'a str,
    /// `hash`: the key's SHA-256.
    pub hash: &'a [u8],
    /// `prefix`.
    pub prefix: &'a str,
    /// `created_at`.
    pub created_at: i64,
    /// `revoked_at`.
    pub revoked_at: Option<i64>,
    /// `max_in_flight`.
    pub max_in_flight: Option<i64>,
    /// `per_minute`.
    pub per_minute: Option<i64>,
    /// `webhook_url`.
    pub webhook_url: Option<&'a str>,
    /// `webhook_secret`, sealed.
    pub webhook_secret: Option<String>,
}

impl<'a> KeyValues<'a> {
    /// Encodes `key`, sealing its callback secret with `secrets`.
    pub fn new(key: &'a NewApiKey, secrets: &SecretBox) -> Result<Self, StoreError> {
        let r = &key.record;
        Ok(KeyValues {
            id: &r.id,
            name: &r.name,
            hash: &key.hash,
            prefix: &r.prefix,
            created_at: r.created_at_ms,
            revoked_at: r.revoked_at_ms,
            max_in_flight: r.limits.max_in_flight.map(i64::from),
            per_minute: r.limits.per_minute.map(i64::from),
            webhook_url: r.webhook.as_ref().map(|w| w.url.as_str()),
            webhook_secret: seal(
                r.webhook.as_ref().and_then(|w| w.secret.as_ref()),
                "api_keys.webhook_secret",
                &r.id,
                secrets,
            )?,
        })
    }
}

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
