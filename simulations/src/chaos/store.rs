//! The simulation's database: [`MemoryStore`], an in-memory [`Store`] with the SQL store's
//! semantics (wamid dedup, one reply per inbound message, forward-only statuses, epoch
//! fencing), and [`GatedStore`], one node's view of it: every call passes the node's gate
//! after a seeded latency, and every accepted fenced write and epoch claim is logged for the
//! invariant checker.
//!
//! No real threads, no IO: the SQL store's SQLite worker thread would let simulated time
//! jump while it works, and break determinism.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use async_trait::async_trait;
use salesboy_actors::store::prelude::*;
use salesboy_actors::store::{
    Conversation, DeliveryStatus, Direction, DismissOutcome, InsertOutcome, KnowledgeDocument,
    KnowledgeHit, LlmUsage, LlmUsageTotals, NewEvent, NewInbound, NewKnowledge, NewOutbound,
    NewReply, NewTenant, NewWhatsAppNumber, ReplyOutcome, SendFailure, StatusOutcome, StatusUpdate,
    StoreError, StoredEvent, StoredMessage, Tenant, TenantRoute, WhatsAppNumber,
};
use salesboy_protocol::{ChatId, PhoneNumberId, TenantId, Wamid};

use super::gate::{Gate, Link};
use super::rng::KeyedDraws;

/// Locks a mutex, ignoring poisoning (every critical section leaves the data consistent).
pub(crate) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

#[derive(Debug, Clone)]
struct TenantRow {
    new: NewTenant,
    knowledge_version: i64,
    numbers: BTreeMap<PhoneNumberId, WhatsAppNumber>,
}

#[derive(Debug, Clone)]
struct Document {
    tenant: TenantId,
    title: String,
    chunks: Vec<String>,
    created_ms: i64,
}

#[derive(Debug, Default)]
struct Tables {
    tenants: BTreeMap<TenantId, TenantRow>,
    epochs: BTreeMap<TenantId, u64>,
    conversations: BTreeMap<(TenantId, ChatId), Conversation>,
    messages: BTreeMap<i64, StoredMessage>,
    wamids: BTreeMap<(TenantId, Wamid), i64>,
    /// Inbound message id → the reply answering it (`None`: dismissed).
    links: BTreeMap<i64, Option<i64>>,
    documents: BTreeMap<i64, Document>,
    usage: Vec<LlmUsage>,
    events: Vec<StoredEvent>,
    next_id: i64,
}

impl Tables {
    fn next_id(&mut self) -> i64 {
        self.next_id += 1;
        self.next_id
    }

    fn fence(&self, tenant: &TenantId, epoch: u64, accept_stale: bool) -> Result<(), StoreError> {
        match self.epochs.get(tenant) {
            Some(&current) if current > epoch && !accept_stale => Err(StoreError::StaleEpoch {
                tenant: tenant.clone(),
                given: epoch,
                current,
            }),
            _ => Ok(()),
        }
    }

    fn conversation_mut(&mut self, tenant: &TenantId, chat: &ChatId) -> &mut Conversation {
        self.conversations
            .entry((tenant.clone(), chat.clone()))
            .or_insert_with(|| Conversation {
                tenant: tenant.clone(),
                chat: chat.clone(),
                last_inbound_ms: None,
                bot_paused_until_ms: None,
            })
    }

    /// Checks that every id is an unlinked inbound message of the chat; `Ok(Err(id))` for the
    /// first one already linked.
    fn linkable(
        &self,
        tenant: &TenantId,
        chat: &ChatId,
        ids: &[i64],
    ) -> Result<Result<Vec<i64>, i64>, StoreError> {
        if ids.is_empty() {
            return Err(StoreError::Invalid {
                reason: "a reply must answer at least one inbound message".into(),
            });
        }
        let ids: Vec<i64> = ids
            .iter()
            .copied()
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        for &id in &ids {
            let inbound = self.messages.get(&id).is_some_and(|m| {
                &m.tenant == tenant && &m.chat == chat && m.direction == Direction::Inbound
            });
            if !inbound {
                return Err(StoreError::NotFound {
                    what: format!("inbound message {id} in chat {chat} of tenant {tenant}"),
                });
            }
            if self.links.contains_key(&id) {
                return Ok(Err(id));
            }
        }
        Ok(Ok(ids))
    }

