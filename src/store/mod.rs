//! Storage: SQL over `sqlx::Any`, one code path for SQLite and PostgreSQL.
//!
//! Queries are written once in the common subset of both dialects (`$N` placeholders, BIGINT
//! unix-second timestamps, TEXT ids, 0/1 integers for booleans); the schema lives in one
//! migration tree per dialect under `migrations/`. Each aggregate has its own file with plain
//! functions that take a connection or a transaction, so the caller decides the transaction
//! boundary.
//!
//! SQLite allows one writer at a time, so on SQLite the store keeps a separate single-connection
//! pool for writes and opens write transactions with `BEGIN IMMEDIATE` (a deferred transaction
//! that upgrades to a write can fail with `SQLITE_BUSY` without waiting). On PostgreSQL both
//! pools are the same pool.
//!
//! Every write goes through a [`WriteTx`], whose `commit` returns only once the commit is
//! durable, or, when it is a single statement, through an [`Autocommit`], whose `durable` does
//! the same; a session's write on SQLite may instead commit on the calling thread
//! ([`inline::Writer`]) and then wait in [`Store::flushed`] the same way. On SQLite that is a
//! group commit (see [`durable`]): transactions commit without an fsync of their own, and one
//! `fdatasync` of the write-ahead log then covers every commit made before it started, so
//! concurrent requests share the flush instead of queueing for one each.

pub mod batch;
mod durable;

pub mod audit;
pub mod clients;
pub mod grants;
pub mod identities;
pub mod inline;
pub mod keys;
pub mod mirror;
pub mod sessions;
pub mod tokens;
pub mod users;

use std::ops::{Deref, DerefMut};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Once, OnceLock};
use std::time::Duration;

use sqlx::any::{AnyConnectOptions, AnyPoolOptions};
use sqlx::migrate::Migrator;
use sqlx::{Any, AnyConnection, AnyPool, Executor, Transaction};

use crate::config::{Config, DatabaseKind};
use crate::error::one_line;

static SQLITE_MIGRATIONS: Migrator = sqlx::migrate!("migrations/sqlite");
static POSTGRES_MIGRATIONS: Migrator = sqlx::migrate!("migrations/postgres");

/// Pragmas set on every SQLite connection. WAL lets readers run beside the writer.
/// `synchronous = NORMAL` leaves the per-commit fsync to [`WriteTx::commit`], which waits for a
/// shared `fdatasync` of the log ([`durable::WalSync`]); SQLite itself still syncs the log
/// before and the database after every checkpoint, so a crash can never corrupt the file.
///
/// `wal_autocheckpoint = 0`: a checkpoint copies the log into the database and syncs the
/// database file, tens of milliseconds on a large database; run by whichever connection
/// commits past the threshold, that is SQLite's one writer, it stalled every write queued
/// behind it. The server checkpoints from a reader connection instead, without blocking writers
/// ([`Store::checkpoint`], every second). A process without a server (the CLI) leaves the log
/// to be checkpointed when its last connection closes, as SQLite always does.
///
/// `journal_size_limit` ([`WAL_SIZE_LIMIT`]): the checkpointer starts the log over without
/// shortening its file, so the file keeps the size of the longest stretch between two
/// restarts; only beyond this limit does SQLite cut it back, at the first commit after a restart.
const SQLITE_PRAGMAS: &str = "PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL; \
     PRAGMA wal_autocheckpoint = 0; PRAGMA foreign_keys = ON; PRAGMA busy_timeout = 5000; \
     PRAGMA journal_size_limit = 67108864;";

/// How long a connection waits for a lock before SQLite answers `SQLITE_BUSY` (set in
/// `SQLITE_PRAGMAS`).
const BUSY_TIMEOUT_MS: u64 = 5_000;

/// How long a checkpoint that starts the log over may hold new writes back while it waits for
/// the log's readers (see [`Store::checkpoint`]).
const RESTART_WAIT_MS: u64 = 50;

/// The size in bytes past which SQLite shortens the log file after a restart (64 MiB, set in
/// `SQLITE_PRAGMAS`): about four times what a second of the heaviest benchmark writes on top of
/// [`WAL_RESET_FRAMES`].
pub const WAL_SIZE_LIMIT: u64 = 64 * 1024 * 1024;

#[derive(Clone, Debug)]
pub struct Store {
    reader: AnyPool,
    writer: AnyPool,
    kind: DatabaseKind,
    /// SQLite only: the group commit over the write-ahead log.
    wal: Option<Arc<durable::WalSync>>,
    /// PostgreSQL only: one connection whose commits do not wait for the log's flush
    /// (`synchronous_commit = off`), for the writes answered before their flush
    /// ([`Store::autocommit_unflushed`]). Connected at its first use.
    unflushed: Option<AnyPool>,
    /// SQLite on a file only: the point reads run on the calling thread ([`inline`]).
    inline: Option<Arc<inline::Readers>>,
    /// SQLite on a file only: short writes on the calling thread ([`inline::Writer`]).
    inline_writer: Option<Arc<inline::Writer>>,
    /// PostgreSQL only (unless `database.mirror` is off): clients and revoked token ids in
    /// memory ([`mirror`]); trusted only once a server has started its listener.
    mirror: Option<Arc<mirror::Mirror>>,
    /// The queues of [`Store::write_grant`] and [`Store::append_audit`], started at their first
    /// use.
    grants: Arc<OnceLock<batch::Queues>>,
}

