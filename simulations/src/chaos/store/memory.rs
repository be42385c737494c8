//! [`MemoryStore`]: the database every node of a simulated cluster shares.

use parking_lot::Mutex;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};

use async_trait::async_trait;
use salesboy_actors::store::prelude::*;
use salesboy_actors::store::{
    Deletion, DeliveryStatus, Direction, KnowledgeDocument, KnowledgeHit, LlmUsage, LlmUsageTotals,
    NewKnowledge, NewRejectedItem, NewTenant, NewWhatsAppNumber, SendFailure, StoreError,
    StoredMessage, StoredRejectedItem, Tenant, TenantRoute, UsageReport, WhatsAppNumber,
};
use salesboy_protocol::events::Event;
use salesboy_protocol::{PhoneNumberId, TenantId};

use super::tables::{Document, Tables, TenantRow};

/// The in-memory database shared by every node of a simulated cluster.
#[derive(Debug, Default)]
pub struct MemoryStore {
    tables: Mutex<Tables>,
    accept_stale_epochs: AtomicBool,
}

impl MemoryStore {
    /// An empty database.
    pub fn new() -> Self {
        Self::default()
    }

    /// The injected bug: accept fenced writes whatever their epoch (skip the epoch check).
    /// Only for tests that prove the invariant checker can fail.
    pub fn accept_stale_epochs(&self, accept: bool) {
        self.accept_stale_epochs.store(accept, Ordering::SeqCst);
    }

    pub(super) fn tables(&self) -> parking_lot::MutexGuard<'_, Tables> {
        self.tables.lock()
    }

    pub(super) fn fence(
        &self,
        tables: &Tables,
        tenant: &TenantId,
        epoch: u64,
    ) -> Result<(), StoreError> {
        tables.fence(
            tenant,
            epoch,
            self.accept_stale_epochs.load(Ordering::SeqCst),
        )
    }

    /// Every message, by id.
    pub fn all_messages(&self) -> Vec<StoredMessage> {
        self.tables().messages.values().cloned().collect()
    }

    /// Inbound message id → the reply answering it (`None`: dismissed).
    pub fn all_links(&self) -> BTreeMap<i64, Option<i64>> {
        self.tables().links.clone()
    }
}

#[async_trait]
impl HealthStore for MemoryStore {
    async fn health(&self) -> Result<(), StoreError> {
        Ok(())
    }
}

#[async_trait]
impl TenantStore for MemoryStore {
    async fn upsert_tenant(&self, tenant: &NewTenant) -> Result<(), StoreError> {
        let mut tables = self.tables();
        match tables.tenants.get_mut(&tenant.id) {
            Some(row) => {
                let created_ms = row.new.created_ms;
                row.new = tenant.clone();
                row.new.created_ms = created_ms;
                row.deleted_ms = None;
            }
            None => {
                tables.tenants.insert(
                    tenant.id.clone(),
                    TenantRow {
                        new: tenant.clone(),
                        knowledge_version: 0,
                        numbers: BTreeMap::new(),
                        session_stopped_ms: None,
                        deleted_ms: None,
                    },
                );
            }
        }
        Ok(())
    }

    async fn tenant(&self, id: &TenantId) -> Result<Option<Tenant>, StoreError> {
        Ok(self.tables().tenant(id))
    }

    async fn list_tenants(&self) -> Result<Vec<Tenant>, StoreError> {
        let tables = self.tables();
        Ok(tables
            .tenants
            .keys()
            .filter_map(|id| tables.tenant(id))
            .collect())
    }

    async fn upsert_whatsapp_number(&self, number: &NewWhatsAppNumber) -> Result<(), StoreError> {
        let mut tables = self.tables();
        let taken = tables.tenants.iter().any(|(id, row)| {
            id != &number.tenant && row.numbers.contains_key(&number.phone_number_id)
        });
        if taken {
            return Err(StoreError::Conflict {
                reason: format!(
                    "number {} belongs to another tenant",
                    number.phone_number_id
                ),
            });
        }
        let row = tables
            .tenants
            .get_mut(&number.tenant)
            .filter(|row| row.deleted_ms.is_none())
            .ok_or_else(|| StoreError::NotFound {
                what: format!("tenant {}", number.tenant),
            })?;
        row.numbers.insert(
            number.phone_number_id.clone(),
            WhatsAppNumber {
                phone_number_id: number.phone_number_id.clone(),
                waba_id: number.waba_id.clone(),
                access_token: number.access_token.clone(),
            },
        );
        Ok(())
    }

    async fn tenant_by_phone_number(
        &self,
        phone_number_id: &PhoneNumberId,
    ) -> Result<Option<TenantRoute>, StoreError> {
        Ok(self
            .tables()
            .tenants
            .iter()
            .find(|(_, row)| row.numbers.contains_key(phone_number_id))
            .map(|(id, _)| TenantRoute {
                tenant: id.clone(),
                phone_number_id: phone_number_id.clone(),
            }))
    }

