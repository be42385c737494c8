//! The store: how the actors reach the database, the gateway's source of truth.
//!
//! [`Store`] is the one trait through which the actor tree (and the node's ingress and admin
//! API) reads and writes durable state; the node implements it with sqlx for Postgres and
//! SQLite. This module holds the trait, the records it takes and returns, and [`StoreError`].
//!
//! Guarantees every implementation gives (architecture §5 and §7):
//!
//! - **Inbound messages are deduplicated** on (tenant, wamid): a second insert of the same
//!   wamid is a no-op reported as [`InsertOutcome::Duplicate`], never an error.
//! - **One reply per inbound message**: [`Store::record_reply`] links every inbound message it
//!   answers to the reply, atomically, before the reply is sent; a message that is already
//!   answered makes the whole call a no-op ([`ReplyOutcome::AlreadyAnswered`]).
//! - **Delivery statuses only move forward** (see [`DeliveryStatus::can_advance_to`]), decided
//!   in one conditional write, so out-of-order webhooks cannot regress them.
//! - **Fencing**: writes that change conversation state carry the writer's epoch and are
//!   refused with [`StoreError::StaleEpoch`] once a newer epoch has been claimed for the
//!   tenant ([`Store::claim_epoch`]); the check and the write are one atomic step, and a claim
//!   waits for fenced writes already in flight.
//!
//! Times are unix milliseconds (`i64`, fields named `*_ms`), supplied by the caller: the
//! store never reads a clock.

use std::fmt;

use async_trait::async_trait;
use salesboy_protocol::{ChatId, PhoneNumberId, TenantId, Wamid};
use serde::{Deserialize, Serialize};

/// Value of [`Conversation::bot_paused_until_ms`] that pauses the bot until it is resumed.
pub const PAUSED_INDEFINITELY: i64 = i64::MAX;

/// Why a store operation failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    /// The database cannot be reached (connect failure, IO error, pool timeout, shutdown).
    /// Transient: the webhook ingress answers 503 so Meta retries.
    #[error("database at {url} is unavailable: {reason}")]
    Unavailable {
        /// The database URL, password replaced by `***`.
        url: String,
        /// What went wrong.
        reason: String,
    },
    /// A fenced write carried an epoch older than the tenant's current one: another node owns
    /// the tenant now. Nothing was written.
    #[error("stale epoch for tenant {tenant}: write carried epoch {given}, current is {current}")]
    StaleEpoch {
        /// The tenant written to.
        tenant: TenantId,
        /// The epoch the write carried.
        given: u64,
        /// The tenant's current epoch in the database.
        current: u64,
    },
    /// The row the operation needs does not exist.
    #[error("{what} not found")]
    NotFound {
        /// What was looked for, e.g. `tenant acme`.
        what: String,
    },
    /// The write conflicts with existing data (a unique key taken by another row).
    #[error("conflict: {reason}")]
    Conflict {
        /// What conflicted.
        reason: String,
    },
    /// The input or a stored row is invalid (bad URL, out-of-range value, a stored id that no
    /// longer validates, a constraint violation).
    #[error("invalid: {reason}")]
    Invalid {
        /// What was invalid.
        reason: String,
    },
    /// Any other database error.
    #[error("database error: {0}")]
    Backend(String),
}

/// A WhatsApp Cloud API access token. Never printed: `Debug` and `Display` show
/// `[redacted]`; read it with [`AccessToken::expose`].
///
/// Serde reads and writes the real value, because the session's snapshot carries its
/// credentials when a tenant migrates (architecture §7): never serialise a [`Tenant`] into
/// a response that leaves the cluster.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct AccessToken(String);

impl AccessToken {
    /// Wraps a token.
    pub fn new(token: impl Into<String>) -> Self {
        Self(token.into())
    }

    /// The token itself, for the one place that sends it to Meta.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for AccessToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

impl fmt::Display for AccessToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

/// A tenant to create or update ([`Store::upsert_tenant`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewTenant {
    /// The tenant's id.
    pub id: TenantId,
    /// Display name of the business.
    pub name: String,
    /// The assistant's system prompt; `None` uses the default.
    pub system_prompt: Option<String>,
    /// LLM provider configuration, opaque JSON text; `None` uses the node's providers.
    pub llm_config: Option<String>,
    /// When the tenant was created; kept from the first insert on updates.
    pub created_ms: i64,
}

