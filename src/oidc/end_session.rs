//! `GET|POST /end-session` — OpenID Connect RP-Initiated Logout 1.0.
//!
//! With a valid `id_token_hint` for the person signed in here (or nobody signed in), the
//! request clearly comes from the RP: the session ends at once. Otherwise (no hint, or a hint
//! about someone else) a page asks the person to confirm, so a link on another site cannot
//! sign them out (§2, §6). `post_logout_redirect_uri` must be registered for the client
//! named by the hint or `client_id`, byte for byte; otherwise Tessera shows its own page.

use askama::Template;
use axum::Router;
use axum::body::Bytes;
use axum::extract::{RawQuery, State};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use serde::{Deserialize, Serialize};

use super::params::Params;
use super::{paths, verify};
use crate::accounts::service::event;
use crate::state::AppState;
use crate::store;
use crate::web::pages::{PageError, PageForm, base_path, render};
use crate::web::session::{ClientInfo, WebSession};

pub fn router() -> Router<AppState> {
    Router::new()
        .route(
            paths::END_SESSION,
            get(end_session_get).post(end_session_post),
        )
        .route(paths::END_SESSION_CONFIRM, post(confirm_post))
}

const PENDING: &str = "end_session";

/// Where to go after signing out.
#[derive(Debug, Clone, Serialize, Deserialize, Default)]
struct After {
    redirect: Option<String>,
    state: Option<String>,
    client_name: Option<String>,
}

#[derive(Template)]
#[template(path = "pages/logout.html")]
struct LogoutPage {
    base: String,
    csrf: String,
    client_name: Option<String>,
    done: bool,
}

async fn end_session_get(
    State(state): State<AppState>,
    session: WebSession,
    client: ClientInfo,
    RawQuery(q): RawQuery,
) -> Result<Response, PageError> {
    end_session(
        &state,
        &session,
        &client,
        Params::parse(q.unwrap_or_default().as_bytes()),
    )
    .await
}

async fn end_session_post(
    State(state): State<AppState>,
    session: WebSession,
    client: ClientInfo,
    body: Bytes,
) -> Result<Response, PageError> {
    end_session(&state, &session, &client, Params::parse(&body)).await
}

fn bad(what: &str) -> PageError {
    PageError::BadRequest(format!("This sign-out request can't be completed: {what}."))
}

async fn end_session(
    state: &AppState,
    session: &WebSession,
    client_info: &ClientInfo,
    params: Params,
) -> Result<Response, PageError> {
    let get = |name: &str| params.get(name).map_err(|e| bad(&e.to_string()));
    let hint = match get("id_token_hint")? {
        Some(token) => Some(
            verify::id_token_hint(&state.keys, &state.config, token)
                .ok_or_else(|| bad("the id_token_hint is not a valid ID token from this server"))?,
        ),
        None => None,
    };
    let client_id = get("client_id")?;
    if let (Some(h), Some(c)) = (&hint, client_id)
        && h.aud != c
    {
        return Err(bad("client_id does not match the id_token_hint"));
    }
    let client_id = hint
        .as_ref()
        .map(|h| h.aud.clone())
        .or(client_id.map(str::to_owned));
    let client = match &client_id {
        Some(id) => {
            let mut conn = state.store.read().await?;
            Some(
                store::clients::by_id(&mut conn, id)
                    .await?
                    .ok_or_else(|| bad("the app is not registered here"))?,
            )
        }
        None => None,
    };
    let redirect = match get("post_logout_redirect_uri")? {
        None => None,
        Some(uri) => {
            let client = client
                .as_ref()
                .ok_or_else(|| bad("post_logout_redirect_uri needs id_token_hint or client_id"))?;
            if !client.post_logout_redirect_uris.iter().any(|u| u == uri) {
                return Err(bad("the return address is not registered for this app"));
            }
            Some(uri.to_owned())
        }
    };
    for name in ["ui_locales", "logout_hint"] {
        get(name)?;
    }
    let after = After {
        redirect,
        state: get("state")?.map(str::to_owned),
        client_name: client.map(|c| c.name),
    };
    let who = session.signed_in().await?;
    let from_rp = match (&hint, &who) {
        (Some(h), Some(w)) => h.sub == w.user_id,
        (_, None) => true,
        (None, Some(_)) => false,
    };
    if from_rp {
        return finish(state, session, client_info, after).await;
    }
    session.put(PENDING, &after).await?;
    let page = LogoutPage {
        base: base_path(),
        csrf: session.csrf_token().await?,
        client_name: after.client_name,
        done: false,
    };
    Ok(render(&page))
}

#[derive(Deserialize)]
pub struct ConfirmForm {
    #[serde(default)]
    csrf_token: String,
}

async fn confirm_post(
    State(state): State<AppState>,
    session: WebSession,
    client: ClientInfo,
    PageForm(form): PageForm<ConfirmForm>,
) -> Result<Response, PageError> {
    session.verify_csrf(&form.csrf_token).await?;
    let after: After = session.take(PENDING).await?.unwrap_or_default();
    finish(&state, &session, &client, after).await
}

async fn finish(
    state: &AppState,
    session: &WebSession,
    client: &ClientInfo,
    after: After,
) -> Result<Response, PageError> {
    if let Some(who) = session.signed_in().await? {
        let mut e = event("signed_out", "success", Some(&who.user_id), client);
        e.detail = "rp-initiated";
        let _ = state.accounts().audit(e).await;
    }
    session.sign_out().await?;
    match after.redirect {
        Some(uri) => {
            let mut url =
                url::Url::parse(&uri).map_err(|_| bad("the return address is not valid"))?;
            if let Some(s) = &after.state {
                url.query_pairs_mut().append_pair("state", s);
            }
            Ok(Redirect::to(url.as_str()).into_response())
        }
        None => Ok(render(&LogoutPage {
            base: base_path(),
            csrf: String::new(),
            client_name: after.client_name,
            done: true,
        })),
    }
}
