//! Tenant API tokens: bearer tokens that read and change one tenant only. Made, listed and
//! revoked by the operator (admin token); checked by the HTTP admin API's auth.
//!
//! A token is `sbt_` and 64 hex digits (two random v4 UUIDs: 244 random bits). It is
//! answered once, when made; the store keeps its SHA-256 digest only, so a token is checked
//! by hashing what was presented and looking the digest up (the digest of a high-entropy
//! secret gives nothing away to timing).

use salesboy_actors::store::{NewTenantToken, TenantToken, TenantTokenStore};
use salesboy_protocol::TenantId;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use utoipa::ToSchema;
use uuid::Uuid;

use super::{Api, ApiError};

/// What every tenant API token starts with (admin tokens never do).
pub const TOKEN_PREFIX: &str = "sbt_";

/// The longest token name, in characters.
const NAME_MAX_CHARS: usize = 100;

/// `POST /tenants/{id}/tokens`: what to call the new token.
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TokenRequest {
    /// A label for people (who uses the token), up to 100 characters.
    #[schema(example = "crm")]
    pub name: Option<String>,
}

/// A token just made: the only answer that carries the token itself.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct NewTokenView {
    /// The token's id (to list or revoke it).
    pub id: String,
    /// The bearer token. Shown once: store it now.
    #[schema(example = "sbt_3f1c…")]
    pub token: String,
    /// The tenant it acts for.
    pub tenant: String,
    /// Its label.
    pub name: Option<String>,
    /// When it was made (unix ms).
    pub created_ms: i64,
}

/// A tenant's token, without the secret.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct TokenView {
    /// The token's id.
    pub id: String,
    /// The tenant it acts for.
    pub tenant: String,
    /// Its label.
    pub name: Option<String>,
    /// When it was made (unix ms).
    pub created_ms: i64,
}

impl From<TenantToken> for TokenView {
    fn from(token: TenantToken) -> Self {
        Self {
            id: token.id,
            tenant: token.tenant.to_string(),
            name: token.name,
            created_ms: token.created_ms,
        }
    }
}

/// Makes a token for the tenant and answers it (the one time it is shown).
pub async fn create(
    api: &Api,
    tenant: &TenantId,
    request: TokenRequest,
) -> Result<NewTokenView, ApiError> {
    let name = match request.name.map(|name| name.trim().to_owned()) {
        Some(name) if name.chars().count() > NAME_MAX_CHARS => {
            return Err(ApiError::invalid(
                "name",
                format!("at most {NAME_MAX_CHARS} characters"),
            ));
        }
        Some(name) if name.is_empty() => None,
        name => name,
    };
    api.existing_tenant(tenant).await?;
    let token = generate_token();
    let record = NewTenantToken {
        id: Uuid::new_v4().simple().to_string(),
        tenant: tenant.clone(),
        name,
        digest: digest(&token),
        created_ms: api.now_ms(),
    };
    api.tokens.insert_tenant_token(&record).await?;
    Ok(NewTokenView {
        id: record.id,
        token,
        tenant: tenant.to_string(),
        name: record.name,
        created_ms: record.created_ms,
    })
}

/// The tenant's tokens, oldest first, without secrets.
pub async fn list(api: &Api, tenant: &TenantId) -> Result<Vec<TokenView>, ApiError> {
    api.existing_tenant(tenant).await?;
    let listed = api.tokens.tenant_tokens(tenant).await?;
    Ok(listed.into_iter().map(TokenView::from).collect())
}

/// Revokes one of the tenant's tokens: it stops working at once.
pub async fn delete(api: &Api, tenant: &TenantId, token_id: &str) -> Result<(), ApiError> {
    api.existing_tenant(tenant).await?;
    if api.tokens.delete_tenant_token(tenant, token_id).await? {
        Ok(())
    } else {
        Err(ApiError::UnknownApiToken {
            tenant: tenant.clone(),
            token: token_id.to_owned(),
        })
    }
}

/// The tenant a presented bearer token acts for, if it is a live tenant API token.
pub async fn tenant_of(
    tokens: &dyn TenantTokenStore,
    presented: &str,
) -> Result<Option<TenantId>, ApiError> {
    if !presented.starts_with(TOKEN_PREFIX) {
        return Ok(None);
    }
    let found = tokens.tenant_token_by_digest(&digest(presented)).await?;
    Ok(found.map(|token| token.tenant))
}

/// A new token: the prefix and 64 hex digits from two v4 UUIDs (OS randomness).
fn generate_token() -> String {
    format!(
        "{TOKEN_PREFIX}{}{}",
        Uuid::new_v4().simple(),
        Uuid::new_v4().simple()
    )
}

/// Lowercase hex SHA-256 of a token: what the store keeps.
pub fn digest(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_prefixed_high_entropy_and_distinct() {
        let a = generate_token();
        let b = generate_token();
        assert_ne!(a, b);
        assert!(a.starts_with(TOKEN_PREFIX), "{a}");
        assert_eq!(a.len(), TOKEN_PREFIX.len() + 64, "{a}");
        assert!(
            a[TOKEN_PREFIX.len()..]
                .bytes()
                .all(|c| c.is_ascii_hexdigit())
        );
    }

    #[test]
    fn digests_are_sha256_hex() {
        assert_eq!(
            digest("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