/// A tenant as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tenant {
    /// The tenant's id.
    pub id: TenantId,
    /// Display name of the business.
    pub name: String,
    /// The assistant's system prompt.
    pub system_prompt: Option<String>,
    /// LLM provider configuration, opaque JSON text.
    pub llm_config: Option<String>,
    /// Bumped by every change to the knowledge base ([`Store::knowledge_version`]).
    pub knowledge_version: i64,
    /// When the tenant was created.
    pub created_ms: i64,
    /// The tenant's WhatsApp numbers, ordered by phone number id.
    pub numbers: Vec<WhatsAppNumber>,
}

/// One WhatsApp business number of a tenant.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WhatsAppNumber {
    /// Meta's phone number id; inbound webhooks are routed on it.
    pub phone_number_id: PhoneNumberId,
    /// The WhatsApp Business Account id, if known.
    pub waba_id: Option<String>,
    /// The Cloud API access token for this number.
    pub access_token: AccessToken,
}

/// A WhatsApp number to attach to a tenant ([`Store::upsert_whatsapp_number`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewWhatsAppNumber {
    /// The tenant that owns the number.
    pub tenant: TenantId,
    /// Meta's phone number id.
    pub phone_number_id: PhoneNumberId,
    /// The WhatsApp Business Account id, if known.
    pub waba_id: Option<String>,
    /// The Cloud API access token.
    pub access_token: AccessToken,
}

/// Where the webhook ingress sends a delivery for a phone number id.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TenantRoute {
    /// The tenant that owns the number.
    pub tenant: TenantId,
    /// The number itself.
    pub phone_number_id: PhoneNumberId,
}

/// A customer chat's durable state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Conversation {
    /// The tenant.
    pub tenant: TenantId,
    /// The customer's chat.
    pub chat: ChatId,
    /// When the customer last wrote (the 24-hour window starts here); `None` if never.
    pub last_inbound_ms: Option<i64>,
    /// The bot stays quiet in this chat until then; [`PAUSED_INDEFINITELY`] until resumed.
    pub bot_paused_until_ms: Option<i64>,
}

impl Conversation {
    /// Whether the bot is paused at `now_ms`.
    pub fn bot_paused_at(&self, now_ms: i64) -> bool {
        self.bot_paused_until_ms.is_some_and(|until| now_ms < until)
    }
}

/// An inbound customer message, as the webhook ingress persists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewInbound {
    /// The tenant the number belongs to.
    pub tenant: TenantId,
    /// The customer's chat.
    pub chat: ChatId,
    /// Meta's message id: the dedup key.
    pub wamid: Wamid,
    /// When the ingress received it.
    pub received_ms: i64,
    /// Message type as Meta names it (`text`, `image`, `interactive`, …).
    pub kind: String,
    /// The text, for messages that have one.
    pub body: Option<String>,
    /// The raw webhook JSON of this message, kept for later reprocessing.
    pub raw: Option<String>,
}

/// Result of inserting a message that carries a wamid.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum InsertOutcome {
    /// The message was new and is stored under `id`.
    Inserted {
        /// The stored message's id.
        id: i64,
    },
    /// A message with this wamid was already stored under `id`; nothing changed.
    Duplicate {
        /// The existing message's id.
        id: i64,
    },
}

impl InsertOutcome {
    /// The message's id, new or existing.
    pub fn id(self) -> i64 {
        match self {
            Self::Inserted { id } | Self::Duplicate { id } => id,
        }
    }
}

/// Which way a message went.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    /// From the customer.
    Inbound,
    /// To the customer.
    Outbound,
}

impl Direction {
    /// The stored name: `inbound` or `outbound`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Inbound => "inbound",
            Self::Outbound => "outbound",
        }
    }

    /// Parses a stored name.
    pub fn parse(value: &str) -> Option<Self> {
        match value {
            "inbound" => Some(Self::Inbound),
            "outbound" => Some(Self::Outbound),
            _ => None,
        }
    }
}

