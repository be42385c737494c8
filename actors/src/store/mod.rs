//! The store: how the actors reach the database, the gateway's source of truth.
//!
//! The actor tree (and the node's ingress and admin API) reads and writes durable state
//! through role traits, one module per concern, each with the records it takes and returns;
//! the node implements them with sqlx for Postgres and SQLite:
//!
//! - `tenants`: [`TenantStore`], tenants and their WhatsApp numbers;
//! - `fencing`: [`FencingStore`], tenant epochs;
//! - `messages`: [`MessageStore`], conversations, messages, replies, delivery statuses and
//!   the reads reconciliation, the responder and the admin API make;
//! - `knowledge`: [`KnowledgeStore`], the knowledge base and its search;
//! - `usage`: [`UsageStore`], LLM usage and a tenant's usage over a period;
//! - `events`: [`EventStore`], events and alerts;
//! - `retention`: [`RetentionStore`], deleting old messages;
//! - `rejected`: [`RejectedItemStore`], webhook items that could not be read;
//! - `tokens`: [`TenantTokenStore`], tenants' API tokens (by digest; not part of [`Store`]);
//! - this module: [`HealthStore`], [`Store`] (every role at once, implemented for any type
//!   that implements them all), [`StoreError`] and [`prelude`].
//!
//! Guarantees every implementation gives (architecture §5 and §7):
//!
//! - **Inbound messages are deduplicated** on (tenant, wamid): a second insert of the same
//!   wamid is a no-op reported as [`InsertOutcome::Duplicate`], never an error.
//! - **One reply per inbound message**: [`MessageStore::record_reply`] links every inbound message it
//!   answers to the reply, atomically, before the reply is sent; a message that is already
//!   answered makes the whole call a no-op ([`ReplyOutcome::AlreadyAnswered`]).
//! - **Delivery statuses only move forward** (see [`DeliveryStatus::may_follow`]), decided
//!   in one conditional write, so out-of-order webhooks cannot regress them.
//! - **Fencing**: writes that change conversation state carry the writer's epoch and are
//!   refused with [`StoreError::StaleEpoch`] once a newer epoch has been claimed for the
//!   tenant ([`FencingStore::claim_epoch`]); the check and the write are one atomic step, and a claim
//!   waits for fenced writes already in flight.
//!
//! Times are unix milliseconds (`i64`, fields named `*_ms`), supplied by the caller: the
//! store never reads a clock.

mod events;
mod fencing;
mod knowledge;
mod messages;
mod rejected;
mod retention;
mod tenants;
mod tokens;
mod usage;

use async_trait::async_trait;

pub use events::EventStore;
pub use fencing::FencingStore;
pub use knowledge::{
    KnowledgeDocument, KnowledgeHit, KnowledgeStore, KnownKnowledge, NewKnowledge, PassageChoice,
};
pub use messages::{
    Conversation, DeliveryStatus, Direction, DismissOutcome, InsertOutcome, MessageStore,
    NewInbound, NewOutbound, NewReply, NewStatus, OutboundOrigin, PAUSED_INDEFINITELY, Predecessor,
    ReplyOutcome, SendFailure, StatusOutcome, StoredInbound, StoredMessage,
};
pub use rejected::{NewRejectedItem, RejectedItemStore, StoredRejectedItem};
pub use retention::RetentionStore;
pub use tenants::{
    AccessToken, Deletion, NewTenant, NewWhatsAppNumber, Tenant, TenantRoute, TenantStore,
    WhatsAppNumber,
};
pub use tokens::{NewTenantToken, TenantToken, TenantTokenStore};
pub use usage::{LlmUsage, LlmUsageTotals, UsageReport, UsageStore};

use salesboy_protocol::TenantId;

/// Why a store operation failed. Plain data (serde): a node tells another why (inside the
/// cluster's control replies).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize, thiserror::Error)]
pub enum StoreError {
    /// The database cannot be reached (connect failure, IO error, pool timeout, shutdown).
    /// Transient: the webhook ingress answers 503 so Meta retries.
    #[error("database at {url} is unavailable: {reason}")]
    Unavailable {
        /// The database URL, password replaced by `***`.
        url: String,
        /// What went wrong.
        reason: String,
    },
    /// A fenced write carried an epoch older than the tenant's current one: another node owns
    /// the tenant now. Nothing was written.
    #[error("stale epoch for tenant {tenant}: write carried epoch {given}, current is {current}")]
    StaleEpoch {
        /// The tenant written to.
        tenant: TenantId,
        /// The epoch the write carried.
        given: u64,
        /// The tenant's current epoch in the database.
        current: u64,
    },
    /// The row the operation needs does not exist.
    #[error("{what} not found")]
    NotFound {
        /// What was looked for, e.g. `tenant acme`.
        what: String,
    },
    /// The write conflicts with existing data (a unique key taken by another row).
    #[error("conflict: {reason}")]
    Conflict {
        /// What conflicted.
        reason: String,
    },
    /// The input or a stored row is invalid (bad URL, out-of-range value, a stored id that no
    /// longer validates, a constraint violation).
    #[error("invalid: {reason}")]
    Invalid {
        /// What was invalid.
        reason: String,
    },
    /// Any other database error.
    #[error("database error: {0}")]
    Backend(String),
}

/// Whether the database answers, for `/health`.
#[async_trait]
pub trait HealthStore: Send + Sync {
    /// Checks that the database answers.
    async fn health(&self) -> Result<(), StoreError>;
}

/// Durable state of the gateway: every role at once. Implementations: the node's sqlx store
/// (Postgres, SQLite) and the fault simulation's in-memory store.
///
/// Implement the role traits ([`HealthStore`], [`TenantStore`], [`FencingStore`],
/// [`MessageStore`], [`KnowledgeStore`], [`UsageStore`], [`EventStore`], [`RetentionStore`],
/// [`RejectedItemStore`]);
/// `Store` follows from them. Code that needs one role takes that role
/// (`Arc<dyn MessageStore>`); code that needs several takes `Arc<dyn Store>`.
pub trait Store:
    HealthStore
    + TenantStore
    + FencingStore
    + MessageStore
    + KnowledgeStore
    + UsageStore
    + EventStore
    + RetentionStore
    + RejectedItemStore
    + 'static
{
}

impl<T> Store for T where
    T: HealthStore
        + TenantStore
        + FencingStore
        + MessageStore
        + KnowledgeStore
        + UsageStore
        + EventStore
        + RetentionStore
        + RejectedItemStore
        + 'static
        + ?Sized
{
}

/// The store's traits, to call their methods on a concrete store:
/// `use salesboy_actors::store::prelude::*;`.
pub mod prelude {
    pub use super::{
        EventStore, FencingStore, HealthStore, KnowledgeStore, MessageStore, RejectedItemStore,
        RetentionStore, Store, TenantStore, TenantTokenStore, UsageStore,
    };
}
