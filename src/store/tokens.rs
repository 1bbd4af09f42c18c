//! The `one_time_tokens` table: single-use, expiring links.

use sqlx::AnyConnection;

pub const VERIFY_EMAIL: &str = "verify_email";
pub const RESET_PASSWORD: &str = "reset_password";

#[allow(clippy::too_many_arguments)]
pub async fn insert(
    conn: &mut AnyConnection,
    token_hash: &str,
    purpose: &str,
    user_id: &str,
    payload: &str,
    now: i64,
    expires_at: i64,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO one_time_tokens (token_hash, purpose, user_id, payload, created_at, expires_at) \
         VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(token_hash)
    .bind(purpose)
    .bind(user_id)
    .bind(payload)
    .bind(now)
    .bind(expires_at)
    .execute(conn)
    .await?;
    Ok(())
}

/// Why a token could not be used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unusable {
    Unknown,
    Used,
    Expired,
}

/// Marks the token used and returns `(user_id, payload)`, in one statement, so two
/// concurrent uses cannot both succeed.
pub async fn consume(
    conn: &mut AnyConnection,
    token_hash: &str,
    purpose: &str,
    now: i64,
) -> Result<Result<(String, String), Unusable>, sqlx::Error> {
    let row: Option<(String, String)> = sqlx::query_as(
        "UPDATE one_time_tokens SET used_at = $1 \
         WHERE token_hash = $2 AND purpose = $3 AND used_at IS NULL AND expires_at > $1 \
         RETURNING user_id, payload",
    )
    .bind(now)
    .bind(token_hash)
    .bind(purpose)
    .fetch_optional(&mut *conn)
    .await?;
    if let Some(row) = row {
        return Ok(Ok(row));
    }
    Ok(Err(check(conn, token_hash, purpose, now)
        .await?
        .err()
        .unwrap_or(Unusable::Unknown)))
}

/// Whether the token could be used now, without using it (to show the form behind a link).
pub async fn check(
    conn: &mut AnyConnection,
    token_hash: &str,
    purpose: &str,
    now: i64,
) -> Result<Result<(), Unusable>, sqlx::Error> {
    let row: Option<(Option<i64>, i64)> = sqlx::query_as(
        "SELECT used_at, expires_at FROM one_time_tokens WHERE token_hash = $1 AND purpose = $2",
    )
    .bind(token_hash)
    .bind(purpose)
    .fetch_optional(conn)
    .await?;
    Ok(match row {
        None => Err(Unusable::Unknown),
        Some((Some(_), _)) => Err(Unusable::Used),
        Some((None, expires)) if expires <= now => Err(Unusable::Expired),
        Some(_) => Ok(()),
    })
}

/// Invalidates every unused token of `purpose` for a user (e.g. older reset links once one
/// has been used).
pub async fn revoke_all(
    conn: &mut AnyConnection,
    user_id: &str,
    purpose: &str,
    now: i64,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE one_time_tokens SET used_at = $1 WHERE user_id = $2 AND purpose = $3 AND used_at IS NULL",
    )
    .bind(now)
    .bind(user_id)
    .bind(purpose)
    .execute(conn)
    .await?;
    Ok(())
}

/// The account a token belongs to.
pub async fn owner(
    conn: &mut AnyConnection,
    token_hash: &str,
) -> Result<Option<String>, sqlx::Error> {
    sqlx::query_scalar("SELECT user_id FROM one_time_tokens WHERE token_hash = $1")
        .bind(token_hash)
        .fetch_optional(conn)
        .await
}
