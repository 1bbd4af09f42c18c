//! `POST /token` — RFC 6749 §3.2: `authorization_code` (§4.1.3, with PKCE RFC 7636 §4.6),
//! `refresh_token` (§6, rotated on every use) and `client_credentials` (§4.4).

use axum::Json;
use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use serde::Serialize;

use super::client_auth;
use super::error::{Code, OAuthError};
use super::params::Params;
use super::paths;
use super::tokens::{self, IdTokenInput};
use crate::crypto::secrets::{constant_time_eq, random_token, token_hash};
use crate::crypto::{b64url, sha256};
use crate::state::AppState;
use crate::store::clients::Client;
use crate::store::grants::{self, CodeUse, RefreshUse};
use crate::store::{self, audit, users};

pub fn router() -> Router<AppState> {
    Router::new().route(paths::TOKEN, post(token_post))
}

#[derive(Serialize)]
struct TokenResponse {
    access_token: String,
    token_type: &'static str,
    expires_in: i64,
    scope: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    id_token: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    refresh_token: Option<String>,
}

fn ok(body: TokenResponse) -> Response {
    // RFC 6749 §5.1: no caching of token responses.
    (
        [
            (header::CACHE_CONTROL, "no-store"),
            (header::PRAGMA, "no-cache"),
        ],
        Json(body),
    )
        .into_response()
}

fn grant_error(description: &str) -> OAuthError {
    OAuthError::new(Code::InvalidGrant, description)
}

async fn token_post(State(state): State<AppState>, headers: HeaderMap, body: Bytes) -> Response {
    // Concurrent uses of one refresh-token family can make PostgreSQL break a deadlock by
    // aborting one transaction; that request is simply run again.
    const ATTEMPTS: usize = 3;
    for attempt in 1..=ATTEMPTS {
        match token(&state, &headers, &body).await {
            Ok(response) => return ok(response),
            Err(error) if error.retryable && attempt < ATTEMPTS => {
                tracing::debug!(attempt, "token request hit a deadlock; retrying");
            }
            Err(error) => return error.into_response(),
        }
    }
    OAuthError::new(Code::TemporarilyUnavailable, "retry shortly").into_response()
}

async fn token(
    state: &AppState,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<TokenResponse, OAuthError> {
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    if !content_type.starts_with("application/x-www-form-urlencoded") {
        return Err(OAuthError::invalid_request(
            "the body must be application/x-www-form-urlencoded",
        ));
    }
    let params = Params::parse(body);
    let grant_type = params
        .get("grant_type")
        .map_err(|e| OAuthError::invalid_request(e.to_string()))?;
    let client = client_auth::authenticate(&state.store, headers, &params).await?;
    let bad = |e: super::params::ParamError| OAuthError::invalid_request(e.to_string());
    match grant_type {
        None => Err(OAuthError::invalid_request("grant_type is required")),
        Some(g @ ("authorization_code" | "refresh_token" | "client_credentials"))
            if !client.allows_grant(g) =>
        {
            Err(OAuthError::new(
                Code::UnauthorizedClient,
                format!("this client may not use the {g} grant"),
            ))
        }
        Some("authorization_code") => {
            let code = params.require("code").map_err(bad)?;
            let redirect_uri = params.require("redirect_uri").map_err(bad)?;
            let verifier = params.get("code_verifier").map_err(bad)?;
            exchange_code(state, &client, code, redirect_uri, verifier).await
        }
        Some("refresh_token") => {
            let token = params.require("refresh_token").map_err(bad)?;
            let scope = params.get("scope").map_err(bad)?;
            refresh(state, &client, token, scope).await
        }
        Some("client_credentials") => {
            let scope = params.get("scope").map_err(bad)?;
            client_credentials(state, &client, scope).await
        }
        Some(other) => Err(OAuthError::new(
            Code::UnsupportedGrantType,
            format!("grant_type {other:?} is not supported"),
        )),
    }
}

/// RFC 7636 §4.6: BASE64URL(SHA256(code_verifier)) == code_challenge.
fn pkce_ok(challenge: Option<&str>, verifier: Option<&str>) -> bool {
    match (challenge, verifier) {
        (None, None) => true,
        (Some(challenge), Some(verifier)) => {
            let well_formed = (43..=128).contains(&verifier.len())
                && verifier
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-._~".contains(&b));
            well_formed && constant_time_eq(&b64url(sha256(verifier.as_bytes())), challenge)
        }
        // A verifier for a code that had no challenge is a downgrade attempt (RFC 9700
        // §2.1.1); no verifier for a code that had one is a stolen code.
        _ => false,
    }
}

fn audit_event<'a>(
    kind: &'a str,
    outcome: &'a str,
    client: &'a Client,
    user: Option<&'a str>,
    detail: &'a str,
) -> audit::NewEvent<'a> {
    audit::NewEvent {
        kind,
        outcome,
        user_id: user,
        client_id: Some(&client.id),
        detail,
        ..Default::default()
    }
}

