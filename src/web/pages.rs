//! What every HTML page shares: rendering, the error page, security headers, form parsing.

use std::time::Duration;

use askama::Template;
use axum::Router;
use axum::extract::rejection::FormRejection;
use axum::extract::{FromRequest, Request};
use axum::http::header::{
    CACHE_CONTROL, CONTENT_SECURITY_POLICY, CONTENT_TYPE, REFERRER_POLICY, RETRY_AFTER,
    X_FRAME_OPTIONS,
};
use axum::http::{HeaderValue, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use serde::de::DeserializeOwned;
use tower::ServiceBuilder;
use tower_http::set_header::SetResponseHeaderLayer;

use crate::error::current_request_id;

tokio::task_local! {
    /// The issuer's path for the request being handled, so templates can build links.
    pub static BASE_PATH: String;
}

/// The issuer's path ("" at the root) for links in pages.
pub fn base_path() -> String {
    BASE_PATH.try_with(Clone::clone).unwrap_or_default()
}

/// Pages load nothing from elsewhere, run no script and may not be framed.
pub const CSP: &str = "default-src 'none'; style-src 'self'; img-src 'self' data:; \
                       base-uri 'none'; frame-ancestors 'none'";

/// Adds the page headers: CSP, no framing, no referrer (reset links carry tokens in the
/// URL), and no caching (pages hold CSRF tokens and personal data).
pub fn with_page_headers<S: Clone + Send + Sync + 'static>(router: Router<S>) -> Router<S> {
    router.layer(
        ServiceBuilder::new()
            .layer(SetResponseHeaderLayer::overriding(
                CONTENT_SECURITY_POLICY,
                HeaderValue::from_static(CSP),
            ))
            .layer(SetResponseHeaderLayer::overriding(
                X_FRAME_OPTIONS,
                HeaderValue::from_static("DENY"),
            ))
            .layer(SetResponseHeaderLayer::overriding(
                REFERRER_POLICY,
                HeaderValue::from_static("no-referrer"),
            ))
            .layer(SetResponseHeaderLayer::if_not_present(
                CACHE_CONTROL,
                HeaderValue::from_static("no-store"),
            )),
    )
}

/// The page headers for HTML answered outside the page routers (the 404 page of the
/// fallback, an error page from a protocol endpoint): no HTML leaves Tessera frameable or
/// without its CSP. Headers a route set itself are kept.
pub async fn guard_html(request: Request, next: axum::middleware::Next) -> Response {
    let mut response = next.run(request).await;
    let is_html = response
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("text/html"));
    if is_html {
        let headers = response.headers_mut();
        for (name, value) in [
            (CONTENT_SECURITY_POLICY, CSP),
            (X_FRAME_OPTIONS, "DENY"),
            (REFERRER_POLICY, "no-referrer"),
            (CACHE_CONTROL, "no-store"),
        ] {
            if !headers.contains_key(&name) {
                headers.insert(name, HeaderValue::from_static(value));
            }
        }
    }
    response
}

/// Renders a template into an HTML response.
pub fn render(template: &impl Template) -> Response {
    match template.render() {
        Ok(html) => Html(html).into_response(),
        Err(error) => {
            tracing::error!(%error, "template rendering failed");
            PageError::internal("template").into_response()
        }
    }
}

/// A failure shown to a person as a page that says what happened in plain words.
#[derive(Debug)]
pub enum PageError {
    BadRequest(String),
    Csrf,
    NotFound,
    Forbidden(String),
    Throttled(Duration),
    Unavailable,
    /// Not answered within `http.request_timeout`.
    TimedOut,
    Internal,
}

impl PageError {
    pub fn internal(what: &str) -> Self {
        tracing::error!(what, "internal error");
        Self::Internal
    }
}

impl From<sqlx::Error> for PageError {
    fn from(error: sqlx::Error) -> Self {
        if crate::store::is_unavailable(&error) {
            tracing::warn!(%error, "database unavailable");
            Self::Unavailable
        } else {
            tracing::error!(%error, "database error");
            Self::Internal
        }
    }
}

#[derive(Template)]
#[template(path = "pages/error.html")]
struct ErrorPage<'a> {
    base: String,
    title: &'a str,
    message: &'a str,
    request_id: String,
}

