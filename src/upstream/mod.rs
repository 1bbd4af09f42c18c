//! Social sign-in: Tessera as an OAuth client of Google, GitHub and any OpenID Connect
//! provider, linking upstream identities to local accounts by the rules in [`linking`].
//!
//! `/upstream/{id}/start` remembers a state, nonce and PKCE verifier in the browser session
//! and sends the browser upstream; `/upstream/{id}/callback` checks the state, exchanges the
//! code, validates what comes back ([`providers`]), then decides: sign in, link, create an
//! account, ask for proof (`/upstream/link`: sign in to the existing account, or an emailed
//! single-use link), or refuse with a page that explains why and offers a way back.

pub mod linking;
pub mod providers;

use askama::Template;
use axum::Router;
use axum::extract::{Path, State};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use serde::{Deserialize, Serialize};

use crate::accounts::service::{self, event};
use crate::accounts::{paths as pages, redirect, safe_return_to};
use crate::crypto::secrets::{random_token, token_hash};
use crate::mail::Email;
use crate::state::AppState;
use crate::store::users::UserRow;
use crate::store::{self, audit, identities, tokens, users};
use crate::throttle::Limit;
use crate::web::pages::{CsrfOnly, PageError, PageForm, PageQuery, base_path, render};
use crate::web::session::{ClientInfo, WebSession};
use linking::{Decision, EmailMatch, Refusal, Situation};
use providers::{Profile, Provider, Started};

pub const CONFIRM_LINK: &str = "confirm_link";

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/upstream/{provider}/start", get(start_get))
        .route("/upstream/{provider}/link", post(link_start_post))
        .route("/upstream/{provider}/callback", get(callback_get))
        .route("/upstream/link", get(link_get).post(link_post))
        .route("/upstream/link/email", post(link_email_post))
        .route("/upstream/confirm", get(confirm_get).post(confirm_post))
        .route("/account/identities/unlink", post(unlink_post))
}

/// A flow on its way upstream.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Pending {
    provider: String,
    started: Started,
    return_to: Option<String>,
    /// Set when a signed-in person links another sign-in method from the account page.
    link_to: Option<String>,
}

/// An upstream identity waiting for the person to prove the matching account is theirs.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct PendingLink {
    provider: String,
    subject: String,
    email: String,
    user_id: String,
    return_to: Option<String>,
}

const PENDING_LINK: &str = "upstream:link";

fn pending_key(state: &str) -> String {
    format!("upstream:{state}")
}

/// A friendly page for an upstream failure, with a way back.
fn upstream_page(message: impl Into<String>) -> PageError {
    PageError::BadRequest(format!(
        "{} You can try again, or sign in another way.",
        message.into()
    ))
}

#[derive(Deserialize)]
pub struct StartQuery {
    return_to: Option<String>,
}

/// Sign in (or sign up) with a provider. A plain link: the worst a hostile page can do with
/// it is sign a person in to their own account.
async fn start_get(
    State(state): State<AppState>,
    session: WebSession,
    Path(provider_id): Path<String>,
    PageQuery(query): PageQuery<StartQuery>,
) -> Result<Response, PageError> {
    let provider = state
        .upstream
        .get(&provider_id)
        .ok_or(PageError::NotFound)?;
    go_upstream(
        &state,
        &session,
        provider,
        safe_return_to(query.return_to.as_deref()),
        None,
    )
    .await
}

#[derive(Deserialize)]
pub struct LinkStartForm {
    #[serde(default)]
    csrf_token: String,
}

/// Link another sign-in method to the signed-in account. A form with a CSRF token, not a
/// link: otherwise another site could make a signed-in person's browser link whatever
/// upstream account that browser is signed in to (link CSRF).
async fn link_start_post(
    State(state): State<AppState>,
    session: WebSession,
    Path(provider_id): Path<String>,
    PageForm(form): PageForm<LinkStartForm>,
) -> Result<Response, PageError> {
    session.verify_csrf(&form.csrf_token).await?;
    let provider = state
        .upstream
        .get(&provider_id)
        .ok_or(PageError::NotFound)?;
    let who = session.signed_in().await?.ok_or_else(|| {
        PageError::Forbidden("Sign in first to link another sign-in method.".into())
    })?;
    go_upstream(&state, &session, provider, None, Some(who.user_id)).await
}

