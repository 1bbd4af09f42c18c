//! `GET /.well-known/openid-configuration` — OpenID Connect Discovery 1.0 §4.
//!
//! The document is built once at start-up from the configuration and [`paths`]; it advertises
//! exactly the endpoints this build serves. `issuer` is the configured issuer, byte for byte
//! (Discovery §4.3: it must be identical to the `iss` of the tokens).

use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::Response;
use axum::routing::get;
use serde::Serialize;

use super::paths;
use crate::config::Config;
use crate::crypto::keys::ALGORITHM;
use crate::state::AppState;
use crate::web::CachedJson;

pub fn router() -> Router<AppState> {
    Router::new().route(paths::DISCOVERY, get(discovery_get))
}

/// Serves the prebuilt document, with `ETag`/`If-None-Match` support.
async fn discovery_get(State(doc): State<Arc<Discovery>>, headers: HeaderMap) -> Response {
    doc.0.respond(&headers)
}

/// The discovery document, serialised once.
#[derive(Debug)]
pub struct Discovery(pub CachedJson);

/// Provider metadata (Discovery §3). Fields for endpoints that do not exist are absent.
#[derive(Debug, Serialize)]
struct Metadata {
    issuer: String,
    jwks_uri: String,
    subject_types_supported: &'static [&'static str],
    id_token_signing_alg_values_supported: &'static [&'static str],
}

impl Discovery {
    pub fn build(config: &Config) -> Self {
        let metadata = Metadata {
            issuer: config.issuer.clone(),
            jwks_uri: config.endpoint_url(paths::JWKS),
            subject_types_supported: &["public"],
            id_token_signing_alg_values_supported: &[ALGORITHM],
        };
        let body = serde_json::to_vec_pretty(&metadata).unwrap_or_default();
        Self(CachedJson::new(body, config.http.metadata_max_age))
    }
}
