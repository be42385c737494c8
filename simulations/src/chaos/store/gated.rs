//! [`GatedStore`]: one node incarnation's view of the shared [`MemoryStore`].

use std::sync::Arc;

use parking_lot::Mutex;
use std::time::Duration;

use async_trait::async_trait;
use salesboy_actors::store::prelude::*;
use salesboy_actors::store::{
    Conversation, Deletion, DismissOutcome, InsertOutcome, KnowledgeDocument, KnowledgeHit,
    LlmUsage, LlmUsageTotals, NewInbound, NewKnowledge, NewOutbound, NewRejectedItem, NewReply,
    NewStatus, NewTenant, NewWhatsAppNumber, ReplyOutcome, SendFailure, StatusOutcome, StoreError,
    StoredInbound, StoredMessage, StoredRejectedItem, Tenant, TenantRoute, UsageReport,
};
use salesboy_protocol::events::Event;
use salesboy_protocol::{ChatId, PhoneNumberId, TenantId, Wamid};

use super::super::gate::{Gate, Link};
use super::super::rng::KeyedDraws;
use super::memory::MemoryStore;

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

    /// Logs an accepted fenced write (`epoch` is `None` for a write that is not fenced).
    fn fenced<T>(
        &self,
        result: Result<T, StoreError>,
        tenant: &TenantId,
        epoch: impl Into<Option<u64>>,
        what: &'static str,
    ) -> Result<T, StoreError> {
        if let (Ok(_), Some(epoch)) = (&result, epoch.into()) {
            self.log.lock().push(WriteRecord::Fenced {
                node: self.node.clone(),
                tenant: tenant.clone(),
                epoch,
                what,
            });
        }
        result
    }

    /// Logs an accepted epoch claim.
    fn claimed<T>(
        &self,
        result: Result<T, StoreError>,
        tenant: &TenantId,
        epoch: u64,
        _what: &'static str,
    ) -> Result<T, StoreError> {
        if result.is_ok() {
            self.log.lock().push(WriteRecord::Claim {
                node: self.node.clone(),
                tenant: tenant.clone(),
                epoch,
            });
        }
        result
    }
}

/// Implements a store role for [`GatedStore`]: each method passes [`GatedStore::enter`]
/// with its latency key (`format!` arguments), calls the shared store, and, with
/// `log fenced(tenant, epoch)` or `log claimed(tenant, epoch)`, logs the accepted write.
/// Methods of another shape follow, written out, after `more:`.
macro_rules! gated {
    ($role:ident {
        $(
            fn $name:ident($($arg:ident: $ty:ty),*) -> $out:ty => ($($key:tt)+)
                $(, log $log:ident($tenant:expr, $epoch:expr))?;
        )*
        $(more: $($more:tt)*)?
    }) => {
        #[async_trait]
        impl $role for GatedStore {
            $(
                async fn $name(&self, $($arg: $ty),*) -> Result<$out, StoreError> {
                    self.enter(&format!($($key)+)).await?;
                    let result = self.inner.$name($($arg),*).await;
                    $(let result = self.$log(result, $tenant, $epoch, stringify!($name));)?
                    result
                }
            )*
            $($($more)*)?
        }
    };
}

gated!(HealthStore {
    fn health() -> () => ("health");
});

gated!(TenantStore {
    fn upsert_tenant(tenant: &NewTenant) -> () => ("upsert_tenant");
    fn tenant(id: &TenantId) -> Option<Tenant> => ("tenant/{id}");
    fn list_tenants() -> Vec<Tenant> => ("list_tenants");
    fn upsert_whatsapp_number(number: &NewWhatsAppNumber) -> () => ("upsert_whatsapp_number");
    fn tenant_by_phone_number(phone_number_id: &PhoneNumberId) -> Option<TenantRoute>
        => ("tenant_by_phone_number");
    fn set_session_stopped(tenant: &TenantId, stopped: bool, at_ms: i64) -> ()
        => ("set_session_stopped/{tenant}");
    fn delete_tenant(tenant: &TenantId, deletion: Deletion, at_ms: i64) -> bool
        => ("delete_tenant/{tenant}");
});

gated!(FencingStore {
    fn claim_epoch(tenant: &TenantId, epoch: u64) -> () => ("claim_epoch/{tenant}"),
        log claimed(tenant, epoch);
    fn current_epoch(tenant: &TenantId) -> Option<u64> => ("current_epoch/{tenant}");
});