    fn outbound_mut(
        &mut self,
        tenant: &TenantId,
        id: i64,
    ) -> Result<&mut StoredMessage, StoreError> {
        self.messages
            .get_mut(&id)
            .filter(|m| &m.tenant == tenant && m.direction == Direction::Outbound)
            .ok_or_else(|| StoreError::NotFound {
                what: format!("outbound message {id} of tenant {tenant}"),
            })
    }

    fn tenant(&self, id: &TenantId) -> Option<Tenant> {
        self.tenants.get(id).map(|row| Tenant {
            id: id.clone(),
            name: row.new.name.clone(),
            system_prompt: row.new.system_prompt.clone(),
            llm_config: row.new.llm_config.clone(),
            knowledge_version: row.knowledge_version,
            created_ms: row.new.created_ms,
            numbers: row.numbers.values().cloned().collect(),
        })
    }

    fn unanswered(&self, keep: impl Fn(&StoredMessage) -> bool) -> Vec<StoredMessage> {
        let mut found: Vec<StoredMessage> = self
            .messages
            .values()
            .filter(|m| m.direction == Direction::Inbound && !self.links.contains_key(&m.id))
            .filter(|m| keep(m))
            .cloned()
            .collect();
        found.sort_by_key(|m| (m.created_ms, m.id));
        found
    }

