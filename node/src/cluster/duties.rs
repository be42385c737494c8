//! Background duties: failover and rebalancing while this node leads, membership changes
//! published as cluster events, and stopping every tenant when this node fences itself.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use salesboy_protocol::NodeId;
use salesboy_protocol::subjects::EventKind;
use tokio::sync::Semaphore;
use tracing::{debug, info, warn};

use super::directory::{DirectoryEntry, DirectoryError, EntryState};
use super::member::ClusterMember;
use super::membership::MembershipEvent;
use super::placement::PlacementReason;
use super::rebalance::{self, NodeLoadView};
use super::wire::{ControlReply, ControlRequest};

impl ClusterMember {
    /// Re-places the tenants of dead nodes (leader only).
    pub(super) async fn fail_over(&self) {
        let live = self.membership.live_nodes();
        // Known dead: seen, and silent past the failure timeout (never merely unseen).
        let dead_nodes: std::collections::HashSet<NodeId> = self
            .membership
            .view()
            .into_iter()
            .filter(|view| !view.alive && view.record.node != self.me)
            .map(|view| view.record.node)
            .collect();
        if dead_nodes.is_empty() {
            return;
        }
        let dead = self
            .directory
            .cached_where(|v| dead_nodes.contains(&v.entry.node));
        if dead.is_empty() {
            return;
        }
        info!(tenants = dead.len(), "failing over tenants of dead nodes");
        let permits = Arc::new(Semaphore::new(self.settings.move_concurrency.max(1)));
        let tasks = dead.into_iter().map(|(tenant, current)| {
            let permits = Arc::clone(&permits);
            let live = &live;
            async move {
                let Ok(_permit) = permits.acquire().await else { return };
                let Ok(target) = self.strategy.place(&tenant, live, &[]) else {
                    warn!(tenant = %tenant, "no node can take over tenant");
                    return;
                };
                let from = current.entry.node.clone();
                let Some(epoch) = current.entry.epoch.checked_add(1) else {
                    warn!(tenant = %tenant, epoch = current.entry.epoch, "tenant has no epoch left to take over with");
                    return;
                };
                let placement = DirectoryEntry { node: target.clone(), epoch, state: EntryState::Active };
                match self.directory.update(&tenant, placement, current.revision).await {
                    Ok(_) => {}
                    Err(DirectoryError::Conflict) => return,
                    Err(e) => {
                        warn!(tenant = %tenant, error = %e, "failover write failed");
                        return;
                    }
                }
                let activated = if target == self.me {
                    self.node.activate(&tenant).await.map(|_| ()).map_err(|e| e.to_string())
                } else {
                    match self.control(&target, &ControlRequest::Activate { tenant: tenant.clone() }).await {
                        Ok(ControlReply::Ok) => Ok(()),
                        other => Err(format!("{other:?}")),
                    }
                };
                if let Err(e) = activated {
                    // Placed: the next message or sweep activates it there.
                    warn!(tenant = %tenant, to = %target, error = %e, "failed-over tenant not activated yet");
                }
                metrics::counter!("salesboy_failovers_total").increment(1);
                self.record_placement(&tenant, &target, Some(epoch), PlacementReason::Failover, Some(&from), live);
                self.publish(EventKind::TenantMigrated, Some(&tenant), serde_json::json!({"from": from.as_str(), "to": target.as_str(), "failover": true}));
            }
        });
        futures::future::join_all(tasks).await;
    }

