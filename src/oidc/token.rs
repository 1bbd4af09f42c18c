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
use crate::config::DatabaseKind;
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
pub(crate) fn pkce_ok(challenge: Option<&str>, verifier: Option<&str>) -> bool {
    match (challenge, verifier) {
        (None, None) => true,
        (Some(challenge), Some(verifier)) => {
            s256_challenge(verifier).is_some_and(|expected| constant_time_eq(&expected, challenge))
        }
        // A verifier for a code that had no challenge is a downgrade attempt (RFC 9700
        // §2.1.1); no verifier for a code that had one is a stolen code.
        _ => false,
    }
}

/// The S256 challenge of `verifier` (RFC 7636 §4.2), if it is well formed (§4.1: 43–128
/// characters of `[A-Za-z0-9-._~]`).
fn s256_challenge(verifier: &str) -> Option<String> {
    let well_formed = (43..=128).contains(&verifier.len())
        && verifier
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-._~".contains(&b));
    well_formed.then(|| b64url(sha256(verifier.as_bytes())))
}

/// What a person's grant carries from token to token: the same for the code exchange and
/// every refresh of its family.
struct Grant<'a> {
    client: &'a Client,
    user: &'a users::UserRow,
    auth_time: i64,
    amr: &'a str,
    sid: &'a str,
    idp: &'a str,
}

impl Grant<'_> {
    /// The token response: an access token `jti` for `scope` and, when `scope` includes
    /// `openid`, an ID token beside it. Called after the grant's transaction has committed,
    /// so the RSA signatures never hold a transaction (nor SQLite's one writer).
    fn respond(
        &self,
        state: &AppState,
        jti: String,
        scope: String,
        nonce: Option<&str>,
        refresh_token: Option<String>,
        now: i64,
    ) -> Result<TokenResponse, crate::crypto::keys::KeyError> {
        let access = tokens::AccessClaims::new(
            &state.config,
            jti,
            &self.user.id,
            &self.client.id,
            &scope,
            Some(self.auth_time),
            now,
        );
        let access_token = access.sign(&state.keys)?;
        let scopes: Vec<&str> = scope.split(' ').collect();
        let id_token = if scopes.contains(&"openid") {
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
            Some(tokens::id_token(&state.keys, &state.config, &input)?)
        } else {
            None
        };
        Ok(TokenResponse {
            access_token,
            token_type: "Bearer",
            expires_in: access.exp - now,
            scope,
            id_token,
            refresh_token,
        })
    }
}

/// An event of the grant's client, for the batch's audit rows.
fn audit_row(
    kind: &str,
    outcome: &str,
    client_id: &str,
    user: Option<&str>,
    detail: &str,
    now: i64,
) -> audit::OwnedEvent {
    audit::OwnedEvent {
        kind: kind.to_owned(),
        outcome: outcome.to_owned(),
        user_id: user.map(str::to_owned),
        client_id: Some(client_id.to_owned()),
        detail: detail.to_owned(),
        at: now,
        ..Default::default()
    }
}

/// The next refresh token of a family, drawn before the write transaction so the work can be
/// run again unchanged if its batch has to be retried.
#[derive(Clone)]
struct NextRefresh {
    token: String,
    ttl: i64,
}

impl NextRefresh {
    fn new(state: &AppState) -> Self {
        Self {
            token: random_token(),
            ttl: i64::try_from(state.config.tokens.refresh_token_ttl.as_secs()).unwrap_or(i64::MAX),
        }
    }
}

/// What a family's refresh tokens carry over from the grant that started it.
struct Family<'a> {
    id: &'a str,
    expires_at: i64,
    client_id: &'a str,
    user_id: &'a str,
    scopes: &'a str,
    auth_time: i64,
    amr: &'a str,
    sid: &'a str,
    idp: &'a str,
}

