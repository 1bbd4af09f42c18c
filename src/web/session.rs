//! Browser sessions: tower-sessions, stored in our own `sessions` table, behind a typed
//! wrapper.
//!
//! Why not `tower-sessions-sqlx-store`: it needs a typed `SqlitePool`/`PgPool` (Tessera runs
//! on `AnyPool`), stores the raw session id (a database reader could hijack sessions), and
//! keeps the user opaque inside the record, so "list my sessions" and "sign out everywhere"
//! would need a scan. Here the key is the SHA-256 of the cookie value and the user id, user
//! agent and IP are copied into indexed columns on every save.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use axum::extract::{ConnectInfo, FromRef, FromRequestParts};
use axum::http::request::Parts;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use tower_sessions::cookie::SameSite;
use tower_sessions::session::{Id, Record};
use tower_sessions::session_store::{self, SessionStore};
use tower_sessions::{Expiry, Session, SessionManagerLayer};

use crate::config::Config;
use crate::crypto::secrets::{constant_time_eq, is_token_shaped, random_token, token_hash};
use crate::state::AppState;
use crate::store::audit::OwnedEvent;
use crate::store::{self, Store};
use crate::web::pages::PageError;

const USER_ID: &str = "user_id";
const AUTH_TIME: &str = "auth_time";
const AMR: &str = "amr";
const IDP: &str = "idp";
const CSRF: &str = "csrf";
const USER_AGENT: &str = "ua";
const IP: &str = "ip";
const FLASH: &str = "flash";
/// When the session's expiry was last pushed back (unix seconds).
const SEEN: &str = "seen";
/// An audit event for the store to write in the session's own commit, and not to keep in the
/// session ([`WebSession::audit_on_save`]).
const PENDING_AUDIT: &str = "pending_audit";

/// The tower-sessions store over the `sessions` table.
#[derive(Debug, Clone)]
pub struct DbSessionStore {
    store: Store,
    /// `sessions.visitor_timeout` in seconds: the longest a session without a signed-in person
    /// is kept after its last write.
    visitor_ttl: i64,
}

impl DbSessionStore {
    pub fn new(store: Store, visitor_timeout: Duration) -> Self {
        Self {
            store,
            visitor_ttl: i64::try_from(visitor_timeout.as_secs()).unwrap_or(i64::MAX),
        }
    }
}

fn backend(e: impl std::fmt::Display) -> session_store::Error {
    session_store::Error::Backend(e.to_string())
}

/// The stored key of a session: a hash of the cookie value.
pub fn stored_id(id: &Id) -> String {
    token_hash(&id.to_string())
}

impl DbSessionStore {
    /// Writes `record`: a plain insert that fails on a taken id when `new`, an upsert otherwise.
    async fn write(&self, record: &Record, new: bool) -> session_store::Result<bool> {
        let text = |key: &str| {
            record
                .data
                .get(key)
                .and_then(|v| v.as_str())
                .unwrap_or_default()
        };
        // The event rides in the record only as far as here: stored, it goes to its own table.
        let audit: Option<OwnedEvent> = match record.data.get(PENDING_AUDIT) {
            Some(event) => Some(
                OwnedEvent::deserialize(event)
                    .map_err(|e| session_store::Error::Decode(e.to_string()))?,
            ),
            None => None,
        };
        let data = match audit {
            Some(_) => {
                let mut data = record.data.clone();
                data.remove(PENDING_AUDIT);
                serde_json::to_string(&data)
            }
            None => serde_json::to_string(&record.data),
        }
        .map_err(|e| session_store::Error::Encode(e.to_string()))?;
        let id = stored_id(&record.id);
        let user_id = record.data.get(USER_ID).and_then(|v| v.as_str());
        let now = store::now_unix();
        // Nobody signed in: kept `sessions.visitor_timeout`, not `idle_timeout`. Anyone can
        // make such a session (an authorization request that waits for a sign-in), so rows
        // of abandoned ones must not pile up for half a day.
        let expires_at = match user_id {
            Some(_) => record.expiry_date.unix_timestamp(),
            None => record
                .expiry_date
                .unix_timestamp()
                .min(now.saturating_add(self.visitor_ttl)),
        };
        let row = store::sessions::SaveSession {
            id: &id,
            user_id,
            data: &data,
            expires_at,
            user_agent: text(USER_AGENT),
            ip: text(IP),
            now,
        };
        store::sessions::save(&self.store, &row, new, audit.as_ref())
            .await
            .map_err(backend)
    }
}

