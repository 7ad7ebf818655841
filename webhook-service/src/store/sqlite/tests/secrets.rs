//! Secrets sealed at rest in a database file, what only SQLite has: a value moved to another
//! row, and clear values from an older build sealed at the next open. What the database holds
//! and a wrong key are in the store contract (`tests/it/store_contract/secrets.rs`).

use std::path::Path;

use super::fixtures::{SECRET_COLUMNS, URL, job, raw, stored};
use crate::domain::{ApiKeyRecord, KeyLimits, KeyWebhook, NewApiKey, Secret};
use crate::store::secrets::{SecretBox, SecretsKey};
use crate::store::sqlite::SqliteStore;
use crate::store::{Store, StoreError};

fn key_with_webhook(id: &str, secret: &str) -> NewApiKey {
    NewApiKey {
        record: ApiKeyRecord {
            id: id.to_owned(),
            name: format!("name-{id}"),
            prefix: "sk_live_ab".into(),
            created_at_ms: 5,
            revoked_at_ms: None,
            limits: KeyLimits::default(),
            webhook: Some(KeyWebhook {
                url: URL.into(),
                secret: Some(Secret::new(secret)),
            }),
        },
        hash: [id.len() as u8; 32],
    }
}

fn secret_columns(path: &Path) -> Vec<Option<String>> {
    SECRET_COLUMNS
        .iter()
        .flat_map(|sql| stored(path, sql))
        .collect()
}

#[tokio::test]
async fn a_sealed_value_copied_to_another_row_does_not_open() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("jobs.db");
    let store = SqliteStore::open_with(&path, SecretBox::new(&SecretsKey::generate())).unwrap();
    store.insert_job(job("j1", None, 100)).await.unwrap();
    let mut other = job("j2", None, 200);
    other.webhook.secret = Some(Secret::new("the-other-secret"));
    store.insert_job(other).await.unwrap();
    raw(
        &path,
        "UPDATE jobs SET webhook_secret = (SELECT webhook_secret FROM jobs WHERE id = 'j1') WHERE id = 'j2'",
    );
    match store.get_job("j2").await {
        Err(StoreError::Corrupt {
            what: "jobs.webhook_secret",
            detail,
        }) => {
            assert!(!detail.contains("bearer-s3cret"), "{detail}");
        }
        other => panic!("a secret moved to another row must not open, got {other:?}"),
    }
    assert_eq!(
        store
            .get_job("j1")
            .await
            .unwrap()
            .unwrap()
            .job
            .webhook
            .secret
            .unwrap()
            .expose(),
        "bearer-s3cret"
    );
}

#[tokio::test]
async fn clear_values_from_an_older_build_are_sealed_at_open() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("jobs.db");
    let key = SecretsKey::generate();
    let store = SqliteStore::open_with(&path, SecretBox::new(&key)).unwrap();
    store.insert_job(job("j1", None, 100)).await.unwrap();
    store
        .insert_key(key_with_webhook("key_1", "x"))
        .await
        .unwrap();
    drop(store);
    // What a build before encryption at rest wrote.
    raw(
        &path,
        "UPDATE jobs SET webhook_secret = 'old-bearer', signing_secret = 'whsec_b2xk'; \
         UPDATE api_keys SET webhook_secret = 'old-leonardo-key';",
    );
    let store = SqliteStore::open_with(&path, SecretBox::new(&key)).unwrap();
    for value in secret_columns(&path) {
        assert!(
            value.unwrap().starts_with("enc1:"),
            "a clear value survived the open"
        );
    }
    let got = store.get_job("j1").await.unwrap().unwrap();
    assert_eq!(got.job.webhook.secret.unwrap().expose(), "old-bearer");
    assert_eq!(
        got.job.webhook.signing_secret.unwrap().expose(),
        "whsec_b2xk"
    );
    let keys = store.list_keys().await.unwrap();
    assert_eq!(
        keys[0]
            .webhook
            .as_ref()
            .unwrap()
            .secret
            .as_ref()
            .unwrap()
            .expose(),
        "old-leonardo-key"
    );
    // The store is also correct for a job with no secrets at all.
    let mut bare = job("j3", None, 300);
    bare.webhook.secret = None;
    bare.webhook.signing_secret = None;
    store.insert_job(bare).await.unwrap();
    let got = store.get_job("j3").await.unwrap().unwrap();
    assert!(got.job.webhook.secret.is_none() && got.job.webhook.signing_secret.is_none());
}
