//! The `sessions` table: browser sessions.

use std::sync::LazyLock;

use rusqlite::ToSql;
use sqlx::any::AnyArguments;
use sqlx::query::Query;
use sqlx::{Any, AnyConnection, FromRow};

use super::Store;
use super::audit::OwnedEvent;
use crate::config::DatabaseKind;

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

/// The start of every session write: the row's columns and their values, `$1`–`$7`.
macro_rules! insert_session {
    () => {
        "INSERT INTO sessions (id, user_id, data, created_at, updated_at, expires_at, user_agent, ip) \
         VALUES ($1, $2, $3, $4, $4, $5, $6, $7)"
    };
}

/// A session written whether or not its id is stored yet.
const UPSERT: &str = concat!(
    insert_session!(),
    " ON CONFLICT (id) DO UPDATE SET user_id = $2, data = $3, updated_at = $4, expires_at = $5, \
     user_agent = $6, ip = $7"
);

/// A new session, written only if its id is free.
const INSERT_NEW: &str = concat!(insert_session!(), " ON CONFLICT (id) DO NOTHING");

/// `session` (a statement above) and, by the same statement, an audit row (`$8`–`$15`) if it
/// wrote the session: PostgreSQL's data-modifying `WITH`, which SQLite lacks.
fn audited(session: &str) -> String {
    format!(
        "WITH s AS ({session} RETURNING id) {} SELECT $8, $9, $10, $11, $12, $13, $14, $15 FROM s",
        super::audit::INSERT
    )
}

static INSERT_NEW_AUDITED: LazyLock<String> = LazyLock::new(|| audited(INSERT_NEW));
static UPSERT_AUDITED: LazyLock<String> = LazyLock::new(|| audited(UPSERT));

fn session_query<'q>(sql: &'q str, s: &'q SaveSession<'_>) -> Query<'q, Any, AnyArguments<'q>> {
    sqlx::query(sql)
        .bind(s.id)
        .bind(s.user_id)
        .bind(s.data)
        .bind(s.now)
        .bind(s.expires_at)
        .bind(s.user_agent)
        .bind(s.ip)
}

pub async fn upsert(conn: &mut AnyConnection, s: &SaveSession<'_>) -> Result<(), sqlx::Error> {
    session_query(UPSERT, s).execute(conn).await?;
    Ok(())
}

/// Inserts a new session; `false` when the id is already taken (the caller draws another).
pub async fn insert_new(
    conn: &mut AnyConnection,
    s: &SaveSession<'_>,
) -> Result<bool, sqlx::Error> {
    let done = session_query(INSERT_NEW, s).execute(conn).await?;
    Ok(done.rows_affected() == 1)
}

/// Writes a session ([`insert_new`] when `new`, else [`upsert`]) and `event`, if any, in one
/// commit, and returns once that commit is durable; `false`, with nothing written, when `new`
/// and the id is taken. A sign-in writes its session and its `signed_in` row so: one flush of
/// the database's log where two sequential writes took two, and a crash cannot keep one of
/// them without the other.
///
/// On SQLite the transaction runs on the calling thread ([`Store::write_here`]) when sqlx's
/// one writer is free, and otherwise through that writer, where writes queue.
pub async fn save(
    store: &Store,
    s: &SaveSession<'_>,
    new: bool,
    event: Option<&OwnedEvent>,
) -> Result<bool, sqlx::Error> {
    if let Ok(written) = store.write_here(|conn| save_here(conn, s, new, event)) {
        store.flushed().await?;
        return Ok(written);
    }
    match event {
        Some(event) => save_audited(store, s, new, event).await,
        None => {
            // One statement: no transaction around it (a session's write is one round trip
            // on PostgreSQL, not three).
            let mut conn = store.autocommit().await?;
            let written = if new {
                insert_new(&mut conn, s).await?
            } else {
                upsert(&mut conn, s).await?;
                true
            };
            conn.durable().await?;
            Ok(written)
        }
    }
}

/// [`save`]'s transaction on an inline SQLite connection.
fn save_here(
    conn: &rusqlite::Connection,
    s: &SaveSession<'_>,
    new: bool,
    event: Option<&OwnedEvent>,
) -> rusqlite::Result<bool> {
    let written = conn
        .prepare_cached(if new { INSERT_NEW } else { UPSERT })?
        .execute(rusqlite::named_params! {
            "$1": s.id,
            "$2": s.user_id,
            "$3": s.data,
            "$4": s.now,
            "$5": s.expires_at,
            "$6": s.user_agent,
            "$7": s.ip,
        })?;
    if new && written != 1 {
        return Ok(false);
    }
    if let Some(event) = event {
        super::audit::insert_here(conn, event)?;
    }
    Ok(true)
}

/// [`save`] with an event through sqlx. On PostgreSQL one statement, a data-modifying `WITH`
/// (one round trip); SQLite has no such `WITH`, so there a transaction on its one writer.
async fn save_audited(
    store: &Store,
    s: &SaveSession<'_>,
    new: bool,
    event: &OwnedEvent,
) -> Result<bool, sqlx::Error> {
    match store.kind() {
        DatabaseKind::Postgres => {
            let sql = if new {
                &INSERT_NEW_AUDITED
            } else {
                &UPSERT_AUDITED
            };
            let mut conn = store.autocommit().await?;
            let done = super::audit::bind_event(session_query(sql, s), event)
                .execute(&mut *conn)
                .await?;
            conn.durable().await?;
            Ok(done.rows_affected() == 1)
        }
        DatabaseKind::Sqlite => {
            let mut tx = store.begin_write().await?;
            let session = if new { INSERT_NEW } else { UPSERT };
            let done = session_query(session, s).execute(&mut *tx).await?;
            if done.rows_affected() != 1 {
                tx.rollback().await?;
                return Ok(false);
            }
            super::audit::insert_many(&mut tx, std::slice::from_ref(event)).await?;
            tx.commit().await?;
            Ok(true)
        }
    }
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
