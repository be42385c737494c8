//! The actors' store roles on [`SqlStore`]: each method runs its concern module's query
//! through `SqlStore::run`, which maps errors and keeps the database password out of them.

use async_trait::async_trait;
use salesboy_actors::store::prelude::*;
use salesboy_actors::store::{
    Conversation, Deletion, DismissOutcome, InsertOutcome, KnowledgeDocument, KnowledgeHit,
    KnownKnowledge, LlmUsage, LlmUsageTotals, NewInbound, NewKnowledge, NewOutbound,
    NewRejectedItem, NewReply, NewStatus, NewTenant, NewWhatsAppNumber, ReplyOutcome, SendFailure,
    StatusOutcome, StoreError, StoredInbound, StoredMessage, StoredRejectedItem, Tenant,
    TenantRoute, UsageReport,
};
use salesboy_actors::store::{NewTenantToken, TenantToken};
use salesboy_protocol::events::Event;
use salesboy_protocol::{ChatId, PhoneNumberId, TenantId, Wamid};

use super::error::Failure;
use super::messages::ReplySent;
use super::writer::{Write, Written};
use super::{
    SqlStore, activity, embeddings, fencing, knowledge, messages, outbox, rejected, retention,
    tenants, tokens,
};

impl SqlStore {
    /// Group-commits one write.
    async fn write_one(&self, write: Write) -> Result<Written, StoreError> {
        let result = self.db.writer.write(vec![write]).await.pop();
        self.written(result.unwrap_or_else(|| Err(no_result().into())))
    }

    /// A write's result, its failure mapped as [`SqlStore::run`] maps it.
    fn written(&self, result: Result<Written, Failure>) -> Result<Written, StoreError> {
        result.map_err(|failure| failure.into_store_error(self.redacted_url()))
    }
}

/// The group-commit writer answered a write with another write's kind of result, or none.
fn no_result() -> StoreError {
    StoreError::Backend("the store's writer gave no result for a write".to_owned())
}

#[async_trait]
impl HealthStore for SqlStore {
    async fn health(&self) -> Result<(), StoreError> {
        self.run(async {
            sqlx::query("SELECT 1").execute(&self.db.pool).await?;
            Ok(())
        })
        .await
    }
}

#[async_trait]
impl TenantStore for SqlStore {
    async fn upsert_tenant(&self, tenant: &NewTenant) -> Result<(), StoreError> {
        self.run(tenants::upsert_tenant(&self.db, tenant)).await
    }

    async fn tenant(&self, id: &TenantId) -> Result<Option<Tenant>, StoreError> {
        self.run(tenants::tenant(&self.db, id)).await
    }

    async fn list_tenants(&self) -> Result<Vec<Tenant>, StoreError> {
        self.run(tenants::list_tenants(&self.db)).await
    }

    async fn upsert_whatsapp_number(&self, number: &NewWhatsAppNumber) -> Result<(), StoreError> {
        self.run(tenants::upsert_whatsapp_number(&self.db, number))
            .await
    }

    async fn tenant_by_phone_number(
        &self,
        phone_number_id: &PhoneNumberId,
    ) -> Result<Option<TenantRoute>, StoreError> {
        self.run(tenants::tenant_by_phone_number(&self.db, phone_number_id))
            .await
    }

    async fn set_session_stopped(
        &self,
        tenant: &TenantId,
        stopped: bool,
        at_ms: i64,
    ) -> Result<(), StoreError> {
        self.run(tenants::set_session_stopped(
            &self.db, tenant, stopped, at_ms,
        ))
        .await
    }

    async fn delete_tenant(
        &self,
        tenant: &TenantId,
        deletion: Deletion,
        at_ms: i64,
    ) -> Result<bool, StoreError> {
        let deleted = self
            .run(tenants::delete_tenant(&self.db, tenant, deletion, at_ms))
            .await;
        self.texts.forget(tenant);
        deleted
    }
}

#[async_trait]
impl TenantTokenStore for SqlStore {
    async fn insert_tenant_token(&self, token: &NewTenantToken) -> Result<(), StoreError> {
        self.run(tokens::insert_tenant_token(&self.db, token)).await
    }

