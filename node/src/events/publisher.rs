//! The events publisher: reads the events outbox in order, publishes each event to the
//! JetStream stream `SB_EVENTS` with `Nats-Msg-Id` = its id, then marks it published and
//! hands it to local subscribers.
//!
//! One node publishes at a time: the leader on a cluster, the node itself alone. A node
//! killed between a commit and its publish leaves the event unpublished in the outbox; the
//! next publisher (the same node restarted, or the new leader) publishes it. An event
//! published twice (its publisher died between the stream's ack and the mark) is stored once:
//! the stream drops a `Nats-Msg-Id` it has seen within its duplicate window. Each publisher
//! publishes in outbox order and waits for the acks in that order, so events of one chat
//! (written one after another by one conversation) reach the stream in the order they
//! happened, even while two publishers overlap during a leader change.
//!
//! Without JetStream (a single node without NATS, or an in-process bus) events are only
//! marked published and handed to local subscribers.

use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::{self, stream};
use salesboy_actors::ports::Clock;
use salesboy_protocol::events::Event;
use salesboy_protocol::subjects::{EVENTS_STREAM, all_events};
use tokio::sync::broadcast;
use tracing::{debug, info, warn};

use crate::backoff::Backoff;
use crate::cluster::ClusterMember;
use crate::store::{OutboxEvent, SqlStore};

/// Events read from the outbox and published per round.
const BATCH: u32 = 256;

/// How often a publisher looks at the outbox without being woken: events written by other
/// nodes (on a cluster) do not wake it, and a follower checks whether it leads now.
const POLL: Duration = Duration::from_millis(500);

/// Waits after a failed round.
const RETRY: Backoff = Backoff {
    first: Duration::from_millis(100),
    max: Duration::from_secs(5),
    retries: usize::MAX,
};

/// The events stream's limits (`docs/protocol.md`, "Events").
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamSettings {
    /// How long the stream keeps an event.
    pub max_age: Duration,
    /// Within this window a re-published event id is stored once.
    pub duplicate_window: Duration,
    /// Copies on a NATS cluster.
    pub replicas: usize,
}

/// How a starting node retries setting up the events stream: a NATS cluster that has just
/// started may still be electing its JetStream leader, and its requests time out. Ten
/// retries wait about 26 s plus jitter.
const STREAM_SETUP: Backoff = Backoff {
    first: Duration::from_millis(100),
    max: Duration::from_secs(5),
    retries: 10,
};

/// Why the events stream could not be set up.
#[derive(Debug, thiserror::Error)]
#[error("setting up the events stream {stream}: {reason}")]
pub struct StreamError {
    stream: &'static str,
    reason: String,
    /// Worth trying again (a request that failed, not a stream that contradicts the
    /// configuration).
    retryable: bool,
}

/// [`ensure_stream`] for a starting node: a failed request is retried ([`STREAM_SETUP`]); a
/// stream that contradicts the configuration fails at once.
pub async fn ensure_stream_at_start(
    js: &jetstream::Context,
    settings: &StreamSettings,
) -> Result<(), StreamError> {
    STREAM_SETUP
        .retry(
            "setting up the events stream",
            || ensure_stream(js, settings),
            |e: &StreamError| e.retryable,
        )
        .await
}

/// Creates the events stream `SB_EVENTS` over `sb.v1.evt.>` (file storage) if it is missing,
/// and brings its age limit and duplicate window to `settings` if they differ. An existing
/// stream with other replicas than `settings` is refused (never changed).
pub async fn ensure_stream(
    js: &jetstream::Context,
    settings: &StreamSettings,
) -> Result<(), StreamError> {
    let failed = |reason: String| StreamError {
        stream: EVENTS_STREAM,
        reason,
        retryable: true,
    };
    let config = stream::Config {
        name: EVENTS_STREAM.to_owned(),
        subjects: vec![all_events()],
        storage: stream::StorageType::File,
        retention: stream::RetentionPolicy::Limits,
        max_age: settings.max_age,
        duplicate_window: settings.duplicate_window,
        num_replicas: settings.replicas,
        ..Default::default()
    };
    let existing = js
        .get_or_create_stream(config.clone())
        .await
        .map_err(|e| failed(e.to_string()))?;
    let current = &existing.cached_info().config;
    let replicas = current.num_replicas.max(1);
    if replicas != config.num_replicas {
        return Err(StreamError {
            retryable: false,
            ..failed(
                crate::bus::BusError::ReplicasMismatch {
                    stream: EVENTS_STREAM.to_owned(),
                    existing: replicas,
                    configured: config.num_replicas,
                }
                .to_string(),
            )
        });
    }
    if current.max_age != config.max_age || current.duplicate_window != config.duplicate_window {
        info!(
            stream = EVENTS_STREAM,
            max_age = ?config.max_age,
            duplicate_window = ?config.duplicate_window,
            "updating the events stream's limits"
        );
        js.update_stream(config)
            .await
            .map_err(|e| failed(e.to_string()))?;
    }
    Ok(())
}