    fn last_of_chat(
        &self,
        tenant: &TenantId,
        chat: &ChatId,
        limit: u32,
        keep: impl Fn(&StoredMessage) -> bool,
    ) -> Vec<StoredMessage> {
        let mut found: Vec<StoredMessage> = self
            .messages
            .values()
            .filter(|m| &m.tenant == tenant && &m.chat == chat && keep(m))
            .cloned()
            .collect();
        found.sort_by_key(|m| (m.created_ms, m.id));
        let skip = found.len().saturating_sub(limit as usize);
        found.split_off(skip)
    }
}

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

    fn tables(&self) -> MutexGuard<'_, Tables> {
        lock(&self.tables)
    }

    fn fence(&self, tables: &Tables, tenant: &TenantId, epoch: u64) -> Result<(), StoreError> {
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
            }
            None => {
                tables.tenants.insert(
                    tenant.id.clone(),
                    TenantRow {
                        new: tenant.clone(),
                        knowledge_version: 0,
                        numbers: BTreeMap::new(),
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
impl MessageStore for MemoryStore {
    async fn conversation(
        &self,
        tenant: &TenantId,
        chat: &ChatId,
    ) -> Result<Option<Conversation>, StoreError> {
        Ok(self
            .tables()
            .conversations
            .get(&(tenant.clone(), chat.clone()))
            .cloned())
    }

    async fn set_bot_paused(
        &self,
        tenant: &TenantId,
        chat: &ChatId,
        until_ms: Option<i64>,
        epoch: u64,
    ) -> Result<(), StoreError> {
        let mut tables = self.tables();
        self.fence(&tables, tenant, epoch)?;
        tables.conversation_mut(tenant, chat).bot_paused_until_ms = until_ms;
        Ok(())
    }

    async fn insert_inbound(&self, message: &NewInbound) -> Result<InsertOutcome, StoreError> {
        let mut tables = self.tables();
        let key = (message.tenant.clone(), message.wamid.clone());
        if let Some(&id) = tables.wamids.get(&key) {
            return Ok(InsertOutcome::Duplicate { id });
        }
        let conversation = tables.conversation_mut(&message.tenant, &message.chat);
        if conversation
            .last_inbound_ms
            .is_none_or(|last| last < message.received_ms)
        {
            conversation.last_inbound_ms = Some(message.received_ms);
        }
        let id = tables.next_id();
        tables.wamids.insert(key, id);
        tables.messages.insert(
            id,
            StoredMessage {
                id,
                tenant: message.tenant.clone(),
                chat: message.chat.clone(),
                direction: Direction::Inbound,
                origin: None,
                wamid: Some(message.wamid.clone()),
                kind: message.kind.clone(),
                body: message.body.clone(),
                status: None,
                status_ms: None,
                failure: None,
                created_ms: message.received_ms,
            },
        );
        Ok(InsertOutcome::Inserted { id })
    }

    async fn record_outbound(&self, message: &NewOutbound) -> Result<InsertOutcome, StoreError> {
        let mut tables = self.tables();
        if let Some(epoch) = message.epoch {
            self.fence(&tables, &message.tenant, epoch)?;
        }
        if let Some(wamid) = &message.wamid
            && let Some(&id) = tables.wamids.get(&(message.tenant.clone(), wamid.clone()))
        {
            return Ok(InsertOutcome::Duplicate { id });
        }
        tables.conversation_mut(&message.tenant, &message.chat);
        let id = tables.next_id();
        let status = if message.wamid.is_some() {
            DeliveryStatus::Sent
        } else {
            DeliveryStatus::Pending
        };
        if let Some(wamid) = &message.wamid {
            tables
                .wamids
                .insert((message.tenant.clone(), wamid.clone()), id);
        }
        tables.messages.insert(
            id,
            StoredMessage {
                id,
                tenant: message.tenant.clone(),
                chat: message.chat.clone(),
                direction: Direction::Outbound,
                origin: Some(message.origin),
                wamid: message.wamid.clone(),
                kind: message.kind.clone(),
                body: message.body.clone(),
                status: Some(status),
                status_ms: Some(message.created_ms),
                failure: None,
                created_ms: message.created_ms,
            },
        );
        Ok(InsertOutcome::Inserted { id })
    }

    async fn update_status(&self, update: &StatusUpdate) -> Result<StatusOutcome, StoreError> {
        let mut tables = self.tables();
        let Some(&id) = tables
            .wamids
            .get(&(update.tenant.clone(), update.wamid.clone()))
        else {
            return Ok(StatusOutcome::UnknownMessage);
        };
        let Some(message) = tables
            .messages
            .get_mut(&id)
            .filter(|m| m.direction == Direction::Outbound)
        else {
            return Ok(StatusOutcome::UnknownMessage);
        };
        let current = message.status.unwrap_or(DeliveryStatus::Pending);
        if !current.can_advance_to(update.status) {
            return Ok(StatusOutcome::Ignored);
        }
        message.status = Some(update.status);
        message.status_ms = Some(update.at_ms);
        message.failure = update.error.clone();
        Ok(StatusOutcome::Advanced)
    }

    async fn record_reply(&self, reply: &NewReply) -> Result<ReplyOutcome, StoreError> {
        let mut tables = self.tables();
        self.fence(&tables, &reply.tenant, reply.epoch)?;
        let ids = match tables.linkable(&reply.tenant, &reply.chat, &reply.answers)? {
            Ok(ids) => ids,
            Err(inbound_id) => return Ok(ReplyOutcome::AlreadyAnswered { inbound_id }),
        };
        let reply_id = tables.next_id();
        tables.messages.insert(
            reply_id,
            StoredMessage {
                id: reply_id,
                tenant: reply.tenant.clone(),
                chat: reply.chat.clone(),
                direction: Direction::Outbound,
                origin: Some(salesboy_actors::store::OutboundOrigin::Bot),
                wamid: None,
                kind: "text".into(),
                body: Some(reply.body.clone()),
                status: Some(DeliveryStatus::Pending),
                status_ms: None,
                failure: None,
                created_ms: reply.created_ms,
            },
        );
        for id in ids {
            tables.links.insert(id, Some(reply_id));
        }
        Ok(ReplyOutcome::Recorded { reply_id })
    }

    async fn dismiss_inbound(
        &self,
        tenant: &TenantId,
        chat: &ChatId,
        inbound: &[i64],
        _at_ms: i64,
        epoch: u64,
    ) -> Result<DismissOutcome, StoreError> {
        let mut tables = self.tables();
        self.fence(&tables, tenant, epoch)?;
        let ids = match tables.linkable(tenant, chat, inbound)? {
            Ok(ids) => ids,
            Err(inbound_id) => return Ok(DismissOutcome::AlreadyAnswered { inbound_id }),
        };
        for id in ids {
            tables.links.insert(id, None);
        }
        Ok(DismissOutcome::Dismissed)
    }

    async fn mark_reply_sent(
        &self,
        tenant: &TenantId,
        reply_id: i64,
        wamid: &Wamid,
        at_ms: i64,
        epoch: u64,
    ) -> Result<(), StoreError> {
        let mut tables = self.tables();
        self.fence(&tables, tenant, epoch)?;
        let message = tables.outbound_mut(tenant, reply_id)?;
        if message.status != Some(DeliveryStatus::Pending) {
            return Ok(());
        }
        message.wamid = Some(wamid.clone());
        message.status = Some(DeliveryStatus::Sent);
        message.status_ms = Some(at_ms);
        tables
            .wamids
            .insert((tenant.clone(), wamid.clone()), reply_id);
        Ok(())
    }

    async fn mark_reply_failed(
        &self,
        tenant: &TenantId,
        reply_id: i64,
        failure: &SendFailure,
        at_ms: i64,
        epoch: u64,
    ) -> Result<(), StoreError> {
        let mut tables = self.tables();
        self.fence(&tables, tenant, epoch)?;
        let message = tables.outbound_mut(tenant, reply_id)?;
        if message.status == Some(DeliveryStatus::Pending) {
            message.status = Some(DeliveryStatus::Failed);
            message.status_ms = Some(at_ms);
            message.failure = Some(failure.clone());
        }
        Ok(())
    }

    async fn unanswered_inbound(
        &self,
        tenant: &TenantId,
        since_ms: i64,
    ) -> Result<Vec<StoredMessage>, StoreError> {
        Ok(self
            .tables()
            .unanswered(|m| &m.tenant == tenant && m.created_ms >= since_ms))
    }

    async fn tenants_with_pending_work(
        &self,
        since_ms: i64,
        before_ms: i64,
    ) -> Result<Vec<TenantId>, StoreError> {
        let tables = self.tables();
        let mut pending: BTreeSet<TenantId> = tables
            .unanswered(|m| m.created_ms >= since_ms && m.created_ms < before_ms)
            .into_iter()
            .map(|m| m.tenant)
            .collect();
        pending.extend(
            tables
                .messages
                .values()
                .filter(|m| m.status == Some(DeliveryStatus::Pending))
                .map(|m| m.tenant.clone()),
        );
        Ok(pending.into_iter().collect())
    }

    async fn unanswered_inbound_in_chat(
        &self,
        tenant: &TenantId,
        chat: &ChatId,
    ) -> Result<Vec<StoredMessage>, StoreError> {
        Ok(self
            .tables()
            .unanswered(|m| &m.tenant == tenant && &m.chat == chat))
    }

    async fn unsent_replies(&self, tenant: &TenantId) -> Result<Vec<StoredMessage>, StoreError> {
        let tables = self.tables();
        let mut found: Vec<StoredMessage> = tables
            .messages
            .values()
            .filter(|m| &m.tenant == tenant && m.status == Some(DeliveryStatus::Pending))
            .cloned()
            .collect();
        found.sort_by_key(|m| (m.created_ms, m.id));
        Ok(found)
    }

    async fn conversation_messages(
        &self,
        tenant: &TenantId,
        chat: &ChatId,
        limit: u32,
    ) -> Result<Vec<StoredMessage>, StoreError> {
        Ok(self.tables().last_of_chat(tenant, chat, limit, |_| true))
    }

    async fn recent_history(
        &self,
        tenant: &TenantId,
        chat: &ChatId,
        limit: u32,
    ) -> Result<Vec<StoredMessage>, StoreError> {
        Ok(self.tables().last_of_chat(tenant, chat, limit, |m| {
            m.body.is_some() && m.status != Some(DeliveryStatus::Failed)
        }))
    }

    async fn chat_log(
        &self,
        tenant: &TenantId,
        before_ms: Option<i64>,
        limit: u32,
    ) -> Result<Vec<StoredMessage>, StoreError> {
        let tables = self.tables();
        let before = before_ms.unwrap_or(i64::MAX);
        let mut found: Vec<StoredMessage> = tables
            .messages
            .values()
            .filter(|m| &m.tenant == tenant && m.created_ms < before)
            .cloned()
            .collect();
        found.sort_by_key(|m| std::cmp::Reverse((m.created_ms, m.id)));
        found.truncate(limit as usize);
        Ok(found)
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
                created_ms: d.created_ms,
            })
            .collect())
    }

    async fn delete_knowledge(
        &self,
        tenant: &TenantId,
        document_id: i64,
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
            for chunk in &document.chunks {
                let lower = chunk.to_lowercase();
                let score = words.iter().filter(|w| lower.contains(w.as_str())).count();
                if score > 0 {
                    hits.push(KnowledgeHit {
                        document_id: id,
                        document_title: document.title.clone(),
                        text: chunk.clone(),
                        score: score as f64,
                    });
                }
            }
        }
        hits.sort_by(|a, b| b.score.total_cmp(&a.score));
        hits.truncate(k as usize);
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
}