gated!(MessageStore {
    fn conversations(tenant: &TenantId, after: Option<&ChatId>, limit: u32) -> Vec<Conversation>
        => ("conversations/{tenant}");
    fn conversation(tenant: &TenantId, chat: &ChatId) -> Option<Conversation>
        => ("conversation/{tenant}/{chat}");
    fn set_bot_paused(tenant: &TenantId, chat: &ChatId, until_ms: Option<i64>, at_ms: i64, epoch: u64) -> ()
        => ("set_bot_paused/{tenant}/{chat}"), log fenced(tenant, epoch);
    fn insert_inbound(message: &NewInbound) -> InsertOutcome
        => ("insert_inbound/{}/{}", message.tenant, message.chat);
    fn record_outbound(message: &NewOutbound) -> InsertOutcome
        => ("record_outbound/{}/{}", message.tenant, message.chat),
        log fenced(&message.tenant, message.epoch);
    fn update_status(update: &NewStatus) -> StatusOutcome
        => ("update_status/{}", update.tenant);
    fn record_reply(reply: &NewReply) -> ReplyOutcome
        => ("record_reply/{}/{}", reply.tenant, reply.chat), log fenced(&reply.tenant, reply.epoch);
    fn dismiss_inbound(tenant: &TenantId, chat: &ChatId, inbound: &[i64], at_ms: i64, epoch: u64)
        -> DismissOutcome
        => ("dismiss_inbound/{tenant}/{chat}"), log fenced(tenant, epoch);
    fn mark_reply_sent(tenant: &TenantId, outbound_id: i64, wamid: &Wamid, at_ms: i64, epoch: u64)
        -> () => ("mark_reply_sent/{tenant}/{outbound_id}"), log fenced(tenant, epoch);
    fn mark_reply_failed(
        tenant: &TenantId, outbound_id: i64, failure: &SendFailure, at_ms: i64, epoch: u64
    ) -> () => ("mark_reply_failed/{tenant}/{outbound_id}"), log fenced(tenant, epoch);
    fn unanswered_inbound(tenant: &TenantId, since_ms: i64) -> Vec<StoredMessage>
        => ("unanswered_inbound/{tenant}");
    fn tenants_with_pending_work(since_ms: i64, before_ms: i64) -> Vec<TenantId>
        => ("tenants_with_pending_work");
    fn unanswered_inbound_in_chat(tenant: &TenantId, chat: &ChatId) -> Vec<StoredMessage>
        => ("unanswered_inbound_in_chat/{tenant}/{chat}");
    fn unsent_replies(tenant: &TenantId) -> Vec<StoredMessage> => ("unsent_replies/{tenant}");
    fn conversation_messages(
        tenant: &TenantId, chat: &ChatId, before: Option<i64>, limit: u32
    ) -> Vec<StoredMessage>
        => ("conversation_messages/{tenant}/{chat}");
    fn recent_history(tenant: &TenantId, chat: &ChatId, limit: u32) -> Vec<StoredMessage>
        => ("recent_history/{tenant}/{chat}");
    fn chat_log(tenant: &TenantId, before_ms: Option<i64>, limit: u32) -> Vec<StoredMessage>
        => ("chat_log/{tenant}");
    more:
    /// A delivery's messages pass the gate once, as one transaction; refused, each is.
    async fn insert_inbound_batch(
        &self,
        messages: &[NewInbound],
    ) -> Vec<Result<StoredInbound, StoreError>> {
        let key = messages
            .first()
            .map_or_else(String::new, |m| format!("{}/{}", m.tenant, m.chat));
        match self.enter(&format!("insert_inbound_batch/{key}")).await {
            Ok(()) => self.inner.insert_inbound_batch(messages).await,
            Err(error) => messages.iter().map(|_| Err(error.clone())).collect(),
        }
    }
});

gated!(KnowledgeStore {
    fn add_knowledge(document: &NewKnowledge) -> i64 => ("add_knowledge");
    fn list_knowledge(tenant: &TenantId) -> Vec<KnowledgeDocument>
        => ("list_knowledge/{tenant}");
    fn delete_knowledge(tenant: &TenantId, document_id: i64, at_ms: i64) -> bool
        => ("delete_knowledge/{tenant}");
    fn search_knowledge(tenant: &TenantId, question: &str, k: u32) -> Vec<KnowledgeHit>
        => ("search_knowledge/{tenant}");
    fn knowledge_version(tenant: &TenantId) -> i64 => ("knowledge_version/{tenant}");
});

gated!(UsageStore {
    fn record_llm_usage(usage: &LlmUsage) -> () => ("record_llm_usage/{}", usage.tenant);
    fn llm_usage_totals(tenant: &TenantId, since_ms: i64) -> LlmUsageTotals
        => ("llm_usage_totals/{tenant}");
    fn usage_between(tenant: &TenantId, from_ms: i64, until_ms: i64) -> UsageReport
        => ("usage_between/{tenant}");
});

gated!(EventStore {
    fn record_events(events: &[Event]) -> () => ("record_events");
    fn recent_events(limit: u32) -> Vec<Event> => ("recent_events");
});

gated!(RetentionStore {
    fn delete_messages_before(cutoff_ms: i64) -> u64 => ("delete_messages_before");
});

gated!(RejectedItemStore {
    fn record_rejected_item(item: &NewRejectedItem) -> i64 => ("record_rejected_item");
    fn rejected_items(tenant: &TenantId, before: Option<i64>, limit: u32)
        -> Vec<StoredRejectedItem> => ("rejected_items/{tenant}");
});
