//! Single-node implementations of what the cluster provides on a NATS deployment.

use std::sync::Arc;

use async_trait::async_trait;
use salesboy_actors::error::EpochError;
use salesboy_actors::ports::EpochSource;
use salesboy_actors::store::{Store, StoreError};
use salesboy_protocol::TenantId;

/// Epochs for a node that is alone: each activation claims the next epoch in the store, so
/// writes of an earlier activation of the same tenant (e.g. before a restart) are fenced.
pub struct StoreEpochs {
    store: Arc<dyn Store>,
}

impl StoreEpochs {
    /// Epochs kept in `store`.
    pub fn new(store: Arc<dyn Store>) -> Self {
        Self { store }
    }
}

#[async_trait]
impl EpochSource for StoreEpochs {
    async fn epoch_for(&self, tenant: &TenantId) -> Result<u64, EpochError> {
        loop {
            let next = self.store.current_epoch(tenant).await?.unwrap_or(0) + 1;
            match self.store.claim_epoch(tenant, next).await {
                Ok(()) => return Ok(next),
                // Someone claimed in between: read again.
                Err(StoreError::StaleEpoch { .. }) => continue,
                Err(e) => return Err(e.into()),
            }
        }
    }
}
