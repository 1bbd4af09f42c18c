//! Group commit for SQLite.
//!
//! With `synchronous = FULL`, SQLite fsyncs the write-ahead log inside every `COMMIT`, while the
//! one writer connection is held: writes queue one fsync each. Here connections run with
//! `synchronous = NORMAL` (a commit writes its frames to the log and returns) and durability is
//! restored outside the writer: after its `COMMIT`, a transaction takes a ticket and waits
//! until an `fdatasync` of the log that started after its ticket has finished. One flush at a
//! time runs; whoever finds none running starts one that covers every ticket taken so far, so
//! the transactions committed while a flush was under way share the next one.
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
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering::SeqCst};

#[derive(Debug)]
pub struct WalSync {
    wal: PathBuf,
    /// Tickets handed out: one per commit waiting to be durable.
    taken: AtomicU64,
    /// Every ticket up to this one is durable.
    synced: AtomicU64,
    /// Held by the task running a flush.
    flushing: tokio::sync::Mutex<()>,
    /// The log file's inode at the last flush, to notice a new log file.
    inode: Mutex<Option<u64>>,
}

impl WalSync {
    /// For the SQLite database at `database`; its log is `<database>-wal`.
    pub fn new(database: PathBuf) -> Self {
        let mut wal = database.into_os_string();
        wal.push("-wal");
        Self {
            wal: wal.into(),
            taken: AtomicU64::new(0),
            synced: AtomicU64::new(0),
            flushing: tokio::sync::Mutex::new(()),
            inode: Mutex::new(None),
        }
    }

    /// Returns once everything committed before the call is on stable storage.
    pub async fn sync(&self) -> io::Result<()> {
        let ticket = self.taken.fetch_add(1, SeqCst) + 1;
        loop {
            if self.synced.load(SeqCst) >= ticket {
                return Ok(());
            }
            let _flushing = self.flushing.lock().await;
            if self.synced.load(SeqCst) >= ticket {
                return Ok(());
            }
            // Every ticket taken by now belongs to a commit already written to the log.
            let covered = self.taken.load(SeqCst);
            let wal = self.wal.clone();
            let new_file = tokio::task::spawn_blocking(move || flush(&wal))
                .await
                .map_err(io::Error::other)??;
            if let Some(inode) = new_file {
                let changed = {
                    let mut seen = self.inode.lock().unwrap_or_else(|e| e.into_inner());
                    seen.replace(inode) != Some(inode)
                };
                if changed {
                    let folder = self.wal.parent().map(Path::to_path_buf);
                    tokio::task::spawn_blocking(move || sync_folder(folder.as_deref()))
                        .await
                        .map_err(io::Error::other)??;
                }
            }
            self.synced.fetch_max(covered, SeqCst);
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
    use std::sync::Arc;

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
        assert_eq!(sync.taken.load(SeqCst), 64);
        assert_eq!(sync.synced.load(SeqCst), 64, "every ticket is covered");
        assert!(sync.inode.lock().unwrap().is_some(), "the log was flushed");
    }

    #[tokio::test]
    async fn a_missing_log_is_already_durable() {
        let dir = tempfile::tempdir().unwrap();
        let sync = WalSync::new(dir.path().join("none.db"));
        sync.sync().await.unwrap();
        assert_eq!(sync.synced.load(SeqCst), 1);
    }
}
