//! Events: [`EventStore`].

use async_trait::async_trait;
use salesboy_protocol::events::Event;

use super::StoreError;

/// The events outbox, as the actors and the admin API see it. Events that report a change
/// of the store's own (a message received, a reply sent, a pause, a knowledge change) are
/// written by the store in the transaction of that change; [`EventStore::record_events`]
/// writes the others.
#[async_trait]
pub trait EventStore: Send + Sync {
    /// Records events that report no change of the store's own (a session's state, a
    /// migration, an alert), to be published: all or none, in order.
    async fn record_events(&self, events: &[Event]) -> Result<(), StoreError>;

    /// The last `limit` events, newest first.
    async fn recent_events(&self, limit: u32) -> Result<Vec<Event>, StoreError>;
}
