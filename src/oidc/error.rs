//! OAuth 2.0 error responses.

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

/// The error codes of RFC 6749 §4.1.2.1 and §5.2, RFC 6750 §3.1 and OIDC Core §3.1.2.6.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Code {
    /// §5.2: missing, repeated or malformed parameter.
    InvalidRequest,
    /// §5.2: client authentication failed (401).
    InvalidClient,
    /// §5.2: the code or refresh token is invalid, expired, revoked, or bound elsewhere.
    InvalidGrant,
    /// §5.2: the client may not use this grant type.
    UnauthorizedClient,
    /// §5.2: the grant type is not supported.
    UnsupportedGrantType,
    /// §4.1.2.1: the response type is not supported.
    UnsupportedResponseType,
    /// §5.2: the scope is invalid or exceeds what was granted.
    InvalidScope,
    /// §4.1.2.1: the person or server denied the request.
    AccessDenied,
    /// §4.1.2.1: the server had a problem.
    ServerError,
    /// §4.1.2.1: the server is temporarily unable to answer.
    TemporarilyUnavailable,
    /// OIDC Core §3.1.2.6: `prompt=none` but nobody is signed in.
    LoginRequired,
    /// OIDC Core §3.1.2.6: `prompt=none` but consent is needed.
    ConsentRequired,
    /// RFC 6750 §3.1: the access token is expired, revoked or malformed (401).
    InvalidToken,
    /// RFC 6750 §3.1: the token lacks the scope needed (403).
    InsufficientScope,
}

impl Code {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::InvalidRequest => "invalid_request",
            Self::InvalidClient => "invalid_client",
            Self::InvalidGrant => "invalid_grant",
            Self::UnauthorizedClient => "unauthorized_client",
            Self::UnsupportedGrantType => "unsupported_grant_type",
            Self::UnsupportedResponseType => "unsupported_response_type",
            Self::InvalidScope => "invalid_scope",
            Self::AccessDenied => "access_denied",
            Self::ServerError => "server_error",
            Self::TemporarilyUnavailable => "temporarily_unavailable",
            Self::LoginRequired => "login_required",
            Self::ConsentRequired => "consent_required",
            Self::InvalidToken => "invalid_token",
            Self::InsufficientScope => "insufficient_scope",
        }
    }
}

/// An error for a JSON endpoint (token, revocation, introspection).
#[derive(Debug, Clone)]
pub struct OAuthError {
    pub code: Code,
    pub description: String,
    /// Set when the client tried HTTP Basic: the 401 then carries `WWW-Authenticate: Basic`
    /// (RFC 6749 §5.2).
    pub basic_challenge: bool,
    /// The database aborted the transaction (deadlock, serialization); running the same
    /// request again will go through.
    pub retryable: bool,
}

impl OAuthError {
    pub fn new(code: Code, description: impl Into<String>) -> Self {
        Self {
            code,
            description: description.into(),
            basic_challenge: false,
            retryable: false,
        }
    }

    pub fn invalid_request(description: impl Into<String>) -> Self {
        Self::new(Code::InvalidRequest, description)
    }
}

impl From<sqlx::Error> for OAuthError {
    fn from(error: sqlx::Error) -> Self {
        if crate::store::is_retryable(&error) {
            let mut e = Self::new(
                Code::TemporarilyUnavailable,
                "the request conflicted with another; retry",
            );
            e.retryable = true;
            return e;
        }
        if crate::store::is_unavailable(&error) {
            tracing::warn!(%error, "database unavailable");
            Self::new(
                Code::TemporarilyUnavailable,
                "the service is temporarily unavailable; retry shortly",
            )
        } else {
            tracing::error!(%error, "database error");
            Self::new(
                Code::ServerError,
                format!(
                    "something went wrong (request id {})",
                    crate::error::current_request_id()
                ),
            )
        }
    }
}

impl From<crate::crypto::keys::KeyError> for OAuthError {
    fn from(error: crate::crypto::keys::KeyError) -> Self {
        match error {
            crate::crypto::keys::KeyError::Database(e) => e.into(),
            other => {
                tracing::error!(error = %other, "signing failed");
                Self::new(Code::ServerError, "something went wrong")
            }
        }
    }
}

impl IntoResponse for OAuthError {
    fn into_response(self) -> Response {
        let status = match self.code {
            Code::InvalidClient | Code::InvalidToken => StatusCode::UNAUTHORIZED,
            Code::InsufficientScope => StatusCode::FORBIDDEN,
            Code::ServerError => StatusCode::INTERNAL_SERVER_ERROR,
            Code::TemporarilyUnavailable => StatusCode::SERVICE_UNAVAILABLE,
            _ => StatusCode::BAD_REQUEST,
        };
        let mut response = (
            status,
            [
                (header::CACHE_CONTROL, "no-store"),
                (header::PRAGMA, "no-cache"),
            ],
            Json(json!({ "error": self.code.as_str(), "error_description": self.description })),
        )
            .into_response();
        if self.code == Code::InvalidClient && self.basic_challenge {
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Basic realm=\"tessera\""),
            );
        }
        if self.code == Code::TemporarilyUnavailable {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
        }
        response
    }
}
