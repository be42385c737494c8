//! Placement decisions: the last one about each tenant, with its inputs (migration 0019).

use salesboy_actors::store::StoreError;
use salesboy_protocol::TenantId;
use sqlx::Row;

use super::Db;
use super::error::Failure;
use crate::cluster::placement::PlacementDecision;

/// Replaces each decision's tenant's last decision with it unless that one is newer, in one
/// transaction. Of a batch's decisions about one tenant the newest counts; rows are written
/// in tenant order, so two nodes' batches cannot deadlock on PostgreSQL.
pub(crate) async fn record_placements(
    db: &Db,
    decisions: &[PlacementDecision],
) -> Result<(), Failure> {
    let mut newest: std::collections::BTreeMap<&str, &PlacementDecision> =
        std::collections::BTreeMap::new();
    for decision in decisions {
        let kept = newest.entry(decision.tenant.as_str()).or_insert(decision);
        if decision.decided_ms >= kept.decided_ms {
            *kept = decision;
        }
    }
    let mut tx = db.begin().await?;
    for decision in newest.into_values() {
        let json = serde_json::to_string(decision)
            .map_err(|e| StoreError::Backend(format!("encoding a placement decision: {e}")))?;
        sqlx::query(
            "INSERT INTO placement_decisions (tenant_id, node_id, reason, decision, decided_ms) \
             VALUES ($1, $2, $3, $4, $5) \
             ON CONFLICT (tenant_id) DO UPDATE SET node_id = excluded.node_id, \
             reason = excluded.reason, decision = excluded.decision, \
             decided_ms = excluded.decided_ms \
             WHERE placement_decisions.decided_ms <= excluded.decided_ms",
        )
        .bind(decision.tenant.as_str())
        .bind(decision.node.as_str())
        .bind(decision.reason.as_str())
        .bind(json)
        .bind(decision.decided_ms)
        .execute(&mut *tx)
        .await?;
    }
    tx.commit().await?;
    Ok(())
}

/// The last decision about `tenant`, if one was recorded.
pub(crate) async fn placement_decision(
    db: &Db,
    tenant: &TenantId,
) -> Result<Option<PlacementDecision>, Failure> {
    let Some(row) = sqlx::query("SELECT decision FROM placement_decisions WHERE tenant_id = $1")
        .bind(tenant.as_str())
        .fetch_optional(&db.pool)
        .await?
    else {
        return Ok(None);
    };
    let json: String = row.try_get(0)?;
    serde_json::from_str(&json)
        .map(Some)
        .map_err(|e| StoreError::Backend(format!("placement decision of {tenant}: {e}")).into())
}
