//! A tenant's knowledge documents: the passages its assistant answers from.

use salesboy_actors::store::{NewKnowledge, StoreError};
use salesboy_protocol::TenantId;
use serde::{Deserialize, Serialize};
use tracing::info;
use utoipa::ToSchema;

use super::{Api, ApiError};
use crate::knowledge;

/// Largest knowledge upload over HTTP, in bytes (NATS: the server's `max_payload`).
pub const MAX_KNOWLEDGE_BYTES: usize = 8 * 1024 * 1024;

/// Longest knowledge document title, in characters.
const MAX_TITLE_CHARS: usize = 200;

/// A document to add to a tenant's knowledge base.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct KnowledgeRequest {
    /// The document's title.
    #[schema(example = "Delivery and returns", pattern = "\\S")]
    pub title: String,
    /// The document's text; split at its headings into passages of at most 800
    /// characters, each starting with its heading and repeating the end of the one before.
    #[schema(pattern = "\\S")]
    pub text: String,
}

/// A document added.
#[derive(Debug, Serialize, ToSchema)]
pub struct KnowledgeAdded {
    /// The new document's id.
    pub document_id: i64,
    /// How many passages it was split into.
    pub chunks: usize,
    /// The tenant's knowledge version after the change.
    pub knowledge_version: i64,
}

/// A knowledge document, without its text.
#[derive(Debug, Serialize, ToSchema)]
pub struct DocumentView {
    /// The document's id.
    pub id: i64,
    /// Its title.
    pub title: String,
    /// How many passages it has.
    pub chunk_count: i64,
    /// When it was added (unix ms).
    pub created_ms: i64,
    /// How many of its passages have a vector for the tenant's embedding model; `null` when
    /// the node embeds nothing (full-text search only).
    pub embedded_chunks: Option<i64>,
    /// How many of its passages the embedding provider refused (a
    /// `knowledge_embedding_failed` event with `retrying: false` named them); `null` as for
    /// `embedded_chunks`.
    pub refused_chunks: Option<i64>,
    /// `off` (no embedding provider configured), `pending` (some passages wait for their
    /// vector, in the background; full text finds them meanwhile), `done`, or `refused`
    /// (every passage has its vector but the refused ones, which full text alone finds).
    #[schema(example = "done")]
    pub embedding: &'static str,
}

/// The embedding status of a document with `chunks` passages of which `embedded` have a
/// vector and `refused` were refused.
fn embedding_status(chunks: i64, embedded: Option<i64>, refused: Option<i64>) -> &'static str {
    let refused = refused.unwrap_or(0);
    match embedded {
        None => "off",
        Some(embedded) if embedded >= chunks => "done",
        Some(embedded) if refused > 0 && embedded + refused >= chunks => "refused",
        Some(_) => "pending",
    }
}

/// A document deleted.
#[derive(Debug, Serialize, ToSchema)]
pub struct KnowledgeDeleted {
    /// The deleted document's id.
    pub document_id: i64,
    /// The tenant's knowledge version after the change.
    pub knowledge_version: i64,
}

/// Adds a document to the tenant's knowledge base.
pub async fn add(
    api: &Api,
    id: &TenantId,
    request: KnowledgeRequest,
) -> Result<KnowledgeAdded, ApiError> {
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
    let chunks = knowledge::passages(&request.text);
    if chunks.is_empty() {
        return Err(ApiError::invalid("text", "must not be empty"));
    }
    let chunk_count = chunks.len();
    let document = NewKnowledge {
        tenant: id.clone(),
        title: title.to_owned(),
        chunks,
        created_ms: api.now_ms(),
    };
    let document_id = api
        .store
        .add_knowledge(&document)
        .await
        .map_err(|e| match e {
            StoreError::NotFound { .. } => ApiError::UnknownTenant(id.clone()),
            other => other.into(),
        })?;
    // Told before anything else can fail: the document is stored.
    super::tenants::reload(api, id).await;
    let knowledge_version = api.store.knowledge_version(id).await?;
    info!(tenant = %id, document_id, chunks = chunk_count, "knowledge document added");
    Ok(KnowledgeAdded {
        document_id,
        chunks: chunk_count,
        knowledge_version,
    })
}

/// The tenant's knowledge documents, oldest first.
pub async fn list(api: &Api, id: &TenantId) -> Result<Vec<DocumentView>, ApiError> {
    api.existing_tenant(id).await?;
    let documents = api.store.list_knowledge(id).await?;
    Ok(documents
        .into_iter()
        .map(|d| DocumentView {
            id: d.id,
            title: d.title,
            chunk_count: d.chunk_count,
            created_ms: d.created_ms,
            embedded_chunks: d.embedded_chunks,
            refused_chunks: d.refused_chunks,
            embedding: embedding_status(d.chunk_count, d.embedded_chunks, d.refused_chunks),
        })
        .collect())
}

/// Deletes one of the tenant's documents.
pub async fn delete(
    api: &Api,
    id: &TenantId,
    document_id: i64,
) -> Result<KnowledgeDeleted, ApiError> {
    api.existing_tenant(id).await?;
    if !api
        .store
        .delete_knowledge(id, document_id, api.now_ms())
        .await?
    {
        return Err(ApiError::UnknownDocument {
            tenant: id.clone(),
            document: document_id,
        });
    }
    super::tenants::reload(api, id).await;
    let knowledge_version = api.store.knowledge_version(id).await?;
    info!(tenant = %id, document_id, "knowledge document deleted");
    Ok(KnowledgeDeleted {
        document_id,
        knowledge_version,
    })
}
