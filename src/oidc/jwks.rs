//! `GET /.well-known/jwks.json` — the JWK Set (RFC 7517 §5) of every published signing key.
//!
//! The bytes are built by the key ring whenever the published set changes; a request only
//! clones a reference-counted buffer. Public parts only: `kty`, `kid`, `use`, `alg`, `n`, `e`.

use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::Response;
use axum::routing::get;

use super::paths;
use crate::crypto::keys::KeyRing;
use crate::state::AppState;

pub fn router() -> Router<AppState> {
    Router::new().route(paths::JWKS, get(jwks_get))
}

/// (The server answers GET and HEAD before the router, [`super::metadata`]; this serves the
/// router on its own.)
async fn jwks_get(State(keys): State<Arc<KeyRing>>, headers: HeaderMap) -> Response {
    let mut response = keys.jwks().respond(&headers);
    super::metadata::public(&mut response);
    response
}
