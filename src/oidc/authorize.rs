//! The authorization endpoint (RFC 6749 §4.1.1, OIDC Core §3.1.2) and the consent page.
//!
//! `GET|POST /authorize` validates the request. An unknown `client_id` or a `redirect_uri`
//! that is not registered byte for byte gets an error page, never a redirect (RFC 6749
//! §4.1.2.1, RFC 9700 §4.1); every other error is sent back to the client with `error`,
//! `error_description`, `state` and `iss` (RFC 9207). A valid request is kept in the browser
//! session under a random id while the person signs in (`/login?return_to=…/continue`) and
//! approves the client (the consent page), then a single-use code goes back to the client.

use askama::Template;
use axum::Router;
use axum::body::Bytes;
use axum::extract::{RawQuery, State};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use serde::{Deserialize, Serialize};

use super::error::Code;
use super::params::{ParamError, Params};
use super::paths;
use crate::accounts::service::event;
use crate::crypto::secrets::{random_token, token_hash};
use crate::state::AppState;
use crate::store::clients::Client;
use crate::store::{self, audit, grants};
use crate::web::pages::{PageError, PageForm, PageQuery, base_path, render};
use crate::web::session::{ClientInfo, SignedIn, WebSession};

pub fn router() -> Router<AppState> {
    Router::new()
        .route(paths::AUTHORIZE, get(authorize_get).post(authorize_post))
        .route(paths::AUTHORIZE_CONTINUE, get(continue_get))
        .route(paths::AUTHORIZE_CONSENT, post(consent_post))
}

/// A validated authorization request, waiting in the session for sign-in and consent.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Pending {
    id: String,
    client_id: String,
    redirect_uri: String,
    scopes: Vec<String>,
    state: Option<String>,
    nonce: Option<String>,
    code_challenge: Option<String>,
    /// `prompt=consent`: ask even if approved before.
    prompt_consent: bool,
    /// `prompt=none`: never show a page.
    prompt_none: bool,
    /// `prompt=login|select_account`: a sign-in newer than the request is needed.
    force_login: bool,
    max_age: Option<i64>,
    login_hint: Option<String>,
    created_at: i64,
}

fn session_key(id: &str) -> String {
    format!("authz:{id}")
}

/// An error sent back to the client's redirect URI.
struct RedirectError {
    redirect_uri: String,
    state: Option<String>,
    code: Code,
    description: String,
}

fn redirect_with(state_base: &AppState, uri: &str, params: &[(&str, &str)]) -> Response {
    let Ok(mut url) = url::Url::parse(uri) else {
        return PageError::BadRequest("The app's redirect address is not valid.".into())
            .into_response();
    };
    {
        let mut query = url.query_pairs_mut();
        for (k, v) in params {
            query.append_pair(k, v);
        }
        // RFC 9207: say who answers, so a client talking to several servers cannot be misled.
        query.append_pair("iss", &state_base.config.issuer);
    }
    Redirect::to(url.as_str()).into_response()
}

impl RedirectError {
    fn send(self, state: &AppState) -> Response {
        let mut params = vec![
            ("error", self.code.as_str()),
            ("error_description", self.description.as_str()),
        ];
        if let Some(s) = &self.state {
            params.push(("state", s));
        }
        redirect_with(state, &self.redirect_uri, &params)
    }
}

/// Failures before the redirect URI is trusted: shown as a page.
fn bad_link(what: &str) -> PageError {
    PageError::BadRequest(format!(
        "This sign-in request can't be completed: {what}. Go back to the app and try again, or tell its developers."
    ))
}

async fn authorize_get(
    State(state): State<AppState>,
    session: WebSession,
    RawQuery(query): RawQuery,
) -> Result<Response, PageError> {
    let params = Params::parse(query.unwrap_or_default().as_bytes());
    authorize(&state, &session, params).await
}

/// OIDC Core §3.1.2.1: the authorization endpoint supports POST with a form body too.
async fn authorize_post(
    State(state): State<AppState>,
    session: WebSession,
    body: Bytes,
) -> Result<Response, PageError> {
    authorize(&state, &session, Params::parse(&body)).await
}

