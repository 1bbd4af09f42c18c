//! SQLite point reads, and a session's write, on the calling thread.
//!
//! Through sqlx every SQLite statement is a round trip to its connection's worker thread: the
//! request's task sends the statement over a channel, the worker wakes (a futex wake and a
//! context switch), runs it and sends the rows back, and the task is woken in turn. For the
//! reads every token request makes (the client, the account, whether a `jti` is revoked) the
//! statement itself takes a few microseconds and the trip around it is most of the cost: under
//! `wrk` on `/introspect`, `perf` put 21% of the server's samples in futex calls and 18% in the
//! scheduler, and answering from memory instead served 22–27% more requests a second.
//!
//! So on a SQLite file the hot point reads run right here, on the async worker that asks, over
//! a small set of read-only connections of their own (rusqlite, the same bundled SQLite). Each
//! is one indexed lookup in a read transaction of its own, so it sees every commit before it
//! exactly as a pooled reader would. In WAL mode a reader never waits for the writer; the
//! connections have no busy timeout, and whatever goes wrong (`SQLITE_BUSY` while a log is
//! recovered, an I/O error) makes the caller fall back to the pool, which gives the usual
//! error or answer. The readers never write.
//!
//! A session's write (a sign-in's, with its audit row) runs here too, on one read-write
//! connection of its own ([`Writer`]), when SQLite's write lock is free at that instant; when
//! it is not, the write goes through sqlx's writer as every other write does.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, TryLockError};
use std::time::{Duration, Instant};

use rusqlite::{Connection, OpenFlags, OptionalExtension, Params, Row};

/// Idle connections kept: one for each thread that may read at once (the async workers, one
/// per CPU), and at least four. More are opened when more threads read at once, and closed
/// after.
fn idle_limit() -> usize {
    std::thread::available_parallelism().map_or(4, |n| n.get().max(4))
}

/// Statements kept prepared per connection: every point read's SQL, with room to spare.
const STATEMENTS: usize = 32;

/// A row type that point reads can return: built from a rusqlite row by column name, the same
/// names its sqlx `FromRow` reads.
pub trait FromSqlite: Sized {
    fn from_sqlite(row: &Row<'_>) -> rusqlite::Result<Self>;
}

/// A read that could not be made here: the caller makes it through the pool.
#[derive(Debug, PartialEq, Eq)]
pub struct NotHere;

/// One text column.
impl FromSqlite for String {
    fn from_sqlite(row: &Row<'_>) -> rusqlite::Result<Self> {
        row.get(0)
    }
}

/// A text column and an integer column, in that order.
impl FromSqlite for (String, i64) {
    fn from_sqlite(row: &Row<'_>) -> rusqlite::Result<Self> {
        Ok((row.get(0)?, row.get(1)?))
    }
}

/// Statements served here and handed to the pool: kept for [`Readers::counts`] and
/// [`Writer::counts`], and exported as the metric `name` with `outcome` `served` or `fell_back`.
#[derive(Debug)]
struct Tally {
    served: AtomicU64,
    fell_back: AtomicU64,
    counters: [metrics::Counter; 2],
}

impl Tally {
    fn new(name: &'static str) -> Self {
        let counter = |outcome| metrics::counter!(name, "outcome" => outcome);
        Self {
            served: AtomicU64::new(0),
            fell_back: AtomicU64::new(0),
            counters: [counter("served"), counter("fell_back")],
        }
    }

    fn served(&self) {
        self.served.fetch_add(1, Ordering::Relaxed);
        self.counters[0].increment(1);
    }

    fn fell_back(&self) {
        self.fell_back.fetch_add(1, Ordering::Relaxed);
        self.counters[1].increment(1);
    }