    async fn tenant_tokens(&self, tenant: &TenantId) -> Result<Vec<TenantToken>, StoreError> {
        self.run(tokens::tenant_tokens(&self.db, tenant)).await
    }

    async fn delete_tenant_token(&self, tenant: &TenantId, id: &str) -> Result<bool, StoreError> {
        self.run(tokens::delete_tenant_token(&self.db, tenant, id))
            .await
    }

    async fn tenant_token_by_digest(
        &self,
        digest: &str,
    ) -> Result<Option<TenantToken>, StoreError> {
        self.run(tokens::tenant_token_by_digest(&self.db, digest))
            .await
    }
}

#[async_trait]
impl FencingStore for SqlStore {
    async fn claim_epoch(&self, tenant: &TenantId, epoch: u64) -> Result<(), StoreError> {
        self.run(fencing::claim_epoch(&self.db, tenant, epoch))
            .await
    }

    async fn current_epoch(&self, tenant: &TenantId) -> Result<Option<u64>, StoreError> {
        self.run(fencing::current_epoch(&self.db, tenant)).await
    }
}

#[async_trait]
impl MessageStore for SqlStore {
    async fn conversations(
        &self,
        tenant: &TenantId,
        after: Option<&ChatId>,
        limit: u32,
    ) -> Result<Vec<Conversation>, StoreError> {
        self.run(messages::conversations(&self.db, tenant, after, limit))
            .await
    }

    async fn conversation(
        &self,
        tenant: &TenantId,
        chat: &ChatId,
    ) -> Result<Option<Conversation>, StoreError> {
        self.run(messages::conversation(&self.db, tenant, chat))
            .await
    }

    async fn set_bot_paused(
        &self,
        tenant: &TenantId,
        chat: &ChatId,
        until_ms: Option<i64>,
        at_ms: i64,
        epoch: u64,
    ) -> Result<(), StoreError> {
        self.run(messages::set_bot_paused(
            &self.db, tenant, chat, until_ms, at_ms, epoch,
        ))
        .await
    }

    async fn insert_inbound(&self, message: &NewInbound) -> Result<InsertOutcome, StoreError> {
        let mut results = self
            .insert_inbound_batch(std::slice::from_ref(message))
            .await;
        let stored = results.pop().unwrap_or_else(|| Err(no_result()))?;
        Ok(stored.outcome)
    }

    async fn insert_inbound_batch(
        &self,
        messages: &[NewInbound],
    ) -> Vec<Result<StoredInbound, StoreError>> {
        let writes = messages.iter().cloned().map(Write::Inbound).collect();
        self.db
            .writer
            .write(writes)
            .await
            .into_iter()
            .map(|result| match self.written(result)? {
                Written::Inbound(outcome) => Ok(outcome),
                _ => Err(no_result()),
            })
            .collect()
    }

    async fn record_outbound(&self, message: &NewOutbound) -> Result<InsertOutcome, StoreError> {
        self.run(messages::record_outbound(&self.db, message)).await
    }

    async fn update_status(&self, update: &NewStatus) -> Result<StatusOutcome, StoreError> {
        self.run(messages::update_status(&self.db, update)).await
    }

    async fn record_reply(&self, reply: &NewReply) -> Result<ReplyOutcome, StoreError> {
        match self.write_one(Write::Reply(reply.clone())).await? {
            Written::Reply(outcome) => Ok(outcome),
            _ => Err(no_result()),
        }
    }

    async fn dismiss_inbound(
        &self,
        tenant: &TenantId,
        chat: &ChatId,
        inbound: &[i64],
        at_ms: i64,
        epoch: u64,
    ) -> Result<DismissOutcome, StoreError> {
        self.run(messages::dismiss_inbound(
            &self.db, tenant, chat, inbound, at_ms, epoch,
        ))
        .await
    }

    async fn mark_reply_sent(
        &self,
        tenant: &TenantId,
        outbound_id: i64,
        wamid: &Wamid,
        at_ms: i64,
        epoch: u64,
    ) -> Result<(), StoreError> {
        let sent = ReplySent {
            tenant: tenant.clone(),
            outbound_id,
            wamid: wamid.clone(),
            at_ms,
            epoch,
        };
        self.write_one(Write::ReplySent(sent)).await.map(|_| ())
    }

