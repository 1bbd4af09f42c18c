//! Bearer tokens (RFC 6750) as protected resources receive them.

use axum::Json;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use super::params::Params;

/// Why a bearer request was refused, as RFC 6750 §3 tells the client.
pub enum BearerError {
    /// §3.1: no token at all: a bare challenge, no error code.
    Missing,
    /// §3.1 invalid_request: the token came two ways, or malformed.
    InvalidRequest(&'static str),
    /// §3.1 invalid_token: expired, revoked, malformed, not ours.
    InvalidToken(&'static str),
    /// §3.1 insufficient_scope.
    InsufficientScope(&'static str),
    Unavailable,
}

impl IntoResponse for BearerError {
    fn into_response(self) -> Response {
        let (status, challenge, body) = match self {
            Self::Missing => (
                StatusCode::UNAUTHORIZED,
                "Bearer realm=\"tessera\"".to_owned(),
                json!({ "error": "invalid_token", "error_description": "an access token is required" }),
            ),
            Self::InvalidRequest(d) => (
                StatusCode::BAD_REQUEST,
                format!(
                    "Bearer realm=\"tessera\", error=\"invalid_request\", error_description=\"{d}\""
                ),
                json!({ "error": "invalid_request", "error_description": d }),
            ),
            Self::InvalidToken(d) => (
                StatusCode::UNAUTHORIZED,
                format!(
                    "Bearer realm=\"tessera\", error=\"invalid_token\", error_description=\"{d}\""
                ),
                json!({ "error": "invalid_token", "error_description": d }),
            ),
            Self::InsufficientScope(d) => (
                StatusCode::FORBIDDEN,
                format!(
                    "Bearer realm=\"tessera\", error=\"insufficient_scope\", scope=\"openid\", error_description=\"{d}\""
                ),
                json!({ "error": "insufficient_scope", "error_description": d }),
            ),
            Self::Unavailable => return crate::error::unavailable(),
        };
        let mut response =
            (status, [(header::CACHE_CONTROL, "no-store")], Json(body)).into_response();
        if let Ok(v) = HeaderValue::from_str(&challenge) {
            response.headers_mut().insert(header::WWW_AUTHENTICATE, v);
        }
        response
    }
}

/// The token from `Authorization: Bearer` (§2.1) or, for a form POST, the `access_token`
/// body parameter (§2.2) — exactly one of them. Tokens in the query string (§2.3) are not
/// accepted: they end up in logs.
pub fn token<'a>(headers: &'a HeaderMap, form: Option<&'a Params>) -> Result<String, BearerError> {
    // Two Authorization headers are two credentials: which one counts would be a guess
    // (RFC 6750 §3.1 invalid_request: "uses more than one method", RFC 9110 §5.3).
    if headers
        .get_all(header::AUTHORIZATION)
        .iter()
        .nth(1)
        .is_some()
    {
        return Err(BearerError::InvalidRequest(
            "the Authorization header is repeated",
        ));
    }
    let from_header = match headers.get(header::AUTHORIZATION) {
        None => None,
        Some(value) => {
            let value = value
                .to_str()
                .map_err(|_| BearerError::InvalidRequest("malformed Authorization header"))?;
            let (scheme, token) = value.split_once(' ').ok_or(BearerError::InvalidRequest(
                "malformed Authorization header",
            ))?;
            if !scheme.eq_ignore_ascii_case("bearer") {
                return Err(BearerError::InvalidRequest("use the Bearer scheme"));
            }
            let token = token.trim();
            if token.is_empty() || token.contains(' ') {
                return Err(BearerError::InvalidRequest("malformed bearer token"));
            }
            Some(token.to_owned())
        }
    };
    let from_form = match form {
        Some(p) => p
            .get("access_token")
            .map_err(|_| BearerError::InvalidRequest("access_token is repeated"))?
            .map(str::to_owned),
        None => None,
    };
    match (from_header, from_form) {
        (Some(_), Some(_)) => Err(BearerError::InvalidRequest("send the token one way only")),
        (Some(t), None) | (None, Some(t)) => Ok(t),
        (None, None) => Err(BearerError::Missing),
    }
}
