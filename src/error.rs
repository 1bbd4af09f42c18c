//! Errors as handlers see them, and how each becomes an HTTP response.
//!
//! Services return domain errors; this is where they meet HTTP. A 500 tells the client only
//! that something went wrong and the request id to quote; the detail is logged once, here.

use axum::Json;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::crypto::keys::KeyError;
use crate::store;

pub type Result<T, E = AppError> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum AppError {
    /// The database cannot be reached right now; the client should retry.
    #[error("the service is temporarily unavailable")]
    Unavailable,
    #[error("not found")]
    NotFound,
    #[error(transparent)]
    Internal(#[from] anyhow::Error),
}

impl From<sqlx::Error> for AppError {
    fn from(error: sqlx::Error) -> Self {
        if store::is_unavailable(&error) {
            tracing::warn!(%error, "database unavailable");
            Self::Unavailable
        } else {
            Self::Internal(error.into())
        }
    }
}

impl From<KeyError> for AppError {
    fn from(error: KeyError) -> Self {
        match error {
            KeyError::Database(e) => e.into(),
            other => Self::Internal(other.into()),
        }
    }
}

tokio::task_local! {
    /// The current request's id, set by the request middleware so that error responses can
    /// quote it.
    pub static REQUEST_ID: String;
}

/// The id of the request being handled, or "-" outside a request.
pub fn current_request_id() -> String {
    REQUEST_ID
        .try_with(Clone::clone)
        .unwrap_or_else(|_| "-".to_owned())
}

impl IntoResponse for AppError {
    fn into_response(self) -> Response {
        match self {
            Self::Unavailable => unavailable(),
            Self::NotFound => (
                StatusCode::NOT_FOUND,
                Json(json!({ "error": "not_found", "error_description": "no such endpoint" })),
            )
                .into_response(),
            Self::Internal(error) => {
                tracing::error!(error = %format!("{error:#}"), "request failed");
                internal_error()
            }
        }
    }
}

/// 503 with `Retry-After`, in the shape of an OAuth error (RFC 6749 §4.1.2.1
/// `temporarily_unavailable`).
pub fn unavailable() -> Response {
    (
        StatusCode::SERVICE_UNAVAILABLE,
        [(header::RETRY_AFTER, "5")],
        Json(json!({
            "error": "temporarily_unavailable",
            "error_description": "the service is temporarily unavailable; try again shortly",
        })),
    )
        .into_response()
}

/// 500 that says nothing but the request id.
pub fn internal_error() -> Response {
    (
        StatusCode::INTERNAL_SERVER_ERROR,
        Json(json!({
            "error": "server_error",
            "error_description": format!("something went wrong (request id {})", current_request_id()),
        })),
    )
        .into_response()
}

/// The fallback for paths no route serves: a page for a browser (it asks for HTML), an
/// OAuth-style JSON error for everyone else.
pub async fn not_found(headers: axum::http::HeaderMap) -> Response {
    let wants_html = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|accept| accept.contains("text/html"));
    if wants_html {
        crate::web::pages::PageError::NotFound.into_response()
    } else {
        AppError::NotFound.into_response()
    }
}

/// Collapses any white space, newlines included, to single spaces: for one-line messages.
pub fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}
