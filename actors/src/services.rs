//! What every actor of a node shares: the ports, the settings, the response cache and a few
//! counters. Built once by the node and passed down as `Arc<Services>`.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use salesboy_protocol::events::{Alert, AlertKind, Event};
use salesboy_protocol::subjects::EventKind;
use salesboy_protocol::{NodeId, TenantId};
use serde::{Deserialize, Serialize};

use crate::ledger::SendLedger;
use crate::ports::{Clock, EpochSource, EventSink, LlmProviderFactory, Prompt, WhatsAppConnector};
use crate::store::Store;
use crate::supervision::RestartPolicy;
use crate::web::WebConnector;

/// The 24-hour customer service window, in milliseconds.
pub const CUSTOMER_WINDOW_MS: i64 = 24 * 60 * 60 * 1000;

/// When a conversation marks the customer's messages read (blue ticks) and shows the typing
/// indicator: one more request to WhatsApp per batch.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReadReceipts {
    /// For every batch the bot answers, before the reply is written.
    Always,
    /// Only when the reply will take a while: just before an LLM is asked (not for an
    /// offline answer or a cached one, which are sent at once anyway).
    #[default]
    WhenSlow,
    /// Never.
    Never,
}

impl ReadReceipts {
    /// The policy's name in configuration and the API.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Always => "always",
            Self::WhenSlow => "when_slow",
            Self::Never => "never",
        }
    }

    /// The policy named `name`, if there is one.
    pub fn parse(name: &str) -> Option<Self> {
        [Self::Always, Self::WhenSlow, Self::Never]
            .into_iter()
            .find(|policy| policy.as_str() == name)
    }
}

/// Tunables of the actor tree.
#[derive(Debug, Clone)]
pub struct Settings {
    /// How long a conversation waits for the customer to stop typing.
    pub debounce: Duration,
    /// Past messages the assistant sees.
    pub history_window: u32,
    /// Passages retrieved per question.
    pub knowledge_top_k: u32,
    /// An idle conversation is passivated after this long.
    pub conversation_idle: Duration,
    /// An idle tenant is stopped after this long.
    pub tenant_idle: Duration,
    /// Tenants this node hosts at most.
    pub max_tenants: usize,
    /// An owner's message (API send or echo) pauses the bot in that chat this long.
    pub owner_takeover: Duration,
    /// Outbound messages per second per WhatsApp number.
    pub messages_per_second: u32,
    /// Send attempts before a retryable failure becomes final.
    pub send_max_attempts: u32,
    /// First retry delay of a failed send; doubled per attempt.
    pub send_base_backoff: Duration,
    /// How often the node sweeps: passivation, and persisted messages never routed.
    pub sweep_interval: Duration,
    /// A persisted message this old that is still unanswered is re-routed by the sweep.
    pub unrouted_grace: Duration,
    /// How far back the periodic sweep looks for such messages (start-up looks back 24 h).
    pub sweep_lookback: Duration,
    /// How long a moving tenant waits for its reply and sends under way to finish.
    pub freeze_timeout: Duration,
    /// Restart policy of every supervisor.
    pub restart: RestartPolicy,
    /// A customer's message sent (Meta's `timestamp`) longer ago than this is stored but not
    /// answered. Messages older than the 24-hour customer service window are never answered
    /// ([`CUSTOMER_WINDOW_MS`]), whatever this says.
    pub max_message_age: Duration,
    /// When the customer's messages are marked read (one policy for every tenant).
    pub read_receipts: ReadReceipts,
    /// Live conversations a tenant may have at once; a message for another chat waits
    /// (stored) until an idle one stops.
    pub max_conversations_per_tenant: usize,
    /// Messages one reply answers at most; the rest are answered by the next reply.
    pub max_batch_messages: usize,
    /// Characters of the customers' text one reply is written for at most (the latest
    /// are kept); the messages themselves are stored whole.
    pub max_question_chars: usize,
    /// Replies a tenant's responder starts per second at most (a second's worth at once);
    /// beyond it the bot slows down: batches wait, nothing is dropped.
    pub replies_per_second_per_tenant: u32,
    /// A tenant's monthly LLM spend cap (millionths of a US dollar) when it has none of its
    /// own; `None`: no cap.
    pub llm_monthly_spend_cap_micros: Option<i64>,
    /// `web` sessions: the first wait before reconnecting after a dropped connection,
    /// doubled after each failed attempt (at most
    /// [`MAX_RECONNECT_BACKOFF`](crate::session::MAX_RECONNECT_BACKOFF)).
    pub web_reconnect_backoff: Duration,
    /// `web` sessions: ban hygiene (answer only, typing, per-chat gap, daily cap;
    /// docs/engines.md "Ban hygiene").
    pub web_hygiene: crate::session::WebHygiene,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            debounce: Duration::from_millis(1_500),
            history_window: 20,
            knowledge_top_k: 3,
            conversation_idle: Duration::from_secs(300),
            tenant_idle: Duration::from_secs(86_400),
            max_tenants: 100_000,
            owner_takeover: Duration::from_secs(3_600),
            messages_per_second: 80,
            send_max_attempts: 5,
            send_base_backoff: Duration::from_millis(500),
            sweep_interval: Duration::from_secs(5),
            unrouted_grace: Duration::from_secs(10),
            sweep_lookback: Duration::from_secs(300),
            freeze_timeout: Duration::from_secs(5),
            restart: RestartPolicy::default(),
            max_message_age: Duration::from_millis(CUSTOMER_WINDOW_MS.unsigned_abs()),
            read_receipts: ReadReceipts::default(),
            max_conversations_per_tenant: 10_000,
            max_batch_messages: 50,
            max_question_chars: 4_000,
            replies_per_second_per_tenant: 20,
            llm_monthly_spend_cap_micros: None,
            web_reconnect_backoff: Duration::from_secs(1),
            web_hygiene: crate::session::WebHygiene::default(),
        }
    }
}