/// Publishes the outbox's events; see the module docs.
pub struct Publisher {
    /// The outbox.
    pub store: SqlStore,
    /// The events stream; `None` without JetStream.
    pub stream: Option<jetstream::Context>,
    /// The stream's limits, to set it up again if it went missing.
    pub settings: StreamSettings,
    /// Local subscribers.
    pub feed: broadcast::Sender<Event>,
    /// The cluster, whose leader publishes; `None` alone.
    pub cluster: Option<Arc<ClusterMember>>,
    /// The time marked on published events.
    pub clock: Arc<dyn Clock>,
}

impl Publisher {
    /// Publishes until the task is cancelled.
    pub async fn run(self) {
        let mut delays = RETRY.delays();
        loop {
            if !self.leads() {
                tokio::time::sleep(POLL).await;
                continue;
            }
            match self.round().await {
                Ok(0) => {
                    delays = RETRY.delays();
                    tokio::select! {
                        () = self.store.outbox_written() => {}
                        () = tokio::time::sleep(POLL) => {}
                    }
                }
                Ok(published) => {
                    delays = RETRY.delays();
                    if published < BATCH as usize {
                        // Let events gather.
                        tokio::time::sleep(super::PACE).await;
                    }
                }
                Err(reason) => {
                    let delay = delays.next().unwrap_or(RETRY.max);
                    warn!(error = %reason, ?delay, "events not published, retrying");
                    metrics::counter!("salesboy_event_publish_failures_total").increment(1);
                    tokio::time::sleep(delay).await;
                    if let Some(js) = &self.stream {
                        // The stream may have been deleted: set it up again.
                        if let Err(e) = ensure_stream(js, &self.settings).await {
                            debug!(error = %e, "events stream not set up again");
                        }
                    }
                }
            }
        }
    }

    fn leads(&self) -> bool {
        self.cluster
            .as_ref()
            .is_none_or(|cluster| cluster.is_leader())
    }

    /// Publishes one batch; answers how many events went out.
    async fn round(&self) -> Result<usize, String> {
        let batch = self
            .store
            .unpublished_events(BATCH)
            .await
            .map_err(|e| e.to_string())?;
        if batch.is_empty() {
            return Ok(0);
        }
        let (published, failure) = match &self.stream {
            Some(js) => publish(js, batch).await,
            None => (batch, None),
        };
        if !published.is_empty() {
            self.store
                .mark_events_published(&published, self.clock.now_ms())
                .await
                .map_err(|e| e.to_string())?;
            metrics::counter!("salesboy_events_published_total").increment(published.len() as u64);
            for outbox in &published {
                // No subscriber is fine: the feed is for whoever listens now.
                let _ = self.feed.send(outbox.event.clone());
            }
        }
        match failure {
            Some(reason) => Err(reason),
            None => Ok(published.len()),
        }
    }
}

/// Publishes `batch` in order, all in flight at once, and waits for the acks in order.
/// Answers the events the stream acknowledged (a prefix of `batch`) and the first failure.
async fn publish(
    js: &jetstream::Context,
    batch: Vec<OutboxEvent>,
) -> (Vec<OutboxEvent>, Option<String>) {
    let mut in_flight = Vec::with_capacity(batch.len());
    let mut failure = None;
    for outbox in batch {
        let payload = match serde_json::to_vec(&outbox.event) {
            Ok(payload) => payload,
            Err(e) => {
                failure = Some(format!("encoding event {}: {e}", outbox.event.id));
                break;
            }
        };
        let mut headers = async_nats::HeaderMap::new();
        headers.insert(
            async_nats::header::NATS_MESSAGE_ID,
            outbox.event.id.as_str(),
        );
        headers.insert("Content-Type", "application/json");
        match js
            .publish_with_headers(outbox.event.subject(), headers, payload.into())
            .await
        {
            Ok(ack) => in_flight.push((outbox, ack)),
            Err(e) => {
                failure = Some(format!("publishing event {}: {e}", outbox.event.id));
                break;
            }
        }
    }
    // Everything in flight precedes the first failure to publish, if any.
    let mut acked = Vec::with_capacity(in_flight.len());
    for (outbox, ack) in in_flight {
        match ack.await {
            Ok(_) => acked.push(outbox),
            Err(e) => {
                // The rest is published again next round (and stored once).
                failure = Some(format!("event {} not acknowledged: {e}", outbox.event.id));
                break;
            }
        }
    }
    (acked, failure)
}