#[async_trait]
impl EventStore for MemoryStore {
    async fn record_event(&self, event: &NewEvent) -> Result<i64, StoreError> {
        let mut tables = self.tables();
        let id = tables.events.len() as i64 + 1;
        tables.events.push(StoredEvent {
            id,
            tenant: event.tenant.clone(),
            kind: event.kind.clone(),
            detail: event.detail.clone(),
            at_ms: event.at_ms,
        });
        Ok(id)
    }

    async fn recent_events(&self, limit: u32) -> Result<Vec<StoredEvent>, StoreError> {
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

/// One entry of the write log the invariant checker reads, in the order the database took
/// them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WriteRecord {
    /// `node` claimed `epoch` for `tenant`.
    Claim {
        /// The node incarnation (`node-1#2`).
        node: String,
        /// The tenant.
        tenant: TenantId,
        /// The epoch claimed.
        epoch: u64,
    },
    /// A fenced write (`what`) by `node` under `epoch` was accepted.
    Fenced {
        /// The node incarnation.
        node: String,
        /// The tenant.
        tenant: TenantId,
        /// The epoch the write carried.
        epoch: u64,
        /// Which write (`record_reply`, `mark_reply_sent`, …).
        what: &'static str,
    },
    /// The node's epoch source gave `node` `epoch` for `tenant` (it hosts it under that epoch).
    Hosting {
        /// The node incarnation.
        node: String,
        /// The tenant.
        tenant: TenantId,
        /// The epoch.
        epoch: u64,
    },
}

/// The shared, ordered log of accepted claims and fenced writes.
pub type WriteLog = Arc<Mutex<Vec<WriteRecord>>>;

/// One node incarnation's connection to the [`MemoryStore`]: a seeded latency per call,
/// then the node's gate (a paused node's calls wait, a dead node's fail), then the call; an
/// accepted claim or fenced write is appended to the [`WriteLog`] in the same step.
pub struct GatedStore {
    inner: Arc<MemoryStore>,
    gate: Gate,
    node: String,
    draws: Arc<KeyedDraws>,
    max_latency_ms: u64,
    log: WriteLog,
}

impl GatedStore {
    /// Node incarnation `node`'s view of `inner`.
    pub fn new(
        inner: Arc<MemoryStore>,
        gate: Gate,
        node: String,
        draws: Arc<KeyedDraws>,
        max_latency_ms: u64,
        log: WriteLog,
    ) -> Self {
        Self {
            inner,
            gate,
            node,
            draws,
            max_latency_ms,
            log,
        }
    }

