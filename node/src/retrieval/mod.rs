//! Semantic knowledge retrieval in our own SQL (issue 15): passage vectors stored beside
//! the passages, searched exactly per tenant from a byte-bounded in-memory cache, fused with
//! the full-text ranking.
//!
//! - [`Retrieval`]: the node's embedding chains ([`crate::adapters::embedding`]), one per
//!   model (the first the default; a tenant may choose another, `embedding_model`), the
//!   cache of tenant indexes ([`index::TenantIndex`], moka, weighted by bytes, loaded on
//!   demand, checked against the tenant's [`Stamp`] on every search
//!   so a change made by any node is seen) and the embedder's wake-up. A [`SqlStore`] given
//!   one ([`SqlStore::with_retrieval`]) searches hybrid; without one (no
//!   `embedding_providers` configured, the default) it searches full text only and calls
//!   no model.
//! - [`text_index`]: the tenant's passages as posting lists in memory (BM25), cached beside
//!   the vectors and checked against the tenant's knowledge version on every search: the
//!   full-text half of the hybrid search without scoring thousands of rows in SQL.
//! - [`text_cache`]: the same full-text indexes for a store without an embedding provider
//!   (the offline search, decision 0021).
//! - [`fusion`]: reciprocal rank fusion of the full-text and vector rankings.
//! - [`worker`]: the background embedder: passages without a vector for their tenant's model
//!   are embedded in batches; on failure they stay pending, the tenant gets one
//!   `knowledge_embedding_failed` event per failure streak, and the pass is retried after a
//!   growing pause.
//!
//! [`SqlStore`]: crate::store::SqlStore
//! [`SqlStore::with_retrieval`]: crate::store::SqlStore::with_retrieval

pub mod fusion;
pub mod index;
pub mod text_cache;
pub mod text_index;
pub mod worker;

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use salesboy_protocol::TenantId;
use tokio::sync::Notify;

use crate::adapters::embedding::{EmbedOutcome, EmbedPurpose, EmbeddingChain};
use index::TenantIndex;
use text_index::TextIndex;

/// The tunables of retrieval.
#[derive(Debug, Clone, PartialEq)]
pub struct RetrievalSettings {
    /// Quantize cached indexes to int8 (a quarter of the memory).
    pub int8: bool,
    /// The most memory the cached tenant indexes may hold together, in bytes.
    pub cache_bytes: u64,
    /// How many candidates each search (full text, vectors) contributes to the fusion; at
    /// least the `k` asked for.
    pub candidates: usize,
    /// The first pause after a failed embedding pass; doubled after each further failure.
    pub retry_min: Duration,
    /// The longest pause between failed passes.
    pub retry_max: Duration,
    /// How often the embedder looks for pending passages when nobody wakes it (passages
    /// added through another node).
    pub idle_poll: Duration,
    /// How long a provider rests after repeated failures (the chat chain's 30 s).
    pub failure_rest: Duration,
}

impl Default for RetrievalSettings {
    fn default() -> Self {
        Self {
            int8: false,
            cache_bytes: 256 * 1024 * 1024,
            candidates: 20,
            retry_min: Duration::from_secs(5),
            retry_max: Duration::from_secs(300),
            idle_poll: Duration::from_secs(10),
            failure_rest: salesboy_actors::responder::gate::FAILURE_REST,
        }
    }
}

/// What a cached index is checked against on every search, read from the tenant's row (and
/// the newest vector's id, an index lookup): it changes whenever the tenant's passages or
/// its vectors do.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stamp {
    /// When the tenant was created (a tenant deleted and created again is another).
    pub tenant_created_ms: i64,
    /// Bumped by every knowledge add and delete.
    pub knowledge_version: i64,
    /// Bumped whenever the embedder stores vectors for the tenant.
    pub vectors_version: i64,
    /// The newest chunk id with a vector of the tenant's model (vectors stored by a build
    /// that does not bump `vectors_version`, during a rolling upgrade, still show).
    pub newest_vector: i64,
}

impl Stamp {
    /// Whether a full-text index built at `self` still holds the tenant's passages at
    /// `now` (vectors do not matter to it).
    pub fn same_passages(&self, now: &Self) -> bool {
        (self.tenant_created_ms, self.knowledge_version)
            == (now.tenant_created_ms, now.knowledge_version)
    }
}

/// A tenant index as cached: the model and stamp of the vectors it was built from.
#[derive(Debug)]
pub struct CachedIndex {
    /// The model of its vectors.
    pub model: String,
    /// The tenant's stamp when it was loaded.
    pub stamp: Stamp,
    /// The index.
    pub index: TenantIndex,
}

