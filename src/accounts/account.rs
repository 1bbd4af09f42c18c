//! `GET /account` and its forms: profile, password, sessions.

use askama::Template;
use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Deserialize;
use time::OffsetDateTime;

use super::service::{AccountError, event};
use super::{paths, redirect};
use crate::state::AppState;
use crate::store::{self, users::UserRow};
use crate::web::pages::{CsrfOnly, PageError, PageForm, base_path, render};
use crate::web::session::{ClientInfo, SignedIn, WebSession};

pub fn router() -> Router<AppState> {
    Router::new()
        .route(paths::ACCOUNT, get(account_get))
        .route(paths::PROFILE, post(profile_post))
        .route(paths::PASSWORD, post(password_post))
        .route(paths::END_SESSION, post(end_session_post))
        .route(paths::END_ALL_SESSIONS, post(end_all_sessions_post))
        .route(paths::REVOKE_APP, post(revoke_app_post))
}

/// One row of "where you're signed in".
struct SessionView {
    id: String,
    current: bool,
    device: String,
    ip: String,
    signed_in: String,
    last_used: String,
}

#[derive(Template)]
#[template(path = "pages/account.html")]
struct AccountPage {
    base: String,
    csrf: String,
    notice: Option<String>,
    error: Option<String>,
    user: UserRow,
    has_password: bool,
    sessions: Vec<SessionView>,
    apps: Vec<AppView>,
    identities: Vec<IdentityView>,
    /// Providers not linked yet: (id, name).
    linkable: Vec<(String, String)>,
}

/// One linked sign-in method.
struct IdentityView {
    provider: String,
    provider_name: String,
    subject: String,
    email: String,
    linked: String,
}

/// One approved app.
struct AppView {
    client_id: String,
    name: String,
    scopes: String,
    approved: String,
}

fn when(unix: i64) -> String {
    OffsetDateTime::from_unix_timestamp(unix)
        .ok()
        .and_then(|t| {
            t.format(&time::macros::format_description!(
                "[year]-[month]-[day] [hour]:[minute] UTC"
            ))
            .ok()
        })
        .unwrap_or_default()
}

/// A short, readable name for a user agent ("Firefox on Linux").
fn device(user_agent: &str) -> String {
    let browser = ["Edg/", "OPR/", "Firefox/", "Chrome/", "Safari/", "curl/"]
        .iter()
        .find(|b| user_agent.contains(*b))
        .map(|b| match *b {
            "Edg/" => "Edge",
            "OPR/" => "Opera",
            "Firefox/" => "Firefox",
            "Chrome/" => "Chrome",
            "Safari/" => "Safari",
            _ => "curl",
        });
    let os = ["Android", "iPhone", "iPad", "Windows", "Mac OS X", "Linux"]
        .iter()
        .find(|o| user_agent.contains(*o))
        .map(|o| if *o == "Mac OS X" { "macOS" } else { o });
    match (browser, os) {
        (Some(b), Some(o)) => format!("{b} on {o}"),
        (Some(b), None) => b.to_owned(),
        (None, Some(o)) => o.to_owned(),
        (None, None) if user_agent.is_empty() => "Unknown device".to_owned(),
        (None, None) => user_agent.chars().take(60).collect(),
    }
}

/// The signed-in person and their row, or a redirect to the sign-in page.
async fn require_user(
    state: &AppState,
    session: &WebSession,
) -> Result<Result<(SignedIn, UserRow), Response>, PageError> {
    let Some(who) = session.signed_in().await? else {
        return Ok(Err(redirect(&format!(
            "{}?return_to={}",
            paths::LOGIN,
            paths::ACCOUNT
        ))));
    };
    let mut conn = state.store.read().await?;
    let user = store::users::by_id(&mut conn, &who.user_id).await?;
    drop(conn);
    match user {
        Some(user) => Ok(Ok((who, user))),
        None => {
            // The account was deleted while this session lived.
            session.sign_out().await?;
            Ok(Err(redirect(paths::LOGIN)))
        }
    }
}

