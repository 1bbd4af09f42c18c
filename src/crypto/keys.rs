//! The signing key ring: RSA keys stored in the database, published as a JWKS, rotated on a
//! schedule, and agreed on by every replica through the database alone.
//!
//! Each key moves through the same life: *pending* (published, not yet signing) from creation
//! until `active_from`; *signing* until a newer key takes over at its own `active_from`, which
//! becomes this key's `retired_at`; *retired* (published, no longer signing) until
//! `published_until` = `retired_at` + the longest JWT lifetime + a grace period, when the last
//! token it signed has expired; then it is pruned.
//!
//! The signing key at time `t` is, among the keys with `active_from <= t` that are not retired
//! at `t`, the one of the highest generation. Every replica computes that from the same rows,
//! so all of them agree without talking to each other. A rotation inserts generation
//! `max + 1`; the unique constraint on `generation` makes concurrent rotations (two replicas
//! on a schedule, or the CLI) collapse into one.

use std::sync::{Arc, RwLock};
use std::time::Duration;

use aws_lc_rs::encoding::AsDer;
use aws_lc_rs::rsa::{KeyPair, KeySize, PublicKeyComponents};
use aws_lc_rs::signature::KeyPair as _;
use serde::Serialize;
use tokio_util::sync::CancellationToken;

use super::sealed::{self, MasterKey};
use super::{b64url, jwt, sha256};
use crate::config::Config;
use crate::store::{self, Store, keys::KeyRow};
use crate::web::CachedJson;

pub const ALGORITHM: &str = "RS256";

/// The rules the ring follows, taken from the configuration.
#[derive(Debug, Clone)]
pub struct KeyPolicy {
    pub rsa_bits: u32,
    pub rotate_after: Duration,
    pub prepublish: Duration,
    /// How long a key stays published after it stops signing.
    pub retain: Duration,
    /// `Cache-Control: max-age` of the JWKS.
    pub max_age: Duration,
    /// Seals the private keys in the database (`crypto::sealed`); none: stored plain.
    pub master: Option<Arc<MasterKey>>,
}

impl KeyPolicy {
    pub fn from_config(config: &Config) -> Result<Self, KeyError> {
        let master = config
            .master_key()
            .map_err(|e| KeyError::MasterKey(e.to_string()))?
            .map(Arc::new);
        Ok(Self {
            rsa_bits: config.keys.rsa_bits,
            rotate_after: config.keys.rotate_after,
            prepublish: config.keys.prepublish,
            retain: config.max_jwt_ttl().saturating_add(config.keys.grace),
            max_age: config.http.metadata_max_age,
            master,
        })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    #[error("key generation failed")]
    Generate,
    #[error("no usable signing key")]
    NoKey,
    #[error("master key: {0}")]
    MasterKey(String),
    #[error(
        "the stored signing keys are encrypted and no master key is set: set TESSERA_MASTER_KEY (or master_key_file) to the key they were encrypted with"
    )]
    Sealed,
    #[error("the stored signing keys cannot be decrypted with this master key")]
    WrongMasterKey,
    #[error(transparent)]
    Sign(#[from] jwt::SignError),
}

/// A key loaded into memory, ready to sign.
pub struct LiveKey {
    pub kid: String,
    pub generation: i64,
    pub created_at: i64,
    pub active_from: i64,
    pub retired_at: Option<i64>,
    pub published_until: Option<i64>,
    pair: KeyPair,
    /// The public key, parsed for `jsonwebtoken` verification.
    decoding: jsonwebtoken::DecodingKey,
}

impl LiveKey {
    fn signs_at(&self, t: i64) -> bool {
        self.active_from <= t && self.retired_at.is_none_or(|r| t < r)
    }

    fn published_at(&self, t: i64) -> bool {
        self.published_until.is_none_or(|until| t < until)
    }

