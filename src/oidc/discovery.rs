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

/// Serves the prebuilt document, with `ETag`/`If-None-Match` support. (The server answers
/// GET and HEAD before the router, [`super::metadata`]; this serves the router on its own.)
async fn discovery_get(State(doc): State<Arc<Discovery>>, headers: HeaderMap) -> Response {
    let mut response = doc.0.respond(&headers);
    super::metadata::public(&mut response);
    response
}

/// The discovery document, serialised once.
#[derive(Debug)]
pub struct Discovery(pub CachedJson);

/// Provider metadata (Discovery §3, RFC 8414 §2). Only what this build serves.
#[derive(Debug, Serialize)]
struct Metadata {
    issuer: String,
    authorization_endpoint: String,
    token_endpoint: String,
    userinfo_endpoint: String,
    jwks_uri: String,
    revocation_endpoint: String,
    introspection_endpoint: String,
    end_session_endpoint: String,
    scopes_supported: &'static [&'static str],
    response_types_supported: &'static [&'static str],
    response_modes_supported: &'static [&'static str],
    grant_types_supported: &'static [&'static str],
    subject_types_supported: &'static [&'static str],
    id_token_signing_alg_values_supported: &'static [&'static str],
    token_endpoint_auth_methods_supported: &'static [&'static str],
    revocation_endpoint_auth_methods_supported: &'static [&'static str],
    introspection_endpoint_auth_methods_supported: &'static [&'static str],
    code_challenge_methods_supported: &'static [&'static str],
    claims_supported: &'static [&'static str],
    prompt_values_supported: &'static [&'static str],
    ui_locales_supported: &'static [&'static str],
    /// RFC 9207.
    authorization_response_iss_parameter_supported: bool,
    claims_parameter_supported: bool,
    request_parameter_supported: bool,
    request_uri_parameter_supported: bool,
}

const AUTH_METHODS: &[&str] = &["client_secret_basic", "client_secret_post", "none"];
const CONFIDENTIAL_AUTH_METHODS: &[&str] = &["client_secret_basic", "client_secret_post"];

impl Discovery {
    pub fn build(config: &Config) -> Self {
        let metadata = Metadata {
            issuer: config.issuer.clone(),
            authorization_endpoint: config.endpoint_url(paths::AUTHORIZE),
            token_endpoint: config.endpoint_url(paths::TOKEN),
            userinfo_endpoint: config.endpoint_url(paths::USERINFO),
            jwks_uri: config.endpoint_url(paths::JWKS),
            revocation_endpoint: config.endpoint_url(paths::REVOKE),
            introspection_endpoint: config.endpoint_url(paths::INTROSPECT),
            end_session_endpoint: config.endpoint_url(paths::END_SESSION),
            scopes_supported: super::clients::OIDC_SCOPES,
            response_types_supported: &["code"],
            response_modes_supported: &["query"],
            grant_types_supported: super::clients::GRANT_TYPES,
            subject_types_supported: &["public"],
            id_token_signing_alg_values_supported: &[ALGORITHM],
            token_endpoint_auth_methods_supported: AUTH_METHODS,
            revocation_endpoint_auth_methods_supported: AUTH_METHODS,
            introspection_endpoint_auth_methods_supported: CONFIDENTIAL_AUTH_METHODS,
            code_challenge_methods_supported: &["S256"],
            claims_supported: &[
                "sub",
                "iss",
                "aud",
                "exp",
                "iat",
                "auth_time",
                "nonce",
                "at_hash",
                "azp",
                "sid",
                "amr",
                "name",
                "preferred_username",
                "email",
                "email_verified",
            ],
            prompt_values_supported: &["none", "login", "consent", "select_account"],
            ui_locales_supported: &["en"],
            authorization_response_iss_parameter_supported: true,
            claims_parameter_supported: false,
            request_parameter_supported: false,
            request_uri_parameter_supported: false,
        };
        let body = serde_json::to_vec_pretty(&metadata).unwrap_or_default();
        Self(CachedJson::new(body, config.http.metadata_max_age))
    }
}
