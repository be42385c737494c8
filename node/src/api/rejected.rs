//! A tenant's rejected webhook items: items of signed webhook deliveries that could not be
//! read (a bad id, a missing field, an unknown shape). Their delivery was answered 200 and
//! its other items processed; these are kept for people to look at (the ingress records
//! them, see [`crate::ingress`]).

use salesboy_actors::store::StoredRejectedItem;
use salesboy_protocol::TenantId;
use serde::Serialize;
use utoipa::ToSchema;

use super::conversations::{DEFAULT_MESSAGE_LIMIT, MAX_MESSAGE_LIMIT, invalid_limit};
use super::{Api, ApiError};

/// One rejected item.
#[derive(Debug, Serialize, ToSchema)]
pub struct RejectedItemView {
    /// The item's id (newer items have larger ids).
    pub id: i64,
    /// The business number of the item's change.
    #[schema(example = "106540352242922")]
    pub phone_number_id: Option<String>,
    /// The WhatsApp Business Account id of its entry, when it could be read.
    pub waba_id: Option<String>,
    /// Where the item was in its delivery.
    #[schema(example = "entry[0].changes[0].value.messages[1]")]
    pub path: String,
    /// Why it could not be read.
    #[schema(
        example = "wamid contains ' ' at byte 5; allowed: printable ASCII without whitespace"
    )]
    pub reason: String,
    /// The item's JSON as Meta sent it, at most 4 KiB of it (cut when `truncated`, and then
    /// no longer valid JSON).
    pub raw: String,
    /// Whether `raw` was cut.
    pub truncated: bool,
    /// When the node received it (unix ms).
    pub received_ms: i64,
}

impl From<StoredRejectedItem> for RejectedItemView {
    fn from(stored: StoredRejectedItem) -> Self {
        let new = stored.new;
        Self {
            id: stored.id,
            phone_number_id: new.phone_number_id.map(|p| p.to_string()),
            waba_id: new.waba_id,
            path: new.item.path,
            reason: new.item.reason,
            raw: new.item.raw,
            truncated: new.item.truncated,
            received_ms: new.received_ms,
        }
    }
}

/// The tenant's rejected webhook items, newest first, at most `limit` (default 100, at most
/// 1000); with `before` (an item's `id`), only older ones (paging back).
pub async fn list(
    api: &Api,
    tenant: &TenantId,
    before: Option<i64>,
    limit: Option<u32>,
) -> Result<Vec<RejectedItemView>, ApiError> {
    let limit = match limit {
        None => DEFAULT_MESSAGE_LIMIT,
        Some(limit) if (1..=MAX_MESSAGE_LIMIT).contains(&limit) => limit,
        Some(limit) => return Err(invalid_limit(limit)),
    };
    api.existing_tenant(tenant).await?;
    let items = api.store.rejected_items(tenant, before, limit).await?;
    Ok(items.into_iter().map(RejectedItemView::from).collect())
}