/// The key of a cached LLM answer: exact match on tenant, knowledge version and prompt.
pub type CacheKey = (TenantId, i64, Prompt);

/// Cached LLM answers, shared by every responder of the node.
pub type ResponseCache = moka::future::Cache<CacheKey, Arc<str>>;

/// A response cache of at most `max_bytes` (estimated from the keys' and answers' sizes).
pub fn response_cache(max_bytes: u64) -> ResponseCache {
    moka::future::Cache::builder()
        .max_capacity(max_bytes)
        .weigher(|(tenant, _, prompt): &CacheKey, answer: &Arc<str>| {
            let size = tenant.as_str().len()
                + prompt.system.len()
                + prompt.question.len()
                + prompt.passages.iter().map(String::len).sum::<usize>()
                + prompt.history.iter().map(|t| t.text.len()).sum::<usize>()
                + answer.len();
            u32::try_from(size).unwrap_or(u32::MAX)
        })
        .time_to_live(Duration::from_secs(3_600))
        .build()
}

/// Node-wide gauges the actors keep up to date.
#[derive(Debug, Default)]
pub struct Counters {
    /// Conversations currently active (not passivated) on this node.
    pub conversations: AtomicU64,
    /// Replies and owner messages sent, and those that failed for good.
    pub sends: OutcomeTally,
    /// LLM provider calls answered, and those that failed (skipped ones are not counted).
    pub llm_calls: OutcomeTally,
    /// Webhook deliveries persisted, and those that could not be (answered 503); deliveries
    /// refused for their signature or body are the sender's fault and not counted.
    pub webhooks: OutcomeTally,
    /// Bot replies sent and their time in the gateway and in the LLM.
    pub replies: ReplyTimes,
}

/// Bot replies sent since the node started and their summed gateway and LLM time (the
/// heartbeat turns two readings into means over the beat).
#[derive(Debug, Default)]
pub struct ReplyTimes {
    replies: AtomicU64,
    gateway_ms: AtomicU64,
    llm_ms: AtomicU64,
}

