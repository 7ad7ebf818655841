//! The guarded HTTP client that sends callbacks.
//!
//! TLS is rustls with the ring provider, the webpki roots plus an optional extra CA bundle,
//! certificates always verified. Redirects are never followed, proxies never used, and every
//! address is checked by the [`ssrf`](super::ssrf) policy before a connection is made. A send
//! never panics: it ends as a [`SendOutcome`].

use std::collections::HashMap;
use std::error::Error as StdError;
use std::fmt;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use ipnet::IpNet;
use reqwest::header::{HeaderMap, HeaderName, HeaderValue, RETRY_AFTER};
use rustls::pki_types::CertificateDer;

use super::ssrf::{AddressPolicy, GuardedResolver, ResolveError};

/// The most of a response body kept in [`SendOutcome::Response::body_excerpt`], in bytes.
pub const EXCERPT_BYTES: usize = 1024;

/// How the client connects and what it may reach.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// Limit for establishing a connection (TCP and TLS). Default 5 s.
    pub connect_timeout: Duration,
    /// Limit for a whole attempt, response body included. Default 15 s.
    pub timeout: Duration,
    /// Whether plain `http://` URLs may be used. Default false.
    pub allow_http: bool,
    /// Non-public subnets callbacks may reach anyway. Default none.
    pub allow_private: Vec<IpNet>,
    /// PEM certificates trusted in addition to the webpki roots.
    pub extra_ca_pem: Option<Vec<u8>>,
    /// Host names resolved to these addresses instead of through DNS (the policy still applies).
    pub resolve_overrides: HashMap<String, Vec<IpAddr>>,
    /// Reading a response body stops after this many bytes. Default 64 KiB.
    pub max_response_bytes: usize,
    /// The `User-Agent` header.
    pub user_agent: String,
}

impl Default for ClientConfig {
    fn default() -> Self {
        Self {
            connect_timeout: Duration::from_secs(5),
            timeout: Duration::from_secs(15),
            allow_http: false,
            allow_private: Vec::new(),
            extra_ca_pem: None,
            resolve_overrides: HashMap::new(),
            max_response_bytes: 64 * 1024,
            user_agent: concat!("sdserve-webhook/", env!("CARGO_PKG_VERSION")).to_owned(),
        }
    }
}

/// Why a client could not be built.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The extra CA bundle is not readable PEM.
    #[error("extra CA bundle is not valid PEM: {0}")]
    CaPem(std::io::Error),
    /// The extra CA bundle holds no certificate.
    #[error("extra CA bundle contains no \"BEGIN CERTIFICATE\" block")]
    CaPemEmpty,
    /// A certificate of the extra CA bundle is unusable as a trust anchor.
    #[error("certificate #{index} of the extra CA bundle is not a usable CA certificate: {source}")]
    CaCertificate {
        /// 1-based position in the bundle.
        index: usize,
        /// What rustls said.
        source: rustls::Error,
    },
    /// rustls refused the configuration.
    #[error("TLS configuration: {0}")]
    Tls(rustls::Error),
    /// reqwest refused the configuration.
    #[error("HTTP client configuration: {0}")]
    Build(reqwest::Error),
}

/// What kind of failure ended an attempt without a response.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FailureKind {
    /// Not attempted: invalid URL, forbidden scheme or refused address.
    Refused,
    /// A connect or total time limit ran out.
    Timeout,
    /// The connection could not be made (DNS, refused, reset).
    Connect,
    /// The TLS handshake failed (certificate not trusted, wrong name, protocol).
    Tls,
    /// Anything else.
    Other,
}

impl fmt::Display for FailureKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Refused => "refused",
            Self::Timeout => "timeout",
            Self::Connect => "connect",
            Self::Tls => "tls",
            Self::Other => "other",
        })
    }
}

