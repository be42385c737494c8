//! `/tenants/{id}/conversations` and `/tenants/{id}/conversations/{wa_id}/…`: a tenant's
//! conversations, a chat's messages, bot pause and resume, owner sends. The work is in
//! [`crate::api::conversations`].

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use salesboy_protocol::{ChatId, TenantId};
use serde::Deserialize;
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::error::{
    ApiJson, ApiPath, ApiQuery, ErrorBody, TenantRefusals, TokenRefusal, optional_json,
};
use super::{AppState, chat_id, tenant_id};
use crate::api::ApiError;
use crate::api::content::SendRequest;
use crate::api::conversations::{
    self, ConversationView, MessagesResponse, PauseState, SendAccepted, invalid_limit,
};

/// The routes of this module, documented.
pub(super) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::default()
        .routes(routes!(list))
        .routes(routes!(messages))
        .routes(routes!(pause))
        .routes(routes!(resume))
        .routes(routes!(send))
}

/// `?limit=` and `?after=` of the conversations route.
#[derive(Debug, Deserialize)]
pub(super) struct ListQuery {
    limit: Option<String>,
    after: Option<String>,
}

/// `?limit=` and `?before=` of the messages route.
#[derive(Debug, Deserialize)]
pub(super) struct MessagesQuery {
    limit: Option<String>,
    before: Option<String>,
}

/// Pause length; without a body the bot is paused until resumed.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct PauseRequest {
    /// Minutes to pause for, at most a year; absent = until resumed.
    // The maximum is `api::conversations::MAX_PAUSE_MINUTES` (the attribute takes a literal).
    #[schema(example = 60, minimum = 1, maximum = 525_600)]
    minutes: Option<u32>,
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
    fn ids(self) -> Result<(TenantId, ChatId), ApiError> {
        Ok((tenant_id("id", self.id)?, chat_id(self.wa_id)?))
    }
}

/// A tenant's conversations, the most recent inbound message first.
#[utoipa::path(
    get, path = "/tenants/{id}/conversations", tag = "conversations",
    params(
        ("id" = String, Path, description = "tenant id"),
        ("limit" = Option<u32>, Query, description = "how many conversations, 1 to 1000 (default 100)"),
        ("after" = Option<String>, Query, description = "only conversations after this chat (the last of the previous page)"),
    ),
    responses(
        (status = 200, description = "the conversations", body = [ConversationView]),
        (status = 400, description = "invalid id, limit or after", body = ErrorBody),
        TenantRefusals,
    )
)]
pub(super) async fn list(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<String>,
    ApiQuery(query): ApiQuery<ListQuery>,
) -> Result<Json<Vec<ConversationView>>, ApiError> {
    let id = tenant_id("id", id)?;
    let limit = match query.limit {
        None => None,
        Some(text) => Some(text.parse().map_err(|_| invalid_limit(&text))?),
    };
    let after = query
        .after
        .map(|a| crate::api::chat_id("after", a))
        .transpose()?;
    let answer = conversations::list(&state.api(), &id, after.as_ref(), limit).await?;
    Ok(Json(answer))
}

/// A chat's last messages, both directions, oldest first.
#[utoipa::path(
    get, path = "/tenants/{id}/conversations/{wa_id}/messages", tag = "conversations",
    params(
        ConversationPath,
        ("limit" = Option<u32>, Query, description = "how many messages, 1 to 1000 (default 100)"),
        ("before" = Option<i64>, Query, description = "only messages before this message id (paging back)"),
    ),
    responses(
        (status = 200, description = "the messages", body = MessagesResponse),
        (status = 400, description = "invalid id or limit", body = ErrorBody),
        TenantRefusals,
    )
)]
pub(super) async fn messages(
    State(state): State<AppState>,
    ApiPath(path): ApiPath<ConversationPath>,
    ApiQuery(query): ApiQuery<MessagesQuery>,
) -> Result<Json<MessagesResponse>, ApiError> {
    let (id, chat) = path.ids()?;
    let limit = match query.limit {
        None => None,
        Some(text) => Some(text.parse().map_err(|_| invalid_limit(&text))?),
    };
    let before = match query.before {
        None => None,
        Some(text) => Some(text.parse().map_err(|_| {
            ApiError::invalid("before", format!("expected a message id, got {text:?}"))
        })?),
    };
    let answer = conversations::messages(&state.api(), &id, &chat, before, limit).await?;
    Ok(Json(answer))
}

