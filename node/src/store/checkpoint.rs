//! SQLite's write-ahead log checkpoints, off the writer: a task copies the log into the
//! database file on a read connection (`PASSIVE`: it waits for nobody and nobody waits for
//! it), so commits do not wait for the copy and its sync — every [`ACTIVE_EVERY`] while the
//! log grows, backing off to every [`IDLE_EVERY`] while it does not.
//!
//! The writer connection still checkpoints as a backstop, only once the log passes 10,000
//! pages ([`WRITER_PRAGMA`]): SQLite starts the log over only when a write begins after a
//! checkpoint copied all of it, and under steady writes a copy beside the writer never
//! catches up (measured with Python's sqlite3, commits of 20 rows back to back, a passive
//! checkpoint every second beside them: the log grew to 2.6 GB in 8 s; with this backstop it
//! stayed at 41–43 MB). The writer's checkpoint syncs and copies only what was written since
//! the last background one, then the log starts over; that is why the background task runs
//! often while the log grows: with a checkpoint every second, each of the writer's (one every
//! 0.6–1 s at 1,000 msg/s) synced up to a second of log, 20–45 ms during which no commit
//! could run, the slowest messages of a run (docs/benchmarks.md). `journal_size_limit`
//! shrinks the file back after a burst.
//!
//! SQLite syncs the database file only at the end of a checkpoint that copied the whole log:
//! the background ones, which a commit always overtakes under steady writes, sync the log
//! and leave what they copied unsynced, so the writer's backstop synced every page copied
//! since the last backstop, 10–21 ms at 1,000 msg/s and longer as the database grew
//! (docs/benchmarks.md). The task therefore syncs the database file itself after each
//! checkpoint that copied pages, through a descriptor of its own ([`database_file`]).

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::fs::{File, Metadata};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, LazyLock, Mutex};
use std::time::Duration;

use sqlx::{AnyPool, Row};
use tokio_util::sync::{CancellationToken, DropGuard};
use tracing::{debug, warn};

/// The pause after a checkpoint that found the log changed: under steady writes the writer's
/// backstop then finds about this much of the log (plus the checkpoint's own time) not yet
/// synced and copied. A log that started over and refilled to the same length between two
/// checkpoints looks unchanged; such a log is short.
const ACTIVE_EVERY: Duration = Duration::from_millis(50);

/// The longest pause, reached by doubling from [`ACTIVE_EVERY`] while the log is unchanged.
const IDLE_EVERY: Duration = Duration::from_secs(1);

/// The writer connection's settings: checkpoints left to [`Checkpointer`] until the log
/// passes the backstop, 10,000 pages (40 MiB), and the log file cut back to 64 MiB when it
/// starts over.
pub(crate) const WRITER_PRAGMA: &str =
    "PRAGMA wal_autocheckpoint = 10000; PRAGMA journal_size_limit = 67108864;";

/// Checkpoints the log of the database behind `reader` until dropped (with every clone).
#[derive(Debug)]
pub(crate) struct Checkpointer {
    _stop: DropGuard,
}

impl Checkpointer {
    /// Starts checkpointing through `reader`'s connections; `database` is the database's
    /// file, synced after each checkpoint that copied pages (none: not synced beside SQLite).
    pub(crate) fn start(reader: AnyPool, database: Option<PathBuf>) -> Self {
        let stop = CancellationToken::new();
        let token = stop.clone();
        tokio::spawn(async move {
            let file = match database {
                Some(path) => database_file(path).await,
                None => None,
            };
            let mut pause = ACTIVE_EVERY;
            let mut last = None;
            loop {
                tokio::select! {
                    () = token.cancelled() => return,
                    () = tokio::time::sleep(pause) => {}
                }
                if reader.is_closed() {
                    return;
                }
                match checkpoint(&reader).await {
                    Ok(log) => {
                        let unchanged = last == Some(log);
                        if let Some(file) = &file
                            && !unchanged
                            && may_have_left_unsynced(log)
                        {
                            sync(file).await;
                        }
                        pause = next_pause(pause, unchanged);
                        last = Some(log);
                    }
                    Err(error) => {
                        warn!(%error, "cannot checkpoint the write-ahead log, trying again");
                        pause = IDLE_EVERY;
                    }
                }
            }
        });
        Self {
            _stop: stop.drop_guard(),
        }
    }
}

/// The pause before the next checkpoint: [`ACTIVE_EVERY`] after one that found the log
/// changed, twice the last (at most [`IDLE_EVERY`]) after one that found it as it was.
fn next_pause(last: Duration, unchanged: bool) -> Duration {
    if unchanged {
        (last * 2).min(IDLE_EVERY)
    } else {
        ACTIVE_EVERY
    }
}

/// The log's state after a checkpoint: its length and how much of it is in the database
/// file, in frames.
type LogState = (i64, i64);

/// Whether a checkpoint may have left pages it copied unsynced in the database file: it
/// copied some. SQLite syncs the file only when no commit came in during the copy, and its
/// answer cannot tell: it reports the log's length as the copy started.
fn may_have_left_unsynced((_, copied): LogState) -> bool {
    copied > 0
}

/// Database files opened to be synced, by device and inode (a file put at the same path in
/// place of another is another file), open until the process exits. POSIX record locks
/// belong to the process and the file, not to a descriptor: closing any descriptor of a
/// database file drops the locks every SQLite connection of the process holds on it, and
/// another process could then take the database for unused and delete its log.
static DATABASE_FILES: LazyLock<Mutex<HashMap<FileIdentity, Arc<File>>>> =
    LazyLock::new(Mutex::default);

