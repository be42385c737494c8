//! `/tenants/{id}/knowledge…`: the documents a tenant's assistant answers from. The work is
//! in [`crate::api::knowledge`].

use axum::Json;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::StatusCode;
use utoipa_axum::router::{OpenApiRouter, UtoipaMethodRouterExt};
use utoipa_axum::routes;

use super::error::{ApiJson, ApiPath, ErrorBody, TenantRefusals, TokenRefusal};
use super::{AppState, tenant_id};
use crate::api::ApiError;
use crate::api::knowledge::{
    self, DocumentView, KnowledgeAdded, KnowledgeDeleted, KnowledgeRequest, MAX_KNOWLEDGE_BYTES,
};

/// The routes of this module, documented; uploads may be up to [`MAX_KNOWLEDGE_BYTES`].
pub(super) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::default()
        .routes(
            routes!(list_knowledge, add_knowledge)
                .layer(DefaultBodyLimit::max(MAX_KNOWLEDGE_BYTES)),
        )
        .routes(routes!(delete_knowledge))
}

/// Adds a document to a tenant's knowledge base.
#[utoipa::path(
    post, path = "/tenants/{id}/knowledge", tag = "knowledge",
    params(("id" = String, Path, description = "tenant id")),
    request_body = KnowledgeRequest,
    responses(
        (status = 201, description = "document added", body = KnowledgeAdded),
        (status = 400, description = "invalid field", body = ErrorBody),
        TenantRefusals,
        (status = 413, description = "larger than 8 MiB", body = ErrorBody),
    )
)]
pub(super) async fn add_knowledge(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<String>,
    ApiJson(request): ApiJson<KnowledgeRequest>,
) -> Result<(StatusCode, Json<KnowledgeAdded>), ApiError> {
    let id = tenant_id("id", id)?;
    let added = knowledge::add(&state.api(), &id, request).await?;
    Ok((StatusCode::CREATED, Json(added)))
}

/// Lists a tenant's knowledge documents, oldest first.
#[utoipa::path(
    get, path = "/tenants/{id}/knowledge", tag = "knowledge",
    params(("id" = String, Path, description = "tenant id")),
    responses(
        (status = 200, description = "the documents", body = [DocumentView]),
        (status = 400, description = "invalid id", body = ErrorBody),
        TenantRefusals,
    )
)]
pub(super) async fn list_knowledge(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<Vec<DocumentView>>, ApiError> {
    let id = tenant_id("id", id)?;
    Ok(Json(knowledge::list(&state.api(), &id).await?))
}

/// Deletes a knowledge document.
#[utoipa::path(
    delete, path = "/tenants/{id}/knowledge/{doc_id}", tag = "knowledge",
    params(
        ("id" = String, Path, description = "tenant id"),
        ("doc_id" = i64, Path, description = "document id"),
    ),
    responses(
        (status = 200, description = "document deleted", body = KnowledgeDeleted),
        (status = 400, description = "invalid id", body = ErrorBody),
        TokenRefusal,
        (status = 404, description = "unknown tenant or document", body = ErrorBody),
        (status = 503, description = "database unavailable", body = ErrorBody),
    )
)]
pub(super) async fn delete_knowledge(
    State(state): State<AppState>,
    ApiPath((id, doc_id)): ApiPath<(String, String)>,
) -> Result<Json<KnowledgeDeleted>, ApiError> {
    let id = tenant_id("id", id)?;
    let document_id: i64 = doc_id
        .parse()
        .map_err(|_| ApiError::invalid("doc_id", format!("expected a number, got {doc_id:?}")))?;
    Ok(Json(
        knowledge::delete(&state.api(), &id, document_id).await?,
    ))
}
