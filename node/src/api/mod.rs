//! The operations of the gateway's APIs, written once: the HTTP admin API
//! ([`crate::http::admin`]) and the NATS service API ([`service`]) are two thin front ends
//! over them. An operation takes validated ids and a typed request, and answers a typed
//! response (serde, with its OpenAPI schema) or an [`ApiError`].
//!
//! One module per resource:
//! - `error`: [`ApiError`], its status and code;
//! - [`tenants`]: tenants and their numbers, a tenant's session status, session stop and
//!   start;
//! - [`pairing`]: linking a `web` tenant's number (QR code, pairing code) and unlinking it;
//! - [`knowledge`]: a tenant's knowledge documents;
//! - [`conversations`]: a tenant's conversations; a chat's messages, bot pause and resume,
//!   owner sends;
//! - [`tokens`]: tenant API tokens (made, listed and revoked by the operator);
//! - [`content`]: what an owner send may carry (text, template, interactive, image,
//!   document) and its checks against the Cloud API's limits;
//! - [`usage`]: a tenant's usage for one month (LLM tokens and cost, messages in and out);
//! - [`webhooks`]: a tenant's HTTP event webhooks and their dead letters;
//! - [`rejected`]: a tenant's rejected webhook items (items of Meta's deliveries that could
//!   not be read);
//! - [`cluster`]: the cluster view, a node's drain;
//! - [`live`]: the traffic figures and the timeline of the dashboard's live streams;
//! - [`service`]: the NATS micro service `salesboy` that serves these operations.

pub mod cluster;
pub mod content;
pub mod conversations;
mod error;
pub mod knowledge;
pub mod live;
pub mod pairing;
pub mod rejected;
pub mod service;
pub mod tenants;
pub mod tokens;
pub mod usage;
pub mod webhooks;

use std::sync::Arc;

use salesboy_actors::node::NodeHandle;
use salesboy_actors::store::{Store, Tenant, TenantTokenStore};
use salesboy_protocol::{ChatId, IdError, TenantId};

pub use error::ApiError;

use crate::cluster::ClusterMember;
use crate::ingress::Ingress;
use crate::routing::Router;
use crate::store::SqlStore;

/// What the operations act on: the node's actors, database, ingress and cluster. Cheap to
/// clone.
#[derive(Clone)]
pub struct Api {
    /// The actor tree.
    pub node: NodeHandle,
    /// The database.
    pub store: Arc<dyn Store>,
    /// The same database, for what only the SQL store offers (event webhooks).
    pub sql: SqlStore,
    /// Tenant API tokens (the same database).
    pub tokens: Arc<dyn TenantTokenStore>,
    /// The webhook ingress (its phone-number cache is refreshed when a number changes).
    pub ingress: Ingress,
    /// Where tenant commands go.
    pub router: Router,
    /// The cluster runtime, on a cluster.
    pub cluster: Option<Arc<ClusterMember>>,
    /// This node's id, as the cluster view shows it.
    pub node_id: String,
}

impl Api {
    /// The tenant, or [`ApiError::UnknownTenant`].
    pub async fn existing_tenant(&self, id: &TenantId) -> Result<Tenant, ApiError> {
        self.store
            .tenant(id)
            .await?
            .ok_or_else(|| ApiError::UnknownTenant(id.clone()))
    }

    /// The node's clock, in unix ms.
    fn now_ms(&self) -> i64 {
        self.node.services().clock.now_ms()
    }
}

/// A tenant id from the request, or 400 naming `field`.
pub fn tenant_id(field: &'static str, value: impl Into<String>) -> Result<TenantId, ApiError> {
    TenantId::new(value).map_err(|e: IdError| ApiError::invalid(field, e))
}

/// A customer's WhatsApp id from the request, or 400 naming `field`.
pub fn chat_id(field: &'static str, value: impl Into<String>) -> Result<ChatId, ApiError> {
    ChatId::new(value).map_err(|e| ApiError::invalid(field, e))
}
