//! Tenant epochs (architecture §7, "Fencing").
//!
//! The directory bumps a tenant's epoch whenever it moves; the new owner claims it here with
//! [`claim_epoch`]. Every write that changes conversation state passes a fence first, inside
//! its transaction: the write is refused if a newer epoch was claimed, and the claim cannot
//! slip in before the write commits:
//!
//! - Postgres: the fence takes the tenant's advisory lock shared
//!   (`pg_advisory_xact_lock_shared`), then reads the epoch; a claim takes the same lock
//!   exclusively before it updates the epoch row, so it waits for fenced writes in flight and
//!   every later fenced write sees the new epoch. The lock lives in memory: a fence writes
//!   nothing (no row lock, no WAL), so fenced writes of many tenants do not contend on the
//!   epoch table's pages. The epoch is read in a statement after the one that took the lock,
//!   so its snapshot sees every claim that committed before the lock was granted.
//! - SQLite: every write goes through one connection, and fenced writes run in
//!   `BEGIN IMMEDIATE` transactions, so claims and fenced writes are serialised.
//!
//! [`fence`] checks one tenant; [`Fences`] checks the tenants of a group commit with two
//! statements for all of them (on SQLite the group's replies and send results also test the
//! epoch in their own statements, sent with these: `messages::FenceTest`, decision 0024);
//! [`locked_epoch`] takes one tenant's fence and answers its epoch (the Web engine's
//! backend, `web_session`, requires its own epoch exactly).

use std::collections::HashMap;

use salesboy_actors::store::StoreError;
use salesboy_protocol::TenantId;
use sqlx::AnyConnection;

use super::decode::{epoch_from_sql, epoch_to_sql, get};
use super::error::Failure;
use super::round_trip::{Answers, RoundTrip, Slot};
use super::{Db, Dialect, lists};

/// The advisory lock key of a tenant (`$1`: the tenant id), in Postgres.
macro_rules! tenant_lock_key {
    ($param:literal) => {
        concat!("hashtextextended(", $param, ", 5381)")
    };
}