    fn counts(&self) -> (u64, u64) {
        (
            self.served.load(Ordering::Relaxed),
            self.fell_back.load(Ordering::Relaxed),
        )
    }
}

#[derive(Debug)]
pub struct Readers {
    database: PathBuf,
    idle: Mutex<Vec<Connection>>,
    idle_limit: usize,
    tally: Tally,
}

impl Readers {
    pub fn new(database: PathBuf) -> Self {
        Self {
            database,
            idle: Mutex::default(),
            idle_limit: idle_limit(),
            tally: Tally::new("store_inline_reads_total"),
        }
    }

    /// The row `sql` finds for `params` (`None` for no row).
    pub fn row<T: FromSqlite>(&self, sql: &str, params: impl Params) -> Result<Option<T>, NotHere> {
        self.run(|conn| {
            conn.prepare_cached(sql)?
                .query_row(params, T::from_sqlite)
                .optional()
        })
    }

    /// Whether `sql` finds a row for `params`.
    pub fn exists(&self, sql: &str, params: impl Params) -> Result<bool, NotHere> {
        self.run(|conn| conn.prepare_cached(sql)?.exists(params))
    }

    /// (reads served here, reads handed back to the pool) since start.
    pub fn counts(&self) -> (u64, u64) {
        self.tally.counts()
    }

    fn run<T>(&self, read: impl FnOnce(&Connection) -> rusqlite::Result<T>) -> Result<T, NotHere> {
        let taken = self.idle.lock().map(|mut idle| idle.pop()).unwrap_or(None);
        let outcome = match taken.map_or_else(|| self.connect(), Ok) {
            Ok(conn) => match read(&conn) {
                Ok(value) => {
                    self.give_back(conn);
                    Ok(value)
                }
                Err(error) => {
                    // A busy database is passing; anything else closes the connection, so a
                    // broken one is never handed out again.
                    if error.sqlite_error_code() == Some(rusqlite::ErrorCode::DatabaseBusy) {
                        self.give_back(conn);
                    }
                    Err(error)
                }
            },
            Err(error) => Err(error),
        };
        match outcome {
            Ok(value) => {
                self.tally.served();
                Ok(value)
            }
            Err(error) => {
                tracing::debug!(%error, "an inline SQLite read fell back to the pool");
                self.tally.fell_back();
                Err(NotHere)
            }
        }
    }

    fn connect(&self) -> rusqlite::Result<Connection> {
        let flags = OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let conn = Connection::open_with_flags(&self.database, flags)?;
        // `query_only` as a second guard. No busy timeout: a lock held by another connection
        // sends the read to the pool rather than make this thread wait for it (SQLite still
        // retries briefly inside when a read races the log being started over).
        conn.execute_batch("PRAGMA query_only = ON; PRAGMA busy_timeout = 0;")?;
        conn.set_prepared_statement_cache_capacity(STATEMENTS);
        Ok(conn)
    }

    fn give_back(&self, conn: Connection) {
        if let Ok(mut idle) = self.idle.lock()
            && idle.len() < self.idle_limit
        {
            idle.push(conn);
        }
    }
}

/// How long the [`Writer`] leaves its connection unopened after opening it failed.
const RETRY_CONNECT: Duration = Duration::from_secs(1);

/// The [`Writer`]'s connection, when it is not in use.
#[derive(Debug, Default)]
enum Slot {
    Idle(Connection),
    #[default]
    Empty,
    /// Opening it failed at this instant.
    Failed(Instant),
}

/// The connection for short writes made on the calling thread: a sign-in's session and its
/// audit row, a session saved by a page.
///
/// Through sqlx a write transaction on SQLite is a handful of round trips to the writer's
/// worker thread (the connection taken from its pool, `BEGIN`, each statement, `COMMIT`, and the
/// ping sqlx makes of a connection handed back), each a futex wake and a context switch on both
/// sides. Under the sign-in load those wake-ups preempt the password hashes. Here the same
/// statements run on the asking thread, in one `BEGIN IMMEDIATE` transaction on a connection of
/// their own: a few hundred microseconds on the benchmark's machines, most of it the `COMMIT`'s
/// writes into the log. The first commit after the log was started over also syncs the log's
/// new header (SQLite does that in `synchronous = NORMAL`), about once a second under load,
/// and when that commit is made here, an async worker waits for that sync.
///
/// It never waits for a lock. It is used only while its caller holds sqlx's one writer
/// ([`super::Store::write_here`]), so the two do not contend for SQLite's lock; if this
/// connection is in use, or another one holds SQLite's write lock (a checkpoint starting the
/// log over, another process), the caller makes the write through sqlx as before. The
/// connection has no busy timeout, takes the pragmas of sqlx's connections (it checkpoints
/// nothing, `wal_autocheckpoint = 0`) and commits with `synchronous = NORMAL`: the caller then
/// waits for the group commit's flush like any other write ([`super::Store::flushed`]).
#[derive(Debug)]
pub struct Writer {
    database: PathBuf,
    conn: Mutex<Slot>,
    tally: Tally,
}

impl Writer {
    pub fn new(database: PathBuf) -> Self {
        Self {
            database,
            conn: Mutex::default(),
            tally: Tally::new("store_inline_writes_total"),
        }
    }

