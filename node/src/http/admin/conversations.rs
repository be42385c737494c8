//! `/tenants/{id}/conversations/{wa_id}/…`: a chat's messages, bot pause and resume, owner
//! sends.

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use salesboy_actors::command::{CommandReply, TenantCommand};
use salesboy_actors::store::{PAUSED_INDEFINITELY, StoredMessage};
use salesboy_protocol::{ChatId, TenantId};
use serde::{Deserialize, Serialize};
use tracing::info;
use utoipa::{IntoParams, ToSchema};

use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::error::{AdminError, ApiJson, ApiPath, ApiQuery, ErrorBody};
use super::{AppState, chat_id, existing_tenant, now_ms, tenant_id};

/// Default number of messages `GET …/messages` returns.
pub const DEFAULT_MESSAGE_LIMIT: u32 = 100;

/// Most messages `GET …/messages` returns.
pub const MAX_MESSAGE_LIMIT: u32 = 1_000;

/// Longest owner message, in characters (WhatsApp's limit for a text body).
pub const MAX_SEND_CHARS: usize = 4_096;

/// The routes of this module, documented.
pub(super) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::default()
        .routes(routes!(messages))
        .routes(routes!(pause))
        .routes(routes!(resume))
        .routes(routes!(send))
}

/// `?limit=` of the messages route.
#[derive(Debug, Deserialize)]
pub(super) struct MessagesQuery {
    limit: Option<String>,
}

/// Why an outbound message failed.
#[derive(Debug, Serialize, ToSchema)]
pub(super) struct FailureView {
    /// Meta's error code, if the failure came from Meta.
    code: Option<i64>,
    /// Meta's error title, or the sender's description.
    title: String,
}

/// One message of a chat.
#[derive(Debug, Serialize, ToSchema)]
pub(super) struct MessageView {
    /// The message's id.
    id: i64,
    /// `inbound` or `outbound`.
    #[schema(example = "outbound")]
    direction: String,
    /// Who wrote an outbound message: `bot`, `owner` or `echo`; `null` for inbound.
    origin: Option<String>,
    /// Meta's message id; `null` for an outbound message not sent yet.
    wamid: Option<String>,
    /// Message type (`text`, `image`, …).
    kind: String,
    /// The text, if any.
    body: Option<String>,
    /// `pending`, `sent`, `delivered`, `read` or `failed`; `null` for inbound.
    status: Option<String>,
    /// When the status last changed (unix ms).
    status_ms: Option<i64>,
    /// Why it failed.
    failure: Option<FailureView>,
    /// When it was received or recorded (unix ms).
    created_ms: i64,
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
        }
    }
}

/// A chat's recent messages.
#[derive(Debug, Serialize, ToSchema)]
pub(super) struct MessagesResponse {
    /// The customer's WhatsApp id.
    chat: String,
    /// The bot is paused in this chat until then (unix ms; 9223372036854775807 = until
    /// resumed); `null` when not paused.
    bot_paused_until_ms: Option<i64>,
    /// The last messages, oldest first.
    messages: Vec<MessageView>,
}

/// Pause length; without a body the bot is paused until resumed.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct PauseRequest {
    /// Minutes to pause for; absent = until resumed.
    #[schema(example = 60)]
    minutes: Option<u32>,
}

/// The bot's pause state in a chat.
#[derive(Debug, Serialize, ToSchema)]
pub(super) struct PauseState {
    /// The customer's WhatsApp id.
    chat: String,
    /// Paused until then (unix ms; 9223372036854775807 = until resumed); `null` = answering.
    bot_paused_until_ms: Option<i64>,
}

/// A message for the owner to send.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct SendRequest {
    /// The text, 1 to 4096 characters.
    #[schema(example = "Hi, this is Anna from Acme: your order ships today.")]
    text: String,
}

/// A message accepted for sending.
#[derive(Debug, Serialize, ToSchema)]
pub(super) struct SendAccepted {
    /// The recorded outbound message's id (see the messages route for its status).
    outbound_id: i64,
}

/// The path of a conversation's routes: `/tenants/{id}/conversations/{wa_id}/…`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Path)]
pub(super) struct ConversationPath {
    /// tenant id
    id: String,
    /// the customer's WhatsApp id
    wa_id: String,
}

impl ConversationPath {
    /// The tenant and chat, validated.
    fn ids(self) -> Result<(TenantId, ChatId), AdminError> {
        Ok((tenant_id("id", self.id)?, chat_id(self.wa_id)?))
    }
}

/// A chat's last messages, both directions, oldest first.
#[utoipa::path(
    get, path = "/tenants/{id}/conversations/{wa_id}/messages", tag = "conversations",
    params(
        ConversationPath,
        ("limit" = Option<u32>, Query, description = "how many messages, 1 to 1000 (default 100)"),
    ),
    responses(
        (status = 200, description = "the messages", body = MessagesResponse),
        (status = 400, description = "invalid id or limit", body = ErrorBody),
        (status = 401, description = "no or wrong admin token", body = ErrorBody),
        (status = 404, description = "unknown tenant", body = ErrorBody),
        (status = 503, description = "database unavailable", body = ErrorBody),
    )
)]
pub(super) async fn messages(
    State(state): State<AppState>,
    ApiPath(path): ApiPath<ConversationPath>,
    ApiQuery(query): ApiQuery<MessagesQuery>,
) -> Result<Json<MessagesResponse>, AdminError> {
    let (id, chat) = path.ids()?;
    let limit = match query.limit.as_deref() {
        None => DEFAULT_MESSAGE_LIMIT,
        Some(text) => text
            .parse()
            .ok()
            .filter(|n| (1..=MAX_MESSAGE_LIMIT).contains(n))
            .ok_or_else(|| {
                AdminError::invalid(
                    "limit",
                    format!("expected a whole number from 1 to {MAX_MESSAGE_LIMIT}, got {text:?}"),
                )
            })?,
    };
    existing_tenant(&state, &id).await?;
    let conversation = state.store.conversation(&id, &chat).await?;
    let messages = state.store.conversation_messages(&id, &chat, limit).await?;
    Ok(Json(MessagesResponse {
        chat: chat.to_string(),
        bot_paused_until_ms: conversation.and_then(|c| c.bot_paused_until_ms),
        messages: messages.into_iter().map(MessageView::from).collect(),
    }))
}

