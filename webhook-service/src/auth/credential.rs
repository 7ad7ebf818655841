//! How a request presents its API key. Every vendor's own convention is accepted, so a client
//! moving from that vendor keeps its code:
//!
//! - `Authorization: Bearer <key>` (RunPod, Leonardo, our API, gRPC metadata);
//! - `Authorization: <key>` with no scheme (Cerebrium; RunPod accepts it too);
//! - `Authorization: Basic base64(user:key)` (A1111's `--api-auth`, e.g. `webuiapi.set_auth`):
//!   the password is the key;
//! - `x-api-key: <key>` (Diffute).

use base64::Engine;
use http::HeaderMap;

/// The key a request carries, if any.
pub fn from_headers(headers: &HeaderMap) -> Option<String> {
    if let Some(value) = headers
        .get(http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
    {
        let value = value.trim();
        let (scheme, rest) = value
            .split_once(' ')
            .map_or(("", value), |(s, r)| (s, r.trim()));
        if scheme.eq_ignore_ascii_case("bearer") {
            return Some(rest.to_owned());
        }
        if scheme.eq_ignore_ascii_case("basic") {
            let decoded = base64::engine::general_purpose::STANDARD
                .decode(rest)
                .ok()?;
            let text = String::from_utf8(decoded).ok()?;
            return Some(
                text.split_once(':')
                    .map_or(text.as_str(), |(_, password)| password)
                    .to_owned(),
            );
        }
        if scheme.is_empty() {
            return Some(value.to_owned());
        }
    }
    headers
        .get("x-api-key")
        .and_then(|v| v.to_str().ok())
        .map(|v| v.trim().to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(name: &'static str, value: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(name, value.parse().unwrap());
        h
    }

    #[test]
    fn every_vendor_convention_yields_the_key() {
        assert_eq!(
            from_headers(&headers("authorization", "Bearer sds_abc")).as_deref(),
            Some("sds_abc")
        );
        assert_eq!(
            from_headers(&headers("authorization", "bearer  sds_abc ")).as_deref(),
            Some("sds_abc")
        );
        assert_eq!(
            from_headers(&headers("authorization", "sds_abc")).as_deref(),
            Some("sds_abc")
        );
        assert_eq!(
            from_headers(&headers("x-api-key", "sds_abc")).as_deref(),
            Some("sds_abc")
        );
        // base64("user:sds_abc")
        assert_eq!(
            from_headers(&headers("authorization", "Basic dXNlcjpzZHNfYWJj")).as_deref(),
            Some("sds_abc")
        );
        assert_eq!(from_headers(&HeaderMap::new()), None);
    }
}
