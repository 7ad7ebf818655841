//! Signed, expiring URLs for generated images, served by the HTTP API's media route.
//!
//! A URL is `{base}/media/{job_id}/{index}.png?expires={unix seconds}&sig={hex}` where `sig`
//! is HMAC-SHA256 over `{job_id}/{index}/{expires}` with the service's media key, so a URL
//! cannot be forged or extended, and no lookup table is needed to check it.

use std::time::Duration;

use hmac::{Hmac, Mac};
use sha2::Sha256;

/// Makes and checks media URLs.
#[derive(Clone)]
pub struct MediaSigner {
    key: Vec<u8>,
    base_url: String,
    ttl: Duration,
}

impl std::fmt::Debug for MediaSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MediaSigner")
            .field("base_url", &self.base_url)
            .field("ttl", &self.ttl)
            .finish_non_exhaustive()
    }
}

/// Why a media URL was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MediaError {
    /// The signature does not match.
    #[error("invalid signature")]
    BadSignature,
    /// The URL's time is up.
    #[error("link expired")]
    Expired,
}

impl MediaSigner {
    /// A signer for URLs under `base_url` (the service's public HTTP address) valid for `ttl`.
    pub fn new(key: Vec<u8>, base_url: &str, ttl: Duration) -> Self {
        Self {
            key,
            base_url: base_url.trim_end_matches('/').to_owned(),
            ttl,
        }
    }

    /// The public URL of image `index` of `job_id`, signed at `now_ms`.
    pub fn url(&self, job_id: &str, index: u32, now_ms: i64) -> String {
        let expires = now_ms.div_euclid(1000) + self.ttl.as_secs() as i64;
        let sig = self.signature(job_id, index, expires);
        format!(
            "{}/media/{job_id}/{index}.png?expires={expires}&sig={sig}",
            self.base_url
        )
    }

    /// Checks a URL's `expires` and `sig` for image `index` of `job_id` at `now_ms`.
    pub fn verify(
        &self,
        job_id: &str,
        index: u32,
        expires: i64,
        sig: &str,
        now_ms: i64,
    ) -> Result<(), MediaError> {
        let given = hex_decode(sig).ok_or(MediaError::BadSignature)?;
        // verify_slice compares in constant time.
        self.mac(job_id, index, expires)
            .verify_slice(&given)
            .map_err(|_| MediaError::BadSignature)?;
        if now_ms.div_euclid(1000) > expires {
            return Err(MediaError::Expired);
        }
        Ok(())
    }

    fn mac(&self, job_id: &str, index: u32, expires: i64) -> Hmac<Sha256> {
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&self.key)
            .unwrap_or_else(|_| unreachable!("HMAC takes keys of any length"));
        mac.update(format!("{job_id}/{index}/{expires}").as_bytes());
        mac
    }

    fn signature(&self, job_id: &str, index: u32, expires: i64) -> String {
        self.mac(job_id, index, expires)
            .finalize()
            .into_bytes()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    }
}

fn hex_decode(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn signer() -> MediaSigner {
        MediaSigner::new(
            b"media-key".to_vec(),
            "http://svc.example/",
            Duration::from_secs(3600),
        )
    }

    fn parts(url: &str) -> (i64, String) {
        let query = url.split_once('?').unwrap().1;
        let (exp, sig) = query.split_once('&').unwrap();
        (
            exp.trim_start_matches("expires=").parse().unwrap(),
            sig.trim_start_matches("sig=").to_owned(),
        )
    }

    #[test]
    fn signed_url_verifies_until_it_expires() {
        let url = signer().url("job1", 2, 1_000_000);
        assert!(
            url.starts_with("http://svc.example/media/job1/2.png?expires=4600&sig="),
            "{url}"
        );
        let (exp, sig) = parts(&url);
        assert_eq!(signer().verify("job1", 2, exp, &sig, 4_600_000), Ok(()));
        assert_eq!(
            signer().verify("job1", 2, exp, &sig, 4_601_000),
            Err(MediaError::Expired)
        );
    }

    #[test]
    fn tampering_is_refused() {
        let (exp, sig) = parts(&signer().url("job1", 2, 0));
        assert_eq!(
            signer().verify("job1", 3, exp, &sig, 0),
            Err(MediaError::BadSignature)
        );
        assert_eq!(
            signer().verify("job2", 2, exp, &sig, 0),
            Err(MediaError::BadSignature)
        );
        assert_eq!(
            signer().verify("job1", 2, exp + 1, &sig, 0),
            Err(MediaError::BadSignature)
        );
        assert_eq!(
            signer().verify("job1", 2, exp, "zz", 0),
            Err(MediaError::BadSignature)
        );
    }
}