async fn go_upstream(
    state: &AppState,
    session: &WebSession,
    provider: &Provider,
    return_to: Option<String>,
    link_to: Option<String>,
) -> Result<Response, PageError> {
    let (url, started) = state
        .upstream
        .start(provider)
        .await
        .map_err(|e| upstream_page(format!("{e}.")))?;
    let pending = Pending {
        provider: provider.id.clone(),
        return_to,
        link_to,
        started,
    };
    session
        .put(&pending_key(&pending.started.state), &pending)
        .await?;
    Ok(Redirect::to(&url).into_response())
}

#[derive(Deserialize)]
pub struct CallbackQuery {
    code: Option<String>,
    state: Option<String>,
    error: Option<String>,
}

fn audit_upstream<'a>(
    kind: &'a str,
    outcome: &'a str,
    user: Option<&'a str>,
    client: &'a ClientInfo,
    detail: &'a str,
) -> audit::NewEvent<'a> {
    let mut e = event(kind, outcome, user, client);
    e.detail = detail;
    e
}

async fn callback_get(
    State(state): State<AppState>,
    session: WebSession,
    client: ClientInfo,
    Path(provider_id): Path<String>,
    PageQuery(query): PageQuery<CallbackQuery>,
) -> Result<Response, PageError> {
    let provider = state
        .upstream
        .get(&provider_id)
        .ok_or(PageError::NotFound)?;
    let accounts = state.accounts();
    let fail = |outcome: &str| format!("provider={} {outcome}", provider.id);
    // The state must be one this browser started (RFC 6749 §10.12, RFC 9700 §4.7).
    let pending: Option<Pending> = match &query.state {
        Some(s) if s.len() <= 256 => session.take(&pending_key(s)).await?,
        _ => None,
    };
    let Some(pending) = pending.filter(|p| p.provider == provider.id) else {
        let detail = fail("state mismatch");
        let _ = accounts
            .audit(audit_upstream(
                "upstream_sign_in",
                "invalid_state",
                None,
                &client,
                &detail,
            ))
            .await;
        return Err(upstream_page(
            "This sign-in could not be matched to one you started here (it may have expired, or come from another browser).",
        ));
    };
    if let Some(me) = &pending.link_to
        && session
            .signed_in()
            .await?
            .is_none_or(|who| who.user_id != *me)
    {
        return Err(upstream_page(
            "You were signed out while linking, so nothing was linked.",
        ));
    }
    if let Some(error) = &query.error {
        let detail = format!(
            "{} error={}",
            fail("refused"),
            error.chars().take(64).collect::<String>()
        );
        let _ = accounts
            .audit(audit_upstream(
                "upstream_sign_in",
                "denied",
                None,
                &client,
                &detail,
            ))
            .await;
        let message = if error == "access_denied" {
            format!("You cancelled signing in with {}.", provider.display_name)
        } else {
            format!("{} did not let you sign in.", provider.display_name)
        };
        return Err(upstream_page(message));
    }
    let code = query
        .code
        .as_deref()
        .filter(|c| !c.is_empty() && c.len() <= 2048)
        .ok_or_else(|| upstream_page("The sign-in answer was incomplete."))?;
    let profile = match state
        .upstream
        .finish(provider, code, &pending.started)
        .await
    {
        Ok(profile) => profile,
        Err(e) => {
            let detail = fail(&e.to_string());
            let _ = accounts
                .audit(audit_upstream(
                    "upstream_sign_in",
                    "failed",
                    None,
                    &client,
                    &detail,
                ))
                .await;
            return Err(upstream_page(format!("{e}.")));
        }
    };
    decide_and_act(&state, &session, &client, provider, profile, pending).await
}

