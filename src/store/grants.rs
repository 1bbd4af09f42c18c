//! Consents, authorization codes, refresh-token families and revoked access tokens.

use rusqlite::ToSql;
use sqlx::any::AnyRow;
use sqlx::{AnyConnection, FromRow, Row};

use super::Store;
use super::inline::FromSqlite;

// ----- consents -------------------------------------------------------------------------

/// The scopes a person has approved for a client (space-separated), if any.
const CONSENT: &str = "SELECT scopes FROM consents WHERE user_id = $1 AND client_id = $2";

pub async fn consent(
    conn: &mut AnyConnection,
    user_id: &str,
    client_id: &str,
) -> Result<Option<String>, sqlx::Error> {
    sqlx::query_scalar(CONSENT)
        .bind(user_id)
        .bind(client_id)
        .fetch_optional(conn)
        .await
}

/// [`consent`] as a point read of the store: on SQLite on the calling thread.
pub async fn find_consent(
    store: &Store,
    user_id: &str,
    client_id: &str,
) -> Result<Option<String>, sqlx::Error> {
    let inline = store.inline().map(|r| {
        r.row(
            CONSENT,
            &[("$1", &user_id as &dyn ToSql), ("$2", &client_id)],
        )
    });
    match inline {
        Some(Ok(found)) => Ok(found),
        _ => consent(&mut *store.read().await?, user_id, client_id).await,
    }
}

pub async fn save_consent(
    conn: &mut AnyConnection,
    user_id: &str,
    client_id: &str,
    scopes: &str,
    now: i64,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO consents (user_id, client_id, scopes, granted_at) VALUES ($1, $2, $3, $4) \
         ON CONFLICT (user_id, client_id) DO UPDATE SET scopes = $3, granted_at = $4",
    )
    .bind(user_id)
    .bind(client_id)
    .bind(scopes)
    .bind(now)
    .execute(conn)
    .await?;
    Ok(())
}

#[derive(Debug, Clone, FromRow)]
pub struct ConsentRow {
    pub client_id: String,
    pub client_name: String,
    pub scopes: String,
    pub granted_at: i64,
}

pub async fn consents_of(
    conn: &mut AnyConnection,
    user_id: &str,
) -> Result<Vec<ConsentRow>, sqlx::Error> {
    sqlx::query_as(
        "SELECT c.client_id, k.name AS client_name, c.scopes, c.granted_at FROM consents c \
         JOIN clients k ON k.id = c.client_id WHERE c.user_id = $1 ORDER BY c.granted_at DESC",
    )
    .bind(user_id)
    .fetch_all(conn)
    .await
}

/// Withdraws a person's approval of a client and ends that client's refresh tokens for them.
pub async fn revoke_consent(
    conn: &mut AnyConnection,
    user_id: &str,
    client_id: &str,
    now: i64,
) -> Result<bool, sqlx::Error> {
    let done = sqlx::query("DELETE FROM consents WHERE user_id = $1 AND client_id = $2")
        .bind(user_id)
        .bind(client_id)
        .execute(&mut *conn)
        .await?;
    revoke_where(
        conn,
        "user_id = $2 AND client_id = $3",
        &[user_id, client_id],
        now,
    )
    .await?;
    Ok(done.rows_affected() == 1)
}

// ----- authorization codes ----------------------------------------------------------------

#[derive(Debug, Clone, FromRow)]
pub struct CodeRow {
    pub grant_id: String,
    pub client_id: String,
    pub user_id: String,
    pub redirect_uri: String,
    pub code_challenge: Option<String>,
    pub nonce: Option<String>,
    pub scopes: String,
    pub auth_time: i64,
    pub amr: String,
    pub sid: String,
    pub idp: String,
    pub expires_at: i64,
}

/// A code to store; owned, so that a grant batch's work can hold it and run again.
#[derive(Clone)]
pub struct NewCode {
    pub code_hash: String,
    pub grant_id: String,
    pub client_id: String,
    pub user_id: String,
    pub redirect_uri: String,
    pub code_challenge: Option<String>,
    pub nonce: Option<String>,
    pub scopes: String,
    pub auth_time: i64,
    pub amr: String,
    pub sid: String,
    pub idp: String,
    pub now: i64,
    pub expires_at: i64,
}