/// Pauses the bot in a chat, for some minutes or until resumed.
#[utoipa::path(
    post, path = "/tenants/{id}/conversations/{wa_id}/pause", tag = "conversations",
    params(ConversationPath),
    request_body = Option<PauseRequest>,
    responses(
        (status = 200, description = "paused", body = PauseState),
        (status = 400, description = "invalid id or minutes", body = ErrorBody),
        (status = 401, description = "no or wrong admin token", body = ErrorBody),
        (status = 404, description = "unknown tenant", body = ErrorBody),
        (status = 503, description = "node at capacity or tenant unavailable", body = ErrorBody),
    )
)]
pub(super) async fn pause(
    State(state): State<AppState>,
    ApiPath(path): ApiPath<ConversationPath>,
    body: Bytes,
) -> Result<Json<PauseState>, AdminError> {
    let (id, chat) = path.ids()?;
    // The body is optional, so it is read as bytes: no content type needed when empty.
    let request = if body.iter().all(u8::is_ascii_whitespace) {
        PauseRequest::default()
    } else {
        Json::<PauseRequest>::from_bytes(&body)?.0
    };
    let until_ms = match request.minutes {
        None => PAUSED_INDEFINITELY,
        Some(0) => return Err(AdminError::invalid("minutes", "must be at least 1")),
        Some(minutes) => now_ms(&state).saturating_add(i64::from(minutes) * 60_000),
    };
    let paused = set_paused(&state, &id, &chat, Some(until_ms)).await?;
    info!(tenant = %id, chat = %chat, until_ms, "bot paused");
    Ok(paused)
}

/// Resumes the bot in a chat.
#[utoipa::path(
    post, path = "/tenants/{id}/conversations/{wa_id}/resume", tag = "conversations",
    params(ConversationPath),
    responses(
        (status = 200, description = "resumed", body = PauseState),
        (status = 400, description = "invalid id", body = ErrorBody),
        (status = 401, description = "no or wrong admin token", body = ErrorBody),
        (status = 404, description = "unknown tenant", body = ErrorBody),
        (status = 503, description = "node at capacity or tenant unavailable", body = ErrorBody),
    )
)]
pub(super) async fn resume(
    State(state): State<AppState>,
    ApiPath(path): ApiPath<ConversationPath>,
) -> Result<Json<PauseState>, AdminError> {
    let (id, chat) = path.ids()?;
    let resumed = set_paused(&state, &id, &chat, None).await?;
    info!(tenant = %id, chat = %chat, "bot resumed");
    Ok(resumed)
}

/// Has the tenant pause the bot in `chat` until `until_ms`, or resume it (`None`); the new
/// state.
async fn set_paused(
    state: &AppState,
    id: &TenantId,
    chat: &ChatId,
    until_ms: Option<i64>,
) -> Result<Json<PauseState>, AdminError> {
    let command = TenantCommand::SetPaused {
        chat: chat.clone(),
        until_ms,
    };
    state.router.deliver(id, command).await?;
    Ok(Json(PauseState {
        chat: chat.to_string(),
        bot_paused_until_ms: until_ms,
    }))
}

/// Sends a message as the owner: it is recorded, then sent, and the bot steps back in that
/// chat for the takeover period.
#[utoipa::path(
    post, path = "/tenants/{id}/conversations/{wa_id}/send", tag = "conversations",
    params(ConversationPath),
    request_body = SendRequest,
    responses(
        (status = 202, description = "recorded and queued for sending", body = SendAccepted),
        (status = 400, description = "invalid id or text", body = ErrorBody),
        (status = 401, description = "no or wrong admin token", body = ErrorBody),
        (status = 404, description = "unknown tenant", body = ErrorBody),
        (status = 503, description = "node at capacity or tenant unavailable", body = ErrorBody),
    )
)]
pub(super) async fn send(
    State(state): State<AppState>,
    ApiPath(path): ApiPath<ConversationPath>,
    ApiJson(request): ApiJson<SendRequest>,
) -> Result<(StatusCode, Json<SendAccepted>), AdminError> {
    let (id, chat) = path.ids()?;
    if request.text.trim().is_empty() {
        return Err(AdminError::invalid("text", "must not be empty"));
    }
    let chars = request.text.chars().count();
    if chars > MAX_SEND_CHARS {
        return Err(AdminError::invalid(
            "text",
            format!("{chars} characters, at most {MAX_SEND_CHARS} are allowed"),
        ));
    }
    let reply = state
        .router
        .deliver(
            &id,
            TenantCommand::OwnerSend {
                chat: chat.clone(),
                body: request.text,
            },
        )
        .await?;
    let CommandReply::Outbound(outbound_id) = reply else {
        return Err(AdminError::Internal(
            "the tenant did not record the message".to_owned(),
        ));
    };
    info!(tenant = %id, chat = %chat, outbound_id, "owner message accepted");
    Ok((StatusCode::ACCEPTED, Json(SendAccepted { outbound_id })))
}
