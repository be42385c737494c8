//! Passage vectors (`knowledge_vectors`, migration 0011) and the hybrid search over them
//! (architecture §11, [`crate::retrieval`]).
//!
//! A chunk is *pending* while it has no vector for its tenant's model (the tenant's
//! `embedding_model`, else the node's default; a model the node has no provider for is left
//! pending): [`embed_pending`] embeds a batch of pending chunks of one model (oldest first,
//! any tenant), stores their vectors
//! (dropping those of other models for the same chunks) and records each tenant's share of
//! the usage; when no provider answers nothing is written, so the chunks stay pending, and
//! each tenant concerned gets one `knowledge_embedding_failed` event per failure streak. A
//! batch refused as a request (not an outage) is tried a passage at a time: passages refused
//! on their own while others are embedded are recorded in `knowledge_embedding_refusals`
//! (not pending any more; an event with `retrying: false`).
//! [`hybrid_search`] fuses the full-text ranking with the nearest vectors of the tenant's
//! cached index.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use salesboy_actors::ports::LlmError;
use salesboy_actors::store::{KnowledgeHit, LlmUsage};
use salesboy_protocol::TenantId;
use salesboy_protocol::events::Event;
use salesboy_protocol::subjects::EventKind;
use serde_json::json;
use sqlx::Row;

use super::decode::{get, id};
use super::error::Failure;
use super::{Db, activity, knowledge, outbox};
use crate::adapters::embedding::{EmbedOutcome, EmbedPurpose};
use crate::retrieval::fusion::fuse;
use crate::retrieval::index::{TenantIndex, decode, encode};
use crate::retrieval::text_index::TextIndex;
use crate::retrieval::{CachedIndex, CachedText, Retrieval, Stamp};

/// What one embedding pass did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EmbedPass {
    /// Nothing was pending.
    Idle,
    /// This many chunks were embedded (more may be pending).
    Embedded(usize),
    /// No provider answered (`skipped`: none was even asked, all resting or over budget);
    /// the chunks stay pending.
    Failed {
        /// The chunks of the batch.
        pending: usize,
        /// Whether every provider was skipped rather than asked.
        skipped: bool,
    },
}