/// A write transaction. It derefs to the connection, so the store's functions take it as
/// `&mut tx`; [`WriteTx::commit`] returns once the commit is durable.
///
/// A `WriteTx` dropped without `commit` or `rollback` (an early return, a request whose client
/// went away) is rolled back by a task that owns the connection until the `ROLLBACK` has run,
/// so the next `BEGIN` on that connection never finds a transaction still open.
pub struct WriteTx {
    tx: Option<Transaction<'static, Any>>,
    wal: Option<Arc<durable::WalSync>>,
}

impl WriteTx {
    /// Commits, and on SQLite waits until a flush of the write-ahead log covers the commit:
    /// a success answered to a client is never lost, even to a power cut. Like the `BEGIN`,
    /// the commit runs in a task of its own, so a request dropped half-way through it cannot
    /// leave the connection's transaction state in between.
    pub async fn commit(mut self) -> Result<(), sqlx::Error> {
        let (Some(tx), wal) = (self.tx.take(), self.wal.take()) else {
            return Ok(());
        };
        tokio::spawn(async move {
            tx.commit().await?;
            flushed(wal.as_deref()).await
        })
        .await
        .map_err(|_| sqlx::Error::WorkerCrashed)?
    }

    pub async fn rollback(mut self) -> Result<(), sqlx::Error> {
        match self.tx.take() {
            Some(tx) => tx.rollback().await,
            None => Ok(()),
        }
    }

    fn open(&self) -> &Transaction<'static, Any> {
        // Only `commit`, `rollback` and `drop` take the transaction, and each consumes `self`.
        self.tx
            .as_ref()
            .unwrap_or_else(|| unreachable!("a WriteTx is used after it ended"))
    }
}

impl Drop for WriteTx {
    fn drop(&mut self) {
        if let Some(tx) = self.tx.take()
            && let Ok(runtime) = tokio::runtime::Handle::try_current()
        {
            runtime.spawn(async move {
                if let Err(error) = tx.rollback().await {
                    tracing::warn!(%error, "rolling back an abandoned write transaction failed");
                }
            });
        }
    }
}

impl Deref for WriteTx {
    type Target = AnyConnection;
    fn deref(&self) -> &AnyConnection {
        self.open()
    }
}

impl DerefMut for WriteTx {
    fn deref_mut(&mut self) -> &mut AnyConnection {
        match self.tx.as_mut() {
            Some(tx) => tx,
            None => unreachable!("a WriteTx is used after it ended"),
        }
    }
}

/// A writer connection for exactly one statement, which is its own transaction (an `INSERT`,
/// an `UPDATE`, or one statement with a data-modifying `WITH`): on PostgreSQL one round trip
/// where a [`WriteTx`] spends three (`BEGIN`, the statement, `COMMIT`). A second statement on
/// it would be a second transaction, so anything that must be atomic with another write takes
/// a [`WriteTx`]. [`Autocommit::durable`] returns once the statement is durable.
///
/// Dropped half-way, it leaves nothing open: there is no transaction to roll back.
pub struct Autocommit {
    conn: sqlx::pool::PoolConnection<Any>,
    wal: Option<Arc<durable::WalSync>>,
}

impl Autocommit {
    /// Hands the connection back and returns once the statement is durable: at once on
    /// PostgreSQL (its commit flushed the log), after a flush of the write-ahead log on SQLite,
    /// as [`WriteTx::commit`] waits.
    pub async fn durable(self) -> Result<(), sqlx::Error> {
        let Self { conn, wal } = self;
        drop(conn);
        flushed(wal.as_deref()).await
    }
}

impl Deref for Autocommit {
    type Target = AnyConnection;
    fn deref(&self) -> &AnyConnection {
        &self.conn
    }
}

impl DerefMut for Autocommit {
    fn deref_mut(&mut self) -> &mut AnyConnection {
        &mut self.conn
    }
}

/// A writer connection for one statement that may be answered before it is durable
/// ([`Store::autocommit_unflushed`]). It has no `durable`: on PostgreSQL its commits do not
/// wait for the server's flush, so nothing it wrote could be promised durable.
pub struct Unflushed(Autocommit);

impl Unflushed {
    /// Hands the connection back and returns at once: the statement is in the database's log
    /// (on SQLite written to the log file, so it survives Tessera's own crash; on PostgreSQL
    /// in the server's memory) but maybe not yet on stable storage. On SQLite it asks the
    /// group commit for a flush without waiting for it, so the statement is durable a flush
    /// later (a few milliseconds); on PostgreSQL the server's log writer flushes it. A power
    /// cut in between loses it. Fails on SQLite once a flush has failed, as every write then
    /// does until Tessera restarts.
    pub fn written(self) -> Result<(), sqlx::Error> {
        let Autocommit { conn, wal } = self.0;
        drop(conn);
        match wal {
            Some(wal) => wal.request().map(drop).map_err(sqlx::Error::Io),
            None => Ok(()),
        }
    }
}

impl Deref for Unflushed {
    type Target = AnyConnection;
    fn deref(&self) -> &AnyConnection {
        &self.0
    }
}

impl DerefMut for Unflushed {
    fn deref_mut(&mut self) -> &mut AnyConnection {
        &mut self.0
    }
}

/// Returns once everything committed before the call is durable: after a flush of `wal`, the
/// SQLite group commit; at once without one (PostgreSQL, whose commits wait for their flush).
async fn flushed(wal: Option<&durable::WalSync>) -> Result<(), sqlx::Error> {
    match wal {
        Some(wal) => wal.sync().await.map_err(sqlx::Error::Io),
        None => Ok(()),
    }
}

