//! Webhook delivery: a chain of small steps run by [`worker`] for each due delivery.
//!
//! prepare (headers: Bearer, Standard Webhooks signature; see [`signing`]) → send through the
//! guarded HTTP [`client`] (TLS verified, private addresses refused at resolve time by
//! [`ssrf`]) → classify the outcome and schedule the next attempt ([`retry`]).

pub mod client;
pub mod retry;
pub mod signing;
pub mod ssrf;
pub mod worker;