    async fn mark_reply_failed(
        &self,
        tenant: &TenantId,
        outbound_id: i64,
        failure: &SendFailure,
        at_ms: i64,
        epoch: u64,
    ) -> Result<(), StoreError> {
        self.run(messages::mark_reply_failed(
            &self.db,
            tenant,
            outbound_id,
            failure,
            at_ms,
            epoch,
        ))
        .await
    }

    async fn unanswered_inbound(
        &self,
        tenant: &TenantId,
        since_ms: i64,
    ) -> Result<Vec<StoredMessage>, StoreError> {
        self.run(messages::unanswered_inbound(&self.db, tenant, since_ms))
            .await
    }

    async fn unanswered_inbound_in_chat(
        &self,
        tenant: &TenantId,
        chat: &ChatId,
    ) -> Result<Vec<StoredMessage>, StoreError> {
        self.run(messages::unanswered_inbound_in_chat(&self.db, tenant, chat))
            .await
    }

    async fn tenants_with_pending_work(
        &self,
        since_ms: i64,
        before_ms: i64,
    ) -> Result<Vec<TenantId>, StoreError> {
        self.run(messages::tenants_with_pending_work(
            &self.db, since_ms, before_ms,
        ))
        .await
    }

    async fn unsent_replies(&self, tenant: &TenantId) -> Result<Vec<StoredMessage>, StoreError> {
        self.run(messages::unsent_replies(&self.db, tenant)).await
    }

    async fn conversation_messages(
        &self,
        tenant: &TenantId,
        chat: &ChatId,
        before: Option<i64>,
        limit: u32,
    ) -> Result<Vec<StoredMessage>, StoreError> {
        match before {
            Some(before) => {
                let read = messages::chat_messages_before(&self.db, tenant, chat, before, limit);
                self.run(read).await
            }
            None => {
                let query = messages::CHAT_MESSAGES;
                self.run(messages::last_of_chat(&self.db, query, tenant, chat, limit))
                    .await
            }
        }
    }

    async fn recent_history(
        &self,
        tenant: &TenantId,
        chat: &ChatId,
        limit: u32,
    ) -> Result<Vec<StoredMessage>, StoreError> {
        let query = messages::CHAT_HISTORY;
        self.run(messages::last_of_chat(&self.db, query, tenant, chat, limit))
            .await
    }

    async fn chat_log(
        &self,
        tenant: &TenantId,
        before_ms: Option<i64>,
        limit: u32,
    ) -> Result<Vec<StoredMessage>, StoreError> {
        self.run(messages::chat_log(&self.db, tenant, before_ms, limit))
            .await
    }
}

#[async_trait]
impl KnowledgeStore for SqlStore {
    async fn add_knowledge(&self, document: &NewKnowledge) -> Result<i64, StoreError> {
        let added = self.run(knowledge::add_knowledge(&self.db, document)).await;
        // Also after an error: the commit may have happened.
        self.texts.forget(&document.tenant);
        let id = added?;
        if let Some(retrieval) = &self.retrieval {
            retrieval.wake();
        }
        Ok(id)
    }

    async fn list_knowledge(
        &self,
        tenant: &TenantId,
    ) -> Result<Vec<KnowledgeDocument>, StoreError> {
        let mut documents = self
            .run(knowledge::list_knowledge(&self.db, tenant))
            .await?;
        if let Some(retrieval) = &self.retrieval {
            // A tenant whose model this node has no provider for shows nothing embedded.
            let model = self
                .run(embeddings::tenant_model(&self.db, retrieval, tenant))
                .await?;
            let counts = match model {
                Some((model, _)) => {
                    self.run(embeddings::embedded_counts(&self.db, tenant, &model))
                        .await?
                }
                None => std::collections::HashMap::new(),
            };
            for document in &mut documents {
                let (embedded, refused) = counts.get(&document.id).copied().unwrap_or((0, 0));
                document.embedded_chunks = Some(embedded);
                document.refused_chunks = Some(refused);
            }
        }
        Ok(documents)
    }

