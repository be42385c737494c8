//! The knowledge of a store without an embedding provider, in memory: the offline search
//! ranks the question against the tenant's [`TextIndex`] held here and answers the
//! passages' texts from here too, as the hybrid search ranks from
//! [`Retrieval`](super::Retrieval)'s cache (decision 0021). A warm search reads at most one
//! row: the tenant's [`Stamp`].
//!
//! One moka cache by tenant, weighted by bytes (index and texts) and bounded by
//! [`TEXT_CACHE_BYTES`]. A search that reads the stamp uses an entry only while the stamp
//! still holds the tenant's passages ([`Stamp::same_passages`]), so a knowledge change made
//! by any node is seen on its next search. A caller that knows the tenant's version (the
//! responder, told of every change) searches an entry at least that new without reading
//! anything ([`TextCache::cached_since`], decision 0022): it sees a change made on another
//! node once it is told the new version. A change through this store drops the tenant's
//! entry ([`TextCache::forget`]), and a load that began before it is not kept.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use salesboy_actors::store::{KnowledgeHit, KnownKnowledge};
use salesboy_protocol::TenantId;

use super::Stamp;
use super::text_index::TextIndex;

/// The most memory the cached passages of a store without retrieval hold together: about
/// 40,000 passages of 90 words with their index (0.9 MiB of index and ≈ 0.6 MiB of text
/// per 1,000).
pub const TEXT_CACHE_BYTES: u64 = 64 * 1024 * 1024;

/// A tenant's passages as cached: their full-text index and their texts, at a stamp.
#[derive(Debug)]
pub struct CachedPassages {
    /// The tenant's stamp when they were loaded.
    pub stamp: Stamp,
    /// Their full-text index.
    pub index: TextIndex,
    /// Each passage by chunk id, with its document (score and ranks unset).
    pub passages: HashMap<i64, KnowledgeHit>,
}

impl CachedPassages {
    /// `passages` (score and ranks unset) and their index, loaded at `stamp`.
    pub fn new(stamp: Stamp, passages: Vec<KnowledgeHit>) -> Self {
        let index = TextIndex::build(
            passages
                .iter()
                .map(|passage| (passage.chunk_id, passage.text.as_str())),
        );
        let passages = passages
            .into_iter()
            .map(|passage| (passage.chunk_id, passage))
            .collect();
        Self {
            stamp,
            index,
            passages,
        }
    }

    /// The memory they hold, in bytes (approximate: what the cache is charged).
    pub fn bytes(&self) -> usize {
        self.index.bytes()
            + self
                .passages
                .values()
                .map(|p| p.text.len() + p.document_title.len() + 96)
                .sum::<usize>()
    }
}

/// The tenants' cached passages, under one byte budget.
#[derive(Debug)]
pub struct TextCache {
    cache: moka::sync::Cache<TenantId, Arc<CachedPassages>>,
    /// Bumped by every [`TextCache::forget`]: a load that began before one is not cached.
    forgotten: AtomicU64,
}

impl TextCache {
    /// A cache that holds at most `max_bytes`.
    pub fn new(max_bytes: u64) -> Self {
        let cache = moka::sync::Cache::builder()
            .max_capacity(max_bytes)
            .weigher(|_: &TenantId, cached: &Arc<CachedPassages>| {
                u32::try_from(cached.bytes()).unwrap_or(u32::MAX)
            })
            .build();
        Self {
            cache,
            forgotten: AtomicU64::new(0),
        }
    }

    /// The cached passages of `tenant` if they are still those of `stamp`.
    pub fn cached(&self, tenant: &TenantId, stamp: Stamp) -> Option<Arc<CachedPassages>> {
        self.cache
            .get(tenant)
            .filter(|cached| cached.stamp.same_passages(&stamp))
    }

    /// The cached passages of `tenant` if they are of the tenant `known` speaks of, at its
    /// version or a newer one (versions only grow): a caller told of every change may
    /// search them without reading the tenant's stamp.
    pub fn cached_since(
        &self,
        tenant: &TenantId,
        known: KnownKnowledge,
    ) -> Option<Arc<CachedPassages>> {
        self.cache.get(tenant).filter(|cached| {
            cached.stamp.tenant_created_ms == known.tenant_created_ms
                && cached.stamp.knowledge_version >= known.version
        })
    }

    /// Drops `tenant`'s passages (its knowledge changed through this store, or it was
    /// deleted): a caller that still knows the older version reads the stamp again.
    pub fn forget(&self, tenant: &TenantId) {
        self.forgotten.fetch_add(1, Ordering::SeqCst);
        self.cache.invalidate(tenant);
    }

    /// What a load passes to [`TextCache::insert`]: taken before it reads the stamp.
    pub fn load_started(&self) -> u64 {
        self.forgotten.load(Ordering::SeqCst)
    }