pub async fn insert_code(conn: &mut AnyConnection, c: &NewCode) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO auth_codes (code_hash, grant_id, client_id, user_id, redirect_uri, code_challenge, \
         nonce, scopes, auth_time, amr, sid, created_at, expires_at, idp) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)",
    )
    .bind(&c.code_hash)
    .bind(&c.grant_id)
    .bind(&c.client_id)
    .bind(&c.user_id)
    .bind(&c.redirect_uri)
    .bind(&c.code_challenge)
    .bind(&c.nonce)
    .bind(&c.scopes)
    .bind(c.auth_time)
    .bind(&c.amr)
    .bind(&c.sid)
    .bind(c.now)
    .bind(c.expires_at)
    .bind(&c.idp)
    .execute(conn)
    .await?;
    Ok(())
}

/// What happened when a code was presented.
pub enum CodeUse {
    /// First use: the code's row (it is now marked used), its account when asked for, and
    /// whether the [`Successor`] offered was stored.
    Fresh(Box<CodeRow>, Option<Box<super::users::UserRow>>, bool),
    /// Used before: the grant it belonged to.
    Replayed {
        grant_id: String,
    },
    Unknown,
}

const USE_CODE: &str = "UPDATE auth_codes SET used_at = $1, access_jti = $3, access_exp = $4 \
     WHERE code_hash = $2 AND used_at IS NULL \
     RETURNING grant_id, client_id, user_id, redirect_uri, code_challenge, nonce, scopes, auth_time, \
     amr, sid, idp, expires_at";

/// [`USE_CODE`] that also reads the code's account, in the same statement (PostgreSQL: a
/// data-modifying `WITH`, which SQLite lacks). Deleting an account deletes its codes, so a
/// spent code always has one.
static USE_CODE_READING_USER: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    format!(
        "WITH used AS ({USE_CODE}) \
         SELECT g.grant_id, g.client_id, g.user_id, g.redirect_uri, g.code_challenge, g.nonce, \
         g.scopes, g.auth_time, g.amr, g.sid, g.idp, g.expires_at, {} \
         FROM used g JOIN users u ON u.id = g.user_id",
        &*super::users::GRANT_COLUMNS
    )
});

/// Marks the code used — in the same statement that checks it was unused — and returns it,
/// with its account when `read_user` (PostgreSQL, where each statement is a round trip).
/// The same statement records the access token the exchange is about to issue (`access_jti`,
/// `access_exp`), so a replay of the code can revoke it.
///
/// With `successor` (PostgreSQL only, with `read_user`), the same statement also stores the
/// exchange's refresh token when the code, as found, passes the checks [`Successor`] repeats.
pub async fn use_code(
    conn: &mut AnyConnection,
    code_hash: &str,
    now: i64,
    (access_jti, access_exp): (&str, i64),
    read_user: bool,
    successor: Option<&Successor<'_>>,
) -> Result<CodeUse, sqlx::Error> {
    let successor = successor.filter(|_| read_user);
    let sql = match (read_user, successor) {
        (true, Some(_)) => USE_CODE_ISSUING.as_str(),
        (true, None) => USE_CODE_READING_USER.as_str(),
        (false, _) => USE_CODE,
    };
    let mut query = sqlx::query(sql)
        .bind(now)
        .bind(code_hash)
        .bind(access_jti)
        .bind(access_exp);
    if let Some(s) = successor {
        query = query
            .bind(s.token_hash)
            .bind(s.expires_at)
            .bind(s.family_expires_at)
            .bind(s.client_id)
            .bind(s.redirect_uri)
            .bind(s.challenge);
    }
    let row: Option<AnyRow> = query.fetch_optional(&mut *conn).await?;
    if let Some(row) = row {
        let user = match read_user {
            true => Some(Box::new(super::users::UserRow::from_row(&row)?)),
            false => None,
        };
        let issued = match successor {
            Some(_) => row.try_get::<i64, _>("successor_stored")? > 0,
            None => false,
        };
        return Ok(CodeUse::Fresh(
            Box::new(CodeRow::from_row(&row)?),
            user,
            issued,
        ));
    }
    let grant: Option<String> =
        sqlx::query_scalar("SELECT grant_id FROM auth_codes WHERE code_hash = $1")
            .bind(code_hash)
            .fetch_optional(conn)
            .await?;
    Ok(grant.map_or(CodeUse::Unknown, |grant_id| CodeUse::Replayed { grant_id }))
}

