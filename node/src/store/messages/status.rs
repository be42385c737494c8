//! Delivery statuses of outbound messages: a status webhook applied in one conditional
//! `UPDATE`, so that statuses only move forward (`DeliveryStatus::may_follow`) whatever
//! order Meta delivers them in.

use salesboy_actors::store::{DeliveryStatus, NewStatus, StatusOutcome};

use salesboy_protocol::ChatId;
use salesboy_protocol::events::Event;
use salesboy_protocol::subjects::EventKind;
use serde_json::json;

use super::super::decode::{get, id};
use super::super::error::Failure;
use super::super::{Db, outbox};

/// A stored status's rank in SQL: pending 0, sent 1, delivered 2, read 3, failed 4 (highest,
/// so nothing replaces it). A status may replace the current one only when the current rank
/// is below [`advance_threshold`] of the new one.
macro_rules! status_rank_sql {
    () => {
        "CASE status WHEN 'pending' THEN 0 WHEN 'sent' THEN 1 WHEN 'delivered' THEN 2 \
         WHEN 'read' THEN 3 ELSE 4 END"
    };
}

/// `next` may replace a status whose rank is below this: its own rank, except that failed
/// may only replace statuses below read.
fn advance_threshold(next: DeliveryStatus) -> i64 {
    match next {
        DeliveryStatus::Pending => 0,
        DeliveryStatus::Sent => 1,
        DeliveryStatus::Delivered => 2,
        DeliveryStatus::Read | DeliveryStatus::Failed => 3,
    }
}

/// Applies a status webhook in one conditional `UPDATE`: only a status that moves forward
/// is written.
pub(crate) async fn update_status(db: &Db, update: &NewStatus) -> Result<StatusOutcome, Failure> {
    let (error_code, error_title) = match (&update.status, &update.error) {
        (DeliveryStatus::Failed, Some(failure)) => (failure.code, Some(failure.title.as_str())),
        _ => (None, None),
    };
    let mut tx = db.begin().await?;
    let advanced = sqlx::query(concat!(
        "UPDATE messages SET status = $3, status_ms = $4, error_code = $5, error_title = $6 \
         WHERE tenant_id = $1 AND wamid = $2 AND direction = 'outbound' AND ",
        status_rank_sql!(),
        " < $7 RETURNING id, chat_id"
    ))
    .bind(update.tenant.as_str())
    .bind(update.wamid.as_str())
    .bind(update.status.as_str())
    .bind(update.at_ms)
    .bind(error_code)
    .bind(error_title)
    .bind(advance_threshold(update.status))
    .fetch_optional(&mut *tx)
    .await?;
    if let Some(advanced) = advanced {
        let chat: ChatId = id(&advanced, "chat_id")?;
        let message_id: i64 = get(&advanced, "id")?;
        let error = update
            .error
            .as_ref()
            .map(|failure| json!({"code": failure.code, "title": failure.title}));
        let event = Event::tenant(
            EventKind::StatusChanged,
            update.tenant.clone(),
            update.at_ms,
            json!({
                "message_id": message_id,
                "wamid": update.wamid.as_str(),
                "status": update.status.as_str(),
                "error": error,
            }),
        )
        .with_chat(chat);
        outbox::append(&mut tx, &event).await?;
        tx.commit().await?;
        db.outbox_written();
        return Ok(StatusOutcome::Advanced);
    }
    let known = sqlx::query(
        "SELECT 1 FROM messages WHERE tenant_id = $1 AND wamid = $2 AND direction = 'outbound'",
    )
    .bind(update.tenant.as_str())
    .bind(update.wamid.as_str())
    .fetch_optional(&mut *tx)
    .await?
    .is_some();
    tx.commit().await?;
    Ok(if known {
        StatusOutcome::Ignored
    } else {
        StatusOutcome::UnknownMessage
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The ranks `status_rank_sql!` computes.
    fn status_rank(status: DeliveryStatus) -> i64 {
        match status {
            DeliveryStatus::Pending => 0,
            DeliveryStatus::Sent => 1,
            DeliveryStatus::Delivered => 2,
            DeliveryStatus::Read => 3,
            DeliveryStatus::Failed => 4,
        }
    }

    /// The SQL rule (`rank(current) < threshold(next)`) is the actors' rule.
    #[test]
    fn sql_status_ranks_agree_with_may_follow() {
        for current in DeliveryStatus::ALL {
            for next in DeliveryStatus::ALL {
                assert_eq!(
                    status_rank(current) < advance_threshold(next),
                    next.may_follow(current),
                    "{current:?} -> {next:?}"
                );
            }
        }
    }

    #[test]
    fn the_sql_rank_names_every_status_in_rank_order() {
        let sql = status_rank_sql!();
        for status in DeliveryStatus::ALL {
            let rank = status_rank(status);
            if status == DeliveryStatus::Failed {
                assert!(sql.ends_with(&format!("ELSE {rank} END")), "{sql}");
            } else {
                let arm = format!("WHEN '{}' THEN {rank}", status.as_str());
                assert!(sql.contains(&arm), "{sql} lacks {arm}");
            }
        }
    }
}