/// A chunk waiting for its vector.
#[derive(Debug)]
struct Pending {
    id: i64,
    document_id: i64,
    tenant: TenantId,
    text: String,
    model: String,
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// Embeds one batch of pending chunks (see the module docs).
pub(crate) async fn embed_pending(db: &Db, retrieval: &Retrieval) -> Result<EmbedPass, Failure> {
    let models: Vec<&str> = retrieval.models().collect();
    let batch = models
        .iter()
        .filter_map(|model| retrieval.chain_of(model))
        .map(|chain| chain.batch_size())
        .max()
        .unwrap_or(1);
    // Only the models this node embeds with; `$1` is the default, `$2` the batch.
    let placeholders: Vec<String> = (0..models.len()).map(|i| format!("${}", i + 3)).collect();
    let sql = format!(
        "SELECT c.id, c.document_id, c.tenant_id, c.text, m.model FROM knowledge_chunks c \
         JOIN (SELECT id, COALESCE(embedding_model, $1) AS model FROM tenants) m ON m.id = c.tenant_id \
         WHERE m.model IN ({}) \
         AND NOT EXISTS (SELECT 1 FROM knowledge_vectors v WHERE v.chunk_id = c.id AND v.model = m.model) \
         AND NOT EXISTS (SELECT 1 FROM knowledge_embedding_refusals r WHERE r.chunk_id = c.id AND r.model = m.model) \
         ORDER BY c.id LIMIT $2",
        placeholders.join(", ")
    );
    // Only placeholders are formatted in; the models are bound.
    let mut query = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(retrieval.model())
        .bind(i64::try_from(batch).unwrap_or(i64::MAX));
    for model in &models {
        query = query.bind(*model);
    }
    let rows = query.fetch_all(&db.pool).await?;
    let mut pending = rows
        .iter()
        .map(|row| {
            Ok(Pending {
                id: get(row, "id")?,
                document_id: get(row, "document_id")?,
                tenant: id(row, "tenant_id")?,
                text: get(row, "text")?,
                model: get(row, "model")?,
            })
        })
        .collect::<Result<Vec<_>, Failure>>()?;
    let Some(first) = pending.first() else {
        return Ok(EmbedPass::Idle);
    };
    // One model per pass: the oldest pending chunk's; the others wait for the next pass.
    let model = first.model.clone();
    let Some(chain) = retrieval.chain_of(&model) else {
        return Ok(EmbedPass::Idle);
    };
    pending.retain(|p| p.model == model);
    pending.truncate(chain.batch_size());
    let model = model.as_str();
    let texts: Vec<String> = pending.iter().map(|p| p.text.clone()).collect();
    match chain.embed(&texts, EmbedPurpose::Document).await {
        EmbedOutcome::Embedded {
            embedded,
            provider,
            cost_micros,
            failed,
        } => {
            count_attempts(&failed);
            let batch: Vec<&Pending> = pending.iter().collect();
            let used = Used {
                provider,
                tokens: embedded.tokens,
                cost_micros,
            };
            stored(db, retrieval, model, &batch, &embedded.vectors, &used).await?;
            Ok(EmbedPass::Embedded(pending.len()))
        }
        EmbedOutcome::Exhausted { failed } => {
            count_attempts(&failed);
            let errors: Vec<&LlmError> = failed.iter().filter_map(|a| a.error.as_ref()).collect();
            if errors.is_empty() {
                return Ok(EmbedPass::Failed {
                    pending: pending.len(),
                    skipped: true,
                });
            }
            if pending.len() > 1
                && errors.iter().all(|e| refuses_the_request(e))
                && let Some(pass) = one_by_one(db, retrieval, chain, model, &pending).await?
            {
                return Ok(pass);
            }
            let reason = reason(&errors);
            tracing::warn!(chunks = pending.len(), %reason, "embedding failed, passages stay pending");
            let batch: Vec<&Pending> = pending.iter().collect();
            for (tenant, documents) in documents_by_tenant(&batch) {
                if !retrieval.start_failing(tenant) {
                    continue;
                }
                let event = Event::tenant(
                    EventKind::KnowledgeEmbeddingFailed,
                    tenant.clone(),
                    now_ms(),
                    json!({"document_ids": documents, "model": model, "reason": reason, "retrying": true}),
                );
                let mut tx = db.begin().await?;
                outbox::append(&mut tx, &event).await?;
                tx.commit().await?;
                db.outbox_written();
            }
            Ok(EmbedPass::Failed {
                pending: pending.len(),
                skipped: false,
            })
        }
    }
}

/// What a provider's answer cost.
struct Used {
    provider: String,
    tokens: u64,
    cost_micros: u64,
}

/// Whether `error` refuses the request itself (a bad request, a blocked or oversized
/// text), rather than saying the provider is down, slow or over its budget.
fn refuses_the_request(error: &LlmError) -> bool {
    matches!(
        error,
        LlmError::Failed(_) | LlmError::Blocked(_) | LlmError::TooLarge { .. }
    )
}

fn reason(errors: &[&LlmError]) -> String {
    errors
        .iter()
        .map(|e| e.code())
        .collect::<Vec<_>>()
        .join(", ")
}

/// The documents of `chunks`, by tenant.
fn documents_by_tenant<'a>(chunks: &[&'a Pending]) -> BTreeMap<&'a TenantId, Vec<i64>> {
    let mut by_tenant: BTreeMap<&TenantId, Vec<i64>> = BTreeMap::new();
    for p in chunks {
        let documents = by_tenant.entry(&p.tenant).or_default();
        if !documents.contains(&p.document_id) {
            documents.push(p.document_id);
        }
    }
    by_tenant
}

/// Stores embedded chunks' vectors and records each tenant's share of the usage.
async fn stored(
    db: &Db,
    retrieval: &Retrieval,
    model: &str,
    chunks: &[&Pending],
    vectors: &[Vec<f32>],
    used: &Used,
) -> Result<(), Failure> {
    metrics::counter!("salesboy_embedding_calls_total", "provider" => used.provider.clone(), "outcome" => "ok").increment(1);
    let at_ms = now_ms();
    store_vectors(db, model, chunks, vectors, at_ms).await?;
    let chars_total: usize = chunks
        .iter()
        .map(|p| p.text.chars().count())
        .sum::<usize>()
        .max(1);
    let mut per_tenant: BTreeMap<&TenantId, usize> = BTreeMap::new();
    for p in chunks {
        *per_tenant.entry(&p.tenant).or_default() += p.text.chars().count();
    }
    for (tenant, chars) in per_tenant {
        retrieval.stop_failing(tenant);
        let share =
            |total: u64| (total as u128 * chars as u128).div_ceil(chars_total as u128) as u64;
        let usage = LlmUsage {
            tenant: tenant.clone(),
            provider: used.provider.clone(),
            model: model.to_owned(),
            prompt_tokens: i64::try_from(share(used.tokens)).unwrap_or(i64::MAX),
            completion_tokens: 0,
            cost_micros: i64::try_from(share(used.cost_micros)).unwrap_or(i64::MAX),
            at_ms,
        };
        activity::record_llm_usage(db, &usage).await?;
    }
    Ok(())
}

