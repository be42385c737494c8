//! `/tenants/{id}/webhooks…`: a tenant's HTTP event webhooks and their dead letters. The
//! work is in [`crate::api::webhooks`]; delivery in [`crate::events::webhooks`].

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use serde::Deserialize;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::error::{ApiJson, ApiPath, ApiQuery, ErrorBody, TenantRefusals, optional_json};
use super::{AppState, tenant_id};
use crate::api::ApiError;
use crate::api::webhooks::{
    self, DeadLetterView, RedeliverRequest, Redelivered, WebhookCreated, WebhookDeleted,
    WebhookRequest, WebhookView,
};

/// The routes of this module, documented.
pub(super) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::default()
        .routes(routes!(list_webhooks, add_webhook))
        .routes(routes!(delete_webhook))
        .routes(routes!(dead_letters))
        .routes(routes!(redeliver))
}

/// `?limit=` of the dead letters route.
#[derive(Debug, Deserialize)]
pub(super) struct DeadLettersQuery {
    limit: Option<String>,
}

/// Adds an event webhook: the tenant's events are POSTed to `url`, signed with the secret.
#[utoipa::path(
    post, path = "/tenants/{id}/webhooks", tag = "webhooks",
    params(("id" = String, Path, description = "tenant id")),
    request_body = WebhookRequest,
    responses(
        (status = 201, description = "webhook added; the only answer with its secret", body = WebhookCreated),
        (status = 400, description = "invalid url, kinds or secret", body = ErrorBody),
        TenantRefusals,
    )
)]
pub(super) async fn add_webhook(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<String>,
    ApiJson(request): ApiJson<WebhookRequest>,
) -> Result<(StatusCode, Json<WebhookCreated>), ApiError> {
    let id = tenant_id("id", id)?;
    let created = webhooks::add(&state.api(), &id, request).await?;
    Ok((StatusCode::CREATED, Json(created)))
}

/// Lists a tenant's event webhooks (without secrets), with what each has still to receive.
#[utoipa::path(
    get, path = "/tenants/{id}/webhooks", tag = "webhooks",
    params(("id" = String, Path, description = "tenant id")),
    responses(
        (status = 200, description = "the webhooks", body = [WebhookView]),
        (status = 400, description = "invalid id", body = ErrorBody),
        TenantRefusals,
    )
)]
pub(super) async fn list_webhooks(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<Vec<WebhookView>>, ApiError> {
    let id = tenant_id("id", id)?;
    Ok(Json(webhooks::list(&state.api(), &id).await?))
}

/// Removes an event webhook and the events it had still to receive.
#[utoipa::path(
    delete, path = "/tenants/{id}/webhooks/{webhook_id}", tag = "webhooks",
    params(
        ("id" = String, Path, description = "tenant id"),
        ("webhook_id" = String, Path, description = "webhook id"),
    ),
    responses(
        (status = 200, description = "webhook removed", body = WebhookDeleted),
        (status = 400, description = "invalid id", body = ErrorBody),
        TenantRefusals,
    )
)]
pub(super) async fn delete_webhook(
    State(state): State<AppState>,
    ApiPath((id, webhook_id)): ApiPath<(String, String)>,
) -> Result<Json<WebhookDeleted>, ApiError> {
    let id = tenant_id("id", id)?;
    Ok(Json(
        webhooks::delete(&state.api(), &id, &webhook_id).await?,
    ))
}

/// The events a webhook gave up on after its retry window, oldest first.
#[utoipa::path(
    get, path = "/tenants/{id}/webhooks/{webhook_id}/dead-letters", tag = "webhooks",
    params(
        ("id" = String, Path, description = "tenant id"),
        ("webhook_id" = String, Path, description = "webhook id"),
        ("limit" = Option<u32>, Query, description = "how many, 1 to 1000 (default 1000)"),
    ),
    responses(
        (status = 200, description = "the dead letters", body = [DeadLetterView]),
        (status = 400, description = "invalid id or limit", body = ErrorBody),
        TenantRefusals,
    )
)]
pub(super) async fn dead_letters(
    State(state): State<AppState>,
    ApiPath((id, webhook_id)): ApiPath<(String, String)>,
    ApiQuery(query): ApiQuery<DeadLettersQuery>,
) -> Result<Json<Vec<DeadLetterView>>, ApiError> {
    let id = tenant_id("id", id)?;
    let limit =
        match query.limit {
            None => None,
            Some(text) => Some(text.parse().map_err(|_| {
                ApiError::invalid("limit", format!("expected a number, got {text:?}"))
            })?),
        };
    Ok(Json(
        webhooks::dead_letters(&state.api(), &id, &webhook_id, limit).await?,
    ))
}

/// Delivers a webhook's dead letters again (all, or one event's), with a new retry window.
#[utoipa::path(
    post, path = "/tenants/{id}/webhooks/{webhook_id}/dead-letters/redeliver", tag = "webhooks",
    params(
        ("id" = String, Path, description = "tenant id"),
        ("webhook_id" = String, Path, description = "webhook id"),
    ),
    request_body(content = Option<RedeliverRequest>, description = "optional: one event's id"),
    responses(
        (status = 200, description = "dead letters queued again", body = Redelivered),
        (status = 400, description = "invalid id or body", body = ErrorBody),
        TenantRefusals,
    )
)]
pub(super) async fn redeliver(
    State(state): State<AppState>,
    ApiPath((id, webhook_id)): ApiPath<(String, String)>,
    body: Bytes,
) -> Result<Json<Redelivered>, ApiError> {
    let id = tenant_id("id", id)?;
    let request: RedeliverRequest = optional_json(&body)?;
    Ok(Json(
        webhooks::redeliver(&state.api(), &id, &webhook_id, request).await?,
    ))
}