/// Why the store could not be opened at start-up.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error("cannot create the database folder {path}: {source}")]
    Folder {
        path: String,
        source: std::io::Error,
    },
    #[error("cannot connect to the database at {url}: {reason}")]
    Connect { url: String, reason: String },
    #[error("cannot apply database migrations: {0}")]
    Migrate(String),
}

impl Store {
    /// Opens the pools (creating the SQLite file and its folder when needed) and checks that
    /// the database answers. Migrations are applied separately by [`Store::migrate`].
    pub async fn open(config: &Config) -> Result<Self, OpenError> {
        static DRIVERS: Once = Once::new();
        DRIVERS.call_once(sqlx::any::install_default_drivers);

        let kind = config.database_kind();
        let (url, file, plain) = match kind {
            DatabaseKind::Sqlite => sqlite_url(&config.database_url)?,
            DatabaseKind::Postgres => (postgres_url(&config.database_url), None, false),
        };
        let here = file.clone().filter(|_| plain);
        let inline = here.clone().map(|f| Arc::new(inline::Readers::new(f)));
        let inline_writer = here.map(|f| Arc::new(inline::Writer::new(f)));
        let mirror = (kind == DatabaseKind::Postgres && config.database.mirror)
            .then(|| Arc::new(mirror::Mirror::new(url.clone())));
        let wal = file.map(|f| Arc::new(durable::WalSync::new(f)));
        let connect_error = |e: sqlx::Error| OpenError::Connect {
            url: redact_url(&config.database_url),
            reason: one_line(&e.to_string()),
        };
        let options: AnyConnectOptions = url.parse().map_err(connect_error)?;
        let db = &config.database;

        // No pool pings a connection before handing it out: that would be one more round
        // trip per transaction or query (on SQLite a hop to the connection's worker thread
        // and back, on PostgreSQL a network round trip), the main cost of the cheap requests.
        // A dead connection fails its query, which is answered as unavailable (503), and
        // sqlx closes it; `/readyz` and the outage test show service resuming on its own. An
        // abandoned write transaction is rolled back before its connection returns
        // (`WriteTx`'s drop).
        let pool = |max: u32| {
            let mut p = AnyPoolOptions::new()
                .max_connections(max)
                .test_before_acquire(false)
                .acquire_timeout(db.acquire_timeout)
                .idle_timeout(Some(Duration::from_secs(300)));
            if kind == DatabaseKind::Sqlite {
                p = p.after_connect(|conn, _meta| {
                    Box::pin(async move {
                        conn.execute(SQLITE_PRAGMAS).await?;
                        Ok(())
                    })
                });
            }
            p
        };

        // PostgreSQL's `synchronous_commit = off` acknowledges a commit once its log record is
        // in the server's memory; the log writer flushes it within three `wal_writer_delay`s
        // (600 ms by default). The database stays consistent; a crash of the server or the
        // machine in that time loses the commit.
        let unflushed = (kind == DatabaseKind::Postgres).then(|| {
            pool(1)
                .after_connect(|conn, _meta| {
                    Box::pin(async move {
                        conn.execute("SET synchronous_commit = off").await?;
                        Ok(())
                    })
                })
                .connect_lazy_with(options.clone())
        });
        // The first connection is made eagerly so an unreachable database fails start-up
        // with one clear line instead of failing the first request.
        let first = async {
            match kind {
                DatabaseKind::Sqlite => {
                    let writer = pool(1).connect_with(options.clone()).await?;
                    let reader = pool(db.max_connections).connect_with(options).await?;
                    Ok::<_, sqlx::Error>((reader, writer))
                }
                DatabaseKind::Postgres => {
                    let pool = pool(db.max_connections).connect_with(options).await?;
                    Ok((pool.clone(), pool))
                }
            }
        };
        let (reader, writer) = match tokio::time::timeout(db.connect_timeout, first).await {
            Ok(result) => result.map_err(connect_error)?,
            Err(_) => {
                return Err(OpenError::Connect {
                    url: redact_url(&config.database_url),
                    reason: format!(
                        "no answer within {}",
                        humantime::format_duration(db.connect_timeout)
                    ),
                });
            }
        };
        Ok(Self {
            reader,
            writer,
            kind,
            wal,
            unflushed,
            inline,
            inline_writer,
            mirror,
            grants: Arc::default(),
        })
    }

    /// Applies pending migrations; returns how many were applied.
    ///
    /// On PostgreSQL sqlx serialises concurrent migrators with an advisory lock. SQLite has no
    /// such lock, so two processes starting together (replicas, or the CLI beside the server)
    /// can both try to apply one migration; each migration runs in a transaction, so the
    /// loser's attempt rolls back, and it retries against the now-updated history.
    pub async fn migrate(&self) -> Result<usize, OpenError> {
        const ATTEMPTS: u32 = 5;
        let migrator = self.migrator();
        let before = self.applied_migrations().await;
        let mut attempt = 1;
        loop {
            match migrator.run(&self.writer).await {
                Ok(()) => break,
                Err(e) if self.kind == DatabaseKind::Sqlite && attempt < ATTEMPTS => {
                    tracing::debug!(error = %e, attempt, "migration attempt failed; retrying");
                    tokio::time::sleep(Duration::from_millis(50 * u64::from(attempt))).await;
                    attempt += 1;
                }
                Err(e) => return Err(OpenError::Migrate(one_line(&e.to_string()))),
            }
        }
        let after = self.applied_migrations().await;
        Ok(after.saturating_sub(before))
    }

