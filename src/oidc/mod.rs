//! The protocol endpoints, one file each.

pub mod discovery;
pub mod jwks;
pub mod paths;

use axum::Router;

use crate::state::AppState;

pub fn router() -> Router<AppState> {
    Router::new()
        .merge(discovery::router())
        .merge(jwks::router())
}
