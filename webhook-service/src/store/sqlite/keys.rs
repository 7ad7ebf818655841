//! API key queries. Only a key's SHA-256 is stored; the key itself is shown once, at creation.
//! A key's callback secret (`webhook_secret`) is stored sealed.

use rusqlite::{Connection, Row, params};

use super::rows::{col, seal, sealed};
use crate::domain::{ApiKeyRecord, KeyLimits, KeyWebhook, NewApiKey};
use crate::store::StoreError;
use crate::store::secrets::SecretBox;

const KEY_COLUMNS: &str = "id, name, prefix, created_at, revoked_at, max_in_flight, per_minute, webhook_url, webhook_secret";

fn limit(row: &Row<'_>, index: usize, what: &'static str) -> Result<Option<u32>, StoreError> {
    col::<Option<i64>>(row, index, what)?
        .map(|v| {
            u32::try_from(v).map_err(|_| StoreError::Corrupt {
                what,
                detail: format!("value {v} is out of range"),
            })
        })
        .transpose()
}

fn key_from_row(row: &Row<'_>, secrets: &SecretBox) -> Result<ApiKeyRecord, StoreError> {
    let id: String = col(row, 0, "api_keys.id")?;
    let webhook_url: Option<String> = col(row, 7, "api_keys.webhook_url")?;
    let webhook_secret = sealed(row, 8, "api_keys.webhook_secret", &id, secrets)?;
    Ok(ApiKeyRecord {
        id,
        name: col(row, 1, "api_keys.name")?,
        prefix: col(row, 2, "api_keys.prefix")?,
        created_at_ms: col(row, 3, "api_keys.created_at")?,
        revoked_at_ms: col(row, 4, "api_keys.revoked_at")?,
        limits: KeyLimits {
            max_in_flight: limit(row, 5, "api_keys.max_in_flight")?,
            per_minute: limit(row, 6, "api_keys.per_minute")?,
        },
        webhook: webhook_url.map(|url| KeyWebhook {
            url,
            secret: webhook_secret,
        }),
    })
}

/// Stores a key; a duplicate id or hash is a database error.
pub(super) fn insert(
    conn: &Connection,
    secrets: &SecretBox,
    key: &NewApiKey,
) -> Result<(), StoreError> {
    let r = &key.record;
    let webhook_secret = seal(
        r.webhook.as_ref().and_then(|w| w.secret.as_ref()),
        "api_keys.webhook_secret",
        &r.id,
        secrets,
    )?;
    conn.prepare_cached(
        "INSERT INTO api_keys (id, name, hash, prefix, created_at, revoked_at, max_in_flight, \
         per_minute, webhook_url, webhook_secret) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
    )?
    .execute(params![
        r.id,
        r.name,
        key.hash.as_slice(),
        r.prefix,
        r.created_at_ms,
        r.revoked_at_ms,
        r.limits.max_in_flight,
        r.limits.per_minute,
        r.webhook.as_ref().map(|w| w.url.as_str()),
        webhook_secret,
    ])?;
    Ok(())
}

/// The key with this hash.
pub(super) fn find(
    conn: &Connection,
    secrets: &SecretBox,
    hash: &[u8; 32],
) -> Result<Option<ApiKeyRecord>, StoreError> {
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT {KEY_COLUMNS} FROM api_keys WHERE hash = ?1"
    ))?;
    let mut rows = stmt.query([hash.as_slice()])?;
    rows.next()?
        .map(|row| key_from_row(row, secrets))
        .transpose()
}

/// Every key, oldest first.
pub(super) fn list(
    conn: &Connection,
    secrets: &SecretBox,
) -> Result<Vec<ApiKeyRecord>, StoreError> {
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT {KEY_COLUMNS} FROM api_keys ORDER BY created_at, rowid"
    ))?;
    let mut rows = stmt.query([])?;
    let mut keys = Vec::new();
    while let Some(row) = rows.next()? {
        keys.push(key_from_row(row, secrets)?);
    }
    Ok(keys)
}

/// Revokes the active key with this id or name.
pub(super) fn revoke(conn: &Connection, id_or_name: &str, now_ms: i64) -> Result<bool, StoreError> {
    let n = conn
        .prepare_cached(
            "UPDATE api_keys SET revoked_at = ?2 WHERE (id = ?1 OR name = ?1) AND revoked_at IS NULL",
        )?
        .execute(params![id_or_name, now_ms])?;
    Ok(n > 0)
}
