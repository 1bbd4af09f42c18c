//! PostgreSQL: the clients and the revoked access-token ids, mirrored in each replica's
//! memory and kept current by `LISTEN`/`NOTIFY`.
//!
//! Introspection needs the client and whether the token's `jti` is revoked on every call, and
//! every token request needs its client. On SQLite those are point reads on the request's own
//! thread ([`super::inline`]); on PostgreSQL each is a network round trip and work for a
//! backend process on the same cores. Both tables change rarely, so each replica keeps them
//! in memory:
//!
//! - **What is announced.** Triggers (migration `20261201000001_mirror.sql`) announce every
//!   change on the channel [`CHANNEL`]: `client <id>` for any insert, update or delete of a
//!   client, `jti <expires_at> <jti>` for every revoked access token. Whichever process makes
//!   the change (another replica, the CLI, a hand-written `UPDATE`), PostgreSQL sends the
//!   announcement to every listener once the transaction commits.
//! - **Clients** are cached as they are read (never a missing one: a stranger's made-up ids
//!   must not fill memory) and dropped when announced. A read that started before an
//!   announcement is not kept ([`Mirror::keep_client`] compares a generation counter).
//! - **Revoked ids** are loaded whole when the listener connects (after its `LISTEN`, so
//!   nothing committed in between is missed), then grow by announcement; expired ids are
//!   pruned.
//! - **Trust.** The mirror answers only while it is known to be current. Every second each
//!   replica announces a ping of its own, through a connection of its own; hearing it back
//!   proves that every change committed before the ping was heard. The mirror answers for
//!   [`TRUST_FOR`] after the send time of the last ping heard back, and not before the first
//!   one after a load (behind a pooler that drops `LISTEN`, it never answers). A lost listener
//!   connection, or a ping not heard back in time, ends the trust at once; reads then go to
//!   the database, as before, until the listener has connected and loaded again.
//! - **Read your writes.** A replica that revokes a token or changes a client waits, before
//!   answering, until its mirror has heard the change ([`Mirror::settle`]: one ping heard
//!   back), so its next answer already knows. Other replicas hear it within the
//!   notification's delay (well under a millisecond on one machine), as RFC 7009 §2.2
//!   allows: "there could be a propagation delay … implementations should minimize that
//!   window".

use std::collections::HashMap;
use std::sync::RwLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use sqlx::postgres::{PgConnectOptions, PgConnection, PgListener, PgPoolOptions};
use sqlx::{AnyPool, ConnectOptions};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::clients::Client;

/// The channel the triggers announce changes on.
pub const CHANNEL: &str = "tessera_mirror";

/// The `application_name` of the listener's connection and of the pinger's.
pub const LISTENER_NAME: &str = "tessera mirror listener";
const PINGER_NAME: &str = "tessera mirror pinger";

/// How often a replica pings itself through the channel.
const PING_EVERY: Duration = Duration::from_secs(1);

/// How long after the send time of the last ping heard back the mirror answers.
pub const TRUST_FOR: Duration = Duration::from_secs(3);

/// How long [`Mirror::settle`] waits for its ping before it stops trusting the mirror.
const SETTLE_WITHIN: Duration = Duration::from_secs(2);

/// The longest pause between two attempts to connect the listener.
const RECONNECT_AT_MOST: Duration = Duration::from_secs(5);

/// Announcing is `SELECT pg_notify(…)`; the count makes its one column a type every driver
/// decodes (`pg_notify` returns `void`).
const ANNOUNCE: &str = "SELECT COUNT(*) FROM (SELECT pg_notify($1, $2)) AS announced";

/// What the mirror knows of a key.
pub enum Lookup<T> {
    /// Current, and here it is.
    Known(T),
    /// Not held: read the database, and offer a found client back with this generation.
    Unknown { generation: u64 },
    /// The mirror is not known to be current: read the database.
    Untrusted,
}

