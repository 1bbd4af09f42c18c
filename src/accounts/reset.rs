//! Forgotten passwords: `GET|POST /forgot-password` sends a single-use link;
//! `GET|POST /reset-password` uses it.

use askama::Template;
use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde::Deserialize;

use super::service::AccountError;
use super::verify::link_error;
use super::{paths, redirect};
use crate::state::AppState;
use crate::store::tokens;
use crate::throttle::Limit;
use crate::web::pages::{PageError, PageForm, PageQuery, base_path, render};
use crate::web::session::{ClientInfo, WebSession};

pub fn router() -> Router<AppState> {
    Router::new()
        .route(paths::FORGOT_PASSWORD, get(forgot_get).post(forgot_post))
        .route(paths::RESET_PASSWORD, get(reset_get).post(reset_post))
}

#[derive(Template)]
#[template(path = "pages/forgot_password.html")]
struct ForgotPage {
    base: String,
    csrf: String,
    sent: bool,
}

#[derive(Template)]
#[template(path = "pages/reset_password.html")]
struct ResetPage {
    base: String,
    csrf: String,
    token: String,
    error: Option<String>,
}

#[derive(Deserialize)]
pub struct ForgotForm {
    #[serde(default)]
    csrf_token: String,
    #[serde(default)]
    email: String,
}

#[derive(Deserialize)]
pub struct TokenQuery {
    #[serde(default)]
    token: String,
}

#[derive(Deserialize)]
pub struct ResetForm {
    #[serde(default)]
    csrf_token: String,
    #[serde(default)]
    token: String,
    #[serde(default)]
    password: String,
}

async fn forgot_get(session: WebSession) -> Result<Response, PageError> {
    Ok(render(&ForgotPage {
        base: base_path(),
        csrf: session.csrf_token().await?,
        sent: false,
    }))
}

/// Always answers the same page, whether or not the address has an account.
async fn forgot_post(
    State(state): State<AppState>,
    session: WebSession,
    client: ClientInfo,
    PageForm(form): PageForm<ForgotForm>,
) -> Result<Response, PageError> {
    session.verify_csrf(&form.csrf_token).await?;
    let email = form.email.trim();
    let blocked = match state.throttle.blocked(Limit::ResetsPerIp, &client.ip).await {
        Some(wait) => Some(wait),
        None => state.throttle.blocked(Limit::ResetsPerAccount, email).await,
    };
    if let Some(wait) = blocked {
        let _ = state
            .accounts()
            .audit(super::service::event(
                "password_reset_throttled",
                "refused",
                None,
                &client,
            ))
            .await;
        return Err(PageError::Throttled(wait));
    }
    state.throttle.hit(Limit::ResetsPerIp, &client.ip).await;
    state.throttle.hit(Limit::ResetsPerAccount, email).await;
    match state.accounts().request_reset(email, &client).await {
        Ok(()) => {}
        Err(AccountError::Database(e)) => return Err(e.into()),
        Err(_) => return Err(PageError::internal("password reset request")),
    }
    Ok(render(&ForgotPage {
        base: base_path(),
        csrf: session.csrf_token().await?,
        sent: true,
    }))
}

async fn reset_get(
    State(state): State<AppState>,
    session: WebSession,
    PageQuery(query): PageQuery<TokenQuery>,
) -> Result<Response, PageError> {
    match state
        .accounts()
        .check_link(&query.token, tokens::RESET_PASSWORD)
        .await
    {
        Ok(()) => {}
        Err(AccountError::Link(reason)) => return Err(link_error(reason, "password reset")),
        Err(AccountError::Database(e)) => return Err(e.into()),
        Err(_) => return Err(PageError::internal("reset link")),
    }
    let page = ResetPage {
        base: base_path(),
        csrf: session.csrf_token().await?,
        token: query.token,
        error: None,
    };
    Ok(render(&page))
}

async fn reset_post(
    State(state): State<AppState>,
    session: WebSession,
    client: ClientInfo,
    PageForm(form): PageForm<ResetForm>,
) -> Result<Response, PageError> {
    session.verify_csrf(&form.csrf_token).await?;
    match state
        .accounts()
        .reset_password(&form.token, &form.password, &client)
        .await
    {
        Ok(_) => {
            // Every session of the account has ended; so has this one if it was signed in.
            session.sign_out().await?;
            session
                .flash("Your password has been changed. Sign in with your new password.")
                .await?;
            Ok(redirect(paths::LOGIN))
        }
        Err(AccountError::WeakPassword(message)) => {
            let page = ResetPage {
                base: base_path(),
                csrf: session.csrf_token().await?,
                token: form.token,
                error: Some(message),
            };
            Ok((StatusCode::BAD_REQUEST, render(&page)).into_response())
        }
        Err(AccountError::Link(reason)) => Err(link_error(reason, "password reset")),
        Err(AccountError::Database(e)) => Err(e.into()),
        Err(_) => Err(PageError::internal("password reset")),
    }
}