    fn migrator(&self) -> &'static Migrator {
        match self.kind {
            DatabaseKind::Sqlite => &SQLITE_MIGRATIONS,
            DatabaseKind::Postgres => &POSTGRES_MIGRATIONS,
        }
    }

    async fn applied_migrations(&self) -> usize {
        sqlx::query_scalar::<_, i64>("SELECT COUNT(*) FROM _sqlx_migrations WHERE success = TRUE")
            .fetch_one(&self.reader)
            .await
            .map(|n| usize::try_from(n).unwrap_or(0))
            .unwrap_or(0)
    }

    pub fn kind(&self) -> DatabaseKind {
        self.kind
    }

    /// The pool for reads.
    pub fn reader(&self) -> &AnyPool {
        &self.reader
    }

    /// SQLite on a file: the readers that answer point reads on the calling thread.
    pub fn inline(&self) -> Option<&inline::Readers> {
        self.inline.as_deref()
    }

    /// SQLite on a file: the connection for short writes on the calling thread.
    pub fn inline_writer(&self) -> Option<&inline::Writer> {
        self.inline_writer.as_deref()
    }

    /// Runs `write` in a transaction on the calling thread ([`inline::Writer`]), while holding
    /// sqlx's one writer, if that is free at this instant; `NotHere`, with nothing written,
    /// otherwise (PostgreSQL, memory, the writer in use or queued for): the caller makes the
    /// write through sqlx. Holding sqlx's writer keeps the two connections from contending for
    /// SQLite's write lock: a sqlx write meeting a held lock would sleep in SQLite's busy
    /// handler (1, 2, 5… ms) where, queued on the pool, it is woken as the writer comes back.
    pub fn write_here<T>(
        &self,
        write: impl FnOnce(&rusqlite::Connection) -> rusqlite::Result<T>,
    ) -> Result<T, inline::NotHere> {
        let here = self.inline_writer.as_deref().ok_or(inline::NotHere)?;
        let Some(_sqlx_writer) = self.writer.try_acquire() else {
            return Err(here.fall_back(&"sqlx's writer is in use"));
        };
        here.transaction(write)
    }

    /// Returns once everything committed before the call is durable: after a flush of
    /// SQLite's write-ahead log ([`durable::WalSync::sync`]); at once on PostgreSQL, whose
    /// commits wait for their own flush.
    pub async fn flushed(&self) -> Result<(), sqlx::Error> {
        flushed(self.wal.as_deref()).await
    }

    /// PostgreSQL: the in-memory mirror of clients and revoked token ids, when it is current.
    pub fn mirror(&self) -> Option<&mirror::Mirror> {
        self.mirror.as_deref()
    }

    /// Starts keeping the mirror current (a server does; the CLI never trusts one), until
    /// `stop`. `None` without a mirror.
    pub fn spawn_mirror(
        &self,
        stop: tokio_util::sync::CancellationToken,
    ) -> Option<tokio::task::JoinHandle<()>> {
        self.mirror.as_ref().map(|m| m.spawn(stop))
    }

    /// After a committed change to a client or a revocation: returns once this replica's
    /// mirror knows of it (a no-op without a trusted mirror), so the next answer does.
    pub async fn settle(&self) {
        if let Some(mirror) = &self.mirror {
            mirror.settle(&self.writer).await;
        }
    }

    /// A connection from the reader pool.
    pub async fn read(&self) -> Result<sqlx::pool::PoolConnection<Any>, sqlx::Error> {
        self.reader.acquire().await
    }

    /// Starts a write transaction (`BEGIN IMMEDIATE` on SQLite, see the module docs).
    ///
    /// The `BEGIN` runs in a task of its own: if the request is dropped meanwhile (its client
    /// went away), the task still finishes and drops the transaction, which rolls it back. A
    /// `BEGIN` cancelled half-way would otherwise leave the connection inside a transaction
    /// that nothing owns, holding SQLite's write lock for good.
    pub async fn begin_write(&self) -> Result<WriteTx, sqlx::Error> {
        let (writer, kind) = (self.writer.clone(), self.kind);
        let tx = tokio::spawn(async move {
            match kind {
                DatabaseKind::Sqlite => writer.begin_with("BEGIN IMMEDIATE").await,
                DatabaseKind::Postgres => writer.begin().await,
            }
        })
        .await
        .map_err(|_| sqlx::Error::WorkerCrashed)??;
        Ok(WriteTx {
            tx: Some(tx),
            wal: self.wal.clone(),
        })
    }

    /// A writer connection for one statement that needs no transaction around it (see
    /// [`Autocommit`]).
    pub async fn autocommit(&self) -> Result<Autocommit, sqlx::Error> {
        Ok(Autocommit {
            conn: self.writer.acquire().await?,
            wal: self.wal.clone(),
        })
    }

    /// As [`Store::autocommit`], for a statement that may be answered before it is durable
    /// ([`Unflushed::written`]): on SQLite the one writer, as always; on PostgreSQL a
    /// connection of its own with `synchronous_commit = off`, so that its commit does not
    /// wait for the server's flush of its log either.
    pub async fn autocommit_unflushed(&self) -> Result<Unflushed, sqlx::Error> {
        let pool = self.unflushed.as_ref().unwrap_or(&self.writer);
        Ok(Unflushed(Autocommit {
            conn: pool.acquire().await?,
            wal: self.wal.clone(),
        }))
    }

    /// SQLite: copies what the write-ahead log holds into the database (a `PASSIVE`
    /// checkpoint, which never waits for or blocks the writer). A no-op on PostgreSQL.
    ///
    /// Copying is not enough to keep the log short: SQLite starts writing the log from its
    /// beginning again only when a writer finds no reader still using it, and under steady
    /// load some reader always is. The log then grows without end (11 GB, and its 21 MB
    /// index mapped into memory, after nine minutes of the soak). So once the log holds more
    /// than [`WAL_RESET_FRAMES`], a `RESTART` checkpoint holds new writes back, waits
    /// (through the busy timeout) for the log's readers to finish, and starts the log over.
    ///
    /// `RESTART`, not `TRUNCATE`: the log file keeps its blocks, so the next commits overwrite
    /// them in place and their `fdatasync` has no file size or block allocation to journal.
    /// Truncating every few seconds under the login storm freed 16 MiB each time (discarded
    /// at once on a filesystem mounted with `discard`) and made the log grow block by block
    /// again: flushes then took 10–80 ms in bursts, and the storm's `client_credentials` p99,
    /// which waits for its audit row's flush, read 63–87 ms against 28 ms with `RESTART`
    /// (three storms each, alternating). [`WAL_SIZE_LIMIT`] bounds the file.
    ///
    /// The `RESTART` waits for the log's readers for at most [`RESTART_WAIT_MS`], not the
    /// connections' busy timeout: while it waits, SQLite holds every new write back. A reader
    /// that stays (a backup through the `sqlite3` shell, a long report from another process)
    /// then held writes back for five seconds of every six: `client_credentials` fell from
    /// 3,557 to 376 grants/s, and a paced grant waited 7 s. Now the log is started over at
    /// the first second the readers are gone, and meanwhile it grows, as it must (SQLite
    /// cannot reuse frames a reader may still need).
    pub async fn checkpoint(&self) -> Result<(), sqlx::Error> {
        if self.kind == DatabaseKind::Sqlite {
            let mut conn = self.read().await?;
            let (_busy, frames, _copied): (i64, i64, i64) =
                sqlx::query_as("PRAGMA wal_checkpoint(PASSIVE)")
                    .fetch_one(&mut *conn)
                    .await?;
            if frames >= WAL_RESET_FRAMES {
                conn.execute(format!("PRAGMA busy_timeout = {RESTART_WAIT_MS}").as_str())
                    .await?;
                let restarted: Result<(i64, i64, i64), _> =
                    sqlx::query_as("PRAGMA wal_checkpoint(RESTART)")
                        .fetch_one(&mut *conn)
                        .await;
                let restored = conn
                    .execute(format!("PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}").as_str())
                    .await;
                if restored.is_err() {
                    // Never hand a reader with the short wait back to the pool.
                    conn.close_on_drop();
                }
                let (busy, left, _) = restarted?;
                restored?;
                tracing::debug!(frames, busy, left, "started the SQLite log over");
            }
        }
        Ok(())
    }

    /// Whether the database answers a trivial query within `timeout`; on PostgreSQL through
    /// the connection of [`Store::autocommit_unflushed`] too, once it is open. A connection
    /// that broke in an outage fails its next query and is closed, so a replica reads ready
    /// only when its next writes will find working connections.
    pub async fn ping(&self, timeout: Duration) -> bool {
        let unflushed = match &self.unflushed {
            Some(pool) if pool.size() > 0 => answers(pool, timeout).await,
            _ => true,
        };
        unflushed && answers(&self.reader, timeout).await
    }

    pub async fn close(&self) {
        self.reader.close().await;
        self.writer.close().await;
        if let Some(pool) = &self.unflushed {
            pool.close().await;
        }
    }
}

