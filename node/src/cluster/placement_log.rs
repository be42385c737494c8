//! [`PlacementLog`]: where a node records the placement decisions it made, with their
//! inputs, off the path that makes them: a queue that one task writes to SQL in batches.
//! Best effort (the directory is the truth): a batch that cannot be written is logged and
//! dropped; a decision made while the node stops may be lost.

use std::time::Duration;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::warn;

use super::placement::PlacementDecision;
use crate::background::Background;
use crate::store::SqlStore;

/// Most decisions written in one transaction.
const BATCH: usize = 256;

/// The pause after a short batch, so that a failover's decisions gather.
const PACE: Duration = Duration::from_millis(50);

/// Records placement decisions (see the module docs). Cheap to clone.
#[derive(Clone)]
pub struct PlacementLog {
    queue: mpsc::UnboundedSender<PlacementDecision>,
}

impl PlacementLog {
    /// A log whose writer runs on `background` until it is cancelled, then writes what is
    /// queued.
    pub fn start(sql: SqlStore, background: &Background) -> Self {
        let (queue, decisions) = mpsc::unbounded_channel();
        background.spawn(write(sql, decisions, background.token().clone()));
        Self { queue }
    }

    /// Queues `decision` for writing.
    pub fn record(&self, decision: PlacementDecision) {
        if self.queue.send(decision).is_err() {
            warn!("placement decision not recorded: the node is stopping");
        }
    }
}

/// The writer: batches of decisions, each in one transaction.
async fn write(
    sql: SqlStore,
    mut decisions: mpsc::UnboundedReceiver<PlacementDecision>,
    stop: CancellationToken,
) {
    let mut batch = Vec::with_capacity(BATCH);
    loop {
        let stopping = tokio::select! {
            biased;
            received = decisions.recv_many(&mut batch, BATCH) => received == 0,
            () = stop.cancelled() => true,
        };
        if stopping {
            decisions.close();
            while let Ok(decision) = decisions.try_recv() {
                batch.push(decision);
            }
        }
        if !batch.is_empty() {
            if let Err(e) = sql.record_placements(&batch).await {
                warn!(error = %e, decisions = batch.len(), "placement decisions not recorded");
            }
            let short = batch.len() < BATCH;
            batch.clear();
            if short && !stopping {
                tokio::time::sleep(PACE).await;
            }
        }
        if stopping {
            return;
        }
    }
}
