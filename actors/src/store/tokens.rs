//! Tenant API tokens: [`TenantTokenStore`] and its records. The store keeps a token's
//! SHA-256 digest only, never the token: whoever reads the database cannot use what it
//! finds there.

use async_trait::async_trait;
use salesboy_protocol::TenantId;
use serde::{Deserialize, Serialize};

use super::StoreError;

/// A tenant API token to store ([`TenantTokenStore::insert_tenant_token`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewTenantToken {
    /// The token's id, chosen by the caller (unique; what lists and deletions name).
    pub id: String,
    /// The tenant the token acts for.
    pub tenant: TenantId,
    /// A label for people (`crm`, `billing`…).
    pub name: Option<String>,
    /// Lowercase hex SHA-256 of the token.
    pub digest: String,
    /// When the token was made.
    pub created_ms: i64,
}

/// A stored tenant API token, without its digest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TenantToken {
    /// The token's id.
    pub id: String,
    /// The tenant the token acts for.
    pub tenant: TenantId,
    /// Its label.
    pub name: Option<String>,
    /// When it was made.
    pub created_ms: i64,
}

/// The tenants' API tokens, by digest. Not part of [`Store`](super::Store): the actors never
/// need it, only the admin API does.
#[async_trait]
pub trait TenantTokenStore: Send + Sync {
    /// Stores a token. [`StoreError::NotFound`] if the tenant does not exist;
    /// [`StoreError::Conflict`] if the id or the digest is taken.
    async fn insert_tenant_token(&self, token: &NewTenantToken) -> Result<(), StoreError>;

    /// A tenant's tokens, oldest first (ties by id).
    async fn tenant_tokens(&self, tenant: &TenantId) -> Result<Vec<TenantToken>, StoreError>;

    /// Deletes a tenant's token; `false` if the tenant has no token with this id.
    async fn delete_tenant_token(&self, tenant: &TenantId, id: &str) -> Result<bool, StoreError>;

    /// The token whose digest this is, if any (a deleted tenant's tokens are gone with it).
    async fn tenant_token_by_digest(&self, digest: &str)
    -> Result<Option<TenantToken>, StoreError>;
}