#[async_trait]
impl SessionStore for DbSessionStore {
    /// A new session: draw ids until one is free (a collision of 128-bit random ids is
    /// astronomically unlikely, but the insert must not overwrite someone else's session).
    async fn create(&self, record: &mut Record) -> session_store::Result<()> {
        while !self.write(record, true).await? {
            record.id = Id::default();
        }
        Ok(())
    }

    async fn save(&self, record: &Record) -> session_store::Result<()> {
        self.write(record, false).await.map(drop)
    }

    async fn load(&self, id: &Id) -> session_store::Result<Option<Record>> {
        let found = store::sessions::load(&self.store, &stored_id(id), store::now_unix())
            .await
            .map_err(backend)?;
        let Some((data, expires_at)) = found else {
            return Ok(None);
        };
        Ok(Some(Record {
            id: *id,
            data: serde_json::from_str(&data)
                .map_err(|e| session_store::Error::Decode(e.to_string()))?,
            expiry_date: OffsetDateTime::from_unix_timestamp(expires_at).map_err(backend)?,
        }))
    }

    async fn delete(&self, id: &Id) -> session_store::Result<()> {
        let mut conn = self.store.autocommit().await.map_err(backend)?;
        store::sessions::delete(&mut conn, &stored_id(id))
            .await
            .map_err(backend)?;
        conn.durable().await.map_err(backend)
    }
}

/// The session middleware: cookie HttpOnly, SameSite=Lax, Secure for an https issuer, scoped
/// to the issuer's path, expiring after `sessions.idle_timeout` of inactivity.
pub fn layer(config: &Config, store: Store) -> SessionManagerLayer<DbSessionStore> {
    let idle = time::Duration::seconds(
        i64::try_from(config.sessions.idle_timeout.as_secs()).unwrap_or(i64::MAX),
    );
    SessionManagerLayer::new(DbSessionStore::new(store, config.sessions.visitor_timeout))
        .with_name(config.sessions.cookie_name.clone())
        .with_http_only(true)
        .with_same_site(SameSite::Lax)
        .with_secure(config.is_https())
        .with_path(cookie_path(config))
        .with_expiry(Expiry::OnInactivity(idle))
}

/// The path both cookies are scoped to: the issuer's.
fn cookie_path(config: &Config) -> String {
    match config.base_path() {
        p if p.is_empty() => "/".to_owned(),
        p => p,
    }
}

/// The name of the cookie that carries a visitor's CSRF token before there is a session: the
/// session cookie's name with `_csrf` appended.
pub fn csrf_cookie_name(config: &Config) -> String {
    format!("{}_csrf", config.sessions.cookie_name)
}

/// Who is signed in, and how.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SignedIn {
    pub user_id: String,
    /// When the person authenticated (unix seconds): `auth_time` in ID tokens.
    pub auth_time: i64,
    /// How: `pwd` (a password), `fed` (an upstream provider).
    pub amr: Vec<String>,
    /// The upstream provider, after a social sign-in (the `idp` claim).
    pub idp: Option<String>,
}

/// Where a request comes from: the client IP (through `http.trusted_proxies`) and user agent.
#[derive(Debug, Clone, Default)]
pub struct ClientInfo {
    pub ip: String,
    pub user_agent: String,
}

