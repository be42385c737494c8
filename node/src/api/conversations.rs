//! A tenant's conversations; a chat's messages, bot pause and resume, owner sends.

use salesboy_actors::command::{CommandReply, TenantCommand};
use salesboy_actors::store::{PAUSED_INDEFINITELY, StoredMessage};
use salesboy_protocol::{ChatId, TenantId};
use serde::Serialize;
use tracing::info;
use utoipa::ToSchema;

use super::content::{Message, SendRequest};
use super::{Api, ApiError};

/// Default number of messages [`messages`] (and conversations [`list`]) returns.
pub const DEFAULT_MESSAGE_LIMIT: u32 = 100;

/// Most messages [`messages`] (and conversations [`list`]) returns.
pub const MAX_MESSAGE_LIMIT: u32 = 1_000;

/// Longest `client_ref` of an owner send, in characters.
pub const MAX_CLIENT_REF_CHARS: usize = 128;

/// Why an outbound message failed.
#[derive(Debug, Serialize, ToSchema)]
pub struct FailureView {
    /// Meta's error code, if the failure came from Meta.
    pub code: Option<i64>,
    /// Meta's error title, or the sender's description.
    pub title: String,
}

/// One message of a chat.
#[derive(Debug, Serialize, ToSchema)]
pub struct MessageView {
    /// The message's id.
    pub id: i64,
    /// `inbound` or `outbound`.
    #[schema(example = "outbound")]
    pub direction: String,
    /// Who wrote an outbound message: `bot`, `owner` or `echo`; `null` for inbound.
    pub origin: Option<String>,
    /// Meta's message id; `null` for an outbound message not sent yet.
    pub wamid: Option<String>,
    /// Message type (`text`, `image`, …).
    pub kind: String,
    /// The text, if any.
    pub body: Option<String>,
    /// `pending`, `sent`, `delivered`, `read` or `failed`; `null` for inbound.
    pub status: Option<String>,
    /// When the status last changed (unix ms).
    pub status_ms: Option<i64>,
    /// Why it failed.
    pub failure: Option<FailureView>,
    /// When it was received or recorded (unix ms).
    pub created_ms: i64,
    /// For a bot reply: the knowledge passages it was written from, best first, and why
    /// each was chosen (its full-text rank, vector rank and fused score); empty otherwise.
    pub passages: Vec<PassageView>,
}

/// A knowledge passage a reply was written from, and why it was chosen.
#[derive(Debug, Serialize, ToSchema)]
pub struct PassageView {
    /// The passage's id (as cited in the prompt: `[passage ID, "TITLE"]`).
    pub passage_id: i64,
    /// Its document.
    pub document_id: i64,
    /// The document's title.
    pub document_title: String,
    /// 1-based rank in the full-text results; `null` when full text did not find it.
    pub fulltext_rank: Option<u32>,
    /// 1-based rank among the nearest vectors; `null` when not among them (or no
    /// embeddings).
    pub vector_rank: Option<u32>,
    /// The search's score: with embeddings, the reciprocal-rank-fusion score.
    pub score: f64,
}

impl From<StoredMessage> for MessageView {
    fn from(message: StoredMessage) -> Self {
        Self {
            id: message.id,
            direction: message.direction.as_str().to_owned(),
            origin: message.origin.map(|o| o.as_str().to_owned()),
            wamid: message.wamid.map(|w| w.to_string()),
            kind: message.kind,
            body: message.body,
            status: message.status.map(|s| s.as_str().to_owned()),
            status_ms: message.status_ms,
            failure: message.failure.map(|f| FailureView {
                code: f.code,
                title: f.title,
            }),
            created_ms: message.created_ms,
            passages: message
                .passages
                .into_iter()
                .map(|p| PassageView {
                    passage_id: p.chunk_id,
                    document_id: p.document_id,
                    document_title: p.document_title,
                    fulltext_rank: p.fulltext_rank,
                    vector_rank: p.vector_rank,
                    score: p.score,
                })
                .collect(),
        }
    }
}

