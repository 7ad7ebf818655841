//! The `standard` callback payload (written by the formats work; see formats/mod.rs).

use crate::domain::JobOutcome;

/// Renders `outcome` as a `standard` callback.
pub fn render(_outcome: &JobOutcome<'_>) -> serde_json::Value {
    serde_json::Value::Null
}