    /// Evens out the spread (leader only).
    pub(super) async fn rebalance(&self) {
        let live = self.membership.live_nodes();
        if live.len() < 2 {
            return;
        }
        let placements = self.directory.cached_all();
        let views: Vec<NodeLoadView> = live
            .iter()
            .map(|record| NodeLoadView {
                node: record.node.clone(),
                tenants: placements
                    .iter()
                    .filter(|(_, v)| {
                        v.entry.node == record.node && v.entry.state == EntryState::Active
                    })
                    .map(|(t, _)| t.clone())
                    .collect(),
                // Tenants mid-move stay where they are this round.
                pinned: placements
                    .iter()
                    .filter(|(_, v)| {
                        v.entry.node == record.node && v.entry.state != EntryState::Active
                    })
                    .count() as u64,
                capacity: record.max_tenants,
                draining: record.draining,
            })
            .collect();
        let moves = rebalance::plan(&views, self.settings.max_moves_per_round);
        if moves.is_empty() {
            return;
        }
        info!(moves = moves.len(), "rebalancing");
        metrics::counter!("salesboy_rebalance_rounds_total").increment(1);
        let permits = Arc::new(Semaphore::new(self.settings.move_concurrency.max(1)));
        let live = &live;
        let tasks = moves.into_iter().map(|planned| {
            let permits = Arc::clone(&permits);
            async move {
                let Ok(_permit) = permits.acquire().await else {
                    return;
                };
                let request = ControlRequest::MigrateOut {
                    tenant: planned.tenant.clone(),
                    to: planned.to.clone(),
                };
                let moved = if planned.from == self.me {
                    self.migrate_out(&planned.tenant, &planned.to)
                        .await
                        .inspect_err(|e| debug!(tenant = %planned.tenant, error = %e, "rebalancing move skipped"))
                        .ok()
                        .map(Some)
                } else {
                    match self.control(&planned.from, &request).await {
                        // The mover knows the new epoch; the directory has it now.
                        Ok(ControlReply::Ok) => Some(
                            self.directory
                                .fetch(&planned.tenant)
                                .await
                                .ok()
                                .flatten()
                                .filter(|placed| placed.entry.node == planned.to)
                                .map(|placed| placed.entry.epoch),
                        ),
                        answer => {
                            debug!(tenant = %planned.tenant, answer = ?answer, "rebalancing move skipped");
                            None
                        }
                    }
                };
                if let Some(epoch) = moved {
                    self.record_placement(
                        &planned.tenant,
                        &planned.to,
                        epoch,
                        PlacementReason::Rebalance,
                        Some(&planned.from),
                        live,
                    );
                }
            }
        });
        futures::future::join_all(tasks).await;
    }
}

/// Failover and rebalancing while this node leads.
pub(super) async fn leader_duties(cluster: Arc<ClusterMember>) {
    let every = cluster.settings.leader_every;
    let mut events = cluster.membership.subscribe();
    let mut tick = tokio::time::interval(every);
    loop {
        // Every `leader_every`, and at once when a node joins, leaves or is declared dead.
        tokio::select! {
            biased;
            _ = tick.tick() => {}
            event = events.recv() => match event {
                Ok(MembershipEvent::Joined(_) | MembershipEvent::Left(_))
                | Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                Ok(MembershipEvent::Fenced | MembershipEvent::Unfenced) => continue,
                Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
            },
        }
        let fenced = *cluster.membership.fenced().borrow();
        if !fenced {
            // Every node, leader or not, cleans up after its own cut-short moves.
            cluster.roll_back_stale_marks().await;
        }
        if fenced || !cluster.is_leader() || cluster.draining.load(Ordering::Relaxed) {
            // A fenced node's view of the others is stale: it must not act on it.
            continue;
        }
        cluster.fail_over().await;
        if cluster.settings.rebalance {
            cluster.rebalance().await;
        }
    }
}

/// Publishes membership changes as cluster events (node joined, node left), from the leader.
pub(super) async fn membership_events(cluster: Arc<ClusterMember>) {
    let mut events = cluster.membership.subscribe();
    loop {
        let event = match events.recv().await {
            Ok(event) => event,
            Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
            Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
        };
        // Every node sees every change; the leader speaks for the cluster.
        if !cluster.is_leader() {
            continue;
        }
        let (kind, node) = match &event {
            MembershipEvent::Joined(node) => (EventKind::NodeJoined, node),
            MembershipEvent::Left(node) => (EventKind::NodeLeft, node),
            MembershipEvent::Fenced | MembershipEvent::Unfenced => continue,
        };
        cluster.publish(kind, None, serde_json::json!({"node": node.as_str()}));
    }
}

/// Stops every tenant when this node fences itself (it can no longer prove it is alive, so
/// the others will take its tenants over).
pub(super) async fn fence_watch(cluster: Arc<ClusterMember>) {
    let mut fenced = cluster.membership.fenced();
    while fenced.changed().await.is_ok() {
        if !*fenced.borrow() {
            info!("membership renewed: serving again");
            continue;
        }
        let hosted = cluster.node.hosted_tenants();
        warn!(
            tenants = hosted.len(),
            "fenced: membership not renewed in time, stopping every tenant"
        );
        metrics::counter!("salesboy_self_fences_total").increment(1);
        for tenant in hosted {
            let _ = cluster.node.release(&tenant).await;
        }
    }
}
