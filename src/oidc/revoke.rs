//! `POST /revoke` — RFC 7009 token revocation, for refresh tokens (the whole family goes) and
//! access tokens (their `jti` is remembered until they would have expired).

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;

use super::error::{Code, OAuthError};
use super::params::Params;
use super::{client_auth, paths, verify};
use crate::crypto::secrets::token_hash;
use crate::state::AppState;
use crate::store::{self, audit, grants};

pub fn router() -> Router<AppState> {
    Router::new().route(paths::REVOKE, post(revoke_post))
}

async fn revoke_post(State(state): State<AppState>, headers: HeaderMap, body: Bytes) -> Response {
    match revoke(&state, &headers, &body).await {
        // §2.2: 200 whether or not the token existed.
        Ok(()) => (StatusCode::OK, [(header::CACHE_CONTROL, "no-store")]).into_response(),
        Err(e) => e.into_response(),
    }
}

async fn revoke(state: &AppState, headers: &HeaderMap, body: &[u8]) -> Result<(), OAuthError> {
    let params = Params::parse(body);
    let client = client_auth::authenticate(&state.store, headers, &params).await?;
    let token = params
        .require("token")
        .map_err(|e| OAuthError::invalid_request(e.to_string()))?;
    params
        .get("token_type_hint")
        .map_err(|e| OAuthError::invalid_request(e.to_string()))?;
    let now = store::now_unix();
    let mut tx = state.store.begin_write().await?;
    let mut revoked_any = true;
    if let Some(info) = grants::refresh_info(&mut tx, &token_hash(token)).await? {
        // §2.1: a client may only revoke its own tokens.
        if info.client_id != client.id {
            return Err(OAuthError::new(
                Code::UnauthorizedClient,
                "the token was not issued to this client",
            ));
        }
        let revoked = grants::revoke_family(&mut tx, &info.family_id, now).await?;
        let detail = format!("refresh token family: {revoked}");
        let e = audit::NewEvent {
            kind: "token_revoked",
            outcome: "success",
            user_id: info.user_id.as_deref(),
            client_id: Some(&client.id),
            detail: &detail,
            ..Default::default()
        };
        audit::insert(&mut tx, &e, now).await?;
    } else if let Some(claims) = verify::access_token(&state.keys, &state.config, token) {
        if claims.client_id != client.id {
            return Err(OAuthError::new(
                Code::UnauthorizedClient,
                "the token was not issued to this client",
            ));
        }
        grants::revoke_jti(&mut tx, &claims.jti, claims.exp).await?;
        let e = audit::NewEvent {
            kind: "token_revoked",
            outcome: "success",
            user_id: Some(&claims.sub),
            client_id: Some(&client.id),
            detail: "access token",
            ..Default::default()
        };
        audit::insert(&mut tx, &e, now).await?;
    } else {
        // Anything else (expired, garbage, not ours): nothing to do, and not an error (§2.2).
        revoked_any = false;
    }
    tx.commit().await?;
    if revoked_any {
        // §2.2: "invalidation takes place immediately": this replica's next answer knows.
        state.store.settle().await;
    }
    Ok(())
}
