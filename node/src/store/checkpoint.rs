//! SQLite's write-ahead log checkpoints, off the writer: a task copies the log into the
//! database file every [`CHECKPOINT_EVERY`] on a read connection (`PASSIVE`: it waits for
//! nobody and nobody waits for it), so commits do not wait for the copy and its sync.
//!
//! The writer connection still checkpoints as a backstop, only once the log passes 10,000
//! pages ([`WRITER_PRAGMA`]): SQLite starts the log over only when a write begins after a
//! checkpoint copied all of it, and under steady writes a copy beside the writer never
//! catches up (measured with Python's sqlite3, commits of 20 rows back to back, a passive
//! checkpoint every second beside them: the log grew to 2.6 GB in 8 s; with this backstop it
//! stayed at 41–43 MB). The writer's checkpoint then finds nearly everything copied already,
//! and the log starts over. `journal_size_limit` shrinks the file back after a burst.

use std::time::Duration;

use sqlx::{AnyPool, Row};
use tokio_util::sync::{CancellationToken, DropGuard};
use tracing::{debug, warn};

/// How often the log is checkpointed.
const CHECKPOINT_EVERY: Duration = Duration::from_secs(1);

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
    /// Starts checkpointing every [`CHECKPOINT_EVERY`] through `reader`'s connections.
    pub(crate) fn start(reader: AnyPool) -> Self {
        let stop = CancellationToken::new();
        let token = stop.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(CHECKPOINT_EVERY);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    () = token.cancelled() => return,
                    _ = tick.tick() => {}
                }
                if reader.is_closed() {
                    return;
                }
                if let Err(error) = checkpoint(&reader).await {
                    warn!(%error, "cannot checkpoint the write-ahead log, trying again");
                }
            }
        });
        Self {
            _stop: stop.drop_guard(),
        }
    }
}

/// Copies what it can of the log into the database file, without waiting for readers or
/// the writer.
async fn checkpoint(reader: &AnyPool) -> Result<(), sqlx::Error> {
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
    Ok(())
}
