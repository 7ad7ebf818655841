//! API key queries. Only a key's SHA-256 is stored; the key itself is shown once, at creation.
//! A key's callback secret (`webhook_secret`) is stored sealed.

use rusqlite::{Connection, params};

use crate::domain::{ApiKeyRecord, NewApiKey};
use crate::store::StoreError;
use crate::store::codec::{KEY_COLUMNS, KEY_INSERT_COLUMNS, KeyValues, key_from_row};
use crate::store::secrets::SecretBox;

/// Stores a key; a duplicate id or hash is a database error.
pub(super) fn insert(
    conn: &Connection,
    secrets: &SecretBox,
    key: &NewApiKey,
) -> Result<(), StoreError> {
    let v = KeyValues::new(key, secrets)?;
    conn.prepare_cached(&format!(
        "INSERT INTO api_keys ({KEY_INSERT_COLUMNS}) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)"
    ))?
    .execute(params![
        v.id,
        v.name,
        v.hash,
        v.prefix,
        v.created_at,
        v.revoked_at,
        v.max_in_flight,
        v.per_minute,
        v.webhook_url,
        v.webhook_secret,
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