/// Who wrote an outbound message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OutboundOrigin {
    /// The assistant.
    Bot,
    /// The business owner, through our API or dashboard.
    Owner,
    /// The business owner on their own WhatsApp app, reported back by Meta as an echo.
    Echo,
}

impl OutboundOrigin {
    /// The stored name: `bot`, `owner` or `echo`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Bot => "bot",
            Self::Owner => "owner",
            Self::Echo => "echo",
        }
    }

    /// Parses a stored name.
    pub fn parse(value: &str) -> Option<Self> {
        match value {
            "bot" => Some(Self::Bot),
            "owner" => Some(Self::Owner),
            "echo" => Some(Self::Echo),
            _ => None,
        }
    }
}

/// Delivery status of an outbound message.
///
/// Statuses only move forward: `pending < sent < delivered < read`; `failed` may follow
/// `pending`, `sent` or `delivered` and nothing follows it. Anything else is a regression
/// (webhooks arrive out of order) and is ignored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeliveryStatus {
    /// Recorded, not yet accepted by Meta.
    Pending,
    /// Accepted by Meta.
    Sent,
    /// Delivered to the customer's phone.
    Delivered,
    /// Read by the customer.
    Read,
    /// Failed; terminal.
    Failed,
}

impl DeliveryStatus {
    /// Every status, in order.
    pub const ALL: [Self; 5] = [
        Self::Pending,
        Self::Sent,
        Self::Delivered,
        Self::Read,
        Self::Failed,
    ];

    /// The stored name, as Meta spells it: `pending`, `sent`, `delivered`, `read`, `failed`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Sent => "sent",
            Self::Delivered => "delivered",
            Self::Read => "read",
            Self::Failed => "failed",
        }
    }

    /// Parses a stored name.
    pub fn parse(value: &str) -> Option<Self> {
        Self::ALL
            .into_iter()
            .find(|status| status.as_str() == value)
    }

    /// Whether a message in status `self` may move to `next`.
    pub fn can_advance_to(self, next: Self) -> bool {
        use DeliveryStatus::*;
        match (self, next) {
            (Failed, _) => false,
            (Read, Failed) => false,
            (_, Failed) => true,
            (current, next) => Self::order(current) < Self::order(next),
        }
    }

    fn order(self) -> u8 {
        match self {
            Self::Pending => 0,
            Self::Sent => 1,
            Self::Delivered => 2,
            Self::Read => 3,
            Self::Failed => 4,
        }
    }
}

/// Why sending a message failed, as Meta or the sender reported it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SendFailure {
    /// Meta's error code (e.g. 131047), if the failure came from Meta.
    pub code: Option<i64>,
    /// Meta's error title, or the sender's description.
    pub title: String,
}

/// A status webhook for an outbound message ([`Store::update_status`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatusUpdate {
    /// The tenant the number belongs to.
    pub tenant: TenantId,
    /// The outbound message's wamid.
    pub wamid: Wamid,
    /// The new status.
    pub status: DeliveryStatus,
    /// When Meta reported it.
    pub at_ms: i64,
    /// The error, for [`DeliveryStatus::Failed`].
    pub error: Option<SendFailure>,
}

/// Result of [`Store::update_status`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum StatusOutcome {
    /// The status moved forward.
    Advanced,
    /// The update would not move the status forward (a late or repeated webhook); nothing
    /// changed.
    Ignored,
    /// No outbound message of this tenant has that wamid.
    UnknownMessage,
}

/// A bot reply to record before it is sent ([`Store::record_reply`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewReply {
    /// The tenant.
    pub tenant: TenantId,
    /// The customer's chat.
    pub chat: ChatId,
    /// Ids of the inbound messages (of this chat) the reply answers: the batch.
    pub answers: Vec<i64>,
    /// The reply text.
    pub body: String,
    /// The writer's epoch for the tenant (fenced).
    pub epoch: u64,
    /// When the reply was recorded.
    pub created_ms: i64,
}

/// Result of [`Store::record_reply`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ReplyOutcome {
    /// The reply is recorded as a pending outbound message `reply_id`, linked to its batch.
    Recorded {
        /// The outbound message's id.
        reply_id: i64,
    },
    /// Inbound message `inbound_id` already has a reply (or was dismissed); nothing was
    /// written.
    AlreadyAnswered {
        /// The first inbound message found answered.
        inbound_id: i64,
    },
}

