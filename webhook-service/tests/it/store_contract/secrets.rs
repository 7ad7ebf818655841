//! Secrets sealed at rest: what the database holds, reading them back, and a store opened with
//! another secrets key.

use webhook_service::store::StoreError;
use webhook_service::store::secrets::{SecretBox, SecretsKey};

use super::Backend;
use super::fixtures::{SECRET_COLUMNS, URL, delivery, finish, job};
use super::keys::api_key;

contract!(
    secrets_are_stored_sealed_and_read_back_in_clear,
    another_key_is_refused_at_open_naming_the_column,
);

/// Every secret column's values, read past the store.
async fn secret_columns(b: &Backend) -> Vec<Option<String>> {
    let mut all = Vec::new();
    for sql in SECRET_COLUMNS {
        all.extend(b.texts(sql).await);
    }
    all
}

async fn secrets_are_stored_sealed_and_read_back_in_clear(b: Backend) {
    let store = b.store.as_ref();
    store.insert_job(job("j1", None, 100)).await.unwrap();
    store
        .insert_key(api_key("key_1", "ci", Some("leonardo-cb-key")))
        .await
        .unwrap();
    let columns = secret_columns(&b).await;
    assert_eq!(columns.len(), 3);
    for value in columns {
        let value = value.unwrap();
        assert!(
            value.starts_with("enc1:"),
            "stored in clear: a value without the enc1: prefix"
        );
        for clear in ["bearer-s3cret", "whsec_c2lnbmluZw==", "leonardo-cb-key"] {
            assert!(!value.contains(clear), "a secret is stored in clear");
        }
    }
    let got = store.get_job("j1").await.unwrap().unwrap();
    assert_eq!(got.job.webhook.secret.unwrap().expose(), "bearer-s3cret");
    assert_eq!(
        got.job.webhook.signing_secret.unwrap().expose(),
        "whsec_c2lnbmluZw=="
    );
    let keys = store.list_keys().await.unwrap();
    let key_secret = keys[0].webhook.as_ref().unwrap().secret.as_ref().unwrap();
    assert_eq!(key_secret.expose(), "leonardo-cb-key");
    assert!(
        store
            .finish_job(finish("j1", 1000, vec![delivery("d1", URL)]))
            .await
            .unwrap()
    );
    let tasks = store.claim_due_deliveries(1000, 2000, 10).await.unwrap();
    assert_eq!(tasks[0].secret.as_ref().unwrap().expose(), "bearer-s3cret");
    assert_eq!(
        tasks[0].signing_secret.as_ref().unwrap().expose(),
        "whsec_c2lnbmluZw=="
    );
}

async fn another_key_is_refused_at_open_naming_the_column(b: Backend) {
    b.store.insert_job(job("j1", None, 100)).await.unwrap();
    let other = SecretBox::new(&SecretsKey::from_bytes([9; 32]));
    match b.open_with(other).await {
        Err(
            err @ StoreError::Corrupt {
                what: "jobs.webhook_secret",
                ..
            },
        ) => {
            let message = err.to_string();
            assert!(message.contains("secrets key does not match"), "{message}");
            assert!(!message.contains("bearer-s3cret"), "{message}");
        }
        Err(other) => panic!("expected a Corrupt error on jobs.webhook_secret, got {other}"),
        Ok(_) => panic!("a store with the wrong key started"),
    }
}
