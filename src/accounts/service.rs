//! The account rules: registration, authentication, email verification, password reset and
//! change, profile updates. Plain inputs, domain results; no HTTP here.

use askama::Template;

use crate::config::Config;
use crate::crypto::password::{PasswordError, Passwords};
use crate::crypto::secrets::{random_token, token_hash};
use crate::mail::{Email, Mailer};
use crate::store::tokens::{self, Unusable};
use crate::store::users::{self, NewUser, UserRow};
use crate::store::{self, Store, audit};
use crate::web::session::ClientInfo;

#[derive(Debug, thiserror::Error)]
pub enum AccountError {
    #[error("{0}")]
    Invalid(String),
    #[error("That username is taken.")]
    UsernameTaken,
    #[error("An account with that email address already exists.")]
    EmailTaken,
    #[error("{0}")]
    WeakPassword(String),
    #[error("Incorrect username or password.")]
    BadCredentials,
    #[error("Your current password is not correct.")]
    WrongCurrentPassword,
    #[error("link unusable")]
    Link(Unusable),
    #[error(
        "This link was for a different email address. Request a new one from your account page."
    )]
    StaleLink,
    #[error("database")]
    Database(#[from] sqlx::Error),
    #[error("password hashing")]
    Hashing(#[from] PasswordError),
}

/// What the account rules need.
pub struct Accounts<'a> {
    pub store: &'a Store,
    pub passwords: &'a Passwords,
    pub mailer: &'a Mailer,
    pub config: &'a Config,
}

pub struct Registration<'a> {
    pub username: &'a str,
    pub email: &'a str,
    pub display_name: &'a str,
    pub password: &'a str,
}

/// Usernames: 3–32 ASCII letters, digits, `.`, `_`, `-`, starting with a letter or digit. ASCII
/// only, so two names cannot differ by look-alike characters.
pub fn validate_username(raw: &str) -> Result<String, AccountError> {
    let name = raw.trim();
    let ok = (3..=32).contains(&name.len())
        && name.starts_with(|c: char| c.is_ascii_alphanumeric())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    if ok {
        Ok(name.to_owned())
    } else {
        Err(AccountError::Invalid(
            "Choose a username of 3 to 32 letters, digits, dots, dashes or underscores, starting with a letter or digit.".into(),
        ))
    }
}

/// A deliverable address: one `@`, a dotted domain, no spaces, at most 254 characters.
pub fn validate_email(raw: &str) -> Result<String, AccountError> {
    let email = raw.trim();
    let invalid =
        || AccountError::Invalid("Enter a valid email address, like name@example.com.".into());
    let (local, domain) = email.split_once('@').ok_or_else(invalid)?;
    let ok = email.len() <= 254
        && (1..=64).contains(&local.len())
        && domain.contains('.')
        && !domain.starts_with('.')
        && !domain.ends_with('.')
        && !domain.contains('@')
        && !email
            .chars()
            .any(|c| c.is_whitespace() || c.is_control() || matches!(c, '<' | '>' | '"' | ','))
        && email.parse::<lettre::message::Mailbox>().is_ok();
    if ok {
        Ok(email.to_owned())
    } else {
        Err(invalid())
    }
}

/// Display names: trimmed, at most 100 characters, no control characters.
pub fn validate_display_name(raw: &str) -> Result<String, AccountError> {
    let name = raw.trim();
    if name.chars().count() > 100 || name.chars().any(char::is_control) {
        return Err(AccountError::Invalid(
            "Use a name of at most 100 characters.".into(),
        ));
    }
    Ok(name.to_owned())
}

fn map_unique(error: sqlx::Error) -> AccountError {
    if store::is_unique_violation(&error) {
        // PostgreSQL names the constraint, SQLite the column; both contain these words.
        let text = error.to_string();
        if text.contains("username_key") {
            return AccountError::UsernameTaken;
        }
        if text.contains("email_key") {
            return AccountError::EmailTaken;
        }
    }
    AccountError::Database(error)
}

/// An audit event about a person, from a client.
pub fn event<'a>(
    kind: &'a str,
    outcome: &'a str,
    user_id: Option<&'a str>,
    client: &'a ClientInfo,
) -> audit::NewEvent<'a> {
    audit::NewEvent {
        kind,
        outcome,
        user_id,
        ip: &client.ip,
        user_agent: &client.user_agent,
        ..Default::default()
    }
}

