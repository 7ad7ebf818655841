//! Callers: API keys, how a request presents one, and the tower layer that resolves it.
//!
//! A key is `sds_` followed by 43 characters of base64url (256 random bits). Only its SHA-256 is
//! stored: the key is random and long, so a fast hash is as good as a slow one here, and
//! the lookup stays one indexed query. [`KeyRing`] creates, lists, revokes and checks keys;
//! [`layer::AuthLayer`] runs in front of both the HTTP and the gRPC face and leaves an
//! [`Authenticated`] in each request's extensions, which handlers turn into a [`Caller`] or a
//! 401 / `UNAUTHENTICATED`.

pub mod credential;
pub mod layer;
pub mod limits;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use base64::Engine;
use sha2::{Digest, Sha256};

use crate::clock::Clock;
use crate::domain::{ApiKeyRecord, KeyLimits, KeyWebhook, NewApiKey};
use crate::store::{Store, StoreError};

/// Who made a request: the key it presented, or the anonymous caller of a service running
/// with `--no-auth`.
#[derive(Debug, Clone, PartialEq)]
pub struct Caller {
    /// The key's id; empty for the anonymous caller. Jobs are owned by this id.
    pub key_id: String,
    /// The key's name, for logs.
    pub name: String,
    /// The key's own limits (None fields take the service defaults).
    pub limits: KeyLimits,
    /// The callback configured on the key (Leonardo-shaped jobs go there).
    pub webhook: Option<KeyWebhook>,
}

impl Caller {
    /// The caller of a service without authentication: owns the jobs with an empty owner.
    pub fn anonymous() -> Self {
        Self {
            key_id: String::new(),
            name: "anonymous".to_owned(),
            limits: KeyLimits::default(),
            webhook: None,
        }
    }

    fn from_record(record: ApiKeyRecord) -> Self {
        Self {
            key_id: record.id,
            name: record.name,
            limits: record.limits,
            webhook: record.webhook,
        }
    }
}

/// Why a request is not authenticated.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// The request carried no credential.
    #[error(
        "an API key is required: send it as `Authorization: Bearer <key>` or `x-api-key: <key>`"
    )]
    Missing,
    /// The credential is not a known, active key.
    #[error("the API key is not valid or has been revoked")]
    Invalid,
    /// The key store could not be read.
    #[error("the key store is unavailable; try again")]
    Unavailable,
}

/// The outcome of authentication, left in the request's extensions by the layer.
#[derive(Debug, Clone)]
pub struct Authenticated(pub Result<Caller, AuthError>);

/// Whether callers must present a key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthMode {
    /// Every API call needs a valid key.
    Required,
    /// Development mode (`--no-auth`): every request is the anonymous caller.
    Disabled,
}

/// How long a checked key is trusted before the store is asked again; bounds how long a
/// revoked key keeps working.
const CACHE_TTL: Duration = Duration::from_secs(10);

/// API keys: creation, listing, revocation and checking, with a short cache of checks.
pub struct KeyRing {
    store: Arc<dyn Store>,
    clock: Clock,
    mode: AuthMode,
    cache: Mutex<HashMap<[u8; 32], CachedCheck>>,
}

/// When a key hash was checked, and the caller it stood for (None: not a valid key).
type CachedCheck = (Instant, Option<Caller>);

/// A key just created: its value (shown once) and its record.
#[derive(Debug)]
pub struct CreatedKey {
    /// The key to give to the caller; it is not stored anywhere.
    pub key: String,
    /// The stored record.
    pub record: ApiKeyRecord,
}

/// What a new key is created with.
#[derive(Debug, Clone, Default)]
pub struct KeySpec {
    /// A name for people.
    pub name: String,
    /// Its limits.
    pub limits: KeyLimits,
    /// Its key-level callback.
    pub webhook: Option<KeyWebhook>,
}

fn hash(key: &str) -> [u8; 32] {
    Sha256::digest(key.as_bytes()).into()
}

impl KeyRing {
    /// A key ring over `store`.
    pub fn new(store: Arc<dyn Store>, clock: Clock, mode: AuthMode) -> Self {
        Self {
            store,
            clock,
            mode,
            cache: Mutex::new(HashMap::new()),
        }
    }

    /// Whether keys are required.
    pub fn mode(&self) -> AuthMode {
        self.mode
    }

    /// Creates and stores a key; the returned value is the only copy of the key.
    pub async fn create(&self, spec: KeySpec) -> Result<CreatedKey, StoreError> {
        let secret: [u8; 32] = rand::random();
        let key = format!(
            "sds_{}",
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(secret)
        );
        let record = ApiKeyRecord {
            id: format!("key_{}", uuid::Uuid::now_v7().simple()),
            name: spec.name,
            prefix: key.chars().take(10).collect(),
            created_at_ms: self.clock.now_ms(),
            revoked_at_ms: None,
            limits: spec.limits,
            webhook: spec.webhook,
        };
        self.store
            .insert_key(NewApiKey {
                record: record.clone(),
                hash: hash(&key),
            })
            .await?;
        Ok(CreatedKey { key, record })
    }

    /// Every key, revoked ones included.
    pub async fn list(&self) -> Result<Vec<ApiKeyRecord>, StoreError> {
        self.store.list_keys().await
    }

    /// Revokes a key by id or name; false if no active key has it.
    pub async fn revoke(&self, id_or_name: &str) -> Result<bool, StoreError> {
        let revoked = self
            .store
            .revoke_key(id_or_name, self.clock.now_ms())
            .await?;
        self.cache
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clear();
        Ok(revoked)
    }

    /// The caller a credential stands for.
    pub async fn authenticate(&self, credential: Option<&str>) -> Result<Caller, AuthError> {
        if self.mode == AuthMode::Disabled {
            return Ok(Caller::anonymous());
        }
        let credential = credential
            .filter(|c| !c.is_empty())
            .ok_or(AuthError::Missing)?;
        let digest = hash(credential);
        if let Some((at, cached)) = self
            .cache
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&digest)
            && at.elapsed() < CACHE_TTL
        {
            return cached.clone().ok_or(AuthError::Invalid);
        }
        let found = self.store.find_key(digest).await.map_err(|err| {
            tracing::error!(error = %err, "cannot read API keys");
            AuthError::Unavailable
        })?;
        let caller = found
            .filter(|k| k.revoked_at_ms.is_none())
            .map(Caller::from_record);
        let mut cache = self.cache.lock().unwrap_or_else(PoisonError::into_inner);
        if cache.len() > 10_000 {
            cache.clear(); // bounded: unknown keys sent in a flood must not grow it forever
        }
        cache.insert(digest, (Instant::now(), caller.clone()));
        caller.ok_or(AuthError::Invalid)
    }
}