impl<S> FromRequestParts<S> for ClientInfo
where
    AppState: FromRef<S>,
    S: Send + Sync,
{
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let state = AppState::from_ref(state);
        let peer = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map(|c| c.0.ip());
        let forwarded = parts
            .headers
            .get_all("x-forwarded-for")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .map(str::trim)
            .collect::<Vec<_>>();
        let ip = client_ip(peer, &forwarded, state.config.http.trusted_proxies);
        let user_agent = parts
            .headers
            .get(axum::http::header::USER_AGENT)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .chars()
            .take(256)
            .collect();
        Ok(Self {
            ip: ip
                .map(|i| i.to_string())
                .unwrap_or_else(|| "unknown".into()),
            user_agent,
        })
    }
}

/// The client address: the socket peer, or with `hops` trusted proxies in front, the address
/// the outermost trusted proxy saw — the `hops`-th entry from the right of X-Forwarded-For.
pub fn client_ip(peer: Option<IpAddr>, forwarded: &[&str], hops: usize) -> Option<IpAddr> {
    if hops == 0 {
        return peer;
    }
    forwarded
        .len()
        .checked_sub(hops)
        .and_then(|i| forwarded.get(i))
        .and_then(|s| s.parse().ok())
        .or(peer)
}

/// The typed view of the browser session that page handlers use.
///
/// CSRF tokens come from one of two places. A signed-in session keeps its token in the
/// session (a sign-in draws a fresh one). Anyone not signed in gets a *double-submit* token
/// instead, whether or not a session holds something for them (a pending authorization
/// request, a message for the next page): a random value in a cookie of its own (HttpOnly,
/// SameSite=Lax, Secure for an https issuer), which the form must repeat. (A session stored
/// with a token before this scheme keeps using it.) So showing a sign-in, registration or
/// password-reset form writes nothing to the database: before, every anonymous `GET /login`
/// stored a session row for its token, kept for `sessions.idle_timeout` (12 hours), and one
/// client could add thousands a second. A cross-site page can neither read that cookie nor set
/// it, and a browser does not send it with a cross-site `POST`, so a forged form fails as it
/// did against the session's token.
pub struct WebSession {
    session: Session,
    config: Arc<Config>,
    /// The request's cookies (from the session layer's cookie manager; a response cookie added
    /// here is sent with the response).
    cookies: Option<tower_cookies::Cookies>,
}

impl<S> FromRequestParts<S> for WebSession
where
    AppState: FromRef<S>,
    S: Send + Sync,
{
    type Rejection = PageError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let state = AppState::from_ref(state);
        let session = Session::from_request_parts(parts, &())
            .await
            .map_err(|_| PageError::internal("session layer missing"))?;
        Ok(Self {
            session,
            config: state.config.clone(),
            cookies: parts.extensions.get::<tower_cookies::Cookies>().cloned(),
        })
    }
}

fn session_error(e: tower_sessions::session::Error) -> PageError {
    let text = e.to_string();
    tracing::warn!(error = %text, "session store error");
    PageError::Unavailable
}

impl WebSession {
    /// The signed-in person, if any. A sign-in older than `sessions.absolute_timeout` is
    /// ended here, however active the session has been.
    pub async fn signed_in(&self) -> Result<Option<SignedIn>, PageError> {
        let user_id: Option<String> = self.get(USER_ID).await?;
        let Some(user_id) = user_id else {
            return Ok(None);
        };
        let auth_time: i64 = self.get(AUTH_TIME).await?.unwrap_or(0);
        let absolute =
            i64::try_from(self.config.sessions.absolute_timeout.as_secs()).unwrap_or(i64::MAX);
        if store::now_unix().saturating_sub(auth_time) > absolute {
            self.session.flush().await.map_err(session_error)?;
            return Ok(None);
        }
        self.keep_alive().await?;
        let amr: Vec<String> = self.get(AMR).await?.unwrap_or_default();
        let idp: Option<String> = self.get(IDP).await?;
        Ok(Some(SignedIn {
            user_id,
            auth_time,
            amr,
            idp,
        }))
    }