/// How one send ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SendOutcome {
    /// The receiver answered (any status, redirects included: they are not followed).
    Response {
        /// HTTP status code.
        status: u16,
        /// The `Retry-After` delay, from delta-seconds or an HTTP date (zero if past).
        retry_after: Option<Duration>,
        /// The start of the body, at most [`EXCERPT_BYTES`] bytes of lossy UTF-8.
        body_excerpt: String,
    },
    /// No response.
    Failed {
        /// The class of failure.
        kind: FailureKind,
        /// A human explanation, written to follow the kind (`"{kind}: {reason}"`); never
        /// contains a header value.
        reason: String,
    },
}

impl SendOutcome {
    fn failed(kind: FailureKind, reason: impl Into<String>) -> Self {
        Self::Failed {
            kind,
            reason: reason.into(),
        }
    }
}

/// The callback sender; cheap to share by reference across tasks.
#[derive(Debug, Clone)]
pub struct WebhookClient {
    http: reqwest::Client,
    policy: AddressPolicy,
    allow_http: bool,
    connect_timeout: Duration,
    timeout: Duration,
    max_response_bytes: usize,
}

fn tls_config(extra_ca_pem: Option<&[u8]>) -> Result<rustls::ClientConfig, ClientError> {
    let mut roots = rustls::RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
    };
    if let Some(pem) = extra_ca_pem {
        let certs: Vec<CertificateDer<'static>> = rustls_pemfile::certs(&mut &pem[..])
            .collect::<Result<_, _>>()
            .map_err(ClientError::CaPem)?;
        if certs.is_empty() {
            return Err(ClientError::CaPemEmpty);
        }
        for (i, cert) in certs.into_iter().enumerate() {
            roots
                .add(cert)
                .map_err(|source| ClientError::CaCertificate {
                    index: i + 1,
                    source,
                })?;
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(ClientError::Tls)?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(config)
}

impl WebhookClient {
    /// Builds a client from `config`; fails on an unusable CA bundle.
    pub fn new(config: &ClientConfig) -> Result<WebhookClient, ClientError> {
        let policy = AddressPolicy::new(config.allow_private.clone());
        let resolver = GuardedResolver::new(policy.clone(), config.resolve_overrides.clone());
        let http = reqwest::Client::builder()
            .use_preconfigured_tls(tls_config(config.extra_ca_pem.as_deref())?)
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .connect_timeout(config.connect_timeout)
            .timeout(config.timeout)
            .dns_resolver(Arc::new(resolver))
            .https_only(!config.allow_http)
            .user_agent(config.user_agent.clone())
            .build()
            .map_err(ClientError::Build)?;
        Ok(WebhookClient {
            http,
            policy,
            allow_http: config.allow_http,
            connect_timeout: config.connect_timeout,
            timeout: config.timeout,
            max_response_bytes: config.max_response_bytes,
        })
    }

    /// POSTs `body` with `headers` to `url` and reports how it went.
    pub async fn send(
        &self,
        url: &str,
        headers: &[(String, String)],
        body: Vec<u8>,
    ) -> SendOutcome {
        let url = match self.admit(url) {
            Ok(url) => url,
            Err(outcome) => return outcome,
        };
        let headers = match header_map(headers) {
            Ok(headers) => headers,
            Err(outcome) => return outcome,
        };
        let mut response = match self.http.post(url).headers(headers).body(body).send().await {
            Ok(response) => response,
            Err(err) => return self.classify(err),
        };
        let status = response.status().as_u16();
        let retry_after = response
            .headers()
            .get(RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(parse_retry_after);
        // An address only the private-address allowlist admits is an internal service: its
        // answer is not kept, so a caller cannot read internal services through ListDeliveries.
        let blind = response
            .remote_addr()
            .is_none_or(|addr| super::ssrf::classify(addr.ip()).is_some());
        let mut kept = Vec::new();
        let mut read = 0usize;
        while read <= self.max_response_bytes {
            match response.chunk().await {
                Ok(Some(chunk)) => {
                    read += chunk.len();
                    let room = EXCERPT_BYTES.saturating_sub(kept.len());
                    kept.extend_from_slice(&chunk[..chunk.len().min(room)]);
                }
                // A body cut short (or too slow) still leaves a status worth reporting.
                Ok(None) | Err(_) => break,
            }
        }
        let body_excerpt = match blind {
            true => format!("({read} bytes; not kept: the receiver is at a private address)"),
            false => excerpt(&kept),
        };
        SendOutcome::Response {
            status,
            retry_after,
            body_excerpt,
        }
    }

    /// Parses the URL and applies the scheme and IP-literal rules the resolver cannot see.
    fn admit(&self, url: &str) -> Result<reqwest::Url, SendOutcome> {
        let parsed = reqwest::Url::parse(url)
            .map_err(|e| SendOutcome::failed(FailureKind::Refused, format!("invalid URL: {e}")))?;
        match parsed.scheme() {
            "https" => {}
            "http" if self.allow_http => {}
            "http" => {
                return Err(SendOutcome::failed(
                    FailureKind::Refused,
                    "plain http:// URLs are not allowed; use https:// (or enable allow_http)",
                ));
            }
            other => {
                return Err(SendOutcome::failed(
                    FailureKind::Refused,
                    format!("URL scheme {other:?} is not allowed; use https://"),
                ));
            }
        }
        let ip = match parsed.host() {
            Some(url::Host::Ipv4(ip)) => IpAddr::V4(ip),
            Some(url::Host::Ipv6(ip)) => IpAddr::V6(ip),
            Some(url::Host::Domain(_)) => return Ok(parsed),
            None => {
                return Err(SendOutcome::failed(
                    FailureKind::Refused,
                    "invalid URL: no host",
                ));
            }
        };
        match self.policy.check(ip) {
            Ok(()) => Ok(parsed),
            Err(refusal) => Err(SendOutcome::failed(
                FailureKind::Refused,
                format!("address {} is {}", refusal.addr, refusal.class),
            )),
        }
    }

    fn classify(&self, err: reqwest::Error) -> SendOutcome {
        let err = err.without_url();
        let mut source: Option<&(dyn StdError + 'static)> = Some(&err);
        while let Some(e) = source {
            if let Some(resolve) = e.downcast_ref::<ResolveError>() {
                let kind = match resolve {
                    ResolveError::Refused { .. } => FailureKind::Refused,
                    _ => FailureKind::Connect,
                };
                let text = resolve.to_string();
                let reason = text.strip_prefix("refused: ").unwrap_or(&text);
                return SendOutcome::failed(kind, reason);
            }
            if let Some(tls) = rustls_error(e) {
                return SendOutcome::failed(
                    FailureKind::Tls,
                    format!("TLS handshake failed: {tls}"),
                );
            }
            source = e.source();
        }
        if err.is_timeout() {
            let reason = if err.is_connect() {
                format!("could not connect within {:?}", self.connect_timeout)
            } else {
                format!("no complete response within {:?}", self.timeout)
            };
            return SendOutcome::failed(FailureKind::Timeout, reason);
        }
        let detail = innermost(&err);
        if err.is_connect() {
            return SendOutcome::failed(
                FailureKind::Connect,
                format!("could not connect: {detail}"),
            );
        }
        SendOutcome::failed(FailureKind::Other, format!("request failed: {detail}"))
    }
}

/// The rustls error inside `e`, whether `e` is one or (possibly nested) io errors wrapping
/// one: an io error's `source()` skips its own payload, so payloads are unwrapped directly.
fn rustls_error<'a>(mut e: &'a (dyn StdError + 'static)) -> Option<&'a rustls::Error> {
    loop {
        if let Some(tls) = e.downcast_ref::<rustls::Error>() {
            return Some(tls);
        }
        e = e.downcast_ref::<std::io::Error>()?.get_ref()?;
    }
}

/// The deepest message in the chain, the one that says what actually went wrong.
fn innermost(err: &(dyn StdError + 'static)) -> String {
    let mut last = err;
    while let Some(next) = last.source() {
        last = next;
    }
    last.to_string()
}

fn header_map(headers: &[(String, String)]) -> Result<HeaderMap, SendOutcome> {
    let mut map = HeaderMap::with_capacity(headers.len());
    for (name, value) in headers {
        let header = HeaderName::from_bytes(name.as_bytes()).map_err(|_| {
            SendOutcome::failed(FailureKind::Other, format!("invalid header name {name:?}"))
        })?;
        let mut value = HeaderValue::from_str(value).map_err(|_| {
            SendOutcome::failed(
                FailureKind::Other,
                format!("header {header} has an invalid value"),
            )
        })?;
        if header == reqwest::header::AUTHORIZATION {
            value.set_sensitive(true);
        }
        map.append(header, value);
    }
    Ok(map)
}

/// `Retry-After` as delta-seconds or an HTTP date; a past date gives zero.
pub fn parse_retry_after(value: &str) -> Option<Duration> {
    let value = value.trim();
    if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) {
        return Some(Duration::from_secs(value.parse().unwrap_or(u64::MAX)));
    }
    let at = httpdate::parse_http_date(value).ok()?;
    Some(
        at.duration_since(SystemTime::now())
            .unwrap_or(Duration::ZERO),
    )
}

/// At most [`EXCERPT_BYTES`] bytes of `bytes` as lossy UTF-8, not splitting a trailing character.
fn excerpt(bytes: &[u8]) -> String {
    let mut end = bytes.len().min(EXCERPT_BYTES);
    if let Err(e) = std::str::from_utf8(&bytes[..end])
        && e.error_len().is_none()
    {
        end = e.valid_up_to();
    }
    let mut text = String::from_utf8_lossy(&bytes[..end]).into_owned();
    let mut cut = text.len().min(EXCERPT_BYTES);
    while !text.is_char_boundary(cut) {
        cut -= 1;
    }
    text.truncate(cut);
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_forms() {
        assert_eq!(parse_retry_after("120"), Some(Duration::from_secs(120)));
        assert_eq!(parse_retry_after(" 0 "), Some(Duration::ZERO));
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT"),
            Some(Duration::ZERO)
        );
        let later = httpdate::fmt_http_date(SystemTime::now() + Duration::from_secs(300));
        let parsed = parse_retry_after(&later).unwrap();
        assert!(
            parsed > Duration::from_secs(290) && parsed <= Duration::from_secs(300),
            "{parsed:?}"
        );
        assert_eq!(parse_retry_after("soon"), None);
        assert_eq!(parse_retry_after("-5"), None);
        assert_eq!(parse_retry_after(""), None);
    }

    #[test]
    fn excerpt_is_bounded_and_keeps_whole_characters() {
        assert_eq!(excerpt(b"ok"), "ok");
        assert_eq!(excerpt(&[b'a'; 5000]).len(), EXCERPT_BYTES);
        let mut bytes = vec![b'a'; EXCERPT_BYTES - 1];
        bytes.extend_from_slice("é".as_bytes());
        assert_eq!(excerpt(&bytes), "a".repeat(EXCERPT_BYTES - 1));
        let invalid = vec![0xffu8; 2000];
        let text = excerpt(&invalid);
        assert!(text.len() <= EXCERPT_BYTES && text.starts_with('\u{fffd}'));
    }

    #[test]
    fn bad_ca_bundles_are_named() {
        let config = |pem: &[u8]| ClientConfig {
            extra_ca_pem: Some(pem.to_vec()),
            ..ClientConfig::default()
        };
        let empty = WebhookClient::new(&config(b"not a pem"))
            .unwrap_err()
            .to_string();
        assert!(empty.contains("no \"BEGIN CERTIFICATE\""), "{empty}");
        let garbage = b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n";
        let bad = WebhookClient::new(&config(garbage))
            .unwrap_err()
            .to_string();
        assert!(bad.contains("certificate #1"), "{bad}");
        assert!(WebhookClient::new(&ClientConfig::default()).is_ok());
    }
}
