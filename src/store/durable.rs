//! Group commit for SQLite.
//!
//! With `synchronous = FULL`, SQLite fsyncs the write-ahead log inside every `COMMIT`, while the
//! one writer connection is held: writes queue one fsync each. Here connections run with
//! `synchronous = NORMAL` (a commit writes its frames to the log and returns) and durability is
//! restored outside the writer: after its `COMMIT`, a transaction takes a ticket and waits
//! until an `fdatasync` of the log that started after its ticket has finished. A thread of its
//! own runs the flushes, one after another while tickets wait, each covering every ticket taken
//! when it starts, so the transactions committed while a flush was under way share the next
//! one; a `watch` channel then wakes all the waiters it covered at once.
//!
//! Why that is as durable as FULL for every answered request: the ticket is taken after
//! `COMMIT` returned, that is after SQLite `write()` the commit's frames into the log, and the
//! flush syncs the log file (its inode, whoever wrote the pages). If the log has meanwhile been
//! checkpointed and deleted (the last connection closing), SQLite synced the database during
//! that checkpoint. A log file seen for the first time also gets its folder synced, so the file
//! itself survives a power cut. What is not covered: another connection can read a commit in
//! the few milliseconds before its flush ends. A power cut in that window loses a commit that
//! was never acknowledged, and which a concurrent reader may have seen.

use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering::SeqCst};
use std::sync::{Arc, Condvar, Mutex};

/// What the waiting commits watch.
#[derive(Clone, Copy, Debug, Default)]
struct Durable {
    /// Every ticket up to this one is on stable storage.
    through: u64,
    /// A flush failed. As PostgreSQL learned, after a failed fsync the kernel may have dropped
    /// the dirty pages, so a later successful one proves nothing: no commit is acknowledged
    /// again until the process restarts (requests get 503s, and the log says why).
    broken: bool,
}

#[derive(Debug)]
struct Shared {
    wal: PathBuf,
    /// Tickets handed out: one per commit waiting to be durable.
    taken: AtomicU64,
    durable: tokio::sync::watch::Sender<Durable>,
    /// Wakes the flushing thread; `true` once the store is gone and the thread should end.
    kick: (Mutex<bool>, Condvar),
    /// Tests only: flushes wait while this is set ([`WalSync::hold_flushes`]).
    #[cfg(test)]
    held: std::sync::atomic::AtomicBool,
}

/// The group commit of one SQLite database: a thread that flushes the log whenever commits
/// wait, and the tickets they wait on. Waiters are all woken at once when a flush covers
/// them (a `watch` channel), rather than one after another.
#[derive(Debug)]
pub struct WalSync {
    shared: Arc<Shared>,
}

impl WalSync {
    /// For the SQLite database at `database`; its log is `<database>-wal`.
    pub fn new(database: PathBuf) -> Self {
        let mut wal = database.into_os_string();
        wal.push("-wal");
        let shared = Arc::new(Shared {
            wal: wal.into(),
            taken: AtomicU64::new(0),
            durable: tokio::sync::watch::Sender::new(Durable::default()),
            kick: (Mutex::new(false), Condvar::new()),
            #[cfg(test)]
            held: std::sync::atomic::AtomicBool::new(false),
        });
        let flusher = shared.clone();
        let started = std::thread::Builder::new()
            .name("tessera-wal-flush".into())
            .spawn(move || flush_loop(&flusher));
        if let Err(error) = started {
            tracing::error!(%error, "cannot start the log-flushing thread; writes will fail");
            shared.durable.send_modify(|d| d.broken = true);
        }
        Self { shared }
    }

    /// Tickets taken so far: one per commit that waited for a flush.
    #[cfg(test)]
    pub fn tickets(&self) -> u64 {
        self.shared.taken.load(SeqCst)
    }

    /// Asks for a flush covering everything committed before the call, without waiting for
    /// it; returns the ticket it took. The flushing thread starts at once if it is idle, or
    /// right after the flush under way. Fails once a flush has failed: nothing written since
    /// can be promised to reach the disk, so nothing is acknowledged (as [`WalSync::sync`]).
    pub fn request(&self) -> io::Result<u64> {
        let shared = &self.shared;
        if shared.durable.borrow().broken {
            return Err(broken());
        }
        let ticket = shared.taken.fetch_add(1, SeqCst) + 1;
        let (lock, wake) = &shared.kick;
        let _guard = lock.lock().unwrap_or_else(|e| e.into_inner());
        wake.notify_one();
        Ok(ticket)
    }

    /// Tests only: holds every flush back while `true`, as a disk that stalls would.
    #[cfg(test)]
    pub fn hold_flushes(&self, hold: bool) {
        self.shared.held.store(hold, SeqCst);
    }

    /// Tests only: whether the flushes have covered `ticket`.
    #[cfg(test)]
    pub fn covers(&self, ticket: u64) -> bool {
        self.shared.durable.borrow().through >= ticket
    }

    /// Returns once everything committed before the call is on stable storage.
    pub async fn sync(&self) -> io::Result<()> {
        let mut durable = self.shared.durable.subscribe();
        let ticket = self.request()?;
        let state = durable
            .wait_for(|d| d.broken || d.through >= ticket)
            .await
            .map_err(|_| io::Error::other("the log-flushing thread is gone"))?;
        if state.through >= ticket {
            Ok(())
        } else {
            Err(broken())
        }
    }
}

