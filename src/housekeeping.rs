//! Periodic clean-up of expired rows (sessions, links, codes, refresh tokens, revoked jtis). Every statement is an idempotent `DELETE … WHERE
//! expired`, so any number of replicas can run it at once.

use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::store::{self, Store};

/// How often expired rows are swept.
pub const INTERVAL: Duration = Duration::from_secs(600);

/// Deletes expired sessions and one-time tokens; returns how many rows went.
pub async fn sweep(store: &Store) -> Result<u64, sqlx::Error> {
    let now = store::now_unix();
    let mut tx = store.begin_write().await?;
    let sessions = store::sessions::sweep(&mut tx, now).await?;
    let tokens = store::tokens::sweep(&mut tx, now).await?;
    let grants = store::grants::sweep(&mut tx, now).await?;
    tx.commit().await?;
    Ok(sessions + tokens + grants)
}

pub fn spawn(store: Store, stop: CancellationToken) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut ticker = tokio::time::interval(INTERVAL);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = stop.cancelled() => break,
                _ = ticker.tick() => match sweep(&store).await {
                    Ok(0) => {}
                    Ok(rows) => tracing::info!(rows, "swept expired rows"),
                    Err(error) => tracing::warn!(%error, "sweep failed; will retry"),
                },
            }
        }
    })
}
