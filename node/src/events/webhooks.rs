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

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use salesboy_actors::ports::Clock;
use salesboy_protocol::events::{
    EVENT_ID_HEADER, EVENT_SIGNATURE_HEADER, EVENT_TIMESTAMP_HEADER, sign_event,
};
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tracing::{debug, warn};

use crate::backoff::Backoff;
use crate::cluster::ClusterMember;
use crate::store::{AttemptOutcome, AttemptRecord, DueDelivery, SqlStore};

/// Attempts under way at once (at most one per webhook and chat): a slow or hanging
/// receiver holds one of them, the others go on.
const CONCURRENCY: usize = 128;

/// The most outcomes recorded in one transaction.
const RECORD_BATCH: usize = 512;

/// The longest the worker sleeps without looking at the queue (deliveries queued by
/// another node's publisher do not wake it; a follower checks whether it leads now).
const IDLE: Duration = Duration::from_millis(500);

/// Waits between attempts of one delivery: 1 s, doubling up to 60 s, each plus jitter.
const RETRY: Backoff = Backoff {
    first: Duration::from_secs(1),
    max: Duration::from_secs(60),
    retries: usize::MAX,
};

/// Waits after the queue itself could not be read or written.
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

/// A delivery's key while it is attempted and until its outcome is recorded: the queue
/// shows it as due until then, and it must not be attempted twice at once.
type Claim = (String, i64);

impl WebhookDeliverer {
    /// Delivers until the task is cancelled.
    ///
    /// A pipeline, not rounds: up to [`CONCURRENCY`] attempts run at once, each started as
    /// soon as a slot is free; their outcomes go to a recorder task that writes whatever
    /// has finished in one transaction while the next attempts run (a group commit, no
    /// timer), and hands the recorded deliveries back, whose chats may then go on.
    pub async fn run(self) {
        let this = Arc::new(self);
        let (finished_tx, finished_rx) = mpsc::unbounded_channel();
        let (recorded_tx, mut recorded_rx) = mpsc::unbounded_channel::<Vec<Claim>>();
        let recorder = tokio::spawn(Arc::clone(&this).record(finished_rx, recorded_tx));
        let mut running: JoinSet<AttemptRecord> = JoinSet::new();
        let mut claimed: HashSet<Claim> = HashSet::new();
        // Whether the queue may hold due deliveries not yet started.
        let mut look = true;
        loop {
            let leads = this.cluster.as_ref().is_none_or(|c| c.is_leader());
            if leads && look && running.len() < CONCURRENCY {
                look = false;
                match this.fill(&mut running, &mut claimed).await {
                    Ok(()) => {}
                    Err(()) => tokio::time::sleep(QUEUE_RETRY).await,
                }
            }
            if running.is_empty() && claimed.is_empty() {
                // Nothing under way: wait for the queue, the next retry, or the leadership.
                if leads {
                    this.idle().await;
                } else {
                    tokio::time::sleep(IDLE).await;
                }
                look = true;
                continue;
            }
            tokio::select! {
                Some(joined) = running.join_next() => {
                    match joined {
                        Ok(record) => {
                            // The recorder lives as long as this loop.
                            let _ = finished_tx.send(record);
                        }
                        Err(e) => warn!(error = %e, "webhook attempt task failed"),
                    }
                }
                Some(recorded) = recorded_rx.recv() => {
                    for claim in recorded {
                        claimed.remove(&claim);
                    }
                    look = true;
                }
                () = this.store.webhooks_queued(), if running.len() < CONCURRENCY => {
                    look = true;
                }
            }
            if recorder.is_finished() {
                warn!("webhook outcome recorder stopped; delivery stops");
                return;
            }
        }
    }