async fn authorize(
    state: &AppState,
    session: &WebSession,
    params: Params,
) -> Result<Response, PageError> {
    // 1. The client and its redirect URI; until both are known good, errors are pages.
    let client_id = params
        .get("client_id")
        .map_err(|e| bad_link(&e.to_string()))?
        .ok_or_else(|| bad_link("the app did not say who it is (client_id)"))?;
    let client = store::clients::find(&state.store, client_id).await?;
    let client = client.ok_or_else(|| bad_link("the app is not registered here"))?;
    let redirect_uri = params
        .get("redirect_uri")
        .map_err(|e| bad_link(&e.to_string()))?
        .ok_or_else(|| bad_link("the app did not say where to return (redirect_uri)"))?;
    // RFC 9700 §4.1.3: exact string comparison, no normalisation.
    if !client.redirect_uris.iter().any(|u| u == redirect_uri) {
        return Err(bad_link(
            "the return address is not registered for this app",
        ));
    }
    let redirect_uri = redirect_uri.to_owned();
    let state_param = match params.get("state") {
        Ok(s) => s.map(str::to_owned),
        Err(e) => {
            return Ok(RedirectError {
                redirect_uri,
                state: None,
                code: Code::InvalidRequest,
                description: e.to_string(),
            }
            .send(state));
        }
    };
    match validate(&client, &params) {
        Ok(mut pending) => {
            pending.redirect_uri = redirect_uri;
            pending.state = state_param;
            proceed(state, session, &client, pending).await
        }
        Err((code, description)) => Ok(RedirectError {
            redirect_uri,
            state: state_param,
            code,
            description,
        }
        .send(state)),
    }
}

