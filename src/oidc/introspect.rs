//! `POST /introspect` — RFC 7662 token introspection, for confidential clients (resource
//! servers). `active: false` for anything expired, revoked, spent, malformed or not ours.

use axum::Json;
use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use serde_json::{Value, json};

use super::error::{Code, OAuthError};
use super::params::Params;
use super::{client_auth, paths, verify};
use crate::crypto::secrets::token_hash;
use crate::state::AppState;
use crate::store::{self, clients, grants};

pub fn router() -> Router<AppState> {
    Router::new().route(paths::INTROSPECT, post(introspect_post))
}

async fn introspect_post(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    match introspect(&state, &headers, &body).await {
        Ok(answer) => ([(header::CACHE_CONTROL, "no-store")], Json(answer)).into_response(),
        Err(e) => e.into_response(),
    }
}

async fn introspect(
    state: &AppState,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<Value, OAuthError> {
    let params = Params::parse(body);
    let presented = client_auth::Presented::from_request(headers, &params)?;
    // The common case is a JWT access token: its signature and claims are checked in memory
    // first, so that the client and the token's revocation come from one round trip. (An
    // unauthenticated caller learns nothing from this: every answer below waits for the
    // client's credentials to be accepted.)
    let token = params.require("token");
    let claims = token
        .as_ref()
        .ok()
        .and_then(|token| verify::access_token(&state.keys, &state.config, token));
    let (client, revoked) = match &claims {
        Some(claims) => {
            match clients::find_with_revoked_jti(&state.store, &presented.client_id, &claims.jti)
                .await?
            {
                Some((client, revoked)) => (Some(client), revoked),
                None => (None, false),
            }
        }
        None => (
            clients::find(&state.store, &presented.client_id).await?,
            false,
        ),
    };
    let client = presented.accept(client)?;
    if client.public {
        return Err(OAuthError::new(
            Code::InvalidClient,
            "introspection is for confidential clients",
        ));
    }
    let token = token.map_err(|e| OAuthError::invalid_request(e.to_string()))?;
    params
        .get("token_type_hint")
        .map_err(|e| OAuthError::invalid_request(e.to_string()))?;
    if let Some(claims) = claims {
        if revoked {
            return Ok(json!({ "active": false }));
        }
        return Ok(json!({
            "active": true,
            "token_type": "Bearer",
            "scope": claims.scope,
            "client_id": claims.client_id,
            "sub": claims.sub,
            "aud": claims.aud,
            "iss": claims.iss,
            "exp": claims.exp,
            "iat": claims.iat,
            "jti": claims.jti,
        }));
    }
    let now = store::now_unix();
    if let Some(info) =
        grants::refresh_info(&mut *state.store.read().await?, &token_hash(token)).await?
        && info.used_at.is_none()
        && info.revoked_at.is_none()
        && info.expires_at > now
    {
        return Ok(json!({
            "active": true,
            "token_type": "refresh_token",
            "scope": info.scopes,
            "client_id": info.client_id,
            "sub": info.user_id,
            "iss": state.config.issuer,
            "exp": info.expires_at,
            "iat": info.created_at,
        }));
    }
    Ok(json!({ "active": false }))
}