    /// Signs `claims` as an RS256 JWT under this key's `kid`.
    pub fn sign(&self, typ: &str, claims: &impl Serialize) -> Result<String, jwt::SignError> {
        jwt::sign_rs256(&self.pair, &self.kid, typ, claims)
    }
}

/// Where a key is in its life at a given time (for `tessera keys list`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum KeyState {
    Pending,
    Signing,
    Retired,
    Expired,
}

/// What the ring holds between refreshes.
struct Snapshot {
    /// Every stored key, by generation.
    keys: Vec<Arc<LiveKey>>,
    /// The kids published when the JWKS was built; a change rebuilds it.
    published: Vec<String>,
    jwks: Arc<CachedJson>,
}

pub struct KeyRing {
    store: Store,
    policy: KeyPolicy,
    snapshot: RwLock<Arc<Snapshot>>,
}

/// A JWK as published (RFC 7517 §4, RFC 7518 §6.3.1): public parts only.
#[derive(Debug, Clone, Serialize, serde::Deserialize, PartialEq, Eq)]
pub struct PublicJwk {
    pub kty: String,
    pub kid: String,
    #[serde(rename = "use")]
    pub use_: String,
    pub alg: String,
    pub n: String,
    pub e: String,
}

impl PublicJwk {
    fn of(pair: &KeyPair) -> Self {
        let components = PublicKeyComponents::<Vec<u8>>::from(pair.public_key());
        let n = b64url(&components.n);
        let e = b64url(&components.e);
        Self {
            kid: thumbprint(&n, &e),
            kty: "RSA".into(),
            use_: "sig".into(),
            alg: ALGORITHM.into(),
            n,
            e,
        }
    }
}

