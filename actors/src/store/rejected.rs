//! Rejected webhook items: [`RejectedItemStore`] and its records.

use async_trait::async_trait;
use salesboy_protocol::whatsapp::RejectedItem;
use salesboy_protocol::{PhoneNumberId, TenantId};
use serde::{Deserialize, Serialize};

use super::StoreError;

/// An item of a signed webhook delivery that could not be read, to record
/// ([`RejectedItemStore::record_rejected_item`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewRejectedItem {
    /// The tenant of the item's number; `None` when the number could not be read or belongs
    /// to no tenant.
    pub tenant: Option<TenantId>,
    /// The item's business number, when it could be read.
    pub phone_number_id: Option<PhoneNumberId>,
    /// The WhatsApp Business Account id, when it could be read.
    pub waba_id: Option<String>,
    /// Where it was, why it was rejected, its JSON (bounded).
    pub item: RejectedItem,
    /// When the ingress received it.
    pub received_ms: i64,
}

/// A recorded rejected item.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredRejectedItem {
    /// Its id; increases with insertion order.
    pub id: i64,
    /// What was recorded.
    pub new: NewRejectedItem,
}

/// Items of webhook deliveries that could not be read: the rest of their delivery was
/// processed, these are kept for people to look at.
#[async_trait]
pub trait RejectedItemStore: Send + Sync {
    /// Records a rejected item and, when its tenant is known, the tenant's
    /// `message_rejected` event, in one transaction. Not fenced (any node's ingress
    /// records). Answers the item's id.
    async fn record_rejected_item(&self, item: &NewRejectedItem) -> Result<i64, StoreError>;

    /// The tenant's rejected items, newest first, at most `limit`; with `before` (an item's
    /// id), only those recorded before it (paging back).
    async fn rejected_items(
        &self,
        tenant: &TenantId,
        before: Option<i64>,
        limit: u32,
    ) -> Result<Vec<StoredRejectedItem>, StoreError>;
}