/// Whether `pool` answers a trivial query within `timeout`.
async fn answers(pool: &AnyPool, timeout: Duration) -> bool {
    let query = sqlx::query_scalar::<_, i64>("SELECT 1").fetch_one(pool);
    matches!(tokio::time::timeout(timeout, query).await, Ok(Ok(1)))
}

/// Log frames (pages, 4 KiB each) past which a checkpoint also starts the SQLite log over.
pub const WAL_RESET_FRAMES: i64 = 4_096;

/// Whether a database error means "the database is unreachable" (answer 503 and retry),
/// as opposed to a bug or a rule violation.
pub fn is_unavailable(error: &sqlx::Error) -> bool {
    matches!(
        error,
        sqlx::Error::PoolTimedOut
            | sqlx::Error::PoolClosed
            | sqlx::Error::Io(_)
            | sqlx::Error::Tls(_)
            | sqlx::Error::WorkerCrashed
    ) || matches!(error, sqlx::Error::Database(db) if is_connection_state(db.code().as_deref()))
}

/// SQLSTATE class 08 (connection exception), 57P01-03 (admin shutdown, crash shutdown,
/// cannot connect now) and SQLite's BUSY/LOCKED: all transient.
fn is_connection_state(code: Option<&str>) -> bool {
    match code {
        Some(c) => c.starts_with("08") || matches!(c, "57P01" | "57P02" | "57P03" | "5" | "6"),
        None => false,
    }
}

/// Whether the database aborted the transaction to break a deadlock or a serialization
/// conflict (SQLSTATE 40P01, 40001): the same work, retried, will go through.
pub fn is_retryable(error: &sqlx::Error) -> bool {
    matches!(error, sqlx::Error::Database(db) if matches!(db.code().as_deref(), Some("40P01" | "40001")))
}

/// Whether a database error is a unique-constraint violation (SQLSTATE 23505, SQLite 2067/1555).
pub fn is_unique_violation(error: &sqlx::Error) -> bool {
    matches!(error, sqlx::Error::Database(db) if db.is_unique_violation())
}