/// A chat's recent messages.
#[derive(Debug, Serialize, ToSchema)]
pub struct MessagesResponse {
    /// The customer's WhatsApp id.
    pub chat: String,
    /// The bot is paused in this chat until then (unix ms; 9223372036854775807 = until
    /// resumed); `null` when not paused.
    pub bot_paused_until_ms: Option<i64>,
    /// The last messages (before `before`, if given), oldest first. To page back, ask again
    /// with `before` = the first message's `id`.
    pub messages: Vec<MessageView>,
}

/// One conversation of a tenant.
#[derive(Debug, Serialize, ToSchema)]
pub struct ConversationView {
    /// The customer's WhatsApp id.
    pub chat: String,
    /// When the customer last wrote (unix ms); `null` if never.
    pub last_inbound_ms: Option<i64>,
    /// The bot is paused in this chat until then (unix ms; 9223372036854775807 = until
    /// resumed); `null` when not paused.
    pub bot_paused_until_ms: Option<i64>,
}

/// The bot's pause state in a chat.
#[derive(Debug, Serialize, ToSchema)]
pub struct PauseState {
    /// The customer's WhatsApp id.
    pub chat: String,
    /// Paused until then (unix ms; 9223372036854775807 = until resumed); `null` = answering.
    pub bot_paused_until_ms: Option<i64>,
}

/// A message accepted for sending.
#[derive(Debug, Serialize, ToSchema)]
pub struct SendAccepted {
    /// The recorded outbound message's id (see the messages route for its status).
    pub outbound_id: i64,
}

/// 400 for a `limit` outside 1 to [`MAX_MESSAGE_LIMIT`]; `got` is what was sent.
pub fn invalid_limit(got: impl std::fmt::Debug) -> ApiError {
    ApiError::invalid(
        "limit",
        format!("expected a whole number from 1 to {MAX_MESSAGE_LIMIT}, got {got:?}"),
    )
}

/// The tenant's conversations, the most recent inbound message first (chats the customer
/// never wrote in last), at most `limit` (default [`DEFAULT_MESSAGE_LIMIT`]); with `after`
/// (a chat of a previous page, its last), those that come after it.
pub async fn list(
    api: &Api,
    id: &TenantId,
    after: Option<&ChatId>,
    limit: Option<u32>,
) -> Result<Vec<ConversationView>, ApiError> {
    let limit = checked_limit(limit)?;
    api.existing_tenant(id).await?;
    let conversations = api.store.conversations(id, after, limit).await?;
    Ok(conversations
        .into_iter()
        .map(|c| ConversationView {
            chat: c.chat.to_string(),
            last_inbound_ms: c.last_inbound_ms,
            bot_paused_until_ms: c.bot_paused_until_ms,
        })
        .collect())
}

/// `limit`, or the default; 400 outside 1 to [`MAX_MESSAGE_LIMIT`].
fn checked_limit(limit: Option<u32>) -> Result<u32, ApiError> {
    match limit {
        None => Ok(DEFAULT_MESSAGE_LIMIT),
        Some(n) if (1..=MAX_MESSAGE_LIMIT).contains(&n) => Ok(n),
        Some(n) => Err(invalid_limit(n)),
    }
}

/// The chat's last `limit` messages (default [`DEFAULT_MESSAGE_LIMIT`]), both directions,
/// oldest first; with `before` (a message's `id`), the last of those before it, to page
/// back (none if it is not a message of this chat).
pub async fn messages(
    api: &Api,
    id: &TenantId,
    chat: &ChatId,
    before: Option<i64>,
    limit: Option<u32>,
) -> Result<MessagesResponse, ApiError> {
    let limit = checked_limit(limit)?;
    api.existing_tenant(id).await?;
    let conversation = api.store.conversation(id, chat).await?;
    let messages = api
        .store
        .conversation_messages(id, chat, before, limit)
        .await?;
    Ok(MessagesResponse {
        chat: chat.to_string(),
        bot_paused_until_ms: conversation.and_then(|c| c.bot_paused_until_ms),
        messages: messages.into_iter().map(MessageView::from).collect(),
    })
}

