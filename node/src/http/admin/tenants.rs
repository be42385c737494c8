//! `/tenants`, `/tenants/{id}` and `/tenants/{id}/session`: tenants and their WhatsApp
//! numbers, shown without secrets, and where a tenant runs. The work is in
//! [`crate::api::tenants`].

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::error::{ApiJson, ApiPath, ErrorBody, TenantRefusals, TokenRefusal};
use super::{AppState, tenant_id};
use crate::api::ApiError;
use crate::api::tenants::{
    self, Saved, SessionStatusView, TenantDetail, TenantRequest, TenantView,
};

/// The operator's routes of this module (every tenant), documented.
pub(super) fn operator_routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::default().routes(routes!(list_tenants, upsert_tenant))
}

/// The routes of this module about one tenant, documented.
pub(super) fn tenant_routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::default()
        .routes(routes!(show_tenant))
        .routes(routes!(session_status))
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
