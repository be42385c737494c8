//! [`MemoryStore`]'s messages role.

use std::collections::BTreeSet;

use async_trait::async_trait;
use salesboy_actors::store::prelude::*;
use salesboy_actors::store::{
    Conversation, DeliveryStatus, Direction, DismissOutcome, InsertOutcome, NewInbound,
    NewOutbound, NewReply, NewStatus, ReplyOutcome, SendFailure, StatusOutcome, StoreError,
    StoredInbound, StoredMessage,
};
use salesboy_protocol::{ChatId, TenantId, Wamid};

use super::memory::MemoryStore;

#[async_trait]
impl MessageStore for MemoryStore {
    async fn conversations(
        &self,
        tenant: &TenantId,
        after: Option<&ChatId>,
        limit: u32,
    ) -> Result<Vec<Conversation>, StoreError> {
        let tables = self.tables();
        // The order's key: most recent inbound first (never: last), then chat id.
        let key = |c: &Conversation| {
            (
                std::cmp::Reverse(c.last_inbound_ms.unwrap_or(-1)),
                c.chat.to_string(),
            )
        };
        let cursor = match after {
            None => None,
            Some(chat) => match tables.conversations.get(&(tenant.clone(), chat.clone())) {
                Some(found) => Some(key(found)),
                None => return Ok(Vec::new()),
            },
        };
        let mut found: Vec<Conversation> = tables
            .conversations
            .values()
            .filter(|c| &c.tenant == tenant)
            .filter(|c| cursor.as_ref().is_none_or(|cursor| key(c) > *cursor))
            .cloned()
            .collect();
        found.sort_by_key(key);
        found.truncate(limit as usize);
        Ok(found)
    }

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
        _at_ms: i64,
        epoch: u64,
    ) -> Result<(), StoreError> {
        let mut tables = self.tables();
        self.fence(&tables, tenant, epoch)?;
        tables.conversation_mut(tenant, chat).bot_paused_until_ms = until_ms;
        Ok(())
    }

    async fn insert_inbound(&self, message: &NewInbound) -> Result<InsertOutcome, StoreError> {
        Ok(self.tables().insert_inbound(message).outcome)
    }

    /// The delivery's messages in one step (one transaction), each told whether it started
    /// its chat and which inbound message preceded it there, as the SQL store tells them.
    async fn insert_inbound_batch(
        &self,
        messages: &[NewInbound],
    ) -> Vec<Result<StoredInbound, StoreError>> {
        let mut tables = self.tables();
        messages
            .iter()
            .map(|message| Ok(tables.insert_inbound(message)))
            .collect()
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
        if let Some(client_ref) = &message.client_ref
            && let Some(&id) = tables
                .client_refs
                .get(&(message.tenant.clone(), client_ref.clone()))
        {
            return Ok(InsertOutcome::Duplicate { id });
        }
        tables.conversation_mut(&message.tenant, &message.chat);
        let id = tables.next_id();
        if let Some(client_ref) = &message.client_ref {
            tables
                .client_refs
                .insert((message.tenant.clone(), client_ref.clone()), id);
        }
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
                sent_ms: None,
                content: message.content.clone(),
                passages: Vec::new(),
            },
        );
        Ok(InsertOutcome::Inserted { id })
    }

    async fn update_status(&self, update: &NewStatus) -> Result<StatusOutcome, StoreError> {
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
        if !update.status.may_follow(current) {
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
        let outbound_id = tables.next_id();
        tables.messages.insert(
            outbound_id,
            StoredMessage {
                id: outbound_id,
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
                sent_ms: None,
                content: None,
                passages: Vec::new(),
            },
        );
        for id in ids {
            tables.links.insert(id, Some(outbound_id));
        }
        Ok(ReplyOutcome::Recorded { outbound_id })
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
        outbound_id: i64,
        wamid: &Wamid,
        at_ms: i64,
        epoch: u64,
    ) -> Result<(), StoreError> {
        let mut tables = self.tables();
        self.fence(&tables, tenant, epoch)?;
        let message = tables.outbound_mut(tenant, outbound_id)?;
        if message.status != Some(DeliveryStatus::Pending) {
            return Ok(());
        }
        message.wamid = Some(wamid.clone());
        message.status = Some(DeliveryStatus::Sent);
        message.status_ms = Some(at_ms);
        tables
            .wamids
            .insert((tenant.clone(), wamid.clone()), outbound_id);
        Ok(())
    }

    async fn mark_reply_failed(
        &self,
        tenant: &TenantId,
        outbound_id: i64,
        failure: &SendFailure,
        at_ms: i64,
        epoch: u64,
    ) -> Result<(), StoreError> {
        let mut tables = self.tables();
        self.fence(&tables, tenant, epoch)?;
        let message = tables.outbound_mut(tenant, outbound_id)?;
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
                .filter(|m| m.status == Some(DeliveryStatus::Pending) && m.created_ms < before_ms)
                .map(|m| m.tenant.clone()),
        );
        // Nothing activates a tenant whose session is stopped, or a deleted one.
        pending.retain(|tenant| {
            tables
                .tenant(tenant)
                .is_some_and(|t| t.session_stopped_ms.is_none())
        });
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
        before: Option<i64>,
        limit: u32,
    ) -> Result<Vec<StoredMessage>, StoreError> {
        let tables = self.tables();
        let Some(before) = before else {
            return Ok(tables.last_of_chat(tenant, chat, limit, |_| true));
        };
        let cursor = tables
            .messages
            .values()
            .find(|m| m.id == before && &m.tenant == tenant && &m.chat == chat)
            .map(|m| (m.created_ms, m.id));
        Ok(match cursor {
            Some(cursor) => {
                tables.last_of_chat(tenant, chat, limit, |m| (m.created_ms, m.id) < cursor)
            }
            None => Vec::new(),
        })
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
