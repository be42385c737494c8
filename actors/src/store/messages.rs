//! Conversations and messages: [`MessageStore`] and its records.

use async_trait::async_trait;
use salesboy_protocol::whatsapp::OutboundContent;
use salesboy_protocol::{ChatId, TenantId, Wamid};
use serde::{Deserialize, Serialize};

pub use salesboy_protocol::whatsapp::DeliveryStatus;

use super::StoreError;

/// Value of [`Conversation::bot_paused_until_ms`] that pauses the bot until it is resumed.
pub const PAUSED_INDEFINITELY: i64 = i64::MAX;

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
    /// When the customer sent it: Meta's `timestamp`, in ms. The 24-hour customer service
    /// window counts from it.
    pub sent_ms: Option<i64>,
    /// Message type as Meta names it (`text`, `image`, `interactive`, …).
    pub kind: String,
    /// The text, for messages that have one.
    pub body: Option<String>,
    /// The raw webhook JSON of this message, kept for later reprocessing.
    pub raw: Option<String>,
}

/// What [`MessageStore::insert_inbound_batch`] did with one message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StoredInbound {
    /// Stored, or a duplicate.
    pub outcome: InsertOutcome,
    /// The message is the first of its chat: its insert created the conversation, so the
    /// chat has no history and no pause. `false` when the store cannot tell.
    pub new_chat: bool,
    /// The inbound message stored before it in its chat, for a message inserted now.
    pub predecessor: Predecessor,
}

/// The inbound message stored just before another in its chat, as the transaction that
/// stored it saw it. That transaction holds the chat's conversation row, so no message of
/// the chat with a lower id can commit after it: a conversation that has handled the
/// predecessor and holds the message knows nothing of the chat's is left unanswered before
/// it (`conversation` skips its check against the store).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Predecessor {
    /// Not known: the message was read back from the store, came from another node, or
    /// the store cannot tell.
    #[default]
    Unknown,
    /// None: the message is its chat's first inbound message.
    FirstInChat,
    /// The inbound message with this id.
    Message(i64),
}

/// Result of inserting a message that carries a wamid.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum InsertOutcome {
    /// The message was new and is stored under `id`.
    Inserted {
        /// The stored message's id.
        id: i64,
    },
    /// A message with this wamid (or client_ref) was already stored under `id`; nothing
    /// changed.
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

/// Why sending a message failed, as Meta or the sender reported it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SendFailure {
    /// Meta's error code (e.g. 131047), if the failure came from Meta.
    pub code: Option<i64>,
    /// Meta's error title, or the sender's description.
    pub title: String,
}

/// A new delivery status to record for one of a tenant's outbound messages
/// ([`MessageStore::update_status`]): a status webhook's update
/// ([`salesboy_protocol::whatsapp::StatusUpdate`]) resolved to its tenant, in milliseconds,
/// with its first error.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewStatus {
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

/// Result of [`MessageStore::update_status`].
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

/// A bot reply to record before it is sent ([`MessageStore::record_reply`]).
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
    /// The passages the reply was written from, best first (empty: none).
    pub passages: Vec<crate::store::PassageChoice>,
    /// The writer's epoch for the tenant (fenced).
    pub epoch: u64,
    /// When the reply was recorded.
    pub created_ms: i64,
}

/// Result of [`MessageStore::record_reply`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ReplyOutcome {
    /// The reply is recorded as a pending outbound message `outbound_id`, linked to its batch.
    Recorded {
        /// The outbound message's id.
        outbound_id: i64,
    },
    /// Inbound message `inbound_id` already has a reply (or was dismissed); nothing was
    /// written.
    AlreadyAnswered {
        /// The first inbound message found answered.
        inbound_id: i64,
    },
}

/// Result of [`MessageStore::dismiss_inbound`].
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

/// An outbound message that is not a bot reply ([`MessageStore::record_outbound`]).
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
    /// The client's idempotency key of an owner send (`message.send`'s `client_ref`): a
    /// second message with the tenant's same key is not recorded, the first one's id is
    /// answered as [`InsertOutcome::Duplicate`].
    pub client_ref: Option<String>,
    /// What an owner's template, interactive or media message sends (`body` holds its
    /// readable rendition); kept so a pending message can be sent after a restart. `None`
    /// for text.
    pub content: Option<OutboundContent>,
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
    /// When the customer sent an inbound message (Meta's `timestamp`, in ms); `None` for
    /// outbound messages and inbound ones stored without it.
    pub sent_ms: Option<i64>,
    /// What an outbound template, interactive or media message sends (`body` is its
    /// readable rendition); `None` for text and inbound messages.
    pub content: Option<OutboundContent>,
    /// For a bot reply: the knowledge passages it was written from, with their ranks (why
    /// they were chosen); empty otherwise.
    pub passages: Vec<crate::store::PassageChoice>,
}