/// What a person's grant carries from token to token: the same for the code exchange and
/// every refresh of its family.
struct Grant<'a> {
    family_id: &'a str,
    client: &'a Client,
    user: &'a users::UserRow,
    /// The scope of the grant (a refresh may issue an access token for less).
    scopes: &'a str,
    auth_time: i64,
    amr: &'a str,
    sid: &'a str,
    idp: &'a str,
}

impl Grant<'_> {
    /// Signs the access token and, when the issued `scope` includes `openid`, an ID token
    /// beside it. Called after the grant's transaction has committed, so the RSA signatures
    /// never hold the database writer (SQLite's only one).
    fn sign(
        &self,
        state: &AppState,
        access: &tokens::AccessClaims,
        nonce: Option<&str>,
        now: i64,
    ) -> Result<(String, Option<String>), crate::crypto::keys::KeyError> {
        let access_token = access.sign(&state.keys)?;
        let scopes: Vec<&str> = access.scope.split(' ').collect();
        if !scopes.contains(&"openid") {
            return Ok((access_token, None));
        }
        let input = IdTokenInput {
            user: self.user,
            client_id: &self.client.id,
            scopes: &scopes,
            nonce,
            auth_time: self.auth_time,
            amr: self.amr,
            sid: self.sid,
            idp: self.idp,
            access_token: &access_token,
            now,
        };
        let id_token = tokens::id_token(&state.keys, &state.config, &input)?;
        Ok((access_token, Some(id_token)))
    }

    /// Stores a new refresh token of the family (beside `access`) and returns it.
    async fn issue_refresh(
        &self,
        tx: &mut sqlx::AnyConnection,
        state: &AppState,
        family_expires_at: i64,
        access: &tokens::AccessClaims,
        now: i64,
    ) -> Result<String, sqlx::Error> {
        let token = random_token();
        let ttl =
            i64::try_from(state.config.tokens.refresh_token_ttl.as_secs()).unwrap_or(i64::MAX);
        let row = grants::NewRefresh {
            token_hash: &token_hash(&token),
            family_id: self.family_id,
            client_id: &self.client.id,
            user_id: Some(&self.user.id),
            // The family keeps the original grant's scope (RFC 6749 §6).
            scopes: self.scopes,
            auth_time: self.auth_time,
            amr: self.amr,
            sid: self.sid,
            now,
            expires_at: now.saturating_add(ttl).min(family_expires_at),
            family_expires_at,
            access_jti: &access.jti,
            access_exp: access.exp,
            idp: self.idp,
        };
        grants::insert_refresh(tx, &row).await?;
        Ok(token)
    }
}