/// The RFC 7638 JWK thumbprint of an RSA public key: SHA-256 over the required members in
/// lexicographic order with no white space, base64url-encoded.
pub fn thumbprint(n: &str, e: &str) -> String {
    b64url(sha256(format!(r#"{{"e":"{e}","kty":"RSA","n":"{n}"}}"#)))
}

impl KeyRing {
    /// Loads the keys, generating the first one when the table is empty.
    pub async fn load(store: Store, policy: KeyPolicy) -> Result<Self, KeyError> {
        let ring = Self {
            store,
            policy,
            snapshot: RwLock::new(Arc::new(Snapshot::empty())),
        };
        let rows = ring.rows().await?;
        if rows.is_empty() {
            // First start: the key signs at once, as there is nothing yet to verify. Several
            // replicas starting together on an empty database add one key between them.
            ring.add_key(Duration::ZERO, Some(0)).await?;
        }
        match &ring.policy.master {
            Some(master) => ring.seal_plain_keys(master, &rows).await?,
            None => tracing::warn!(
                "the private signing keys are stored unencrypted: set TESSERA_MASTER_KEY (32 bytes, base64) to encrypt them"
            ),
        }
        // A stored key the ring cannot read at all means a missing or wrong master key: say so
        // now rather than fail every token request.
        let readable = rows
            .iter()
            .any(|r| private_pkcs8(r, ring.policy.master.as_deref()).is_ok());
        if let Some(row) = rows.first().filter(|_| !readable) {
            return Err(private_pkcs8(row, ring.policy.master.as_deref())
                .err()
                .unwrap_or(KeyError::NoKey));
        }
        ring.refresh().await?;
        Ok(ring)
    }

    fn current(&self) -> Arc<Snapshot> {
        match self.snapshot.read() {
            Ok(guard) => guard.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    fn replace(&self, next: Snapshot) {
        let next = Arc::new(next);
        match self.snapshot.write() {
            Ok(mut guard) => *guard = next,
            Err(poisoned) => *poisoned.into_inner() = next,
        }
    }

    /// The key that signs at time `now`.
    pub fn signer_at(&self, now: i64) -> Result<Arc<LiveKey>, KeyError> {
        let snapshot = self.current();
        let key = snapshot
            .keys
            .iter()
            .rev()
            .find(|k| k.signs_at(now))
            // Only reachable if clocks went backwards past a key's activation: sign with the
            // newest key that has ever been active rather than fail.
            .or_else(|| snapshot.keys.iter().rev().find(|k| k.active_from <= now))
            .ok_or(KeyError::NoKey)?;
        Ok(key.clone())
    }

    /// The key that signs now.
    pub fn signer(&self) -> Result<Arc<LiveKey>, KeyError> {
        self.signer_at(store::now_unix())
    }

    /// Signs `claims` with the current key.
    pub fn sign(&self, typ: &str, claims: &impl Serialize) -> Result<String, KeyError> {
        Ok(self.signer()?.sign(typ, claims)?)
    }

    /// The verification key for `kid`, if that key is published now.
    pub fn decoding_key(&self, kid: &str) -> Option<jsonwebtoken::DecodingKey> {
        let now = store::now_unix();
        self.current()
            .keys
            .iter()
            .find(|k| k.kid == kid && k.published_at(now))
            .map(|k| k.decoding.clone())
    }

    /// The JWKS document, built once per change of the published set.
    pub fn jwks(&self) -> Arc<CachedJson> {
        self.current().jwks.clone()
    }

    /// Re-reads the table: runs a scheduled rotation when one is due, prunes keys that are no
    /// longer published, and rebuilds the JWKS when the published set changed.
    pub async fn refresh(&self) -> Result<(), KeyError> {
        let now = store::now_unix();
        let mut rows = self.rows().await?;
        if let Some(newest) = rows.iter().max_by_key(|r| r.generation)
            && now.saturating_sub(newest.created_at) >= secs(self.policy.rotate_after)
        {
            tracing::info!("scheduled key rotation is due");
            // Only if nobody rotated since we looked: another replica may have done it
            // between our read and our write.
            self.add_key(self.policy.prepublish, Some(newest.generation))
                .await?;
            rows = self.rows().await?;
        }
        if rows
            .iter()
            .any(|r| r.published_until.is_some_and(|u| u < now))
        {
            let mut tx = self.store.begin_write().await?;
            let pruned = store::keys::prune(&mut tx, now).await?;
            tx.commit().await?;
            if pruned > 0 {
                tracing::info!(pruned, "pruned signing keys that are no longer published");
            }
            rows = self.rows().await?;
        }
        self.install(rows, now);
        Ok(())
    }

    /// Builds a new snapshot from `rows` unless nothing visible changed.
    fn install(&self, rows: Vec<KeyRow>, now: i64) {
        let old = self.current();
        let unchanged = old.keys.len() == rows.len()
            && old.keys.iter().zip(&rows).all(|(k, r)| {
                k.kid == r.kid
                    && k.retired_at == r.retired_at
                    && k.published_until == r.published_until
            });
        let published: Vec<String> = rows
            .iter()
            .filter(|r| r.published_until.is_none_or(|u| now < u))
            .map(|r| r.kid.clone())
            .collect();
        if unchanged && old.published == published {
            return;
        }
        let keys: Vec<Arc<LiveKey>> = rows
            .into_iter()
            .filter_map(|row| match parse_row(row, self.policy.master.as_deref()) {
                Ok(key) => Some(Arc::new(key)),
                Err(kid) => {
                    tracing::error!(
                        kid,
                        "stored signing key is unreadable or does not match its kid; skipped"
                    );
                    None
                }
            })
            .collect();
        let jwks = build_jwks(&keys, now, self.policy.max_age);
        tracing::info!(
            keys = keys.len(),
            published = published.len(),
            signing = keys
                .iter()
                .rev()
                .find(|k| k.signs_at(now))
                .map(|k| k.kid.as_str())
                .unwrap_or("none"),
            "signing key set loaded"
        );
        self.replace(Snapshot {
            keys,
            published,
            jwks,
        });
    }

    /// Generates a key and stores it; it starts signing `prepublish` from now. Returns the new
    /// row, or `None` when another replica (or the CLI) rotated at the same moment, in which
    /// case its key is used instead.
    pub async fn rotate(&self) -> Result<Option<KeyRow>, KeyError> {
        let row = self.add_key(self.policy.prepublish, None).await?;
        self.refresh().await?;
        Ok(row)
    }

    /// Adds a key that signs `prepublish` from now. With `if_newest = Some(g)`, only when the
    /// newest stored generation is still `g` (a compare-and-set, so that a decision taken on
    /// a stale read does not rotate twice); otherwise unconditionally.
    async fn add_key(
        &self,
        prepublish: Duration,
        if_newest: Option<i64>,
    ) -> Result<Option<KeyRow>, KeyError> {
        let bits = self.policy.rsa_bits;
        let (pkcs8, jwk) = tokio::task::spawn_blocking(move || generate(bits))
            .await
            .map_err(|_| KeyError::Generate)??;
        let private_key = match &self.policy.master {
            Some(master) => master
                .seal(&pkcs8, &jwk.kid)
                .map_err(|_| KeyError::Generate)?,
            None => pkcs8,
        };
        let now = store::now_unix();
        let mut tx = self.store.begin_write().await?;
        let newest = store::keys::max_generation(&mut tx).await?;
        if if_newest.is_some_and(|expected| expected != newest) {
            tracing::info!("another replica added a signing key first; using theirs");
            return Ok(None);
        }
        let generation = newest + 1;
        let row = KeyRow {
            kid: jwk.kid.clone(),
            generation,
            algorithm: ALGORITHM.into(),
            private_key,
            public_jwk: serde_json::to_string(&jwk).map_err(|_| KeyError::Generate)?,
            created_at: now,
            active_from: now.saturating_add(secs(prepublish)),
            retired_at: None,
            published_until: None,
        };
        let inserted =
            store::keys::insert_and_retire_older(&mut tx, &row, secs(self.policy.retain)).await;
        match inserted {
            Ok(()) => {
                tx.commit().await?;
                tracing::info!(
                    kid = row.kid,
                    generation,
                    active_from = row.active_from,
                    "new signing key"
                );
                Ok(Some(row))
            }
            Err(e) if store::is_unique_violation(&e) => {
                tracing::info!(
                    "another replica added a signing key at the same time; using theirs"
                );
                Ok(None)
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Seals every key still stored plain (written before a master key was set).
    async fn seal_plain_keys(&self, master: &MasterKey, rows: &[KeyRow]) -> Result<(), KeyError> {
        for row in rows.iter().filter(|r| !sealed::is_sealed(&r.private_key)) {
            let sealed = master
                .seal(&row.private_key, &row.kid)
                .map_err(|_| KeyError::Generate)?;
            let mut tx = self.store.begin_write().await?;
            store::keys::replace_private_key(&mut tx, &row.kid, &row.private_key, &sealed).await?;
            tx.commit().await?;
            tracing::info!(kid = row.kid, "signing key encrypted with the master key");
        }
        Ok(())
    }

    async fn rows(&self) -> Result<Vec<KeyRow>, KeyError> {
        let mut conn = self.store.reader().acquire().await?;
        Ok(store::keys::list(&mut conn).await?)
    }

    /// Keeps the ring fresh until `shutdown`: every `interval` it re-reads the table, which is
    /// how a rotation done by another replica or the CLI reaches this one.
    pub fn spawn_refresh(
        self: Arc<Self>,
        interval: Duration,
        shutdown: CancellationToken,
    ) -> tokio::task::JoinHandle<()> {
        tokio::spawn(async move {
            let mut ticker = tokio::time::interval(interval);
            ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            ticker.tick().await;
            loop {
                tokio::select! {
                    () = shutdown.cancelled() => break,
                    _ = ticker.tick() => {
                        if let Err(error) = self.refresh().await {
                            tracing::warn!(%error, "could not refresh signing keys; keeping the current set");
                        }
                    }
                }
            }
        })
    }
}

impl Snapshot {
    fn empty() -> Self {
        Self {
            keys: Vec::new(),
            published: Vec::new(),
            jwks: Arc::new(CachedJson::new(b"{\"keys\":[]}".to_vec(), Duration::ZERO)),
        }
    }
}

/// Where `row` is in its life at `now`, given which key signs then.
pub fn state_of(row: &KeyRow, now: i64, signing_kid: Option<&str>) -> KeyState {
    if row.published_until.is_some_and(|u| u <= now) {
        KeyState::Expired
    } else if row
        .retired_at
        .is_some_and(|r| r <= now || r <= row.active_from)
    {
        // Retired, or overtaken before it ever signed.
        KeyState::Retired
    } else if row.active_from > now {
        KeyState::Pending
    } else if signing_kid == Some(row.kid.as_str()) {
        KeyState::Signing
    } else {
        KeyState::Retired
    }
}

/// The kid that signs at `now` according to `rows` (the same rule as [`KeyRing::signer_at`]).
pub fn signing_kid(rows: &[KeyRow], now: i64) -> Option<&str> {
    rows.iter()
        .filter(|r| r.active_from <= now && r.retired_at.is_none_or(|t| now < t))
        .max_by_key(|r| r.generation)
        .map(|r| r.kid.as_str())
}

fn generate(bits: u32) -> Result<(Vec<u8>, PublicJwk), KeyError> {
    let size = match bits {
        3072 => KeySize::Rsa3072,
        4096 => KeySize::Rsa4096,
        _ => KeySize::Rsa2048,
    };
    let pair = KeyPair::generate(size).map_err(|_| KeyError::Generate)?;
    let der =
        AsDer::<aws_lc_rs::encoding::Pkcs8V1Der>::as_der(&pair).map_err(|_| KeyError::Generate)?;
    Ok((der.as_ref().to_vec(), PublicJwk::of(&pair)))
}

/// The PKCS#8 document of a stored key: opened with the master key when sealed.
fn private_pkcs8(row: &KeyRow, master: Option<&MasterKey>) -> Result<Vec<u8>, KeyError> {
    if !sealed::is_sealed(&row.private_key) {
        return Ok(row.private_key.clone());
    }
    let master = master.ok_or(KeyError::Sealed)?;
    master
        .open(&row.private_key, &row.kid)
        .ok_or(KeyError::WrongMasterKey)
}

/// Parses a stored key and checks that it is the key its kid names.
fn parse_row(row: KeyRow, master: Option<&MasterKey>) -> Result<LiveKey, String> {
    let pkcs8 = private_pkcs8(&row, master).map_err(|_| row.kid.clone())?;
    let pair = KeyPair::from_pkcs8(&pkcs8).map_err(|_| row.kid.clone())?;
    if PublicJwk::of(&pair).kid != row.kid {
        return Err(row.kid);
    }
    let jwk = PublicJwk::of(&pair);
    let decoding = jsonwebtoken::DecodingKey::from_rsa_components(&jwk.n, &jwk.e)
        .map_err(|_| row.kid.clone())?;
    Ok(LiveKey {
        decoding,
        kid: row.kid,
        generation: row.generation,
        created_at: row.created_at,
        active_from: row.active_from,
        retired_at: row.retired_at,
        published_until: row.published_until,
        pair,
    })
}

fn build_jwks(keys: &[Arc<LiveKey>], now: i64, max_age: Duration) -> Arc<CachedJson> {
    #[derive(Serialize)]
    struct Jwks {
        keys: Vec<PublicJwk>,
    }
    let jwks = Jwks {
        keys: keys
            .iter()
            .rev()
            .filter(|k| k.published_at(now))
            .map(|k| PublicJwk::of(&k.pair))
            .collect(),
    };
    let body = serde_json::to_vec(&jwks).unwrap_or_else(|_| b"{\"keys\":[]}".to_vec());
    Arc::new(CachedJson::new(body, max_age))
}

fn secs(d: Duration) -> i64 {
    i64::try_from(d.as_secs()).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thumbprint_matches_rfc7638_example() {
        // RFC 7638 §3.1.
        let n = "0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_BJECPebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_FDW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI4vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw";
        assert_eq!(
            thumbprint(n, "AQAB"),
            "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs"
        );
    }

    fn row(kid: &str, generation: i64, active_from: i64, retired_at: Option<i64>) -> KeyRow {
        KeyRow {
            kid: kid.into(),
            generation,
            algorithm: ALGORITHM.into(),
            private_key: Vec::new(),
            public_jwk: String::new(),
            created_at: active_from,
            active_from,
            retired_at,
            published_until: retired_at.map(|r| r + 100),
        }
    }

    #[test]
    fn signing_key_follows_activation_and_retirement() {
        // a signs from 0; b is pre-published at 10 and takes over at 50.
        let rows = vec![row("a", 1, 0, Some(50)), row("b", 2, 50, None)];
        assert_eq!(signing_kid(&rows, 10), Some("a"));
        assert_eq!(signing_kid(&rows, 49), Some("a"));
        assert_eq!(signing_kid(&rows, 50), Some("b"));
        assert_eq!(
            state_of(&rows[1], 10, signing_kid(&rows, 10)),
            KeyState::Pending
        );
        assert_eq!(
            state_of(&rows[0], 60, signing_kid(&rows, 60)),
            KeyState::Retired
        );
        assert_eq!(
            state_of(&rows[0], 150, signing_kid(&rows, 150)),
            KeyState::Expired
        );
    }

    #[test]
    fn a_pending_key_overtaken_by_a_later_rotation_never_signs() {
        // b was pre-published to start at 100, then c was rotated in with no pre-publication
        // at 20, which retired both a and b at 20.
        let rows = vec![
            row("a", 1, 0, Some(20)),
            row("b", 2, 100, Some(20)),
            row("c", 3, 20, None),
        ];
        assert_eq!(signing_kid(&rows, 19), Some("a"));
        assert_eq!(signing_kid(&rows, 20), Some("c"));
        assert_eq!(signing_kid(&rows, 200), Some("c"));
        assert_eq!(
            state_of(&rows[1], 50, signing_kid(&rows, 50)),
            KeyState::Retired
        );
    }

    #[test]
    fn generated_keys_sign_and_round_trip_through_pkcs8() {
        let (der, jwk) = generate(2048).unwrap();
        let key = parse_row(
            KeyRow {
                kid: jwk.kid.clone(),
                generation: 1,
                algorithm: ALGORITHM.into(),
                private_key: der,
                public_jwk: String::new(),
                created_at: 0,
                active_from: 0,
                retired_at: None,
                published_until: None,
            },
            None,
        )
        .unwrap();
        let token = key.sign("JWT", &serde_json::json!({"sub": "x"})).unwrap();
        assert_eq!(token.split('.').count(), 3);
        assert!(
            parse_row(
                KeyRow {
                    kid: "wrong".into(),
                    ..row("x", 1, 0, None)
                },
                None
            )
            .is_err()
        );
    }

    #[test]
    fn sealed_keys_need_the_master_key_they_were_sealed_with() {
        let (der, jwk) = generate(2048).unwrap();
        let master = MasterKey::parse("MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=").unwrap();
        let sealed = KeyRow {
            kid: jwk.kid.clone(),
            private_key: master.seal(&der, &jwk.kid).unwrap(),
            ..row("x", 1, 0, None)
        };
        assert!(parse_row(sealed.clone(), Some(&master)).is_ok());
        assert!(matches!(
            private_pkcs8(&sealed, None),
            Err(KeyError::Sealed)
        ));
        let other = MasterKey::parse("AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=").unwrap();
        assert!(matches!(
            private_pkcs8(&sealed, Some(&other)),
            Err(KeyError::WrongMasterKey)
        ));
    }
}