/// Revokes everything issued from one grant: its refresh tokens and the access tokens issued
/// beside them and beside the code exchange.
pub async fn revoke_grant(
    conn: &mut AnyConnection,
    grant_id: &str,
    now: i64,
) -> Result<u64, sqlx::Error> {
    sqlx::query(
        "INSERT INTO revoked_jti (jti, expires_at) SELECT access_jti, access_exp FROM auth_codes \
         WHERE grant_id = $1 AND access_jti <> '' AND access_exp > $2 ON CONFLICT (jti) DO NOTHING",
    )
    .bind(grant_id)
    .bind(now)
    .execute(&mut *conn)
    .await?;
    revoke_where(conn, "family_id = $2", &[grant_id], now).await
}

// ----- refresh tokens ---------------------------------------------------------------------

#[derive(Debug, Clone, FromRow)]
pub struct RefreshRow {
    pub family_id: String,
    pub client_id: String,
    pub user_id: Option<String>,
    pub scopes: String,
    pub auth_time: i64,
    pub amr: String,
    pub sid: String,
    pub idp: String,
    pub expires_at: i64,
    pub family_expires_at: i64,
}

pub struct NewRefresh<'a> {
    pub token_hash: &'a str,
    pub family_id: &'a str,
    pub client_id: &'a str,
    pub user_id: Option<&'a str>,
    pub scopes: &'a str,
    pub auth_time: i64,
    pub amr: &'a str,
    pub sid: &'a str,
    pub now: i64,
    pub expires_at: i64,
    pub family_expires_at: i64,
    pub access_jti: &'a str,
    pub access_exp: i64,
    pub idp: &'a str,
}

/// The refresh token a code exchange will issue, offered to [`use_code`] so that on
/// PostgreSQL the statement that spends the code stores it too: one round trip instead of
/// two. The statement stores it only if the code was issued to `client_id` for
/// `redirect_uri`, has not expired, carries `offline_access`, and its PKCE challenge equals
/// `challenge` (the S256 of a well-formed verifier; `None` never matches). The caller still
/// makes every check itself and reconciles: it stores the token when the statement did not
/// and the exchange succeeds, and deletes it when the statement did and the exchange is
/// refused. SQL never decides alone what is issued.
pub struct Successor<'a> {
    pub token_hash: &'a str,
    pub expires_at: i64,
    pub family_expires_at: i64,
    pub client_id: &'a str,
    pub redirect_uri: &'a str,
    pub challenge: Option<&'a str>,
}

/// [`USE_CODE_READING_USER`] that also stores the [`Successor`] (`$5`–`$10`).
static USE_CODE_ISSUING: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    format!(
        "WITH used AS ({USE_CODE}), \
         successor AS (\
           INSERT INTO refresh_tokens (token_hash, family_id, client_id, user_id, scopes, \
           auth_time, amr, sid, created_at, expires_at, family_expires_at, access_jti, \
           access_exp, idp) \
           SELECT $5, grant_id, client_id, user_id, scopes, auth_time, amr, sid, $1, \
           LEAST($6, $7), $7, $3, $4, idp FROM used \
           WHERE client_id = $8 AND redirect_uri = $9 AND expires_at > $1 \
           AND code_challenge = $10 \
           AND 'offline_access' = ANY(string_to_array(scopes, ' ')) \
           RETURNING 1) \
         SELECT g.grant_id, g.client_id, g.user_id, g.redirect_uri, g.code_challenge, g.nonce, \
         g.scopes, g.auth_time, g.amr, g.sid, g.idp, g.expires_at, {}, \
         (SELECT count(*) FROM successor) AS successor_stored \
         FROM used g JOIN users u ON u.id = g.user_id",
        &*super::users::GRANT_COLUMNS
    )
});

