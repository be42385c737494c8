//! Tenant API tokens, kept as SHA-256 digests.

use salesboy_actors::store::{NewTenantToken, StoreError, TenantToken};
use salesboy_protocol::TenantId;
use sqlx::any::AnyRow;

use super::Db;
use super::decode::{get, id};
use super::error::Failure;

/// `SELECT` of the columns [`token_from_row`] reads, followed by `$rest`.
macro_rules! select_tokens {
    ($rest:literal) => {
        concat!(
            "SELECT id, tenant_id, name, created_ms FROM tenant_tokens ",
            $rest
        )
    };
}

/// Stores a token; the tenant must exist (checked in the same transaction).
pub(crate) async fn insert_tenant_token(db: &Db, token: &NewTenantToken) -> Result<(), Failure> {
    let mut tx = db.begin().await?;
    let tenant_exists = sqlx::query("SELECT 1 FROM tenants WHERE id = $1")
        .bind(token.tenant.as_str())
        .fetch_optional(&mut *tx)
        .await?
        .is_some();
    if !tenant_exists {
        return Err(StoreError::NotFound {
            what: format!("tenant {}", token.tenant),
        }
        .into());
    }
    sqlx::query(
        "INSERT INTO tenant_tokens (id, tenant_id, name, digest, created_ms) \
         VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(token.id.as_str())
    .bind(token.tenant.as_str())
    .bind(token.name.as_deref())
    .bind(token.digest.as_str())
    .bind(token.created_ms)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(())
}

/// A tenant's tokens, oldest first.
pub(crate) async fn tenant_tokens(db: &Db, tenant: &TenantId) -> Result<Vec<TenantToken>, Failure> {
    sqlx::query(select_tokens!(
        "WHERE tenant_id = $1 ORDER BY created_ms, id"
    ))
    .bind(tenant.as_str())
    .fetch_all(&db.pool)
    .await?
    .iter()
    .map(token_from_row)
    .collect()
}

/// Deletes one of a tenant's tokens; whether there was one.
pub(crate) async fn delete_tenant_token(
    db: &Db,
    tenant: &TenantId,
    token: &str,
) -> Result<bool, Failure> {
    let deleted = sqlx::query("DELETE FROM tenant_tokens WHERE tenant_id = $1 AND id = $2")
        .bind(tenant.as_str())
        .bind(token)
        .execute(&db.pool)
        .await?
        .rows_affected();
    Ok(deleted > 0)
}

/// The token with this digest.
pub(crate) async fn tenant_token_by_digest(
    db: &Db,
    digest: &str,
) -> Result<Option<TenantToken>, Failure> {
    sqlx::query(select_tokens!("WHERE digest = $1"))
        .bind(digest)
        .fetch_optional(&db.pool)
        .await?
        .as_ref()
        .map(token_from_row)
        .transpose()
}

fn token_from_row(row: &AnyRow) -> Result<TenantToken, Failure> {
    Ok(TenantToken {
        id: get(row, "id")?,
        tenant: id(row, "tenant_id")?,
        name: get(row, "name")?,
        created_ms: get(row, "created_ms")?,
    })
}
