//! Events and alerts: [`EventStore`] and its records.

use async_trait::async_trait;
use salesboy_protocol::TenantId;
use serde::{Deserialize, Serialize};

use super::StoreError;

/// An event or alert to keep ([`EventStore::record_event`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewEvent {
    /// The tenant concerned, if any.
    pub tenant: Option<TenantId>,
    /// Event kind (`provider_quota_exhausted`, `session_auth_failed`, …).
    pub kind: String,
    /// Details, JSON text.
    pub detail: String,
    /// When it happened.
    pub at_ms: i64,
}

/// A stored event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredEvent {
    /// The event's id; increases with insertion order.
    pub id: i64,
    /// The tenant concerned, if any.
    pub tenant: Option<TenantId>,
    /// Event kind.
    pub kind: String,
    /// Details, JSON text.
    pub detail: String,
    /// When it happened.
    pub at_ms: i64,
}

/// Events and alerts kept for the admin API.
#[async_trait]
pub trait EventStore: Send + Sync {
    /// Records an event or alert. Returns its id.
    async fn record_event(&self, event: &NewEvent) -> Result<i64, StoreError>;

    /// The last `limit` events, newest first.
    async fn recent_events(&self, limit: u32) -> Result<Vec<StoredEvent>, StoreError>;
}
