//! `/tenants/{id}/knowledge…`: the documents a tenant's assistant answers from.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use salesboy_actors::store::{NewKnowledge, StoreError};
use serde::{Deserialize, Serialize};
use tracing::info;
use utoipa::ToSchema;

use super::error::{ApiError, ApiJson, ApiPath, ErrorBody};
use super::{AppState, existing_tenant, now_ms, tenant_id};
use crate::knowledge;

/// Largest knowledge upload, in bytes.
pub const MAX_KNOWLEDGE_BYTES: usize = 8 * 1024 * 1024;

/// Longest knowledge document title, in characters.
const MAX_TITLE_CHARS: usize = 200;

/// A document to add to a tenant's knowledge base.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct KnowledgeRequest {
    /// The document's title.
    #[schema(example = "Delivery and returns")]
    title: String,
    /// The document's text; split into passages of about 500–800 characters.
    text: String,
}

/// A document added.
#[derive(Debug, Serialize, ToSchema)]
pub(super) struct KnowledgeAdded {
    /// The new document's id.
    document_id: i64,
    /// How many passages it was split into.
    chunks: usize,
    /// The tenant's knowledge version after the change.
    knowledge_version: i64,
}

/// A knowledge document, without its text.
#[derive(Debug, Serialize, ToSchema)]
pub(super) struct DocumentView {
    /// The document's id.
    id: i64,
    /// Its title.
    title: String,
    /// How many passages it has.
    chunk_count: i64,
    /// When it was added (unix ms).
    created_ms: i64,
}

/// A document deleted.
#[derive(Debug, Serialize, ToSchema)]
pub(super) struct KnowledgeDeleted {
    /// The deleted document's id.
    document_id: i64,
    /// The tenant's knowledge version after the change.
    knowledge_version: i64,
}

/// Adds a document to a tenant's knowledge base.
#[utoipa::path(
    post, path = "/api/tenants/{id}/knowledge", tag = "knowledge",
    params(("id" = String, Path, description = "tenant id")),
    request_body = KnowledgeRequest,
    responses(
        (status = 201, description = "document added", body = KnowledgeAdded),
        (status = 400, description = "invalid field", body = ErrorBody),
        (status = 401, description = "no or wrong admin token", body = ErrorBody),
        (status = 404, description = "unknown tenant", body = ErrorBody),
        (status = 413, description = "larger than 8 MiB", body = ErrorBody),
        (status = 503, description = "database unavailable", body = ErrorBody),
    )
)]
pub(super) async fn add_knowledge(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<String>,
    ApiJson(request): ApiJson<KnowledgeRequest>,
) -> Result<(StatusCode, Json<KnowledgeAdded>), ApiError> {
    let id = tenant_id("id", id)?;
    let title = request.title.trim();
    if title.is_empty() {
        return Err(ApiError::invalid("title", "must not be empty"));
    }
    if title.chars().count() > MAX_TITLE_CHARS {
        return Err(ApiError::invalid(
            "title",
            format!("at most {MAX_TITLE_CHARS} characters"),
        ));
    }
    let chunks = knowledge::chunk(&request.text);
    if chunks.is_empty() {
        return Err(ApiError::invalid("text", "must not be empty"));
    }
    let chunk_count = chunks.len();
    let document = NewKnowledge {
        tenant: id.clone(),
        title: title.to_owned(),
        chunks,
        created_ms: now_ms(&state),
    };
    let document_id = state
        .store
        .add_knowledge(&document)
        .await
        .map_err(|e| match e {
            StoreError::NotFound { .. } => ApiError::unknown_tenant(&id),
            other => other.into(),
        })?;
    let knowledge_version = state.store.knowledge_version(&id).await?;
    info!(tenant = %id, document_id, chunks = chunk_count, "knowledge document added");
    Ok((
        StatusCode::CREATED,
        Json(KnowledgeAdded {
            document_id,
            chunks: chunk_count,
            knowledge_version,
        }),
    ))
}

/// Lists a tenant's knowledge documents, oldest first.
#[utoipa::path(
    get, path = "/api/tenants/{id}/knowledge", tag = "knowledge",
    params(("id" = String, Path, description = "tenant id")),
    responses(
        (status = 200, description = "the documents", body = [DocumentView]),
        (status = 400, description = "invalid id", body = ErrorBody),
        (status = 401, description = "no or wrong admin token", body = ErrorBody),
        (status = 404, description = "unknown tenant", body = ErrorBody),
        (status = 503, description = "database unavailable", body = ErrorBody),
    )
)]
pub(super) async fn list_knowledge(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<Vec<DocumentView>>, ApiError> {
    let id = tenant_id("id", id)?;
    existing_tenant(&state, &id).await?;
    let documents = state.store.list_knowledge(&id).await?;
    Ok(Json(
        documents
            .into_iter()
            .map(|d| DocumentView {
                id: d.id,
                title: d.title,
                chunk_count: d.chunk_count,
                created_ms: d.created_ms,
            })
            .collect(),
    ))
}

/// Deletes a knowledge document.
#[utoipa::path(
    delete, path = "/api/tenants/{id}/knowledge/{doc_id}", tag = "knowledge",
    params(
        ("id" = String, Path, description = "tenant id"),
        ("doc_id" = i64, Path, description = "document id"),
    ),
    responses(
        (status = 200, description = "document deleted", body = KnowledgeDeleted),
        (status = 400, description = "invalid id", body = ErrorBody),
        (status = 401, description = "no or wrong admin token", body = ErrorBody),
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
    existing_tenant(&state, &id).await?;
    if !state.store.delete_knowledge(&id, document_id).await? {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            format!("unknown knowledge document {document_id} of tenant {id}"),
        ));
    }
    let knowledge_version = state.store.knowledge_version(&id).await?;
    info!(tenant = %id, document_id, "knowledge document deleted");
    Ok(Json(KnowledgeDeleted {
        document_id,
        knowledge_version,
    }))
}
