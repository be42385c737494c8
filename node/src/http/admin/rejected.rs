//! `/tenants/{id}/webhook/rejected`: items of Meta's webhook deliveries that could not be
//! read. The work is in [`crate::api::rejected`].

use axum::Json;
use axum::extract::State;
use serde::Deserialize;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::error::{ApiPath, ApiQuery, ErrorBody, TenantRefusals};
use super::{AppState, tenant_id};
use crate::api::ApiError;
use crate::api::conversations::invalid_limit;
use crate::api::rejected::{self, RejectedItemView};

/// The routes of this module, documented.
pub(super) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::default().routes(routes!(list))
}

/// `?limit=` and `?before=` of the rejected items route.
#[derive(Debug, Deserialize)]
pub(super) struct RejectedQuery {
    limit: Option<String>,
    before: Option<String>,
}

/// A tenant's rejected webhook items, newest first.
#[utoipa::path(
    get, path = "/tenants/{id}/webhook/rejected", tag = "rejected",
    params(
        ("id" = String, Path, description = "tenant id"),
        ("limit" = Option<u32>, Query, description = "how many items, 1 to 1000 (default 100)"),
        ("before" = Option<i64>, Query, description = "only items older than this one (an item's id): paging back"),
    ),
    responses(
        (status = 200, description = "the rejected items, newest first", body = [RejectedItemView]),
        (status = 400, description = "invalid id, limit or before", body = ErrorBody),
        TenantRefusals,
    )
)]
pub(super) async fn list(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<String>,
    ApiQuery(query): ApiQuery<RejectedQuery>,
) -> Result<Json<Vec<RejectedItemView>>, ApiError> {
    let id = tenant_id("id", id)?;
    let limit = match query.limit {
        None => None,
        Some(text) => Some(text.parse().map_err(|_| invalid_limit(&text))?),
    };
    let before = match query.before {
        None => None,
        Some(text) => Some(text.parse().map_err(|_| {
            ApiError::invalid("before", format!("expected an item id, got {text:?}"))
        })?),
    };
    let answer = rejected::list(&state.api(), &id, before, limit).await?;
    Ok(Json(answer))
}