/// Deletes a refresh token that a refused exchange's statement stored (see [`Successor`]).
pub async fn delete_refresh(conn: &mut AnyConnection, token_hash: &str) -> Result<(), sqlx::Error> {
    sqlx::query("DELETE FROM refresh_tokens WHERE token_hash = $1")
        .bind(token_hash)
        .execute(conn)
        .await?;
    Ok(())
}

pub async fn insert_refresh(
    conn: &mut AnyConnection,
    r: &NewRefresh<'_>,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO refresh_tokens (token_hash, family_id, client_id, user_id, scopes, auth_time, amr, sid, \
         created_at, expires_at, family_expires_at, access_jti, access_exp, idp) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)",
    )
    .bind(r.token_hash)
    .bind(r.family_id)
    .bind(r.client_id)
    .bind(r.user_id)
    .bind(r.scopes)
    .bind(r.auth_time)
    .bind(r.amr)
    .bind(r.sid)
    .bind(r.now)
    .bind(r.expires_at)
    .bind(r.family_expires_at)
    .bind(r.access_jti)
    .bind(r.access_exp)
    .bind(r.idp)
    .execute(conn)
    .await?;
    Ok(())
}

/// What happened when a refresh token was presented.
pub enum RefreshUse {
    /// Live and now spent: rotate it.
    Fresh(RefreshRow),
    /// Already used: someone replays a rotated token. The family must be revoked.
    Reused {
        family_id: String,
        client_id: String,
    },
    /// Revoked, expired, or never issued.
    Dead,
}

/// Spends a live refresh token of `client_id` in the same statement that checks it, so two
/// concurrent uses cannot both succeed. Another client's token is not touched.
pub async fn use_refresh(
    conn: &mut AnyConnection,
    token_hash: &str,
    client_id: &str,
    now: i64,
) -> Result<RefreshUse, sqlx::Error> {
    let row: Option<RefreshRow> = sqlx::query_as(
        "UPDATE refresh_tokens SET used_at = $1 WHERE token_hash = $2 AND client_id = $3 AND used_at IS NULL \
         AND revoked_at IS NULL AND expires_at > $1 \
         RETURNING family_id, client_id, user_id, scopes, auth_time, amr, sid, idp, expires_at, family_expires_at",
    )
    .bind(now)
    .bind(token_hash)
    .bind(client_id)
    .fetch_optional(&mut *conn)
    .await?;
    if let Some(row) = row {
        return Ok(RefreshUse::Fresh(row));
    }
    refresh_state(conn, token_hash).await
}

/// A refresh token's rotation, for [`rotate_refresh`].
pub struct Rotation<'a> {
    pub token_hash: &'a str,
    pub client_id: &'a str,
    pub now: i64,
    /// The successor's hash, its access token, and its expiry before the family's cap.
    pub next_hash: &'a str,
    pub next_expires_at: i64,
    pub access_jti: &'a str,
    pub access_exp: i64,
}