async fn page(
    state: &AppState,
    session: &WebSession,
    user: UserRow,
    notice: Option<String>,
    error: Option<String>,
) -> Result<AccountPage, PageError> {
    let current = session.stored_id();
    let mut conn = state.store.read().await?;
    let rows = store::sessions::for_user(&mut conn, &user.id, store::now_unix()).await?;
    let apps = store::grants::consents_of(&mut conn, &user.id)
        .await?
        .into_iter()
        .map(|c| AppView {
            client_id: c.client_id,
            name: c.client_name,
            scopes: c.scopes,
            approved: when(c.granted_at),
        })
        .collect();
    let identities: Vec<IdentityView> = store::identities::of_user(&mut conn, &user.id)
        .await?
        .into_iter()
        .map(|i| IdentityView {
            provider_name: state
                .upstream
                .get(&i.provider)
                .map_or_else(|| i.provider.clone(), |p| p.display_name.clone()),
            provider: i.provider,
            subject: i.subject,
            email: i.email,
            linked: when(i.linked_at),
        })
        .collect();
    drop(conn);
    let linkable = state.provider_buttons();
    let sessions = rows
        .into_iter()
        .map(|r| SessionView {
            current: current.as_deref() == Some(r.id.as_str()),
            device: device(&r.user_agent),
            ip: r.ip,
            signed_in: when(r.created_at),
            last_used: when(r.updated_at),
            id: r.id,
        })
        .collect();
    Ok(AccountPage {
        base: base_path(),
        csrf: session.csrf_token().await?,
        notice,
        error,
        has_password: user.password_hash.is_some(),
        user,
        sessions,
        apps,
        identities,
        linkable,
    })
}

async fn account_get(
    State(state): State<AppState>,
    session: WebSession,
) -> Result<Response, PageError> {
    let (_, user) = match require_user(&state, &session).await? {
        Ok(found) => found,
        Err(redirect) => return Ok(redirect),
    };
    let notice = session.take_flash().await?;
    Ok(render(&page(&state, &session, user, notice, None).await?))
}

#[derive(Deserialize)]
pub struct ProfileForm {
    #[serde(default)]
    csrf_token: String,
    #[serde(default)]
    name: String,
    #[serde(default)]
    email: String,
}

async fn profile_post(
    State(state): State<AppState>,
    session: WebSession,
    client: ClientInfo,
    PageForm(form): PageForm<ProfileForm>,
) -> Result<Response, PageError> {
    session.verify_csrf(&form.csrf_token).await?;
    let (_, user) = match require_user(&state, &session).await? {
        Ok(found) => found,
        Err(redirect) => return Ok(redirect),
    };
    match state
        .accounts()
        .update_profile(&user, &form.name, &form.email, &client)
        .await
    {
        Ok(email_changed) => {
            let notice = if email_changed {
                format!(
                    "Profile saved. We sent a verification link to {}.",
                    form.email.trim()
                )
            } else {
                "Profile saved.".to_owned()
            };
            session.flash(notice).await?;
            Ok(redirect(paths::ACCOUNT))
        }
        Err(e @ (AccountError::Invalid(_) | AccountError::EmailTaken)) => {
            let status = if matches!(e, AccountError::EmailTaken) {
                StatusCode::CONFLICT
            } else {
                StatusCode::BAD_REQUEST
            };
            let page = page(&state, &session, user, None, Some(e.to_string())).await?;
            Ok((status, render(&page)).into_response())
        }
        Err(AccountError::Database(e)) => Err(e.into()),
        Err(_) => Err(PageError::internal("profile")),
    }
}

#[derive(Deserialize)]
pub struct PasswordForm {
    #[serde(default)]
    csrf_token: String,
    #[serde(default)]
    current_password: String,
    #[serde(default)]
    new_password: String,
}

async fn password_post(
    State(state): State<AppState>,
    session: WebSession,
    client: ClientInfo,
    PageForm(form): PageForm<PasswordForm>,
) -> Result<Response, PageError> {
    session.verify_csrf(&form.csrf_token).await?;
    let (_, user) = match require_user(&state, &session).await? {
        Ok(found) => found,
        Err(redirect) => return Ok(redirect),
    };
    let keep = session.stored_id();
    match state
        .accounts()
        .change_password(
            &user,
            &form.current_password,
            &form.new_password,
            keep.as_deref(),
            &client,
        )
        .await
    {
        Ok(()) => {
            session
                .flash("Password changed. You have been signed out everywhere else.")
                .await?;
            Ok(redirect(paths::ACCOUNT))
        }
        Err(e @ (AccountError::WrongCurrentPassword | AccountError::WeakPassword(_))) => {
            let page = page(&state, &session, user, None, Some(e.to_string())).await?;
            Ok((StatusCode::BAD_REQUEST, render(&page)).into_response())
        }
        Err(AccountError::Database(e)) => Err(e.into()),
        Err(_) => Err(PageError::internal("password change")),
    }
}

