//! The background embedder: runs embedding passes ([`SqlStore::embed_pending`]) until
//! nothing is pending, then waits to be woken (a document was added on this node) or for
//! the idle poll (one added through another node). After a failed pass it waits a growing
//! pause ([`RetrievalSettings::retry_min`](super::RetrievalSettings::retry_min) doubling up
//! to `retry_max`); the passages stay pending meanwhile, so nothing is lost.
//!
//! On a cluster only the leader embeds, so a passage is embedded (and paid for) once; a
//! document added through another node is picked up within the idle poll. (A leadership
//! handover may let two nodes embed one batch; the second write is ignored.)

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::cluster::ClusterMember;
use crate::store::{EmbedPass, SqlStore};

/// Runs the embedder of `store` until `cancel` (on a cluster, embedding only while this
/// node leads); returns at once when the store has no retrieval.
pub async fn run(store: SqlStore, cluster: Option<Arc<ClusterMember>>, cancel: CancellationToken) {
    let Some(retrieval) = store.retrieval().cloned() else {
        return;
    };
    let settings = retrieval.settings().clone();
    let mut pause = settings.retry_min;
    loop {
        if cluster.as_ref().is_some_and(|c| !c.is_leader()) {
            pause = settings.retry_min;
            tokio::select! {
                () = cancel.cancelled() => return,
                () = tokio::time::sleep(settings.idle_poll) => {}
            }
            continue;
        }
        let wait = match store.embed_pending().await {
            Ok(EmbedPass::Embedded(_)) => {
                pause = settings.retry_min;
                continue;
            }
            Ok(EmbedPass::Idle) => {
                pause = settings.retry_min;
                settings.idle_poll
            }
            Ok(EmbedPass::Failed { .. }) => next_pause(&mut pause, settings.retry_max),
            Err(error) => {
                tracing::warn!(%error, "embedding pass failed");
                next_pause(&mut pause, settings.retry_max)
            }
        };
        tokio::select! {
            () = cancel.cancelled() => return,
            () = retrieval.woken() => {}
            () = tokio::time::sleep(wait) => {}
        }
    }
}

/// The pause to wait now; the next one is twice as long, at most `max`.
fn next_pause(pause: &mut Duration, max: Duration) -> Duration {
    let now = *pause;
    *pause = (*pause * 2).min(max);
    now
}