/// PostgreSQL: spends a live refresh token of `client_id`, stores its successor and reads the
/// account, in one statement (data-modifying `WITH`, which SQLite lacks): what
/// [`use_refresh`], [`insert_refresh`] and the account's read before the batch do in three
/// round trips. The successor carries the family over (RFC 6749 §6: the original grant's
/// scope). A token with no account is left alone, as `users::find_by_grant` leaves it.
/// `Ok(None)`: nothing was spent; [`refresh_state`] tells why.
pub async fn rotate_refresh(
    conn: &mut AnyConnection,
    r: &Rotation<'_>,
) -> Result<Option<(RefreshRow, super::users::UserRow)>, sqlx::Error> {
    static ROTATE: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
        format!(
            "WITH used AS (\
               UPDATE refresh_tokens SET used_at = $1 \
               WHERE token_hash = $2 AND client_id = $3 AND used_at IS NULL \
               AND revoked_at IS NULL AND expires_at > $1 \
               AND EXISTS (SELECT 1 FROM users WHERE users.id = refresh_tokens.user_id) \
               RETURNING family_id, client_id, user_id, scopes, auth_time, amr, sid, idp, \
               expires_at, family_expires_at), \
             successor AS (\
               INSERT INTO refresh_tokens (token_hash, family_id, client_id, user_id, scopes, \
               auth_time, amr, sid, created_at, expires_at, family_expires_at, access_jti, \
               access_exp, idp) \
               SELECT $4, family_id, client_id, user_id, scopes, auth_time, amr, sid, $1, \
               LEAST($5, family_expires_at), family_expires_at, $6, $7, idp FROM used) \
             SELECT g.family_id, g.client_id, g.user_id, g.scopes, g.auth_time, g.amr, g.sid, \
             g.idp, g.expires_at, g.family_expires_at, {} \
             FROM used g JOIN users u ON u.id = g.user_id",
            &*super::users::GRANT_COLUMNS
        )
    });
    let row: Option<AnyRow> = sqlx::query(&ROTATE)
        .bind(r.now)
        .bind(r.token_hash)
        .bind(r.client_id)
        .bind(r.next_hash)
        .bind(r.next_expires_at)
        .bind(r.access_jti)
        .bind(r.access_exp)
        .fetch_optional(conn)
        .await?;
    row.map(|row| {
        Ok((
            RefreshRow::from_row(&row)?,
            super::users::UserRow::from_row(&row)?,
        ))
    })
    .transpose()
}

/// Why a refresh token could not be spent: used before ([`RefreshUse::Reused`]) or not live.
pub async fn refresh_state(
    conn: &mut AnyConnection,
    token_hash: &str,
) -> Result<RefreshUse, sqlx::Error> {
    let found: Option<(String, String, Option<i64>)> = sqlx::query_as(
        "SELECT family_id, client_id, used_at FROM refresh_tokens WHERE token_hash = $1",
    )
    .bind(token_hash)
    .fetch_optional(conn)
    .await?;
    Ok(match found {
        Some((family_id, client_id, Some(_))) => RefreshUse::Reused {
            family_id,
            client_id,
        },
        _ => RefreshUse::Dead,
    })
}

/// A refresh token's state without using it (introspection, revocation).
#[derive(Debug, Clone, FromRow)]
pub struct RefreshInfo {
    pub family_id: String,
    pub client_id: String,
    pub user_id: Option<String>,
    pub scopes: String,
    pub created_at: i64,
    pub expires_at: i64,
    pub used_at: Option<i64>,
    pub revoked_at: Option<i64>,
}

pub async fn refresh_info(
    conn: &mut AnyConnection,
    token_hash: &str,
) -> Result<Option<RefreshInfo>, sqlx::Error> {
    sqlx::query_as(
        "SELECT family_id, client_id, user_id, scopes, created_at, expires_at, used_at, revoked_at \
         FROM refresh_tokens WHERE token_hash = $1",
    )
    .bind(token_hash)
    .fetch_optional(conn)
    .await
}

/// Revokes every refresh token matching `condition` (placeholders from `$2`) and the live
/// access tokens issued beside them.
async fn revoke_where(
    conn: &mut AnyConnection,
    condition: &str,
    args: &[&str],
    now: i64,
) -> Result<u64, sqlx::Error> {
    let insert = format!(
        "INSERT INTO revoked_jti (jti, expires_at) SELECT access_jti, access_exp FROM refresh_tokens \
         WHERE {condition} AND access_jti <> '' AND access_exp > $1 ON CONFLICT (jti) DO NOTHING"
    );
    let mut q = sqlx::query(&insert).bind(now);
    for a in args {
        q = q.bind(*a);
    }
    q.execute(&mut *conn).await?;
    let update = format!(
        "UPDATE refresh_tokens SET revoked_at = $1 WHERE {condition} AND revoked_at IS NULL"
    );
    let mut q = sqlx::query(&update).bind(now);
    for a in args {
        q = q.bind(*a);
    }
    Ok(q.execute(conn).await?.rows_affected())
}

