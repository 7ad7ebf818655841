//! TEMPORARY stand-in so the crate compiles while the client is written; replaced wholesale.
#![allow(missing_docs)]
use std::{collections::HashMap, net::IpAddr, time::Duration};
#[derive(Default, Clone)]
pub struct ClientConfig { pub connect_timeout: Duration, pub timeout: Duration, pub allow_http: bool, pub allow_private: Vec<ipnet::IpNet>, pub extra_ca_pem: Option<Vec<u8>>, pub resolve_overrides: HashMap<String, Vec<IpAddr>>, pub max_response_bytes: usize }
pub struct WebhookClient;
#[derive(Debug)] pub struct ClientError;
impl std::fmt::Display for ClientError { fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result { f.write_str("x") } }
impl WebhookClient { pub fn new(_c: &ClientConfig) -> Result<Self, ClientError> { Ok(Self) } pub async fn send(&self, _u: &str, _h: &[(String, String)], _b: Vec<u8>) -> SendOutcome { SendOutcome::Failed { kind: FailureKind::Timeout, reason: String::new() } } }
#[derive(Debug)] pub enum FailureKind { Timeout }
impl std::fmt::Display for FailureKind { fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result { f.write_str("x") } }
pub enum SendOutcome { Response { status: u16, retry_after: Option<Duration>, body_excerpt: String }, Failed { kind: FailureKind, reason: String } }