/// A batch the providers refused as a request is tried a passage at a time. When some are
/// embedded, the ones refused on their own are recorded as refused (no longer pending; the
/// tenant gets a `knowledge_embedding_failed` event with `retrying: false`), so one bad
/// passage cannot hold up every passage behind it. `None` when none was embedded: the
/// refusal is not the passages' own (a wrong model name, a bad key), and the batch stays
/// pending. An outage or a spent budget met on the way leaves the rest for the next pass.
async fn one_by_one(
    db: &Db,
    retrieval: &Retrieval,
    chain: &crate::adapters::embedding::EmbeddingChain,
    model: &str,
    pending: &[Pending],
) -> Result<Option<EmbedPass>, Failure> {
    let mut embedded = 0;
    let mut refused: Vec<(&Pending, String)> = Vec::new();
    for chunk in pending {
        match chain
            .embed(std::slice::from_ref(&chunk.text), EmbedPurpose::Document)
            .await
        {
            EmbedOutcome::Embedded {
                embedded: answer,
                provider,
                cost_micros,
                failed,
            } => {
                count_attempts(&failed);
                let used = Used {
                    provider,
                    tokens: answer.tokens,
                    cost_micros,
                };
                stored(db, retrieval, model, &[chunk], &answer.vectors, &used).await?;
                embedded += 1;
            }
            EmbedOutcome::Exhausted { failed } => {
                count_attempts(&failed);
                let errors: Vec<&LlmError> =
                    failed.iter().filter_map(|a| a.error.as_ref()).collect();
                if errors.is_empty() || !errors.iter().all(|e| refuses_the_request(e)) {
                    break;
                }
                refused.push((chunk, reason(&errors)));
            }
        }
    }
    if embedded == 0 {
        return Ok(None);
    }
    if !refused.is_empty() {
        let at_ms = now_ms();
        let mut tx = db.begin().await?;
        for (chunk, reason) in &refused {
            sqlx::query(
                "INSERT INTO knowledge_embedding_refusals (chunk_id, model, reason, created_ms) \
                 SELECT c.id, $2, $3, $4 FROM knowledge_chunks c WHERE c.id = $1 \
                 ON CONFLICT (chunk_id, model) DO NOTHING",
            )
            .bind(chunk.id)
            .bind(model)
            .bind(reason.as_str())
            .bind(at_ms)
            .execute(&mut *tx)
            .await?;
        }
        let chunks: Vec<&Pending> = refused.iter().map(|(chunk, _)| *chunk).collect();
        for (tenant, documents) in documents_by_tenant(&chunks) {
            let chunk_ids: Vec<i64> = chunks
                .iter()
                .filter(|c| c.tenant == *tenant)
                .map(|c| c.id)
                .collect();
            let reasons: Vec<&str> = refused
                .iter()
                .filter(|(c, _)| c.tenant == *tenant)
                .map(|(_, reason)| reason.as_str())
                .collect();
            tracing::warn!(tenant = %tenant, chunks = chunk_ids.len(), "the embedding provider refused passages; full text still finds them");
            let event = Event::tenant(
                EventKind::KnowledgeEmbeddingFailed,
                tenant.clone(),
                at_ms,
                json!({"document_ids": documents, "chunk_ids": chunk_ids, "model": model,
                       "reason": reasons.join(", "), "retrying": false}),
            );
            outbox::append(&mut tx, &event).await?;
        }
        tx.commit().await?;
        db.outbox_written();
    }
    Ok(Some(EmbedPass::Embedded(embedded)))
}

fn count_attempts(failed: &[salesboy_actors::responder::chain::Attempt]) {
    for attempt in failed {
        let outcome = attempt.error.as_ref().map_or("skipped", |e| e.code());
        metrics::counter!("salesboy_embedding_calls_total", "provider" => attempt.provider.clone(), "outcome" => outcome).increment(1);
    }
}