pub struct Mirror {
    url: String,
    /// Tells this replica's pings from the others'.
    instance: String,
    epoch: Instant,
    /// Nanoseconds since `epoch` until which the mirror answers (0: it does not).
    trusted_until: AtomicU64,
    /// The send time (nanoseconds since `epoch`) of the last own ping heard back.
    heard: watch::Sender<u64>,
    /// Bumped, under the `clients` lock, by every client announcement and every reload.
    generation: AtomicU64,
    clients: RwLock<HashMap<String, Client>>,
    /// Revoked access-token ids and their tokens' expiry.
    revoked: RwLock<HashMap<String, i64>>,
    counters: [metrics::Counter; 2],
    /// Reads answered here and reads sent to the database, and listener sessions loaded.
    served: AtomicU64,
    missed: AtomicU64,
    sessions: AtomicU64,
}

impl std::fmt::Debug for Mirror {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mirror")
            .field("instance", &self.instance)
            .field("trusted", &self.trusted())
            .finish_non_exhaustive()
    }
}

impl Mirror {
    /// A mirror of the PostgreSQL database at `url`, not trusted until [`Mirror::spawn`]'s
    /// listener has connected and loaded.
    pub fn new(url: String) -> Self {
        let counter = |outcome| metrics::counter!("store_mirror_reads_total", "outcome" => outcome);
        Self {
            url,
            instance: crate::crypto::secrets::random_token(),
            epoch: Instant::now(),
            trusted_until: AtomicU64::new(0),
            heard: watch::Sender::new(0),
            generation: AtomicU64::new(0),
            clients: RwLock::default(),
            revoked: RwLock::default(),
            counters: [counter("served"), counter("database")],
            served: AtomicU64::new(0),
            missed: AtomicU64::new(0),
            sessions: AtomicU64::new(0),
        }
    }

    fn now(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }

    /// Whether the mirror may answer now.
    pub fn trusted(&self) -> bool {
        self.trusted_at(self.now())
    }

    fn trusted_at(&self, now: u64) -> bool {
        now < self.trusted_until.load(Ordering::Acquire)
    }

    fn distrust(&self) {
        self.trusted_until.store(0, Ordering::Release);
    }

    fn count(&self, served: bool) {
        self.counters[usize::from(!served)].increment(1);
        match served {
            true => &self.served,
            false => &self.missed,
        }
        .fetch_add(1, Ordering::Relaxed);
    }

    /// Reads answered from memory, reads sent to the database (for tests).
    pub fn counts(&self) -> (u64, u64) {
        (
            self.served.load(Ordering::Relaxed),
            self.missed.load(Ordering::Relaxed),
        )
    }

    /// How many times the listener has connected and loaded (for tests).
    pub fn sessions(&self) -> u64 {
        self.sessions.load(Ordering::Relaxed)
    }

    /// The connection options of the mirror's own connections, named so that an operator (or
    /// a test) finds them in `pg_stat_activity`.
    fn options(&self, name: &str) -> Result<PgConnectOptions, sqlx::Error> {
        Ok(self.url.parse::<PgConnectOptions>()?.application_name(name))
    }

    /// The client `id`, if the mirror holds it and is current.
    pub fn client(&self, id: &str) -> Lookup<Client> {
        if !self.trusted() {
            self.count(false);
            return Lookup::Untrusted;
        }
        let clients = self.clients.read().unwrap_or_else(|e| e.into_inner());
        match clients.get(id) {
            Some(client) => {
                self.count(true);
                Lookup::Known(client.clone())
            }
            None => {
                self.count(false);
                Lookup::Unknown {
                    generation: self.generation.load(Ordering::Acquire),
                }
            }
        }
    }

    /// Keeps a client read from the database after [`Lookup::Unknown`], unless an announcement
    /// or a reload came in since (the read may then predate the change).
    pub fn keep_client(&self, generation: u64, client: &Client) {
        let mut clients = self.clients.write().unwrap_or_else(|e| e.into_inner());
        if self.generation.load(Ordering::Acquire) == generation && self.trusted() {
            clients.insert(client.id.clone(), client.clone());
        }
    }

    /// Whether the access token `jti` is revoked; `None` when the mirror is not current.
    pub fn revoked(&self, jti: &str) -> Option<bool> {
        if !self.trusted() {
            self.count(false);
            return None;
        }
        self.count(true);
        let revoked = self.revoked.read().unwrap_or_else(|e| e.into_inner());
        Some(revoked.contains_key(jti))
    }

