//! The protocol endpoints, one file each, and the rules they share.

pub mod authorize;
pub mod bearer;
pub mod client_auth;
pub mod clients;
pub mod discovery;
pub mod end_session;
pub mod error;
pub mod introspect;
pub mod jwks;
pub mod metadata;
pub mod params;
pub mod paths;
pub mod revoke;
pub mod token;
pub mod tokens;
pub mod userinfo;
pub mod verify;

use axum::Router;

use crate::state::AppState;

/// The back-channel endpoints (no browser session). The authorization and end-session
/// endpoints need the session and are mounted with the pages (`accounts::router`). The
/// metadata documents' GET and HEAD are answered before the router ([`metadata`]); their
/// routes here answer the other methods (405) and serve the router on its own.
pub fn router() -> Router<AppState> {
    Router::new()
        .merge(discovery::router())
        .merge(jwks::router())
        .merge(token::router())
        .merge(userinfo::router())
        .merge(revoke::router())
        .merge(introspect::router())
}
