//! The `audit_events` table: append-only security events.

use serde::{Deserialize, Serialize};
use sqlx::any::AnyArguments;
use sqlx::query::Query;
use sqlx::{Any, AnyConnection, FromRow};

#[derive(Debug, Clone, Serialize, FromRow)]
pub struct AuditRow {
    pub id: i64,
    pub at: i64,
    pub kind: String,
    pub outcome: String,
    pub user_id: Option<String>,
    pub client_id: Option<String>,
    pub ip: String,
    pub user_agent: String,
    pub detail: String,
}

/// An event to record.
#[derive(Debug, Clone, Default)]
pub struct NewEvent<'a> {
    pub kind: &'a str,
    pub outcome: &'a str,
    pub user_id: Option<&'a str>,
    pub client_id: Option<&'a str>,
    pub ip: &'a str,
    pub user_agent: &'a str,
    pub detail: &'a str,
}

impl NewEvent<'_> {
    /// The event owned, recorded at `at`, for the batched writers.
    pub fn to_owned_at(&self, at: i64) -> OwnedEvent {
        OwnedEvent {
            kind: self.kind.to_owned(),
            outcome: self.outcome.to_owned(),
            user_id: self.user_id.map(str::to_owned),
            client_id: self.client_id.map(str::to_owned),
            ip: self.ip.to_owned(),
            user_agent: self.user_agent.to_owned(),
            detail: self.detail.to_owned(),
            at,
        }
    }
}

/// One row, `$1`–`$8` in [`INSERT`]'s column order.
const INSERT_ONE: &str = "INSERT INTO audit_events (at, kind, outcome, user_id, client_id, ip, \
     user_agent, detail) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)";

pub async fn insert(
    conn: &mut AnyConnection,
    e: &NewEvent<'_>,
    now: i64,
) -> Result<(), sqlx::Error> {
    sqlx::query(INSERT_ONE)
        .bind(now)
        .bind(e.kind)
        .bind(e.outcome)
        .bind(e.user_id)
        .bind(e.client_id)
        .bind(e.ip)
        .bind(e.user_agent)
        .bind(e.detail)
        .execute(conn)
        .await?;
    Ok(())
}

/// The latest `limit` events, newest last.
pub async fn tail(conn: &mut AnyConnection, limit: i64) -> Result<Vec<AuditRow>, sqlx::Error> {
    let mut rows: Vec<AuditRow> = sqlx::query_as(
        "SELECT id, at, kind, outcome, user_id, client_id, ip, user_agent, detail \
         FROM audit_events ORDER BY id DESC LIMIT $1",
    )
    .bind(limit)
    .fetch_all(conn)
    .await?;
    rows.reverse();
    Ok(rows)
}

/// An event owned, for the batched writers (`Store::append_audit`, `store::batch`): written
/// with [`insert_many`]. It also rides in a session record to its store
/// (`web::session::WebSession::audit_on_save`), hence `Serialize`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct OwnedEvent {
    pub kind: String,
    pub outcome: String,
    pub user_id: Option<String>,
    pub client_id: Option<String>,
    pub ip: String,
    pub user_agent: String,
    pub detail: String,
    pub at: i64,
}

/// The start of a statement writing rows in [`bind_event`]'s column order.
pub(super) const INSERT: &str =
    "INSERT INTO audit_events (at, kind, outcome, user_id, client_id, ip, user_agent, detail)";

/// Inserts `events` with one multi-row statement.
pub async fn insert_many(
    conn: &mut AnyConnection,
    events: &[OwnedEvent],
) -> Result<(), sqlx::Error> {
    if events.is_empty() {
        return Ok(());
    }
    let mut sql = format!("{INSERT} VALUES ");
    for i in 0..events.len() {
        let n = i * 8;
        if i > 0 {
            sql.push_str(", ");
        }
        sql.push_str(&format!(
            "(${}, ${}, ${}, ${}, ${}, ${}, ${}, ${})",
            n + 1,
            n + 2,
            n + 3,
            n + 4,
            n + 5,
            n + 6,
            n + 7,
            n + 8
        ));
    }
    let mut query = sqlx::query(&sql);
    for e in events {
        query = bind_event(query, e);
    }
    query.execute(conn).await?;
    Ok(())
}

/// Inserts `e` on an inline SQLite connection (`inline::Writer`).
pub(super) fn insert_here(conn: &rusqlite::Connection, e: &OwnedEvent) -> rusqlite::Result<()> {
    conn.prepare_cached(INSERT_ONE)?
        .execute(rusqlite::named_params! {
            "$1": e.at,
            "$2": e.kind,
            "$3": e.outcome,
            "$4": e.user_id,
            "$5": e.client_id,
            "$6": e.ip,
            "$7": e.user_agent,
            "$8": e.detail,
        })?;
    Ok(())
}

/// Binds `e`'s eight columns to `query`, in the order [`INSERT`] lists them.
pub fn bind_event<'q>(
    query: Query<'q, Any, AnyArguments<'q>>,
    e: &'q OwnedEvent,
) -> Query<'q, Any, AnyArguments<'q>> {
    query
        .bind(e.at)
        .bind(&e.kind)
        .bind(&e.outcome)
        .bind(e.user_id.as_deref())
        .bind(e.client_id.as_deref())
        .bind(&e.ip)
        .bind(&e.user_agent)
        .bind(&e.detail)
}
