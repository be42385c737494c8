//! Where the actors' events go on this node: a broadcast channel (tests, the bus publisher,
//! the dashboard subscribe to it), the log, and — for alerts — the store.

use std::sync::Arc;

use salesboy_actors::ports::EventSink;
use salesboy_actors::store::{NewEvent, Store};
use salesboy_protocol::events::{Alert, Event};
use salesboy_protocol::subjects::EventKind;
use tokio::sync::broadcast;
use tracing::{info, warn};

use crate::background::Background;

/// How many events a slow subscriber may fall behind before it loses some.
const CHANNEL_CAPACITY: usize = 4096;

/// The node's event sink.
pub struct NodeEvents {
    sender: broadcast::Sender<Event>,
    store: Arc<dyn Store>,
    /// Where alerts are written (each write runs to its end; stopping the node waits for it).
    background: Background,
}

impl NodeEvents {
    /// A sink that keeps alerts in `store`, writing them on `background`.
    pub fn new(store: Arc<dyn Store>, background: &Background) -> Self {
        let (sender, _) = broadcast::channel(CHANNEL_CAPACITY);
        Self {
            sender,
            store,
            background: background.clone(),
        }
    }

    /// Every event published from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<Event> {
        self.sender.subscribe()
    }
}

impl EventSink for NodeEvents {
    fn publish(&self, event: Event) {
        if event.kind == EventKind::Alert {
            info!(tenant = event.tenant.as_ref().map(|t| t.as_str()), detail = %event.detail, "alert");
            let store = Arc::clone(&self.store);
            let record = NewEvent {
                tenant: event.tenant.clone(),
                kind: Alert::from_detail(&event.detail)
                    .map_or("alert", |alert| alert.kind().as_str())
                    .to_owned(),
                detail: event.detail.to_string(),
                at_ms: event.at_ms,
            };
            self.background.spawn(async move {
                if let Err(e) = store.record_event(&record).await {
                    warn!(error = %e, "alert not recorded");
                }
            });
        }
        // No subscriber is fine: events are a feed, not a queue.
        let _ = self.sender.send(event);
    }
}