/// The longest timed pause: a year (a longer one is a pause until resumed).
pub const MAX_PAUSE_MINUTES: u32 = 525_600;

/// Pauses the bot in the chat for `minutes` (1 to [`MAX_PAUSE_MINUTES`]), or until resumed
/// (`None`).
pub async fn pause(
    api: &Api,
    id: &TenantId,
    chat: &ChatId,
    minutes: Option<u32>,
) -> Result<PauseState, ApiError> {
    let until_ms = match minutes {
        None => PAUSED_INDEFINITELY,
        Some(0) => return Err(ApiError::invalid("minutes", "must be at least 1")),
        Some(minutes) if minutes > MAX_PAUSE_MINUTES => {
            return Err(ApiError::invalid(
                "minutes",
                format!(
                    "must be at most {MAX_PAUSE_MINUTES} (a year); leave it out to pause until resumed"
                ),
            ));
        }
        Some(minutes) => api.now_ms().saturating_add(i64::from(minutes) * 60_000),
    };
    let paused = set_paused(api, id, chat, Some(until_ms)).await?;
    info!(tenant = %id, chat = %chat, until_ms, "bot paused");
    Ok(paused)
}

/// Resumes the bot in the chat.
pub async fn resume(api: &Api, id: &TenantId, chat: &ChatId) -> Result<PauseState, ApiError> {
    let resumed = set_paused(api, id, chat, None).await?;
    info!(tenant = %id, chat = %chat, "bot resumed");
    Ok(resumed)
}

/// Has the tenant pause the bot in `chat` until `until_ms`, or resume it (`None`).
async fn set_paused(
    api: &Api,
    id: &TenantId,
    chat: &ChatId,
    until_ms: Option<i64>,
) -> Result<PauseState, ApiError> {
    let command = TenantCommand::SetPaused {
        chat: chat.clone(),
        until_ms,
    };
    api.router.deliver(id, command).await?;
    Ok(PauseState {
        chat: chat.to_string(),
        bot_paused_until_ms: until_ms,
    })
}

/// Sends a message as the owner (a text, a template, an interactive or a media message;
/// see [`super::content`]): it is recorded, then sent, and the bot steps back in that chat
/// for the takeover period. Nothing is recorded unless the whole request is valid.
pub async fn send(
    api: &Api,
    id: &TenantId,
    chat: &ChatId,
    request: SendRequest,
) -> Result<SendAccepted, ApiError> {
    if let Some(client_ref) = &request.client_ref {
        let chars = client_ref.chars().count();
        if chars == 0 || chars > MAX_CLIENT_REF_CHARS {
            return Err(ApiError::invalid(
                "client_ref",
                format!("{chars} characters, 1 to {MAX_CLIENT_REF_CHARS} are allowed"),
            ));
        }
    }
    let client_ref = request.client_ref.clone();
    let message = request.message()?;
    if api.existing_tenant(id).await?.session_stopped_ms.is_some() {
        return Err(ApiError::SessionStopped(id.clone()));
    }
    let command = match (message, client_ref) {
        (Message::Text(body), None) => TenantCommand::OwnerSend {
            chat: chat.clone(),
            body,
        },
        (Message::Text(body), Some(client_ref)) => TenantCommand::OwnerSendOnce {
            chat: chat.clone(),
            body,
            client_ref,
        },
        (Message::Content(content), client_ref) => TenantCommand::OwnerSendContent {
            chat: chat.clone(),
            content: Box::new(content),
            client_ref,
        },
    };
    let CommandReply::Outbound(outbound_id) = api.router.deliver(id, command).await? else {
        return Err(ApiError::Internal(
            "the tenant did not record the message".to_owned(),
        ));
    };
    info!(tenant = %id, chat = %chat, outbound_id, "owner message accepted");
    Ok(SendAccepted { outbound_id })
}