fn broken() -> io::Error {
    io::Error::other("an earlier flush of the SQLite log failed; restart Tessera")
}

impl Drop for WalSync {
    fn drop(&mut self) {
        let (lock, wake) = &self.shared.kick;
        *lock.lock().unwrap_or_else(|e| e.into_inner()) = true;
        wake.notify_one();
    }
}

/// The flushing thread: whenever tickets wait, one `fdatasync` covers all taken so far.
fn flush_loop(shared: &Shared) {
    let mut inode = None;
    loop {
        {
            let (lock, wake) = &shared.kick;
            let mut stop = lock.lock().unwrap_or_else(|e| e.into_inner());
            let idle = || shared.taken.load(SeqCst) <= shared.durable.borrow().through;
            while !*stop && idle() {
                stop = wake.wait(stop).unwrap_or_else(|e| e.into_inner());
            }
            // A store going away still flushes what was asked for: a commit answered before
            // its flush (`Unflushed::written`) has no one waiting to insist.
            if *stop && idle() {
                return;
            }
        }
        #[cfg(test)]
        while shared.held.load(SeqCst) {
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        // Every ticket taken by now belongs to a commit already written to the log.
        let covered = shared.taken.load(SeqCst);
        let result = flush(&shared.wal).and_then(|seen| {
            // A log file seen for the first time: sync its folder too, so the file itself
            // survives a power cut.
            if seen.is_some() && seen != inode {
                sync_folder(shared.wal.parent())?;
                inode = seen;
            }
            Ok(())
        });
        match result {
            Ok(()) => shared
                .durable
                .send_modify(|d| d.through = d.through.max(covered)),
            Err(error) => {
                tracing::error!(%error, "flushing the SQLite log failed; refusing writes until restart");
                shared.durable.send_modify(|d| d.broken = true);
                return;
            }
        }
    }
}

/// `fdatasync` of the log; returns its inode, or none when there is no log file (checkpointed
/// away, so already durable in the database).
fn flush(wal: &Path) -> io::Result<Option<u64>> {
    use std::os::unix::fs::MetadataExt;
    let file = match File::open(wal) {
        Ok(file) => file,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    file.sync_data()?;
    Ok(Some(file.metadata()?.ino()))
}

fn sync_folder(folder: Option<&Path>) -> io::Result<()> {
    let folder = match folder {
        Some(f) if !f.as_os_str().is_empty() => f,
        _ => Path::new("."),
    };
    File::open(folder)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn through(sync: &WalSync) -> u64 {
        sync.shared.durable.borrow().through
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn every_concurrent_commit_is_covered_by_a_flush() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("t.db");
        std::fs::write(dir.path().join("t.db-wal"), b"frames").unwrap();
        let sync = Arc::new(WalSync::new(db));
        let tasks: Vec<_> = (0..64)
            .map(|_| {
                let sync = sync.clone();
                tokio::spawn(async move { sync.sync().await })
            })
            .collect();
        for task in tasks {
            task.await.unwrap().unwrap();
        }
        assert_eq!(sync.shared.taken.load(SeqCst), 64);
        assert_eq!(through(&sync), 64, "every ticket is covered");
    }

    /// A log with frames in it, and its group commit with every flush held back.
    fn held_log(dir: &tempfile::TempDir) -> WalSync {
        std::fs::write(dir.path().join("t.db-wal"), b"frames").unwrap();
        let sync = WalSync::new(dir.path().join("t.db"));
        sync.hold_flushes(true);
        sync
    }

    /// Waits (at most 10 s) until the flushes have covered `ticket`.
    async fn flushed(shared: &Shared, ticket: u64) {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while shared.durable.borrow().through < ticket {
            assert!(std::time::Instant::now() < deadline, "never flushed");
            tokio::time::sleep(std::time::Duration::from_millis(1)).await;
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_requested_flush_runs_with_no_one_waiting_for_it() {
        let dir = tempfile::tempdir().unwrap();
        let sync = held_log(&dir);
        let ticket = sync.request().unwrap();
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        assert!(!sync.covers(ticket), "held back");
        sync.hold_flushes(false);
        flushed(&sync.shared, ticket).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_flush_asked_for_still_runs_when_the_store_goes_away() {
        let dir = tempfile::tempdir().unwrap();
        let sync = held_log(&dir);
        let ticket = sync.request().unwrap();
        let shared = sync.shared.clone();
        drop(sync);
        shared.held.store(false, SeqCst);
        flushed(&shared, ticket).await;
    }

    #[tokio::test]
    async fn a_missing_log_is_already_durable() {
        let dir = tempfile::tempdir().unwrap();
        let sync = WalSync::new(dir.path().join("none.db"));
        sync.sync().await.unwrap();
        assert_eq!(through(&sync), 1);
    }

    #[tokio::test]
    async fn after_a_failed_flush_no_commit_is_acknowledged() {
        let dir = tempfile::tempdir().unwrap();
        // A log whose folder is a file: opening it fails (ENOTDIR), as a flush that fails.
        let blocker = dir.path().join("file");
        std::fs::write(&blocker, b"x").unwrap();
        let sync = WalSync::new(blocker.join("t.db"));
        assert!(sync.sync().await.is_err());
        assert!(sync.sync().await.is_err(), "the failure is sticky");
        assert!(
            sync.request().is_err(),
            "nor is a write answered before its flush acknowledged"
        );
    }
}