impl IntoResponse for PageError {
    fn into_response(self) -> Response {
        let minutes;
        let (status, title, message): (StatusCode, &str, &str) = match &self {
            Self::BadRequest(m) => (StatusCode::BAD_REQUEST, "That didn't work", m.as_str()),
            Self::Csrf => (
                StatusCode::FORBIDDEN,
                "Please try again",
                "This form has expired or was not sent from this site. Go back, reload the page and submit it again.",
            ),
            Self::NotFound => (
                StatusCode::NOT_FOUND,
                "Page not found",
                "There is nothing at this address.",
            ),
            Self::Forbidden(m) => (StatusCode::FORBIDDEN, "Not allowed", m.as_str()),
            Self::Throttled(wait) => {
                let m = wait.as_secs().div_ceil(60).max(1);
                minutes = format!(
                    "Too many attempts. For your security, please try again in {m} minute{}.",
                    if m == 1 { "" } else { "s" }
                );
                (
                    StatusCode::TOO_MANY_REQUESTS,
                    "Too many attempts",
                    minutes.as_str(),
                )
            }
            Self::Unavailable => (
                StatusCode::SERVICE_UNAVAILABLE,
                "Temporarily unavailable",
                "We can't reach our database right now. Please try again in a moment.",
            ),
            Self::TimedOut => (
                StatusCode::SERVICE_UNAVAILABLE,
                "Temporarily unavailable",
                "This took too long to answer. Please try again in a moment.",
            ),
            Self::Internal => (
                StatusCode::INTERNAL_SERVER_ERROR,
                "Something went wrong",
                "Something went wrong on our side. Please try again; if it keeps happening, quote the reference below.",
            ),
        };
        let page = ErrorPage {
            base: base_path(),
            title,
            message,
            request_id: current_request_id(),
        };
        let mut response = (status, render(&page)).into_response();
        match self {
            Self::Throttled(wait) => {
                let secs = wait.as_secs().max(1).to_string();
                if let Ok(v) = HeaderValue::from_str(&secs) {
                    response.headers_mut().insert(RETRY_AFTER, v);
                }
            }
            Self::Unavailable | Self::TimedOut => {
                response
                    .headers_mut()
                    .insert(RETRY_AFTER, HeaderValue::from_static("5"));
            }
            _ => {}
        }
        response
    }
}

/// A form that carries nothing but its CSRF token (sign out, resend, end all sessions…).
#[derive(serde::Deserialize)]
pub struct CsrfOnly {
    #[serde(default)]
    pub csrf_token: String,
}

/// A URL-encoded form; anything malformed becomes a friendly 400 page instead of axum's
/// plain-text rejection.
pub struct PageForm<T>(pub T);

/// Query parameters for a page handler: like [`PageForm`], control characters and invalid
/// UTF-8 in the query string get a 400 page, as does a query the handler cannot read.
pub struct PageQuery<T>(pub T);

impl<T, S> axum::extract::FromRequestParts<S> for PageQuery<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = PageError;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        state: &S,
    ) -> Result<Self, Self::Rejection> {
        if !clean_form(parts.uri.query().unwrap_or_default().as_bytes()) {
            return Err(PageError::BadRequest(
                "The link contained characters that are not allowed (control characters or \
                 text that is not valid UTF-8)."
                    .into(),
            ));
        }
        match axum::extract::Query::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Query(value)) => Ok(Self(value)),
            Err(_) => Err(PageError::BadRequest(
                "The link was incomplete or malformed.".into(),
            )),
        }
    }
}

/// Every name and value of a form body, percent-decoded, is valid UTF-8 without control
/// characters. (Forms have no multi-line fields, so no newline is legitimate either.)
fn clean_form(body: &[u8]) -> bool {
    body.split(|b| *b == b'&').all(|pair| {
        pair.split(|b| *b == b'=').all(|part| {
            let decoded: Vec<u8> = percent_encoding::percent_decode(part).collect();
            std::str::from_utf8(&decoded).is_ok_and(|text| !text.chars().any(char::is_control))
        })
    })
}

impl<T, S> FromRequest<S> for PageForm<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = PageError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        // The body is read once here (within the body limit the middleware set) so that its
        // raw bytes can be checked before serde sees them: serde's form decoding would turn
        // invalid UTF-8 into U+FFFD silently and let a NUL through into a username.
        let (parts, body) = req.into_parts();
        let Ok(bytes) = axum::body::to_bytes(body, usize::MAX).await else {
            return Err(PageError::BadRequest("The form could not be read.".into()));
        };
        if !clean_form(&bytes) {
            return Err(PageError::BadRequest(
                "The form contained characters that are not allowed (control characters or \
                 text that is not valid UTF-8). Go back and try again."
                    .into(),
            ));
        }
        let req = Request::from_parts(parts, axum::body::Body::from(bytes));
        match axum::Form::<T>::from_request(req, state).await {
            Ok(axum::Form(value)) => Ok(Self(value)),
            Err(rejection) => Err(match rejection {
                FormRejection::BytesRejection(_) => {
                    PageError::BadRequest("The form could not be read.".into())
                }
                _ => PageError::BadRequest(
                    "The form was incomplete or malformed. Go back and try again.".into(),
                ),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::clean_form;

    #[test]
    fn forms_with_control_characters_or_invalid_utf8_are_not_clean() {
        assert!(clean_form(b"a=1&b=h%C3%A9+x&c="));
        assert!(clean_form(b""));
        for bad in [
            &b"a=x%00y"[..],
            b"a=x\x00y",
            b"a=%0A",
            b"a=%FF",
            b"a=\xff",
            b"x%00=1",
            b"a=%C3",
        ] {
            assert!(!clean_form(bad), "{bad:?}");
        }
    }
}
