//! The `sessions` table: browser sessions.

use rusqlite::ToSql;
use sqlx::{AnyConnection, FromRow};

use super::Store;

#[derive(Debug, Clone, FromRow)]
pub struct SessionRow {
    pub id: String,
    pub created_at: i64,
    pub updated_at: i64,
    pub user_agent: String,
    pub ip: String,
}

pub struct SaveSession<'a> {
    pub id: &'a str,
    pub user_id: Option<&'a str>,
    pub data: &'a str,
    pub expires_at: i64,
    pub user_agent: &'a str,
    pub ip: &'a str,
    pub now: i64,
}

pub async fn upsert(conn: &mut AnyConnection, s: &SaveSession<'_>) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO sessions (id, user_id, data, created_at, updated_at, expires_at, user_agent, ip) \
         VALUES ($1, $2, $3, $4, $4, $5, $6, $7) \
         ON CONFLICT (id) DO UPDATE SET user_id = $2, data = $3, updated_at = $4, expires_at = $5, \
         user_agent = $6, ip = $7",
    )
    .bind(s.id)
    .bind(s.user_id)
    .bind(s.data)
    .bind(s.now)
    .bind(s.expires_at)
    .bind(s.user_agent)
    .bind(s.ip)
    .execute(conn)
    .await?;
    Ok(())
}

/// Inserts a new session; `false` when the id is already taken (the caller draws another).
pub async fn insert_new(
    conn: &mut AnyConnection,
    s: &SaveSession<'_>,
) -> Result<bool, sqlx::Error> {
    let done = sqlx::query(
        "INSERT INTO sessions (id, user_id, data, created_at, updated_at, expires_at, user_agent, ip) \
         VALUES ($1, $2, $3, $4, $4, $5, $6, $7) ON CONFLICT (id) DO NOTHING",
    )
    .bind(s.id)
    .bind(s.user_id)
    .bind(s.data)
    .bind(s.now)
    .bind(s.expires_at)
    .bind(s.user_agent)
    .bind(s.ip)
    .execute(conn)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// The data of a live session.
const LOAD: &str = "SELECT data, expires_at FROM sessions WHERE id = $1 AND expires_at > $2";

/// A live session's data and expiry. A point read of the store: on SQLite on the calling
/// thread.
pub async fn load(store: &Store, id: &str, now: i64) -> Result<Option<(String, i64)>, sqlx::Error> {
    let inline = store
        .inline()
        .map(|r| r.row(LOAD, &[("$1", &id as &dyn ToSql), ("$2", &now)]));
    match inline {
        Some(Ok(found)) => Ok(found),
        _ => {
            sqlx::query_as(LOAD)
                .bind(id)
                .bind(now)
                .fetch_optional(&mut *store.read().await?)
                .await
        }
    }
}

pub async fn delete(conn: &mut AnyConnection, id: &str) -> Result<(), sqlx::Error> {
    sqlx::query("DELETE FROM sessions WHERE id = $1")
        .bind(id)
        .execute(conn)
        .await?;
    Ok(())
}

/// A user's live sessions, most recently used first.
pub async fn for_user(
    conn: &mut AnyConnection,
    user_id: &str,
    now: i64,
) -> Result<Vec<SessionRow>, sqlx::Error> {
    sqlx::query_as(
        "SELECT id, created_at, updated_at, user_agent, ip FROM sessions \
         WHERE user_id = $1 AND expires_at > $2 ORDER BY updated_at DESC",
    )
    .bind(user_id)
    .bind(now)
    .fetch_all(conn)
    .await
}

/// Ends one of a user's sessions; returns whether it existed.
pub async fn delete_for_user(
    conn: &mut AnyConnection,
    user_id: &str,
    id: &str,
) -> Result<bool, sqlx::Error> {
    let done = sqlx::query("DELETE FROM sessions WHERE user_id = $1 AND id = $2")
        .bind(user_id)
        .bind(id)
        .execute(conn)
        .await?;
    Ok(done.rows_affected() == 1)
}

/// Ends every session of a user except `keep` (the caller's own, when given).
pub async fn delete_all_for_user(
    conn: &mut AnyConnection,
    user_id: &str,
    keep: Option<&str>,
) -> Result<u64, sqlx::Error> {
    let done = sqlx::query("DELETE FROM sessions WHERE user_id = $1 AND id <> $2")
        .bind(user_id)
        .bind(keep.unwrap_or(""))
        .execute(conn)
        .await?;
    Ok(done.rows_affected())
}
