//! The `signing_keys` table.

use sqlx::{AnyConnection, FromRow};

/// A stored signing key, private part included (and never printed: see the `Debug` impl).
#[derive(Clone, FromRow)]
pub struct KeyRow {
    pub kid: String,
    pub generation: i64,
    pub algorithm: String,
    pub private_key: Vec<u8>,
    pub public_jwk: String,
    pub created_at: i64,
    pub active_from: i64,
    pub retired_at: Option<i64>,
    pub published_until: Option<i64>,
}

impl std::fmt::Debug for KeyRow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyRow")
            .field("kid", &self.kid)
            .field("generation", &self.generation)
            .field("algorithm", &self.algorithm)
            .field("private_key", &"<redacted>")
            .field("created_at", &self.created_at)
            .field("active_from", &self.active_from)
            .field("retired_at", &self.retired_at)
            .field("published_until", &self.published_until)
            .finish()
    }
}

const COLUMNS: &str = "kid, generation, algorithm, private_key, public_jwk, created_at, \
                       active_from, retired_at, published_until";

/// Every stored key, oldest generation first.
pub async fn list(conn: &mut AnyConnection) -> Result<Vec<KeyRow>, sqlx::Error> {
    sqlx::query_as::<_, KeyRow>(&format!(
        "SELECT {COLUMNS} FROM signing_keys ORDER BY generation"
    ))
    .fetch_all(conn)
    .await
}

pub async fn max_generation(conn: &mut AnyConnection) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar::<_, i64>("SELECT COALESCE(MAX(generation), 0) FROM signing_keys")
        .fetch_one(conn)
        .await
}

/// Inserts `key` (whose generation must be the current maximum plus one) and retires every
/// older key that would otherwise still sign after the new key's `active_from` — including one
/// whose retirement was scheduled for later by an earlier rotation — keeping each published for
/// `retain_secs` after that so the tokens it signed can still be verified. Run inside a write
/// transaction; a unique violation on the generation means another writer rotated first.
pub async fn insert_and_retire_older(
    conn: &mut AnyConnection,
    key: &KeyRow,
    retain_secs: i64,
) -> Result<(), sqlx::Error> {
    sqlx::query(&format!(
        "INSERT INTO signing_keys ({COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, NULL, NULL)"
    ))
    .bind(&key.kid)
    .bind(key.generation)
    .bind(&key.algorithm)
    .bind(&key.private_key)
    .bind(&key.public_jwk)
    .bind(key.created_at)
    .bind(key.active_from)
    .execute(&mut *conn)
    .await?;
    sqlx::query(
        "UPDATE signing_keys SET retired_at = $1, published_until = $2 \
         WHERE (retired_at IS NULL OR retired_at > $1) AND generation < $3",
    )
    .bind(key.active_from)
    .bind(key.active_from.saturating_add(retain_secs))
    .bind(key.generation)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// Replaces a key's stored private part (`old` → `new`: sealing a plain key), unless another
/// process did it first.
pub async fn replace_private_key(
    conn: &mut AnyConnection,
    kid: &str,
    old: &[u8],
    new: &[u8],
) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE signing_keys SET private_key = $1 WHERE kid = $2 AND private_key = $3")
        .bind(new)
        .bind(kid)
        .bind(old)
        .execute(conn)
        .await?;
    Ok(())
}

/// Deletes keys no longer published (their private part is not needed any more).
pub async fn prune(conn: &mut AnyConnection, now: i64) -> Result<u64, sqlx::Error> {
    let done = sqlx::query(
        "DELETE FROM signing_keys WHERE published_until IS NOT NULL AND published_until < $1",
    )
    .bind(now)
    .execute(conn)
    .await?;
    Ok(done.rows_affected())
}