async fn exchange_code(
    state: &AppState,
    client: &Client,
    code: &str,
    redirect_uri: &str,
    verifier: Option<&str>,
) -> Result<TokenResponse, OAuthError> {
    let now = store::now_unix();
    let code_hash = token_hash(code);
    // The account is read on a reader connection first: SQLite's one writer is the scarce
    // resource, so the write transaction below does only writes.
    let account = users::by_grant(
        &mut *state.store.read().await?,
        "auth_codes",
        "code_hash",
        &code_hash,
    )
    .await?;
    let jti = tokens::new_jti();
    let mut tx = state.store.begin_write().await?;
    let row = match grants::use_code(
        &mut tx,
        &code_hash,
        now,
        &jti,
        tokens::access_exp(&state.config, now),
    )
    .await?
    {
        CodeUse::Fresh(row) => row,
        CodeUse::Replayed { grant_id } => {
            // RFC 6749 §4.1.2: a code used twice revokes what the first use issued.
            let revoked = grants::revoke_grant(&mut tx, &grant_id, now).await?;
            let detail = format!("tokens revoked: {revoked}");
            audit::insert(
                &mut tx,
                &audit_event("code_replayed", "refused", client, None, &detail),
                now,
            )
            .await?;
            tx.commit().await?;
            return Err(grant_error("the authorization code was already used"));
        }
        CodeUse::Unknown => return Err(grant_error("the authorization code is invalid")),
    };
    // From here the code is spent whatever happens (committed below), so a stolen code
    // presented with the wrong verifier cannot be retried.
    let failure = if row.client_id != client.id {
        Some("the authorization code was issued to another client")
    } else if row.expires_at <= now {
        Some("the authorization code has expired")
    } else if row.redirect_uri != redirect_uri {
        Some("redirect_uri does not match the authorization request")
    } else if !pkce_ok(row.code_challenge.as_deref(), verifier) {
        Some("the PKCE code_verifier does not match")
    } else {
        None
    };
    if let Some(why) = failure {
        audit::insert(
            &mut tx,
            &audit_event(
                "token_refused",
                why,
                client,
                Some(&row.user_id),
                "authorization_code",
            ),
            now,
        )
        .await?;
        tx.commit().await?;
        return Err(grant_error(why));
    }
    // Dropping the transaction rolls back: the code stays unspent.
    let user = account
        .filter(|u| u.id == row.user_id)
        .ok_or_else(|| grant_error("the account no longer exists"))?;
    let access = tokens::AccessClaims::new(
        &state.config,
        jti,
        &user.id,
        &client.id,
        &row.scopes,
        Some(row.auth_time),
        now,
    );
    let grant = Grant {
        family_id: &row.grant_id,
        client,
        user: &user,
        scopes: &row.scopes,
        auth_time: row.auth_time,
        amr: &row.amr,
        sid: &row.sid,
        idp: &row.idp,
    };
    let offline = row.scopes.split(' ').any(|s| s == "offline_access");
    let refresh_token = if offline && client.allows_grant("refresh_token") {
        let max =
            i64::try_from(state.config.tokens.refresh_token_max_ttl.as_secs()).unwrap_or(i64::MAX);
        Some(
            grant
                .issue_refresh(&mut tx, state, now.saturating_add(max), &access, now)
                .await?,
        )
    } else {
        None
    };
    audit::insert(
        &mut tx,
        &audit_event(
            "token_issued",
            "success",
            client,
            Some(&user.id),
            "authorization_code",
        ),
        now,
    )
    .await?;
    tx.commit().await?;
    let (access_token, id_token) = grant.sign(state, &access, row.nonce.as_deref(), now)?;
    Ok(TokenResponse {
        access_token,
        token_type: "Bearer",
        expires_in: access.exp - now,
        scope: row.scopes,
        id_token,
        refresh_token,
    })
}

