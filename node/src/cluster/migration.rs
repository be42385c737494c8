//! Live migration (architecture §7): moving a tenant this node hosts to another node,
//! adopting one another node moves here, and rolling back moves cut short.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use salesboy_actors::handoff::TenantHandoff;
use salesboy_actors::node::{ActivationError, TenantError};
use salesboy_protocol::subjects::EventKind;
use salesboy_protocol::{NodeId, TenantId};
use serde::{Deserialize, Serialize};
use tokio::sync::Semaphore;
use tokio::time::Instant;
use tracing::{debug, error, info, warn};

use super::directory::{DirectoryEntry, DirectoryError, EntryState};
use super::member::ClusterMember;
use super::membership::NodeRecord;
use super::placement::PlacementReason;
use super::wire::{ControlError, ControlReply, ControlRequest};
use crate::bus::BusError;

/// How often a mover reads the directory to learn how a move it could not confirm ended.
const SETTLE_ATTEMPTS: usize = 20;
/// The pause between those reads (20 × 250 ms: about the default failure timeout).
const SETTLE_PAUSE: Duration = Duration::from_millis(250);

/// Why a move failed: the mover's side (`MigrateOut`) and the adopter's (`Adopt`). Plain
/// data: it travels in a [`ControlReply::Error`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum MigrationError {
    /// A move of this tenant is already under way here.
    #[error("tenant {tenant} is already moving")]
    AlreadyMoving {
        /// The tenant.
        tenant: TenantId,
    },
    /// The directory places the tenant nowhere.
    #[error("tenant {tenant} is not in the directory")]
    NotInDirectory {
        /// The tenant.
        tenant: TenantId,
    },
    /// The directory places the tenant on another node (or it is moving already).
    #[error("tenant {tenant} is not hosted here")]
    NotHostedHere {
        /// The tenant.
        tenant: TenantId,
    },
    /// The directory could not be read or written (or changed under the mover).
    #[error("tenant {tenant}: {error}")]
    Directory {
        /// The tenant.
        tenant: TenantId,
        /// What the directory said.
        #[source]
        error: DirectoryError,
    },
    /// The tenant could not be frozen; it resumed here.
    #[error("freeze failed: {error}")]
    FreezeFailed {
        /// The tenant.
        tenant: TenantId,
        /// Why.
        #[source]
        error: TenantError,
    },
    /// The target refused the adoption; the tenant stays here.
    #[error("{to} did not adopt {tenant}: {error}")]
    AdoptionRefused {
        /// The tenant.
        tenant: TenantId,
        /// The target.
        to: NodeId,
        /// What the target answered.
        error: Box<ControlError>,
    },
    /// The target did not answer the adoption (timed out, gone); the directory says it did
    /// not adopt, so the tenant stays here.
    #[error("{to} did not adopt {tenant}: {error}")]
    AdoptionUnanswered {
        /// The tenant.
        tenant: TenantId,
        /// The target.
        to: NodeId,
        /// What the bus said.
        #[source]
        error: BusError,
    },
    /// The target answered something other than "adopted" or an error.
    #[error("{to} did not adopt {tenant}: unexpected answer {answer:?}")]
    UnexpectedAnswer {
        /// The tenant.
        tenant: TenantId,
        /// The target.
        to: NodeId,
        /// The answer.
        answer: Box<ControlReply>,
    },
    /// Whether the target adopted the tenant is unknown (the directory could not be read):
    /// it was released here; whoever the directory names reconciles it from storage.
    #[error("{to} may or may not have adopted {tenant}: {error}")]
    OutcomeUnknown {
        /// The tenant.
        tenant: TenantId,
        /// The target.
        to: NodeId,
        /// The directory's last error.
        #[source]
        error: DirectoryError,
    },
    /// Adopter: the mover called the move off (its moving mark is gone) or the directory
    /// could not be written.
    #[error("the move of {tenant} was called off: {error}")]
    CalledOff {
        /// The tenant.
        tenant: TenantId,
        /// What the directory said.
        #[source]
        error: DirectoryError,
    },
    /// Adopter: the directory names this node but neither the handed-over state nor storage
    /// could start the tenant here.
    #[error("{tenant} placed here but not activated: {error}")]
    NotActivated {
        /// The tenant.
        tenant: TenantId,
        /// Why.
        #[source]
        error: ActivationError,
    },
    /// The tenant's epoch is the largest there is (only a forged or corrupt directory
    /// entry holds it): no move can take a greater one.
    #[error("tenant {tenant} has no epoch after {epoch}")]
    EpochExhausted {
        /// The tenant.
        tenant: TenantId,
        /// Its epoch.
        epoch: u64,
    },
}

