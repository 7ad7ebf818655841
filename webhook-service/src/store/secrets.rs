//! Encryption at rest of the secrets a store must keep to send callbacks after a restart:
//! webhook bearer secrets, per-job signing keys and API keys' callback keys.
//!
//! Each value is sealed with ChaCha20-Poly1305 under the service's secrets key, with a fresh
//! random 96-bit nonce, and stored as text `enc1:<base64(nonce || ciphertext || tag)>`. The
//! associated data is `<table.column>:<row id>`, so a value copied into another row or column
//! fails to open instead of being sent to the wrong receiver. A stored value without the
//! `enc1:` prefix was written by an older build in clear; it is read as is (the store
//! re-seals such values when it opens).
//!
//! The key is 32 bytes: [`SecretsKey::parse`] takes them raw, as 64 hex digits or as base64.

use std::fmt;
use std::path::Path;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{ChaCha20Poly1305, Key, Nonce};

use super::StoreError;
use crate::domain::Secret;
use crate::keyfile::{self, KeyFileError};

/// The prefix of a sealed value (version 1: ChaCha20-Poly1305, 12-byte nonce).
pub const SEALED_PREFIX: &str = "enc1:";

/// The suffix of the secrets key file created beside the database.
pub const KEY_FILE_SUFFIX: &str = ".secrets-key";

const NONCE_LEN: usize = 12;
const TAG_LEN: usize = 16;

/// The 32-byte key secrets are sealed with. Its `Debug` prints nothing of it.
#[derive(Clone)]
pub struct SecretsKey([u8; 32]);

impl fmt::Debug for SecretsKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SecretsKey(<redacted>)")
    }
}

impl SecretsKey {
    /// A random key, for a store that never outlives the process (in-memory tests).
    pub fn generate() -> Self {
        Self(rand::random())
    }

    /// A key from its 32 bytes.
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }

    /// Reads a key file's contents: exactly 32 raw bytes, or (surrounding whitespace ignored)
    /// 64 hex digits or the base64 of 32 bytes (`head -c32 /dev/urandom | base64`).
    pub fn parse(contents: &[u8]) -> Result<Self, String> {
        if let Ok(raw) = <[u8; 32]>::try_from(contents) {
            return Ok(Self(raw));
        }
        let text = std::str::from_utf8(contents).map(str::trim).map_err(|_| {
            format!(
                "holds {} bytes; a key is 32 raw bytes, 64 hex digits or base64 of 32 bytes",
                contents.len()
            )
        })?;
        let decoded = if text.len() == 64 && text.bytes().all(|b| b.is_ascii_hexdigit()) {
            (0..32)
                .map(|i| u8::from_str_radix(&text[2 * i..2 * i + 2], 16))
                .collect::<Result<Vec<u8>, _>>()
                .ok()
        } else {
            STANDARD.decode(text).ok()
        };
        decoded
            .and_then(|bytes| <[u8; 32]>::try_from(bytes).ok())
            .map(Self)
            .ok_or_else(|| {
                "is not a key: expected 32 raw bytes, 64 hex digits or base64 of 32 bytes"
                    .to_owned()
            })
    }

    /// Reads the key in `path` (see [`SecretsKey::parse`]).
    pub fn read_file(path: &Path) -> Result<Self, KeyFileError> {
        let contents = std::fs::read(path).map_err(|e| KeyFileError::new(path, e.to_string()))?;
        Self::parse(&contents).map_err(|detail| KeyFileError::new(path, detail))
    }

    /// The key kept beside the database (`<database>.secrets-key`), created with 32 random
    /// bytes, mode 0600, when missing: the same path the media key takes.
    pub fn beside(database: &Path) -> Result<Self, KeyFileError> {
        let (path, contents) = keyfile::load_or_create(database, KEY_FILE_SUFFIX)?;
        Self::parse(&contents).map_err(|detail| KeyFileError::new(&path, detail))
    }
}

/// Seals and opens stored secrets under one [`SecretsKey`].
#[derive(Clone)]
pub struct SecretBox {
    cipher: ChaCha20Poly1305,
}

impl fmt::Debug for SecretBox {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SecretBox(<redacted>)")
    }
}

