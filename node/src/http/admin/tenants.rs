//! `/tenants`, `/tenants/{id}` and `/tenants/{id}/session…`: tenants and their WhatsApp
//! numbers, shown without secrets and changed, where a tenant runs, and stopping and
//! starting its WhatsApp session. The work is in [`crate::api::tenants`].

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use serde::Deserialize;

use super::error::{ApiJson, ApiPath, ApiQuery, ErrorBody, TenantRefusals, TokenRefusal};
use super::{AppState, tenant_id};
use crate::api::ApiError;
use crate::api::tenants::{
    self, Saved, SessionStatusView, TenantDeleted, TenantDetail, TenantRequest, TenantUpdate,
    TenantView,
};

/// The operator's routes of this module (every tenant), documented.
pub(super) fn operator_routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::default().routes(routes!(list_tenants, upsert_tenant))
}

/// The routes of this module about one tenant, documented.
pub(super) fn tenant_routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::default()
        .routes(routes!(show_tenant, update_tenant, delete_tenant))
        .routes(routes!(session_status))
        .routes(routes!(session_stop))
        .routes(routes!(session_start))
}

/// Lists every tenant (without live state), ordered by id.
#[utoipa::path(
    get, path = "/tenants", tag = "tenants",
    responses(
        (status = 200, description = "every tenant", body = [TenantView]),
        TokenRefusal,
        (status = 503, description = "database unavailable", body = ErrorBody),
    )
)]
pub(super) async fn list_tenants(
    State(state): State<AppState>,
) -> Result<Json<Vec<TenantView>>, ApiError> {
    Ok(Json(tenants::list(&state.api()).await?))
}

/// Creates or updates a tenant and attaches its WhatsApp number. On update, absent optional
/// fields keep their stored values.
#[utoipa::path(
    post, path = "/tenants", tag = "tenants",
    request_body = TenantRequest,
    responses(
        (status = 201, description = "tenant created", body = TenantDetail),
        (status = 200, description = "tenant updated", body = TenantDetail),
        (status = 400, description = "invalid field", body = ErrorBody),
        TokenRefusal,
        (status = 409, description = "the number belongs to another tenant", body = ErrorBody),
        (status = 503, description = "database unavailable", body = ErrorBody),
    )
)]
pub(super) async fn upsert_tenant(
    State(state): State<AppState>,
    ApiJson(request): ApiJson<TenantRequest>,
) -> Result<(StatusCode, Json<TenantDetail>), ApiError> {
    let (saved, tenant) = tenants::upsert(&state.api(), request).await?;
    let status = match saved {
        Saved::Created => StatusCode::CREATED,
        Saved::Updated => StatusCode::OK,
    };
    Ok((status, Json(tenant)))
}

/// One tenant with the live state of its actors.
#[utoipa::path(
    get, path = "/tenants/{id}", tag = "tenants",
    params(("id" = String, Path, description = "tenant id")),
    responses(
        (status = 200, description = "the tenant", body = TenantDetail),
        (status = 400, description = "invalid id", body = ErrorBody),
        TenantRefusals,
    )
)]
pub(super) async fn show_tenant(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<TenantDetail>, ApiError> {
    let id = tenant_id("id", id)?;
    Ok(Json(tenants::get(&state.api(), &id).await?))
}

/// Changes an existing tenant (what `tenant.update` does on NATS): absent fields keep their
/// stored values; a number is given with its access token.
#[utoipa::path(
    patch, path = "/tenants/{id}", tag = "tenants",
    params(("id" = String, Path, description = "tenant id")),
    request_body = TenantUpdate,
    responses(
        (status = 200, description = "the tenant as changed", body = TenantDetail),
        (status = 400, description = "invalid id or field", body = ErrorBody),
        TenantRefusals,
        (status = 409, description = "the number belongs to another tenant", body = ErrorBody),
    )
)]
pub(super) async fn update_tenant(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<String>,
    ApiJson(request): ApiJson<TenantUpdate>,
) -> Result<Json<TenantDetail>, ApiError> {
    let id = tenant_id("id", id)?;
    Ok(Json(tenants::update(&state.api(), &id, request).await?))
}

/// Where a tenant runs (node, epoch, moving or idle) and, when this node hosts it, its
/// WhatsApp session's state.
#[utoipa::path(
    get, path = "/tenants/{id}/session", tag = "tenants",
    params(("id" = String, Path, description = "tenant id")),
    responses(
        (status = 200, description = "the tenant's session status", body = SessionStatusView),
        (status = 400, description = "invalid id", body = ErrorBody),
        TenantRefusals,
    )
)]
pub(super) async fn session_status(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<SessionStatusView>, ApiError> {
    let id = tenant_id("id", id)?;
    Ok(Json(tenants::session_status(&state.api(), &id).await?))
}

/// Stops the tenant's WhatsApp session: stored first (it holds across restarts and
/// failovers), then the tenant stops wherever it runs. It neither sends nor answers until
/// started; inbound messages are still persisted. Answers the session status (`stopped`).
#[utoipa::path(
    post, path = "/tenants/{id}/session/stop", tag = "tenants",
    params(("id" = String, Path, description = "tenant id")),
    responses(
        (status = 200, description = "the session is stopped", body = SessionStatusView),
        (status = 400, description = "invalid id", body = ErrorBody),
        TenantRefusals,
    )
)]
pub(super) async fn session_stop(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<SessionStatusView>, ApiError> {
    let id = tenant_id("id", id)?;
    Ok(Json(tenants::session_stop(&state.api(), &id).await?))
}

/// Runs the tenant's WhatsApp session again: the tenant is activated and answers what came
/// in while it was stopped (within 24 hours) and sends what is pending. Answers the session
/// status.
#[utoipa::path(
    post, path = "/tenants/{id}/session/start", tag = "tenants",
    params(("id" = String, Path, description = "tenant id")),
    responses(
        (status = 200, description = "the session runs", body = SessionStatusView),
        (status = 400, description = "invalid id", body = ErrorBody),
        TenantRefusals,
    )
)]
pub(super) async fn session_start(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<SessionStatusView>, ApiError> {
    let id = tenant_id("id", id)?;
    Ok(Json(tenants::session_start(&state.api(), &id).await?))
}

/// `?erase_data=` of the delete route.
#[derive(Debug, Deserialize)]
pub(super) struct DeleteQuery {
    erase_data: Option<String>,
}

/// Deletes a tenant: it stops wherever it runs, its numbers are freed and it leaves the
/// cluster directory. Its conversations, messages, knowledge, usage and events are kept
/// (creating the same id again takes them back) unless `erase_data=true` erases them.
#[utoipa::path(
    delete, path = "/tenants/{id}", tag = "tenants",
    params(
        ("id" = String, Path, description = "tenant id"),
        ("erase_data" = Option<bool>, Query, description = "erase the tenant's data too (default false: keep it)"),
    ),
    responses(
        (status = 200, description = "the tenant is deleted", body = TenantDeleted),
        (status = 400, description = "invalid id or erase_data", body = ErrorBody),
        TenantRefusals,
    )
)]
pub(super) async fn delete_tenant(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<String>,
    ApiQuery(query): ApiQuery<DeleteQuery>,
) -> Result<Json<TenantDeleted>, ApiError> {
    let id = tenant_id("id", id)?;
    let erase_data = match query.erase_data.as_deref() {
        None | Some("false") => false,
        Some("true") => true,
        Some(other) => {
            return Err(ApiError::invalid(
                "erase_data",
                format!("expected true or false, got {other:?}"),
            ));
        }
    };
    Ok(Json(tenants::delete(&state.api(), &id, erase_data).await?))
}