async fn decide_and_act(
    state: &AppState,
    session: &WebSession,
    client: &ClientInfo,
    provider: &Provider,
    profile: Profile,
    pending: Pending,
) -> Result<Response, PageError> {
    let mut conn = state.store.read().await?;
    let linked = identities::find(&mut conn, &provider.id, &profile.subject).await?;
    let email_match = match &profile.email {
        Some(email) => users::by_email(&mut conn, email).await?,
        None => None,
    };
    drop(conn);
    let matched = email_match.as_ref().map(|u| EmailMatch {
        user_id: u.id.clone(),
        email_verified: u.email_verified(),
    });
    let decision = linking::decide(&Situation {
        linked_to: linked.as_ref().map(|l| l.user_id.as_str()),
        linking_as: pending.link_to.as_deref(),
        email_match: matched.as_ref(),
        upstream_email_verified: profile.email_verified,
        has_email: profile.email.is_some(),
        mode: provider.link_mode,
    });
    let detail = format!("provider={} subject={}", provider.id, profile.subject);
    let email = profile.email.clone().unwrap_or_default();
    match decision {
        Decision::SignIn(user_id) => {
            let mut tx = state.store.begin_write().await?;
            identities::touch(
                &mut tx,
                &provider.id,
                &profile.subject,
                &email,
                profile.email_verified,
                store::now_unix(),
            )
            .await?;
            audit::insert(
                &mut tx,
                &audit_upstream(
                    "upstream_sign_in",
                    "success",
                    Some(&user_id),
                    client,
                    &detail,
                ),
                store::now_unix(),
            )
            .await?;
            tx.commit().await?;
            if pending.link_to.is_some() {
                session
                    .flash(format!(
                        "Your {} sign-in was already linked to this account.",
                        provider.display_name
                    ))
                    .await?;
                return Ok(redirect(pages::ACCOUNT));
            }
            sign_in(session, &user_id, provider, client).await?;
            Ok(continue_to(pending.return_to))
        }
        Decision::Link(user_id) => {
            link_to_account(state, client, provider, &profile, &user_id).await?;
            if pending.link_to.is_some() {
                session
                    .flash(format!(
                        "You can now sign in with {}.",
                        provider.display_name
                    ))
                    .await?;
                return Ok(redirect(pages::ACCOUNT));
            }
            sign_in(session, &user_id, provider, client).await?;
            session
                .flash(format!(
                    "Your {} sign-in is now linked to your account.",
                    provider.display_name
                ))
                .await?;
            Ok(continue_to(pending.return_to))
        }
        Decision::Create => {
            let user = create_account(state, client, provider, &profile).await?;
            sign_in(session, &user.id, provider, client).await?;
            Ok(continue_to(pending.return_to))
        }
        Decision::NeedProof(user_id) => {
            let link = PendingLink {
                provider: provider.id.clone(),
                subject: profile.subject.clone(),
                email,
                user_id,
                return_to: pending.return_to,
            };
            session.put(PENDING_LINK, &link).await?;
            Ok(redirect("/upstream/link"))
        }
        Decision::Refuse(reason) => {
            let outcome = match reason {
                Refusal::LinkedElsewhere => "linked_elsewhere",
                Refusal::EmailTaken => "email_taken",
                Refusal::NoEmail => "no_email",
            };
            let _ = state
                .accounts()
                .audit(audit_upstream(
                    "upstream_sign_in",
                    outcome,
                    None,
                    client,
                    &detail,
                ))
                .await;
            let name = &provider.display_name;
            Err(PageError::Forbidden(match reason {
                Refusal::LinkedElsewhere => format!(
                    "That {name} account is already linked to a different account here. Sign in to that account to unlink it first."
                ),
                Refusal::EmailTaken => format!(
                    "An account with this email address already exists, and {name} cannot be linked to it automatically. Sign in with your password, then link {name} from your account page."
                ),
                Refusal::NoEmail => format!(
                    "{name} did not share an email address, which an account here needs. Check your {name} settings, or register with a password."
                ),
            }))
        }
    }
}

fn continue_to(return_to: Option<String>) -> Response {
    redirect(return_to.as_deref().unwrap_or(pages::ACCOUNT))
}

async fn sign_in(
    session: &WebSession,
    user_id: &str,
    provider: &Provider,
    client: &ClientInfo,
) -> Result<(), PageError> {
    session
        .sign_in_with(user_id, &["fed"], Some(&provider.id), client)
        .await
}

/// Links the identity and tells the account owner by email.
async fn link_to_account(
    state: &AppState,
    client: &ClientInfo,
    provider: &Provider,
    profile: &Profile,
    user_id: &str,
) -> Result<(), PageError> {
    let now = store::now_unix();
    let detail = format!("provider={} subject={}", provider.id, profile.subject);
    let mut tx = state.store.begin_write().await?;
    let linked = identities::link(
        &mut tx,
        &provider.id,
        &profile.subject,
        user_id,
        profile.email.as_deref().unwrap_or_default(),
        profile.email_verified,
        now,
    )
    .await;
    match linked {
        Ok(()) => {}
        Err(e) if store::is_unique_violation(&e) => {
            return Err(PageError::Forbidden(format!(
                "That {} account is already linked to an account here.",
                provider.display_name
            )));
        }
        Err(e) => return Err(e.into()),
    }
    audit::insert(
        &mut tx,
        &audit_upstream("identity_linked", "success", Some(user_id), client, &detail),
        now,
    )
    .await?;
    tx.commit().await?;
    notify_linked(state, user_id, &provider.display_name).await
}