    fn forget_client(&self, id: Option<&str>) {
        let mut clients = self.clients.write().unwrap_or_else(|e| e.into_inner());
        self.generation.fetch_add(1, Ordering::AcqRel);
        match id {
            Some(id) => clients.remove(id),
            None => {
                clients.clear();
                None
            }
        };
    }

    /// Applies one announcement; `false` for one it does not understand.
    #[must_use]
    fn hear(&self, payload: &str) -> bool {
        // The kind, then its words; a client id or a jti is the rest of the line, spaces and
        // all.
        let (kind, rest) = payload.split_once(' ').unwrap_or((payload, ""));
        match (kind, rest.split_once(' ')) {
            ("ping", Some((instance, sent))) => {
                if let (true, Ok(sent)) = (instance == self.instance, sent.parse::<u64>()) {
                    let until = sent.saturating_add(nanos(TRUST_FOR));
                    self.trusted_until.fetch_max(until, Ordering::AcqRel);
                    self.heard.send_if_modified(|heard| {
                        let newer = sent > *heard;
                        *heard = (*heard).max(sent);
                        newer
                    });
                }
            }
            ("client", _) if !rest.is_empty() => self.forget_client(Some(rest)),
            ("clients", _) if rest.is_empty() => self.forget_client(None),
            ("jti", Some((expires_at, jti))) => {
                let expires_at = expires_at.parse().unwrap_or(i64::MAX);
                let mut revoked = self.revoked.write().unwrap_or_else(|e| e.into_inner());
                revoked.insert(jti.to_owned(), expires_at);
            }
            _ => {
                // Not ours to understand (a newer version's?): the mirror cannot tell what
                // changed, so it stops answering until it has loaded again.
                tracing::warn!(payload, "unknown announcement; reloading the mirror");
                self.distrust();
                return false;
            }
        }
        true
    }

    /// Replaces the revoked ids with the database's and drops every cached client.
    fn reload(&self, revoked: Vec<(String, i64)>) {
        *self.revoked.write().unwrap_or_else(|e| e.into_inner()) = revoked.into_iter().collect();
        self.forget_client(None);
    }

    fn prune(&self, now_unix: i64) {
        let mut revoked = self.revoked.write().unwrap_or_else(|e| e.into_inner());
        revoked.retain(|_, expires_at| *expires_at > now_unix);
    }

    fn ping_payload(&self) -> (String, u64) {
        let sent = self.now();
        (format!("ping {} {sent}", self.instance), sent)
    }

    /// Returns once the mirror has heard every change committed before this call (one ping of
    /// its own heard back), or has stopped trusting itself. For a replica's own writes to
    /// clients and revocations, before it answers.
    pub async fn settle(&self, pool: &AnyPool) {
        if !self.trusted() {
            return;
        }
        let mut heard = self.heard.subscribe();
        let (payload, sent) = self.ping_payload();
        let announced = sqlx::query(ANNOUNCE)
            .bind(CHANNEL)
            .bind(payload)
            .execute(pool);
        let waited = async {
            announced.await.ok()?;
            heard.wait_for(|heard| *heard >= sent).await.ok()
        };
        if !matches!(
            tokio::time::timeout(SETTLE_WITHIN, waited).await,
            Ok(Some(_))
        ) {
            tracing::warn!("the mirror did not hear its own ping in time; reading the database");
            self.distrust();
        }
    }

    /// Starts the listener and the pinger; both end when `stop` is cancelled.
    pub fn spawn(
        self: &std::sync::Arc<Self>,
        stop: CancellationToken,
    ) -> tokio::task::JoinHandle<()> {
        let listening = tokio::spawn(self.clone().listen(stop.clone()));
        let pinging = tokio::spawn(self.clone().ping(stop));
        tokio::spawn(async move {
            let _ = listening.await;
            let _ = pinging.await;
        })
    }

