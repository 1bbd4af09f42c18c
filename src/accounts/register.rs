//! `GET|POST /register`: create an account.

use askama::Template;
use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde::Deserialize;

use super::service::{AccountError, Registration};
use super::{paths, redirect};
use crate::state::AppState;
use crate::throttle::Limit;
use crate::web::pages::{PageError, PageForm, base_path, render};
use crate::web::session::{ClientInfo, WebSession};

pub fn router() -> Router<AppState> {
    Router::new().route(paths::REGISTER, get(register_get).post(register_post))
}

#[derive(Template)]
#[template(path = "pages/register.html")]
struct RegisterPage {
    base: String,
    csrf: String,
    error: Option<String>,
    username: String,
    email: String,
    name: String,
    providers: Vec<(String, String)>,
}

#[derive(Deserialize)]
pub struct RegisterForm {
    #[serde(default)]
    csrf_token: String,
    #[serde(default)]
    username: String,
    #[serde(default)]
    email: String,
    #[serde(default)]
    name: String,
    #[serde(default)]
    password: String,
}

fn closed() -> PageError {
    PageError::Forbidden(
        "Registration is closed on this server. Ask an administrator for an account.".into(),
    )
}

async fn register_get(
    State(state): State<AppState>,
    session: WebSession,
) -> Result<Response, PageError> {
    if !state.config.accounts.registration {
        return Err(closed());
    }
    if session.signed_in().await?.is_some() {
        return Ok(redirect(paths::ACCOUNT));
    }
    let page = RegisterPage {
        base: base_path(),
        csrf: session.csrf_token().await?,
        error: None,
        username: String::new(),
        email: String::new(),
        name: String::new(),
        providers: state.provider_buttons(),
    };
    Ok(render(&page))
}

async fn register_post(
    State(state): State<AppState>,
    session: WebSession,
    client: ClientInfo,
    PageForm(form): PageForm<RegisterForm>,
) -> Result<Response, PageError> {
    if !state.config.accounts.registration {
        return Err(closed());
    }
    session.verify_csrf(&form.csrf_token).await?;
    let accounts = state.accounts();
    if let Some(wait) = state
        .throttle
        .blocked(Limit::RegistrationsPerIp, &client.ip)
        .await
    {
        let _ = accounts
            .audit(super::service::event(
                "registration_throttled",
                "refused",
                None,
                &client,
            ))
            .await;
        return Err(PageError::Throttled(wait));
    }
    state
        .throttle
        .hit(Limit::RegistrationsPerIp, &client.ip)
        .await;
    let registration = Registration {
        username: &form.username,
        email: &form.email,
        display_name: &form.name,
        password: &form.password,
    };
    match accounts.register(&registration, &client).await {
        Ok(user) => {
            session.sign_in(&user.id, "pwd", &client).await?;
            session
                .flash(format!("Welcome! We sent a verification link to {}. Open it to verify your email address.", user.email))
                .await?;
            Ok(redirect(paths::ACCOUNT))
        }
        Err(error) => {
            let status = match &error {
                AccountError::UsernameTaken | AccountError::EmailTaken => StatusCode::CONFLICT,
                AccountError::Invalid(_) | AccountError::WeakPassword(_) => StatusCode::BAD_REQUEST,
                AccountError::Database(e) if !crate::store::is_unique_violation(e) => {
                    return Err(PageError::Unavailable);
                }
                _ => return Err(PageError::internal("registration")),
            };
            let page = RegisterPage {
                base: base_path(),
                csrf: session.csrf_token().await?,
                error: Some(error.to_string()),
                username: form.username,
                email: form.email,
                name: form.name,
                providers: state.provider_buttons(),
            };
            Ok((status, render(&page)).into_response())
        }
    }
}
