//! The `users` table.

use std::sync::LazyLock;

use rusqlite::ToSql;
use sqlx::{AnyConnection, FromRow};

use super::Store;
use super::inline::FromSqlite;

#[derive(Clone, FromRow)]
pub struct UserRow {
    pub id: String,
    pub username: String,
    pub email: String,
    pub email_verified: i64,
    pub display_name: String,
    pub password_hash: Option<String>,
    pub created_at: i64,
    pub updated_at: i64,
}

impl UserRow {
    pub fn email_verified(&self) -> bool {
        self.email_verified != 0
    }
}

impl FromSqlite for UserRow {
    fn from_sqlite(row: &rusqlite::Row<'_>) -> rusqlite::Result<Self> {
        Ok(Self {
            id: row.get("id")?,
            username: row.get("username")?,
            email: row.get("email")?,
            email_verified: row.get("email_verified")?,
            display_name: row.get("display_name")?,
            password_hash: row.get("password_hash")?,
            created_at: row.get("created_at")?,
            updated_at: row.get("updated_at")?,
        })
    }
}

impl std::fmt::Debug for UserRow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UserRow")
            .field("id", &self.id)
            .field("username", &self.username)
            .field("email_verified", &self.email_verified)
            .finish_non_exhaustive()
    }
}

const COLUMNS: &str =
    "id, username, email, email_verified, display_name, password_hash, created_at, updated_at";

/// The case-folded form uniqueness is checked on.
pub fn fold(s: &str) -> String {
    s.trim().to_lowercase()
}

pub struct NewUser<'a> {
    pub id: &'a str,
    pub username: &'a str,
    pub email: &'a str,
    pub email_verified: bool,
    pub display_name: &'a str,
    pub password_hash: Option<&'a str>,
    pub now: i64,
}

/// Inserts a user; a unique violation names `users_username_key` or `users_email_key`.
pub async fn insert(conn: &mut AnyConnection, user: &NewUser<'_>) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO users (id, username, username_key, email, email_key, email_verified, \
         display_name, password_hash, created_at, updated_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $9)",
    )
    .bind(user.id)
    .bind(user.username)
    .bind(fold(user.username))
    .bind(user.email)
    .bind(fold(user.email))
    .bind(i64::from(user.email_verified))
    .bind(user.display_name)
    .bind(user.password_hash)
    .bind(user.now)
    .execute(conn)
    .await?;
    Ok(())
}

pub async fn by_id(conn: &mut AnyConnection, id: &str) -> Result<Option<UserRow>, sqlx::Error> {
    sqlx::query_as(&format!("SELECT {COLUMNS} FROM users WHERE id = $1"))
        .bind(id)
        .fetch_optional(conn)
        .await
}

static BY_ID_WITH_REVOKED_JTI: LazyLock<String> =
    LazyLock::new(|| super::grants::with_revoked_jti_sql("users", COLUMNS));

/// The account `id` and whether the access token `jti` is revoked, in one read (for
/// userinfo, which needs both on every call). `None` when there is no such account. A point
/// read of the store: on SQLite on the calling thread.
pub async fn find_with_revoked_jti(
    store: &Store,
    id: &str,
    jti: &str,
) -> Result<Option<(UserRow, bool)>, sqlx::Error> {
    super::grants::find_with_revoked_jti(store, &BY_ID_WITH_REVOKED_JTI, id, jti).await
}

/// [`COLUMNS`] of the `u` (users) side of a join, built once: [`find_by_grant`] runs on every
/// code exchange and refresh.
pub(super) static GRANT_COLUMNS: LazyLock<String> = LazyLock::new(|| {
    COLUMNS
        .split(", ")
        .map(|c| format!("u.{c}"))
        .collect::<Vec<_>>()
        .join(", ")
});