/// Stores the batch's vectors in one transaction; a chunk deleted meanwhile is skipped.
async fn store_vectors(
    db: &Db,
    model: &str,
    pending: &[&Pending],
    vectors: &[Vec<f32>],
    at_ms: i64,
) -> Result<(), Failure> {
    let mut tx = db.begin().await?;
    for (chunk, vector) in pending.iter().zip(vectors) {
        if vector.is_empty() {
            continue;
        }
        let dimensions = i64::try_from(vector.len()).unwrap_or(i64::MAX);
        sqlx::query(
            "INSERT INTO knowledge_vectors (chunk_id, tenant_id, model, dimensions, vector, created_ms) \
             SELECT c.id, c.tenant_id, $2, $3, $4, $5 FROM knowledge_chunks c WHERE c.id = $1 \
             ON CONFLICT (chunk_id, model) DO NOTHING",
        )
        .bind(chunk.id)
        .bind(model)
        .bind(dimensions)
        .bind(encode(vector))
        .bind(at_ms)
        .execute(&mut *tx)
        .await?;
        sqlx::query("DELETE FROM knowledge_vectors WHERE chunk_id = $1 AND model <> $2")
            .bind(chunk.id)
            .bind(model)
            .execute(&mut *tx)
            .await?;
    }
    // Every tenant of the batch: its cached vector indexes are stale now (on every node).
    let mut tenants: Vec<&TenantId> = pending.iter().map(|chunk| &chunk.tenant).collect();
    tenants.sort();
    tenants.dedup();
    for tenant in tenants {
        sqlx::query("UPDATE tenants SET vectors_version = vectors_version + 1 WHERE id = $1")
            .bind(tenant.as_str())
            .execute(&mut *tx)
            .await?;
    }
    tx.commit().await?;
    Ok(())
}

/// How many chunks of each of the tenant's documents have a vector for `model`, and how
/// many were refused.
pub(crate) async fn embedded_counts(
    db: &Db,
    tenant: &TenantId,
    model: &str,
) -> Result<HashMap<i64, (i64, i64)>, Failure> {
    let rows = sqlx::query(
        "SELECT c.document_id, \
         COUNT(v.chunk_id) AS embedded, COUNT(r.chunk_id) AS refused FROM knowledge_chunks c \
         LEFT JOIN knowledge_vectors v ON v.chunk_id = c.id AND v.model = $2 \
         LEFT JOIN knowledge_embedding_refusals r ON r.chunk_id = c.id AND r.model = $3 \
         WHERE c.tenant_id = $1 GROUP BY c.document_id",
    )
    .bind(tenant.as_str())
    .bind(model)
    .bind(model)
    .fetch_all(&db.reader)
    .await?;
    rows.iter()
        .map(|row| {
            Ok((
                get(row, "document_id")?,
                (get(row, "embedded")?, get(row, "refused")?),
            ))
        })
        .collect()
}

/// What a search needs to know of a tenant, in one query: its embedding model (if this node
/// has a provider for it) and its [`Stamp`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct TenantSearchState {
    /// The tenant's model; `None` when this node has no provider for it.
    pub(crate) model: Option<String>,
    /// What its cached indexes are checked against.
    pub(crate) stamp: Stamp,
}

/// The tenant's search state; `None` for an unknown tenant. One row and one index lookup:
/// no count of the tenant's vectors.
pub(crate) async fn tenant_search_state(
    db: &Db,
    retrieval: &Retrieval,
    tenant: &TenantId,
) -> Result<Option<TenantSearchState>, Failure> {
    let row = sqlx::query(
        "SELECT t.embedding_model, t.created_ms, t.knowledge_version, t.vectors_version, \
         (SELECT COALESCE(MAX(v.chunk_id), 0) FROM knowledge_vectors v \
          WHERE v.tenant_id = t.id AND v.model = COALESCE(t.embedding_model, $2)) AS newest \
         FROM tenants t WHERE t.id = $1",
    )
    .bind(tenant.as_str())
    .bind(retrieval.model())
    .fetch_optional(&db.reader)
    .await?;
    let Some(row) = row else {
        return Ok(None);
    };
    let chosen: Option<String> = get(&row, "embedding_model")?;
    Ok(Some(TenantSearchState {
        model: retrieval.model_for(chosen.as_deref()).map(str::to_owned),
        stamp: Stamp {
            tenant_created_ms: get(&row, "created_ms")?,
            knowledge_version: get(&row, "knowledge_version")?,
            vectors_version: get(&row, "vectors_version")?,
            newest_vector: get(&row, "newest")?,
        },
    }))
}