impl MigrationError {
    /// The error for an adoption that did not answer "adopted".
    fn not_adopted(tenant: &TenantId, to: &NodeId, answer: Result<ControlReply, BusError>) -> Self {
        let (tenant, to) = (tenant.clone(), to.clone());
        match answer {
            Ok(ControlReply::Error(error)) => Self::AdoptionRefused {
                tenant,
                to,
                error: Box::new(error),
            },
            Ok(answer) => Self::UnexpectedAnswer {
                tenant,
                to,
                answer: Box::new(answer),
            },
            Err(error) => Self::AdoptionUnanswered { tenant, to, error },
        }
    }
}

impl ClusterMember {
    /// Takes over a tenant another node is moving here: first points the directory here with
    /// a compare-and-set on the mover's moving mark (so the move cannot also be called off),
    /// then hosts the handed-over state. Once the directory names this node, the tenant is
    /// hosted here even if the state cannot be: it is activated from storage instead.
    pub(super) async fn adopt(
        &self,
        handoff: TenantHandoff,
        epoch: u64,
        mark_revision: u64,
    ) -> Result<(), MigrationError> {
        let tenant = handoff.tenant.clone();
        let here = DirectoryEntry {
            node: self.me.clone(),
            epoch,
            state: EntryState::Active,
        };
        self.directory
            .update(&tenant, here, mark_revision)
            .await
            .map_err(|error| MigrationError::CalledOff {
                tenant: tenant.clone(),
                error,
            })?;
        if let Err(e) = self.node.adopt(handoff, epoch).await {
            warn!(tenant = %tenant, error = %e, "handed-over state not adopted, activating from storage");
            // A copy left here by an earlier placement is stale: drop it first. An
            // activation under way started after the directory named this node (before, it
            // would have found the tenant moving and failed): join it instead.
            if matches!(e, ActivationError::AlreadyHosted(_)) {
                let _ = self.node.release(&tenant).await;
            }
            // The activation joined may have read the directory before it named this node
            // and failed for that: one more try reads it afresh.
            let activated = match self.node.activate(&tenant).await {
                Err(_) => self.node.activate(&tenant).await,
                activated => activated,
            };
            activated.map_err(|error| MigrationError::NotActivated {
                tenant: tenant.clone(),
                error,
            })?;
        }
        Ok(())
    }

    /// After an adoption that did not answer "adopted" (refused, lost, timed out), the
    /// directory tells whether `to` took the tenant: it names another node, or it still holds
    /// this node's moving mark, which this node then rolls back, calling the move off for
    /// good (the adopter's compare-and-set on the mark can no longer succeed). `Ok(true)`:
    /// moved; `Ok(false)`: stays here; `Err`: the directory could not be read, so nobody knows.
    pub(super) async fn settle_move(
        &self,
        tenant: &TenantId,
        epoch: u64,
        mark_revision: u64,
    ) -> Result<bool, DirectoryError> {
        // Overwritten by every failed attempt (there is at least one).
        let mut last_error = DirectoryError::Conflict;
        for attempt in 0..SETTLE_ATTEMPTS {
            if attempt > 0 {
                tokio::time::sleep(SETTLE_PAUSE).await;
            }
            match self.directory.fetch(tenant).await {
                Ok(Some(now)) if now.revision == mark_revision => {
                    let active = DirectoryEntry {
                        node: self.me.clone(),
                        epoch,
                        state: EntryState::Active,
                    };
                    match self.directory.update(tenant, active, mark_revision).await {
                        Ok(_) => return Ok(false),
                        // The adopter's compare-and-set came first, or the answer was lost:
                        // read again.
                        Err(e) => last_error = e,
                    }
                }
                Ok(Some(now)) => return Ok(now.entry.node != self.me),
                Ok(None) => return Ok(false),
                Err(e) => last_error = e,
            }
        }
        Err(last_error)
    }

