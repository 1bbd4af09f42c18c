//! Periodic clean-up of expired rows (sessions, links, codes, refresh tokens, revoked jtis)
//! and of audit events older than `audit_retention`.
//!
//! Rows go in batches of [`BATCH`], each batch its own short transaction followed by a rest as
//! long as the batch took, so a table with millions of expired rows never holds SQLite's one
//! writer (or a PostgreSQL transaction) for long and the sweep takes at most half of the
//! resources it shares with requests. Every batch is an idempotent `DELETE … WHERE
//! expired`, so any number of replicas can sweep at once.

use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::store::{self, Store};

/// Rows deleted per transaction.
pub const BATCH: i64 = 5_000;

/// A table the sweeper keeps bounded: its key column, and how long past `expires_at` a row is
/// kept.
struct Expiring {
    table: &'static str,
    key: &'static str,
    /// The time column compared: `expires_at`, or `at` for audit events.
    column: &'static str,
    grace: Grace,
}

enum Grace {
    Seconds(i64),
    /// `tokens.code_replay_window`.
    CodeReplayWindow,
    /// `audit_retention`.
    AuditRetention,
}

/// How long rows outlive their time column, from the configuration.
#[derive(Debug, Clone, Copy)]
pub struct Retention {
    pub code_replay_window: Duration,
    pub audit: Duration,
}

impl Retention {
    pub fn of(config: &crate::Config) -> Self {
        Self {
            code_replay_window: config.tokens.code_replay_window,
            audit: config.audit_retention,
        }
    }

    fn seconds(self, grace: &Grace) -> i64 {
        let secs = |d: Duration| i64::try_from(d.as_secs()).unwrap_or(i64::MAX);
        match grace {
            Grace::Seconds(s) => *s,
            Grace::CodeReplayWindow => secs(self.code_replay_window),
            Grace::AuditRetention => secs(self.audit),
        }
    }
}

const EXPIRING: &[Expiring] = &[
    Expiring {
        table: "sessions",
        key: "id",
        column: "expires_at",
        grace: Grace::Seconds(0),
    },
    // A used link stays a day, so a second click says "already used" rather than "unknown".
    Expiring {
        table: "one_time_tokens",
        key: "token_hash",
        column: "expires_at",
        grace: Grace::Seconds(86_400),
    },
    // A code stays past expiry (an hour by default), so a late replay still revokes its grant.
    Expiring {
        table: "auth_codes",
        key: "code_hash",
        column: "expires_at",
        grace: Grace::CodeReplayWindow,
    },
    Expiring {
        table: "refresh_tokens",
        key: "token_hash",
        column: "expires_at",
        grace: Grace::Seconds(0),
    },
    Expiring {
        table: "revoked_jti",
        key: "jti",
        column: "expires_at",
        grace: Grace::Seconds(0),
    },
    // The security log is kept for `audit_retention` (a year by default), then dropped.
    Expiring {
        table: "audit_events",
        key: "id",
        column: "at",
        grace: Grace::AuditRetention,
    },
];

/// Deletes every expired row, batch by batch; returns how many rows went.
pub async fn sweep(store: &Store, retention: Retention) -> Result<u64, sqlx::Error> {
    let now = store::now_unix();
    let mut total = 0;
    for t in EXPIRING {
        let before = now.saturating_sub(retention.seconds(&t.grace));
        loop {
            let started = std::time::Instant::now();
            let mut tx = store.begin_write().await?;
            let n = store::delete_expired(&mut tx, t.table, t.key, t.column, before, BATCH).await?;
            tx.commit().await?;
            total += n;
            if n < u64::try_from(BATCH).unwrap_or(u64::MAX) {
                break;
            }
            // Rest as long as the batch took: the sweep takes at most half of what it
            // competes for (the writer, the database's CPU), so a backlog of millions is
            // cleared without crowding out the requests served meanwhile.
            tokio::time::sleep(started.elapsed()).await;
        }
    }
    Ok(total)
}

/// How often the SQLite log is checkpointed ([`Store::checkpoint`]).
pub const CHECKPOINT_INTERVAL: Duration = Duration::from_secs(1);

/// Starts the sweeper (every `interval`) and, on SQLite, the checkpointer; both end with
/// `stop`.
pub fn spawn(
    store: Store,
    interval: Duration,
    retention: Retention,
    stop: CancellationToken,
) -> tokio::task::JoinHandle<()> {
    // Two tasks, not one loop: a sweep of a large backlog runs for minutes, and the log must
    // keep being checkpointed meanwhile.
    let checkpointer = (store.kind() == crate::config::DatabaseKind::Sqlite).then(|| {
        let store = store.clone();
        every(CHECKPOINT_INTERVAL, stop.clone(), move || {
            let store = store.clone();
            async move {
                if let Err(error) = store.checkpoint().await {
                    tracing::debug!(%error, "checkpoint failed; will retry");
                }
            }
        })
    });
    let sweeper = every(interval, stop, move || {
        let store = store.clone();
        async move {
            match sweep(&store, retention).await {
                Ok(0) => {}
                Ok(rows) => tracing::info!(rows, "swept expired rows"),
                Err(error) => tracing::warn!(%error, "sweep failed; will retry"),
            }
        }
    });
    tokio::spawn(async move {
        let _ = sweeper.await;
        if let Some(checkpointer) = checkpointer {
            let _ = checkpointer.await;
        }
    })
}

/// Runs `work` now and then every `interval` (never two at once) until `stop`.
fn every<F, W>(
    interval: Duration,
    stop: CancellationToken,
    mut work: F,
) -> tokio::task::JoinHandle<()>
where
    F: FnMut() -> W + Send + 'static,
    W: std::future::Future<Output = ()> + Send,
{
    tokio::spawn(async move {
        let mut ticker = tokio::time::interval(interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = stop.cancelled() => break,
                _ = ticker.tick() => work().await,
            }
        }
    })
}