    async fn listen(self: std::sync::Arc<Self>, stop: CancellationToken) {
        let mut pause = Duration::from_millis(100);
        loop {
            let connected = Instant::now();
            let ended = tokio::select! {
                ended = self.session() => ended,
                () = stop.cancelled() => return,
            };
            self.distrust();
            if let Err(error) = ended {
                tracing::warn!(%error, "the mirror's listener stopped; reading the database until it is back");
            }
            if connected.elapsed() > RECONNECT_AT_MOST {
                pause = Duration::from_millis(100);
            }
            tokio::select! {
                () = tokio::time::sleep(pause) => {}
                () = stop.cancelled() => return,
            }
            pause = (pause * 2).min(RECONNECT_AT_MOST);
        }
    }

    /// One listener connection: `LISTEN`, load, then apply announcements until it fails.
    async fn session(&self) -> Result<(), sqlx::Error> {
        // A pool of one, as `PgListener::connect` makes, with the connection named.
        let pool = PgPoolOptions::new()
            .max_connections(1)
            .max_lifetime(None)
            .idle_timeout(None)
            .connect_with(self.options(LISTENER_NAME)?)
            .await?;
        let mut listener = PgListener::connect_with(&pool).await?;
        listener.ignore_pool_close_event(true);
        // A lost connection ends the session here (and the trust), never quietly reconnects.
        listener.eager_reconnect(false);
        listener.listen(CHANNEL).await?;
        // Everything committed from here on will be heard; load what was committed before.
        let revoked: Vec<(String, i64)> =
            sqlx::query_as("SELECT jti, expires_at FROM revoked_jti WHERE expires_at > $1")
                .bind(super::now_unix())
                .fetch_all(&mut listener)
                .await?;
        self.reload(revoked);
        // Counted before any trust, so a test that sees the old count knows the mirror did
        // not answer yet.
        self.sessions.fetch_add(1, Ordering::SeqCst);
        // Trusted only once a ping comes back through this connection: that proves the
        // announcements arrive (behind a pooler that drops `LISTEN`, none ever would).
        let (payload, _) = self.ping_payload();
        sqlx::query(ANNOUNCE)
            .bind(CHANNEL)
            .bind(payload)
            .execute(&mut listener)
            .await?;
        tracing::debug!("the mirror is listening");
        loop {
            match listener.try_recv().await? {
                Some(notification) => {
                    if !self.hear(notification.payload()) {
                        return Err(sqlx::Error::Protocol("unknown announcement".into()));
                    }
                }
                None => return Err(sqlx::Error::PoolClosed),
            }
        }
    }