/// Pauses the bot in a chat, for some minutes or until resumed.
#[utoipa::path(
    post, path = "/tenants/{id}/conversations/{wa_id}/pause", tag = "conversations",
    params(ConversationPath),
    request_body = Option<PauseRequest>,
    responses(
        (status = 200, description = "paused", body = PauseState),
        (status = 400, description = "invalid id or minutes", body = ErrorBody),
        TokenRefusal,
        (status = 404, description = "unknown tenant", body = ErrorBody),
        (status = 409, description = "the tenant's WhatsApp session is stopped", body = ErrorBody),
        (status = 503, description = "node at capacity or tenant unavailable", body = ErrorBody),
    )
)]
pub(super) async fn pause(
    State(state): State<AppState>,
    ApiPath(path): ApiPath<ConversationPath>,
    body: Bytes,
) -> Result<Json<PauseState>, ApiError> {
    let (id, chat) = path.ids()?;
    let request: PauseRequest = optional_json(&body)?;
    let paused = conversations::pause(&state.api(), &id, &chat, request.minutes).await?;
    Ok(Json(paused))
}

/// Resumes the bot in a chat.
#[utoipa::path(
    post, path = "/tenants/{id}/conversations/{wa_id}/resume", tag = "conversations",
    params(ConversationPath),
    responses(
        (status = 200, description = "resumed", body = PauseState),
        (status = 400, description = "invalid id", body = ErrorBody),
        TokenRefusal,
        (status = 404, description = "unknown tenant", body = ErrorBody),
        (status = 409, description = "the tenant's WhatsApp session is stopped", body = ErrorBody),
        (status = 503, description = "node at capacity or tenant unavailable", body = ErrorBody),
    )
)]
pub(super) async fn resume(
    State(state): State<AppState>,
    ApiPath(path): ApiPath<ConversationPath>,
) -> Result<Json<PauseState>, ApiError> {
    let (id, chat) = path.ids()?;
    Ok(Json(conversations::resume(&state.api(), &id, &chat).await?))
}

/// Sends a message as the owner (exactly one of `text`, `template`, `interactive`, `image`,
/// `document`): it is recorded, then sent, and the bot steps back in that chat for the
/// takeover period.
#[utoipa::path(
    post, path = "/tenants/{id}/conversations/{wa_id}/send", tag = "conversations",
    params(ConversationPath),
    request_body = SendRequest,
    responses(
        (status = 202, description = "recorded and queued for sending", body = SendAccepted),
        (status = 400, description = "invalid id or client_ref; not exactly one of text, template, interactive, image, document; content beyond the Cloud API's limits", body = ErrorBody),
        TokenRefusal,
        (status = 404, description = "unknown tenant", body = ErrorBody),
        (status = 409, description = "the tenant's WhatsApp session is stopped", body = ErrorBody),
        (status = 503, description = "node at capacity or tenant unavailable", body = ErrorBody),
    )
)]
pub(super) async fn send(
    State(state): State<AppState>,
    ApiPath(path): ApiPath<ConversationPath>,
    ApiJson(request): ApiJson<SendRequest>,
) -> Result<(StatusCode, Json<SendAccepted>), ApiError> {
    let (id, chat) = path.ids()?;
    let api = state.api();
    let accepted = conversations::send(&api, &id, &chat, request).await?;
    Ok((StatusCode::ACCEPTED, Json(accepted)))
}