/// A tenant's full-text index as cached: the stamp it was built at.
#[derive(Debug)]
pub struct CachedText {
    /// The tenant's stamp when it was loaded (its passages: [`Stamp::same_passages`]).
    pub stamp: Stamp,
    /// The index.
    pub index: TextIndex,
}

/// Which of a tenant's indexes a cache entry is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum IndexKind {
    Vectors,
    Text,
}

/// A cache entry: one of a tenant's indexes.
#[derive(Debug, Clone)]
enum CachedEntry {
    Vectors(Arc<CachedIndex>),
    Text(Arc<CachedText>),
}

impl CachedEntry {
    fn bytes(&self) -> usize {
        match self {
            Self::Vectors(cached) => cached.index.bytes(),
            Self::Text(cached) => cached.index.bytes(),
        }
    }
}

/// One embedding model and the providers (in fallback order) that serve it.
#[derive(Debug)]
struct ModelChain {
    model: String,
    chain: EmbeddingChain,
}

/// The node's semantic retrieval: the embedding chains and the tenant index cache (see the
/// module docs).
pub struct Retrieval {
    /// One per model, the default first; never empty.
    models: Vec<ModelChain>,
    settings: RetrievalSettings,
    /// The tenants' vector and full-text indexes, under one byte budget.
    cache: moka::sync::Cache<(TenantId, IndexKind), CachedEntry>,
    wake: Notify,
    failing: Mutex<HashSet<TenantId>>,
}

impl std::fmt::Debug for Retrieval {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Retrieval")
            .field("models", &self.models)
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

impl Retrieval {
    /// Retrieval over `chains`, one per model, the first the default (each must have a
    /// provider; none at all: `None`, full text only).
    pub fn new(chains: Vec<EmbeddingChain>, settings: RetrievalSettings) -> Option<Self> {
        let models: Vec<ModelChain> = chains
            .into_iter()
            .filter_map(|chain| {
                let model = chain.model()?.to_owned();
                Some(ModelChain { model, chain })
            })
            .collect();
        if models.is_empty() {
            return None;
        }
        let cache = moka::sync::Cache::builder()
            .max_capacity(settings.cache_bytes)
            .weigher(|_: &(TenantId, IndexKind), cached: &CachedEntry| {
                u32::try_from(cached.bytes()).unwrap_or(u32::MAX)
            })
            .build();
        Some(Self {
            models,
            settings,
            cache,
            wake: Notify::new(),
            failing: Mutex::default(),
        })
    }

    /// The default model: the one passages of a tenant without its own are embedded with; a
    /// change re-embeds those tenants' passages.
    pub fn model(&self) -> &str {
        &self.models[0].model
    }

    /// Every model the node embeds with, the default first.
    pub fn models(&self) -> impl Iterator<Item = &str> {
        self.models.iter().map(|m| m.model.as_str())
    }

    /// The model of a tenant that chose `chosen` (`None`: the default), or `None` when the
    /// node has no provider for it (its passages then wait, its searches use full text).
    pub fn model_for<'a>(&'a self, chosen: Option<&'a str>) -> Option<&'a str> {
        match chosen {
            None => Some(self.model()),
            Some(model) => self.chain_of(model).map(|_| model),
        }
    }

    /// The tunables.
    pub fn settings(&self) -> &RetrievalSettings {
        &self.settings
    }

    /// The embedding chain of the default model.
    pub fn chain(&self) -> &EmbeddingChain {
        &self.models[0].chain
    }

    /// The embedding chain of `model`, if the node has one.
    pub fn chain_of(&self, model: &str) -> Option<&EmbeddingChain> {
        self.models
            .iter()
            .find(|m| m.model == model)
            .map(|m| &m.chain)
    }

    /// Wakes the embedder (passages were added).
    pub fn wake(&self) {
        self.wake.notify_one();
    }

    /// Waits until [`Retrieval::wake`] is called (or was, since the last wait).
    pub async fn woken(&self) {
        self.wake.notified().await;
    }

    /// The cached index of `tenant` if it is still of `model` and its stamp still `stamp`.
    pub fn cached(&self, tenant: &TenantId, model: &str, stamp: Stamp) -> Option<Arc<CachedIndex>> {
        match self.cache.get(&(tenant.clone(), IndexKind::Vectors)) {
            Some(CachedEntry::Vectors(cached))
                if cached.stamp == stamp && cached.model == model =>
            {
                Some(cached)
            }
            _ => None,
        }
    }

