//! API key queries and the replicas' shared settings. Only a key's SHA-256 is stored (the
//! caller hashes it, as for SQLite); the key itself is shown once, at creation. A key's
//! callback secret (`webhook_secret`) is stored sealed.

use deadpool_postgres::GenericClient;

use super::rows::col;
use crate::domain::{ApiKeyRecord, NewApiKey};
use crate::store::StoreError;
use crate::store::codec::{
    KEY_COLUMNS, KEY_INSERT_COLUMNS, KeyValues, SEALED_COLUMNS, key_from_row,
};
use crate::store::secrets::SecretBox;

/// Length of a value made by [`shared_key`].
pub(super) const SHARED_KEY_LEN: usize = 32;

/// Stores a key; a duplicate id or hash is a database error.
pub(super) async fn insert(
    client: &impl GenericClient,
    secrets: &SecretBox,
    key: &NewApiKey,
) -> Result<(), StoreError> {
    let v = KeyValues::new(key, secrets)?;
    let stmt = client
        .prepare_cached(&format!(
            "INSERT INTO api_keys ({KEY_INSERT_COLUMNS}) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)"
        ))
        .await?;
    client
        .execute(
            &stmt,
            &[
                &v.id,
                &v.name,
                &v.hash,
                &v.prefix,
                &v.created_at,
                &v.revoked_at,
                &v.max_in_flight,
                &v.per_minute,
                &v.webhook_url,
                &v.webhook_secret,
            ],
        )
        .await?;
    Ok(())
}

/// The key with this hash.
pub(super) async fn find(
    client: &impl GenericClient,
    secrets: &SecretBox,
    hash: &[u8; 32],
) -> Result<Option<ApiKeyRecord>, StoreError> {
    let stmt = client
        .prepare_cached(&format!(
            "SELECT {KEY_COLUMNS} FROM api_keys WHERE hash = $1"
        ))
        .await?;
    client
        .query_opt(&stmt, &[&hash.as_slice()])
        .await?
        .map(|row| key_from_row(&row, secrets))
        .transpose()
}

/// Every key, oldest first.
pub(super) async fn list(
    client: &impl GenericClient,
    secrets: &SecretBox,
) -> Result<Vec<ApiKeyRecord>, StoreError> {
    let stmt = client
        .prepare_cached(&format!(
            "SELECT {KEY_COLUMNS} FROM api_keys ORDER BY created_at, seq"
        ))
        .await?;
    client
        .query(&stmt, &[])
        .await?
        .iter()
        .map(|row| key_from_row(row, secrets))
        .collect()
}

/// Revokes the active key with this id or name.
pub(super) async fn revoke(
    client: &impl GenericClient,
    id_or_name: &str,
    now_ms: i64,
) -> Result<bool, StoreError> {
    let stmt = client
        .prepare_cached(
            "UPDATE api_keys SET revoked_at = $2 \
             WHERE (id = $1 OR name = $1) AND revoked_at IS NULL",
        )
        .await?;
    Ok(client.execute(&stmt, &[&id_or_name, &now_ms]).await? > 0)
}

/// The value stored under `name` in `settings`, created with [`SHARED_KEY_LEN`] random bytes on
/// first use. `ON CONFLICT DO NOTHING` lets replicas asking at once all read the one value the
/// first insert committed.
pub(super) async fn shared_key(
    client: &impl GenericClient,
    name: &str,
) -> Result<Vec<u8>, StoreError> {
    let fresh: [u8; SHARED_KEY_LEN] = rand::random();
    let insert = client
        .prepare_cached(
            "INSERT INTO settings (name, value) VALUES ($1, $2) ON CONFLICT (name) DO NOTHING",
        )
        .await?;
    client.execute(&insert, &[&name, &fresh.as_slice()]).await?;
    let select = client
        .prepare_cached("SELECT value FROM settings WHERE name = $1")
        .await?;
    let row = client.query_one(&select, &[&name]).await?;
    let value: Vec<u8> = col(&row, 0, "settings.value")?;
    if value.len() != SHARED_KEY_LEN {
        return Err(StoreError::Corrupt {
            what: "settings.value",
            detail: format!(
                "the key {name:?} holds {} bytes, not {SHARED_KEY_LEN}",
                value.len()
            ),
        });
    }
    Ok(value)
}

/// Opens the newest sealed value of each secret column with `secrets`, at start-up: a wrong key
/// fails the start with [`StoreError::Corrupt`] naming the column, instead of every later
/// delivery. A database with no sealed value passes. (Unlike SQLite there is nothing stored in
/// clear to seal: no PostgreSQL store ever wrote secrets in clear.)
pub(super) async fn check_secrets_key(
    client: &impl GenericClient,
    secrets: &SecretBox,
) -> Result<(), StoreError> {
    for (table, column, what) in SEALED_COLUMNS {
        let newest = client
            .query_opt(
                &format!(
                    "SELECT id, {column} FROM {table} WHERE left({column}, 5) = $1 \
                     ORDER BY seq DESC LIMIT 1"
                ),
                &[&crate::store::secrets::SEALED_PREFIX],
            )
            .await?;
        if let Some(row) = newest {
            let id: String = col(&row, 0, what)?;
            let stored: String = col(&row, 1, what)?;
            secrets.open(what, &id, stored)?;
        }
    }
    Ok(())
}
