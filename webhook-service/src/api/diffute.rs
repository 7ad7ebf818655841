//! diffute (placeholder while the routes are written).

use axum::Router;

use super::state::HttpState;

/// The diffute routes.
pub fn router() -> Router<HttpState> {
    Router::new()
}