    /// Caches `tenant`'s index.
    pub fn cache(&self, tenant: &TenantId, cached: Arc<CachedIndex>) {
        self.cache.insert(
            (tenant.clone(), IndexKind::Vectors),
            CachedEntry::Vectors(cached),
        );
    }

    /// The cached full-text index of `tenant` if its passages are still those of `stamp`.
    pub fn cached_text(&self, tenant: &TenantId, stamp: Stamp) -> Option<Arc<CachedText>> {
        match self.cache.get(&(tenant.clone(), IndexKind::Text)) {
            Some(CachedEntry::Text(cached)) if cached.stamp.same_passages(&stamp) => Some(cached),
            _ => None,
        }
    }

    /// Caches `tenant`'s full-text index.
    pub fn cache_text(&self, tenant: &TenantId, cached: Arc<CachedText>) {
        self.cache
            .insert((tenant.clone(), IndexKind::Text), CachedEntry::Text(cached));
    }

    /// The memory the cached indexes hold together, in bytes (after pending evictions).
    pub fn cached_bytes(&self) -> u64 {
        self.cache.run_pending_tasks();
        self.cache.weighted_size()
    }

    /// The memory the cached full-text indexes hold, in bytes (after pending evictions).
    pub fn cached_text_bytes(&self) -> u64 {
        self.cache.run_pending_tasks();
        self.cache
            .iter()
            .filter(|(key, _)| key.1 == IndexKind::Text)
            .map(|(_, cached)| cached.bytes() as u64)
            .sum()
    }

    /// A question's vector by `model`, or `None` (logged and counted) when no provider of it
    /// answered or the node has none: the search then ranks by full text alone. The usage
    /// is returned for recording.
    pub async fn embed_question(
        &self,
        model: &str,
        question: &str,
    ) -> Option<(Vec<f32>, String, u64, u64)> {
        let texts = [question.to_owned()];
        let chain = self.chain_of(model)?;
        match chain.embed(&texts, EmbedPurpose::Query).await {
            EmbedOutcome::Embedded {
                mut embedded,
                provider,
                cost_micros,
                ..
            } => {
                metrics::counter!("salesboy_embedding_calls_total", "provider" => provider.clone(), "outcome" => "ok").increment(1);
                let vector = embedded.vectors.pop()?;
                Some((vector, provider, embedded.tokens, cost_micros))
            }
            EmbedOutcome::Exhausted { failed } => {
                for attempt in &failed {
                    let outcome = attempt.error.as_ref().map_or("skipped", |e| e.code());
                    metrics::counter!("salesboy_embedding_calls_total", "provider" => attempt.provider.clone(), "outcome" => outcome).increment(1);
                }
                tracing::warn!(
                    providers = failed.len(),
                    "no embedding provider answered, searching by full text alone"
                );
                None
            }
        }
    }

    /// Marks `tenant` as failing; `true` if it was not already (an event is due).
    pub(crate) fn start_failing(&self, tenant: &TenantId) -> bool {
        self.failing
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(tenant.clone())
    }

    /// Marks `tenant` as embedding again.
    pub(crate) fn stop_failing(&self, tenant: &TenantId) {
        self.failing
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .remove(tenant);
    }
}

/// Builds the node's retrieval from the `embedding_providers` setting: `None` when it is
/// unset (full text only). Entries of one model form that model's fallback chain, in their
/// order; the first entry's model is the default.
pub fn from_config(
    client: &reqwest::Client,
    providers_json: Option<&str>,
    settings: RetrievalSettings,
) -> Result<Option<Arc<Retrieval>>, crate::adapters::llm::LlmConfigError> {
    let Some(json) = providers_json else {
        return Ok(None);
    };
    let configs = crate::adapters::embedding::parse_embedding_config(json)?;
    let mut by_model: Vec<(
        String,
        Vec<Arc<dyn crate::adapters::embedding::EmbeddingProvider>>,
    )> = Vec::new();
    for config in configs {
        let model = config.model.clone();
        let provider = Arc::new(crate::adapters::embedding::HttpEmbedder::new(
            client.clone(),
            config,
        )) as Arc<dyn crate::adapters::embedding::EmbeddingProvider>;
        match by_model.iter_mut().find(|(m, _)| *m == model) {
            Some((_, providers)) => providers.push(provider),
            None => by_model.push((model, vec![provider])),
        }
    }
    let chains = by_model
        .into_iter()
        .map(|(_, providers)| EmbeddingChain::new(providers, settings.failure_rest))
        .collect();
    Ok(Retrieval::new(chains, settings).map(Arc::new))
}
