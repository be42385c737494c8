//! The small traits through which actors reach the world. The node implements them with
//! real adapters (Graph API, LLM HTTP APIs, the system clock); tests and the simulation
//! implement them with fakes. Actors never import HTTP, SQL or NATS.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use salesboy_protocol::whatsapp::OutboundContent;
use salesboy_protocol::{ChatId, TenantId, Wamid};
use serde::{Deserialize, Serialize};

use crate::store::WhatsAppNumber;

/// Why a send to WhatsApp failed, classified for the retry policy.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SendError {
    /// The number's throughput limit was hit (130429): retry after backing off.
    #[error("throughput limit reached")]
    Throttled {
        /// The server's suggested delay, if any.
        retry_after: Option<Duration>,
    },
    /// Too many messages to this customer (131056): retry after backing off.
    #[error("too many messages to this customer")]
    PairRateLimited,
    /// The 24-hour customer-service window is closed (131047): a free-form reply is not
    /// allowed; do not retry.
    #[error("outside the 24-hour customer service window")]
    OutsideWindow,
    /// The credentials were refused (HTTP 401 / code 190): do not retry.
    #[error("access token refused")]
    AuthFailed,
    /// A passing failure (5xx, timeout, connection): retry.
    #[error("transient failure: {0}")]
    Transient(String),
    /// Any other refusal: do not retry.
    #[error("rejected with code {code}: {reason}")]
    Rejected {
        /// Meta's error code (or the HTTP status when there is none).
        code: i64,
        /// Meta's message.
        reason: String,
    },
}

impl SendError {
    /// Whether the same send may succeed later.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            Self::Throttled { .. } | Self::PairRateLimited | Self::Transient(_)
        )
    }

    /// A short stable name for metrics and records.
    pub fn code(&self) -> &'static str {
        match self {
            Self::Throttled { .. } => "throttled",
            Self::PairRateLimited => "pair_rate_limited",
            Self::OutsideWindow => "outside_window",
            Self::AuthFailed => "auth_failed",
            Self::Transient(_) => "transient",
            Self::Rejected { .. } => "rejected",
        }
    }
}

/// One tenant's connection to WhatsApp (one number). Two engines fit behind it: the Cloud
/// API (stateless HTTP, inbound by webhook) and, later, the WhatsApp Web multi-device
/// protocol (a persistent connection with its own inbound stream).
#[async_trait]
pub trait WhatsAppConnection: Send + Sync + 'static {
    /// Sends a text message; returns the new message's wamid.
    async fn send_text(
        &self,
        to: &ChatId,
        body: &str,
        reply_to: Option<&Wamid>,
    ) -> Result<Wamid, SendError>;

    /// Sends a template, an interactive message or a media message; returns the new
    /// message's wamid.
    async fn send_content(
        &self,
        to: &ChatId,
        content: &OutboundContent,
    ) -> Result<Wamid, SendError>;

    /// Marks an inbound message read and, if `typing`, shows the typing indicator.
    async fn mark_read(&self, message: &Wamid, typing: bool) -> Result<(), SendError>;
}

/// Opens WhatsApp connections from credentials (the session actor calls it on start).
pub trait WhatsAppConnector: Send + Sync + 'static {
    /// A connection for this tenant's number (its id and access token).
    fn connect(&self, tenant: &TenantId, number: &WhatsAppNumber) -> Arc<dyn WhatsAppConnection>;
}

/// Who said a line of the history the assistant sees.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Speaker {
    /// The customer.
    Customer,
    /// The business (assistant or owner).
    Business,
}

/// One line of conversation history.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Turn {
    /// Who said it.
    pub speaker: Speaker,
    /// What was said.
    pub text: String,
}

impl Turn {
    /// A line the customer said.
    pub fn customer(text: impl Into<String>) -> Self {
        Self {
            speaker: Speaker::Customer,
            text: text.into(),
        }
    }

    /// A line the business said.
    pub fn business(text: impl Into<String>) -> Self {
        Self {
            speaker: Speaker::Business,
            text: text.into(),
        }
    }
}

/// Everything an LLM needs to answer one conversation turn.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Prompt {
    /// The tenant's system prompt (with the house rules appended).
    pub system: String,
    /// Passages retrieved from the tenant's knowledge base, best first.
    pub passages: Vec<String>,
    /// Recent history, oldest first (not including `question`).
    pub history: Vec<Turn>,
    /// The customer's message(s) to answer.
    pub question: String,
}