    /// Runs `write` in a transaction of its own and commits it, on this thread. `NotHere`, with
    /// nothing written, when the write cannot be made here at once (the connection is in use,
    /// the database is locked) or failed (it was rolled back): the caller makes it through the
    /// pool. What `write` returns decides nothing: to write nothing, it writes nothing.
    pub fn transaction<T>(
        &self,
        write: impl FnOnce(&Connection) -> rusqlite::Result<T>,
    ) -> Result<T, NotHere> {
        let mut slot = match self.conn.try_lock() {
            Ok(slot) => slot,
            // A write that panicked took its connection with it (dropped, so rolled back).
            Err(TryLockError::Poisoned(poisoned)) => poisoned.into_inner(),
            // In use by another thread: never wait for it.
            Err(TryLockError::WouldBlock) => {
                return Err(self.fall_back(&"the connection is in use"));
            }
        };
        let taken = match std::mem::take(&mut *slot) {
            Slot::Idle(conn) => Ok(conn),
            // A file this connection cannot open (its permissions, say) costs a write nothing
            // but the pool's, rather than a failed open each time.
            Slot::Failed(at) if at.elapsed() < RETRY_CONNECT => {
                *slot = Slot::Failed(at);
                drop(slot);
                return Err(self.fall_back(&"its connection failed to open a moment ago"));
            }
            Slot::Empty | Slot::Failed(_) => self.connect().inspect_err(|_| {
                *slot = Slot::Failed(Instant::now());
            }),
        };
        let outcome = match taken {
            Ok(conn) => {
                let (outcome, keep) = Self::run(&conn, write);
                if keep {
                    *slot = Slot::Idle(conn);
                }
                outcome
            }
            Err(error) => Err(error),
        };
        drop(slot);
        match outcome {
            Ok(value) => {
                self.tally.served();
                Ok(value)
            }
            Err(error) => Err(self.fall_back(&error)),
        }
    }

    /// Counts a write handed to the pool, and says why in the debug log.
    pub(super) fn fall_back(&self, why: &dyn std::fmt::Display) -> NotHere {
        tracing::debug!(%why, "an inline SQLite write went to the pool");
        self.tally.fell_back();
        NotHere
    }

    /// (writes made here, writes handed to the pool) since start.
    pub fn counts(&self) -> (u64, u64) {
        self.tally.counts()
    }