#[derive(Template)]
#[template(path = "emails/sign_in_added.txt")]
struct AddedText<'a> {
    name: &'a str,
    provider: &'a str,
    account_url: &'a str,
}

#[derive(Template)]
#[template(path = "emails/sign_in_added.html")]
struct AddedHtml<'a> {
    name: &'a str,
    provider: &'a str,
    account_url: &'a str,
}

async fn notify_linked(state: &AppState, user_id: &str, provider: &str) -> Result<(), PageError> {
    let mut conn = state.store.read().await?;
    let Some(user) = users::by_id(&mut conn, user_id).await? else {
        return Ok(());
    };
    drop(conn);
    let account_url = format!("{}/account", state.config.issuer.trim_end_matches('/'));
    let name = if user.display_name.is_empty() {
        &user.username
    } else {
        &user.display_name
    };
    let email = Email::render(
        format!("{provider} sign-in added to your account"),
        &AddedText {
            name,
            provider,
            account_url: &account_url,
        },
        &AddedHtml {
            name,
            provider,
            account_url: &account_url,
        },
    )
    .map_err(|_| PageError::internal("email"))?;
    state
        .mailer
        .send_later(user.email.clone(), email, "sign-in added");
    Ok(())
}

/// A username from the upstream profile: its username or email's local part, reduced to the
/// characters usernames allow, made unique with a number.
fn base_username(profile: &Profile) -> String {
    let source = profile
        .username
        .clone()
        .or_else(|| {
            profile
                .email
                .as_ref()
                .and_then(|e| e.split('@').next().map(str::to_owned))
        })
        .unwrap_or_else(|| "user".into());
    let mut name: String = source
        .to_lowercase()
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                c
            } else {
                '-'
            }
        })
        .collect();
    name = name
        .trim_matches(|c: char| !c.is_ascii_alphanumeric())
        .chars()
        .take(28)
        .collect();
    if name.len() < 3 {
        name = format!("user-{name}").trim_end_matches('-').to_owned();
    }
    name
}

async fn create_account(
    state: &AppState,
    client: &ClientInfo,
    provider: &Provider,
    profile: &Profile,
) -> Result<UserRow, PageError> {
    let email = profile
        .email
        .clone()
        .ok_or_else(|| PageError::internal("no email"))?;
    let base = base_username(profile);
    let now = store::now_unix();
    let id = uuid::Uuid::now_v7().to_string();
    let display_name = profile
        .name
        .clone()
        .unwrap_or_default()
        .chars()
        .filter(|c| !c.is_control())
        .take(100)
        .collect::<String>();
    for attempt in 0..20u32 {
        let username = if attempt == 0 {
            base.clone()
        } else if attempt < 10 {
            format!("{base}-{}", attempt + 1)
        } else {
            format!("{base}-{}", &random_token()[..6].to_lowercase())
        };
        let mut tx = state.store.begin_write().await?;
        let inserted = users::insert(
            &mut tx,
            &users::NewUser {
                id: &id,
                username: &username,
                email: &email,
                // An unverified upstream email stays unverified (and can never auto-link).
                email_verified: profile.email_verified,
                display_name: &display_name,
                // No password until the person sets one through the reset flow.
                password_hash: None,
                now,
            },
        )
        .await;
        match inserted {
            Ok(()) => {}
            Err(e) if store::is_unique_violation(&e) && e.to_string().contains("username_key") => {
                continue;
            }
            Err(e) if store::is_unique_violation(&e) => {
                return Err(PageError::Forbidden(
                    "An account with this email address was created at the same moment. Try again."
                        .into(),
                ));
            }
            Err(e) => return Err(e.into()),
        }
        identities::link(
            &mut tx,
            &provider.id,
            &profile.subject,
            &id,
            &email,
            profile.email_verified,
            now,
        )
        .await?;
        let detail = format!("provider={} subject={}", provider.id, profile.subject);
        audit::insert(
            &mut tx,
            &audit_upstream("registered", "success", Some(&id), client, &detail),
            now,
        )
        .await?;
        audit::insert(
            &mut tx,
            &audit_upstream("identity_linked", "success", Some(&id), client, &detail),
            now,
        )
        .await?;
        tx.commit().await?;
        let mut conn = state.store.read().await?;
        return users::by_id(&mut conn, &id)
            .await?
            .ok_or_else(|| PageError::internal("new account"));
    }
    Err(PageError::internal("no free username"))
}