impl ReplyTimes {
    /// Counts one reply sent: `gateway` is everything but the debounce and the LLM.
    pub fn record(&self, gateway: std::time::Duration, llm: std::time::Duration) {
        let ms = |d: std::time::Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
        self.replies.fetch_add(1, Ordering::Relaxed);
        self.gateway_ms.fetch_add(ms(gateway), Ordering::Relaxed);
        self.llm_ms.fetch_add(ms(llm), Ordering::Relaxed);
    }

    /// `(replies, gateway ms, llm ms)` so far.
    pub fn totals(&self) -> (u64, u64, u64) {
        (
            self.replies.load(Ordering::Relaxed),
            self.gateway_ms.load(Ordering::Relaxed),
            self.llm_ms.load(Ordering::Relaxed),
        )
    }
}

/// How many calls of one kind succeeded and failed since the node started (the alert
/// evaluator turns two readings into an error rate over a window).
#[derive(Debug, Default)]
pub struct OutcomeTally {
    ok: AtomicU64,
    failed: AtomicU64,
}

impl OutcomeTally {
    /// Counts one call.
    pub fn record(&self, ok: bool) {
        let counter = if ok { &self.ok } else { &self.failed };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// `(ok, failed)` so far.
    pub fn totals(&self) -> (u64, u64) {
        (
            self.ok.load(Ordering::Relaxed),
            self.failed.load(Ordering::Relaxed),
        )
    }
}

impl Counters {
    /// Active conversations.
    pub fn conversations(&self) -> u64 {
        self.conversations.load(Ordering::Relaxed)
    }
}

/// Everything the actors of one node share.
pub struct Services {
    /// This node.
    pub node: NodeId,
    /// Durable state.
    pub store: Arc<dyn Store>,
    /// WhatsApp connections (Cloud API).
    pub whatsapp: Arc<dyn WhatsAppConnector>,
    /// WhatsApp Web clients; `None` when the node is built without the Web engine (its
    /// `web` tenants run no session).
    pub web: Option<Arc<dyn WebConnector>>,
    /// LLM providers per tenant.
    pub llm: Arc<dyn LlmProviderFactory>,
    /// Wall-clock time for records.
    pub clock: Arc<dyn Clock>,
    /// Events for external services.
    pub events: Arc<dyn EventSink>,
    /// Placement epochs.
    pub epochs: Arc<dyn EpochSource>,
    /// Cached LLM answers.
    pub cache: ResponseCache,
    /// Tunables.
    pub settings: Settings,
    /// Gauges.
    pub counters: Counters,
    /// Reply sends under way and lately finished on this node, shared by every session.
    pub sends: Arc<SendLedger>,
}

impl Services {
    /// A tenant event stamped with the current time.
    pub fn tenant_event(
        &self,
        kind: EventKind,
        tenant: &TenantId,
        detail: serde_json::Value,
    ) -> Event {
        Event::tenant(kind, tenant.clone(), self.clock.now_ms(), detail)
    }

    /// An alert raised about a tenant (`alert_raised`), naming this node, stamped with the
    /// current time.
    pub fn alert(&self, tenant: &TenantId, alert: &Alert) -> Event {
        let mut detail = alert.to_detail();
        if let Some(fields) = detail.as_object_mut() {
            fields.insert("node".to_owned(), self.node.as_str().into());
        }
        self.tenant_event(EventKind::AlertRaised, tenant, detail)
    }

    /// The end of an alert's condition (`alert_cleared`, `{"alert": <kind>, "node": …}`),
    /// naming this node, stamped with the current time.
    pub fn alert_cleared(&self, tenant: &TenantId, alert: AlertKind) -> Event {
        self.tenant_event(
            EventKind::AlertCleared,
            tenant,
            serde_json::json!({"alert": alert.as_str(), "node": self.node.as_str()}),
        )
    }

    /// A cluster event (no tenant) stamped with the current time.
    pub fn cluster_event(&self, kind: EventKind, detail: serde_json::Value) -> Event {
        Event::cluster(kind, self.clock.now_ms(), detail)
    }

    /// Publishes an event that reports no change of the store's own (events of stored
    /// changes are written by the store itself, in the change's transaction).
    pub fn publish(&self, event: Event) {
        self.events.publish(event);
    }
}