    /// Starts attempts of due deliveries not yet under way, up to [`CONCURRENCY`].
    async fn fill(
        self: &Arc<Self>,
        running: &mut JoinSet<AttemptRecord>,
        claimed: &mut HashSet<Claim>,
    ) -> Result<(), ()> {
        let now = self.clock.now_ms();
        // Those under way are still due in the queue: read past them.
        let want = u32::try_from(CONCURRENCY + claimed.len()).unwrap_or(u32::MAX);
        let due = self.store.due_deliveries(now, want).await.map_err(|e| {
            warn!(error = %e, "webhook queue not read, retrying");
        })?;
        for delivery in due {
            if running.len() >= CONCURRENCY {
                break;
            }
            let claim = (delivery.webhook.id.clone(), delivery.event.seq);
            if claimed.insert(claim) {
                let this = Arc::clone(self);
                running.spawn(async move { this.deliver(delivery).await });
            }
        }
        Ok(())
    }

    /// Writes finished attempts' outcomes, all that are waiting in one transaction, and
    /// hands their claims back. A write that fails releases them all the same: they are
    /// still due in the queue and are attempted again (at least once).
    async fn record(
        self: Arc<Self>,
        mut finished: mpsc::UnboundedReceiver<AttemptRecord>,
        recorded: mpsc::UnboundedSender<Vec<Claim>>,
    ) {
        let mut batch = Vec::with_capacity(RECORD_BATCH);
        while finished.recv_many(&mut batch, RECORD_BATCH).await > 0 {
            if let Err(e) = self.store.record_attempts(&batch).await {
                warn!(error = %e, deliveries = batch.len(), "webhook outcomes not recorded");
                tokio::time::sleep(QUEUE_RETRY).await;
            }
            let claims = batch.drain(..).map(|r| (r.webhook_id, r.seq)).collect();
            if recorded.send(claims).is_err() {
                return;
            }
        }
    }

    /// Sleeps until the next attempt is due, events are queued, or [`IDLE`] passed.
    async fn idle(&self) {
        let now = self.clock.now_ms();
        let next = self.store.next_delivery_attempt().await.ok().flatten();
        let wait = next.map_or(IDLE, |at| {
            Duration::from_millis(u64::try_from(at.saturating_sub(now)).unwrap_or(0)).min(IDLE)
        });
        tokio::select! {
            () = self.store.webhooks_queued() => {}
            () = tokio::time::sleep(wait) => {}
        }
    }

    /// One attempt of one delivery, and what is to be recorded of it.
    async fn deliver(&self, delivery: DueDelivery) -> AttemptRecord {
        let outcome = match self.attempt(&delivery).await {
            Ok(()) => {
                metrics::counter!("salesboy_webhook_deliveries_total", "outcome" => "delivered")
                    .increment(1);
                AttemptOutcome::Delivered
            }
            Err(error) => self.failed(&delivery, error),
        };
        AttemptRecord {
            webhook_id: delivery.webhook.id,
            seq: delivery.event.seq,
            outcome,
        }
    }

    /// A failed attempt: retried after a backoff while its retry window lasts, then
    /// dead-lettered.
    fn failed(&self, delivery: &DueDelivery, error: String) -> AttemptOutcome {
        let now = self.clock.now_ms();
        let webhook_id = delivery.webhook.id.as_str();
        let window = i64::try_from(self.settings.retry_window.as_millis()).unwrap_or(i64::MAX);
        if now.saturating_sub(delivery.since_ms) < window {
            metrics::counter!("salesboy_webhook_deliveries_total", "outcome" => "retried")
                .increment(1);
            debug!(webhook = webhook_id, event = delivery.event.event.id, error = %error, "webhook delivery failed, retrying");
            let attempts = usize::try_from(delivery.attempts).unwrap_or(0);
            let delay = RETRY.delays().nth(attempts).unwrap_or(RETRY.max);
            AttemptOutcome::Retry {
                at_ms: now.saturating_add(i64::try_from(delay.as_millis()).unwrap_or(i64::MAX)),
                error,
            }
        } else {
            metrics::counter!("salesboy_webhook_deliveries_total", "outcome" => "dead_lettered")
                .increment(1);
            warn!(
                webhook = webhook_id,
                tenant = %delivery.webhook.tenant,
                event = delivery.event.event.id,
                error = %error,
                "webhook delivery dead-lettered after its retry window"
            );
            AttemptOutcome::Dead { at_ms: now, error }
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
