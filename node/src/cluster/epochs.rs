//! Epochs on a cluster: a node may host a tenant only under the placement the directory
//! gives it. Activation takes the directory's word, claims a fresh entry, or takes over the
//! entry of a dead node, and claims the same epoch in SQL (fencing).

use std::sync::Arc;

use async_trait::async_trait;
use salesboy_actors::error::EpochError;
use salesboy_actors::ports::EpochSource;
use salesboy_actors::store::Store;
use salesboy_protocol::{NodeId, TenantId};

use super::directory::{Directory, DirectoryError, Placement, PlacementState};
use super::membership::Membership;

/// How often activation retries when the directory changes under it.
const ATTEMPTS: usize = 5;

/// The cluster's [`EpochSource`].
pub struct ClusterEpochs {
    me: NodeId,
    directory: Arc<Directory>,
    membership: Arc<Membership>,
    store: Arc<dyn Store>,
}

impl ClusterEpochs {
    /// Epochs for node `me`.
    pub fn new(
        me: NodeId,
        directory: Arc<Directory>,
        membership: Arc<Membership>,
        store: Arc<dyn Store>,
    ) -> Self {
        Self {
            me,
            directory,
            membership,
            store,
        }
    }
}

fn unavailable(error: DirectoryError) -> EpochError {
    EpochError::DirectoryUnavailable {
        reason: error.to_string(),
    }
}

#[async_trait]
impl EpochSource for ClusterEpochs {
    async fn epoch_for(&self, tenant: &TenantId) -> Result<u64, EpochError> {
        for _ in 0..ATTEMPTS {
            let stored = self.store.current_epoch(tenant).await?.unwrap_or(0);
            let mine = |epoch: u64| Placement {
                node: self.me.clone(),
                epoch,
                state: PlacementState::Active,
            };
            let result = match self.directory.fetch(tenant).await.map_err(unavailable)? {
                None => self.directory.create(tenant, mine(stored + 1)).await,
                Some(current) => {
                    let placement = &current.placement;
                    let ours = placement.node == self.me;
                    if ours && placement.state == PlacementState::Active && placement.epoch > stored
                    {
                        Ok(current)
                    } else if ours && placement.state == PlacementState::Active {
                        // The directory lags the store (it was reset): move past both.
                        self.directory
                            .update(tenant, mine(stored + 1), current.revision)
                            .await
                    } else if !ours && !super::is_known_dead(&self.membership, &placement.node) {
                        return Err(EpochError::HostedBy {
                            node: placement.node.clone(),
                        });
                    } else if ours {
                        return Err(EpochError::Moving);
                    } else {
                        // Its host is dead: take it over.
                        let epoch = placement.epoch.max(stored) + 1;
                        self.directory
                            .update(tenant, mine(epoch), current.revision)
                            .await
                    }
                }
            };
            match result {
                Ok(placed) => {
                    self.store
                        .claim_epoch(tenant, placed.placement.epoch)
                        .await?;
                    return Ok(placed.placement.epoch);
                }
                Err(DirectoryError::Conflict) => continue,
                Err(e) => return Err(unavailable(e)),
            }
        }
        Err(EpochError::DirectoryChurn)
    }
}
