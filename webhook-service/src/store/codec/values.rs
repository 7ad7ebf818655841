//! The column values a new job or API key is inserted with, encoded once for both stores; each
//! backend binds them to its own placeholders.

use prost::Message;

use super::{encode_events, encode_parts, scope_key, seal};
use crate::domain::{JobStatus, NewApiKey, NewJob};
use crate::store::StoreError;
use crate::store::secrets::SecretBox;

/// The columns of `jobs` a new job is inserted with, in the order of [`JobValues`]'s fields.
pub(in crate::store) const JOB_INSERT_COLUMNS: &str = "id, idempotency_key, params, webhook_url, \
     webhook_secret, signing_secret, format, events, vendor_context, status, created_at, owner, \
     extra_parts, execution_timeout_ms, request_hash";

/// A [`NewJob`] encoded as the values of [`JOB_INSERT_COLUMNS`], secrets sealed.
pub(in crate::store) struct JobValues<'a> {
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
pub(in crate::store) const KEY_INSERT_COLUMNS: &str = "id, name, hash, prefix, created_at, revoked_at, \
     max_in_flight, per_minute, webhook_url, webhook_secret";

/// A [`NewApiKey`] encoded as the values of [`KEY_INSERT_COLUMNS`], its secret sealed.
pub(in crate::store) struct KeyValues<'a> {
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
