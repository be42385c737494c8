//! `/tenants/{id}/tokens…`: a tenant's API tokens, made, listed and revoked by the operator
//! (admin token only). The work is in [`crate::api::tokens`].

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::error::{ApiPath, ErrorBody, TenantRefusals, TokenRefusal, optional_json};
use super::{AppState, tenant_id};
use crate::api::ApiError;
use crate::api::tokens::{self, NewTokenView, TokenRequest, TokenView};

/// The routes of this module, documented.
pub(super) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::default()
        .routes(routes!(list_tokens, create_token))
        .routes(routes!(delete_token))
}

/// Makes an API token for the tenant: it reads and changes only this tenant. The answer is
/// the only time the token is shown.
#[utoipa::path(
    post, path = "/tenants/{id}/tokens", tag = "tokens",
    params(("id" = String, Path, description = "tenant id")),
    request_body(content = Option<TokenRequest>, description = "optional; `{}` or no body makes an unnamed token"),
    responses(
        (status = 201, description = "token made (shown once)", body = NewTokenView),
        (status = 400, description = "invalid field", body = ErrorBody),
        TenantRefusals,
    )
)]
pub(super) async fn create_token(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<String>,
    body: Bytes,
) -> Result<(StatusCode, Json<NewTokenView>), ApiError> {
    let id = tenant_id("id", id)?;
    let request: TokenRequest = optional_json(&body)?;
    let made = tokens::create(&state.api(), &id, request).await?;
    Ok((StatusCode::CREATED, Json(made)))
}

/// Lists the tenant's API tokens, oldest first, without the tokens themselves.
#[utoipa::path(
    get, path = "/tenants/{id}/tokens", tag = "tokens",
    params(("id" = String, Path, description = "tenant id")),
    responses(
        (status = 200, description = "the tokens, without secrets", body = [TokenView]),
        (status = 400, description = "invalid id", body = ErrorBody),
        TenantRefusals,
    )
)]
pub(super) async fn list_tokens(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<Vec<TokenView>>, ApiError> {
    let id = tenant_id("id", id)?;
    Ok(Json(tokens::list(&state.api(), &id).await?))
}

/// Revokes one of the tenant's API tokens: it stops working at once.
#[utoipa::path(
    delete, path = "/tenants/{id}/tokens/{token_id}", tag = "tokens",
    params(
        ("id" = String, Path, description = "tenant id"),
        ("token_id" = String, Path, description = "the token's id"),
    ),
    responses(
        (status = 204, description = "token revoked"),
        (status = 400, description = "invalid id", body = ErrorBody),
        TokenRefusal,
        (status = 404, description = "unknown tenant or token", body = ErrorBody),
        (status = 503, description = "database unavailable", body = ErrorBody),
    )
)]
pub(super) async fn delete_token(
    State(state): State<AppState>,
    ApiPath((id, token_id)): ApiPath<(String, String)>,
) -> Result<StatusCode, ApiError> {
    let id = tenant_id("id", id)?;
    tokens::delete(&state.api(), &id, &token_id).await?;
    Ok(StatusCode::NO_CONTENT)
}
