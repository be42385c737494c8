//! Epochs on a cluster: a node may host a tenant only under the placement the directory
//! gives it. Activation takes the directory's word, claims a fresh entry, or takes over the
//! entry of a dead node, and claims the same epoch in SQL (fencing).

use std::sync::Arc;

use async_trait::async_trait;
use salesboy_actors::error::EpochError;
use salesboy_actors::ports::EpochSource;
use salesboy_actors::store::Store;
use salesboy_protocol::{NodeId, TenantId};

use super::directory::{Directory, DirectoryEntry, DirectoryError, EntryState};
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

/// The epoch after `epoch`; an error, never an overflow, at `u64::MAX` (the directory's
/// entries come from the bus).
fn after(epoch: u64) -> Result<u64, EpochError> {
    epoch.checked_add(1).ok_or(EpochError::Exhausted { epoch })
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
            let mine = |epoch: u64| DirectoryEntry {
                node: self.me.clone(),
                epoch,
                state: EntryState::Active,
            };
            let result = match self.directory.fetch(tenant).await.map_err(unavailable)? {
                None => self.directory.create(tenant, mine(after(stored)?)).await,
                Some(current) => {
                    let placement = &current.entry;
                    let ours = placement.node == self.me;
                    if ours && placement.state == EntryState::Active && placement.epoch > stored {
                        Ok(current)
                    } else if ours && placement.state == EntryState::Active {
                        // The directory lags the store (it was reset): move past both.
                        self.directory
                            .update(tenant, mine(after(stored)?), current.revision)
                            .await
                    } else if !ours && !super::is_known_dead(&self.membership, &placement.node) {
                        return Err(EpochError::HostedBy {
                            node: placement.node.clone(),
                        });
                    } else if ours {
                        return Err(EpochError::Moving);
                    } else {
                        // Its host is dead: take it over.
                        let epoch = after(placement.epoch.max(stored))?;
                        self.directory
                            .update(tenant, mine(epoch), current.revision)
                            .await
                    }
                }
            };
            match result {
                Ok(placed) => {
                    self.store.claim_epoch(tenant, placed.entry.epoch).await?;
                    return Ok(placed.entry.epoch);
                }
                Err(DirectoryError::Conflict) => continue,
                Err(e) => return Err(unavailable(e)),
            }
        }
        Err(EpochError::DirectoryChurn)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::background::Background;
    use crate::bus::{Bus, LocalBus};
    use crate::cluster::membership::{MembershipConfig, NodeInfo, NodeLoad};
    use crate::store::SqlStore;

    fn node(name: &str) -> NodeId {
        NodeId::new(name).expect("node id")
    }

    /// A refusal says why in its variant: who hosts the tenant, or that it is moving.
    #[tokio::test]
    async fn a_refused_claim_says_who_hosts_the_tenant_or_that_it_moves() {
        let bus: Arc<dyn Bus> = Arc::new(LocalBus::new());
        let background = Background::new();
        let directory = Arc::new(Directory::open(&bus, &background).await.expect("directory"));
        let membership = Membership::start(
            Arc::clone(&bus),
            node("n1"),
            NodeInfo {
                http_addr: "n1.local:8080".into(),
                version: "test".into(),
                protocol: salesboy_protocol::ProtocolRange::BUILD,
                max_tenants: 10,
            },
            Arc::new(|| NodeLoad {
                tenants: 0,
                conversations: 0,
                rss_bytes: 0,
                cpu_percent: 0.0,
                replies: Default::default(),
                calls: Default::default(),
            }),
            MembershipConfig {
                heartbeat: Duration::from_secs(1),
                failure_timeout: Duration::from_secs(60),
                fence_after: Duration::from_secs(30),
            },
            &background,
        )
        .await
        .expect("membership");
        let store: Arc<dyn Store> =
            Arc::new(SqlStore::connect("sqlite::memory:").await.expect("store"));
        let epochs = ClusterEpochs::new(
            node("n1"),
            Arc::clone(&directory),
            Arc::new(membership),
            store,
        );
        let tenant = TenantId::new("acme").expect("tenant");

        // Another node, not known dead, hosts it.
        let placed = directory
            .create(
                &tenant,
                DirectoryEntry {
                    node: node("n2"),
                    epoch: 1,
                    state: EntryState::Active,
                },
            )
            .await
            .expect("placed");
        assert_eq!(
            epochs.epoch_for(&tenant).await,
            Err(EpochError::HostedBy { node: node("n2") })
        );

        // This node is moving it away.
        directory
            .update(
                &tenant,
                DirectoryEntry {
                    node: node("n1"),
                    epoch: 1,
                    state: EntryState::Moving { to: node("n2") },
                },
                placed.revision,
            )
            .await
            .expect("marked moving");
        assert_eq!(epochs.epoch_for(&tenant).await, Err(EpochError::Moving));
    }

    #[test]
    fn the_largest_epoch_has_no_successor_and_no_overflow() {
        assert_eq!(after(0), Ok(1));
        assert_eq!(after(41), Ok(42));
        assert_eq!(
            after(u64::MAX),
            Err(EpochError::Exhausted { epoch: u64::MAX })
        );
    }
}
