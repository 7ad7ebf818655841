//! Standard Webhooks signatures (<https://www.standardwebhooks.com/>).
//!
//! A key is written `whsec_` followed by the standard base64 of 24 to 64 random bytes. A
//! message is signed as HMAC-SHA256 over `"{webhook-id}.{webhook-timestamp}.{body}"` and sent
//! in the `webhook-signature` header as `v1,<base64 of the MAC>`.
//!
//! A receiver checks a delivery like this:
//!
//! ```
//! use webhook_service::delivery::signing::SigningKey;
//!
//! let key = SigningKey::parse("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
//! let body = br#"{"test": 2432232314}"#;
//! let header = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=";
//! assert!(key.verify("msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, body, header));
//! ```
//!
//! (A real receiver also rejects timestamps far from its own clock, against replays.)

use std::fmt;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, Mac};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

/// The prefix of a Standard Webhooks key.
pub const KEY_PREFIX: &str = "whsec_";
/// The fewest bytes a key may decode to.
pub const MIN_KEY_BYTES: usize = 24;
/// The most bytes a key may decode to.
pub const MAX_KEY_BYTES: usize = 64;
/// The size of keys made by [`SigningKey::generate`].
pub const GENERATED_KEY_BYTES: usize = 32;

/// Why a string is not a usable signing key. The messages state the rule and never repeat
/// the key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SigningKeyError {
    /// The `whsec_` prefix is missing.
    #[error("must start with \"whsec_\" followed by base64")]
    MissingPrefix,
    /// The part after the prefix is not standard base64.
    #[error("the part after \"whsec_\" must be standard base64 (A-Z a-z 0-9 + /, padded with =)")]
    NotBase64,
    /// The key decodes to too few or too many bytes.
    #[error("must decode to {MIN_KEY_BYTES} to {MAX_KEY_BYTES} bytes; this one decodes to {0}")]
    BadLength(usize),
}

/// A Standard Webhooks HMAC key. Its `Debug` output hides the key bytes.
#[derive(Clone, PartialEq, Eq)]
pub struct SigningKey {
    bytes: Vec<u8>,
}

impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SigningKey(<{} bytes redacted>)", self.bytes.len())
    }
}

impl SigningKey {
    /// Parses `whsec_<base64>`, the key decoding to 24..=64 bytes.
    pub fn parse(text: &str) -> Result<SigningKey, SigningKeyError> {
        let encoded = text
            .trim()
            .strip_prefix(KEY_PREFIX)
            .ok_or(SigningKeyError::MissingPrefix)?;
        let bytes = STANDARD
            .decode(encoded)
            .map_err(|_| SigningKeyError::NotBase64)?;
        SigningKey::from_bytes(bytes)
    }

    /// Wraps raw key bytes (24..=64 of them).
    pub fn from_bytes(bytes: Vec<u8>) -> Result<SigningKey, SigningKeyError> {
        if !(MIN_KEY_BYTES..=MAX_KEY_BYTES).contains(&bytes.len()) {
            return Err(SigningKeyError::BadLength(bytes.len()));
        }
        Ok(SigningKey { bytes })
    }

    /// A fresh random key of [`GENERATED_KEY_BYTES`] bytes.
    pub fn generate() -> SigningKey {
        SigningKey {
            bytes: rand::random::<[u8; GENERATED_KEY_BYTES]>().to_vec(),
        }
    }

    /// The key in its `whsec_<base64>` form, for handing to a receiver.
    pub fn to_whsec_string(&self) -> String {
        format!("{KEY_PREFIX}{}", STANDARD.encode(&self.bytes))
    }

    fn mac(&self, msg_id: &str, timestamp_secs: i64, body: &[u8]) -> HmacSha256 {
        let mut mac =
            HmacSha256::new_from_slice(&self.bytes).expect("HMAC accepts keys of any length");
        mac.update(msg_id.as_bytes());
        mac.update(b".");
        mac.update(timestamp_secs.to_string().as_bytes());
        mac.update(b".");
        mac.update(body);
        mac
    }