    /// `sessions.idle_timeout` counts from the person's last visit, not from the session's
    /// last change: tower-sessions stores a session (and re-sends its cookie, whose max-age
    /// carries the same timeout) only when it changed, so a signed-in person who only reads
    /// pages would be signed out that long after signing in. Recording the visit pushes both
    /// expiries back; it is recorded at most once per twelfth of the timeout (an hour at the
    /// default 12 h), so a busy browser does not write a row per page.
    async fn keep_alive(&self) -> Result<(), PageError> {
        let now = store::now_unix();
        let every = i64::try_from(self.config.sessions.idle_timeout.as_secs() / 12)
            .unwrap_or(i64::MAX)
            .max(1);
        let seen: i64 = self.get(SEEN).await?.unwrap_or(0);
        if now.saturating_sub(seen) >= every {
            self.session
                .insert(SEEN, now)
                .await
                .map_err(session_error)?;
        }
        Ok(())
    }

    /// Signs `user_id` in: a new session id (so a fixated id is worthless), the time and method
    /// of authentication, the client, and a fresh CSRF token.
    pub async fn sign_in(
        &self,
        user_id: &str,
        method: &str,
        client: &ClientInfo,
    ) -> Result<(), PageError> {
        self.sign_in_with(user_id, &[method], None, client).await
    }

    /// As [`WebSession::sign_in`], with every method used and the upstream provider, if any.
    pub async fn sign_in_with(
        &self,
        user_id: &str,
        amr: &[&str],
        idp: Option<&str>,
        client: &ClientInfo,
    ) -> Result<(), PageError> {
        // A stored session gets a new id, so an id fixed beforehand is worthless. The read
        // loads the record first: after it, `id()` is none unless the store holds the session
        // (an unknown cookie's id is dropped then), and a session that was never stored, a
        // visitor's, is created under a fresh random id anyway; cycling it would only add a
        // write that deletes nothing.
        self.get::<String>(USER_ID).await?;
        if self.session.id().is_some() {
            self.session.cycle_id().await.map_err(session_error)?;
        }
        self.session
            .insert(USER_ID, user_id)
            .await
            .map_err(session_error)?;
        self.session
            .insert(AUTH_TIME, store::now_unix())
            .await
            .map_err(session_error)?;
        self.session
            .insert(SEEN, store::now_unix())
            .await
            .map_err(session_error)?;
        self.session.insert(AMR, amr).await.map_err(session_error)?;
        match idp {
            Some(idp) => self.session.insert(IDP, idp).await.map_err(session_error)?,
            None => drop(
                self.session
                    .remove_value(IDP)
                    .await
                    .map_err(session_error)?,
            ),
        }
        self.session
            .insert(USER_AGENT, &client.user_agent)
            .await
            .map_err(session_error)?;
        self.session
            .insert(IP, &client.ip)
            .await
            .map_err(session_error)?;
        self.session
            .insert(CSRF, random_token())
            .await
            .map_err(session_error)?;
        Ok(())
    }

    /// Records `event` in the same commit as this response's write of the session, instead of
    /// a write of its own: for the row that describes what the session write does (a
    /// sign-in's `signed_in`). The two then reach the disk in one flush, not two in turn, and
    /// neither is kept without the other. If the session fails to save, the response is an
    /// error and neither is written.
    pub async fn audit_on_save(&self, event: OwnedEvent) -> Result<(), PageError> {
        self.session
            .insert(PENDING_AUDIT, event)
            .await
            .map_err(session_error)
    }

    /// Ends the session: the record is deleted and the cookie cleared.
    pub async fn sign_out(&self) -> Result<(), PageError> {
        self.session.flush().await.map_err(session_error)
    }

    /// The stored id of this session (to mark it in the list, or keep it when ending others).
    pub fn stored_id(&self) -> Option<String> {
        self.session.id().map(|id| stored_id(&id))
    }

    /// The CSRF token for a form: the session's, created on first use for a signed-in
    /// session; for anyone not signed in, the double-submit cookie's (see [`WebSession`]).
    pub async fn csrf_token(&self) -> Result<String, PageError> {
        if let Some(token) = self.get::<String>(CSRF).await? {
            return Ok(token);
        }
        if !self.has_user().await? {
            return self.cookie_csrf_token();
        }
        let token = random_token();
        self.session
            .insert(CSRF, &token)
            .await
            .map_err(session_error)?;
        Ok(token)
    }