/// Checks everything but the client and redirect URI; errors go back to the client.
pub(crate) fn validate(client: &Client, params: &Params) -> Result<Pending, (Code, String)> {
    let invalid = |e: ParamError| (Code::InvalidRequest, e.to_string());
    // OIDC Core §6: request objects are not supported.
    if params.contains("request") || params.contains("request_uri") {
        return Err((
            Code::InvalidRequest,
            "request objects are not supported".into(),
        ));
    }
    match params.get("response_type").map_err(invalid)? {
        None => return Err((Code::InvalidRequest, "response_type is required".into())),
        Some("code") => {}
        Some(_) => {
            return Err((
                Code::UnsupportedResponseType,
                "only response_type=code is supported".into(),
            ));
        }
    }
    if let Some(mode) = params.get("response_mode").map_err(invalid)?
        && mode != "query"
    {
        return Err((
            Code::InvalidRequest,
            "only response_mode=query is supported".into(),
        ));
    }
    if !client.allows_grant("authorization_code") {
        return Err((
            Code::UnauthorizedClient,
            "this client may not use the authorization code flow".into(),
        ));
    }
    let scope = params
        .get("scope")
        .map_err(invalid)?
        .ok_or((Code::InvalidScope, "scope is required".to_owned()))?;
    let mut scopes: Vec<String> = Vec::new();
    for s in scope.split(' ').filter(|s| !s.is_empty()) {
        if !client.scopes.iter().any(|c| c == s) {
            return Err((
                Code::InvalidScope,
                format!("scope {s:?} is not allowed for this client"),
            ));
        }
        if !scopes.iter().any(|x| x == s) {
            scopes.push(s.to_owned());
        }
    }
    if scopes.is_empty() {
        return Err((Code::InvalidScope, "scope is required".into()));
    }
    if scopes.iter().any(|s| s == "offline_access") && !client.allows_grant("refresh_token") {
        return Err((
            Code::InvalidScope,
            "offline_access needs the refresh_token grant".into(),
        ));
    }
    // RFC 7636 §4.3 and RFC 9700 §2.1.1: S256 only; required for public clients.
    let challenge = params.get("code_challenge").map_err(invalid)?;
    let method = params.get("code_challenge_method").map_err(invalid)?;
    match (challenge, method) {
        (None, None) if client.public => {
            return Err((
                Code::InvalidRequest,
                "PKCE (code_challenge with S256) is required for this client".into(),
            ));
        }
        (None, None) => {}
        (Some(c), Some("S256")) => {
            if !(43..=128).contains(&c.len())
                || !c
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-._~".contains(&b))
            {
                return Err((Code::InvalidRequest, "code_challenge is malformed".into()));
            }
        }
        (Some(_), Some(_)) | (Some(_), None) => {
            return Err((
                Code::InvalidRequest,
                "code_challenge_method must be S256 (plain is not supported)".into(),
            ));
        }
        (None, Some(_)) => {
            return Err((
                Code::InvalidRequest,
                "code_challenge_method without code_challenge".into(),
            ));
        }
    }
    let nonce = params.get("nonce").map_err(invalid)?;
    if nonce.is_some_and(|n| n.len() > 512) {
        return Err((Code::InvalidRequest, "nonce is too long".into()));
    }
    let prompt: Vec<&str> = params
        .get("prompt")
        .map_err(invalid)?
        .unwrap_or_default()
        .split(' ')
        .filter(|p| !p.is_empty())
        .collect();
    for p in &prompt {
        if !matches!(*p, "none" | "login" | "consent" | "select_account") {
            return Err((
                Code::InvalidRequest,
                format!("unsupported prompt value {p:?}"),
            ));
        }
    }
    // OIDC Core §3.1.2.1: none may not be combined with another value.
    if prompt.contains(&"none") && prompt.len() > 1 {
        return Err((
            Code::InvalidRequest,
            "prompt=none cannot be combined with other values".into(),
        ));
    }
    let max_age = match params.get("max_age").map_err(invalid)? {
        None => None,
        Some(v) => Some(v.parse::<u32>().map_err(|_| {
            (
                Code::InvalidRequest,
                "max_age must be a whole number of seconds".to_owned(),
            )
        })?),
    };
    // Accepted and ignored (the pages are in English): ui_locales, display, claims_locales.
    for name in ["ui_locales", "display", "claims_locales", "acr_values"] {
        params.get(name).map_err(invalid)?;
    }
    let login_hint = params
        .get("login_hint")
        .map_err(invalid)?
        .map(|h| h.chars().take(254).collect());
    Ok(Pending {
        id: random_token(),
        client_id: client.id.clone(),
        redirect_uri: String::new(),
        scopes,
        state: None,
        nonce: nonce.map(str::to_owned),
        code_challenge: challenge.map(str::to_owned),
        prompt_consent: prompt.contains(&"consent"),
        prompt_none: prompt.contains(&"none"),
        force_login: prompt.contains(&"login") || prompt.contains(&"select_account"),
        max_age: max_age.map(i64::from),
        login_hint,
        created_at: store::now_unix(),
    })
}

/// Whether `who`'s sign-in satisfies the request (fresh enough for `prompt=login`/`max_age`).
fn sign_in_ok(pending: &Pending, who: &SignedIn) -> bool {
    let now = store::now_unix();
    if pending.force_login && who.auth_time < pending.created_at {
        return false;
    }
    pending
        .max_age
        .is_none_or(|max| now.saturating_sub(who.auth_time) <= max)
}

async fn proceed(
    state: &AppState,
    session: &WebSession,
    client: &Client,
    pending: Pending,
) -> Result<Response, PageError> {
    let who = session.signed_in().await?;
    let fresh = who.as_ref().is_some_and(|w| sign_in_ok(&pending, w));
    if !fresh {
        if pending.prompt_none {
            // OIDC Core §3.1.2.6.
            return Ok(error_back(
                state,
                &pending,
                Code::LoginRequired,
                "the person is not signed in",
            ));
        }
        session.put(&session_key(&pending.id), &pending).await?;
        return Ok(to_login(&pending, who.is_some()));
    }
    let Some(who) = who else {
        return Err(PageError::internal("sign-in state"));
    };
    decide(state, session, client, pending, &who).await
}

/// To the sign-in page, coming back to this request afterwards. `reauth`: the person is
/// signed in, but `prompt=login` or `max_age` asks them to prove it again.
fn to_login(pending: &Pending, reauth: bool) -> Response {
    let resume = format!("{}?request={}", paths::AUTHORIZE_CONTINUE, pending.id);
    let mut login = url::form_urlencoded::Serializer::new(String::new());
    login.append_pair("return_to", &resume);
    if let Some(hint) = &pending.login_hint {
        login.append_pair("login_hint", hint);
    }
    if reauth {
        login.append_pair("reauth", "1");
    }
    Redirect::to(&format!("{}/login?{}", base_path(), login.finish())).into_response()
}

