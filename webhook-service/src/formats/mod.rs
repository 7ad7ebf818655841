//! Callback payloads: one module per JSON shape, all rendered from [`JobOutcome`].
//!
//! The vendor shapes follow the documents in `shared/seeds` (RunPod's A1111 worker, Cerebrium,
//! Diffute, Leonardo.ai); `standard` is the native shape. No payload ever contains a secret.

pub mod cerebrium;
pub mod diffute;
pub mod leonardo;
pub mod runpod;
pub mod standard;

use crate::domain::{Format, JobOutcome};

/// Renders the payload of `outcome` in the job's webhook format.
pub fn render(outcome: &JobOutcome<'_>) -> serde_json::Value {
    match outcome.record.job.webhook.format {
        Format::Standard => standard::render(outcome),
        Format::Runpod => runpod::render(outcome),
        Format::Cerebrium => cerebrium::render(outcome),
        Format::Diffute => diffute::render(outcome),
        Format::Leonardo => leonardo::render(outcome),
    }
}