/// Turns `sqlite://data/tessera.db` into a URL that creates the file, and creates its folder.
/// Returns that URL, the database file's path (none for an in-memory database) and whether the
/// inline readers and writer may open that file too: only when the URL asks for nothing beyond the open mode.
/// They use SQLite's default VFS and locking, so a URL that names another VFS, `immutable` or
/// read-only mode keeps every statement on sqlx.
fn sqlite_url(url: &str) -> Result<(String, Option<PathBuf>, bool), OpenError> {
    let rest = url.trim_start_matches("sqlite:").trim_start_matches("//");
    let (path, query) = rest.split_once('?').unwrap_or((rest, ""));
    // sqlx percent-decodes the file name (so that it may hold `?` or `#`); the log's flush
    // and the inline readers must name the same file.
    let decoded = percent_encoding::percent_decode_str(path).decode_utf8_lossy();
    let path = decoded.as_ref();
    if !path.is_empty()
        && !path.starts_with(":memory:")
        && let Some(parent) = Path::new(path)
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
    {
        std::fs::create_dir_all(parent).map_err(|source| OpenError::Folder {
            path: parent.display().to_string(),
            source,
        })?;
    }
    let file = (!path.is_empty() && !path.starts_with(":memory:") && !query.contains("memory"))
        .then(|| PathBuf::from(path));
    let plain = query
        .split('&')
        .all(|option| matches!(option, "" | "mode=rwc" | "mode=rw"));
    let url = if query.contains("mode=") {
        url.to_owned()
    } else if query.is_empty() {
        format!("{url}?mode=rwc")
    } else {
        format!("{url}&mode=rwc")
    };
    Ok((url, file, plain))
}

/// A PostgreSQL URL as Tessera connects with it: on this machine's loopback, and with no TLS
/// setting in the URL (`ssl…`) or the environment (`PGSSL…`), without TLS.
///
/// Unset, `sslmode` is `prefer`: TLS if the server offers it, which a packaged PostgreSQL does
/// (Debian's turns `ssl` on with a self-signed certificate), so every query on loopback was
/// encrypted and decrypted on both sides of the same cores. `prefer` verifies nothing and
/// settles for plain text whenever the server does not offer TLS; on loopback there is no
/// wire to protect, only the machine's own processes, which see no more without it. Measured
/// side by side (BENCHMARKS.md, *Tuning*): TLS on loopback cost PostgreSQL's backends 16–114 µs
/// of CPU per refresh. A URL or environment with any TLS setting (`sslmode`, even `prefer`;
/// `sslrootcert`, with which sqlx verifies the server) is kept as written, and a remote host
/// is left alone.
fn postgres_url(url: &str) -> String {
    let Ok(mut parsed) = url::Url::parse(url) else {
        return url.to_owned(); // sqlx reports what is wrong with it
    };
    // Any TLS setting counts as asking: a root certificate alone makes sqlx verify the server.
    let tls_asked = parsed.query_pairs().any(|(k, _)| k.starts_with("ssl"))
        || ["PGSSLMODE", "PGSSLROOTCERT", "PGSSLCERT", "PGSSLKEY"]
            .iter()
            .any(|var| std::env::var_os(var).is_some());
    // `postgres:` is not a scheme the URL standard knows, so its host comes as text.
    let on_loopback = parsed.host_str().is_some_and(|host| {
        host.eq_ignore_ascii_case("localhost")
            || host
                .trim_start_matches('[')
                .trim_end_matches(']')
                .parse::<std::net::IpAddr>()
                .is_ok_and(|ip| ip.is_loopback())
    });
    // A `host` parameter names another server (or a socket folder): left as asked.
    let elsewhere = parsed
        .query_pairs()
        .any(|(k, _)| k == "host" || k == "hostaddr");
    if tls_asked || !on_loopback || elsewhere {
        return url.to_owned();
    }
    parsed.query_pairs_mut().append_pair("sslmode", "disable");
    parsed.into()
}

/// The URL with any password replaced, for error messages and logs.
pub fn redact_url(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut u) if u.password().is_some() => {
            let _ = u.set_password(Some("***"));
            u.to_string()
        }
        _ => url.to_owned(),
    }
}

/// Deletes up to `limit` rows of `table` whose `column` (`expires_at`, or `at` for audit
/// events) is before `before`, through that column's index; returns how many went. `table`,
/// `key` and `column` are the sweeper's constants, never input.
pub async fn delete_expired(
    conn: &mut AnyConnection,
    table: &'static str,
    key: &'static str,
    column: &'static str,
    before: i64,
    limit: i64,
) -> Result<u64, sqlx::Error> {
    let sql = format!(
        "DELETE FROM {table} WHERE {key} IN \
         (SELECT {key} FROM {table} WHERE {column} < $1 LIMIT $2)"
    );
    let done = sqlx::query(&sql)
        .bind(before)
        .bind(limit)
        .execute(conn)
        .await?;
    Ok(done.rows_affected())
}