impl Family<'_> {
    /// Stores `next` as the family's new refresh token, issued beside access token `jti`
    /// (which expires at `access_exp`).
    async fn store(
        &self,
        conn: &mut sqlx::AnyConnection,
        next: &NextRefresh,
        jti: &str,
        access_exp: i64,
        now: i64,
    ) -> Result<(), sqlx::Error> {
        grants::insert_refresh(
            conn,
            &grants::NewRefresh {
                token_hash: &token_hash(&next.token),
                family_id: self.id,
                client_id: self.client_id,
                user_id: Some(self.user_id),
                // The family keeps the original grant's scope (RFC 6749 §6).
                scopes: self.scopes,
                auth_time: self.auth_time,
                amr: self.amr,
                sid: self.sid,
                now,
                expires_at: now.saturating_add(next.ttl).min(self.expires_at),
                family_expires_at: self.expires_at,
                access_jti: jti,
                access_exp,
                idp: self.idp,
            },
        )
        .await
    }
}

/// The account behind a code (`table` "auth_codes", `key` "code_hash") or a refresh token
/// ("refresh_tokens", "token_hash"), read before the grant's writes on SQLite: its one writer
/// is the scarce resource, so the write transaction does only writes, and no account means no
/// such grant (`missing`; deleting an account deletes its codes and tokens). `None` on
/// PostgreSQL, where the statement that spends the grant reads it (see [`account`]).
async fn account_first(
    state: &AppState,
    table: &'static str,
    key: &'static str,
    hash: &str,
    missing: impl Fn() -> OAuthError,
) -> Result<Option<users::UserRow>, OAuthError> {
    match state.store.kind() {
        DatabaseKind::Sqlite => match users::find_by_grant(&state.store, table, key, hash).await? {
            Some(user) => Ok(Some(user)),
            None => Err(missing()),
        },
        DatabaseKind::Postgres => Ok(None),
    }
}

/// The grant's account: the one its writes read, else the one read before them.
fn account(
    read: Option<Box<users::UserRow>>,
    before: Option<users::UserRow>,
) -> Option<users::UserRow> {
    read.map(|u| *u).or(before)
}