    /// Caches `tenant`'s passages, loaded since `started` ([`TextCache::load_started`]),
    /// unless a tenant's passages were forgotten meanwhile: the load may have read them
    /// from before that change, and a caller that knows only the older version would then
    /// search them. (Any tenant's: such a load is just not kept.)
    pub fn insert(&self, tenant: &TenantId, cached: Arc<CachedPassages>, started: u64) {
        if self.forgotten.load(Ordering::SeqCst) == started {
            self.cache.insert(tenant.clone(), cached);
        }
    }

    /// The memory the cached passages hold, in bytes (after pending evictions).
    #[cfg(test)]
    fn cached_bytes(&self) -> u64 {
        self.cache.run_pending_tasks();
        self.cache.weighted_size()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tenant(id: &str) -> TenantId {
        TenantId::new(id).expect("tenant id")
    }

    fn stamp(knowledge_version: i64) -> Stamp {
        Stamp {
            tenant_created_ms: 1,
            knowledge_version,
            ..Stamp::default()
        }
    }

    fn cached(version: i64) -> Arc<CachedPassages> {
        Arc::new(CachedPassages::new(
            stamp(version),
            vec![KnowledgeHit {
                chunk_id: 7,
                document_id: 1,
                document_title: "Shipping".to_owned(),
                text: "Delivery takes two days.".to_owned(),
                score: 0.0,
                fulltext_rank: None,
                vector_rank: None,
            }],
        ))
    }

    #[test]
    fn passages_are_indexed_and_kept_by_chunk_id() {
        let cached = cached(1);
        let ranked = cached.index.search(&["deliv".to_owned()], 3);
        assert_eq!(ranked.len(), 1);
        assert_eq!(ranked[0].0, 7);
        assert_eq!(cached.passages[&7].document_title, "Shipping");
        assert!(cached.bytes() > cached.index.bytes());
    }

    #[test]
    fn passages_are_used_only_at_their_tenants_knowledge_version() {
        let cache = TextCache::new(TEXT_CACHE_BYTES);
        let acme = tenant("acme");
        cache.insert(&acme, cached(3), cache.load_started());
        assert!(cache.cached(&acme, stamp(3)).is_some());
        assert!(cache.cached(&acme, stamp(4)).is_none(), "a newer version");
        assert!(cache.cached(&tenant("beta"), stamp(3)).is_none());
        let recreated = Stamp {
            tenant_created_ms: 2,
            ..stamp(3)
        };
        assert!(
            cache.cached(&acme, recreated).is_none(),
            "a tenant created again"
        );
        // A vectors change alone does not touch the passages.
        let vectors_changed = Stamp {
            vectors_version: 9,
            ..stamp(3)
        };
        assert!(cache.cached(&acme, vectors_changed).is_some());
    }

    #[test]
    fn a_caller_that_knows_the_version_uses_passages_at_least_that_new() {
        let cache = TextCache::new(TEXT_CACHE_BYTES);
        let acme = tenant("acme");
        let known = |tenant_created_ms, version| KnownKnowledge {
            tenant_created_ms,
            version,
        };
        assert!(
            cache.cached_since(&acme, known(1, 0)).is_none(),
            "nothing cached"
        );
        cache.insert(&acme, cached(3), cache.load_started());
        assert!(cache.cached_since(&acme, known(1, 3)).is_some());
        assert!(
            cache.cached_since(&acme, known(1, 2)).is_some(),
            "a caller not yet told of the newer version"
        );
        assert!(
            cache.cached_since(&acme, known(1, 4)).is_none(),
            "older passages"
        );
        assert!(
            cache.cached_since(&acme, known(2, 0)).is_none(),
            "a tenant created again"
        );
        assert!(cache.cached_since(&tenant("beta"), known(1, 3)).is_none());
        cache.forget(&acme);
        assert!(
            cache.cached_since(&acme, known(1, 3)).is_none(),
            "forgotten"
        );

        // A load that began before a change through the store is not kept.
        let started = cache.load_started();
        cache.forget(&acme);
        cache.insert(&acme, cached(3), started);
        assert!(
            cache.cached_since(&acme, known(1, 3)).is_none(),
            "loaded before the change"
        );
        cache.insert(&acme, cached(3), cache.load_started());
        assert!(cache.cached_since(&acme, known(1, 3)).is_some());
    }

    #[test]
    fn the_cache_stays_within_its_budget() {
        let one = cached(1).bytes() as u64;
        let cache = TextCache::new(one * 3);
        for i in 0..20 {
            cache.insert(&tenant(&format!("t{i}")), cached(1), cache.load_started());
        }
        assert!(cache.cached_bytes() <= one * 3, "{}", cache.cached_bytes());
    }
}