    /// Refuses a form whose `csrf_token` is not the one [`WebSession::csrf_token`] gave this
    /// browser (403): the session's when it holds one, else, for a visitor who is not signed
    /// in, the double-submit cookie's. A signed-in session never accepts the cookie's.
    pub async fn verify_csrf(&self, submitted: &str) -> Result<(), PageError> {
        let expected = match self.get::<String>(CSRF).await? {
            Some(token) => Some(token),
            None if !self.has_user().await? => self.cookie_value(),
            None => None,
        };
        match expected {
            Some(expected) if !submitted.is_empty() && constant_time_eq(&expected, submitted) => {
                Ok(())
            }
            _ => Err(PageError::Csrf),
        }
    }

    async fn has_user(&self) -> Result<bool, PageError> {
        Ok(self.get::<String>(USER_ID).await?.is_some())
    }

    /// The double-submit cookie's value, if the request carried one of the right shape (or
    /// this response already set one).
    fn cookie_value(&self) -> Option<String> {
        let value = self
            .cookies
            .as_ref()?
            .get(&csrf_cookie_name(&self.config))?
            .value()
            .to_owned();
        is_token_shaped(&value).then_some(value)
    }

    /// The token of a visitor without a session: the cookie's, or a new one set with this
    /// response (a browser-session cookie, gone when the browser closes).
    fn cookie_csrf_token(&self) -> Result<String, PageError> {
        if let Some(token) = self.cookie_value() {
            return Ok(token);
        }
        let cookies = self
            .cookies
            .as_ref()
            .ok_or_else(|| PageError::internal("cookie layer missing"))?;
        let token = random_token();
        cookies.add(
            tower_sessions::cookie::Cookie::build((csrf_cookie_name(&self.config), token.clone()))
                .path(cookie_path(&self.config))
                .http_only(true)
                .same_site(SameSite::Lax)
                .secure(self.config.is_https())
                .build(),
        );
        Ok(token)
    }

    /// Keeps a value in the session (e.g. a pending authorization request).
    pub async fn put<T: Serialize>(&self, key: &str, value: &T) -> Result<(), PageError> {
        self.session.insert(key, value).await.map_err(session_error)
    }

    pub async fn get<T: serde::de::DeserializeOwned>(
        &self,
        key: &str,
    ) -> Result<Option<T>, PageError> {
        self.session.get(key).await.map_err(session_error)
    }

    /// Removes and returns `key`'s value. A key that is not there changes nothing:
    /// tower-sessions marks a session changed on any removal, present or not, and a changed
    /// session is written back (a write, and a wait for its flush, on every `/authorize` and
    /// every page that shows a flash message).
    pub async fn take<T: serde::de::DeserializeOwned>(
        &self,
        key: &str,
    ) -> Result<Option<T>, PageError> {
        let present: Option<serde_json::Value> = self.get(key).await?;
        if present.is_none() {
            return Ok(None);
        }
        self.session.remove(key).await.map_err(session_error)
    }

    /// A one-time message for the next page.
    pub async fn flash(&self, message: impl Into<String>) -> Result<(), PageError> {
        self.session
            .insert(FLASH, message.into())
            .await
            .map_err(session_error)
    }

    pub async fn take_flash(&self) -> Result<Option<String>, PageError> {
        self.take(FLASH).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_ip_trusts_only_the_configured_number_of_proxies() {
        let peer: Option<IpAddr> = "10.0.0.1".parse().ok();
        let xff = ["6.6.6.6", "203.0.113.7"];
        assert_eq!(client_ip(peer, &xff, 0), peer, "no proxies: the socket");
        assert_eq!(
            client_ip(peer, &xff, 1),
            "203.0.113.7".parse().ok(),
            "what our proxy saw"
        );
        assert_eq!(client_ip(peer, &xff, 2), "6.6.6.6".parse().ok());
        assert_eq!(client_ip(peer, &xff, 3), peer, "fewer entries than proxies");
        assert_eq!(client_ip(peer, &["garbage"], 1), peer);
    }
}