async fn refresh(
    state: &AppState,
    client: &Client,
    token: &str,
    scope: Option<&str>,
) -> Result<TokenResponse, OAuthError> {
    let now = store::now_unix();
    let hash = token_hash(token);
    // As for the code: the account is read before the write transaction, on a reader.
    let account = users::by_grant(
        &mut *state.store.read().await?,
        "refresh_tokens",
        "token_hash",
        &hash,
    )
    .await?;
    let mut tx = state.store.begin_write().await?;
    let row = match grants::use_refresh(&mut tx, &hash, &client.id, now).await? {
        RefreshUse::Fresh(row) => row,
        RefreshUse::Reused { family_id, .. } => {
            // RFC 9700 §4.14.2: a rotated token used again means it leaked; end the family.
            let revoked = grants::revoke_family(&mut tx, &family_id, now).await?;
            let detail = format!("family revoked: {revoked} token(s)");
            audit::insert(
                &mut tx,
                &audit_event("refresh_token_reused", "refused", client, None, &detail),
                now,
            )
            .await?;
            tx.commit().await?;
            return Err(grant_error(
                "the refresh token was already used; its whole family is now revoked",
            ));
        }
        RefreshUse::Dead => {
            return Err(grant_error(
                "the refresh token is invalid, expired or revoked",
            ));
        }
    };
    // RFC 6749 §6: the scope may narrow, never widen.
    let granted: Vec<&str> = row.scopes.split(' ').collect();
    let scope = match scope {
        None => row.scopes.clone(),
        Some(requested) => {
            let requested: Vec<&str> = requested.split(' ').filter(|s| !s.is_empty()).collect();
            if let Some(extra) = requested.iter().find(|s| !granted.contains(s)) {
                // The token is spent but not revoked: put it back so the client can retry.
                tx.rollback().await?;
                return Err(OAuthError::new(
                    Code::InvalidScope,
                    format!("scope {extra:?} was not granted"),
                ));
            }
            requested.join(" ")
        }
    };
    let user_id = row
        .user_id
        .clone()
        .ok_or_else(|| grant_error("the refresh token has no account"))?;
    let user = account
        .filter(|u| u.id == user_id)
        .ok_or_else(|| grant_error("the account no longer exists"))?;
    let access = tokens::AccessClaims::new(
        &state.config,
        tokens::new_jti(),
        &user.id,
        &client.id,
        &scope,
        Some(row.auth_time),
        now,
    );
    let grant = Grant {
        family_id: &row.family_id,
        client,
        user: &user,
        scopes: &row.scopes,
        auth_time: row.auth_time,
        amr: &row.amr,
        sid: &row.sid,
        idp: &row.idp,
    };
    let next = grant
        .issue_refresh(&mut tx, state, row.family_expires_at, &access, now)
        .await?;
    audit::insert(
        &mut tx,
        &audit_event("token_refreshed", "success", client, Some(&user.id), ""),
        now,
    )
    .await?;
    tx.commit().await?;
    let (access_token, id_token) = grant.sign(state, &access, None, now)?;
    Ok(TokenResponse {
        access_token,
        token_type: "Bearer",
        expires_in: access.exp - now,
        scope,
        id_token,
        refresh_token: Some(next),
    })
}

async fn client_credentials(
    state: &AppState,
    client: &Client,
    scope: Option<&str>,
) -> Result<TokenResponse, OAuthError> {
    if client.public {
        return Err(OAuthError::new(
            Code::UnauthorizedClient,
            "a public client cannot use client_credentials",
        ));
    }
    let mut scopes: Vec<&str> = Vec::new();
    for s in scope
        .unwrap_or_default()
        .split(' ')
        .filter(|s| !s.is_empty())
    {
        // The OpenID scopes are about a person; there is none here.
        if super::clients::OIDC_SCOPES.contains(&s) || !client.scopes.iter().any(|c| c == s) {
            return Err(OAuthError::new(
                Code::InvalidScope,
                format!("scope {s:?} is not available to this client"),
            ));
        }
        if !scopes.contains(&s) {
            scopes.push(s);
        }
    }
    let scope = scopes.join(" ");
    let now = store::now_unix();
    let access = tokens::AccessClaims::new(
        &state.config,
        tokens::new_jti(),
        &client.id,
        &client.id,
        &scope,
        None,
        now,
    );
    let access_token = access.sign(&state.keys)?;
    let mut tx = state.store.begin_write().await?;
    audit::insert(
        &mut tx,
        &audit_event(
            "token_issued",
            "success",
            client,
            None,
            "client_credentials",
        ),
        now,
    )
    .await?;
    tx.commit().await?;
    Ok(TokenResponse {
        access_token,
        token_type: "Bearer",
        expires_in: access.exp - now,
        scope,
        id_token: None,
        refresh_token: None,
    })
}

#[cfg(test)]
mod tests {
    use super::pkce_ok;

    #[test]
    fn pkce_s256() {
        // RFC 7636 Appendix B.
        let verifier = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";
        let challenge = "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM";
        assert!(pkce_ok(Some(challenge), Some(verifier)));
        assert!(!pkce_ok(
            Some(challenge),
            Some("dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXx")
        ));
        assert!(!pkce_ok(Some(challenge), None), "missing verifier");
        assert!(
            !pkce_ok(None, Some(verifier)),
            "verifier without challenge (downgrade)"
        );
        assert!(!pkce_ok(Some(challenge), Some("short")));
        assert!(pkce_ok(None, None));
    }
}