#[derive(Deserialize)]
pub struct EndSessionForm {
    #[serde(default)]
    csrf_token: String,
    #[serde(default)]
    session: String,
}

async fn end_session_post(
    State(state): State<AppState>,
    session: WebSession,
    client: ClientInfo,
    PageForm(form): PageForm<EndSessionForm>,
) -> Result<Response, PageError> {
    session.verify_csrf(&form.csrf_token).await?;
    let (who, _) = match require_user(&state, &session).await? {
        Ok(found) => found,
        Err(redirect) => return Ok(redirect),
    };
    if session.stored_id().as_deref() == Some(form.session.as_str()) {
        // Ending the current session is signing out.
        session.sign_out().await?;
        return Ok(redirect(paths::LOGIN));
    }
    let mut tx = state.store.begin_write().await?;
    let ended = store::sessions::delete_for_user(&mut tx, &who.user_id, &form.session).await?;
    if ended {
        store::audit::insert(
            &mut tx,
            &event("session_revoked", "success", Some(&who.user_id), &client),
            store::now_unix(),
        )
        .await?;
    }
    tx.commit().await?;
    session
        .flash(if ended {
            "That session has been signed out."
        } else {
            "That session had already ended."
        })
        .await?;
    Ok(redirect(paths::ACCOUNT))
}

/// "Sign out everywhere": every session of the account, this one included.
async fn end_all_sessions_post(
    State(state): State<AppState>,
    session: WebSession,
    client: ClientInfo,
    PageForm(form): PageForm<CsrfOnly>,
) -> Result<Response, PageError> {
    session.verify_csrf(&form.csrf_token).await?;
    let (who, _) = match require_user(&state, &session).await? {
        Ok(found) => found,
        Err(redirect) => return Ok(redirect),
    };
    let mut tx = state.store.begin_write().await?;
    let ended = store::sessions::delete_all_for_user(&mut tx, &who.user_id, None).await?;
    let detail = format!("sessions ended: {ended}");
    let mut e = event(
        "signed_out_everywhere",
        "success",
        Some(&who.user_id),
        &client,
    );
    e.detail = &detail;
    store::audit::insert(&mut tx, &e, store::now_unix()).await?;
    tx.commit().await?;
    session.sign_out().await?;
    session
        .flash("You have been signed out on every device.")
        .await?;
    Ok(redirect(paths::LOGIN))
}

#[derive(Deserialize)]
pub struct RevokeAppForm {
    #[serde(default)]
    csrf_token: String,
    #[serde(default)]
    client_id: String,
}

/// Withdraws the approval of an app: its consent goes, and so do its refresh tokens (and
/// the access tokens issued beside them).
async fn revoke_app_post(
    State(state): State<AppState>,
    session: WebSession,
    client: ClientInfo,
    PageForm(form): PageForm<RevokeAppForm>,
) -> Result<Response, PageError> {
    session.verify_csrf(&form.csrf_token).await?;
    let (who, _) = match require_user(&state, &session).await? {
        Ok(found) => found,
        Err(redirect) => return Ok(redirect),
    };
    let now = store::now_unix();
    let mut tx = state.store.begin_write().await?;
    let revoked =
        store::grants::revoke_consent(&mut tx, &who.user_id, &form.client_id, now).await?;
    if revoked {
        let mut e = event("consent_revoked", "success", Some(&who.user_id), &client);
        e.client_id = Some(&form.client_id);
        store::audit::insert(&mut tx, &e, now).await?;
    }
    tx.commit().await?;
    if revoked {
        state.store.settle().await;
    }
    session
        .flash(if revoked {
            "The app no longer has access to your account."
        } else {
            "That app had no access."
        })
        .await?;
    Ok(redirect(paths::ACCOUNT))
}