#[derive(Template)]
#[template(path = "emails/verify_email.txt")]
struct VerifyText<'a> {
    name: &'a str,
    link: &'a str,
    hours: u64,
}

#[derive(Template)]
#[template(path = "emails/verify_email.html")]
struct VerifyHtml<'a> {
    name: &'a str,
    link: &'a str,
    hours: u64,
}

#[derive(Template)]
#[template(path = "emails/reset_password.txt")]
struct ResetText<'a> {
    name: &'a str,
    link: &'a str,
    minutes: u64,
}

#[derive(Template)]
#[template(path = "emails/reset_password.html")]
struct ResetHtml<'a> {
    name: &'a str,
    link: &'a str,
    minutes: u64,
}

impl Accounts<'_> {
    /// Records an event on its own, durably, before returning. It joins the queue of lone
    /// audit rows ([`store::Store::append_audit`]): one multi-row `INSERT` for the rows that
    /// queued together, and no `BEGIN` or `COMMIT` round trips.
    pub async fn audit(&self, event: audit::NewEvent<'_>) -> Result<(), AccountError> {
        self.store
            .append_audit(event.to_owned_at(store::now_unix()))
            .await?;
        Ok(())
    }

    /// Creates an account and sends the verification email.
    pub async fn register(
        &self,
        r: &Registration<'_>,
        client: &ClientInfo,
    ) -> Result<UserRow, AccountError> {
        let username = validate_username(r.username)?;
        let email = validate_email(r.email)?;
        let display_name = validate_display_name(r.display_name)?;
        self.passwords
            .check_policy(r.password, &username, &email)
            .map_err(AccountError::WeakPassword)?;
        {
            let mut conn = self.store.read().await?;
            if users::by_login(&mut conn, &username)
                .await?
                .is_some_and(|u| users::fold(&u.username) == users::fold(&username))
            {
                return Err(AccountError::UsernameTaken);
            }
            if users::by_email(&mut conn, &email).await?.is_some() {
                return Err(AccountError::EmailTaken);
            }
        }
        let hash = self.passwords.hash(r.password).await?;
        let id = uuid::Uuid::now_v7().to_string();
        let now = store::now_unix();
        let mut tx = self.store.begin_write().await?;
        users::insert(
            &mut tx,
            &NewUser {
                id: &id,
                username: &username,
                email: &email,
                email_verified: false,
                display_name: &display_name,
                password_hash: Some(&hash),
                now,
            },
        )
        .await
        .map_err(map_unique)?;
        audit::insert(
            &mut tx,
            &event("registered", "success", Some(&id), client),
            now,
        )
        .await?;
        tx.commit().await?;
        let mut conn = self.store.read().await?;
        let user = users::by_id(&mut conn, &id)
            .await?
            .ok_or(AccountError::BadCredentials)?;
        drop(conn);
        self.send_verification(&user, client).await?;
        Ok(user)
    }

    /// Checks a username-or-email and password. Unknown users and wrong passwords take the
    /// same path and the same time (a dummy hash is verified), and fail the same way.
    pub async fn authenticate(&self, login: &str, password: &str) -> Result<UserRow, AccountError> {
        let user = if login.len() > 254 || password.len() > crate::crypto::password::MAX_LENGTH {
            None
        } else {
            users::find_by_login(self.store, login).await?
        };
        let hash = user.as_ref().and_then(|u| u.password_hash.as_deref());
        let ok = self.passwords.verify(password, hash).await?;
        match user {
            Some(user) if ok => Ok(user),
            _ => Err(AccountError::BadCredentials),
        }
    }

    /// Sends a single-use verification link for the user's current email.
    pub async fn send_verification(
        &self,
        user: &UserRow,
        client: &ClientInfo,
    ) -> Result<(), AccountError> {
        let ttl = self.config.accounts.verification_ttl;
        let token = self
            .issue_token(
                user,
                tokens::VERIFY_EMAIL,
                &user.email,
                ttl,
                "verification_sent",
                client,
            )
            .await?;
        let link = format!(
            "{}/verify-email?token={token}",
            self.config.issuer.trim_end_matches('/')
        );
        let hours = ttl.as_secs().div_ceil(3600);
        let name = greeting(user);
        let email = Email::render(
            "Verify your email address",
            &VerifyText {
                name,
                link: &link,
                hours,
            },
            &VerifyHtml {
                name,
                link: &link,
                hours,
            },
        )
        .map_err(|e| AccountError::Invalid(e.to_string()))?;
        self.mailer
            .send_later(user.email.clone(), email, "verification");
        Ok(())
    }

    async fn issue_token(
        &self,
        user: &UserRow,
        purpose: &str,
        payload: &str,
        ttl: std::time::Duration,
        kind: &str,
        client: &ClientInfo,
    ) -> Result<String, AccountError> {
        let token = random_token();
        let now = store::now_unix();
        let expires = now.saturating_add(i64::try_from(ttl.as_secs()).unwrap_or(i64::MAX));
        let mut tx = self.store.begin_write().await?;
        tokens::insert(
            &mut tx,
            &token_hash(&token),
            purpose,
            &user.id,
            payload,
            now,
            expires,
        )
        .await?;
        audit::insert(
            &mut tx,
            &event(kind, "success", Some(&user.id), client),
            now,
        )
        .await?;
        tx.commit().await?;
        Ok(token)
    }

    /// Whether a link's token can still be used (to decide which page to show for it).
    pub async fn check_link(&self, token: &str, purpose: &str) -> Result<(), AccountError> {
        let mut conn = self.store.read().await?;
        tokens::check(&mut conn, &token_hash(token), purpose, store::now_unix())
            .await?
            .map_err(AccountError::Link)
    }

    /// Uses a verification link.
    pub async fn verify_email(
        &self,
        token: &str,
        client: &ClientInfo,
    ) -> Result<String, AccountError> {
        let now = store::now_unix();
        let mut tx = self.store.begin_write().await?;
        let (user_id, email) =
            tokens::consume(&mut tx, &token_hash(token), tokens::VERIFY_EMAIL, now)
                .await?
                .map_err(AccountError::Link)?;
        if !users::verify_email(&mut tx, &user_id, &email, now).await? {
            tx.commit().await?; // the link is spent either way
            return Err(AccountError::StaleLink);
        }
        audit::insert(
            &mut tx,
            &event("email_verified", "success", Some(&user_id), client),
            now,
        )
        .await?;
        tx.commit().await?;
        Ok(user_id)
    }

    /// Sends a reset link if an account has this address. Says nothing either way: the
    /// caller shows the same page whatever the outcome.
    pub async fn request_reset(
        &self,
        email: &str,
        client: &ClientInfo,
    ) -> Result<(), AccountError> {
        let Ok(email) = validate_email(email) else {
            return Ok(());
        };
        let user = {
            let mut conn = self.store.read().await?;
            users::by_email(&mut conn, &email).await?
        };
        let Some(user) = user else {
            self.audit(event(
                "password_reset_requested",
                "unknown_email",
                None,
                client,
            ))
            .await?;
            return Ok(());
        };
        let ttl = self.config.accounts.reset_ttl;
        let token = self
            .issue_token(
                &user,
                tokens::RESET_PASSWORD,
                "",
                ttl,
                "password_reset_requested",
                client,
            )
            .await?;
        let link = format!(
            "{}/reset-password?token={token}",
            self.config.issuer.trim_end_matches('/')
        );
        let minutes = ttl.as_secs().div_ceil(60);
        let name = greeting(&user);
        let message = Email::render(
            "Reset your password",
            &ResetText {
                name,
                link: &link,
                minutes,
            },
            &ResetHtml {
                name,
                link: &link,
                minutes,
            },
        )
        .map_err(|e| AccountError::Invalid(e.to_string()))?;
        self.mailer
            .send_later(user.email.clone(), message, "password reset");
        Ok(())
    }

    /// Uses a reset link: sets the password, spends every other reset link of the account,
    /// and ends all of its sessions.
    pub async fn reset_password(
        &self,
        token: &str,
        password: &str,
        client: &ClientInfo,
    ) -> Result<String, AccountError> {
        let hashed = token_hash(token);
        let now = store::now_unix();
        // Check the link and the policy before spending the link, so a weak password can be
        // corrected on the same page.
        let user = {
            let mut conn = self.store.read().await?;
            tokens::check(&mut conn, &hashed, tokens::RESET_PASSWORD, now)
                .await?
                .map_err(AccountError::Link)?;
            let user_id = tokens::owner(&mut conn, &hashed)
                .await?
                .ok_or(AccountError::Link(Unusable::Unknown))?;
            users::by_id(&mut conn, &user_id)
                .await?
                .ok_or(AccountError::Link(Unusable::Unknown))?
        };
        self.passwords
            .check_policy(password, &user.username, &user.email)
            .map_err(AccountError::WeakPassword)?;
        let hash = self.passwords.hash(password).await?;
        let mut tx = self.store.begin_write().await?;
        let (user_id, _) = tokens::consume(&mut tx, &hashed, tokens::RESET_PASSWORD, now)
            .await?
            .map_err(AccountError::Link)?;
        users::set_password(&mut tx, &user_id, &hash, now).await?;
        tokens::revoke_all(&mut tx, &user_id, tokens::RESET_PASSWORD, now).await?;
        let ended = store::sessions::delete_all_for_user(&mut tx, &user_id, None).await?;
        let detail = format!("sessions ended: {ended}");
        let mut e = event("password_reset", "success", Some(&user_id), client);
        e.detail = &detail;
        audit::insert(&mut tx, &e, now).await?;
        tx.commit().await?;
        Ok(user_id)
    }

    /// Changes the password of a signed-in person (who must give the current one) and ends
    /// their other sessions.
    pub async fn change_password(
        &self,
        user: &UserRow,
        current: &str,
        new: &str,
        keep_session: Option<&str>,
        client: &ClientInfo,
    ) -> Result<(), AccountError> {
        let has_password = user.password_hash.is_some();
        if !self
            .passwords
            .verify(current, user.password_hash.as_deref())
            .await?
            && has_password
        {
            self.audit(event(
                "password_changed",
                "wrong_current_password",
                Some(&user.id),
                client,
            ))
            .await?;
            return Err(AccountError::WrongCurrentPassword);
        }
        self.passwords
            .check_policy(new, &user.username, &user.email)
            .map_err(AccountError::WeakPassword)?;
        let hash = self.passwords.hash(new).await?;
        let now = store::now_unix();
        let mut tx = self.store.begin_write().await?;
        users::set_password(&mut tx, &user.id, &hash, now).await?;
        store::sessions::delete_all_for_user(&mut tx, &user.id, keep_session).await?;
        audit::insert(
            &mut tx,
            &event("password_changed", "success", Some(&user.id), client),
            now,
        )
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Updates name and email; a new email is unverified until its link is followed.
    pub async fn update_profile(
        &self,
        user: &UserRow,
        display_name: &str,
        email: &str,
        client: &ClientInfo,
    ) -> Result<bool, AccountError> {
        let display_name = validate_display_name(display_name)?;
        let email = validate_email(email)?;
        let email_changed = users::fold(&email) != users::fold(&user.email);
        let now = store::now_unix();
        let mut tx = self.store.begin_write().await?;
        users::update_profile(&mut tx, &user.id, &display_name, &email, now)
            .await
            .map_err(map_unique)?;
        let kind = if email_changed {
            "email_changed"
        } else {
            "profile_updated"
        };
        audit::insert(
            &mut tx,
            &event(kind, "success", Some(&user.id), client),
            now,
        )
        .await?;
        tx.commit().await?;
        if email_changed {
            let mut conn = self.store.read().await?;
            if let Some(updated) = users::by_id(&mut conn, &user.id).await? {
                drop(conn);
                self.send_verification(&updated, client).await?;
            }
        }
        Ok(email_changed)
    }
}

fn greeting(user: &UserRow) -> &str {
    if user.display_name.is_empty() {
        &user.username
    } else {
        &user.display_name
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usernames() {
        assert!(validate_username("alice").is_ok());
        assert!(validate_username("a.b-c_9").is_ok());
        assert!(validate_username("ab").is_err());
        assert!(validate_username("-alice").is_err());
        assert!(validate_username("alice smith").is_err());
        assert!(validate_username("аlice").is_err(), "Cyrillic look-alike");
        assert!(validate_username("<script>").is_err());
        assert!(validate_username(&"a".repeat(33)).is_err());
    }

    #[test]
    fn emails() {
        assert!(validate_email("a@example.com").is_ok());
        assert!(validate_email(" A.B+tag@Example.COM ").is_ok());
        for bad in [
            "",
            "a",
            "a@b",
            "@example.com",
            "a@.com",
            "a b@example.com",
            "a@example.com.",
            "<a@example.com>",
            "a@b@example.com",
        ] {
            assert!(validate_email(bad).is_err(), "{bad}");
        }
    }
}