/// Conversations and messages, both directions: persisting inbound messages, recording
/// replies and owner messages, delivery statuses, and the reads reconciliation, the
/// responder and the admin API make.
///
/// Methods that take an `epoch` are fenced: they fail with [`StoreError::StaleEpoch`] and
/// write nothing when the tenant's claimed epoch is greater. Lists are ordered oldest first
/// unless a method says otherwise.
#[async_trait]
pub trait MessageStore: Send + Sync {
    // ----- conversations -----

    /// The conversation's state, if it exists.
    async fn conversation(
        &self,
        tenant: &TenantId,
        chat: &ChatId,
    ) -> Result<Option<Conversation>, StoreError>;

    /// The tenant's conversations, the most recent inbound message first (conversations the
    /// customer never wrote in last), ties by chat id; at most `limit`. With `after`, a chat
    /// of the tenant: those that come after it in this order (paging); none if there is no
    /// such conversation.
    async fn conversations(
        &self,
        tenant: &TenantId,
        after: Option<&ChatId>,
        limit: u32,
    ) -> Result<Vec<Conversation>, StoreError>;

    /// Pauses the bot in a chat until `until_ms` ([`PAUSED_INDEFINITELY`] for no end), or
    /// resumes it with `None`, at `at_ms` (the time of its event). Creates the conversation
    /// if needed. Fenced.
    async fn set_bot_paused(
        &self,
        tenant: &TenantId,
        chat: &ChatId,
        until_ms: Option<i64>,
        at_ms: i64,
        epoch: u64,
    ) -> Result<(), StoreError>;

    // ----- messages -----

    /// Persists an inbound message and bumps the conversation's `last_inbound_ms` (creating
    /// the conversation on first contact). A wamid already stored for the tenant is a no-op
    /// reported as [`InsertOutcome::Duplicate`]. Not fenced: any node's ingress may persist.
    async fn insert_inbound(&self, message: &NewInbound) -> Result<InsertOutcome, StoreError>;

    /// [`MessageStore::insert_inbound`] for each message of one webhook delivery, answering
    /// each one's result in order, whether it started its chat and what preceded it there.
    /// A store may commit them together (and with other callers' writes); each is answered
    /// only once it is committed, and one that fails does not fail the others. By default,
    /// one after the other, never telling a new chat or a predecessor.
    async fn insert_inbound_batch(
        &self,
        messages: &[NewInbound],
    ) -> Vec<Result<StoredInbound, StoreError>> {
        let mut results = Vec::with_capacity(messages.len());
        for message in messages {
            let stored = self
                .insert_inbound(message)
                .await
                .map(|outcome| StoredInbound {
                    outcome,
                    new_chat: false,
                    predecessor: Predecessor::Unknown,
                });
            results.push(stored);
        }
        results
    }

    /// Records an owner message or echo. With a wamid it is stored as sent and deduplicated
    /// like inbound messages; without, it is pending until sent. Fenced when `epoch` is set.
    async fn record_outbound(&self, message: &NewOutbound) -> Result<InsertOutcome, StoreError>;

    /// Applies a status webhook, only if it moves the status forward (one conditional write).
    async fn update_status(&self, update: &NewStatus) -> Result<StatusOutcome, StoreError>;

    /// Records a bot reply (a pending outbound message) and links every inbound message it
    /// answers to it, in one transaction, before the reply is sent. If any of them is already
    /// answered, nothing is written ([`ReplyOutcome::AlreadyAnswered`]). Every answered id
    /// must be an inbound message of this chat ([`StoreError::NotFound`] otherwise). Fenced.
    async fn record_reply(&self, reply: &NewReply) -> Result<ReplyOutcome, StoreError>;

    /// Marks inbound messages handled without a reply (the owner took over, the bot is
    /// paused, the message needs none), so reconciliation stops offering them. Same rules
    /// as [`MessageStore::record_reply`]. Fenced.
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
        outbound_id: i64,
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
        outbound_id: i64,
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
    /// that is neither answered nor dismissed, or an outbound message created before
    /// `before_ms` and still pending (a younger one is a reply under way). The
    /// node's sweep activates and reconciles them, so an implementation answers it with one
    /// query, not one per tenant.
    async fn tenants_with_pending_work(
        &self,
        since_ms: i64,
        before_ms: i64,
    ) -> Result<Vec<TenantId>, StoreError>;

    /// One chat's inbound messages that are neither answered nor dismissed.
    async fn unanswered_inbound_in_chat(
        &self,
        tenant: &TenantId,
        chat: &ChatId,
    ) -> Result<Vec<StoredMessage>, StoreError>;

    /// The tenant's outbound messages still pending (recorded, never sent or failed).
    async fn unsent_replies(&self, tenant: &TenantId) -> Result<Vec<StoredMessage>, StoreError>;

    /// The chat's last `limit` messages, both directions, oldest first (ordered by
    /// `created_ms`, then id). With `before`, the id of one of the chat's messages: the last
    /// `limit` of those that come before it (paging back); none if it is not a message of
    /// this chat.
    async fn conversation_messages(
        &self,
        tenant: &TenantId,
        chat: &ChatId,
        before: Option<i64>,
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
}

#[cfg(test)]
mod tests {
    use super::*;

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