    async fn set_session_stopped(
        &self,
        tenant: &TenantId,
        stopped: bool,
        at_ms: i64,
    ) -> Result<(), StoreError> {
        let mut tables = self.tables();
        let row = tables
            .tenants
            .get_mut(tenant)
            .filter(|row| row.deleted_ms.is_none())
            .ok_or_else(|| StoreError::NotFound {
                what: format!("tenant {tenant}"),
            })?;
        row.session_stopped_ms = stopped.then(|| row.session_stopped_ms.unwrap_or(at_ms));
        Ok(())
    }

    async fn delete_tenant(
        &self,
        tenant: &TenantId,
        deletion: Deletion,
        at_ms: i64,
    ) -> Result<bool, StoreError> {
        let mut tables = self.tables();
        let Some(row) = tables
            .tenants
            .get_mut(tenant)
            .filter(|row| row.deleted_ms.is_none())
        else {
            return Ok(false);
        };
        row.deleted_ms = Some(at_ms);
        row.session_stopped_ms = None;
        row.numbers.clear();
        if let Some(epoch) = tables.epochs.get_mut(tenant) {
            *epoch += 1;
        }
        match deletion {
            Deletion::KeepData => {
                for message in tables.messages.values_mut() {
                    if &message.tenant == tenant && message.status == Some(DeliveryStatus::Pending)
                    {
                        message.status = Some(DeliveryStatus::Failed);
                        message.status_ms = Some(at_ms);
                        message.failure = Some(SendFailure {
                            code: None,
                            title: "tenant_deleted".to_owned(),
                        });
                    }
                }
            }
            Deletion::EraseData => {
                tables.tenants.remove(tenant);
                let erased: BTreeSet<i64> = tables
                    .messages
                    .values()
                    .filter(|m| &m.tenant == tenant)
                    .map(|m| m.id)
                    .collect();
                tables.messages.retain(|id, _| !erased.contains(id));
                tables.links.retain(|id, _| !erased.contains(id));
                for reply in tables.links.values_mut() {
                    if reply.is_some_and(|id| erased.contains(&id)) {
                        *reply = None;
                    }
                }
                tables.conversations.retain(|(t, _), _| t != tenant);
                tables.wamids.retain(|(t, _), _| t != tenant);
                tables.client_refs.retain(|(t, _), _| t != tenant);
                tables.documents.retain(|_, d| &d.tenant != tenant);
                tables.usage.retain(|u| &u.tenant != tenant);
                tables.events.retain(|e| e.tenant.as_ref() != Some(tenant));
            }
        }
        Ok(true)
    }
}

#[async_trait]
impl FencingStore for MemoryStore {
    async fn claim_epoch(&self, tenant: &TenantId, epoch: u64) -> Result<(), StoreError> {
        let mut tables = self.tables();
        match tables.epochs.get(tenant) {
            Some(&current) if current > epoch => Err(StoreError::StaleEpoch {
                tenant: tenant.clone(),
                given: epoch,
                current,
            }),
            _ => {
                tables.epochs.insert(tenant.clone(), epoch);
                Ok(())
            }
        }
    }

    async fn current_epoch(&self, tenant: &TenantId) -> Result<Option<u64>, StoreError> {
        Ok(self.tables().epochs.get(tenant).copied())
    }
}

#[async_trait]
impl KnowledgeStore for MemoryStore {
    async fn add_knowledge(&self, document: &NewKnowledge) -> Result<i64, StoreError> {
        let mut tables = self.tables();
        let row = tables
            .tenants
            .get_mut(&document.tenant)
            .ok_or_else(|| StoreError::NotFound {
                what: format!("tenant {}", document.tenant),
            })?;
        row.knowledge_version += 1;
        let id = tables.next_id();
        tables.documents.insert(
            id,
            Document {
                tenant: document.tenant.clone(),
                title: document.title.clone(),
                chunks: document.chunks.clone(),
                created_ms: document.created_ms,
            },
        );
        Ok(id)
    }

    async fn list_knowledge(
        &self,
        tenant: &TenantId,
    ) -> Result<Vec<KnowledgeDocument>, StoreError> {
        Ok(self
            .tables()
            .documents
            .iter()
            .filter(|(_, d)| &d.tenant == tenant)
            .map(|(&id, d)| KnowledgeDocument {
                id,
                title: d.title.clone(),
                chunk_count: d.chunks.len() as i64,
                embedded_chunks: None,
                refused_chunks: None,
                created_ms: d.created_ms,
            })
            .collect())
    }

    async fn delete_knowledge(
        &self,
        tenant: &TenantId,
        document_id: i64,
        _at_ms: i64,
    ) -> Result<bool, StoreError> {
        let mut tables = self.tables();
        let owned = tables
            .documents
            .get(&document_id)
            .is_some_and(|d| &d.tenant == tenant);
        if owned {
            tables.documents.remove(&document_id);
            if let Some(row) = tables.tenants.get_mut(tenant) {
                row.knowledge_version += 1;
            }
        }
        Ok(owned)
    }

