//! [`LiveEvents`]: the events a page watches as they are published (the dashboard's live
//! streams). Best effort, from now on: the durable copy is the events stream.
//!
//! On NATS every node reads the events its cluster publishes (whoever the publisher), by a
//! core subscription to the events subjects; without NATS, the node's own publisher's
//! feed ([`super::NodeEvents::subscribe`]).

use std::sync::Arc;

use futures::StreamExt;
use futures::stream::BoxStream;
use salesboy_protocol::TenantId;
use salesboy_protocol::events::Event;
use salesboy_protocol::subjects;
use tokio::sync::broadcast;
use tracing::debug;

use crate::bus::{Bus, BusError};

/// Where live events come from.
#[derive(Clone)]
pub enum LiveEvents {
    /// The events published on the bus (NATS): every node's page sees the cluster's events.
    Bus(Arc<dyn Bus>),
    /// This node's publisher's feed (a node without NATS).
    Local(broadcast::Sender<Event>),
}

impl LiveEvents {
    /// A source that never yields (a node state built without a publisher, in tests).
    pub fn none() -> Self {
        Self::Local(broadcast::channel(1).0)
    }

    /// The events published from now on, every tenant's and the cluster's (`None`), or one
    /// tenant's. A subscriber that falls behind the local feed loses the events it missed.
    pub async fn subscribe(
        &self,
        tenant: Option<&TenantId>,
    ) -> Result<BoxStream<'static, Event>, BusError> {
        match self {
            Self::Bus(bus) => {
                let subject = tenant.map_or_else(subjects::all_events, subjects::tenant_events);
                let subscription = bus.subscribe(&subject, None).await?;
                Ok(subscription
                    .filter_map(|message| async move {
                        serde_json::from_slice::<Event>(&message.payload)
                            .inspect_err(|e| debug!(error = %e, subject = message.subject, "unreadable event skipped"))
                            .ok()
                    })
                    .boxed())
            }
            Self::Local(feed) => {
                let tenant = tenant.cloned();
                let receiver = feed.subscribe();
                Ok(broadcast_stream(receiver)
                    .filter(move |event| {
                        let keep = tenant.is_none() || event.tenant == tenant;
                        async move { keep }
                    })
                    .boxed())
            }
        }
    }
}

/// The events of a broadcast receiver, skipping over the ones it lagged behind.
fn broadcast_stream(
    receiver: broadcast::Receiver<Event>,
) -> impl futures::Stream<Item = Event> + Send + 'static {
    futures::stream::unfold(receiver, |mut receiver| async move {
        loop {
            match receiver.recv().await {
                Ok(event) => return Some((event, receiver)),
                Err(broadcast::error::RecvError::Lagged(missed)) => {
                    debug!(missed, "live events subscriber fell behind");
                }
                Err(broadcast::error::RecvError::Closed) => return None,
            }
        }
    })
}