    /// Announces a ping every [`PING_EVERY`] through a connection of its own (a busy pool must
    /// not delay it), and prunes expired revoked ids.
    async fn ping(self: std::sync::Arc<Self>, stop: CancellationToken) {
        let mut conn: Option<PgConnection> = None;
        let mut tick = tokio::time::interval(PING_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                () = stop.cancelled() => break,
            }
            self.prune(super::now_unix());
            let sent = async {
                if conn.is_none() {
                    conn = Some(self.options(PINGER_NAME)?.connect().await?);
                }
                let Some(c) = conn.as_mut() else {
                    return Err(sqlx::Error::PoolClosed);
                };
                let (payload, _) = self.ping_payload();
                sqlx::query(ANNOUNCE)
                    .bind(CHANNEL)
                    .bind(payload)
                    .execute(c)
                    .await
            };
            match tokio::time::timeout(PING_EVERY, sent).await {
                Ok(Ok(_)) => {}
                Ok(Err(error)) => {
                    tracing::debug!(%error, "the mirror's ping failed");
                    conn = None;
                }
                Err(_) => conn = None,
            }
        }
        if let Some(conn) = conn {
            let _ = sqlx::Connection::close(conn).await;
        }
    }
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn client(id: &str) -> Client {
        Client {
            id: id.into(),
            name: id.into(),
            secret_hash: None,
            public: true,
            redirect_uris: vec![],
            post_logout_redirect_uris: vec![],
            grant_types: vec![],
            scopes: vec![],
            auth_method: "none".into(),
            skip_consent: false,
            created_at: 0,
        }
    }

    fn trusted_mirror() -> Mirror {
        let mirror = Mirror::new("postgres://unused".into());
        let (ping, _) = mirror.ping_payload();
        assert!(mirror.hear(&ping));
        assert!(mirror.trusted());
        mirror
    }

    #[test]
    fn it_answers_nothing_until_it_hears_its_own_ping() {
        let mirror = Mirror::new("postgres://unused".into());
        assert!(matches!(mirror.client("rp"), Lookup::Untrusted));
        assert_eq!(mirror.revoked("j"), None);
        // Another replica's ping proves nothing about this one's listener.
        assert!(mirror.hear("ping someone-else 999999999999999"));
        assert!(!mirror.trusted());
        let (ping, _) = mirror.ping_payload();
        assert!(mirror.hear(&ping));
        assert_eq!(mirror.revoked("j"), Some(false));
    }

    #[test]
    fn trust_lasts_from_the_send_time_of_the_last_ping_heard() {
        let mirror = Mirror::new("postgres://unused".into());
        let at = |secs: u64| nanos(Duration::from_secs(secs));
        assert!(mirror.hear(&format!("ping {} {}", mirror.instance, at(10))));
        assert!(mirror.trusted_at(at(10) + nanos(TRUST_FOR) - 1));
        assert!(!mirror.trusted_at(at(10) + nanos(TRUST_FOR)));
        // A ping heard late, sent before the last one, does not shorten or lengthen it.
        assert!(mirror.hear(&format!("ping {} {}", mirror.instance, at(5))));
        assert!(mirror.trusted_at(at(12)));
        assert!(!mirror.trusted_at(at(10) + nanos(TRUST_FOR)));
        mirror.distrust();
        assert!(!mirror.trusted_at(at(10)));
    }

    #[test]
    fn a_client_read_before_an_announcement_is_not_kept() {
        let mirror = trusted_mirror();
        let Lookup::Unknown { generation } = mirror.client("rp") else {
            panic!("an empty mirror holds no client");
        };
        // The client changes while its old row is being read.
        assert!(mirror.hear("client rp"));
        mirror.keep_client(generation, &client("rp"));
        assert!(matches!(mirror.client("rp"), Lookup::Unknown { .. }));
        // Read again, after the announcement: kept, then dropped by the next one.
        let Lookup::Unknown { generation } = mirror.client("rp") else {
            panic!("not kept");
        };
        mirror.keep_client(generation, &client("rp"));
        assert!(matches!(mirror.client("rp"), Lookup::Known(c) if c.id == "rp"));
        assert!(mirror.hear("client rp"));
        assert!(matches!(mirror.client("rp"), Lookup::Unknown { .. }));
        // An id with a space is the whole rest of the line; a truncate drops them all.
        for id in ["web app", "rp"] {
            let Lookup::Unknown { generation } = mirror.client(id) else {
                panic!("not held yet");
            };
            mirror.keep_client(generation, &client(id));
        }
        assert!(mirror.hear("client web app"));
        assert!(matches!(mirror.client("web app"), Lookup::Unknown { .. }));
        assert!(matches!(mirror.client("rp"), Lookup::Known(_)));
        assert!(mirror.hear("clients"));
        assert!(matches!(mirror.client("rp"), Lookup::Unknown { .. }));
    }

    #[test]
    fn revoked_ids_are_heard_loaded_and_pruned() {
        let mirror = trusted_mirror();
        mirror.reload(vec![("old".into(), 100)]);
        assert!(mirror.hear("jti 200 new one"));
        assert_eq!(mirror.revoked("old"), Some(true));
        assert_eq!(mirror.revoked("new one"), Some(true));
        assert_eq!(mirror.revoked("other"), Some(false));
        mirror.prune(150);
        assert_eq!(mirror.revoked("old"), Some(false));
        assert_eq!(mirror.revoked("new one"), Some(true));
    }

    #[test]
    fn an_announcement_it_does_not_understand_ends_the_trust() {
        let mirror = trusted_mirror();
        assert!(!mirror.hear("something new"));
        assert!(!mirror.trusted());
        let mirror = trusted_mirror();
        assert!(!mirror.hear("client "));
        let mirror = trusted_mirror();
        assert!(!mirror.hear("jti 12"));
    }
}