fn error_back(state: &AppState, pending: &Pending, code: Code, description: &str) -> Response {
    RedirectError {
        redirect_uri: pending.redirect_uri.clone(),
        state: pending.state.clone(),
        code,
        description: description.into(),
    }
    .send(state)
}

/// Signed in: grant at once when consent is on file (or not needed), else ask.
async fn decide(
    state: &AppState,
    session: &WebSession,
    client: &Client,
    pending: Pending,
    who: &SignedIn,
) -> Result<Response, PageError> {
    let approved = if client.skip_consent && !pending.prompt_consent {
        true
    } else {
        let granted = grants::find_consent(&state.store, &who.user_id, &client.id)
            .await?
            .unwrap_or_default();
        let granted: Vec<&str> = granted.split(' ').collect();
        !pending.prompt_consent && pending.scopes.iter().all(|s| granted.contains(&s.as_str()))
    };
    if approved {
        return issue_code(state, session, pending, who).await;
    }
    if pending.prompt_none {
        return Ok(error_back(
            state,
            &pending,
            Code::ConsentRequired,
            "the person has not approved this app",
        ));
    }
    session.put(&session_key(&pending.id), &pending).await?;
    let page = ConsentPage {
        base: base_path(),
        csrf: session.csrf_token().await?,
        request: pending.id.clone(),
        app: client.name.clone(),
        scopes: pending.scopes.iter().filter_map(|s| describe(s)).collect(),
        host: url::Url::parse(&pending.redirect_uri)
            .ok()
            .and_then(|u| u.host_str().map(str::to_owned))
            .unwrap_or_default(),
    };
    Ok(render(&page))
}

/// What a scope means, in plain words.
fn describe(scope: &str) -> Option<String> {
    Some(match scope {
        "openid" => "Know who you are (a stable identifier for your account)".into(),
        "profile" => "See your name and username".into(),
        "email" => "See your email address".into(),
        "offline_access" => {
            "Stay connected when you're not using it (until you revoke access)".into()
        }
        other => format!("Use the permission \u{201c}{other}\u{201d}"),
    })
}

#[derive(Template)]
#[template(path = "pages/consent.html")]
struct ConsentPage {
    base: String,
    csrf: String,
    request: String,
    app: String,
    scopes: Vec<String>,
    host: String,
}

/// Issues a single-use code bound to the client, redirect URI, PKCE challenge and sign-in,
/// and sends it back.
async fn issue_code(
    state: &AppState,
    session: &WebSession,
    pending: Pending,
    who: &SignedIn,
) -> Result<Response, PageError> {
    let code = random_token();
    let now = store::now_unix();
    let ttl = i64::try_from(state.config.tokens.code_ttl.as_secs()).unwrap_or(60);
    let write = grants::NewCode {
        code_hash: token_hash(&code),
        grant_id: uuid::Uuid::new_v4().simple().to_string(),
        client_id: pending.client_id.clone(),
        user_id: who.user_id.clone(),
        redirect_uri: pending.redirect_uri.clone(),
        code_challenge: pending.code_challenge.clone(),
        nonce: pending.nonce.clone(),
        scopes: pending.scopes.join(" "),
        auth_time: who.auth_time,
        amr: who.amr.join(" "),
        sid: session.stored_id().unwrap_or_default(),
        idp: who.idp.clone().unwrap_or_default(),
        now,
        expires_at: now + ttl,
    };
    // The code and its audit row join the grant batch (`store::batch`): concurrent
    // authorizations and token grants share one transaction and one flush of the log.
    state
        .store
        .write_grant(move |conn, rows| Box::pin(code_writes(conn, rows, write.clone())))
        .await?;
    let _ = session.take::<Pending>(&session_key(&pending.id)).await?;
    let mut params = vec![("code", code.as_str())];
    if let Some(s) = &pending.state {
        params.push(("state", s));
    }
    Ok(redirect_with(state, &pending.redirect_uri, &params))
}

