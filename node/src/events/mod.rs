//! Events for external services (`docs/protocol.md`, "Events"): every event goes through
//! the events outbox in SQL, so none is lost.
//!
//! - [`NodeEvents`]: the actors' [`EventSink`]; it writes the events that report no change of
//!   the store's own (a session's state, an alert, a migration, a membership change) to the
//!   outbox. Events of stored changes are written by the store itself, in the change's
//!   transaction.
//! - [`publisher`]: reads the outbox in order, publishes each event to the JetStream stream
//!   `SB_EVENTS` with `Nats-Msg-Id` = its id, marks it published, and hands it to local
//!   subscribers ([`NodeEvents::subscribe`]); marking an event published queues it for the
//!   tenant's HTTP event webhooks;
//! - [`webhooks`]: the delivery worker of HTTP event webhooks.

pub mod publisher;
pub mod webhooks;

use std::sync::Arc;

use salesboy_actors::ports::EventSink;
use salesboy_actors::store::Store;
use salesboy_protocol::events::Event;
use salesboy_protocol::subjects::EventKind;
use tokio::sync::broadcast;
use tracing::{info, warn};

use crate::background::Background;

/// How many events a slow local subscriber may fall behind before it loses some.
const CHANNEL_CAPACITY: usize = 4096;

/// The node's event sink, and the feed of events this node publishes.
pub struct NodeEvents {
    feed: broadcast::Sender<Event>,
    store: Arc<dyn Store>,
    /// Where outbox writes run (each runs to its end; stopping the node waits for it).
    background: Background,
}

impl NodeEvents {
    /// A sink that writes events to `store`'s outbox, on `background`.
    pub fn new(store: Arc<dyn Store>, background: &Background) -> Self {
        let (feed, _) = broadcast::channel(CHANNEL_CAPACITY);
        Self {
            feed,
            store,
            background: background.clone(),
        }
    }

    /// Every event this node's publisher publishes from now on (on a cluster only the
    /// leader publishes). A feed for tests and pages: the durable copy is the stream.
    pub fn subscribe(&self) -> broadcast::Receiver<Event> {
        self.feed.subscribe()
    }

    /// Where the publisher hands published events to local subscribers.
    pub(crate) fn feed(&self) -> broadcast::Sender<Event> {
        self.feed.clone()
    }
}

impl EventSink for NodeEvents {
    fn publish(&self, event: Event) {
        if event.kind == EventKind::AlertRaised {
            info!(tenant = event.tenant.as_ref().map(|t| t.as_str()), detail = %event.detail, "alert");
        }
        let store = Arc::clone(&self.store);
        self.background.spawn(async move {
            if let Err(e) = store.record_event(&event).await {
                warn!(kind = event.kind.as_str(), error = %e, "event not recorded");
            }
        });
    }
}
