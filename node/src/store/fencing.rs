//! Tenant epochs (architecture §7, "Fencing").
//!
//! The directory bumps a tenant's epoch whenever it moves; the new owner claims it here with
//! [`claim_epoch`]. Every write that changes conversation state runs [`fence`] first, inside
//! its transaction: the write is refused if a newer epoch was claimed, and the claim cannot
//! slip in before the write commits:
//!
//! - Postgres: the fence reads the epoch row `FOR SHARE`; a claim updates that row, so it
//!   waits for fenced writes in flight and every later fenced write sees the new epoch.
//! - SQLite: fenced writes run in `BEGIN IMMEDIATE` transactions, which hold the database's
//!   write lock from the start, so claims and fenced writes are serialised.

use salesboy_actors::store::StoreError;
use salesboy_protocol::TenantId;
use sqlx::AnyConnection;

use super::decode::{epoch_from_sql, epoch_to_sql};
use super::error::Failure;
use super::{Db, Dialect};

/// Makes `epoch` the tenant's epoch unless a newer one is already claimed.
pub(crate) async fn claim_epoch(db: &Db, tenant: &TenantId, epoch: u64) -> Result<(), Failure> {
    let claimed: Option<i64> = sqlx::query_scalar(
        "INSERT INTO tenant_epochs (tenant_id, epoch) VALUES ($1, $2) \
         ON CONFLICT (tenant_id) DO UPDATE SET epoch = excluded.epoch \
         WHERE tenant_epochs.epoch <= excluded.epoch \
         RETURNING epoch",
    )
    .bind(tenant.as_str())
    .bind(epoch_to_sql(epoch)?)
    .fetch_optional(&db.pool)
    .await?;
    if claimed.is_some() {
        return Ok(());
    }
    let current = current_epoch(db, tenant).await?.unwrap_or_default();
    Err(StoreError::StaleEpoch {
        tenant: tenant.clone(),
        given: epoch,
        current,
    }
    .into())
}

/// The tenant's current epoch, if it has one.
pub(crate) async fn current_epoch(db: &Db, tenant: &TenantId) -> Result<Option<u64>, Failure> {
    let epoch: Option<i64> =
        sqlx::query_scalar("SELECT epoch FROM tenant_epochs WHERE tenant_id = $1")
            .bind(tenant.as_str())
            .fetch_optional(&db.pool)
            .await?;
    epoch.map(epoch_from_sql).transpose()
}

/// Refuses the surrounding transaction's write if the tenant's epoch is newer than `epoch`,
/// and (on Postgres) keeps a newer claim from committing until the transaction ends. Run it
/// first in a transaction from [`Db::begin`](super::Db::begin).
pub(crate) async fn fence(
    db: &Db,
    tx: &mut AnyConnection,
    tenant: &TenantId,
    epoch: u64,
) -> Result<(), Failure> {
    let sql = match db.dialect {
        Dialect::Postgres => "SELECT epoch FROM tenant_epochs WHERE tenant_id = $1 FOR SHARE",
        Dialect::Sqlite => "SELECT epoch FROM tenant_epochs WHERE tenant_id = $1",
    };
    let current: Option<i64> = sqlx::query_scalar(sql)
        .bind(tenant.as_str())
        .fetch_optional(&mut *tx)
        .await?;
    let Some(current) = current.map(epoch_from_sql).transpose()? else {
        return Ok(());
    };
    if current > epoch {
        return Err(StoreError::StaleEpoch {
            tenant: tenant.clone(),
            given: epoch,
            current,
        }
        .into());
    }
    Ok(())
}
