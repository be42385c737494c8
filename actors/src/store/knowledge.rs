//! The knowledge base: [`KnowledgeStore`] and its records.

use async_trait::async_trait;
use salesboy_protocol::TenantId;
use serde::{Deserialize, Serialize};

use super::StoreError;

/// A document to add to a tenant's knowledge base ([`KnowledgeStore::add_knowledge`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewKnowledge {
    /// The tenant.
    pub tenant: TenantId,
    /// The document's title.
    pub title: String,
    /// The document split into passages; each is one retrieval unit.
    pub chunks: Vec<String>,
    /// When it was added.
    pub created_ms: i64,
}

/// A knowledge document, without its text ([`KnowledgeStore::list_knowledge`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KnowledgeDocument {
    /// The document's id.
    pub id: i64,
    /// Its title.
    pub title: String,
    /// How many chunks it has.
    pub chunk_count: i64,
    /// How many of them have a vector for the tenant's embedding model; `None` when the node
    /// embeds nothing (full-text search only).
    #[serde(default)]
    pub embedded_chunks: Option<i64>,
    /// How many of them the embedding provider refused (they will not get a vector of this
    /// model; full text still finds them); `None` as for `embedded_chunks`.
    #[serde(default)]
    pub refused_chunks: Option<i64>,
    /// When it was added.
    pub created_ms: i64,
}

/// A passage found by [`KnowledgeStore::search_knowledge`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct KnowledgeHit {
    /// The passage's id.
    #[serde(default)]
    pub chunk_id: i64,
    /// The document the passage belongs to.
    pub document_id: i64,
    /// That document's title.
    pub document_title: String,
    /// The passage.
    pub text: String,
    /// Relevance, higher is better; comparable only within one result list. Hybrid
    /// search: the reciprocal-rank-fusion score.
    pub score: f64,
    /// The passage's 1-based rank in the full-text results, if it was there.
    #[serde(default)]
    pub fulltext_rank: Option<u32>,
    /// Its 1-based rank among the nearest vectors, if it was there (`None` throughout when
    /// no embedding provider is configured or none answered).
    #[serde(default)]
    pub vector_rank: Option<u32>,
}

/// A passage a reply was written from, and why it was chosen: its ranks in the full-text
/// and vector results and its fused score (kept with the reply, shown by the API).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PassageChoice {
    /// The passage's id.
    pub chunk_id: i64,
    /// Its document.
    pub document_id: i64,
    /// That document's title.
    pub document_title: String,
    /// 1-based rank in the full-text results, if it was there.
    pub fulltext_rank: Option<u32>,
    /// 1-based rank among the nearest vectors, if it was there.
    pub vector_rank: Option<u32>,
    /// The search's score (hybrid: the reciprocal-rank-fusion score).
    pub score: f64,
}

// Scores are finite (ranks and similarities, never NaN), so equality is an equivalence.
impl Eq for PassageChoice {}

impl From<&KnowledgeHit> for PassageChoice {
    fn from(hit: &KnowledgeHit) -> Self {
        Self {
            chunk_id: hit.chunk_id,
            document_id: hit.document_id,
            document_title: hit.document_title.clone(),
            fulltext_rank: hit.fulltext_rank,
            vector_rank: hit.vector_rank,
            score: hit.score,
        }
    }
}

/// What a caller knows of a tenant's knowledge base
/// ([`KnowledgeStore::search_knowledge_known`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KnownKnowledge {
    /// When the tenant was created (a tenant deleted and created again is another).
    pub tenant_created_ms: i64,
    /// The knowledge version the caller was last told or read.
    pub version: i64,
}

/// Each tenant's knowledge base: documents split into passages, searched by the responder.
#[async_trait]
pub trait KnowledgeStore: Send + Sync {
    /// Adds a document to the tenant's knowledge base and bumps its knowledge version.
    /// Returns the document's id. [`StoreError::NotFound`] if the tenant does not exist.
    async fn add_knowledge(&self, document: &NewKnowledge) -> Result<i64, StoreError>;

    /// The tenant's documents, oldest first.
    async fn list_knowledge(&self, tenant: &TenantId)
    -> Result<Vec<KnowledgeDocument>, StoreError>;

    /// Deletes a document of the tenant at `at_ms` and bumps its knowledge version. Returns
    /// whether it existed.
    async fn delete_knowledge(
        &self,
        tenant: &TenantId,
        document_id: i64,
        at_ms: i64,
    ) -> Result<bool, StoreError>;

    /// Search of the tenant's passages, best match first, at most `k`; only this tenant's
    /// passages are searched. Full text: any of the question's words (lowercased, longer
    /// than one character) may match; a question without usable words finds nothing by
    /// full text. A store with an embedding model also ranks by the question's meaning and
    /// fuses both rankings (each hit says its ranks).
    async fn search_knowledge(
        &self,
        tenant: &TenantId,
        question: &str,
        k: u32,
    ) -> Result<Vec<KnowledgeHit>, StoreError>;

    /// [`search_knowledge`](Self::search_knowledge) for a caller that knows the tenant's
    /// knowledge version (a responder, told of every change): a store may search passages
    /// it holds at that version or a newer one, of the same tenant, without reading the
    /// tenant's record. The default searches as `search_knowledge` does.
    async fn search_knowledge_known(
        &self,
        tenant: &TenantId,
        question: &str,
        k: u32,
        known: KnownKnowledge,
    ) -> Result<Vec<KnowledgeHit>, StoreError> {
        let _ = known;
        self.search_knowledge(tenant, question, k).await
    }

    /// The tenant's knowledge version: changes whenever its knowledge base changes (the
    /// responder's cache key). 0 for a tenant that does not exist.
    async fn knowledge_version(&self, tenant: &TenantId) -> Result<i64, StoreError>;
}