    /// Moves a tenant this node hosts to `to` (architecture §7): mark it moving, freeze it
    /// (the turn under way finishes), have `to` adopt the state under the next epoch (it
    /// points the directory at itself), hand over what was held, release it here. When the
    /// adoption fails, the directory decides (see `settle_move`): the tenant resumes here or
    /// is released, never both hosts.
    pub async fn migrate_out(&self, tenant: &TenantId, to: &NodeId) -> Result<u64, MigrationError> {
        let Some(_guard) = MoveGuard::claim(&self.moving, tenant) else {
            return Err(MigrationError::AlreadyMoving {
                tenant: tenant.clone(),
            });
        };
        let started = Instant::now();
        let directory_error = |error| MigrationError::Directory {
            tenant: tenant.clone(),
            error,
        };
        let mut current = self
            .directory
            .fetch(tenant)
            .await
            .map_err(directory_error)?
            .ok_or_else(|| MigrationError::NotInDirectory {
                tenant: tenant.clone(),
            })?;
        if current.entry.node == self.me && matches!(current.entry.state, EntryState::Moving { .. })
        {
            // Marked moving by this node, but no move is under way here: an earlier move
            // failed and could not roll its mark back. Roll it back now.
            warn!(tenant = %tenant, "stale moving mark, rolling it back");
            let active = DirectoryEntry {
                node: self.me.clone(),
                epoch: current.entry.epoch,
                state: EntryState::Active,
            };
            current = self
                .directory
                .update(tenant, active, current.revision)
                .await
                .map_err(directory_error)?;
        }
        if current.entry.node != self.me || current.entry.state != EntryState::Active {
            return Err(MigrationError::NotHostedHere {
                tenant: tenant.clone(),
            });
        }
        let epoch = current.entry.epoch;
        let Some(next_epoch) = epoch.checked_add(1) else {
            return Err(MigrationError::EpochExhausted {
                tenant: tenant.clone(),
                epoch,
            });
        };
        let moving = DirectoryEntry {
            node: self.me.clone(),
            epoch,
            state: EntryState::Moving { to: to.clone() },
        };
        let marked = self
            .directory
            .update(tenant, moving, current.revision)
            .await
            .map_err(directory_error)?;
        let back_here = |revision| async move {
            let active = DirectoryEntry {
                node: self.me.clone(),
                epoch,
                state: EntryState::Active,
            };
            if let Err(e) = self.directory.update(tenant, active, revision).await {
                warn!(tenant = %tenant, error = %e, "could not mark tenant active again after a failed move");
            }
        };

        // Asked after the mark: an activation that starts now finds the tenant moving, and
        // one under way is waited for (taking it for "not hosted" would leave it running
        // here beside the adopter).
        let frozen = match self.node.is_hosted(tenant).await {
            Ok(true) => self.node.freeze(tenant).await.map(Some),
            Ok(false) => Ok(None),
            Err(error) => Err(error),
        };
        let (hosted, handoff) = match frozen {
            Ok(Some(handoff)) => (true, handoff),
            // Not active here: nothing to carry but the directory entry.
            Ok(None) => (
                false,
                TenantHandoff {
                    tenant: tenant.clone(),
                    epoch,
                    conversations: vec![],
                    session: None,
                    held: vec![],
                },
            ),
            Err(error) => {
                back_here(marked.revision).await;
                return Err(MigrationError::FreezeFailed {
                    tenant: tenant.clone(),
                    error,
                });
            }
        };
        let adopted = self
            .control(
                to,
                &ControlRequest::Adopt {
                    handoff,
                    epoch: next_epoch,
                    mark_revision: marked.revision,
                },
            )
            .await;
        if !matches!(adopted, Ok(ControlReply::Ok)) {
            match self.settle_move(tenant, epoch, marked.revision).await {
                Ok(true) => {
                    info!(tenant = %tenant, to = %to, answer = ?adopted, "adopted although the answer said otherwise");
                }
                Ok(false) => {
                    if hosted {
                        self.node.thaw(tenant);
                    }
                    return Err(MigrationError::not_adopted(tenant, to, adopted));
                }
                Err(e) => {
                    // Whether `to` hosts it is unknown: hosting it here too could answer
                    // twice. Its messages are persisted; whoever the directory names (once
                    // it can be read) reconciles them from storage.
                    let _ = self.node.release(tenant).await;
                    error!(tenant = %tenant, to = %to, error = %e, "move outcome unknown, tenant released here");
                    return Err(MigrationError::OutcomeUnknown {
                        tenant: tenant.clone(),
                        to: to.clone(),
                        error: e,
                    });
                }
            }
        }
        let held = if hosted {
            self.node.release(tenant).await
        } else {
            Vec::new()
        };
        for command in held {
            if let Err(e) = self.deliver(tenant, command).await {
                // Persisted: the new host's reconciliation finds it.
                warn!(tenant = %tenant, error = %e, "held message not forwarded");
            }
        }
        self.moves.fetch_add(1, Ordering::Relaxed);
        metrics::counter!("salesboy_migrations_total").increment(1);
        metrics::histogram!("salesboy_migration_seconds").record(started.elapsed().as_secs_f64());
        self.publish(
            EventKind::TenantMigrated,
            Some(tenant),
            serde_json::json!({"from": self.me.as_str(), "to": to.as_str(), "epoch": next_epoch}),
        );
        info!(tenant = %tenant, to = %to, epoch = next_epoch, "tenant moved");
        Ok(next_epoch)
    }
    /// Runs moves with bounded concurrency; returns how many succeeded.
    pub(super) async fn move_many(
        &self,
        moves: Vec<(TenantId, NodeId)>,
        reason: PlacementReason,
        candidates: &[NodeRecord],
    ) -> u64 {
        let permits = Arc::new(Semaphore::new(self.settings.move_concurrency.max(1)));
        let done = AtomicU64::new(0);
        let moves = moves.into_iter().map(|(tenant, to)| {
            let permits = Arc::clone(&permits);
            let done = &done;
            async move {
                let Ok(_permit) = permits.acquire().await else {
                    return;
                };
                match self.migrate_out(&tenant, &to).await {
                    Ok(epoch) => {
                        done.fetch_add(1, Ordering::Relaxed);
                        self.record_placement(
                            &tenant,
                            &to,
                            Some(epoch),
                            reason,
                            Some(&self.me),
                            candidates,
                        );
                    }
                    Err(e) => warn!(tenant = %tenant, to = %to, error = %e, "move failed"),
                }
            }
        });
        futures::future::join_all(moves).await;
        done.load(Ordering::Relaxed)
    }

