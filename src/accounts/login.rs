//! `GET|POST /login` and `POST /logout`.

use askama::Template;
use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Deserialize;

use super::service::{AccountError, event};
use super::{paths, redirect, safe_return_to};
use crate::state::AppState;
use crate::store;
use crate::throttle::Limit;
use crate::web::pages::{CsrfOnly, PageError, PageForm, PageQuery, base_path, render};
use crate::web::session::{ClientInfo, WebSession};

pub fn router() -> Router<AppState> {
    Router::new()
        .route(paths::LOGIN, get(login_get).post(login_post))
        .route(paths::LOGOUT, post(logout_post))
}

#[derive(Template)]
#[template(path = "pages/login.html")]
struct LoginPage {
    base: String,
    csrf: String,
    error: Option<String>,
    notice: Option<String>,
    username: String,
    return_to: String,
    registration: bool,
    providers: Vec<(String, String)>,
}

#[derive(Deserialize, Default)]
pub struct LoginQuery {
    return_to: Option<String>,
    login_hint: Option<String>,
    /// Set when an app asked for a fresh sign-in (`prompt=login`, `max_age`): show the form
    /// even to someone already signed in.
    reauth: Option<String>,
}

#[derive(Deserialize)]
pub struct LoginForm {
    #[serde(default)]
    csrf_token: String,
    #[serde(default)]
    username: String,
    #[serde(default)]
    password: String,
    #[serde(default)]
    return_to: String,
}

async fn login_get(
    State(state): State<AppState>,
    session: WebSession,
    PageQuery(query): PageQuery<LoginQuery>,
) -> Result<Response, PageError> {
    let return_to = safe_return_to(query.return_to.as_deref());
    if query.reauth.is_none() && session.signed_in().await?.is_some() {
        return Ok(match return_to {
            Some(to) => redirect(&to),
            None => redirect(paths::ACCOUNT),
        });
    }
    let page = LoginPage {
        base: base_path(),
        csrf: session.csrf_token().await?,
        error: None,
        notice: session.take_flash().await?,
        username: query
            .login_hint
            .unwrap_or_default()
            .chars()
            .take(254)
            .collect(),
        return_to: return_to.unwrap_or_default(),
        registration: state.config.accounts.registration,
        providers: state.provider_buttons(),
    };
    Ok(render(&page))
}

async fn login_post(
    State(state): State<AppState>,
    session: WebSession,
    client: ClientInfo,
    PageForm(form): PageForm<LoginForm>,
) -> Result<Response, PageError> {
    session.verify_csrf(&form.csrf_token).await?;
    let accounts = state.accounts();
    let login = form.username.trim();
    let blocked = match state.throttle.blocked(Limit::LoginsPerIp, &client.ip).await {
        Some(wait) => Some(wait),
        None => {
            state
                .throttle
                .blocked(Limit::LoginFailuresPerAccount, login)
                .await
        }
    };
    if let Some(wait) = blocked {
        let mut e = event("sign_in_throttled", "refused", None, &client);
        e.detail = "too many attempts";
        let _ = accounts.audit(e).await;
        return Err(PageError::Throttled(wait));
    }
    state.throttle.hit(Limit::LoginsPerIp, &client.ip).await;
    match accounts.authenticate(login, &form.password).await {
        Ok(user) => {
            state
                .throttle
                .clear(Limit::LoginFailuresPerAccount, login)
                .await;
            session.sign_in(&user.id, "pwd", &client).await?;
            // Written with the session, in one commit (see `audit_on_save`).
            session
                .audit_on_save(
                    event("signed_in", "success", Some(&user.id), &client)
                        .to_owned_at(store::now_unix()),
                )
                .await?;
            Ok(match safe_return_to(Some(&form.return_to)) {
                Some(to) => redirect(&to),
                None => redirect(paths::ACCOUNT),
            })
        }
        Err(AccountError::BadCredentials) => {
            state
                .throttle
                .hit(Limit::LoginFailuresPerAccount, login)
                .await;
            let _ = accounts
                .audit(event("sign_in_failed", "bad_credentials", None, &client))
                .await;
            let page = LoginPage {
                base: base_path(),
                csrf: session.csrf_token().await?,
                error: Some(AccountError::BadCredentials.to_string()),
                notice: None,
                username: form.username.chars().take(254).collect(),
                return_to: safe_return_to(Some(&form.return_to)).unwrap_or_default(),
                registration: state.config.accounts.registration,
                providers: state.provider_buttons(),
            };
            Ok((StatusCode::UNAUTHORIZED, render(&page)).into_response())
        }
        Err(AccountError::Database(e)) => Err(e.into()),
        Err(_) => Err(PageError::internal("sign-in")),
    }
}

async fn logout_post(
    State(state): State<AppState>,
    session: WebSession,
    client: ClientInfo,
    PageForm(form): PageForm<CsrfOnly>,
) -> Result<Response, PageError> {
    session.verify_csrf(&form.csrf_token).await?;
    if let Some(who) = session.signed_in().await? {
        let _ = state
            .accounts()
            .audit(event("signed_out", "success", Some(&who.user_id), &client))
            .await;
    }
    session.sign_out().await?;
    session.flash("You have signed out.").await?;
    Ok(redirect(paths::LOGIN))
}
