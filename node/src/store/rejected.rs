//! Rejected webhook items (`webhook_rejected_items`): an item of a signed delivery that could
//! not be read, recorded with the tenant's `message_rejected` event in one transaction.

use salesboy_actors::store::{NewRejectedItem, StoredRejectedItem};
use salesboy_protocol::events::Event;
use salesboy_protocol::subjects::EventKind;
use salesboy_protocol::whatsapp::RejectedItem;
use salesboy_protocol::{PhoneNumberId, TenantId};
use serde_json::json;
use sqlx::any::AnyRow;

use super::Db;
use super::decode::{get, limit, optional_id};
use super::error::Failure;
use super::outbox;

/// Records the item and, when its tenant is known, the tenant's `message_rejected` event.
pub(crate) async fn record_rejected_item(db: &Db, item: &NewRejectedItem) -> Result<i64, Failure> {
    let mut tx = db.pool.begin().await?;
    let id: i64 = sqlx::query_scalar(
        "INSERT INTO webhook_rejected_items \
         (tenant_id, phone_number_id, waba_id, path, reason, raw, truncated, received_ms) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8) RETURNING id",
    )
    .bind(item.tenant.as_ref().map(TenantId::as_str))
    .bind(item.phone_number_id.as_ref().map(PhoneNumberId::as_str))
    .bind(item.waba_id.as_deref())
    .bind(item.item.path.as_str())
    .bind(item.item.reason.as_str())
    .bind(item.item.raw.as_str())
    .bind(i64::from(item.item.truncated))
    .bind(item.received_ms)
    .fetch_one(&mut *tx)
    .await?;
    let Some(tenant) = &item.tenant else {
        tx.commit().await?;
        return Ok(id);
    };
    let event = Event::tenant(
        EventKind::MessageRejected,
        tenant.clone(),
        item.received_ms,
        json!({
            "rejected_id": id,
            "phone_number_id": item.phone_number_id.as_ref().map(PhoneNumberId::as_str),
            "path": item.item.path,
            "reason": item.item.reason,
        }),
    );
    outbox::append(&mut tx, &event).await?;
    tx.commit().await?;
    db.outbox_written();
    Ok(id)
}

/// The tenant's rejected items, newest first, before `before` if given.
pub(crate) async fn rejected_items(
    db: &Db,
    tenant: &TenantId,
    before: Option<i64>,
    count: u32,
) -> Result<Vec<StoredRejectedItem>, Failure> {
    let rows = sqlx::query(
        "SELECT id, tenant_id, phone_number_id, waba_id, path, reason, raw, truncated, \
         received_ms FROM webhook_rejected_items \
         WHERE tenant_id = $1 AND id < $2 ORDER BY id DESC LIMIT $3",
    )
    .bind(tenant.as_str())
    .bind(before.unwrap_or(i64::MAX))
    .bind(limit(count))
    .fetch_all(&db.pool)
    .await?;
    rows.iter().map(rejected_from_row).collect()
}

fn rejected_from_row(row: &AnyRow) -> Result<StoredRejectedItem, Failure> {
    let truncated: i64 = get(row, "truncated")?;
    Ok(StoredRejectedItem {
        id: get(row, "id")?,
        new: NewRejectedItem {
            tenant: optional_id(row, "tenant_id")?,
            phone_number_id: optional_id(row, "phone_number_id")?,
            waba_id: get(row, "waba_id")?,
            item: RejectedItem {
                path: get(row, "path")?,
                reason: get(row, "reason")?,
                raw: get(row, "raw")?,
                truncated: truncated != 0,
            },
            received_ms: get(row, "received_ms")?,
        },
    })
}
