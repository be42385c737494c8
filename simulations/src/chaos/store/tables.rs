//! The in-memory tables and the queries the store's roles share.

use std::collections::{BTreeMap, BTreeSet};

use salesboy_actors::store::{
    Conversation, Direction, InsertOutcome, LlmUsage, NewInbound, NewTenant, Predecessor,
    StoreError, StoredInbound, StoredMessage, Tenant, WhatsAppNumber,
};
use salesboy_protocol::{ChatId, PhoneNumberId, TenantId, Wamid};

#[derive(Debug, Clone)]
pub(super) struct TenantRow {
    pub(super) new: NewTenant,
    pub(super) knowledge_version: i64,
    pub(super) numbers: BTreeMap<PhoneNumberId, WhatsAppNumber>,
    pub(super) session_stopped_ms: Option<i64>,
    /// Deleted with its data kept: hidden from every read.
    pub(super) deleted_ms: Option<i64>,
}

#[derive(Debug, Clone)]
pub(super) struct Document {
    pub(super) tenant: TenantId,
    pub(super) title: String,
    pub(super) chunks: Vec<String>,
    pub(super) created_ms: i64,
}

#[derive(Debug, Default)]
pub(super) struct Tables {
    pub(super) tenants: BTreeMap<TenantId, TenantRow>,
    pub(super) epochs: BTreeMap<TenantId, u64>,
    pub(super) conversations: BTreeMap<(TenantId, ChatId), Conversation>,
    pub(super) messages: BTreeMap<i64, StoredMessage>,
    pub(super) wamids: BTreeMap<(TenantId, Wamid), i64>,
    /// Owner sends' client refs → the message recorded with it.
    pub(super) client_refs: BTreeMap<(TenantId, String), i64>,
    /// Inbound message id → the reply answering it (`None`: dismissed).
    pub(super) links: BTreeMap<i64, Option<i64>>,
    pub(super) documents: BTreeMap<i64, Document>,
    pub(super) usage: Vec<LlmUsage>,
    pub(super) events: Vec<salesboy_protocol::events::Event>,
    pub(super) rejected: Vec<salesboy_actors::store::StoredRejectedItem>,
    pub(super) next_id: i64,
}

impl Tables {
    pub(super) fn next_id(&mut self) -> i64 {
        self.next_id += 1;
        self.next_id
    }

    pub(super) fn fence(
        &self,
        tenant: &TenantId,
        epoch: u64,
        accept_stale: bool,
    ) -> Result<(), StoreError> {
        match self.epochs.get(tenant) {
            Some(&current) if current > epoch && !accept_stale => Err(StoreError::StaleEpoch {
                tenant: tenant.clone(),
                given: epoch,
                current,
            }),
            _ => Ok(()),
        }
    }

    /// Stores an inbound message (or finds it stored), as the SQL store's insert does.
    pub(super) fn insert_inbound(&mut self, message: &NewInbound) -> StoredInbound {
        let key = (message.tenant.clone(), message.wamid.clone());
        if let Some(&id) = self.wamids.get(&key) {
            return StoredInbound {
                outcome: InsertOutcome::Duplicate { id },
                new_chat: false,
                predecessor: Predecessor::Unknown,
            };
        }
        let new_chat = !self
            .conversations
            .contains_key(&(message.tenant.clone(), message.chat.clone()));
        let predecessor = self
            .messages
            .values()
            .rev()
            .find(|m| {
                m.direction == Direction::Inbound
                    && m.tenant == message.tenant
                    && m.chat == message.chat
            })
            .map_or(Predecessor::FirstInChat, |m| Predecessor::Message(m.id));
        let conversation = self.conversation_mut(&message.tenant, &message.chat);
        if conversation
            .last_inbound_ms
            .is_none_or(|last| last < message.received_ms)
        {
            conversation.last_inbound_ms = Some(message.received_ms);
        }
        let id = self.next_id();
        self.wamids.insert(key, id);
        self.messages.insert(
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
                sent_ms: message.sent_ms,
                content: None,
                passages: Vec::new(),
            },
        );
        StoredInbound {
            outcome: InsertOutcome::Inserted { id },
            new_chat,
            predecessor,
        }
    }

    pub(super) fn conversation_mut(
        &mut self,
        tenant: &TenantId,
        chat: &ChatId,
    ) -> &mut Conversation {
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
    pub(super) fn linkable(
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

    pub(super) fn outbound_mut(
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

    pub(super) fn tenant(&self, id: &TenantId) -> Option<Tenant> {
        self.tenants
            .get(id)
            .filter(|row| row.deleted_ms.is_none())
            .map(|row| Tenant {
                id: id.clone(),
                name: row.new.name.clone(),
                system_prompt: row.new.system_prompt.clone(),
                llm_config: row.new.llm_config.clone(),
                llm_monthly_spend_cap_micros: row.new.llm_monthly_spend_cap_micros,
                embedding_model: row.new.embedding_model.clone(),
                knowledge_version: row.knowledge_version,
                engine: row.new.engine,
                web_hygiene: row.new.web_hygiene,
                read_receipts: row.new.read_receipts,
                created_ms: row.new.created_ms,
                numbers: row.numbers.values().cloned().collect(),
                session_stopped_ms: row.session_stopped_ms,
            })
    }

    pub(super) fn unanswered(&self, keep: impl Fn(&StoredMessage) -> bool) -> Vec<StoredMessage> {
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

    pub(super) fn last_of_chat(
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