// ----- proving the matching account is yours ------------------------------------------------

#[derive(Template)]
#[template(path = "pages/link_account.html")]
struct LinkPage {
    base: String,
    csrf: String,
    provider: String,
    can_email: bool,
    masked_email: String,
    error: Option<String>,
    sent: bool,
}

fn provider_name(state: &AppState, id: &str) -> String {
    state
        .upstream
        .get(id)
        .map_or_else(|| id.to_owned(), |p| p.display_name.clone())
}

fn mask(email: &str) -> String {
    match email.split_once('@') {
        Some((local, domain)) => format!("{}***@{domain}", local.chars().next().unwrap_or('*')),
        None => "***".into(),
    }
}

async fn link_context(
    state: &AppState,
    session: &WebSession,
) -> Result<(PendingLink, UserRow), PageError> {
    let link: PendingLink = session.get(PENDING_LINK).await?.ok_or_else(|| {
        PageError::BadRequest(
            "There is no sign-in waiting to be linked. Start again from the sign-in page.".into(),
        )
    })?;
    let mut conn = state.store.read().await?;
    let user = users::by_id(&mut conn, &link.user_id)
        .await?
        .ok_or_else(|| PageError::BadRequest("That account no longer exists.".into()))?;
    Ok((link, user))
}

async fn link_page(
    state: &AppState,
    session: &WebSession,
    error: Option<String>,
    sent: bool,
) -> Result<LinkPage, PageError> {
    let (link, user) = link_context(state, session).await?;
    Ok(LinkPage {
        base: base_path(),
        csrf: session.csrf_token().await?,
        provider: provider_name(state, &link.provider),
        can_email: user.email_verified(),
        masked_email: mask(&user.email),
        error,
        sent,
    })
}

async fn link_get(
    State(state): State<AppState>,
    session: WebSession,
) -> Result<Response, PageError> {
    Ok(render(&link_page(&state, &session, None, false).await?))
}

#[derive(Deserialize)]
pub struct LinkForm {
    #[serde(default)]
    csrf_token: String,
    #[serde(default)]
    password: String,
}

/// Proof by signing in to the existing account with its password.
async fn link_post(
    State(state): State<AppState>,
    session: WebSession,
    client: ClientInfo,
    PageForm(form): PageForm<LinkForm>,
) -> Result<Response, PageError> {
    session.verify_csrf(&form.csrf_token).await?;
    let (link, user) = link_context(&state, &session).await?;
    if let Some(wait) = state
        .throttle
        .blocked(Limit::LoginFailuresPerAccount, &user.email)
        .await
    {
        return Err(PageError::Throttled(wait));
    }
    let accounts = state.accounts();
    match accounts.authenticate(&user.email, &form.password).await {
        Ok(found) if found.id == user.id => {}
        Ok(_) | Err(service::AccountError::BadCredentials) => {
            state
                .throttle
                .hit(Limit::LoginFailuresPerAccount, &user.email)
                .await;
            let _ = accounts
                .audit(event(
                    "sign_in_failed",
                    "bad_credentials",
                    Some(&user.id),
                    &client,
                ))
                .await;
            let page =
                link_page(&state, &session, Some("Incorrect password.".into()), false).await?;
            return Ok((axum::http::StatusCode::UNAUTHORIZED, render(&page)).into_response());
        }
        Err(service::AccountError::Database(e)) => return Err(e.into()),
        Err(_) => return Err(PageError::internal("link sign-in")),
    }
    let provider = state
        .upstream
        .get(&link.provider)
        .ok_or(PageError::NotFound)?
        .clone();
    let profile = Profile {
        subject: link.subject.clone(),
        email: Some(link.email.clone()),
        email_verified: true,
        name: None,
        username: None,
    };
    link_to_account(&state, &client, &provider, &profile, &user.id).await?;
    let _ = session.take::<PendingLink>(PENDING_LINK).await?;
    session
        .sign_in_with(&user.id, &["pwd", "fed"], Some(&provider.id), &client)
        .await?;
    session
        .flash(format!(
            "Your {} sign-in is now linked to your account.",
            provider.display_name
        ))
        .await?;
    Ok(continue_to(link.return_to))
}