    /// The `webhook-signature` header value: `v1,<base64 HMAC-SHA256 of "{id}.{timestamp}.{body}">`.
    pub fn sign(&self, msg_id: &str, timestamp_secs: i64, body: &[u8]) -> String {
        let tag = self
            .mac(msg_id, timestamp_secs, body)
            .finalize()
            .into_bytes();
        format!("v1,{}", STANDARD.encode(tag))
    }

    /// True if any `v1,` signature in `signature_header` (space-separated, as the spec allows
    /// during key rotation) matches. The comparison is constant-time.
    pub fn verify(
        &self,
        msg_id: &str,
        timestamp_secs: i64,
        body: &[u8],
        signature_header: &str,
    ) -> bool {
        signature_header.split_ascii_whitespace().any(|entry| {
            let Some(encoded) = entry.strip_prefix("v1,") else {
                return false;
            };
            let Ok(tag) = STANDARD.decode(encoded) else {
                return false;
            };
            self.mac(msg_id, timestamp_secs, body)
                .verify_slice(&tag)
                .is_ok()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    const ID: &str = "msg_p5jXN8AQM9LWM0D4loKWxJek";
    const TS: i64 = 1614265330;
    const BODY: &[u8] = br#"{"test": 2432232314}"#;
    const EXPECTED: &str = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=";

    #[test]
    fn signs_the_published_vector() {
        let key = SigningKey::parse(KEY).unwrap();
        assert_eq!(key.sign(ID, TS, BODY), EXPECTED);
    }

    #[test]
    fn verifies_own_and_rotated_signatures() {
        let key = SigningKey::parse(KEY).unwrap();
        assert!(key.verify(ID, TS, BODY, EXPECTED));
        assert!(key.verify(ID, TS, BODY, &format!("v1,AAAA {EXPECTED}")));
        assert!(!key.verify(ID, TS + 1, BODY, EXPECTED));
        assert!(!key.verify("msg_other", TS, BODY, EXPECTED));
        assert!(!key.verify(ID, TS, b"{}", EXPECTED));
        assert!(!key.verify(
            ID,
            TS,
            BODY,
            "v2,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
        ));
        assert!(!key.verify(ID, TS, BODY, "v1,not base64!"));
        assert!(!SigningKey::generate().verify(ID, TS, BODY, EXPECTED));
    }

    #[test]
    fn rejects_bad_keys_without_echoing_them() {
        assert_eq!(
            SigningKey::parse("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"),
            Err(SigningKeyError::MissingPrefix)
        );
        assert_eq!(
            SigningKey::parse("whsec_secret!!"),
            Err(SigningKeyError::NotBase64)
        );
        assert_eq!(
            SigningKey::parse("whsec_c2hvcnQ="),
            Err(SigningKeyError::BadLength(5))
        );
        let long = format!("whsec_{}", STANDARD.encode([7u8; 65]));
        assert_eq!(
            SigningKey::parse(&long),
            Err(SigningKeyError::BadLength(65))
        );
        for bad in ["whsec_secret!!", "whsec_c2hvcnQ=", "nope-secret"] {
            let message = SigningKey::parse(bad).unwrap_err().to_string();
            assert!(
                !message.contains(bad.trim_start_matches("whsec_")),
                "{message}"
            );
        }
        assert!(SigningKey::parse(&format!("whsec_{}", STANDARD.encode([7u8; 64]))).is_ok());
    }

    #[test]
    fn generated_keys_round_trip_and_debug_hides_bytes() {
        let key = SigningKey::generate();
        let text = key.to_whsec_string();
        assert!(text.starts_with("whsec_"));
        assert_eq!(SigningKey::parse(&text).unwrap(), key);
        assert_ne!(SigningKey::generate(), key);
        let debug = format!("{key:?}");
        assert!(!debug.contains(&text[6..]), "{debug}");
        assert_eq!(SigningKey::parse(KEY).unwrap().to_whsec_string(), KEY);
    }
}