    async fn enter(&self, key: &str) -> Result<(), StoreError> {
        let latency = self
            .draws
            .rng(format!("store/{}/{key}", self.node).as_bytes())
            .below(self.max_latency_ms + 1);
        if latency > 0 {
            tokio::time::sleep(Duration::from_millis(latency)).await;
        }
        match self.gate.pass().await {
            Link::Down => Err(StoreError::Unavailable {
                url: "memory".into(),
                reason: format!("{} is down", self.node),
            }),
            Link::Up | Link::Partitioned | Link::Paused => Ok(()),
        }
    }

    fn fenced<T>(
        &self,
        result: Result<T, StoreError>,
        tenant: &TenantId,
        epoch: u64,
        what: &'static str,
    ) -> Result<T, StoreError> {
        if result.is_ok() {
            lock(&self.log).push(WriteRecord::Fenced {
                node: self.node.clone(),
                tenant: tenant.clone(),
                epoch,
                what,
            });
        }
        result
    }
}

#[async_trait]
impl HealthStore for GatedStore {
    async fn health(&self) -> Result<(), StoreError> {
        self.enter("health").await?;
        self.inner.health().await
    }
}

#[async_trait]
impl TenantStore for GatedStore {
    async fn upsert_tenant(&self, tenant: &NewTenant) -> Result<(), StoreError> {
        self.enter("upsert_tenant").await?;
        self.inner.upsert_tenant(tenant).await
    }
    async fn tenant(&self, id: &TenantId) -> Result<Option<Tenant>, StoreError> {
        self.enter(&format!("tenant/{id}")).await?;
        self.inner.tenant(id).await
    }
    async fn list_tenants(&self) -> Result<Vec<Tenant>, StoreError> {
        self.enter("list_tenants").await?;
        self.inner.list_tenants().await
    }
    async fn upsert_whatsapp_number(&self, number: &NewWhatsAppNumber) -> Result<(), StoreError> {
        self.enter("upsert_whatsapp_number").await?;
        self.inner.upsert_whatsapp_number(number).await
    }
    async fn tenant_by_phone_number(
        &self,
        phone_number_id: &PhoneNumberId,
    ) -> Result<Option<TenantRoute>, StoreError> {
        self.enter("tenant_by_phone_number").await?;
        self.inner.tenant_by_phone_number(phone_number_id).await
    }
}

#[async_trait]
impl FencingStore for GatedStore {
    async fn claim_epoch(&self, tenant: &TenantId, epoch: u64) -> Result<(), StoreError> {
        self.enter(&format!("claim_epoch/{tenant}")).await?;
        let result = self.inner.claim_epoch(tenant, epoch).await;
        if result.is_ok() {
            lock(&self.log).push(WriteRecord::Claim {
                node: self.node.clone(),
                tenant: tenant.clone(),
                epoch,
            });
        }
        result
    }
    async fn current_epoch(&self, tenant: &TenantId) -> Result<Option<u64>, StoreError> {
        self.enter(&format!("current_epoch/{tenant}")).await?;
        self.inner.current_epoch(tenant).await
    }
}

#[async_trait]
impl MessageStore for GatedStore {
    async fn conversation(
        &self,
        tenant: &TenantId,
        chat: &ChatId,
    ) -> Result<Option<Conversation>, StoreError> {
        self.enter(&format!("conversation/{tenant}/{chat}")).await?;
        self.inner.conversation(tenant, chat).await
    }
    async fn set_bot_paused(
        &self,
        tenant: &TenantId,
        chat: &ChatId,
        until_ms: Option<i64>,
        epoch: u64,
    ) -> Result<(), StoreError> {
        self.enter(&format!("set_bot_paused/{tenant}/{chat}"))
            .await?;
        let result = self
            .inner
            .set_bot_paused(tenant, chat, until_ms, epoch)
            .await;
        self.fenced(result, tenant, epoch, "set_bot_paused")
    }
    async fn insert_inbound(&self, message: &NewInbound) -> Result<InsertOutcome, StoreError> {
        self.enter(&format!(
            "insert_inbound/{}/{}",
            message.tenant, message.chat
        ))
        .await?;
        self.inner.insert_inbound(message).await
    }
    async fn record_outbound(&self, message: &NewOutbound) -> Result<InsertOutcome, StoreError> {
        self.enter(&format!(
            "record_outbound/{}/{}",
            message.tenant, message.chat
        ))
        .await?;
        let result = self.inner.record_outbound(message).await;
        match message.epoch {
            Some(epoch) => self.fenced(result, &message.tenant, epoch, "record_outbound"),
            None => result,
        }
    }
    async fn update_status(&self, update: &StatusUpdate) -> Result<StatusOutcome, StoreError> {
        self.enter(&format!("update_status/{}", update.tenant))
            .await?;
        self.inner.update_status(update).await
    }
    async fn record_reply(&self, reply: &NewReply) -> Result<ReplyOutcome, StoreError> {
        self.enter(&format!("record_reply/{}/{}", reply.tenant, reply.chat))
            .await?;
        let result = self.inner.record_reply(reply).await;
        self.fenced(result, &reply.tenant, reply.epoch, "record_reply")
    }
    async fn dismiss_inbound(
        &self,
        tenant: &TenantId,
        chat: &ChatId,
        inbound: &[i64],
        at_ms: i64,
        epoch: u64,
    ) -> Result<DismissOutcome, StoreError> {
        self.enter(&format!("dismiss_inbound/{tenant}/{chat}"))
            .await?;
        let result = self
            .inner
            .dismiss_inbound(tenant, chat, inbound, at_ms, epoch)
            .await;
        self.fenced(result, tenant, epoch, "dismiss_inbound")
    }
    async fn mark_reply_sent(
        &self,
        tenant: &TenantId,
        reply_id: i64,
        wamid: &Wamid,
        at_ms: i64,
        epoch: u64,
    ) -> Result<(), StoreError> {
        self.enter(&format!("mark_reply_sent/{tenant}/{reply_id}"))
            .await?;
        let result = self
            .inner
            .mark_reply_sent(tenant, reply_id, wamid, at_ms, epoch)
            .await;
        self.fenced(result, tenant, epoch, "mark_reply_sent")
    }
    async fn mark_reply_failed(
        &self,
        tenant: &TenantId,
        reply_id: i64,
        failure: &SendFailure,
        at_ms: i64,
        epoch: u64,
    ) -> Result<(), StoreError> {
        self.enter(&format!("mark_reply_failed/{tenant}/{reply_id}"))
            .await?;
        let result = self
            .inner
            .mark_reply_failed(tenant, reply_id, failure, at_ms, epoch)
            .await;
        self.fenced(result, tenant, epoch, "mark_reply_failed")
    }
    async fn unanswered_inbound(
        &self,
        tenant: &TenantId,
        since_ms: i64,
    ) -> Result<Vec<StoredMessage>, StoreError> {
        self.enter(&format!("unanswered_inbound/{tenant}")).await?;
        self.inner.unanswered_inbound(tenant, since_ms).await
    }
    async fn tenants_with_pending_work(
        &self,
        since_ms: i64,
        before_ms: i64,
    ) -> Result<Vec<TenantId>, StoreError> {
        self.enter("tenants_with_pending_work").await?;
        self.inner
            .tenants_with_pending_work(since_ms, before_ms)
            .await
    }
    async fn unanswered_inbound_in_chat(
        &self,
        tenant: &TenantId,
        chat: &ChatId,
    ) -> Result<Vec<StoredMessage>, StoreError> {
        self.enter(&format!("unanswered_inbound_in_chat/{tenant}/{chat}"))
            .await?;
        self.inner.unanswered_inbound_in_chat(tenant, chat).await
    }
    async fn unsent_replies(&self, tenant: &TenantId) -> Result<Vec<StoredMessage>, StoreError> {
        self.enter(&format!("unsent_replies/{tenant}")).await?;
        self.inner.unsent_replies(tenant).await
    }
    async fn conversation_messages(
        &self,
        tenant: &TenantId,
        chat: &ChatId,
        limit: u32,
    ) -> Result<Vec<StoredMessage>, StoreError> {
        self.enter(&format!("conversation_messages/{tenant}/{chat}"))
            .await?;
        self.inner.conversation_messages(tenant, chat, limit).await
    }
    async fn recent_history(
        &self,
        tenant: &TenantId,
        chat: &ChatId,
        limit: u32,
    ) -> Result<Vec<StoredMessage>, StoreError> {
        self.enter(&format!("recent_history/{tenant}/{chat}"))
            .await?;
        self.inner.recent_history(tenant, chat, limit).await
    }
    async fn chat_log(
        &self,
        tenant: &TenantId,
        before_ms: Option<i64>,
        limit: u32,
    ) -> Result<Vec<StoredMessage>, StoreError> {
        self.enter(&format!("chat_log/{tenant}")).await?;
        self.inner.chat_log(tenant, before_ms, limit).await
    }
}

#[async_trait]
impl KnowledgeStore for GatedStore {
    async fn add_knowledge(&self, document: &NewKnowledge) -> Result<i64, StoreError> {
        self.enter("add_knowledge").await?;
        self.inner.add_knowledge(document).await
    }
    async fn list_knowledge(
        &self,
        tenant: &TenantId,
    ) -> Result<Vec<KnowledgeDocument>, StoreError> {
        self.enter(&format!("list_knowledge/{tenant}")).await?;
        self.inner.list_knowledge(tenant).await
    }
    async fn delete_knowledge(
        &self,
        tenant: &TenantId,
        document_id: i64,
    ) -> Result<bool, StoreError> {
        self.enter(&format!("delete_knowledge/{tenant}")).await?;
        self.inner.delete_knowledge(tenant, document_id).await
    }
    async fn search_knowledge(
        &self,
        tenant: &TenantId,
        question: &str,
        k: u32,
    ) -> Result<Vec<KnowledgeHit>, StoreError> {
        self.enter(&format!("search_knowledge/{tenant}")).await?;
        self.inner.search_knowledge(tenant, question, k).await
    }
    async fn knowledge_version(&self, tenant: &TenantId) -> Result<i64, StoreError> {
        self.enter(&format!("knowledge_version/{tenant}")).await?;
        self.inner.knowledge_version(tenant).await
    }
}

#[async_trait]
impl UsageStore for GatedStore {
    async fn record_llm_usage(&self, usage: &LlmUsage) -> Result<(), StoreError> {
        self.enter(&format!("record_llm_usage/{}", usage.tenant))
            .await?;
        self.inner.record_llm_usage(usage).await
    }
    async fn llm_usage_totals(
        &self,
        tenant: &TenantId,
        since_ms: i64,
    ) -> Result<LlmUsageTotals, StoreError> {
        self.enter(&format!("llm_usage_totals/{tenant}")).await?;
        self.inner.llm_usage_totals(tenant, since_ms).await
    }
}

#[async_trait]
impl EventStore for GatedStore {
    async fn record_event(&self, event: &NewEvent) -> Result<i64, StoreError> {
        self.enter("record_event").await?;
        self.inner.record_event(event).await
    }
    async fn recent_events(&self, limit: u32) -> Result<Vec<StoredEvent>, StoreError> {
        self.enter("recent_events").await?;
        self.inner.recent_events(limit).await
    }
}

#[async_trait]
impl RetentionStore for GatedStore {
    async fn delete_messages_before(&self, cutoff_ms: i64) -> Result<u64, StoreError> {
        self.enter("delete_messages_before").await?;
        self.inner.delete_messages_before(cutoff_ms).await
    }
}