    /// The transaction, and whether the connection may be kept: only if it is left outside any
    /// transaction.
    fn run<T>(
        conn: &Connection,
        write: impl FnOnce(&Connection) -> rusqlite::Result<T>,
    ) -> (rusqlite::Result<T>, bool) {
        if let Err(error) = conn.execute_batch("BEGIN IMMEDIATE") {
            let busy = error.sqlite_error_code() == Some(rusqlite::ErrorCode::DatabaseBusy);
            return (Err(error), busy && conn.is_autocommit());
        }
        let done = write(conn).and_then(|value| conn.execute_batch("COMMIT").map(|()| value));
        match done {
            Ok(value) => (Ok(value), true),
            Err(error) => {
                // Nothing was committed: undo what ran. A connection still inside a
                // transaction after that is closed (dropping it rolls back).
                if !conn.is_autocommit() {
                    let _ = conn.execute_batch("ROLLBACK");
                }
                (Err(error), conn.is_autocommit())
            }
        }
    }

    fn connect(&self) -> rusqlite::Result<Connection> {
        let flags = OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let conn = Connection::open_with_flags(&self.database, flags)?;
        // rusqlite opens with a busy timeout of 5 s: never wait, not even for the pragmas.
        conn.busy_timeout(Duration::ZERO)?;
        conn.execute_batch(super::SQLITE_PRAGMAS)?;
        conn.busy_timeout(Duration::ZERO)?;
        conn.set_prepared_statement_cache_capacity(STATEMENTS);
        Ok(conn)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::{NotHere, Readers};
    use crate::config::Config;
    use crate::store::clients::{self, Client};
    use crate::store::{Store, grants};

    async fn open(database_url: String) -> Store {
        let config = Config {
            database_url,
            ..Config::default()
        };
        let store = Store::open(&config).await.unwrap();
        store.migrate().await.unwrap();
        store
    }

    fn client(secret_hash: &str) -> Client {
        Client {
            id: "rp".into(),
            name: "RP".into(),
            secret_hash: Some(secret_hash.into()),
            public: false,
            redirect_uris: vec!["https://rp.example.test/cb".into()],
            post_logout_redirect_uris: vec![],
            grant_types: vec!["client_credentials".into()],
            scopes: vec!["api:read".into()],
            auth_method: "client_secret_basic".into(),
            skip_consent: false,
            created_at: 0,
        }
    }

    async fn write(store: &Store, client: Option<&Client>, revoke: Option<&str>) {
        let mut tx = store.begin_write().await.unwrap();
        if let Some(client) = client {
            clients::upsert(&mut tx, client, 1).await.unwrap();
        }
        if let Some(jti) = revoke {
            grants::revoke_jti(&mut tx, jti, i64::MAX).await.unwrap();
        }
        tx.commit().await.unwrap();
    }

    /// Each read is a transaction of its own: it sees every commit made before it, through
    /// the server's writer, and nothing is cached between reads.
    #[tokio::test]
    async fn point_reads_run_here_and_see_every_commit_before_them() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(format!("sqlite://{}", dir.path().join("t.db").display())).await;
        assert!(clients::find(&store, "rp").await.unwrap().is_none());
        write(&store, Some(&client("first")), None).await;
        let found = clients::find(&store, "rp").await.unwrap().unwrap();
        assert_eq!(found.secret_hash.as_deref(), Some("first"));
        assert_eq!(found.redirect_uris, ["https://rp.example.test/cb"]);
        write(&store, Some(&client("second")), None).await;
        let found = clients::find(&store, "rp").await.unwrap().unwrap();
        assert_eq!(found.secret_hash.as_deref(), Some("second"));

        let (_, revoked) = clients::find_with_revoked_jti(&store, "rp", "j1")
            .await
            .unwrap()
            .unwrap();
        assert!(!revoked && !grants::jti_revoked(&store, "j1").await.unwrap());
        write(&store, None, Some("j1")).await;
        let (_, revoked) = clients::find_with_revoked_jti(&store, "rp", "j1")
            .await
            .unwrap()
            .unwrap();
        assert!(revoked && grants::jti_revoked(&store, "j1").await.unwrap());
        assert!(
            clients::find_with_revoked_jti(&store, "nobody", "j1")
                .await
                .unwrap()
                .is_none()
        );
        assert_eq!(store.inline().unwrap().counts(), (8, 0));

        // Every statement was reset after its read, so no idle connection holds a read
        // transaction open: the log can still be started over.
        let (busy, _, _): (i64, i64, i64) = sqlx::query_as("PRAGMA wal_checkpoint(RESTART)")
            .fetch_one(&mut *store.read().await.unwrap())
            .await
            .unwrap();
        assert_eq!(busy, 0, "an idle inline reader keeps the log pinned");
    }