#[derive(Template)]
#[template(path = "emails/confirm_link.txt")]
struct ConfirmText<'a> {
    name: &'a str,
    provider: &'a str,
    link: &'a str,
    minutes: u64,
}

#[derive(Template)]
#[template(path = "emails/confirm_link.html")]
struct ConfirmHtml<'a> {
    name: &'a str,
    provider: &'a str,
    link: &'a str,
    minutes: u64,
}

/// Proof by a single-use link sent to the account's verified address.
async fn link_email_post(
    State(state): State<AppState>,
    session: WebSession,
    client: ClientInfo,
    PageForm(form): PageForm<CsrfOnly>,
) -> Result<Response, PageError> {
    session.verify_csrf(&form.csrf_token).await?;
    let (link, user) = link_context(&state, &session).await?;
    if !user.email_verified() {
        return Err(PageError::Forbidden("This account's email address is not verified, so a link cannot prove it is yours. Sign in with its password instead.".into()));
    }
    for (limit, key) in [
        (Limit::ResetsPerIp, client.ip.as_str()),
        (Limit::ResetsPerAccount, user.email.as_str()),
    ] {
        if let Some(wait) = state.throttle.blocked(limit, key).await {
            return Err(PageError::Throttled(wait));
        }
        state.throttle.hit(limit, key).await;
    }
    let token = random_token();
    let now = store::now_unix();
    let ttl = state.config.accounts.verification_ttl.as_secs().min(3600);
    let payload = serde_json::to_string(&link).map_err(|_| PageError::internal("link payload"))?;
    let mut tx = state.store.begin_write().await?;
    tokens::insert(
        &mut tx,
        &token_hash(&token),
        CONFIRM_LINK,
        &user.id,
        &payload,
        now,
        now + i64::try_from(ttl).unwrap_or(3600),
    )
    .await?;
    let detail = format!("provider={} subject={}", link.provider, link.subject);
    audit::insert(
        &mut tx,
        &audit_upstream(
            "link_confirmation_sent",
            "success",
            Some(&user.id),
            &client,
            &detail,
        ),
        now,
    )
    .await?;
    tx.commit().await?;
    let url = format!(
        "{}/upstream/confirm?token={token}",
        state.config.issuer.trim_end_matches('/')
    );
    let provider = provider_name(&state, &link.provider);
    let name = if user.display_name.is_empty() {
        &user.username
    } else {
        &user.display_name
    };
    let minutes = ttl.div_ceil(60);
    let email = Email::render(
        format!("Link {provider} to your account?"),
        &ConfirmText {
            name,
            provider: &provider,
            link: &url,
            minutes,
        },
        &ConfirmHtml {
            name,
            provider: &provider,
            link: &url,
            minutes,
        },
    )
    .map_err(|_| PageError::internal("email"))?;
    state
        .mailer
        .send_later(user.email.clone(), email, "link confirmation");
    Ok(render(&link_page(&state, &session, None, true).await?))
}

#[derive(Template)]
#[template(path = "pages/link_confirm.html")]
struct ConfirmPage {
    base: String,
    csrf: String,
    token: String,
}

#[derive(Deserialize)]
pub struct TokenQuery {
    #[serde(default)]
    token: String,
}

async fn confirm_get(
    State(state): State<AppState>,
    session: WebSession,
    PageQuery(query): PageQuery<TokenQuery>,
) -> Result<Response, PageError> {
    let mut conn = state.store.read().await?;
    let hashed = token_hash(&query.token);
    tokens::check(&mut conn, &hashed, CONFIRM_LINK, store::now_unix())
        .await?
        .map_err(|r| crate::accounts::verify::link_error(r, "confirmation"))?;
    Ok(render(&ConfirmPage {
        base: base_path(),
        csrf: session.csrf_token().await?,
        token: query.token,
    }))
}

#[derive(Deserialize)]
pub struct ConfirmForm {
    #[serde(default)]
    csrf_token: String,
    #[serde(default)]
    token: String,
}

