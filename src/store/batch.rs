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

/// What a grant hands the batch.
pub(super) enum Job {
    /// Statements of its own, run in the batch's transaction.
    Work {
        work: Work,
        fail: Box<dyn FnOnce(sqlx::Error) + Send>,
    },
    /// One audit row and nothing else ([`Store::append_audit`]). A batch of only these needs
    /// no transaction: its one multi-row `INSERT` is atomic and durable on its own, so it is
    /// one round trip instead of `BEGIN`, `INSERT`, `COMMIT`.
    Row {
        event: OwnedEvent,
        answer: Answer<()>,
    },
}

/// When a lone audit row's caller is answered: after the row is durable
/// ([`Store::append_audit`]), or once it is written, its flush following
/// ([`Store::append_audit_unflushed`]). Each has a queue of its own, so a batch is all one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Flush {
    BeforeAnswer,
    AfterAnswer,
}

/// Where a grant's result goes; taken once, by whichever of success or failure comes first.
type Answer<T> = Arc<Mutex<Option<oneshot::Sender<Result<T, sqlx::Error>>>>>;

impl Job {
    fn fail(self, error: sqlx::Error) {
        match self {
            Job::Work { fail, .. } => fail(error),
            Job::Row { answer, .. } => send(&answer, Err(error)),
        }
    }
}

/// Grants per batch at most.
const BATCH: usize = 64;

/// Grant batches in flight at once on PostgreSQL, at most (see [`postgres_batches`]).
const POSTGRES_BATCHES: usize = 4;

/// Grant batches in flight at once on PostgreSQL with a pool of `pool_size` connections:
/// [`POSTGRES_BATCHES`], but never more than half the pool, so that reads and the other
/// writes always find a connection beside them.
fn postgres_batches(pool_size: u32) -> usize {
    usize::try_from(pool_size / 2)
        .unwrap_or(usize::MAX)
        .clamp(1, POSTGRES_BATCHES)
}

type Queue = mpsc::UnboundedSender<Job>;

/// The writers' queues: grants with statements of their own, lone audit rows answered once
/// durable, and lone audit rows answered once written.
#[derive(Debug)]
pub(super) struct Queues {
    work: Queue,
    rows: Queue,
    unflushed: Queue,
}

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
        let answer: Answer<T> = Arc::new(Mutex::new(Some(answer)));
        let on_failure = answer.clone();
        let job = Job::Work {
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
        enqueue(&self.queues().work, job)?;
        result.await.map_err(|_| sqlx::Error::PoolClosed)?
    }

    /// The batch writers' queues, the writers started at the first use.
    ///
    /// Grants and lone audit rows queue apart, and the rows answered before their flush apart
    /// from the others, so that none of them waits behind a batch that waits for a flush. A
    /// PostgreSQL commit waits for a flush of its log, so what a batch saves is commits, and a
    /// batch is as large as what queued while the one before it ran. Lone rows are cheap to
    /// write, so one writer for them gathers the most into each commit. A grant batch waits on
    /// round trips and on its commit's flush, so on PostgreSQL four of them run at once and
    /// each one's waiting overlaps the others' (measured against two, three and six: see
    /// BENCHMARKS.md).
    fn queues(&self) -> &Queues {
        self.grants.get_or_init(|| {
            // The tasks' store has queues of its own (never started), so it does not keep
            // these open: the tasks end when the last user of the queues is gone.
            let store = Self {
                grants: Arc::default(),
                ..self.clone()
            };
            // SQLite has one writer, so one grant batch at a time.
            let grant_batches = match store.kind {
                DatabaseKind::Sqlite => 1,
                DatabaseKind::Postgres => {
                    postgres_batches(store.writer.options().get_max_connections())
                }
            };
            Queues {
                work: start(&store, grant_batches, Flush::BeforeAnswer),
                rows: start(&store, 1, Flush::BeforeAnswer),
                unflushed: start(&store, 1, Flush::AfterAnswer),
            }
        })
    }
}

fn enqueue(queue: &Queue, job: Job) -> Result<(), sqlx::Error> {
    queue.send(job).map_err(|_| sqlx::Error::PoolClosed)
}

/// A queue and `writers` tasks writing its batches.
fn start(store: &Store, writers: usize, flush: Flush) -> Queue {
    let (queue, jobs) = mpsc::unbounded_channel();
    let jobs = Arc::new(tokio::sync::Mutex::new(jobs));
    for _ in 0..writers {
        tokio::spawn(run(store.clone(), jobs.clone(), flush));
    }
    queue
}

impl Store {
    /// Records an audit event on its own, durably, before returning, for requests whose only
    /// write it is (the account pages' `signed_in`, `sign_in_failed`…): rows that queued
    /// together go in with one multi-row `INSERT`. An event that belongs with other writes
    /// goes in their transaction instead ([`audit::insert`]).
    pub async fn append_audit(&self, event: OwnedEvent) -> Result<(), sqlx::Error> {
        self.append_row(event, Flush::BeforeAnswer).await
    }

