//! Batched grant transactions.
//!
//! SQLite has one writer, and through sqlx every statement is a round trip to that
//! connection's worker thread (on PostgreSQL, a network round trip and server work). A token grant (code exchange, refresh) is a handful of
//! statements; in a transaction of its own it also pays `BEGIN`, its audit row and `COMMIT`.
//! Here concurrent grants share one transaction: their statements run one grant after another,
//! their audit rows go in with one multi-row `INSERT`, and one `COMMIT` (and one flush of the
//! log) covers them all. Each grant is answered only after that commit is durable.
//!
//! A grant's work is a closure that may run more than once: when one grant's statement fails,
//! the whole batch rolls back and every grant of it runs again in a transaction of its own, so
//! a failure is reported to its grant alone. The work therefore takes owned inputs and decides
//! everything from what it reads inside the transaction. Grants in one batch see each other's
//! writes, exactly as if they had run one after the other.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};

use sqlx::AnyConnection;
use tokio::sync::{mpsc, oneshot};

use super::Store;
use super::audit::{self, OwnedEvent};
use crate::config::DatabaseKind;

/// The audit rows a grant's work records; written with the batch.
pub type Audit = Vec<OwnedEvent>;

/// A boxed future borrowing the transaction for `'c`.
pub type WorkFuture<'c, T> = Pin<Box<dyn Future<Output = Result<T, sqlx::Error>> + Send + 'c>>;

/// Hands a finished grant its result, after the commit.
type Deliver = Box<dyn FnOnce() + Send>;

type Work =
    Box<dyn for<'c> FnMut(&'c mut AnyConnection, &'c mut Audit) -> WorkFuture<'c, Deliver> + Send>;

pub(super) struct Job {
    work: Work,
    fail: Box<dyn FnOnce(sqlx::Error) + Send>,
}

/// Grants per batch at most.
const BATCH: usize = 64;

/// Batches in flight at once on PostgreSQL.
const POSTGRES_BATCHES: usize = 4;

pub(super) type Queue = mpsc::UnboundedSender<Job>;

impl Store {
    /// Runs a grant's writes in a write transaction shared with concurrent grants (see the
    /// module docs) and returns their result once it is durable. On PostgreSQL, too: there
    /// each statement is a network round trip and work for the server's own process on the
    /// same cores, and a batch spends one `BEGIN`, one audit `INSERT` and one `COMMIT` for
    /// all its grants.
    pub async fn write_grant<T, F>(&self, mut work: F) -> Result<T, sqlx::Error>
    where
        T: Send + 'static,
        F: for<'c> FnMut(&'c mut AnyConnection, &'c mut Audit) -> WorkFuture<'c, T>
            + Send
            + 'static,
    {
        let (answer, result) = oneshot::channel::<Result<T, sqlx::Error>>();
        let answer = Arc::new(Mutex::new(Some(answer)));
        let on_failure = answer.clone();
        let job = Job {
            work: Box::new(move |conn, rows| {
                let running = work(conn, rows);
                let answer = answer.clone();
                Box::pin(async move {
                    let value = running.await?;
                    Ok(Box::new(move || send(&answer, Ok(value))) as Deliver)
                })
            }),
            fail: Box::new(move |error| send(&on_failure, Err(error))),
        };
        let queue = self.grants.get_or_init(|| {
            let (queue, jobs) = mpsc::unbounded_channel();
            // The task's store has a queue of its own (never started), so it does not keep
            // this one open: the tasks end when the last user of the queue is gone.
            let store = Self {
                grants: Arc::default(),
                ..self.clone()
            };
            // SQLite has one writer, so one batch at a time. PostgreSQL runs transactions
            // side by side: several batches at once keep its round trips overlapping.
            let batches = match store.kind {
                DatabaseKind::Sqlite => 1,
                DatabaseKind::Postgres => POSTGRES_BATCHES,
            };
            let jobs = Arc::new(tokio::sync::Mutex::new(jobs));
            for _ in 0..batches {
                tokio::spawn(run(store.clone(), jobs.clone()));
            }
            queue
        });
        queue.send(job).map_err(|_| sqlx::Error::PoolClosed)?;
        result.await.map_err(|_| sqlx::Error::PoolClosed)?
    }
}

impl Store {
    /// Records an audit event on its own, durably, before returning, for requests whose only
    /// write it is (`client_credentials`): a grant with no statements of its own, so it joins
    /// the batch and its row goes in with the batch's one multi-row `INSERT`. An event that
    /// belongs with other writes goes in their transaction instead ([`audit::insert`]).
    pub async fn append_audit(&self, event: OwnedEvent) -> Result<(), sqlx::Error> {
        self.write_grant(move |_, rows| {
            rows.push(event.clone());
            Box::pin(async { Ok(()) })
        })
        .await
    }
}

fn send<T>(answer: &Mutex<Option<oneshot::Sender<T>>>, value: T) {
    let sender = answer.lock().unwrap_or_else(|e| e.into_inner()).take();
    if let Some(sender) = sender {
        let _ = sender.send(value);
    }
}

async fn run(store: Store, jobs: Arc<tokio::sync::Mutex<mpsc::UnboundedReceiver<Job>>>) {
    let mut batch = Vec::with_capacity(BATCH);
    while jobs.lock().await.recv_many(&mut batch, BATCH).await > 0 {
        match transaction(&store, &mut batch).await {
            Ok(deliveries) => deliveries.into_iter().for_each(|deliver| deliver()),
            Err(error) if batch.len() == 1 => {
                if let Some(job) = batch.pop() {
                    (job.fail)(error);
                }
            }
            Err(_) => {
                // Find the grant that failed: each runs again on its own.
                for mut job in batch.drain(..) {
                    match transaction(&store, std::slice::from_mut(&mut job)).await {
                        Ok(deliveries) => deliveries.into_iter().for_each(|deliver| deliver()),
                        Err(error) => (job.fail)(error),
                    }
                }
            }
        }
        batch.clear();
    }
}

/// One transaction for `jobs`: their work in order, their audit rows, the commit.
async fn transaction(store: &Store, jobs: &mut [Job]) -> Result<Vec<Deliver>, sqlx::Error> {
    let mut tx = store.begin_write().await?;
    let mut rows = Audit::new();
    let mut deliveries = Vec::with_capacity(jobs.len());
    for job in jobs.iter_mut() {
        deliveries.push((job.work)(&mut tx, &mut rows).await?);
    }
    audit::insert_many(&mut tx, &rows).await?;
    tx.commit().await?;
    Ok(deliveries)
}