pub async fn revoke_family(
    conn: &mut AnyConnection,
    family_id: &str,
    now: i64,
) -> Result<u64, sqlx::Error> {
    revoke_where(conn, "family_id = $2", &[family_id], now).await
}

// ----- revoked access tokens ----------------------------------------------------------------

pub async fn revoke_jti(
    conn: &mut AnyConnection,
    jti: &str,
    expires_at: i64,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO revoked_jti (jti, expires_at) VALUES ($1, $2) ON CONFLICT (jti) DO NOTHING",
    )
    .bind(jti)
    .bind(expires_at)
    .execute(conn)
    .await?;
    Ok(())
}

const JTI_REVOKED: &str = "SELECT expires_at FROM revoked_jti WHERE jti = $1";

pub async fn is_jti_revoked(conn: &mut AnyConnection, jti: &str) -> Result<bool, sqlx::Error> {
    let found: Option<i64> = sqlx::query_scalar(JTI_REVOKED)
        .bind(jti)
        .fetch_optional(conn)
        .await?;
    Ok(found.is_some())
}

/// [`is_jti_revoked`] as a point read of the store: on SQLite on the calling thread, on
/// PostgreSQL from the replica's mirror when it is current.
pub async fn jti_revoked(store: &Store, jti: &str) -> Result<bool, sqlx::Error> {
    if let Some(revoked) = store.mirror().and_then(|m| m.revoked(jti)) {
        return Ok(revoked);
    }
    if let Some(Ok(found)) = store
        .inline()
        .map(|r| r.exists(JTI_REVOKED, &[("$1", &jti as &dyn ToSql)]))
    {
        return Ok(found);
    }
    is_jti_revoked(&mut *store.read().await?, jti).await
}

/// A row read together with whether an access token's `jti` is revoked.
struct WithRevoked<R>(R, bool);

impl<'r, R: FromRow<'r, AnyRow>> FromRow<'r, AnyRow> for WithRevoked<R> {
    fn from_row(row: &'r AnyRow) -> Result<Self, sqlx::Error> {
        let revoked: i64 = row.try_get("revoked")?;
        Ok(Self(R::from_row(row)?, revoked != 0))
    }
}

impl<R: FromSqlite> FromSqlite for WithRevoked<R> {
    fn from_sqlite(row: &rusqlite::Row<'_>) -> rusqlite::Result<Self> {
        let revoked: i64 = row.get("revoked")?;
        Ok(Self(R::from_sqlite(row)?, revoked != 0))
    }
}

/// The query for [`find_with_revoked_jti`]: the row of `table` (its `columns`) whose `id` is
/// `$1`, and whether the access token `jti` `$2` is revoked. `table` and `columns` are the
/// store's constants.
pub(super) fn with_revoked_jti_sql(table: &str, columns: &str) -> String {
    format!(
        "SELECT {columns}, (SELECT COUNT(*) FROM revoked_jti WHERE jti = $2) AS revoked \
         FROM {table} WHERE id = $1"
    )
}

/// A row (the query of [`with_revoked_jti_sql`]) and whether the access token `jti` is
/// revoked, in one read: for the endpoints that need both on every call and answer from a
/// database across the network (introspection: the client; userinfo: the account). `None`
/// when there is no such row. A point read of the store: on SQLite on the calling thread.
pub(super) async fn find_with_revoked_jti<R>(
    store: &Store,
    sql: &str,
    id: &str,
    jti: &str,
) -> Result<Option<(R, bool)>, sqlx::Error>
where
    R: for<'r> FromRow<'r, AnyRow> + FromSqlite + Send + Unpin,
{
    let inline = store
        .inline()
        .map(|r| r.row(sql, &[("$1", &id as &dyn ToSql), ("$2", &jti)]));
    let row: Option<WithRevoked<R>> = match inline {
        Some(Ok(row)) => row,
        _ => {
            sqlx::query_as(sql)
                .bind(id)
                .bind(jti)
                .fetch_optional(&mut *store.read().await?)
                .await?
        }
    };
    Ok(row.map(|WithRevoked(row, revoked)| (row, revoked)))
}