    /// A read that cannot be made here (the connection cannot open, the database is busy) is
    /// made through the pool instead, with the same answer.
    #[tokio::test]
    async fn a_read_that_fails_here_is_made_through_the_pool() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = open(format!("sqlite://{}", dir.path().join("t.db").display())).await;
        write(&store, Some(&client("first")), Some("j1")).await;
        store.inline = Some(Arc::new(Readers::new(dir.path().join("missing/t.db"))));
        let found = clients::find(&store, "rp").await.unwrap().unwrap();
        assert_eq!(found.secret_hash.as_deref(), Some("first"));
        assert!(grants::jti_revoked(&store, "j1").await.unwrap());
        let (_, revoked) = clients::find_with_revoked_jti(&store, "rp", "j1")
            .await
            .unwrap()
            .unwrap();
        assert!(revoked);
        assert_eq!(store.inline().unwrap().counts(), (0, 3));
    }

    /// A file name sqlx percent-decodes is the file these readers open too.
    #[tokio::test]
    async fn a_percent_encoded_file_name_is_read_here() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}/my%20data/t.db", dir.path().display());
        let store = open(url).await;
        write(&store, Some(&client("first")), None).await;
        assert!(clients::find(&store, "rp").await.unwrap().is_some());
        assert_eq!(store.inline().unwrap().counts(), (1, 0));
        assert!(dir.path().join("my data/t.db").is_file());
    }

    /// A write here commits, and what it committed is there for every other connection; a
    /// failed one leaves nothing and goes to the pool, as does one that finds the database's
    /// write lock held, at once.
    #[tokio::test]
    async fn writes_here_commit_or_go_to_the_pool_without_waiting() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(format!("sqlite://{}", dir.path().join("t.db").display())).await;
        let writer = store.inline_writer().unwrap();
        let insert = |kind: &'static str| {
            move |conn: &rusqlite::Connection| {
                conn.execute(
                    "INSERT INTO audit_events (at, kind, outcome, ip, user_agent, detail) \
                     VALUES (1, ?1, 'success', '', '', '')",
                    [kind],
                )
            }
        };
        let kinds = || async {
            sqlx::query_scalar::<_, String>("SELECT kind FROM audit_events ORDER BY id")
                .fetch_all(store.reader())
                .await
                .unwrap()
        };
        assert_eq!(writer.transaction(insert("here")), Ok(1));
        assert_eq!(kinds().await, ["here"]);

        // A statement that fails: what ran before it in the transaction is undone.
        let failed = writer.transaction(|conn| {
            insert("undone")(conn)?;
            conn.execute("INSERT INTO no_such_table VALUES (1)", [])
        });
        assert_eq!(failed, Err(NotHere));
        assert_eq!(kinds().await, ["here"]);

        // sqlx's writer holds the write lock: no wait (the busy timeout would be 5 s).
        let held = store.begin_write().await.unwrap();
        let begun = std::time::Instant::now();
        assert_eq!(writer.transaction(insert("blocked")), Err(NotHere));
        assert!(begun.elapsed() < std::time::Duration::from_secs(1));
        held.rollback().await.unwrap();
        assert_eq!(writer.transaction(insert("after")), Ok(1));
        assert_eq!(kinds().await, ["here", "after"]);
        assert_eq!(writer.counts(), (2, 2));
    }

    /// An in-memory database is private to its own connections: no reader here could see it.
    #[tokio::test]
    async fn an_in_memory_database_is_read_through_the_pool_only() {
        let store = open("sqlite::memory:".into()).await;
        assert!(store.inline().is_none());
    }
}