/// Result of [`Store::dismiss_inbound`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum DismissOutcome {
    /// The messages are marked handled without a reply.
    Dismissed,
    /// Inbound message `inbound_id` was already answered or dismissed; nothing was written.
    AlreadyAnswered {
        /// The first inbound message found answered.
        inbound_id: i64,
    },
}

/// An outbound message that is not a bot reply ([`Store::record_outbound`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewOutbound {
    /// The tenant.
    pub tenant: TenantId,
    /// The customer's chat.
    pub chat: ChatId,
    /// Who wrote it.
    pub origin: OutboundOrigin,
    /// Meta's id when the message is already sent (echoes); `None` records it pending.
    pub wamid: Option<Wamid>,
    /// Message type (`text`, `image`, …).
    pub kind: String,
    /// The text, for messages that have one.
    pub body: Option<String>,
    /// When it was written.
    pub created_ms: i64,
    /// The writer's epoch for the tenant. `Some` for writes by the tenant's actors (fenced);
    /// `None` for facts Meta reports through the webhook ingress (echoes), which any node may
    /// persist, like inbound messages.
    pub epoch: Option<u64>,
}

/// A stored message, either direction.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredMessage {
    /// The message's id; increases with insertion order.
    pub id: i64,
    /// The tenant.
    pub tenant: TenantId,
    /// The customer's chat.
    pub chat: ChatId,
    /// Inbound or outbound.
    pub direction: Direction,
    /// Who wrote an outbound message; `None` for inbound.
    pub origin: Option<OutboundOrigin>,
    /// Meta's id; `None` for an outbound message not yet sent.
    pub wamid: Option<Wamid>,
    /// Message type (`text`, `image`, …).
    pub kind: String,
    /// The text, if any.
    pub body: Option<String>,
    /// Delivery status of an outbound message; `None` for inbound.
    pub status: Option<DeliveryStatus>,
    /// When the status last changed.
    pub status_ms: Option<i64>,
    /// Why it failed, for [`DeliveryStatus::Failed`].
    pub failure: Option<SendFailure>,
    /// When it was received (inbound) or recorded (outbound).
    pub created_ms: i64,
}

/// A document to add to a tenant's knowledge base ([`Store::add_knowledge`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewKnowledge {
    /// The tenant.
    pub tenant: TenantId,
    /// The document's title.
    pub title: String,
    /// The document split into passages; each is one retrieval unit.
    pub chunks: Vec<String>,
    /// When it was added.
    pub created_ms: i64,
}

/// A knowledge document, without its text ([`Store::list_knowledge`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KnowledgeDocument {
    /// The document's id.
    pub id: i64,
    /// Its title.
    pub title: String,
    /// How many chunks it has.
    pub chunk_count: i64,
    /// When it was added.
    pub created_ms: i64,
}

/// A passage found by [`Store::search_knowledge`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct KnowledgeHit {
    /// The document the passage belongs to.
    pub document_id: i64,
    /// That document's title.
    pub document_title: String,
    /// The passage.
    pub text: String,
    /// Relevance, higher is better; comparable only within one result list.
    pub score: f64,
}

/// One LLM call's usage ([`Store::record_llm_usage`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LlmUsage {
    /// The tenant billed.
    pub tenant: TenantId,
    /// Provider name (`gemini`, `openai`, …).
    pub provider: String,
    /// Model name.
    pub model: String,
    /// Prompt tokens.
    pub prompt_tokens: i64,
    /// Completion tokens.
    pub completion_tokens: i64,
    /// Cost in millionths of a US dollar.
    pub cost_micros: i64,
    /// When the call finished.
    pub at_ms: i64,
}

/// Summed LLM usage of a tenant ([`Store::llm_usage_totals`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LlmUsageTotals {
    /// Number of calls.
    pub requests: i64,
    /// Prompt tokens.
    pub prompt_tokens: i64,
    /// Completion tokens.
    pub completion_tokens: i64,
    /// Cost in millionths of a US dollar.
    pub cost_micros: i64,
}

/// An event or alert to keep ([`Store::record_event`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewEvent {
    /// The tenant concerned, if any.
    pub tenant: Option<TenantId>,
    /// Event kind (`provider_quota_exhausted`, `session_auth_failed`, …).
    pub kind: String,
    /// Details, JSON text.
    pub detail: String,
    /// When it happened.
    pub at_ms: i64,
}

