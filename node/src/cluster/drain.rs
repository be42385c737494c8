//! Drain: moving every tenant off this node before it exits.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use salesboy_protocol::{NodeId, TenantId};
use serde::{Deserialize, Serialize};
use tracing::{info, warn};

use super::control::control_request;
use super::member::ClusterMember;
use super::placement::PlacementReason;
use super::wire::{ControlReply, ControlRequest};

/// How long a drain request may run.
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(300);
/// How many times a drain looks for tenants left on the node.
const DRAIN_ROUNDS: usize = 30;
/// The pause between two drain rounds.
const DRAIN_ROUND_PAUSE: Duration = Duration::from_millis(250);

/// Why a drain failed. Plain data: it travels in a
/// [`ControlReply::Error`](super::wire::ControlReply::Error) to `salesboy drain`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum DrainError {
    /// A drain of this node is under way already.
    #[error("already draining")]
    AlreadyDraining,
    /// Tenants were still placed here after every round; the node stays (and takes tenants
    /// again).
    #[error("{left} tenants could not be moved off")]
    Stranded {
        /// How many.
        left: usize,
    },
}

impl ClusterMember {
    /// Moves every tenant placed on this node elsewhere, then asks the node to exit.
    pub async fn drain(self: &Arc<Self>) -> Result<u64, DrainError> {
        if self.draining.swap(true, Ordering::SeqCst) {
            return Err(DrainError::AlreadyDraining);
        }
        info!(node = %self.me, "draining");
        self.membership.set_draining(true);
        let mut moved = 0u64;
        // Rounds until nothing is left here. Moves started by others (the leader's
        // rebalancing) may still be under way, and the directory cache may lag a move by a
        // moment: pause between rounds instead of failing fast.
        for round in 0..DRAIN_ROUNDS {
            if round > 0 {
                tokio::time::sleep(DRAIN_ROUND_PAUSE).await;
            }
            let mine: Vec<TenantId> = self
                .directory
                .cached_where(|v| v.entry.node == self.me)
                .into_iter()
                .map(|(t, _)| t)
                .collect();
            if mine.is_empty() {
                break;
            }
            info!(node = %self.me, round, tenants = mine.len(), "moving tenants off");
            let nodes = self.membership.live_nodes();
            moved += self
                .move_many(
                    mine.into_iter()
                        .filter_map(|t| {
                            let to = self
                                .strategy
                                .place(&t, &nodes, std::slice::from_ref(&self.me))
                                .ok()?;
                            Some((t, to))
                        })
                        .collect(),
                    PlacementReason::Drain,
                    &nodes,
                )
                .await;
        }
        let left = self
            .directory
            .cached_where(|v| v.entry.node == self.me)
            .len();
        if left > 0 {
            self.draining.store(false, Ordering::SeqCst);
            self.membership.set_draining(false);
            return Err(DrainError::Stranded { left });
        }
        if let Err(e) = self.leadership.step_down().await {
            warn!(error = %e, "could not release the leader lease");
        }
        if let Err(e) = self.membership.leave().await {
            warn!(error = %e, "could not remove the membership record");
        }
        info!(node = %self.me, moved, "drained");
        let _ = self.exit.send(true);
        Ok(moved)
    }
}

/// Why a drain could not be asked for.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DrainRequestError {
    /// No node of that id is a member of the cluster.
    #[error("no node {0} in the cluster")]
    UnknownNode(NodeId),
    /// The node is a member but not alive (its heartbeat stopped): nobody can drain it.
    #[error("node {0} is not alive")]
    NotAlive(NodeId),
    /// No other live node could take its tenants.
    #[error("node {0} is the only live node: its tenants have nowhere to go")]
    LastNode(NodeId),
}

impl ClusterMember {
    /// Asks `node` (this node or another live member) to drain, without waiting for it: the
    /// drain shows in the membership (draining, then gone) and its failure in the log.
    pub fn request_drain(self: &Arc<Self>, node: NodeId) -> Result<(), DrainRequestError> {
        let view = self.membership.view();
        let Some(target) = view.iter().find(|n| n.record.node == node) else {
            return Err(DrainRequestError::UnknownNode(node));
        };
        if !target.alive {
            return Err(DrainRequestError::NotAlive(node));
        }
        if !view
            .iter()
            .any(|n| n.alive && n.compatible && n.record.node != node)
        {
            return Err(DrainRequestError::LastNode(node));
        }
        let bus = Arc::clone(&self.bus);
        let key = Arc::clone(&self.key);
        self.background.spawn_until_cancelled(async move {
            info!(%node, "drain requested");
            match control_request(
                bus.as_ref(),
                &key,
                &node,
                &ControlRequest::Drain,
                DRAIN_TIMEOUT,
            )
            .await
            {
                Ok(ControlReply::Drained { moved }) => info!(%node, moved, "drained on request"),
                Ok(ControlReply::Error(reason)) => warn!(%node, %reason, "drain refused"),
                Ok(ControlReply::Ok) => warn!(%node, "unexpected answer to a drain request"),
                Err(e) => warn!(%node, error = %e, "drain request failed"),
            }
        });
        Ok(())
    }
}
