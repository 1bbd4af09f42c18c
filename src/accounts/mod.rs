//! The hosted pages people use: register, sign in and out, verify email, reset password, and
//! the account page. Handlers parse, call [`service`], and render; the rules live there.

pub mod account;
pub mod login;
pub mod register;
pub mod reset;
pub mod service;
pub mod verify;

use axum::Router;
use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;

use crate::state::AppState;
use crate::web::pages::{self, PageError};
use crate::web::session::{self, WebSession};
use service::Accounts;

pub mod paths {
    pub const HOME: &str = "/";
    pub const REGISTER: &str = "/register";
    pub const LOGIN: &str = "/login";
    pub const LOGOUT: &str = "/logout";
    pub const VERIFY_EMAIL: &str = "/verify-email";
    pub const RESEND_VERIFICATION: &str = "/account/verify-email";
    pub const FORGOT_PASSWORD: &str = "/forgot-password";
    pub const RESET_PASSWORD: &str = "/reset-password";
    pub const ACCOUNT: &str = "/account";
    pub const PROFILE: &str = "/account/profile";
    pub const PASSWORD: &str = "/account/password";
    pub const END_SESSION: &str = "/account/sessions/end";
    pub const END_ALL_SESSIONS: &str = "/account/sessions/end-all";
    pub const REVOKE_APP: &str = "/account/apps/revoke";
    pub const STYLESHEET: &str = "/static/tessera.css";
}

/// The pages, with the session layer and page security headers.
pub fn router(state: &AppState) -> Router<AppState> {
    let pages = Router::new()
        .route(paths::HOME, get(home_get))
        .merge(register::router())
        .merge(login::router())
        .merge(verify::router())
        .merge(reset::router())
        .merge(account::router())
        .merge(crate::oidc::authorize::router())
        .merge(crate::oidc::end_session::router())
        .merge(crate::upstream::router())
        .layer(session::layer(&state.config, state.store.clone()));
    pages::with_page_headers(pages)
        .route(paths::STYLESHEET, get(stylesheet_get))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            with_base_path,
        ))
}

/// Makes the issuer's path known to templates rendered anywhere in the request (including
/// error pages).
async fn with_base_path(State(state): State<AppState>, request: Request, next: Next) -> Response {
    pages::BASE_PATH
        .scope(state.config.base_path(), next.run(request))
        .await
}

/// `/`: the account page for a signed-in person, the sign-in page otherwise.
async fn home_get(session: WebSession) -> Result<Response, PageError> {
    let to = if session.signed_in().await?.is_some() {
        paths::ACCOUNT
    } else {
        paths::LOGIN
    };
    Ok(redirect(to))
}

async fn stylesheet_get() -> Response {
    (
        [
            (axum::http::header::CONTENT_TYPE, "text/css; charset=utf-8"),
            (axum::http::header::CACHE_CONTROL, "public, max-age=3600"),
        ],
        include_str!("../../static/tessera.css"),
    )
        .into_response()
}

/// A 303 See Other to a page path (prefixed with the issuer's path).
pub fn redirect(path: &str) -> Response {
    Redirect::to(&format!("{}{path}", pages::base_path())).into_response()
}

/// A `return_to` is only ever a local path: no scheme, no host, no `//` (open-redirect guard).
pub fn safe_return_to(value: Option<&str>) -> Option<String> {
    let v = value?.trim();
    let local = v.starts_with('/')
        && !v.starts_with("//")
        && !v.starts_with("/\\")
        && !v.chars().any(|c| c.is_control() || c == '\\');
    local.then(|| v.to_owned())
}

impl AppState {
    pub fn accounts(&self) -> Accounts<'_> {
        Accounts {
            store: &self.store,
            passwords: &self.passwords,
            mailer: &self.mailer,
            config: &self.config,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::safe_return_to;

    #[test]
    fn return_to_is_local_only() {
        assert_eq!(
            safe_return_to(Some("/account")).as_deref(),
            Some("/account")
        );
        assert_eq!(
            safe_return_to(Some("/authorize?client_id=x")).as_deref(),
            Some("/authorize?client_id=x")
        );
        for bad in [
            "https://evil.example",
            "//evil.example",
            "/\\evil.example",
            "evil",
            "/a\\b",
            "/a\nb",
        ] {
            assert_eq!(safe_return_to(Some(bad)), None, "{bad}");
        }
    }
}
