//! The `identities` table: upstream accounts linked to local ones.

use sqlx::{AnyConnection, FromRow};

#[derive(Debug, Clone, FromRow)]
pub struct IdentityRow {
    pub provider: String,
    pub subject: String,
    pub user_id: String,
    pub email: String,
    pub email_verified: i64,
    pub linked_at: i64,
    pub last_used_at: i64,
}

const COLUMNS: &str = "provider, subject, user_id, email, email_verified, linked_at, last_used_at";

pub async fn find(
    conn: &mut AnyConnection,
    provider: &str,
    subject: &str,
) -> Result<Option<IdentityRow>, sqlx::Error> {
    sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM identities WHERE provider = $1 AND subject = $2"
    ))
    .bind(provider)
    .bind(subject)
    .fetch_optional(conn)
    .await
}

pub async fn of_user(
    conn: &mut AnyConnection,
    user_id: &str,
) -> Result<Vec<IdentityRow>, sqlx::Error> {
    sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM identities WHERE user_id = $1 ORDER BY linked_at"
    ))
    .bind(user_id)
    .fetch_all(conn)
    .await
}

/// Links (provider, subject) to `user_id`. A pair linked elsewhere is a unique violation:
/// never moved silently.
pub async fn link(
    conn: &mut AnyConnection,
    provider: &str,
    subject: &str,
    user_id: &str,
    email: &str,
    email_verified: bool,
    now: i64,
) -> Result<(), sqlx::Error> {
    sqlx::query(&format!(
        "INSERT INTO identities ({COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $6)"
    ))
    .bind(provider)
    .bind(subject)
    .bind(user_id)
    .bind(email)
    .bind(i64::from(email_verified))
    .bind(now)
    .execute(conn)
    .await?;
    Ok(())
}

/// Records a sign-in, and the email the upstream reports now.
pub async fn touch(
    conn: &mut AnyConnection,
    provider: &str,
    subject: &str,
    email: &str,
    email_verified: bool,
    now: i64,
) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE identities SET email = $1, email_verified = $2, last_used_at = $3 WHERE provider = $4 AND subject = $5")
        .bind(email)
        .bind(i64::from(email_verified))
        .bind(now)
        .bind(provider)
        .bind(subject)
        .execute(conn)
        .await?;
    Ok(())
}

pub async fn unlink(
    conn: &mut AnyConnection,
    user_id: &str,
    provider: &str,
    subject: &str,
) -> Result<bool, sqlx::Error> {
    let done =
        sqlx::query("DELETE FROM identities WHERE user_id = $1 AND provider = $2 AND subject = $3")
            .bind(user_id)
            .bind(provider)
            .bind(subject)
            .execute(conn)
            .await?;
    Ok(done.rows_affected() == 1)
}