/// A provider's answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Completion {
    /// The reply text.
    pub text: String,
    /// The model that answered.
    pub model: String,
    /// Prompt tokens, as the provider counted them.
    pub prompt_tokens: u64,
    /// Completion tokens, as the provider counted them.
    pub completion_tokens: u64,
}

/// Why a provider did not answer, classified for the fallback chain.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LlmError {
    /// Rate limited (per-minute): this provider may answer after the delay.
    #[error("rate limited")]
    RateLimited {
        /// The server's suggested delay, if any.
        retry_after: Option<Duration>,
    },
    /// Quota exhausted (daily quota, insufficient_quota): fall through and raise an alert.
    #[error("quota exhausted: {0}")]
    QuotaExhausted(String),
    /// No answer in time.
    #[error("timed out")]
    Timeout,
    /// The provider failed (5xx, connection): fall through.
    #[error("unavailable: {0}")]
    Unavailable(String),
    /// The provider refused the prompt (safety block).
    #[error("prompt blocked: {0}")]
    Blocked(String),
    /// Anything else (bad request, unparsable answer).
    #[error("failed: {0}")]
    Failed(String),
    /// The response body was longer than the adapter reads (`limit` bytes): not read on.
    #[error("response larger than {limit} bytes")]
    TooLarge {
        /// The most the adapter reads.
        limit: usize,
    },
}

impl LlmError {
    /// A short stable name for metrics and records.
    pub fn code(&self) -> &'static str {
        match self {
            Self::RateLimited { .. } => "rate_limited",
            Self::QuotaExhausted(_) => "quota_exhausted",
            Self::Timeout => "timeout",
            Self::Unavailable(_) => "unavailable",
            Self::Blocked(_) => "blocked",
            Self::Failed(_) => "failed",
            Self::TooLarge { .. } => "too_large",
        }
    }
}

/// A provider's own budgets, enforced by the provider chain before calling it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Budget {
    /// Requests per minute; `None` = unlimited.
    pub requests_per_minute: Option<u32>,
    /// Tokens (prompt + completion) per minute; `None` = unlimited.
    pub tokens_per_minute: Option<u64>,
}

/// One LLM endpoint (Gemini, an OpenAI-compatible server, …) with its model and key.
#[async_trait]
pub trait LlmProvider: Send + Sync + 'static {
    /// A stable name for logs, metrics and usage records (e.g. `gemini`, `openai`).
    fn name(&self) -> &str;

    /// The model asked.
    fn model(&self) -> &str;

    /// This provider's budgets.
    fn budget(&self) -> Budget {
        Budget::default()
    }

    /// Estimated cost in millionths of a US dollar for the given token counts.
    fn cost_micros(&self, prompt_tokens: u64, completion_tokens: u64) -> u64;

    /// Answers a prompt.
    async fn complete(&self, prompt: &Prompt) -> Result<Completion, LlmError>;
}

/// Builds a tenant's provider chain from its stored provider configuration (JSON).
pub trait LlmProviderFactory: Send + Sync + 'static {
    /// The providers, in fallback order; an empty list means the offline responder.
    fn providers(
        &self,
        tenant: &TenantId,
        config_json: Option<&str>,
    ) -> Result<Vec<Arc<dyn LlmProvider>>, String>;
}

/// Wall-clock time for records (milliseconds since the Unix epoch). Durations and timers use
/// tokio's clock, which tests can pause.
pub trait Clock: Send + Sync + 'static {
    /// Now, in milliseconds since the Unix epoch.
    fn now_ms(&self) -> i64;
}

/// The system clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ms(&self) -> i64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
            .unwrap_or(0)
    }
}

/// Where actors publish the events that report no change of the store's own (a session's
/// state, an alert, a migration): the node writes them to the events outbox, from which
/// they are published. Publishing never blocks and never fails the caller.
pub trait EventSink: Send + Sync + 'static {
    /// Publishes one event.
    fn publish(&self, event: salesboy_protocol::events::Event);
}

/// Decides a tenant's placement epoch when this node activates it. A single node claims the
/// next epoch in the store; a cluster node takes the epoch the directory gave it.
#[async_trait]
pub trait EpochSource: Send + Sync + 'static {
    /// The epoch under which this node may host `tenant` now, or why it may not.
    async fn epoch_for(&self, tenant: &TenantId) -> Result<u64, crate::error::EpochError>;
}
