//! API keys: insert, find, list and revoke.

use webhook_service::domain::{ApiKeyRecord, KeyLimits, KeyWebhook, NewApiKey, Secret};

use super::Backend;
use super::fixtures::URL;

contract!(keys_are_inserted_found_listed_and_revoked,);

/// A key named `name`; `secret` gives it a callback with that secret.
pub fn api_key(id: &str, name: &str, secret: Option<&str>) -> NewApiKey {
    NewApiKey {
        record: ApiKeyRecord {
            id: id.to_owned(),
            name: name.to_owned(),
            prefix: "sk_live_ab".into(),
            created_at_ms: id.len() as i64,
            revoked_at_ms: None,
            limits: KeyLimits {
                max_in_flight: Some(4),
                per_minute: None,
            },
            webhook: secret.map(|s| KeyWebhook {
                url: URL.into(),
                secret: Some(Secret::new(s)),
            }),
        },
        hash: [id.len() as u8; 32],
    }
}

async fn keys_are_inserted_found_listed_and_revoked(b: Backend) {
    let store = b.store.as_ref();
    let first = api_key("key_1", "ci", Some("leonardo-cb-key"));
    let second = api_key("key_22", "laptop", None);
    store.insert_key(first.clone()).await.unwrap();
    store.insert_key(second.clone()).await.unwrap();
    assert!(
        store.insert_key(first.clone()).await.is_err(),
        "a duplicate id or hash is refused"
    );
    assert_eq!(
        store.find_key(first.hash).await.unwrap(),
        Some(first.record.clone())
    );
    assert_eq!(store.find_key([0; 32]).await.unwrap(), None);
    let listed = store.list_keys().await.unwrap();
    assert_eq!(listed, vec![first.record.clone(), second.record.clone()]);

    assert!(store.revoke_key("laptop", 99).await.unwrap(), "by name");
    assert!(
        !store.revoke_key("key_22", 100).await.unwrap(),
        "already revoked"
    );
    assert!(store.revoke_key("key_1", 101).await.unwrap(), "by id");
    assert!(!store.revoke_key("nobody", 102).await.unwrap());
    let revoked = store.find_key(second.hash).await.unwrap().unwrap();
    assert_eq!(
        revoked.revoked_at_ms,
        Some(99),
        "a revoked key is still found"
    );
}