/// Makes `epoch` the tenant's epoch unless a newer one is already claimed.
pub(crate) async fn claim_epoch(db: &Db, tenant: &TenantId, epoch: u64) -> Result<(), Failure> {
    let mut tx = db.begin().await?;
    if db.dialect == Dialect::Postgres {
        // Waits for the fenced writes in flight; later ones wait for this commit.
        sqlx::query(concat!(
            "SELECT pg_advisory_xact_lock(",
            tenant_lock_key!("$1"),
            ")"
        ))
        .bind(tenant.as_str())
        .execute(&mut *tx)
        .await?;
    }
    let claimed: Option<i64> = sqlx::query_scalar(
        "INSERT INTO tenant_epochs (tenant_id, epoch) VALUES ($1, $2) \
         ON CONFLICT (tenant_id) DO UPDATE SET epoch = excluded.epoch \
         WHERE tenant_epochs.epoch <= excluded.epoch \
         RETURNING epoch",
    )
    .bind(tenant.as_str())
    .bind(epoch_to_sql(epoch)?)
    .fetch_optional(&mut *tx)
    .await?;
    tx.commit().await?;
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

/// Takes the tenant's fence exclusively in the surrounding transaction (from
/// [`Db::begin`](super::Db::begin)), as a claim does: waits for the tenant's fenced writes in
/// flight and holds later ones off until the transaction ends (retention deleting an empty
/// conversation). SQLite: the `BEGIN IMMEDIATE` transaction already does.
pub(crate) async fn lock_exclusive(
    db: &Db,
    tx: &mut AnyConnection,
    tenant: &str,
) -> Result<(), Failure> {
    if db.dialect == Dialect::Postgres {
        sqlx::query(concat!(
            "SELECT pg_advisory_xact_lock(",
            tenant_lock_key!("$1"),
            ")"
        ))
        .bind(tenant)
        .execute(&mut *tx)
        .await?;
    }
    Ok(())
}

/// Refuses the surrounding transaction's write if the tenant's epoch is newer than `epoch`,
/// and keeps a newer claim from committing until the transaction ends. Run it first in a
/// transaction from [`Db::begin`](super::Db::begin).
pub(crate) async fn fence(
    db: &Db,
    tx: &mut AnyConnection,
    tenant: &TenantId,
    epoch: u64,
) -> Result<(), Failure> {
    let mut fences = Fences::default();
    fences.lock(db, tx, std::slice::from_ref(tenant)).await?;
    fences.check(tenant, epoch)
}

/// Takes the tenant's fence in the surrounding transaction, as [`fence`] does, and answers
/// its epoch (`None`: never claimed) for a writer that checks it itself (the Web engine's
/// backend wants exactly its own epoch).
#[cfg_attr(not(feature = "web-engine"), allow(dead_code))]
pub(crate) async fn locked_epoch(
    db: &Db,
    tx: &mut AnyConnection,
    tenant: &TenantId,
) -> Result<Option<u64>, Failure> {
    let mut fences = Fences::default();
    fences.lock(db, tx, std::slice::from_ref(tenant)).await?;
    Ok(fences.epochs.get(tenant.as_str()).copied().flatten())
}

/// The tenants of [`Fences::push_lock`]'s reads, each chunk with its statement's rows.
#[derive(Debug)]
pub(crate) struct FenceReads(Vec<(Vec<String>, Slot)>);

/// The epochs of the tenants a transaction writes for, read once under their locks.
#[derive(Debug, Default)]
pub(crate) struct Fences {
    /// Tenant id → its epoch (`None`: never claimed), for the tenants locked so far.
    epochs: HashMap<String, Option<u64>>,
}

impl Fences {
    /// Takes the locks of `tenants` not locked yet (Postgres) and reads their epochs: two
    /// statements, whatever their number.
    pub(crate) async fn lock(
        &mut self,
        db: &Db,
        tx: &mut AnyConnection,
        tenants: &[TenantId],
    ) -> Result<(), Failure> {
        let mut round = RoundTrip::new(db.dialect);
        let reads = self.push_lock(&mut round, tenants);
        let mut answers = round.run(tx).await?;
        self.read(reads, &mut answers)
    }

    /// Adds to `round` the statements that lock the tenants of `tenants` not locked yet
    /// (Postgres) and read their epochs, for [`read`](Self::read) once it ran.
    pub(crate) fn push_lock(&self, round: &mut RoundTrip, tenants: &[TenantId]) -> FenceReads {
        let mut new: Vec<&str> = tenants
            .iter()
            .map(TenantId::as_str)
            .filter(|t| !self.epochs.contains_key(*t))
            .collect();
        new.sort_unstable();
        new.dedup();
        let mut reads = Vec::new();
        for chunk in new.chunks(lists::MAX_LIST) {
            let count = lists::padded_len(chunk.len());
            let params = || lists::padded(chunk).map(|t| (*t).to_owned()).collect();
            if round.dialect() == Dialect::Postgres {
                let sql = format!(
                    concat!(
                        "SELECT pg_advisory_xact_lock_shared(",
                        tenant_lock_key!("t"),
                        ") FROM (VALUES {}) AS v (t)"
                    ),
                    lists::row_placeholders(round.next_param(), count)
                );
                round.push(sql, params());
            }
            let sql = format!(
                "SELECT tenant_id, epoch FROM tenant_epochs WHERE tenant_id IN ({})",
                lists::placeholders(round.next_param(), count)
            );
            let slot = round.push(sql, params());
            reads.push((
                chunk.iter().map(|tenant| (*tenant).to_owned()).collect(),
                slot,
            ));
        }
        FenceReads(reads)
    }

    /// Takes the epochs [`push_lock`](Self::push_lock)'s statements read.
    pub(crate) fn read(&mut self, reads: FenceReads, answers: &mut Answers) -> Result<(), Failure> {
        for (chunk, slot) in reads.0 {
            let mut found: HashMap<String, i64> = HashMap::new();
            for row in answers.take(slot)? {
                found.insert(get(&row, "tenant_id")?, get(&row, "epoch")?);
            }
            for tenant in chunk {
                let epoch = found
                    .get(&tenant)
                    .copied()
                    .map(epoch_from_sql)
                    .transpose()?;
                self.epochs.insert(tenant, epoch);
            }
        }
        Ok(())
    }

    /// [`StoreError::StaleEpoch`] if the tenant (locked with [`Fences::lock`]) has an epoch
    /// newer than `epoch`.
    pub(crate) fn check(&self, tenant: &TenantId, epoch: u64) -> Result<(), Failure> {
        let current = self.epochs.get(tenant.as_str()).ok_or_else(|| {
            StoreError::Backend(format!("tenant {tenant} written without its fence"))
        })?;
        match *current {
            Some(current) if current > epoch => Err(StoreError::StaleEpoch {
                tenant: tenant.clone(),
                given: epoch,
                current,
            }
            .into()),
            _ => Ok(()),
        }
    }
}