/// What a code exchange's writes found and did.
enum Exchanged {
    Issued {
        row: Box<grants::CodeRow>,
        /// The account, when the writes read it (PostgreSQL).
        user: Option<Box<users::UserRow>>,
        refresh_token: Option<String>,
    },
    Refused(&'static str),
    Replayed,
    Unknown,
}

/// The inputs of a code exchange's writes (owned: the work may run twice, see
/// `store::batch`).
#[derive(Clone)]
struct ExchangeWrite {
    code_hash: String,
    client: Client,
    /// The account read before the writes (SQLite); `None`: the writes read it (PostgreSQL).
    user_id: Option<String>,
    redirect_uri: String,
    verifier: Option<String>,
    jti: String,
    access_exp: i64,
    next: NextRefresh,
    refresh_max_ttl: i64,
    now: i64,
}

/// Spends the code and stores what its exchange issues. Every refusal after the code was
/// found leaves it spent, so a stolen code presented with the wrong verifier cannot be
/// retried.
async fn exchange_writes(
    conn: &mut sqlx::AnyConnection,
    rows: &mut Vec<audit::OwnedEvent>,
    w: ExchangeWrite,
) -> Result<Exchanged, sqlx::Error> {
    let now = w.now;
    let client = &w.client;
    let read_user = w.user_id.is_none();
    let access = (w.jti.as_str(), w.access_exp);
    let allows_refresh = client.allows_grant("refresh_token");
    let family_expires_at = now.saturating_add(w.refresh_max_ttl);
    // On PostgreSQL (where the writes read the account) the refresh token is offered to the
    // statement that spends the code; stored there only if the code passes the checks below
    // (see `grants::Successor`), which are still made, and decide.
    let offer = (read_user && allows_refresh).then(|| {
        let challenge = w.verifier.as_deref().and_then(s256_challenge);
        (token_hash(&w.next.token), challenge)
    });
    let successor = offer
        .as_ref()
        .map(|(next_hash, challenge)| grants::Successor {
            token_hash: next_hash,
            expires_at: now.saturating_add(w.next.ttl),
            family_expires_at,
            client_id: &client.id,
            redirect_uri: &w.redirect_uri,
            challenge: challenge.as_deref(),
        });
    let offered = successor.as_ref();
    let used = grants::use_code(conn, &w.code_hash, now, access, read_user, offered).await?;
    let (row, user, stored) = match used {
        CodeUse::Fresh(row, user, stored) => (row, user, stored),
        CodeUse::Replayed { grant_id } => {
            // RFC 6749 §4.1.2: a code used twice revokes what the first use issued.
            let revoked = grants::revoke_grant(conn, &grant_id, now).await?;
            let detail = format!("tokens revoked: {revoked}");
            rows.push(audit_row(
                "code_replayed",
                "refused",
                &client.id,
                None,
                &detail,
                now,
            ));
            return Ok(Exchanged::Replayed);
        }
        CodeUse::Unknown => return Ok(Exchanged::Unknown),
    };
    let failure = if row.client_id != client.id {
        Some("the authorization code was issued to another client")
    } else if row.expires_at <= now {
        Some("the authorization code has expired")
    } else if row.redirect_uri != w.redirect_uri {
        Some("redirect_uri does not match the authorization request")
    } else if !pkce_ok(row.code_challenge.as_deref(), w.verifier.as_deref()) {
        Some("the PKCE code_verifier does not match")
    } else if w.user_id.as_ref().is_some_and(|id| *id != row.user_id) {
        // The account was read before the transaction; a code never changes hands, so this
        // cannot happen, but tokens are never minted from a mismatch.
        Some("the authorization code is invalid")
    } else {
        None
    };
    let offline = row.scopes.split(' ').any(|s| s == "offline_access");
    let issue_refresh = failure.is_none() && offline && allows_refresh;
    if stored
        && !issue_refresh
        && let Some(successor) = &successor
    {
        // The statement's checks and these disagreed: what is refused is never issued.
        grants::delete_refresh(conn, successor.token_hash).await?;
    }
    if let Some(why) = failure {
        rows.push(audit_row(
            "token_refused",
            why,
            &client.id,
            Some(&row.user_id),
            "authorization_code",
            now,
        ));
        return Ok(Exchanged::Refused(why));
    }
    let refresh_token = if issue_refresh {
        let family = Family {
            id: &row.grant_id,
            expires_at: family_expires_at,
            client_id: &client.id,
            user_id: &row.user_id,
            scopes: &row.scopes,
            auth_time: row.auth_time,
            amr: &row.amr,
            sid: &row.sid,
            idp: &row.idp,
        };
        if !stored {
            family
                .store(conn, &w.next, &w.jti, w.access_exp, now)
                .await?;
        }
        Some(w.next.token.clone())
    } else {
        None
    };
    rows.push(audit_row(
        "token_issued",
        "success",
        &client.id,
        Some(&row.user_id),
        "authorization_code",
        now,
    ));
    Ok(Exchanged::Issued {
        row,
        user,
        refresh_token,
    })
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
    let invalid = || grant_error("the authorization code is invalid");
    let user = account_first(state, "auth_codes", "code_hash", &code_hash, invalid).await?;
    let write = ExchangeWrite {
        code_hash,
        client: client.clone(),
        user_id: user.as_ref().map(|u| u.id.clone()),
        redirect_uri: redirect_uri.to_owned(),
        verifier: verifier.map(str::to_owned),
        jti: tokens::new_jti(),
        access_exp: tokens::access_exp(&state.config, now),
        next: NextRefresh::new(state),
        refresh_max_ttl: i64::try_from(state.config.tokens.refresh_token_max_ttl.as_secs())
            .unwrap_or(i64::MAX),
        now,
    };
    let jti = write.jti.clone();
    let outcome = state
        .store
        .write_grant(move |conn, rows| Box::pin(exchange_writes(conn, rows, write.clone())))
        .await?;
    let (row, user, refresh_token) = match outcome {
        Exchanged::Issued {
            row,
            user: read,
            refresh_token,
        } => (row, account(read, user).ok_or_else(invalid)?, refresh_token),
        Exchanged::Refused(why) => return Err(grant_error(why)),
        Exchanged::Replayed => {
            state.store.settle().await;
            return Err(grant_error("the authorization code was already used"));
        }
        Exchanged::Unknown => return Err(invalid()),
    };
    let grant = Grant {
        client,
        user: &user,
        auth_time: row.auth_time,
        amr: &row.amr,
        sid: &row.sid,
        idp: &row.idp,
    };
    let scope = row.scopes.clone();
    Ok(grant.respond(state, jti, scope, row.nonce.as_deref(), refresh_token, now)?)
}

/// What a refresh's writes found and did: the spent token's row, and the account when the
/// writes read it (PostgreSQL).
enum Refreshed {
    Rotated(Box<grants::RefreshRow>, Option<Box<users::UserRow>>),
    Reused,
    Dead,
}

#[derive(Clone)]
struct RefreshWrite {
    token_hash: String,
    client_id: String,
    /// The account read before the writes (SQLite); `None`: the writes read it (PostgreSQL).
    user_id: Option<String>,
    jti: String,
    access_exp: i64,
    next: NextRefresh,
    now: i64,
}

/// Spends the refresh token and stores its successor (RFC 6749 §6, rotated on every use).
async fn refresh_writes(
    conn: &mut sqlx::AnyConnection,
    rows: &mut Vec<audit::OwnedEvent>,
    w: RefreshWrite,
) -> Result<Refreshed, sqlx::Error> {
    let now = w.now;
    let Some(user_id) = &w.user_id else {
        return rotate_in_one(conn, rows, &w).await;
    };
    let row = match grants::use_refresh(conn, &w.token_hash, &w.client_id, now).await? {
        RefreshUse::Fresh(row) => row,
        RefreshUse::Reused { family_id, .. } => {
            return revoke_reused(conn, rows, &family_id, &w.client_id, now).await;
        }
        RefreshUse::Dead => return Ok(Refreshed::Dead),
    };
    if row.user_id.as_deref() != Some(user_id.as_str()) {
        // As for codes: read before, never changes; no tokens from a mismatch.
        return Ok(Refreshed::Dead);
    }
    let family = Family {
        id: &row.family_id,
        expires_at: row.family_expires_at,
        client_id: &w.client_id,
        user_id,
        scopes: &row.scopes,
        auth_time: row.auth_time,
        amr: &row.amr,
        sid: &row.sid,
        idp: &row.idp,
    };
    family
        .store(conn, &w.next, &w.jti, w.access_exp, now)
        .await?;
    rows.push(audit_row(
        "token_refreshed",
        "success",
        &w.client_id,
        Some(user_id),
        "",
        now,
    ));
    Ok(Refreshed::Rotated(Box::new(row), None))
}

/// [`refresh_writes`] on PostgreSQL: the token spent, its successor stored and the account
/// read in one statement ([`grants::rotate_refresh`]), where each statement is a network
/// round trip and work for a backend on the same cores.
async fn rotate_in_one(
    conn: &mut sqlx::AnyConnection,
    rows: &mut Vec<audit::OwnedEvent>,
    w: &RefreshWrite,
) -> Result<Refreshed, sqlx::Error> {
    let rotation = grants::Rotation {
        token_hash: &w.token_hash,
        client_id: &w.client_id,
        now: w.now,
        next_hash: &token_hash(&w.next.token),
        next_expires_at: w.now.saturating_add(w.next.ttl),
        access_jti: &w.jti,
        access_exp: w.access_exp,
    };
    if let Some((row, user)) = grants::rotate_refresh(conn, &rotation).await? {
        rows.push(audit_row(
            "token_refreshed",
            "success",
            &w.client_id,
            Some(&user.id),
            "",
            w.now,
        ));
        return Ok(Refreshed::Rotated(Box::new(row), Some(Box::new(user))));
    }
    match grants::refresh_state(conn, &w.token_hash).await? {
        RefreshUse::Reused { family_id, .. } => {
            revoke_reused(conn, rows, &family_id, &w.client_id, w.now).await
        }
        RefreshUse::Fresh(_) | RefreshUse::Dead => Ok(Refreshed::Dead),
    }
}

/// RFC 9700 §4.14.2: a rotated refresh token used again means it leaked; the whole family
/// ends.
async fn revoke_reused(
    conn: &mut sqlx::AnyConnection,
    rows: &mut Vec<audit::OwnedEvent>,
    family_id: &str,
    client_id: &str,
    now: i64,
) -> Result<Refreshed, sqlx::Error> {
    let revoked = grants::revoke_family(conn, family_id, now).await?;
    let detail = format!("family revoked: {revoked} token(s)");
    rows.push(audit_row(
        "refresh_token_reused",
        "refused",
        client_id,
        None,
        &detail,
        now,
    ));
    Ok(Refreshed::Reused)
}

async fn refresh(
    state: &AppState,
    client: &Client,
    token: &str,
    scope: Option<&str>,
) -> Result<TokenResponse, OAuthError> {
    let now = store::now_unix();
    let hash = token_hash(token);
    let dead = || grant_error("the refresh token is invalid, expired or revoked");
    let user = account_first(state, "refresh_tokens", "token_hash", &hash, dead).await?;
    // RFC 6749 §6: the scope may narrow, never widen. Checked before the token is spent, so a
    // client asking for too much can retry with the same token. (A family's scope never
    // changes, so reading it here is as good as reading it in the transaction.)
    let narrowed = match scope {
        None => None,
        Some(requested) => {
            let granted = grants::refresh_info(&mut *state.store.read().await?, &hash)
                .await?
                .map(|info| info.scopes)
                .ok_or_else(dead)?;
            let granted: Vec<&str> = granted.split(' ').collect();
            let requested: Vec<&str> = requested.split(' ').filter(|s| !s.is_empty()).collect();
            if let Some(extra) = requested.iter().find(|s| !granted.contains(s)) {
                return Err(OAuthError::new(
                    Code::InvalidScope,
                    format!("scope {extra:?} was not granted"),
                ));
            }
            Some(requested.join(" "))
        }
    };
    let write = RefreshWrite {
        token_hash: hash,
        client_id: client.id.clone(),
        user_id: user.as_ref().map(|u| u.id.clone()),
        jti: tokens::new_jti(),
        access_exp: tokens::access_exp(&state.config, now),
        next: NextRefresh::new(state),
        now,
    };
    let (jti, next) = (write.jti.clone(), write.next.token.clone());
    let outcome = state
        .store
        .write_grant(move |conn, rows| Box::pin(refresh_writes(conn, rows, write.clone())))
        .await?;
    let (row, user) = match outcome {
        Refreshed::Rotated(row, read) => (row, account(read, user).ok_or_else(dead)?),
        Refreshed::Reused => {
            state.store.settle().await;
            return Err(grant_error(
                "the refresh token was already used; its whole family is now revoked",
            ));
        }
        Refreshed::Dead => return Err(dead()),
    };
    let scope = narrowed.unwrap_or_else(|| row.scopes.clone());
    let grant = Grant {
        client,
        user: &user,
        auth_time: row.auth_time,
        amr: &row.amr,
        sid: &row.sid,
        idp: &row.idp,
    };
    Ok(grant.respond(state, jti, scope, None, Some(next), now)?)
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
    // The audit row is this grant's only write: it joins other requests' in one batch, and
    // the answer waits for it to be written but not flushed. The token is a self-contained
    // JWT that nothing stored vouches for, so no later request depends on the row; a power
    // cut within a flush of the answer would lose the record of it (`append_audit_unflushed`).
    state
        .store
        .append_audit_unflushed(audit_row(
            "token_issued",
            "success",
            &client.id,
            None,
            "client_credentials",
            now,
        ))
        .await?;
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