/// The tenant's embedding model and its [`Stamp`]; `None` for an unknown tenant or when this
/// node has no provider for its model.
pub(crate) async fn tenant_model(
    db: &Db,
    retrieval: &Retrieval,
    tenant: &TenantId,
) -> Result<Option<(String, Stamp)>, Failure> {
    Ok(tenant_search_state(db, retrieval, tenant)
        .await?
        .and_then(|state| Some((state.model?, state.stamp))))
}

/// The tenant's full-text index for `stamp`: from the cache, else loaded from
/// its passages and cached. A passage added after the version was read may be in it; the
/// next search reloads at the newer version anyway.
pub(crate) async fn tenant_text_index(
    db: &Db,
    retrieval: &Retrieval,
    tenant: &TenantId,
    stamp: Stamp,
) -> Result<Arc<CachedText>, Failure> {
    if let Some(cached) = retrieval.cached_text(tenant, stamp) {
        return Ok(cached);
    }
    let cached = Arc::new(CachedText {
        stamp,
        index: load_text_index(db, tenant).await?,
    });
    retrieval.cache_text(tenant, Arc::clone(&cached));
    Ok(cached)
}

/// Builds the tenant's full-text index from its passages (no cache).
pub(crate) async fn load_text_index(db: &Db, tenant: &TenantId) -> Result<TextIndex, Failure> {
    let rows =
        sqlx::query("SELECT id, text FROM knowledge_chunks WHERE tenant_id = $1 ORDER BY id")
            .bind(tenant.as_str())
            .fetch_all(&db.reader)
            .await?;
    let mut passages = Vec::with_capacity(rows.len());
    for row in &rows {
        let chunk_id: i64 = get(row, "id")?;
        let text: String = get(row, "text")?;
        passages.push((chunk_id, text));
    }
    Ok(TextIndex::build(
        passages.iter().map(|(id, text)| (*id, text.as_str())),
    ))
}

/// The tenant's index of `model`: from the cache when its stamp is current, else loaded
/// and cached.
pub(crate) async fn tenant_index(
    db: &Db,
    retrieval: &Retrieval,
    tenant: &TenantId,
    model: &str,
    stamp: Stamp,
) -> Result<Arc<CachedIndex>, Failure> {
    if let Some(cached) = retrieval.cached(tenant, model, stamp) {
        return Ok(cached);
    }
    let cached = Arc::new(load_index(db, retrieval, tenant, model, stamp).await?);
    retrieval.cache(tenant, Arc::clone(&cached));
    Ok(cached)
}

/// Loads the tenant's vectors of `model` into an index (no cache).
pub(crate) async fn load_index(
    db: &Db,
    retrieval: &Retrieval,
    tenant: &TenantId,
    model: &str,
    stamp: Stamp,
) -> Result<CachedIndex, Failure> {
    let rows = sqlx::query(
        "SELECT chunk_id, vector FROM knowledge_vectors WHERE tenant_id = $1 AND model = $2 \
         ORDER BY chunk_id",
    )
    .bind(tenant.as_str())
    .bind(model)
    .fetch_all(&db.reader)
    .await?;
    let mut vectors = Vec::with_capacity(rows.len());
    for row in &rows {
        let chunk_id: i64 = get(row, "chunk_id")?;
        let bytes: Vec<u8> = row.try_get("vector")?;
        if let Some(vector) = decode(&bytes) {
            vectors.push((chunk_id, vector));
        }
    }
    // The most common length wins (a model's vectors all have one).
    let mut lengths: HashMap<usize, usize> = HashMap::new();
    for (_, v) in &vectors {
        *lengths.entry(v.len()).or_default() += 1;
    }
    let dimensions = lengths
        .into_iter()
        .max_by_key(|(len, n)| (*n, *len))
        .map_or(0, |(len, _)| len);
    Ok(CachedIndex {
        model: model.to_owned(),
        stamp,
        index: TenantIndex::build(dimensions, vectors, retrieval.settings().int8),
    })
}

