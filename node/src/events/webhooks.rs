//! HTTP event webhooks' delivery worker: POSTs each published event to the tenant's webhooks
//! that want it, signed, one event at a time per chat, retried with exponential backoff and
//! jitter until the retry window ends, then dead-lettered (`docs/protocol.md`, "HTTP event
//! webhooks").
//!
//! The queue is in SQL (`webhook_deliveries`): events are queued when they are published, a
//! delivered event leaves the queue, a failed one is tried again later. So nothing is lost
//! when the node stops, and the worker of the next leader carries on. Delivery is at least
//! once: a node killed between a receiver's 2xx and its record delivers that event again;
//! receivers deduplicate on `X-Salesboy-Event-Id`. One worker runs at a time: the leader's
//! on a cluster, the node's own alone.

use std::sync::Arc;
use std::time::Duration;

use futures::future::join_all;
use salesboy_actors::ports::Clock;
use salesboy_protocol::events::{
    EVENT_ID_HEADER, EVENT_SIGNATURE_HEADER, EVENT_TIMESTAMP_HEADER, sign_event,
};
use tracing::{debug, warn};

use crate::backoff::Backoff;
use crate::cluster::ClusterMember;
use crate::store::{DueDelivery, SqlStore};

/// Deliveries attempted at once (at most one per webhook and chat).
const CONCURRENCY: u32 = 64;

/// The longest the worker sleeps without looking at the queue (deliveries queued by
/// another node's publisher do not wake it; a follower checks whether it leads now).
const IDLE: Duration = Duration::from_millis(500);

/// Waits between attempts of one delivery: 1 s, doubling up to 60 s, each plus jitter.
const RETRY: Backoff = Backoff {
    first: Duration::from_secs(1),
    max: Duration::from_secs(60),
    retries: usize::MAX,
};

/// Waits after the queue itself could not be read.
const QUEUE_RETRY: Duration = Duration::from_secs(1);

/// Longest error text kept with a failed delivery.
const MAX_ERROR_CHARS: usize = 300;

/// How webhooks are delivered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebhookSettings {
    /// How long a delivery is retried before it is dead-lettered.
    pub retry_window: Duration,
    /// How long one attempt may take.
    pub timeout: Duration,
}

/// The delivery worker; see the module docs.
pub struct WebhookDeliverer {
    /// The queue.
    pub store: SqlStore,
    /// The HTTP client (rustls; its timeout is per attempt).
    pub http: reqwest::Client,
    /// Retry window and timeout.
    pub settings: WebhookSettings,
    /// The cluster, whose leader delivers; `None` alone.
    pub cluster: Option<Arc<ClusterMember>>,
    /// The time of attempts and signatures.
    pub clock: Arc<dyn Clock>,
}

impl WebhookDeliverer {
    /// Delivers until the task is cancelled.
    pub async fn run(self) {
        loop {
            if !self.cluster.as_ref().is_none_or(|c| c.is_leader()) {
                tokio::time::sleep(IDLE).await;
                continue;
            }
            let now = self.clock.now_ms();
            let due = match self.store.due_deliveries(now, CONCURRENCY).await {
                Ok(due) => due,
                Err(e) => {
                    warn!(error = %e, "webhook queue not read, retrying");
                    tokio::time::sleep(QUEUE_RETRY).await;
                    continue;
                }
            };
            if due.is_empty() {
                self.idle(now).await;
                continue;
            }
            join_all(due.into_iter().map(|delivery| self.deliver(delivery))).await;
        }
    }

    /// Sleeps until the next attempt is due, events are queued, or [`IDLE`] passed.
    async fn idle(&self, now: i64) {
        let next = self.store.next_delivery_attempt().await.ok().flatten();
        let wait = next.map_or(IDLE, |at| {
            Duration::from_millis(u64::try_from(at.saturating_sub(now)).unwrap_or(0)).min(IDLE)
        });
        tokio::select! {
            () = self.store.webhooks_queued() => {}
            () = tokio::time::sleep(wait) => {}
        }
    }

    /// One attempt of one delivery, and its record.
    async fn deliver(&self, delivery: DueDelivery) {
        let webhook_id = delivery.webhook.id.as_str();
        let seq = delivery.event.seq;
        let outcome = self.attempt(&delivery).await;
        let now = self.clock.now_ms();
        let recorded = match outcome {
            Ok(()) => {
                metrics::counter!("salesboy_webhook_deliveries_total", "outcome" => "delivered")
                    .increment(1);
                self.store.delivery_done(webhook_id, seq).await
            }
            Err(error) => {
                let window =
                    i64::try_from(self.settings.retry_window.as_millis()).unwrap_or(i64::MAX);
                let attempts = usize::try_from(delivery.attempts).unwrap_or(0);
                let retry_at = (now.saturating_sub(delivery.since_ms) < window).then(|| {
                    let delay = RETRY.delays().nth(attempts).unwrap_or(RETRY.max);
                    now.saturating_add(i64::try_from(delay.as_millis()).unwrap_or(i64::MAX))
                });
                let outcome = if retry_at.is_some() {
                    "retried"
                } else {
                    "dead_lettered"
                };
                metrics::counter!("salesboy_webhook_deliveries_total", "outcome" => outcome)
                    .increment(1);
                if retry_at.is_none() {
                    warn!(
                        webhook = webhook_id,
                        tenant = %delivery.webhook.tenant,
                        event = delivery.event.event.id,
                        error = %error,
                        "webhook delivery dead-lettered after its retry window"
                    );
                } else {
                    debug!(webhook = webhook_id, event = delivery.event.event.id, error = %error, "webhook delivery failed, retrying");
                }
                self.store
                    .delivery_failed(webhook_id, seq, &error, retry_at, now)
                    .await
            }
        };
        if let Err(e) = recorded {
            // Not recorded: the delivery stays due and is attempted again (at least once).
            warn!(webhook = webhook_id, error = %e, "webhook delivery not recorded");
        }
    }

    /// POSTs the event; `Err` with a short reason unless the receiver answered 2xx.
    async fn attempt(&self, delivery: &DueDelivery) -> Result<(), String> {
        let event = &delivery.event.event;
        let body = serde_json::to_vec(event).map_err(|e| format!("encoding: {e}"))?;
        let timestamp = (self.clock.now_ms() / 1000).to_string();
        let signature = sign_event(delivery.webhook.secret.as_bytes(), &timestamp, &body);
        let response = self
            .http
            .post(&delivery.webhook.url)
            .timeout(self.settings.timeout)
            .header("content-type", "application/json")
            .header(EVENT_ID_HEADER, event.id.as_str())
            .header(EVENT_TIMESTAMP_HEADER, timestamp)
            .header(EVENT_SIGNATURE_HEADER, signature)
            .body(body)
            .send()
            .await
            .map_err(|e| short(&describe(&e)))?;
        let status = response.status();
        if status.is_success() {
            Ok(())
        } else {
            Err(format!("answered {status}"))
        }
    }
}

/// A reqwest error without its URL (a webhook URL may carry a token in its query).
fn describe(error: &reqwest::Error) -> String {
    let kind = if error.is_timeout() {
        "timed out"
    } else if error.is_connect() {
        "connection failed"
    } else if error.is_redirect() {
        "too many redirects"
    } else {
        "request failed"
    };
    match std::error::Error::source(error) {
        Some(source) => format!("{kind}: {source}"),
        None => kind.to_owned(),
    }
}

fn short(text: &str) -> String {
    text.chars().take(MAX_ERROR_CHARS).collect()
}
