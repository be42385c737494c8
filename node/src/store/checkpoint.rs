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
    /// Starts checkpointing through `reader`'s connections.
    pub(crate) fn start(reader: AnyPool) -> Self {
        let stop = CancellationToken::new();
        let token = stop.clone();
        tokio::spawn(async move {
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
                        pause = next_pause(pause, last == Some(log));
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
}
