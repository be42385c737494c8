//! Events for external services (`docs/protocol.md`, "Events"): every event goes through
//! the events outbox in SQL, so none is lost.
//!
//! - [`NodeEvents`]: the actors' [`EventSink`]; it writes the events that report no change of
//!   the store's own (a session's state, an alert, a migration, a membership change) to the
//!   outbox, and keeps the alert conditions raised and not cleared
//!   ([`crate::alerts::ActiveAlerts`]). Events of stored changes are written by the store itself, in the change's
//!   transaction.
//! - [`publisher`]: reads the outbox in order, publishes each event to the JetStream stream
//!   `SB_EVENTS` with `Nats-Msg-Id` = its id, marks it published, and hands it to local
//!   subscribers ([`NodeEvents::subscribe`]); marking an event published queues it for the
//!   tenant's HTTP event webhooks;
//! - [`webhooks`]: the delivery worker of HTTP event webhooks;
//! - [`live`]: the events a page watches as they are published (the dashboard).

pub mod live;
pub mod publisher;
pub mod webhooks;

use std::sync::Arc;
use std::time::Duration;

use salesboy_actors::ports::EventSink;
use salesboy_actors::store::Store;
use salesboy_protocol::events::Event;
use salesboy_protocol::subjects::EventKind;
use tokio::sync::{broadcast, mpsc};
use tokio_util::sync::CancellationToken;

/// The pause of the publisher and of the webhook outcome recorder after a short batch, so
/// that writes gather: fewer, larger transactions (on SQLite each takes the database's one
/// write lock from the hot path).
pub(crate) const PACE: Duration = Duration::from_millis(20);
use tracing::{info, warn};

use crate::alerts::ActiveAlerts;
use crate::background::Background;

/// How many events a slow local subscriber may fall behind before it loses some.
const CHANNEL_CAPACITY: usize = 4096;

/// Most events the writer puts in one transaction.
const WRITE_BATCH: usize = 256;

/// How long the writer waits before retrying a failed write.
const WRITE_RETRY: Duration = Duration::from_millis(200);

/// Most attempts of one batch before its events are given up (and logged).
const WRITE_ATTEMPTS: usize = 5;

/// The node's event sink, and the feed of events this node publishes.
pub struct NodeEvents {
    feed: broadcast::Sender<Event>,
    /// The alert conditions raised through this sink and not cleared.
    active: Arc<ActiveAlerts>,
    /// To the outbox writer.
    writer: mpsc::UnboundedSender<Event>,
}

impl NodeEvents {
    /// A sink whose events one writer task on `background` writes to `store`'s outbox, in
    /// batches, in order. When `background` is cancelled the writer writes what is queued
    /// and ends (stopping the node waits for it).
    pub fn new(store: Arc<dyn Store>, background: &Background) -> Self {
        let (feed, _) = broadcast::channel(CHANNEL_CAPACITY);
        let (writer, queue) = mpsc::unbounded_channel();
        background.spawn(write_events(store, queue, background.token().clone()));
        Self {
            feed,
            active: Arc::default(),
            writer,
        }
    }

    /// The alert conditions raised through this sink and not yet cleared (`/api/health`,
    /// `salesboy_alert_active`).
    pub fn active_alerts(&self) -> Arc<ActiveAlerts> {
        Arc::clone(&self.active)
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
        self.active.observe(&event);
        if let Err(unsent) = self.writer.send(event) {
            warn!(
                kind = unsent.0.kind.as_str(),
                "event not recorded: the node is stopping"
            );
        }
    }
}

/// The outbox writer: one connection at a time, whatever the number of events, each batch
/// in one transaction; on cancel, writes what is queued and ends.
async fn write_events(
    store: Arc<dyn Store>,
    mut queue: mpsc::UnboundedReceiver<Event>,
    stop: CancellationToken,
) {
    let mut batch = Vec::with_capacity(WRITE_BATCH);
    loop {
        let stopping = tokio::select! {
            biased;
            received = queue.recv_many(&mut batch, WRITE_BATCH) => received == 0,
            () = stop.cancelled() => true,
        };
        if stopping {
            while let Ok(event) = queue.try_recv() {
                batch.push(event);
            }
        }
        for chunk in batch.chunks(WRITE_BATCH) {
            write(&*store, chunk).await;
        }
        batch.clear();
        if stopping {
            return;
        }
    }
}

async fn write(store: &dyn Store, events: &[Event]) {
    for attempt in 1..=WRITE_ATTEMPTS {
        match store.record_events(events).await {
            Ok(()) => return,
            Err(e) if attempt == WRITE_ATTEMPTS => {
                warn!(events = events.len(), error = %e, "events not recorded, given up");
                metrics::counter!("salesboy_events_dropped_total").increment(events.len() as u64);
            }
            Err(e) => {
                warn!(events = events.len(), error = %e, "events not recorded, retrying");
                tokio::time::sleep(WRITE_RETRY).await;
            }
        }
    }
}