/// The tenant's passages `ids`, with their documents' titles.
async fn chunks_by_id(
    db: &Db,
    tenant: &TenantId,
    ids: &[i64],
) -> Result<HashMap<i64, KnowledgeHit>, Failure> {
    if ids.is_empty() {
        return Ok(HashMap::new());
    }
    let placeholders: Vec<String> = (0..ids.len()).map(|i| format!("${}", i + 2)).collect();
    let sql = format!(
        "SELECT c.id AS chunk_id, d.id AS document_id, d.title, c.text \
         FROM knowledge_chunks c JOIN knowledge_documents d ON d.id = c.document_id \
         WHERE c.tenant_id = $1 AND c.id IN ({})",
        placeholders.join(", ")
    );
    // Only placeholders are formatted in; the ids are bound.
    let mut query = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(tenant.as_str());
    for id in ids {
        query = query.bind(*id);
    }
    let rows = query.fetch_all(&db.reader).await?;
    rows.iter()
        .map(|row| knowledge::passage(row).map(|hit| (hit.chunk_id, hit)))
        .collect()
}

/// The tenant's best `k` passages for `question`: full-text and vector candidates fused
/// by reciprocal rank. Without a question vector (no provider of the tenant's model
/// answered, or the node has none) or without vectors yet, the full-text ranking alone. The
/// full-text candidates come from the tenant's cached [`TextIndex`] (BM25 in memory, loaded
/// while the question is embedded when it is not cached at the tenant's knowledge version).
/// The question's embedding usage is recorded off the search's path.
pub(crate) async fn hybrid_search(
    db: &Db,
    retrieval: &Retrieval,
    tenant: &TenantId,
    question: &str,
    k: u32,
) -> Result<Vec<KnowledgeHit>, Failure> {
    if k == 0 {
        return Ok(Vec::new());
    }
    let Some(state) = tenant_search_state(db, retrieval, tenant).await? else {
        return Ok(Vec::new());
    };
    let candidates = retrieval.settings().candidates.max(k as usize);
    let words = knowledge::query_words(question);
    let fulltext = async {
        if words.is_empty() {
            return Ok::<_, Failure>(Vec::new());
        }
        let text = tenant_text_index(db, retrieval, tenant, state.stamp).await?;
        Ok(text
            .index
            .search(&words, candidates)
            .into_iter()
            .map(|(chunk_id, _)| chunk_id)
            .collect::<Vec<i64>>())
    };
    let embedded = async {
        match &state.model {
            Some(model) => retrieval.embed_question(model, question).await,
            None => None,
        }
    };
    let (fulltext_ids, embedded) = tokio::join!(fulltext, embedded);
    let fulltext_ids = fulltext_ids?;
    let mut vector_ids = Vec::new();
    if let (Some(model), Some((vector, provider, tokens, cost_micros))) = (&state.model, embedded) {
        record_question_usage(db, tenant, model, provider, tokens, cost_micros);
        let cached = tenant_index(db, retrieval, tenant, model, state.stamp).await?;
        vector_ids = cached
            .index
            .search(&vector, candidates)
            .into_iter()
            .map(|hit| hit.chunk_id)
            .collect();
    }
    let fused = fuse(&fulltext_ids, &vector_ids, k as usize);
    let ids: Vec<i64> = fused.iter().map(|f| f.chunk_id).collect();
    let mut known = chunks_by_id(db, tenant, &ids).await?;
    Ok(fused
        .into_iter()
        .filter_map(|f| {
            let mut hit = known.remove(&f.chunk_id)?;
            hit.score = f.score;
            hit.fulltext_rank = f.fulltext_rank;
            hit.vector_rank = f.vector_rank;
            Some(hit)
        })
        .collect())
}

/// Records what embedding a question cost, in a task of its own: the search does not wait
/// for the write (a crash just then loses one question's usage row, never a passage).
fn record_question_usage(
    db: &Db,
    tenant: &TenantId,
    model: &str,
    provider: String,
    tokens: u64,
    cost_micros: u64,
) {
    let usage = LlmUsage {
        tenant: tenant.clone(),
        provider,
        model: model.to_owned(),
        prompt_tokens: i64::try_from(tokens).unwrap_or(i64::MAX),
        completion_tokens: 0,
        cost_micros: i64::try_from(cost_micros).unwrap_or(i64::MAX),
        at_ms: now_ms(),
    };
    let db = db.clone();
    tokio::spawn(async move {
        if let Err(error) = activity::record_llm_usage(&db, &usage).await {
            tracing::warn!(tenant = %usage.tenant, error = ?error, "embedding usage not recorded");
        }
    });
}
