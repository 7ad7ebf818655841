//! Callback payloads: one module per JSON shape, all rendered from [`JobOutcome`].
//!
//! The vendor shapes follow the documents in `shared/seeds` (RunPod's A1111 worker, Cerebrium,
//! Diffute, Leonardo.ai); `standard` is the native shape. No payload ever contains a secret: the
//! renderers read the job's parameters, result and vendor context, never its webhook secrets.

pub mod cerebrium;
pub mod diffute;
pub mod leonardo;
pub mod params;
pub mod runpod;
pub mod standard;

use base64::Engine;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

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

/// `ms` since the epoch as RFC 3339 UTC with milliseconds (`2023-11-09T00:42:26.733Z`).
pub(crate) fn iso8601(ms: i64) -> String {
    let nanos = i128::from(ms) * 1_000_000;
    let at = OffsetDateTime::from_unix_timestamp_nanos(nanos).unwrap_or(OffsetDateTime::UNIX_EPOCH);
    let at = at
        .replace_nanosecond((ms.rem_euclid(1000) as u32) * 1_000_000)
        .unwrap_or(at);
    let text = at.format(&Rfc3339).unwrap_or_default();
    // Rfc3339 drops a zero fraction; vendors always print three digits.
    match text.strip_suffix('Z') {
        Some(body) if !body.contains('.') => format!("{body}.000Z"),
        _ => text,
    }
}

/// The outcome's images as base64 PNG strings, in index order.
pub(crate) fn base64_images(outcome: &JobOutcome<'_>) -> Vec<String> {
    let engine = base64::engine::general_purpose::STANDARD;
    outcome
        .images
        .iter()
        .map(|published| engine.encode(&published.image.png))
        .collect()
}

/// The outcome's signed media URLs, in index order.
pub(crate) fn image_urls(outcome: &JobOutcome<'_>) -> Vec<String> {
    outcome
        .images
        .iter()
        .map(|published| published.url.clone())
        .collect()
}

/// A string field of the job's vendor context (request fields a vendor format echoes).
pub(crate) fn vendor_str<'a>(outcome: &'a JobOutcome<'_>, key: &str) -> Option<&'a str> {
    outcome
        .record
        .job
        .vendor_context
        .get(key)
        .and_then(|v| v.as_str())
}

#[cfg(test)]
mod tests {
    use super::iso8601;

    #[test]
    fn timestamps_keep_three_fraction_digits() {
        assert_eq!(iso8601(1_699_490_546_932), "2023-11-09T00:42:26.932Z");
        assert_eq!(iso8601(1_699_490_546_000), "2023-11-09T00:42:26.000Z");
        assert_eq!(iso8601(0), "1970-01-01T00:00:00.000Z");
    }
}
