//! `/tenants/{id}/usage`: a tenant's LLM tokens and cost and its messages in and out for one
//! month. The work is in [`crate::api::usage`].

use axum::Json;
use axum::extract::State;
use serde::Deserialize;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::error::{ApiPath, ApiQuery, ErrorBody, TenantRefusals};
use super::{AppState, tenant_id};
use crate::api::ApiError;
use crate::api::usage::{self, UsageView};

/// The routes of this module, documented.
pub(super) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::default().routes(routes!(get_usage))
}

/// `?month=` of the usage route.
#[derive(Debug, Deserialize)]
pub(super) struct UsageQuery {
    month: Option<String>,
}

/// A tenant's usage for one calendar month (UTC).
#[utoipa::path(
    get, path = "/tenants/{id}/usage", tag = "usage",
    params(
        ("id" = String, Path, description = "tenant id"),
        ("month" = Option<String>, Query, description = "the month, YYYY-MM (UTC); default the current month"),
    ),
    responses(
        (status = 200, description = "the month's usage", body = UsageView),
        (status = 400, description = "invalid id or month", body = ErrorBody),
        TenantRefusals,
    )
)]
pub(super) async fn get_usage(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<String>,
    ApiQuery(query): ApiQuery<UsageQuery>,
) -> Result<Json<UsageView>, ApiError> {
    let id = tenant_id("id", id)?;
    let answer = usage::get(&state.api(), &id, query.month.as_deref()).await?;
    Ok(Json(answer))
}
