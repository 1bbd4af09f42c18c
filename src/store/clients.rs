//! The `clients` table.

use std::sync::LazyLock;

use sqlx::{AnyConnection, FromRow};

use super::Store;
use super::inline::FromSqlite;
use super::mirror::Lookup;

#[derive(Clone, FromRow)]
pub struct ClientRow {
    pub id: String,
    pub name: String,
    pub secret_hash: Option<String>,
    pub public: i64,
    pub redirect_uris: String,
    pub post_logout_redirect_uris: String,
    pub grant_types: String,
    pub scopes: String,
    pub auth_method: String,
    pub skip_consent: i64,
    pub created_at: i64,
    pub updated_at: i64,
}

impl FromSqlite for ClientRow {
    fn from_sqlite(row: &rusqlite::Row<'_>) -> rusqlite::Result<Self> {
        Ok(Self {
            id: row.get("id")?,
            name: row.get("name")?,
            secret_hash: row.get("secret_hash")?,
            public: row.get("public")?,
            redirect_uris: row.get("redirect_uris")?,
            post_logout_redirect_uris: row.get("post_logout_redirect_uris")?,
            grant_types: row.get("grant_types")?,
            scopes: row.get("scopes")?,
            auth_method: row.get("auth_method")?,
            skip_consent: row.get("skip_consent")?,
            created_at: row.get("created_at")?,
            updated_at: row.get("updated_at")?,
        })
    }
}

impl std::fmt::Debug for ClientRow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientRow")
            .field("id", &self.id)
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

/// A client as the rules see it, JSON columns decoded.
#[derive(Debug, Clone)]
pub struct Client {
    pub id: String,
    pub name: String,
    pub secret_hash: Option<String>,
    pub public: bool,
    pub redirect_uris: Vec<String>,
    pub post_logout_redirect_uris: Vec<String>,
    pub grant_types: Vec<String>,
    pub scopes: Vec<String>,
    pub auth_method: String,
    pub skip_consent: bool,
    pub created_at: i64,
}

impl From<ClientRow> for Client {
    fn from(r: ClientRow) -> Self {
        let list = |s: &str| serde_json::from_str::<Vec<String>>(s).unwrap_or_default();
        Self {
            redirect_uris: list(&r.redirect_uris),
            post_logout_redirect_uris: list(&r.post_logout_redirect_uris),
            grant_types: list(&r.grant_types),
            scopes: list(&r.scopes),
            id: r.id,
            name: r.name,
            secret_hash: r.secret_hash,
            public: r.public != 0,
            auth_method: r.auth_method,
            skip_consent: r.skip_consent != 0,
            created_at: r.created_at,
        }
    }
}

impl Client {
    pub fn allows_grant(&self, grant: &str) -> bool {
        self.grant_types.iter().any(|g| g == grant)
    }
}

const COLUMNS: &str = "id, name, secret_hash, public, redirect_uris, post_logout_redirect_uris, \
                       grant_types, scopes, auth_method, skip_consent, created_at, updated_at";

fn json(list: &[String]) -> String {
    serde_json::to_string(list).unwrap_or_else(|_| "[]".into())
}

/// Inserts or replaces a client (the config file's clients are upserted at every start).
pub async fn upsert(conn: &mut AnyConnection, c: &Client, now: i64) -> Result<(), sqlx::Error> {
    sqlx::query(&format!(
        "INSERT INTO clients ({COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $11) \
         ON CONFLICT (id) DO UPDATE SET name = $2, secret_hash = $3, public = $4, redirect_uris = $5, \
         post_logout_redirect_uris = $6, grant_types = $7, scopes = $8, auth_method = $9, \
         skip_consent = $10, updated_at = $11"
    ))
    .bind(&c.id)
    .bind(&c.name)
    .bind(&c.secret_hash)
    .bind(i64::from(c.public))
    .bind(json(&c.redirect_uris))
    .bind(json(&c.post_logout_redirect_uris))
    .bind(json(&c.grant_types))
    .bind(json(&c.scopes))
    .bind(&c.auth_method)
    .bind(i64::from(c.skip_consent))
    .bind(now)
    .execute(conn)
    .await?;
    Ok(())
}

static BY_ID: LazyLock<String> =
    LazyLock::new(|| format!("SELECT {COLUMNS} FROM clients WHERE id = $1"));

static BY_ID_WITH_REVOKED_JTI: LazyLock<String> =
    LazyLock::new(|| super::grants::with_revoked_jti_sql("clients", COLUMNS));

pub async fn by_id(conn: &mut AnyConnection, id: &str) -> Result<Option<Client>, sqlx::Error> {
    let row: Option<ClientRow> = sqlx::query_as(&BY_ID).bind(id).fetch_optional(conn).await?;
    Ok(row.map(Client::from))
}

/// [`by_id`] as a point read of the store: on SQLite on the calling thread, on PostgreSQL
/// from the replica's mirror when it holds the client.
pub async fn find(store: &Store, id: &str) -> Result<Option<Client>, sqlx::Error> {
    if let Some(Ok(row)) = store
        .inline()
        .map(|r| r.row::<ClientRow>(&BY_ID, &[("$1", &id as &dyn rusqlite::ToSql)]))
    {
        return Ok(row.map(Client::from));
    }
    let generation = match store.mirror().map(|m| m.client(id)) {
        Some(Lookup::Known(client)) => return Ok(Some(client)),
        Some(Lookup::Unknown { generation }) => Some(generation),
        Some(Lookup::Untrusted) | None => None,
    };
    let found = by_id(&mut *store.read().await?, id).await?;
    if let (Some(generation), Some(client), Some(mirror)) = (generation, &found, store.mirror()) {
        mirror.keep_client(generation, client);
    }
    Ok(found)
}

/// The client `id` and whether the access token `jti` is revoked, in one read (for
/// introspection, which needs both): on SQLite on the calling thread; on PostgreSQL from the
/// replica's mirror when it is current, else in one round trip.
pub async fn find_with_revoked_jti(
    store: &Store,
    id: &str,
    jti: &str,
) -> Result<Option<(Client, bool)>, sqlx::Error> {
    if let Some(revoked) = store.mirror().and_then(|m| m.revoked(jti)) {
        return Ok(find(store, id).await?.map(|client| (client, revoked)));
    }
    let found =
        super::grants::find_with_revoked_jti::<ClientRow>(store, &BY_ID_WITH_REVOKED_JTI, id, jti);
    Ok(found
        .await?
        .map(|(row, revoked)| (Client::from(row), revoked)))
}

pub async fn list(conn: &mut AnyConnection) -> Result<Vec<Client>, sqlx::Error> {
    let rows: Vec<ClientRow> = sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM clients ORDER BY created_at, id"
    ))
    .fetch_all(conn)
    .await?;
    Ok(rows.into_iter().map(Client::from).collect())
}

pub async fn set_secret(
    conn: &mut AnyConnection,
    id: &str,
    hash: &str,
    now: i64,
) -> Result<bool, sqlx::Error> {
    let done = sqlx::query(
        "UPDATE clients SET secret_hash = $1, updated_at = $2 WHERE id = $3 AND public = 0",
    )
    .bind(hash)
    .bind(now)
    .bind(id)
    .execute(conn)
    .await?;
    Ok(done.rows_affected() == 1)
}

pub async fn delete(conn: &mut AnyConnection, id: &str) -> Result<bool, sqlx::Error> {
    let done = sqlx::query("DELETE FROM clients WHERE id = $1")
        .bind(id)
        .execute(conn)
        .await?;
    Ok(done.rows_affected() == 1)
}
