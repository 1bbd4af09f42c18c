//! Email verification: `GET|POST /verify-email` (the link) and `POST /account/verify-email`
//! (send a new link). The link's GET only shows a button; the POST spends it, so a mail
//! scanner that prefetches links cannot use it up.

use askama::Template;
use axum::Router;
use axum::extract::State;
use axum::response::Response;
use axum::routing::{get, post};
use serde::Deserialize;

use super::service::AccountError;
use super::{paths, redirect};
use crate::state::AppState;
use crate::store::tokens::{self, Unusable};
use crate::store::users;
use crate::throttle::Limit;
use crate::web::pages::{CsrfOnly, PageError, PageForm, PageQuery, base_path, render};
use crate::web::session::{ClientInfo, WebSession};

pub fn router() -> Router<AppState> {
    Router::new()
        .route(paths::VERIFY_EMAIL, get(verify_get).post(verify_post))
        .route(paths::RESEND_VERIFICATION, post(resend_post))
}

#[derive(Template)]
#[template(path = "pages/verify_email.html")]
struct VerifyPage {
    base: String,
    csrf: String,
    token: String,
}

#[derive(Template)]
#[template(path = "pages/email_verified.html")]
struct VerifiedPage {
    base: String,
}

#[derive(Deserialize)]
pub struct TokenQuery {
    #[serde(default)]
    token: String,
}

#[derive(Deserialize)]
pub struct VerifyForm {
    #[serde(default)]
    csrf_token: String,
    #[serde(default)]
    token: String,
}

/// The page for a link that cannot be used, in words.
pub fn link_error(reason: Unusable, what: &str) -> PageError {
    PageError::BadRequest(match reason {
        Unusable::Expired => format!("This {what} link has expired. Request a new one."),
        Unusable::Used => format!(
            "This {what} link has already been used. Each link works once; request a new one if you need it."
        ),
        Unusable::Unknown => format!(
            "This {what} link is not valid. Check that you copied the whole link, or request a new one."
        ),
    })
}

fn account_error(error: AccountError) -> PageError {
    match error {
        AccountError::Link(reason) => link_error(reason, "verification"),
        AccountError::StaleLink => PageError::BadRequest(AccountError::StaleLink.to_string()),
        AccountError::Database(e) => e.into(),
        _ => PageError::internal("verification"),
    }
}

async fn verify_get(
    State(state): State<AppState>,
    session: WebSession,
    PageQuery(query): PageQuery<TokenQuery>,
) -> Result<Response, PageError> {
    state
        .accounts()
        .check_link(&query.token, tokens::VERIFY_EMAIL)
        .await
        .map_err(account_error)?;
    Ok(render(&VerifyPage {
        base: base_path(),
        csrf: session.csrf_token().await?,
        token: query.token,
    }))
}

async fn verify_post(
    State(state): State<AppState>,
    session: WebSession,
    client: ClientInfo,
    PageForm(form): PageForm<VerifyForm>,
) -> Result<Response, PageError> {
    session.verify_csrf(&form.csrf_token).await?;
    state
        .accounts()
        .verify_email(&form.token, &client)
        .await
        .map_err(account_error)?;
    Ok(render(&VerifiedPage { base: base_path() }))
}

async fn resend_post(
    State(state): State<AppState>,
    session: WebSession,
    client: ClientInfo,
    PageForm(form): PageForm<CsrfOnly>,
) -> Result<Response, PageError> {
    session.verify_csrf(&form.csrf_token).await?;
    let Some(who) = session.signed_in().await? else {
        return Ok(redirect(paths::LOGIN));
    };
    if let Some(wait) = state.throttle.blocked(Limit::ResetsPerIp, &client.ip).await {
        return Err(PageError::Throttled(wait));
    }
    state.throttle.hit(Limit::ResetsPerIp, &client.ip).await;
    let mut conn = state.store.read().await?;
    let user = users::by_id(&mut conn, &who.user_id).await?;
    drop(conn);
    let Some(user) = user else {
        return Ok(redirect(paths::LOGIN));
    };
    if !user.email_verified() {
        state
            .accounts()
            .send_verification(&user, &client)
            .await
            .map_err(account_error)?;
        session
            .flash(format!(
                "We sent a new verification link to {}.",
                user.email
            ))
            .await?;
    }
    Ok(redirect(paths::ACCOUNT))
}
