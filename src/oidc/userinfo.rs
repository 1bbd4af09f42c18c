//! `GET|POST /userinfo` — OIDC Core §5.3, protected by a bearer access token (RFC 6750).

use axum::Json;
use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde::Serialize;

use super::bearer::{self, BearerError};
use super::params::Params;
use super::tokens::UserClaims;
use super::{paths, verify};
use crate::state::AppState;
use crate::store::{self, grants, users};

pub fn router() -> Router<AppState> {
    Router::new().route(paths::USERINFO, get(userinfo_get).post(userinfo_post))
}

#[derive(Serialize)]
struct UserInfo {
    sub: String,
    #[serde(flatten)]
    claims: UserClaims,
}

async fn userinfo_get(State(state): State<AppState>, headers: HeaderMap) -> Response {
    respond(&state, &headers, None).await
}

async fn userinfo_post(State(state): State<AppState>, headers: HeaderMap, body: Bytes) -> Response {
    let is_form = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|c| c.starts_with("application/x-www-form-urlencoded"));
    let form = is_form.then(|| Params::parse(&body));
    respond(&state, &headers, form.as_ref()).await
}

async fn respond(state: &AppState, headers: &HeaderMap, form: Option<&Params>) -> Response {
    match userinfo(state, headers, form).await {
        Ok(info) => ([(header::CACHE_CONTROL, "no-store")], Json(info)).into_response(),
        Err(e) => e.into_response(),
    }
}

async fn userinfo(
    state: &AppState,
    headers: &HeaderMap,
    form: Option<&Params>,
) -> Result<UserInfo, BearerError> {
    let token = bearer::token(headers, form)?;
    let claims = verify::access_token(&state.keys, &state.config, &token).ok_or(
        BearerError::InvalidToken("the access token is invalid or expired"),
    )?;
    let unavailable = |e: sqlx::Error| {
        if store::is_unavailable(&e) {
            BearerError::Unavailable
        } else {
            BearerError::InvalidToken("the access token could not be checked")
        }
    };
    // One read for the account and the token's revocation; only a token about no account (a
    // client's own) needs a second, to tell which error it gets.
    let found = users::find_with_revoked_jti(&state.store, &claims.sub, &claims.jti)
        .await
        .map_err(unavailable)?;
    let revoked = match &found {
        Some((_, revoked)) => *revoked,
        None => grants::jti_revoked(&state.store, &claims.jti)
            .await
            .map_err(unavailable)?,
    };
    if revoked {
        return Err(BearerError::InvalidToken("the access token was revoked"));
    }
    let scopes: Vec<&str> = claims.scope.split(' ').collect();
    if !scopes.contains(&"openid") {
        return Err(BearerError::InsufficientScope(
            "the openid scope is required",
        ));
    }
    let (user, _) = found.ok_or(BearerError::InvalidToken(
        "the access token is not about a person",
    ))?;
    Ok(UserInfo {
        sub: user.id.clone(),
        claims: UserClaims::for_scopes(&user, &scopes),
    })
}
