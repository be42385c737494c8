//! Tenant epochs: [`FencingStore`].

use async_trait::async_trait;
use salesboy_protocol::TenantId;

use super::StoreError;

/// Tenant epochs, the fence of every state-changing write: a node claims the tenant's epoch
/// when it starts hosting it, and writes carrying an older epoch are refused with
/// [`StoreError::StaleEpoch`].
#[async_trait]
pub trait FencingStore: Send + Sync {
    /// Makes `epoch` the tenant's current epoch if it is not older than the current one
    /// (the first claim creates it). [`StoreError::StaleEpoch`] otherwise.
    async fn claim_epoch(&self, tenant: &TenantId, epoch: u64) -> Result<(), StoreError>;

    /// The tenant's current epoch, if one was ever claimed or the tenant exists.
    async fn current_epoch(&self, tenant: &TenantId) -> Result<Option<u64>, StoreError>;
}