/// The account an authorization code (`table` "auth_codes", `key` "code_hash") or a refresh
/// token ("refresh_tokens", "token_hash") belongs to, read before the grant's write
/// transaction, so SQLite's one writer does only writes. `table` and `key` are the token
/// endpoint's constants, never input. A point read of the store: on SQLite on the calling
/// thread.
pub async fn find_by_grant(
    store: &Store,
    table: &'static str,
    key: &'static str,
    hash: &str,
) -> Result<Option<UserRow>, sqlx::Error> {
    let columns = &*GRANT_COLUMNS;
    let sql = format!(
        "SELECT {columns} FROM {table} g JOIN users u ON u.id = g.user_id WHERE g.{key} = $1"
    );
    if let Some(Ok(row)) = store
        .inline()
        .map(|r| r.row::<UserRow>(&sql, &[("$1", &hash as &dyn ToSql)]))
    {
        return Ok(row);
    }
    sqlx::query_as(&sql)
        .bind(hash)
        .fetch_optional(&mut *store.read().await?)
        .await
}

/// A username or email, folded, to its account: the username first.
static BY_LOGIN: LazyLock<String> = LazyLock::new(|| {
    format!(
        "SELECT {COLUMNS} FROM users WHERE username_key = $1 OR email_key = $1 \
         ORDER BY CASE WHEN username_key = $1 THEN 0 ELSE 1 END LIMIT 1"
    )
});

/// Finds a user by username or by email, case-insensitively.
pub async fn by_login(
    conn: &mut AnyConnection,
    login: &str,
) -> Result<Option<UserRow>, sqlx::Error> {
    sqlx::query_as(&BY_LOGIN)
        .bind(fold(login))
        .fetch_optional(conn)
        .await
}

/// [`by_login`] as a point read of the store, for password sign-in: on SQLite on the calling
/// thread, where the pool's reader would cost a hop to its worker thread for the query and
/// another for the check sqlx makes of a connection it takes back.
pub async fn find_by_login(store: &Store, login: &str) -> Result<Option<UserRow>, sqlx::Error> {
    let key = fold(login);
    if let Some(Ok(row)) = store
        .inline()
        .map(|r| r.row::<UserRow>(&BY_LOGIN, &[("$1", &key as &dyn ToSql)]))
    {
        return Ok(row);
    }
    by_login(&mut *store.read().await?, login).await
}

pub async fn by_email(
    conn: &mut AnyConnection,
    email: &str,
) -> Result<Option<UserRow>, sqlx::Error> {
    sqlx::query_as(&format!("SELECT {COLUMNS} FROM users WHERE email_key = $1"))
        .bind(fold(email))
        .fetch_optional(conn)
        .await
}

pub async fn list(conn: &mut AnyConnection, limit: i64) -> Result<Vec<UserRow>, sqlx::Error> {
    sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM users ORDER BY created_at, id LIMIT $1"
    ))
    .bind(limit)
    .fetch_all(conn)
    .await
}

pub async fn set_password(
    conn: &mut AnyConnection,
    id: &str,
    hash: &str,
    now: i64,
) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE users SET password_hash = $1, updated_at = $2 WHERE id = $3")
        .bind(hash)
        .bind(now)
        .bind(id)
        .execute(conn)
        .await?;
    Ok(())
}

/// Marks the email verified only if it is still `email` (a link sent to an old address does
/// not verify a new one). Returns whether it did.
pub async fn verify_email(
    conn: &mut AnyConnection,
    id: &str,
    email: &str,
    now: i64,
) -> Result<bool, sqlx::Error> {
    let done = sqlx::query(
        "UPDATE users SET email_verified = 1, updated_at = $1 WHERE id = $2 AND email_key = $3",
    )
    .bind(now)
    .bind(id)
    .bind(fold(email))
    .execute(conn)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Updates the display name and email; a changed email becomes unverified.
pub async fn update_profile(
    conn: &mut AnyConnection,
    id: &str,
    display_name: &str,
    email: &str,
    now: i64,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE users SET display_name = $1, \
         email_verified = CASE WHEN email_key = $3 THEN email_verified ELSE 0 END, \
         email = $2, email_key = $3, updated_at = $4 WHERE id = $5",
    )
    .bind(display_name)
    .bind(email)
    .bind(fold(email))
    .bind(now)
    .bind(id)
    .execute(conn)
    .await?;
    Ok(())
}

pub async fn delete(conn: &mut AnyConnection, id: &str) -> Result<bool, sqlx::Error> {
    let done = sqlx::query("DELETE FROM users WHERE id = $1")
        .bind(id)
        .execute(conn)
        .await?;
    Ok(done.rows_affected() == 1)
}