async fn confirm_post(
    State(state): State<AppState>,
    session: WebSession,
    client: ClientInfo,
    PageForm(form): PageForm<ConfirmForm>,
) -> Result<Response, PageError> {
    session.verify_csrf(&form.csrf_token).await?;
    let mut tx = state.store.begin_write().await?;
    let (user_id, payload) = tokens::consume(
        &mut tx,
        &token_hash(&form.token),
        CONFIRM_LINK,
        store::now_unix(),
    )
    .await?
    .map_err(|r| crate::accounts::verify::link_error(r, "confirmation"))?;
    tx.commit().await?;
    let link: PendingLink =
        serde_json::from_str(&payload).map_err(|_| PageError::internal("link payload"))?;
    if link.user_id != user_id {
        return Err(PageError::internal("link owner"));
    }
    let provider = state
        .upstream
        .get(&link.provider)
        .ok_or(PageError::NotFound)?
        .clone();
    let profile = Profile {
        subject: link.subject,
        email: Some(link.email),
        email_verified: true,
        name: None,
        username: None,
    };
    link_to_account(&state, &client, &provider, &profile, &user_id).await?;
    session
        .sign_in_with(&user_id, &["fed"], Some(&provider.id), &client)
        .await?;
    session
        .flash(format!(
            "Your {} sign-in is now linked to your account.",
            provider.display_name
        ))
        .await?;
    Ok(continue_to(link.return_to))
}

#[derive(Deserialize)]
pub struct UnlinkForm {
    #[serde(default)]
    csrf_token: String,
    #[serde(default)]
    provider: String,
    #[serde(default)]
    subject: String,
}

/// Unlinks a sign-in method, unless it is the account's last way in.
async fn unlink_post(
    State(state): State<AppState>,
    session: WebSession,
    client: ClientInfo,
    PageForm(form): PageForm<UnlinkForm>,
) -> Result<Response, PageError> {
    session.verify_csrf(&form.csrf_token).await?;
    let Some(who) = session.signed_in().await? else {
        return Ok(redirect(pages::LOGIN));
    };
    let mut tx = state.store.begin_write().await?;
    let user = users::by_id(&mut tx, &who.user_id)
        .await?
        .ok_or_else(|| PageError::internal("account"))?;
    let linked = identities::of_user(&mut tx, &who.user_id).await?;
    let others = linked
        .iter()
        .filter(|i| !(i.provider == form.provider && i.subject == form.subject))
        .count();
    if user.password_hash.is_none() && others == 0 {
        tx.rollback().await?;
        session
            .flash("That is your only way to sign in. Set a password (use \u{201c}Forgot your password?\u{201d}) or link another sign-in first.")
            .await?;
        return Ok(redirect(pages::ACCOUNT));
    }
    let removed = identities::unlink(&mut tx, &who.user_id, &form.provider, &form.subject).await?;
    if removed {
        let detail = format!("provider={} subject={}", form.provider, form.subject);
        audit::insert(
            &mut tx,
            &audit_upstream(
                "identity_unlinked",
                "success",
                Some(&who.user_id),
                &client,
                &detail,
            ),
            store::now_unix(),
        )
        .await?;
    }
    tx.commit().await?;
    session
        .flash(if removed {
            "That sign-in method is no longer linked."
        } else {
            "That sign-in method was not linked."
        })
        .await?;
    Ok(redirect(pages::ACCOUNT))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn profile(username: Option<&str>, email: Option<&str>) -> Profile {
        Profile {
            subject: "1".into(),
            email: email.map(str::to_owned),
            email_verified: true,
            name: None,
            username: username.map(str::to_owned),
        }
    }

    #[test]
    fn usernames_from_profiles_fit_the_rules() {
        assert_eq!(base_username(&profile(Some("Octo Cat"), None)), "octo-cat");
        assert_eq!(
            base_username(&profile(None, Some("Jane.Doe+x@example.com"))),
            "jane.doe-x"
        );
        assert_eq!(base_username(&profile(Some("ab"), None)), "user-ab");
        assert_eq!(base_username(&profile(Some("<script>"), None)), "script");
        assert_eq!(base_username(&profile(Some("Ωμέγα"), None)), "user");
        for p in [
            profile(Some("Octo Cat"), None),
            profile(Some(&"x".repeat(99)), None),
            profile(Some("ab"), None),
        ] {
            assert!(
                service::validate_username(&base_username(&p)).is_ok(),
                "{:?}",
                base_username(&p)
            );
        }
    }
}