    async fn search_knowledge(
        &self,
        tenant: &TenantId,
        question: &str,
        k: u32,
    ) -> Result<Vec<KnowledgeHit>, StoreError> {
        let words: BTreeSet<String> = question
            .split(|c: char| !c.is_alphanumeric())
            .filter(|w| w.chars().count() > 1)
            .map(str::to_lowercase)
            .collect();
        let tables = self.tables();
        let mut hits: Vec<KnowledgeHit> = Vec::new();
        for (&id, document) in tables.documents.iter().filter(|(_, d)| &d.tenant == tenant) {
            for (ordinal, chunk) in document.chunks.iter().enumerate() {
                let lower = chunk.to_lowercase();
                let score = words.iter().filter(|w| lower.contains(w.as_str())).count();
                if score > 0 {
                    hits.push(KnowledgeHit {
                        // Unique within the memory store: documents hold few chunks.
                        chunk_id: id * 1_000_000 + ordinal as i64,
                        document_id: id,
                        document_title: document.title.clone(),
                        text: chunk.clone(),
                        score: score as f64,
                        fulltext_rank: None,
                        vector_rank: None,
                    });
                }
            }
        }
        hits.sort_by(|a, b| b.score.total_cmp(&a.score));
        hits.truncate(k as usize);
        for (i, hit) in hits.iter_mut().enumerate() {
            hit.fulltext_rank = u32::try_from(i + 1).ok();
        }
        Ok(hits)
    }

    async fn knowledge_version(&self, tenant: &TenantId) -> Result<i64, StoreError> {
        Ok(self
            .tables()
            .tenants
            .get(tenant)
            .map_or(0, |row| row.knowledge_version))
    }
}

#[async_trait]
impl UsageStore for MemoryStore {
    async fn record_llm_usage(&self, usage: &LlmUsage) -> Result<(), StoreError> {
        self.tables().usage.push(usage.clone());
        Ok(())
    }

    async fn llm_usage_totals(
        &self,
        tenant: &TenantId,
        since_ms: i64,
    ) -> Result<LlmUsageTotals, StoreError> {
        let tables = self.tables();
        let mut totals = LlmUsageTotals::default();
        for usage in tables
            .usage
            .iter()
            .filter(|u| &u.tenant == tenant && u.at_ms >= since_ms)
        {
            totals.requests += 1;
            totals.prompt_tokens += usage.prompt_tokens;
            totals.completion_tokens += usage.completion_tokens;
            totals.cost_micros += usage.cost_micros;
        }
        Ok(totals)
    }

    async fn usage_between(
        &self,
        tenant: &TenantId,
        from_ms: i64,
        until_ms: i64,
    ) -> Result<UsageReport, StoreError> {
        let tables = self.tables();
        let mut report = UsageReport::default();
        let period = from_ms..until_ms;
        for usage in tables
            .usage
            .iter()
            .filter(|u| &u.tenant == tenant && period.contains(&u.at_ms))
        {
            report.llm.requests += 1;
            report.llm.prompt_tokens += usage.prompt_tokens;
            report.llm.completion_tokens += usage.completion_tokens;
            report.llm.cost_micros += usage.cost_micros;
        }
        for message in tables
            .messages
            .values()
            .filter(|m| &m.tenant == tenant && period.contains(&m.created_ms))
        {
            match message.direction {
                Direction::Inbound => report.messages_in += 1,
                Direction::Outbound => report.messages_out += 1,
            }
        }
        Ok(report)
    }
}

#[async_trait]
impl EventStore for MemoryStore {
    async fn record_events(&self, events: &[Event]) -> Result<(), StoreError> {
        self.tables().events.extend_from_slice(events);
        Ok(())
    }

    async fn recent_events(&self, limit: u32) -> Result<Vec<Event>, StoreError> {
        Ok(self
            .tables()
            .events
            .iter()
            .rev()
            .take(limit as usize)
            .cloned()
            .collect())
    }
}

#[async_trait]
impl RetentionStore for MemoryStore {
    async fn delete_messages_before(&self, cutoff_ms: i64) -> Result<u64, StoreError> {
        let mut tables = self.tables();
        let old: Vec<i64> = tables
            .messages
            .values()
            .filter(|m| m.created_ms < cutoff_ms)
            .map(|m| m.id)
            .collect();
        for id in &old {
            tables.messages.remove(id);
            tables.links.remove(id);
        }
        tables.wamids.retain(|_, id| !old.contains(id));
        Ok(old.len() as u64)
    }
}

#[async_trait]
impl RejectedItemStore for MemoryStore {
    async fn record_rejected_item(&self, item: &NewRejectedItem) -> Result<i64, StoreError> {
        let mut tables = self.tables();
        let id = tables.next_id();
        tables.rejected.push(StoredRejectedItem {
            id,
            new: item.clone(),
        });
        Ok(id)
    }

    async fn rejected_items(
        &self,
        tenant: &TenantId,
        before: Option<i64>,
        limit: u32,
    ) -> Result<Vec<StoredRejectedItem>, StoreError> {
        Ok(self
            .tables()
            .rejected
            .iter()
            .rev()
            .filter(|r| r.new.tenant.as_ref() == Some(tenant))
            .filter(|r| before.is_none_or(|before| r.id < before))
            .take(limit as usize)
            .cloned()
            .collect())
    }
}