/// Stores the code, and records the grant in the batch's audit rows.
async fn code_writes(
    conn: &mut sqlx::AnyConnection,
    rows: &mut Vec<audit::OwnedEvent>,
    code: grants::NewCode,
) -> Result<(), sqlx::Error> {
    grants::insert_code(conn, &code).await?;
    rows.push(audit::OwnedEvent {
        kind: "authorization_granted".into(),
        outcome: "success".into(),
        user_id: Some(code.user_id),
        client_id: Some(code.client_id),
        detail: code.scopes,
        at: code.now,
        ..Default::default()
    });
    Ok(())
}

#[derive(Deserialize)]
pub struct ContinueQuery {
    #[serde(default)]
    request: String,
}

async fn pending_request(
    state: &AppState,
    session: &WebSession,
    id: &str,
) -> Result<(Pending, Client), PageError> {
    let pending: Pending = session
        .get(&session_key(id))
        .await?
        .ok_or_else(|| PageError::BadRequest("This sign-in request has expired or was already completed. Go back to the app and start again.".into()))?;
    let client = store::clients::find(&state.store, &pending.client_id).await?;
    let client = client.ok_or_else(|| bad_link("the app is no longer registered"))?;
    Ok((pending, client))
}

/// After sign-in: the same checks as before, with the new sign-in.
async fn continue_get(
    State(state): State<AppState>,
    session: WebSession,
    PageQuery(query): PageQuery<ContinueQuery>,
) -> Result<Response, PageError> {
    let (pending, client) = pending_request(&state, &session, &query.request).await?;
    let who = session.signed_in().await?;
    let Some(who) = who.clone().filter(|w| sign_in_ok(&pending, w)) else {
        return Ok(to_login(&pending, who.is_some()));
    };
    decide(&state, &session, &client, pending, &who).await
}

#[derive(Deserialize)]
pub struct ConsentForm {
    #[serde(default)]
    csrf_token: String,
    #[serde(default)]
    request: String,
    #[serde(default)]
    decision: String,
}

async fn consent_post(
    State(state): State<AppState>,
    session: WebSession,
    client_info: ClientInfo,
    PageForm(form): PageForm<ConsentForm>,
) -> Result<Response, PageError> {
    session.verify_csrf(&form.csrf_token).await?;
    let (pending, client) = pending_request(&state, &session, &form.request).await?;
    let Some(who) = session
        .signed_in()
        .await?
        .filter(|w| sign_in_ok(&pending, w))
    else {
        return Err(PageError::BadRequest(
            "You were signed out. Go back to the app and start again.".into(),
        ));
    };
    let now = store::now_unix();
    if form.decision != "allow" {
        let _ = session.take::<Pending>(&session_key(&pending.id)).await?;
        let mut e = event(
            "consent_denied",
            "refused",
            Some(&who.user_id),
            &client_info,
        );
        e.client_id = Some(&client.id);
        let _ = state.accounts().audit(e).await;
        return Ok(error_back(
            &state,
            &pending,
            Code::AccessDenied,
            "the person declined",
        ));
    }
    // Remember the union of what was ever approved for this client.
    let mut conn = state.store.read().await?;
    let before = grants::consent(&mut conn, &who.user_id, &client.id)
        .await?
        .unwrap_or_default();
    drop(conn);
    let mut scopes: Vec<String> = before
        .split(' ')
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect();
    for s in &pending.scopes {
        if !scopes.contains(s) {
            scopes.push(s.clone());
        }
    }
    scopes.sort();
    let mut tx = state.store.begin_write().await?;
    grants::save_consent(&mut tx, &who.user_id, &client.id, &scopes.join(" "), now).await?;
    let mut e = event(
        "consent_granted",
        "success",
        Some(&who.user_id),
        &client_info,
    );
    e.client_id = Some(&client.id);
    let detail = pending.scopes.join(" ");
    e.detail = &detail;
    audit::insert(&mut tx, &e, now).await?;
    tx.commit().await?;
    issue_code(&state, &session, pending, &who).await
}
