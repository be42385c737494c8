//! Retention: [`RetentionStore`].

use async_trait::async_trait;

use super::StoreError;

/// Deleting what is older than the retention period.
#[async_trait]
pub trait RetentionStore: Send + Sync {
    /// Deletes every message created before `cutoff_ms`, with its reply links. A reply that
    /// outlives its deleted inbound messages stays; an inbound message whose reply is deleted
    /// stays answered. Returns how many messages were deleted.
    async fn delete_messages_before(&self, cutoff_ms: i64) -> Result<u64, StoreError>;
}