/// Seconds since the Unix epoch: the unit of every timestamp column.
pub fn now_unix() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A migrated store on a SQLite file in `dir`, and its group commit.
    async fn sqlite_file(dir: &tempfile::TempDir) -> (Store, Arc<durable::WalSync>) {
        let config = Config {
            database_url: format!("sqlite://{}", dir.path().join("t.db").display()),
            ..Config::default()
        };
        let store = Store::open(&config).await.unwrap();
        store.migrate().await.unwrap();
        let wal = store.wal.clone().expect("a SQLite file has a group commit");
        (store, wal)
    }

    /// A session written on the calling thread is answered only once a flush of the log
    /// covers it, as every write through sqlx is.
    #[tokio::test]
    async fn a_session_written_here_waits_for_the_flush() {
        let dir = tempfile::tempdir().unwrap();
        let (store, wal) = sqlite_file(&dir).await;
        // The migrations' connection is handed back to the pool in a task of its own (sqlx
        // pings it first); until then the writer is not free and a save goes to the pool.
        while store.writer.num_idle() == 0 {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        let before = wal.tickets();
        wal.hold_flushes(true);
        let save = tokio::spawn({
            let store = store.clone();
            async move {
                let session = sessions::SaveSession {
                    id: "visitor",
                    user_id: None,
                    data: "{}",
                    expires_at: i64::MAX / 2,
                    user_agent: "",
                    ip: "",
                    now: 1,
                };
                sessions::save(&store, &session, true, None).await
            }
        });
        tokio::time::sleep(Duration::from_millis(100)).await;
        // Committed here (no trip to the pool), and still waiting for its flush.
        assert_eq!(store.inline_writer().unwrap().counts(), (1, 0));
        assert_eq!(wal.tickets(), before + 1);
        assert!(!save.is_finished());
        wal.hold_flushes(false);
        assert!(save.await.unwrap().unwrap());
        assert!(wal.covers(before + 1));

        // While sqlx's one writer is taken, even before it has locked anything, nothing is
        // written here: the two never contend for SQLite's lock.
        let taken = store.autocommit().await.unwrap();
        assert_eq!(store.write_here(|_| Ok(())), Err(inline::NotHere));
        assert_eq!(store.inline_writer().unwrap().counts(), (1, 1));
        drop(taken);
    }

    #[tokio::test]
    async fn a_single_statement_waits_for_the_flush_and_hands_the_writer_back() {
        let dir = tempfile::tempdir().unwrap();
        let (store, wal) = sqlite_file(&dir).await;
        let before = wal.tickets();

        let mut conn = store.autocommit().await.unwrap();
        let event = audit::NewEvent {
            kind: "test",
            outcome: "success",
            ..Default::default()
        };
        audit::insert(&mut conn, &event, 1).await.unwrap();
        // The one writer is taken while the statement runs…
        assert!(store.writer.try_acquire().is_none());
        conn.durable().await.unwrap();
        // …and `durable` waited for a flush of the log that covers it, and handed the writer
        // back.
        assert_eq!(wal.tickets(), before + 1);
        assert!(store.writer.try_acquire().is_some());
        let rows = audit::tail(&mut store.read().await.unwrap(), 10)
            .await
            .unwrap();
        assert_eq!(rows.last().map(|r| r.kind.as_str()), Some("test"));
    }

    /// A row answered before its flush is answered while the disk holds every flush back,
    /// and is flushed after; a durable row waits for its flush.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_unflushed_row_is_answered_while_flushes_stall_and_flushed_after() {
        let dir = tempfile::tempdir().unwrap();
        let (store, wal) = sqlite_file(&dir).await;
        let event = |kind: &str| audit::OwnedEvent {
            kind: kind.into(),
            outcome: "success".into(),
            at: 1,
            ..Default::default()
        };
        let kinds = |store: Store| async move {
            let rows = audit::tail(&mut store.read().await.unwrap(), 10)
                .await
                .unwrap();
            rows.into_iter().map(|r| r.kind).collect::<Vec<_>>()
        };
        wal.hold_flushes(true);
        let before = wal.tickets();
        tokio::time::timeout(
            Duration::from_secs(10),
            store.append_audit_unflushed(event("issued")),
        )
        .await
        .expect("answered with the flushes held back")
        .unwrap();
        assert!(kinds(store.clone()).await.contains(&"issued".to_owned()));
        let flush = before + 1;
        assert!(wal.tickets() >= flush, "a flush was asked for");
        assert!(!wal.covers(flush));

        let durable = tokio::spawn({
            let store = store.clone();
            async move { store.append_audit(event("durable")).await }
        });
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert!(!durable.is_finished(), "a durable row waits for its flush");

        wal.hold_flushes(false);
        tokio::time::timeout(Duration::from_secs(10), durable)
            .await
            .expect("answered once flushed")
            .unwrap()
            .unwrap();
        assert!(wal.covers(flush), "the unflushed row was flushed");
        assert!(kinds(store).await.contains(&"durable".to_owned()));
    }

    #[test]
    fn the_log_size_limit_is_the_one_set_on_connections() {
        assert!(SQLITE_PRAGMAS.contains(&format!("PRAGMA journal_size_limit = {WAL_SIZE_LIMIT};")));
        assert!(SQLITE_PRAGMAS.contains(&format!("PRAGMA busy_timeout = {BUSY_TIMEOUT_MS};")));
    }

    /// A checkpoint, then a small write.
    async fn checkpoint_then_write(store: &Store) {
        store.checkpoint().await.unwrap();
        let mut tx = store.begin_write().await.unwrap();
        tx.execute("INSERT INTO filler VALUES (x'00')")
            .await
            .unwrap();
        tx.commit().await.unwrap();
    }

    /// A reader that keeps the log in use (another process's long read) must not let the
    /// checkpoint hold writes back for the whole busy timeout; once it is gone, the log is
    /// started over; and the connection the checkpoint used waits the full timeout again.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_reader_that_stays_cannot_make_the_checkpoint_hold_writes_back() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("t.db");
        let config = Config {
            database_url: format!("sqlite://{}", file.display()),
            database: crate::config::DatabaseConfig {
                max_connections: 1,
                ..Config::default().database
            },
            ..Config::default()
        };
        let store = Store::open(&config).await.unwrap();
        // More than `WAL_RESET_FRAMES` pages of log: 20 rows of 1 MiB.
        let mut tx = store.begin_write().await.unwrap();
        tx.execute("CREATE TABLE filler (b BLOB)").await.unwrap();
        for _ in 0..20 {
            tx.execute("INSERT INTO filler VALUES (zeroblob(1048576))")
                .await
                .unwrap();
        }
        tx.commit().await.unwrap();

        // Another process's read transaction, on the log as it stands.
        let reader = rusqlite::Connection::open(&file).unwrap();
        reader.execute_batch("BEGIN").unwrap();
        let rows: i64 = reader
            .query_row("SELECT COUNT(*) FROM filler", [], |r| r.get(0))
            .unwrap();
        assert_eq!(rows, 20);

        // Held back by the reader, the restart gives up after its short wait: a write right
        // after it is not kept waiting for the busy timeout (5 s) behind it.
        let started = std::time::Instant::now();
        checkpoint_then_write(&store).await;
        assert!(
            started.elapsed() < Duration::from_millis(BUSY_TIMEOUT_MS / 2),
            "the checkpoint held the write back for {:?}",
            started.elapsed()
        );
        let frames = |store: &Store| {
            let store = store.clone();
            async move {
                let (_, frames, _): (i64, i64, i64) =
                    sqlx::query_as("PRAGMA wal_checkpoint(PASSIVE)")
                        .fetch_one(&mut *store.read().await.unwrap())
                        .await
                        .unwrap();
                frames
            }
        };
        assert!(
            frames(&store).await >= WAL_RESET_FRAMES,
            "the reader keeps the log"
        );

        // The reader gone, the next checkpoint starts the log over: the next write goes to
        // its beginning.
        reader.execute_batch("COMMIT").unwrap();
        drop(reader);
        checkpoint_then_write(&store).await;
        assert!(frames(&store).await < 10, "the log was started over");

        // The pool's one reader waits the full timeout again.
        let timeout: i64 = sqlx::query_scalar("PRAGMA busy_timeout")
            .fetch_one(&mut *store.read().await.unwrap())
            .await
            .unwrap();
        assert_eq!(u64::try_from(timeout).unwrap(), BUSY_TIMEOUT_MS);
    }

    #[test]
    fn postgres_on_loopback_goes_without_tls_unless_asked() {
        // (No PGSSL* variable is set in the test environment.)
        let cases = [
            (
                "postgres://u@127.0.0.1:5432/db",
                "postgres://u@127.0.0.1:5432/db?sslmode=disable",
            ),
            (
                "postgres://u@localhost/db?application_name=x",
                "postgres://u@localhost/db?application_name=x&sslmode=disable",
            ),
            (
                "postgres://u@[::1]/db",
                "postgres://u@[::1]/db?sslmode=disable",
            ),
            (
                "postgres://u@127.0.0.1/db?sslmode=require",
                "postgres://u@127.0.0.1/db?sslmode=require",
            ),
            (
                "postgres://u@127.0.0.1/db?sslmode=prefer",
                "postgres://u@127.0.0.1/db?sslmode=prefer",
            ),
            (
                "postgres://u@localhost/db?sslrootcert=/etc/ca.pem",
                "postgres://u@localhost/db?sslrootcert=/etc/ca.pem",
            ),
            ("postgres://u@db.internal/db", "postgres://u@db.internal/db"),
            ("postgres://u@10.0.0.5/db", "postgres://u@10.0.0.5/db"),
            (
                "postgres://u@localhost/db?host=/var/run/postgresql",
                "postgres://u@localhost/db?host=/var/run/postgresql",
            ),
        ];
        for (given, used) in cases {
            assert_eq!(postgres_url(given), used, "{given}");
        }
    }

    #[test]
    fn sqlite_urls_get_create_mode() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("a/b/t.db");
        let url = format!("sqlite://{}", db.display());
        assert_eq!(
            sqlite_url(&url).unwrap(),
            (format!("{url}?mode=rwc"), Some(db.clone()), true)
        );
        assert!(dir.path().join("a/b").is_dir());
        assert_eq!(
            sqlite_url("sqlite://x.db?mode=ro").unwrap(),
            (
                "sqlite://x.db?mode=ro".to_owned(),
                Some(PathBuf::from("x.db")),
                false
            )
        );
        // Another VFS or `immutable`: the inline paths would not share sqlx's locking.
        assert!(!sqlite_url("sqlite://x.db?vfs=unix-dotfile").unwrap().2);
        assert!(
            !sqlite_url("sqlite://x.db?immutable=true&mode=rw")
                .unwrap()
                .2
        );
        assert!(sqlite_url("sqlite://x.db?mode=rw").unwrap().2);
        assert_eq!(sqlite_url("sqlite::memory:").unwrap().1, None);
        // The file sqlx opens: its name percent-decoded.
        let spaced = format!("sqlite://{}/my%20data/t.db", dir.path().display());
        assert_eq!(
            sqlite_url(&spaced).unwrap().1,
            Some(dir.path().join("my data/t.db"))
        );
        assert!(dir.path().join("my data").is_dir());
    }

    #[test]
    fn passwords_are_redacted() {
        assert_eq!(
            redact_url("postgres://u:secret@h/db"),
            "postgres://u:***@h/db"
        );
        assert_eq!(redact_url("postgres://u@h/db"), "postgres://u@h/db");
    }
}