    /// Rolls back this node's own "moving" marks that no move here stands behind: left by a
    /// move cut short (the node was killed, paused or cut off mid-move, or could not learn
    /// how the move ended). Until then senders would retry that tenant forever. The roll-back
    /// is a compare-and-set on the mark, so it cannot overtake the adopter's.
    pub(super) async fn roll_back_stale_marks(&self) {
        let stale = self.directory.cached_where(|v| {
            v.entry.node == self.me && matches!(v.entry.state, EntryState::Moving { .. })
        });
        for (tenant, mark) in stale {
            // A move under way here holds its guard from before the mark to after it is
            // resolved; holding the guard keeps a new move off while rolling back.
            let Some(_guard) = MoveGuard::claim(&self.moving, &tenant) else {
                continue;
            };
            let active = DirectoryEntry {
                node: self.me.clone(),
                epoch: mark.entry.epoch,
                state: EntryState::Active,
            };
            match self.directory.update(&tenant, active, mark.revision).await {
                Ok(_) => warn!(tenant = %tenant, "stale moving mark rolled back"),
                Err(e) => debug!(tenant = %tenant, error = %e, "stale moving mark not rolled back"),
            }
        }
    }
}

/// Marks a tenant as being moved by this node for as long as it lives.
pub(super) struct MoveGuard<'a> {
    moving: &'a std::sync::Mutex<std::collections::HashSet<TenantId>>,
    tenant: TenantId,
}

impl<'a> MoveGuard<'a> {
    /// `None` when the tenant is already being moved.
    pub(super) fn claim(
        moving: &'a std::sync::Mutex<std::collections::HashSet<TenantId>>,
        tenant: &TenantId,
    ) -> Option<Self> {
        let mut set = moving
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        set.insert(tenant.clone()).then(|| Self {
            moving,
            tenant: tenant.clone(),
        })
    }
}

impl Drop for MoveGuard<'_> {
    fn drop(&mut self) {
        self.moving
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .remove(&self.tenant);
    }
}