/// A file's device and inode.
type FileIdentity = (u64, u64);

/// The database file at `path`, opened (read-only) once per process, off the runtime's
/// threads; `None` (and a warning) when it cannot be opened.
async fn database_file(path: PathBuf) -> Option<Arc<File>> {
    tokio::task::spawn_blocking(move || open_once(&path))
        .await
        .unwrap_or_else(|e| Err(e.to_string()))
        .inspect_err(|error| {
            warn!(%error, "cannot open the database file to sync it after checkpoints");
        })
        .ok()
}

/// [`database_file`]'s file at `path`, from [`DATABASE_FILES`] or opened and kept there.
fn open_once(path: &Path) -> Result<Arc<File>, String> {
    let identity = |metadata: &Metadata| -> FileIdentity { (metadata.dev(), metadata.ino()) };
    let named = |e: std::io::Error| format!("{}: {e}", path.display());
    let key = identity(&std::fs::metadata(path).map_err(named)?);
    let mut files = DATABASE_FILES
        .lock()
        .map_err(|_| "the database files' lock is poisoned".to_owned())?;
    if let Some(file) = files.get(&key) {
        return Ok(Arc::clone(file));
    }
    let file = File::open(path).map_err(named)?;
    // The file opened, whatever the path names by now.
    let key = identity(&file.metadata().map_err(named)?);
    Ok(match files.entry(key) {
        Entry::Occupied(kept) => {
            // Never closed: see DATABASE_FILES.
            std::mem::forget(file);
            Arc::clone(kept.get())
        }
        Entry::Vacant(slot) => Arc::clone(slot.insert(Arc::new(file))),
    })
}

/// Writes the database file's copied pages to the disk (`fdatasync`), off the runtime's
/// threads, so the writer's next full checkpoint finds little left to sync.
async fn sync(file: &Arc<File>) {
    let file = Arc::clone(file);
    match tokio::task::spawn_blocking(move || file.sync_data()).await {
        Ok(Ok(())) => {}
        Ok(Err(error)) => warn!(%error, "cannot sync the database file after a checkpoint"),
        Err(error) => warn!(%error, "the database file's sync did not finish"),
    }
}

/// Copies what it can of the log into the database file, without waiting for readers or
/// the writer; the log's state after it.
async fn checkpoint(reader: &AnyPool) -> Result<LogState, sqlx::Error> {
    let row = sqlx::query("PRAGMA wal_checkpoint(PASSIVE)")
        .fetch_one(reader)
        .await?;
    let (log, copied): (i64, i64) = (row.try_get(1)?, row.try_get(2)?);
    metrics::gauge!("salesboy_sqlite_wal_frames").set(log as f64);
    if log > 0 {
        debug!(
            log_frames = log,
            copied_frames = copied,
            "write-ahead log checkpointed"
        );
    }
    Ok((log, copied))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_pause_backs_off_while_the_log_is_unchanged_and_resets_when_it_changes() {
        let mut pause = ACTIVE_EVERY;
        let mut pauses = Vec::new();
        for _ in 0..6 {
            pause = next_pause(pause, true);
            pauses.push(pause.as_millis());
        }
        assert_eq!(pauses, [100, 200, 400, 800, 1000, 1000]);
        assert_eq!(next_pause(IDLE_EVERY, false), ACTIVE_EVERY);
    }

    #[test]
    fn the_file_is_synced_after_a_checkpoint_that_copied_pages() {
        assert!(may_have_left_unsynced((1000, 400)));
        // all of it, as the copy started: a commit during the copy kept SQLite from syncing
        assert!(may_have_left_unsynced((1000, 1000)));
        // nothing copied, no log, or not in WAL mode
        assert!(!may_have_left_unsynced((1000, 0)));
        assert!(!may_have_left_unsynced((0, 0)));
        assert!(!may_have_left_unsynced((-1, -1)));
    }

    #[tokio::test]
    async fn a_database_file_is_opened_once_per_process_and_an_in_memory_one_has_none() {
        sqlx::any::install_default_drivers();
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}?mode=rwc", dir.path().join("x.db").display());
        let _pool = AnyPool::connect(&url).await.unwrap();
        let path = crate::secrets::files::sqlite_file(&url).unwrap();
        let a = database_file(path.clone()).await.unwrap();
        let b = database_file(path).await.unwrap();
        assert!(Arc::ptr_eq(&a, &b));
        a.sync_data().unwrap();
        assert_eq!(crate::secrets::files::sqlite_file("sqlite::memory:"), None);
        assert!(database_file(dir.path().join("missing.db")).await.is_none());
    }

    #[test]
    fn a_file_put_in_place_of_another_at_the_same_path_is_opened_anew() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        std::fs::write(&path, b"first").unwrap();
        let first = open_once(&path).unwrap();
        assert!(Arc::ptr_eq(&first, &open_once(&path).unwrap()));
        let replacement = dir.path().join("g");
        std::fs::write(&replacement, b"second").unwrap();
        std::fs::rename(&replacement, &path).unwrap();
        let second = open_once(&path).unwrap();
        assert!(!Arc::ptr_eq(&first, &second));
        assert_eq!(second.metadata().unwrap().len(), 6);
        assert!(open_once(&dir.path().join("missing")).is_err());
    }
}