impl SecretBox {
    /// A box sealing with `key`.
    pub fn new(key: &SecretsKey) -> Self {
        Self {
            cipher: ChaCha20Poly1305::new(Key::from_slice(&key.0)),
        }
    }

    /// Seals `plain` for the `column` (`table.column`) of the row `row_id`.
    pub fn seal(
        &self,
        column: &'static str,
        row_id: &str,
        plain: &str,
    ) -> Result<String, StoreError> {
        let nonce: [u8; NONCE_LEN] = rand::random();
        let aad = associated_data(column, row_id);
        let sealed = self
            .cipher
            .encrypt(
                Nonce::from_slice(&nonce),
                Payload {
                    msg: plain.as_bytes(),
                    aad: aad.as_bytes(),
                },
            )
            // ChaCha20-Poly1305 fails only past 256 GiB of plain text.
            .map_err(|_| StoreError::Corrupt {
                what: column,
                detail: "cannot encrypt the value".to_owned(),
            })?;
        let mut bytes = Vec::with_capacity(NONCE_LEN + sealed.len());
        bytes.extend_from_slice(&nonce);
        bytes.extend_from_slice(&sealed);
        Ok(format!("{SEALED_PREFIX}{}", STANDARD.encode(bytes)))
    }

    /// The secret stored in `column` of the row `row_id`: opened when sealed, as is when written
    /// in clear by an older build. A value that fails to open is [`StoreError::Corrupt`] naming
    /// the column and never quoting the value.
    pub fn open(
        &self,
        column: &'static str,
        row_id: &str,
        stored: String,
    ) -> Result<Secret, StoreError> {
        let Some(encoded) = stored.strip_prefix(SEALED_PREFIX) else {
            return Ok(Secret::new(stored));
        };
        let corrupt = |detail: &str| StoreError::Corrupt {
            what: column,
            detail: detail.to_owned(),
        };
        let bytes = STANDARD
            .decode(encoded)
            .map_err(|_| corrupt("a sealed value (enc1:) that is not valid base64"))?;
        if bytes.len() < NONCE_LEN + TAG_LEN {
            return Err(corrupt(
                "a sealed value (enc1:) too short to hold a nonce and a tag",
            ));
        }
        let (nonce, sealed) = bytes.split_at(NONCE_LEN);
        let aad = associated_data(column, row_id);
        let plain = self
            .cipher
            .decrypt(
                Nonce::from_slice(nonce),
                Payload {
                    msg: sealed,
                    aad: aad.as_bytes(),
                },
            )
            .map_err(|_| {
                corrupt(
                    "cannot decrypt: the secrets key does not match the one this value was \
                     written with (check --secrets-key-file or <database>.secrets-key), or the \
                     value was altered or copied from another row",
                )
            })?;
        String::from_utf8(plain)
            .map(Secret::new)
            .map_err(|_| corrupt("a sealed value that is not UTF-8 text"))
    }

    /// Whether a stored value is sealed (as opposed to a clear value from an older build).
    pub fn is_sealed(stored: &str) -> bool {
        stored.starts_with(SEALED_PREFIX)
    }
}