    async fn delete_knowledge(
        &self,
        tenant: &TenantId,
        document_id: i64,
        at_ms: i64,
    ) -> Result<bool, StoreError> {
        let deleted = self
            .run(knowledge::delete_knowledge(
                &self.db,
                tenant,
                document_id,
                at_ms,
            ))
            .await;
        self.texts.forget(tenant);
        deleted
    }

    async fn search_knowledge(
        &self,
        tenant: &TenantId,
        question: &str,
        k: u32,
    ) -> Result<Vec<KnowledgeHit>, StoreError> {
        self.search(tenant, question, k, None).await
    }

    async fn search_knowledge_known(
        &self,
        tenant: &TenantId,
        question: &str,
        k: u32,
        known: KnownKnowledge,
    ) -> Result<Vec<KnowledgeHit>, StoreError> {
        self.search(tenant, question, k, Some(known)).await
    }

    async fn knowledge_version(&self, tenant: &TenantId) -> Result<i64, StoreError> {
        self.run(knowledge::knowledge_version(&self.db, tenant))
            .await
    }
}

impl SqlStore {
    /// The knowledge search: hybrid with retrieval (which reads the tenant's stamp itself);
    /// else from the in-memory full-text cache, without a read when `known` is as new as
    /// the cached passages.
    async fn search(
        &self,
        tenant: &TenantId,
        question: &str,
        k: u32,
        known: Option<KnownKnowledge>,
    ) -> Result<Vec<KnowledgeHit>, StoreError> {
        match &self.retrieval {
            Some(retrieval) => {
                self.run(embeddings::hybrid_search(
                    &self.db, retrieval, tenant, question, k,
                ))
                .await
            }
            None => {
                self.run(knowledge::search_knowledge(
                    &self.db,
                    &self.texts,
                    tenant,
                    question,
                    k,
                    known,
                ))
                .await
            }
        }
    }
}

#[async_trait]
impl UsageStore for SqlStore {
    async fn record_llm_usage(&self, usage: &LlmUsage) -> Result<(), StoreError> {
        self.run(activity::record_llm_usage(&self.db, usage)).await
    }

    async fn llm_usage_totals(
        &self,
        tenant: &TenantId,
        since_ms: i64,
    ) -> Result<LlmUsageTotals, StoreError> {
        self.run(activity::llm_usage_totals(&self.db, tenant, since_ms))
            .await
    }

    async fn usage_between(
        &self,
        tenant: &TenantId,
        from_ms: i64,
        until_ms: i64,
    ) -> Result<UsageReport, StoreError> {
        self.run(activity::usage_between(&self.db, tenant, from_ms, until_ms))
            .await
    }
}

#[async_trait]
impl EventStore for SqlStore {
    async fn record_events(&self, events: &[Event]) -> Result<(), StoreError> {
        self.run(outbox::record_events(&self.db, events)).await
    }

    async fn recent_events(&self, limit: u32) -> Result<Vec<Event>, StoreError> {
        self.run(outbox::recent_events(&self.db, limit)).await
    }
}

#[async_trait]
impl RetentionStore for SqlStore {
    async fn delete_messages_before(&self, cutoff_ms: i64) -> Result<u64, StoreError> {
        self.run(retention::delete_all_before(
            &self.db,
            retention::RetentionTable::Messages,
            cutoff_ms,
            retention::DEFAULT_BATCH,
        ))
        .await
        .map(|(deleted, _)| deleted)
    }
}

#[async_trait]
impl RejectedItemStore for SqlStore {
    async fn record_rejected_item(&self, item: &NewRejectedItem) -> Result<i64, StoreError> {
        self.run(rejected::record_rejected_item(&self.db, item))
            .await
    }

    async fn rejected_items(
        &self,
        tenant: &TenantId,
        before: Option<i64>,
        limit: u32,
    ) -> Result<Vec<StoredRejectedItem>, StoreError> {
        self.run(rejected::rejected_items(&self.db, tenant, before, limit))
            .await
    }
}
