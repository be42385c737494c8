//! SQLite's write-ahead log checkpoints, off the writer: the writer connection never
//! checkpoints (`wal_autocheckpoint = 0`), so no commit waits while the log is copied into
//! the database file and synced; a task copies it every [`CHECKPOINT_EVERY`] on a read
//! connection instead (`PASSIVE`: it waits for nobody and nobody waits for it).

use std::time::Duration;

use sqlx::{AnyPool, Row};
use tokio_util::sync::{CancellationToken, DropGuard};
use tracing::{debug, warn};

/// How often the log is checkpointed.
pub(crate) const CHECKPOINT_EVERY: Duration = Duration::from_secs(1);

/// The writer connection's setting that leaves checkpoints to [`Checkpointer`].
pub(crate) const WRITER_PRAGMA: &str = "PRAGMA wal_autocheckpoint = 0;";

/// Checkpoints the log of the database behind `reader` until dropped (with every clone).
#[derive(Debug)]
pub(crate) struct Checkpointer {
    _stop: DropGuard,
}

impl Checkpointer {
    /// Starts checkpointing every `every` through `reader`'s connections.
    pub(crate) fn start(reader: AnyPool, every: Duration) -> Self {
        let stop = CancellationToken::new();
        let token = stop.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
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
