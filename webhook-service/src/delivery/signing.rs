//! TEMPORARY stand-in so the crate compiles while the client is written; replaced wholesale.
#![allow(missing_docs)]
#[derive(Clone, Debug)] pub struct SigningKey;
impl SigningKey { pub fn parse(_s: &str) -> Result<Self, String> { Ok(Self) } pub fn sign(&self, _i: &str, _t: i64, _b: &[u8]) -> String { String::new() } }
