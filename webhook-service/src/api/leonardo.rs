//! leonardo (placeholder while the routes are written).

use axum::Router;

use super::state::HttpState;

/// The leonardo routes.
pub fn router() -> Router<HttpState> {
    Router::new()
}