    /// Records an audit event on its own and returns once it is written, before it is
    /// durable: for a row that records an issuance and changes nothing else, where nothing
    /// any later request relies on waits for the disk (`client_credentials`, whose token is
    /// a self-contained JWT). The row is in the log when the caller hears back, so Tessera's
    /// own crash cannot lose it; its flush follows at once on SQLite (a group-commit flush
    /// asked for and not waited on), and within 600 ms on PostgreSQL (the server's log
    /// writer, see [`Store::autocommit_unflushed`]). A power cut in that time loses the row.
    ///
    /// Why: a flush takes a fraction of a millisecond on a quiet machine, and 4–19 ms each for
    /// most of a second when the cores or the disk are crowded; a request that waits for one
    /// waits for that, where its own work is one signature (BENCHMARKS.md, *The login storm's
    /// tail*). A write a later request depends on (a code, a refresh token, a session, a
    /// revocation) still waits for its flush.
    pub async fn append_audit_unflushed(&self, event: OwnedEvent) -> Result<(), sqlx::Error> {
        self.append_row(event, Flush::AfterAnswer).await
    }

    async fn append_row(&self, event: OwnedEvent, flush: Flush) -> Result<(), sqlx::Error> {
        let (answer, result) = oneshot::channel();
        let answer = Arc::new(Mutex::new(Some(answer)));
        let queues = self.queues();
        let queue = match flush {
            Flush::BeforeAnswer => &queues.rows,
            Flush::AfterAnswer => &queues.unflushed,
        };
        enqueue(queue, Job::Row { event, answer })?;
        result.await.map_err(|_| sqlx::Error::PoolClosed)?
    }
}

fn send<T>(answer: &Mutex<Option<oneshot::Sender<T>>>, value: T) {
    let sender = answer.lock().unwrap_or_else(|e| e.into_inner()).take();
    if let Some(sender) = sender {
        let _ = sender.send(value);
    }
}

async fn run(
    store: Store,
    jobs: Arc<tokio::sync::Mutex<mpsc::UnboundedReceiver<Job>>>,
    flush: Flush,
) {
    let mut batch = Vec::with_capacity(BATCH);
    while jobs.lock().await.recv_many(&mut batch, BATCH).await > 0 {
        match transaction(&store, &mut batch, flush).await {
            Ok(deliveries) => deliveries.into_iter().for_each(|deliver| deliver()),
            Err(error) if batch.len() == 1 => {
                if let Some(job) = batch.pop() {
                    job.fail(error);
                }
            }
            Err(_) => {
                // Find the grant that failed: each runs again on its own.
                for mut job in batch.drain(..) {
                    match transaction(&store, std::slice::from_mut(&mut job), flush).await {
                        Ok(deliveries) => deliveries.into_iter().for_each(|deliver| deliver()),
                        Err(error) => job.fail(error),
                    }
                }
            }
        }
        batch.clear();
    }
}

/// One transaction for `jobs`: their work in order, their audit rows, the commit. When no job
/// has statements of its own, the audit rows' one `INSERT` runs alone, outside a transaction,
/// and with [`Flush::AfterAnswer`] its callers hear back once it is written.
async fn transaction(
    store: &Store,
    jobs: &mut [Job],
    flush: Flush,
) -> Result<Vec<Deliver>, sqlx::Error> {
    let mut rows = Audit::new();
    let mut deliveries: Vec<Deliver> = Vec::with_capacity(jobs.len());
    let any_work = jobs.iter().any(|job| matches!(job, Job::Work { .. }));
    let mut tx = match any_work {
        true => Some(store.begin_write().await?),
        false => None,
    };
    for job in jobs.iter_mut() {
        match (job, tx.as_mut()) {
            (Job::Work { work, .. }, Some(tx)) => deliveries.push(work(tx, &mut rows).await?),
            (Job::Work { .. }, None) => unreachable!("a batch with work has a transaction"),
            (Job::Row { event, answer }, _) => {
                rows.push(event.clone());
                let answer = answer.clone();
                deliveries.push(Box::new(move || send(&answer, Ok(()))));
            }
        }
    }
    match tx {
        Some(mut tx) => {
            audit::insert_many(&mut tx, &rows).await?;
            tx.commit().await?;
        }
        None if flush == Flush::AfterAnswer => {
            let mut conn = store.autocommit_unflushed().await?;
            audit::insert_many(&mut conn, &rows).await?;
            conn.written()?;
        }
        None => {
            // One statement is a transaction of its own. On SQLite it waits, like a commit,
            // for the group commit's flush of the log, having handed back the one writer
            // first, so the grants queued behind it write meanwhile.
            let mut conn = store.autocommit().await?;
            audit::insert_many(&mut conn, &rows).await?;
            conn.durable().await?;
        }
    }
    Ok(deliveries)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grant_batches_leave_half_the_pool_to_everything_else() {
        assert_eq!(postgres_batches(10), POSTGRES_BATCHES);
        assert_eq!(postgres_batches(6), 3);
        assert_eq!(postgres_batches(3), 1);
        assert_eq!(postgres_batches(1), 1);
        assert_eq!(postgres_batches(0), 1);
        assert_eq!(postgres_batches(1_000), POSTGRES_BATCHES);
    }
}