/// A stored event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredEvent {
    /// The event's id; increases with insertion order.
    pub id: i64,
    /// The tenant concerned, if any.
    pub tenant: Option<TenantId>,
    /// Event kind.
    pub kind: String,
    /// Details, JSON text.
    pub detail: String,
    /// When it happened.
    pub at_ms: i64,
}

/// Durable state of the gateway. Implementations: the node's sqlx store (Postgres, SQLite).
///
/// Methods that take an `epoch` are fenced: they fail with [`StoreError::StaleEpoch`] and
/// write nothing when the tenant's claimed epoch is greater. Lists are ordered oldest first
/// unless a method says otherwise.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// Checks that the database answers.
    async fn health(&self) -> Result<(), StoreError>;

    // ----- tenants -----

    /// Creates a tenant or updates its name, prompt and LLM configuration.
    async fn upsert_tenant(&self, tenant: &NewTenant) -> Result<(), StoreError>;

    /// The tenant with its WhatsApp numbers, if it exists.
    async fn tenant(&self, id: &TenantId) -> Result<Option<Tenant>, StoreError>;

    /// Every tenant, ordered by id.
    async fn list_tenants(&self) -> Result<Vec<Tenant>, StoreError>;

    /// Attaches a WhatsApp number to a tenant, or updates its token and WABA id.
    /// [`StoreError::Conflict`] if the number belongs to another tenant;
    /// [`StoreError::NotFound`] if the tenant does not exist.
    async fn upsert_whatsapp_number(&self, number: &NewWhatsAppNumber) -> Result<(), StoreError>;

    /// The tenant that owns a phone number id, for routing webhooks.
    async fn tenant_by_phone_number(
        &self,
        phone_number_id: &PhoneNumberId,
    ) -> Result<Option<TenantRoute>, StoreError>;

    // ----- fencing -----

    /// Makes `epoch` the tenant's current epoch if it is not older than the current one
    /// (the first claim creates it). [`StoreError::StaleEpoch`] otherwise.
    async fn claim_epoch(&self, tenant: &TenantId, epoch: u64) -> Result<(), StoreError>;

    /// The tenant's current epoch, if one was ever claimed or the tenant exists.
    async fn current_epoch(&self, tenant: &TenantId) -> Result<Option<u64>, StoreError>;

    // ----- conversations -----

    /// The conversation's state, if it exists.
    async fn conversation(
        &self,
        tenant: &TenantId,
        chat: &ChatId,
    ) -> Result<Option<Conversation>, StoreError>;

    /// Pauses the bot in a chat until `until_ms` ([`PAUSED_INDEFINITELY`] for no end), or
    /// resumes it with `None`. Creates the conversation if needed. Fenced.
    async fn set_bot_paused(
        &self,
        tenant: &TenantId,
        chat: &ChatId,
        until_ms: Option<i64>,
        epoch: u64,
    ) -> Result<(), StoreError>;

    // ----- messages -----

    /// Persists an inbound message and bumps the conversation's `last_inbound_ms` (creating
    /// the conversation on first contact). A wamid already stored for the tenant is a no-op
    /// reported as [`InsertOutcome::Duplicate`]. Not fenced: any node's ingress may persist.
    async fn insert_inbound(&self, message: &NewInbound) -> Result<InsertOutcome, StoreError>;

    /// Records an owner message or echo. With a wamid it is stored as sent and deduplicated
    /// like inbound messages; without, it is pending until sent. Fenced when `epoch` is set.
    async fn record_outbound(&self, message: &NewOutbound) -> Result<InsertOutcome, StoreError>;

    /// Applies a status webhook, only if it moves the status forward (one conditional write).
    async fn update_status(&self, update: &StatusUpdate) -> Result<StatusOutcome, StoreError>;

    /// Records a bot reply (a pending outbound message) and links every inbound message it
    /// answers to it, in one transaction, before the reply is sent. If any of them is already
    /// answered, nothing is written ([`ReplyOutcome::AlreadyAnswered`]). Every answered id
    /// must be an inbound message of this chat ([`StoreError::NotFound`] otherwise). Fenced.
    async fn record_reply(&self, reply: &NewReply) -> Result<ReplyOutcome, StoreError>;

    /// Marks inbound messages handled without a reply (the owner took over, the bot is
    /// paused, the message needs none), so reconciliation stops offering them. Same rules
    /// as [`Store::record_reply`]. Fenced.
    async fn dismiss_inbound(
        &self,
        tenant: &TenantId,
        chat: &ChatId,
        inbound: &[i64],
        at_ms: i64,
        epoch: u64,
    ) -> Result<DismissOutcome, StoreError>;

    /// Records that a pending outbound message was accepted by Meta as `wamid`. A message no
    /// longer pending is left as it is. [`StoreError::NotFound`] if there is no such
    /// outbound message. Fenced.
    async fn mark_reply_sent(
        &self,
        tenant: &TenantId,
        reply_id: i64,
        wamid: &Wamid,
        at_ms: i64,
        epoch: u64,
    ) -> Result<(), StoreError>;

    /// Records that sending a pending outbound message failed for good. A message no longer
    /// pending is left as it is. [`StoreError::NotFound`] if there is no such outbound
    /// message. Fenced.
    async fn mark_reply_failed(
        &self,
        tenant: &TenantId,
        reply_id: i64,
        failure: &SendFailure,
        at_ms: i64,
        epoch: u64,
    ) -> Result<(), StoreError>;

    // ----- reconciliation and reads -----

    /// The tenant's inbound messages received at or after `since_ms` that are neither answered
    /// nor dismissed. Reconciliation passes now minus the 24-hour customer service window:
    /// older messages cannot get a free-form reply anyway.
    async fn unanswered_inbound(
        &self,
        tenant: &TenantId,
        since_ms: i64,
    ) -> Result<Vec<StoredMessage>, StoreError>;

    /// Tenants with work left behind: an inbound message received in `[since_ms, before_ms)`
    /// that is neither answered nor dismissed, or an outbound message still pending. The
    /// node's sweep activates and reconciles them. The default composes other methods (one
    /// query per tenant); SQL stores override it with one query.
    async fn tenants_with_pending_work(
        &self,
        since_ms: i64,
        before_ms: i64,
    ) -> Result<Vec<TenantId>, StoreError> {
        let mut pending = Vec::new();
        for tenant in self.list_tenants().await? {
            let unanswered = self.unanswered_inbound(&tenant.id, since_ms).await?;
            let late = unanswered.iter().any(|m| m.created_ms < before_ms);
            if late || !self.unsent_replies(&tenant.id).await?.is_empty() {
                pending.push(tenant.id);
            }
        }
        Ok(pending)
    }

    /// One chat's inbound messages that are neither answered nor dismissed.
    async fn unanswered_inbound_in_chat(
        &self,
        tenant: &TenantId,
        chat: &ChatId,
    ) -> Result<Vec<StoredMessage>, StoreError>;

    /// The tenant's outbound messages still pending (recorded, never sent or failed).
    async fn unsent_replies(&self, tenant: &TenantId) -> Result<Vec<StoredMessage>, StoreError>;

    /// The chat's last `limit` messages, both directions, oldest first.
    async fn conversation_messages(
        &self,
        tenant: &TenantId,
        chat: &ChatId,
        limit: u32,
    ) -> Result<Vec<StoredMessage>, StoreError>;

    /// The chat's last `limit` messages with text, leaving out failed outbound messages
    /// (the customer never saw them), oldest first: the LLM's history window.
    async fn recent_history(
        &self,
        tenant: &TenantId,
        chat: &ChatId,
        limit: u32,
    ) -> Result<Vec<StoredMessage>, StoreError>;

    /// The tenant's chat log across chats, newest first, created before `before_ms` (all
    /// with `None`), at most `limit`.
    async fn chat_log(
        &self,
        tenant: &TenantId,
        before_ms: Option<i64>,
        limit: u32,
    ) -> Result<Vec<StoredMessage>, StoreError>;

    // ----- knowledge -----

    /// Adds a document to the tenant's knowledge base and bumps its knowledge version.
    /// Returns the document's id. [`StoreError::NotFound`] if the tenant does not exist.
    async fn add_knowledge(&self, document: &NewKnowledge) -> Result<i64, StoreError>;

    /// The tenant's documents, oldest first.
    async fn list_knowledge(&self, tenant: &TenantId)
    -> Result<Vec<KnowledgeDocument>, StoreError>;

    /// Deletes a document of the tenant and bumps its knowledge version. Returns whether it
    /// existed.
    async fn delete_knowledge(
        &self,
        tenant: &TenantId,
        document_id: i64,
    ) -> Result<bool, StoreError>;

    /// Full-text search of the tenant's passages: any of the question's words (lowercased,
    /// longer than one character) may match, best match first, at most `k`. Only this
    /// tenant's passages are searched. A question without usable words finds nothing.
    async fn search_knowledge(
        &self,
        tenant: &TenantId,
        question: &str,
        k: u32,
    ) -> Result<Vec<KnowledgeHit>, StoreError>;

    /// The tenant's knowledge version: changes whenever its knowledge base changes (the
    /// responder's cache key). 0 for a tenant that does not exist.
    async fn knowledge_version(&self, tenant: &TenantId) -> Result<i64, StoreError>;

    // ----- usage, events, retention -----

    /// Records one LLM call's usage.
    async fn record_llm_usage(&self, usage: &LlmUsage) -> Result<(), StoreError>;

    /// The tenant's LLM usage summed over calls at or after `since_ms`.
    async fn llm_usage_totals(
        &self,
        tenant: &TenantId,
        since_ms: i64,
    ) -> Result<LlmUsageTotals, StoreError>;

    /// Records an event or alert. Returns its id.
    async fn record_event(&self, event: &NewEvent) -> Result<i64, StoreError>;

    /// The last `limit` events, newest first.
    async fn recent_events(&self, limit: u32) -> Result<Vec<StoredEvent>, StoreError>;

    /// Deletes every message created before `cutoff_ms`, with its reply links. A reply that
    /// outlives its deleted inbound messages stays; an inbound message whose reply is deleted
    /// stays answered. Returns how many messages were deleted.
    async fn delete_messages_before(&self, cutoff_ms: i64) -> Result<u64, StoreError>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_only_move_forward() {
        use DeliveryStatus::*;
        let allowed = [
            (Pending, Sent),
            (Pending, Delivered),
            (Pending, Read),
            (Pending, Failed),
            (Sent, Delivered),
            (Sent, Read),
            (Sent, Failed),
            (Delivered, Read),
            (Delivered, Failed),
        ];
        for from in DeliveryStatus::ALL {
            for to in DeliveryStatus::ALL {
                let expected = allowed.contains(&(from, to));
                assert_eq!(from.can_advance_to(to), expected, "{from:?} -> {to:?}");
            }
        }
    }

    #[test]
    fn statuses_round_trip_through_their_names() {
        for status in DeliveryStatus::ALL {
            assert_eq!(DeliveryStatus::parse(status.as_str()), Some(status));
        }
        assert_eq!(DeliveryStatus::parse("deleted"), None);
    }

    #[test]
    fn access_tokens_never_print() {
        let number = WhatsAppNumber {
            phone_number_id: PhoneNumberId::new("106540352242922").unwrap(),
            waba_id: None,
            access_token: AccessToken::new("EAAG-secret-token"),
        };
        let shown = format!("{number:?} {}", number.access_token);
        assert!(!shown.contains("EAAG-secret-token"), "{shown}");
        assert!(shown.contains("[redacted]"), "{shown}");
        assert_eq!(number.access_token.expose(), "EAAG-secret-token");
    }

    #[test]
    fn pauses_end_when_their_time_comes() {
        let mut conversation = Conversation {
            tenant: TenantId::new("acme").unwrap(),
            chat: ChatId::new("15551234567").unwrap(),
            last_inbound_ms: None,
            bot_paused_until_ms: None,
        };
        assert!(!conversation.bot_paused_at(1_000));
        conversation.bot_paused_until_ms = Some(2_000);
        assert!(conversation.bot_paused_at(1_999));
        assert!(!conversation.bot_paused_at(2_000));
        conversation.bot_paused_until_ms = Some(PAUSED_INDEFINITELY);
        assert!(conversation.bot_paused_at(i64::MAX - 1));
    }
}