fn associated_data(column: &str, row_id: &str) -> String {
    format!("{column}:{row_id}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sealer() -> SecretBox {
        SecretBox::new(&SecretsKey::generate())
    }

    #[test]
    fn round_trip_with_a_fresh_nonce_each_time() {
        let b = sealer();
        let one = b.seal("jobs.webhook_secret", "job-1", "hunter2").unwrap();
        let two = b.seal("jobs.webhook_secret", "job-1", "hunter2").unwrap();
        assert!(one.starts_with("enc1:") && !one.contains("hunter2"));
        assert_ne!(one, two, "each value gets its own nonce");
        assert_eq!(
            b.open("jobs.webhook_secret", "job-1", one)
                .unwrap()
                .expose(),
            "hunter2"
        );
        assert_eq!(
            b.open("jobs.webhook_secret", "job-1", two)
                .unwrap()
                .expose(),
            "hunter2"
        );
        let empty = b.seal("jobs.webhook_secret", "job-1", "").unwrap();
        assert_eq!(
            b.open("jobs.webhook_secret", "job-1", empty)
                .unwrap()
                .expose(),
            ""
        );
    }

    fn assert_refused(result: Result<Secret, StoreError>, column: &str) {
        match result {
            Err(StoreError::Corrupt { what, detail }) => {
                assert_eq!(what, column);
                assert!(
                    !detail.contains("hunter2"),
                    "the error must not quote the value: {detail}"
                );
            }
            other => panic!("expected Corrupt, got {other:?}"),
        }
    }

    #[test]
    fn wrong_key_fails_naming_the_column_and_the_key() {
        let sealed = sealer()
            .seal("jobs.signing_secret", "job-1", "hunter2")
            .unwrap();
        let err = sealer().open("jobs.signing_secret", "job-1", sealed.clone());
        let message = err.as_ref().map(|_| ()).unwrap_err().to_string();
        assert!(
            message.contains("jobs.signing_secret")
                && message.contains("secrets key does not match"),
            "{message}"
        );
        assert!(
            !message.contains(&sealed[5..]),
            "the error must not quote the stored value"
        );
        assert_refused(err, "jobs.signing_secret");
    }

    #[test]
    fn tampered_ciphertext_fails() {
        let b = sealer();
        let sealed = b.seal("jobs.webhook_secret", "job-1", "hunter2").unwrap();
        let mut bytes = STANDARD.decode(&sealed[5..]).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 1;
        let tampered = format!("enc1:{}", STANDARD.encode(&bytes));
        assert_refused(
            b.open("jobs.webhook_secret", "job-1", tampered),
            "jobs.webhook_secret",
        );
        assert_refused(
            b.open("jobs.webhook_secret", "job-1", "enc1:!!".into()),
            "jobs.webhook_secret",
        );
        assert_refused(
            b.open("jobs.webhook_secret", "job-1", "enc1:AAAA".into()),
            "jobs.webhook_secret",
        );
    }

    #[test]
    fn a_value_moved_to_another_row_or_column_fails() {
        let b = sealer();
        let sealed = b.seal("jobs.webhook_secret", "job-1", "hunter2").unwrap();
        assert_refused(
            b.open("jobs.webhook_secret", "job-2", sealed.clone()),
            "jobs.webhook_secret",
        );
        assert_refused(
            b.open("jobs.signing_secret", "job-1", sealed),
            "jobs.signing_secret",
        );
    }

    #[test]
    fn legacy_clear_text_passes_through() {
        let b = sealer();
        assert_eq!(
            b.open("api_keys.webhook_secret", "key_1", "hunter2".into())
                .unwrap()
                .expose(),
            "hunter2"
        );
        assert!(!SecretBox::is_sealed("hunter2"));
        assert!(SecretBox::is_sealed(
            &b.seal("api_keys.webhook_secret", "key_1", "hunter2")
                .unwrap()
        ));
    }

    #[test]
    fn key_files_hold_raw_hex_or_base64() {
        let bytes: [u8; 32] = std::array::from_fn(|i| i as u8 * 7);
        let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
        let b64 = format!("{}\n", STANDARD.encode(bytes));
        let expected = SecretBox::new(&SecretsKey::from_bytes(bytes))
            .seal("c", "r", "v")
            .unwrap();
        for contents in [bytes.to_vec(), hex.into_bytes(), b64.into_bytes()] {
            let key = SecretsKey::parse(&contents).unwrap();
            assert_eq!(
                SecretBox::new(&key)
                    .open("c", "r", expected.clone())
                    .unwrap()
                    .expose(),
                "v"
            );
        }
        for bad in [
            &b"short"[..],
            &[0u8; 31][..],
            b"not base64 at all, no",
            &STANDARD.encode([0u8; 16]).into_bytes(),
        ] {
            let err = SecretsKey::parse(bad).unwrap_err();
            assert!(err.contains("32"), "{err}");
        }
        assert_eq!(
            format!("{:?}", SecretsKey::from_bytes(bytes)),
            "SecretsKey(<redacted>)"
        );
    }

    #[test]
    fn beside_creates_the_key_once() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("jobs.db");
        let sealed = SecretBox::new(&SecretsKey::beside(&db).unwrap())
            .seal("c", "r", "v")
            .unwrap();
        assert!(dir.path().join("jobs.db.secrets-key").exists());
        let again = SecretBox::new(&SecretsKey::beside(&db).unwrap());
        assert_eq!(again.open("c", "r", sealed).unwrap().expose(), "v");
    }
}
