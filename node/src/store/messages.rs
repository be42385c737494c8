//! Conversations, messages, replies and delivery statuses; the reads reconciliation needs;
//! retention.
//!
//! One table holds both directions. Inbound rows are deduplicated by the unique
//! (tenant_id, wamid) key with `ON CONFLICT DO NOTHING`; `reply_links` (primary key
//! `inbound_id`) makes a second reply to the same inbound message impossible.

use salesboy_actors::store::{
    Conversation, DeliveryStatus, Direction, DismissOutcome, InsertOutcome, NewInbound,
    NewOutbound, NewReply, OutboundOrigin, ReplyOutcome, SendFailure, StatusOutcome, StatusUpdate,
    StoreError, StoredMessage,
};
use salesboy_protocol::{ChatId, TenantId, Wamid};
use sqlx::AnyConnection;
use sqlx::any::AnyRow;

use super::Db;
use super::decode::{get, id, limit, named, optional_id, optional_named};
use super::error::Failure;
use super::fencing::fence;

/// `SELECT` of the columns [`message_from_row`] reads from `messages m`, followed by `$rest`.
macro_rules! select_messages {
    ($rest:literal) => {
        concat!(
            "SELECT m.id, m.tenant_id, m.chat_id, m.direction, m.origin, m.wamid, m.kind, \
             m.body, m.status, m.status_ms, m.error_code, m.error_title, m.created_ms \
             FROM messages m ",
            $rest
        )
    };
}

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

/// Retention deletes in batches of this many messages, each its own transaction.
const RETENTION_BATCH: i64 = 1_000;

/// The conversation's state, if it exists.
pub(crate) async fn conversation(
    db: &Db,
    tenant: &TenantId,
    chat: &ChatId,
) -> Result<Option<Conversation>, Failure> {
    let row = sqlx::query(
        "SELECT tenant_id, chat_id, last_inbound_ms, bot_paused_until_ms FROM conversations \
         WHERE tenant_id = $1 AND chat_id = $2",
    )
    .bind(tenant.as_str())
    .bind(chat.as_str())
    .fetch_optional(&db.pool)
    .await?;
    row.map(|row| {
        Ok(Conversation {
            tenant: id(&row, "tenant_id")?,
            chat: id(&row, "chat_id")?,
            last_inbound_ms: get(&row, "last_inbound_ms")?,
            bot_paused_until_ms: get(&row, "bot_paused_until_ms")?,
        })
    })
    .transpose()
}

/// Pauses or resumes the bot in a chat. Fenced.
pub(crate) async fn set_bot_paused(
    db: &Db,
    tenant: &TenantId,
    chat: &ChatId,
    until_ms: Option<i64>,
    epoch: u64,
) -> Result<(), Failure> {
    let mut tx = db.begin().await?;
    fence(db, &mut tx, tenant, epoch).await?;
    sqlx::query(
        "INSERT INTO conversations (tenant_id, chat_id, bot_paused_until_ms) VALUES ($1, $2, $3) \
         ON CONFLICT (tenant_id, chat_id) \
         DO UPDATE SET bot_paused_until_ms = excluded.bot_paused_until_ms",
    )
    .bind(tenant.as_str())
    .bind(chat.as_str())
    .bind(until_ms)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(())
}

/// Persists an inbound message; a duplicate wamid rolls everything back and reports the
/// existing row.
pub(crate) async fn insert_inbound(
    db: &Db,
    message: &NewInbound,
) -> Result<InsertOutcome, Failure> {
    let mut tx = db.begin().await?;
    sqlx::query(
        "INSERT INTO conversations (tenant_id, chat_id, last_inbound_ms) VALUES ($1, $2, $3) \
         ON CONFLICT (tenant_id, chat_id) DO UPDATE SET last_inbound_ms = CASE \
         WHEN conversations.last_inbound_ms IS NULL \
         OR conversations.last_inbound_ms < excluded.last_inbound_ms \
         THEN excluded.last_inbound_ms ELSE conversations.last_inbound_ms END",
    )
    .bind(message.tenant.as_str())
    .bind(message.chat.as_str())
    .bind(message.received_ms)
    .execute(&mut *tx)
    .await?;
    let inserted: Option<i64> = sqlx::query_scalar(
        "INSERT INTO messages (tenant_id, chat_id, direction, wamid, kind, body, raw, created_ms) \
         VALUES ($1, $2, 'inbound', $3, $4, $5, $6, $7) \
         ON CONFLICT (tenant_id, wamid) DO NOTHING RETURNING id",
    )
    .bind(message.tenant.as_str())
    .bind(message.chat.as_str())
    .bind(message.wamid.as_str())
    .bind(message.kind.as_str())
    .bind(message.body.as_deref())
    .bind(message.raw.as_deref())
    .bind(message.received_ms)
    .fetch_optional(&mut *tx)
    .await?;
    match inserted {
        Some(id) => {
            tx.commit().await?;
            Ok(InsertOutcome::Inserted { id })
        }
        None => {
            let id = existing_wamid(&mut tx, &message.tenant, &message.wamid).await?;
            tx.rollback().await?;
            Ok(InsertOutcome::Duplicate { id })
        }
    }
}

/// Records an owner message or echo; fenced when it carries an epoch.
pub(crate) async fn record_outbound(
    db: &Db,
    message: &NewOutbound,
) -> Result<InsertOutcome, Failure> {
    let mut tx = db.begin().await?;
    if let Some(epoch) = message.epoch {
        fence(db, &mut tx, &message.tenant, epoch).await?;
    }
    ensure_conversation(&mut tx, &message.tenant, &message.chat).await?;
    let (status, status_ms) = match message.wamid {
        Some(_) => (DeliveryStatus::Sent, Some(message.created_ms)),
        None => (DeliveryStatus::Pending, None),
    };
    let inserted: Option<i64> = sqlx::query_scalar(
        "INSERT INTO messages (tenant_id, chat_id, direction, origin, wamid, kind, body, \
         status, status_ms, created_ms) \
         VALUES ($1, $2, 'outbound', $3, $4, $5, $6, $7, $8, $9) \
         ON CONFLICT (tenant_id, wamid) DO NOTHING RETURNING id",
    )
    .bind(message.tenant.as_str())
    .bind(message.chat.as_str())
    .bind(message.origin.as_str())
    .bind(message.wamid.as_ref().map(Wamid::as_str))
    .bind(message.kind.as_str())
    .bind(message.body.as_deref())
    .bind(status.as_str())
    .bind(status_ms)
    .bind(message.created_ms)
    .fetch_optional(&mut *tx)
    .await?;
    match (inserted, &message.wamid) {
        (Some(id), _) => {
            tx.commit().await?;
            Ok(InsertOutcome::Inserted { id })
        }
        (None, Some(wamid)) => {
            let id = existing_wamid(&mut tx, &message.tenant, wamid).await?;
            tx.rollback().await?;
            Ok(InsertOutcome::Duplicate { id })
        }
        (None, None) => Err(StoreError::Backend(
            "insert of an outbound message without wamid returned no id".to_owned(),
        )
        .into()),
    }
}

/// Applies a status webhook in one conditional `UPDATE`: only a status that moves forward
/// is written.
pub(crate) async fn update_status(
    db: &Db,
    update: &StatusUpdate,
) -> Result<StatusOutcome, Failure> {
    let (error_code, error_title) = match (&update.status, &update.error) {
        (DeliveryStatus::Failed, Some(failure)) => (failure.code, Some(failure.title.as_str())),
        _ => (None, None),
    };
    let advanced = sqlx::query(concat!(
        "UPDATE messages SET status = $3, status_ms = $4, error_code = $5, error_title = $6 \
         WHERE tenant_id = $1 AND wamid = $2 AND direction = 'outbound' AND ",
        status_rank_sql!(),
        " < $7"
    ))
    .bind(update.tenant.as_str())
    .bind(update.wamid.as_str())
    .bind(update.status.as_str())
    .bind(update.at_ms)
    .bind(error_code)
    .bind(error_title)
    .bind(advance_threshold(update.status))
    .execute(&db.pool)
    .await?
    .rows_affected();
    if advanced > 0 {
        return Ok(StatusOutcome::Advanced);
    }
    let known = sqlx::query(
        "SELECT 1 FROM messages WHERE tenant_id = $1 AND wamid = $2 AND direction = 'outbound'",
    )
    .bind(update.tenant.as_str())
    .bind(update.wamid.as_str())
    .fetch_optional(&db.pool)
    .await?
    .is_some();
    Ok(if known {
        StatusOutcome::Ignored
    } else {
        StatusOutcome::UnknownMessage
    })
}

/// Records a bot reply and links its batch, all or nothing. Fenced.
pub(crate) async fn record_reply(db: &Db, reply: &NewReply) -> Result<ReplyOutcome, Failure> {
    let answers = batch(&reply.answers)?;
    let mut tx = db.begin().await?;
    fence(db, &mut tx, &reply.tenant, reply.epoch).await?;
    let reply_id: i64 = sqlx::query_scalar(
        "INSERT INTO messages (tenant_id, chat_id, direction, origin, kind, body, status, \
         created_ms) VALUES ($1, $2, 'outbound', 'bot', 'text', $3, 'pending', $4) RETURNING id",
    )
    .bind(reply.tenant.as_str())
    .bind(reply.chat.as_str())
    .bind(reply.body.as_str())
    .bind(reply.created_ms)
    .fetch_one(&mut *tx)
    .await?;
    let linked = link_inbound(
        &mut tx,
        &reply.tenant,
        &reply.chat,
        &answers,
        Some(reply_id),
        reply.created_ms,
    )
    .await?;
    if let Err(inbound_id) = linked {
        tx.rollback().await?;
        return Ok(ReplyOutcome::AlreadyAnswered { inbound_id });
    }
    tx.commit().await?;
    Ok(ReplyOutcome::Recorded { reply_id })
}

/// Marks inbound messages handled without a reply, all or nothing. Fenced.
pub(crate) async fn dismiss_inbound(
    db: &Db,
    tenant: &TenantId,
    chat: &ChatId,
    inbound: &[i64],
    at_ms: i64,
    epoch: u64,
) -> Result<DismissOutcome, Failure> {
    let inbound = batch(inbound)?;
    let mut tx = db.begin().await?;
    fence(db, &mut tx, tenant, epoch).await?;
    if let Err(inbound_id) = link_inbound(&mut tx, tenant, chat, &inbound, None, at_ms).await? {
        tx.rollback().await?;
        return Ok(DismissOutcome::AlreadyAnswered { inbound_id });
    }
    tx.commit().await?;
    Ok(DismissOutcome::Dismissed)
}

/// Records that a pending outbound message was accepted by Meta. Fenced.
pub(crate) async fn mark_reply_sent(
    db: &Db,
    tenant: &TenantId,
    reply_id: i64,
    wamid: &Wamid,
    at_ms: i64,
    epoch: u64,
) -> Result<(), Failure> {
    let mut tx = db.begin().await?;
    fence(db, &mut tx, tenant, epoch).await?;
    let updated = sqlx::query(
        "UPDATE messages SET wamid = $3, status = 'sent', status_ms = $4 \
         WHERE id = $1 AND tenant_id = $2 AND direction = 'outbound' AND status = 'pending'",
    )
    .bind(reply_id)
    .bind(tenant.as_str())
    .bind(wamid.as_str())
    .bind(at_ms)
    .execute(&mut *tx)
    .await?
    .rows_affected();
    if updated == 0 {
        ensure_outbound_exists(&mut tx, tenant, reply_id).await?;
    }
    tx.commit().await?;
    Ok(())
}

/// Records that sending a pending outbound message failed. Fenced.
pub(crate) async fn mark_reply_failed(
    db: &Db,
    tenant: &TenantId,
    reply_id: i64,
    failure: &SendFailure,
    at_ms: i64,
    epoch: u64,
) -> Result<(), Failure> {
    let mut tx = db.begin().await?;
    fence(db, &mut tx, tenant, epoch).await?;
    let updated = sqlx::query(
        "UPDATE messages SET status = 'failed', status_ms = $3, error_code = $4, \
         error_title = $5 \
         WHERE id = $1 AND tenant_id = $2 AND direction = 'outbound' AND status = 'pending'",
    )
    .bind(reply_id)
    .bind(tenant.as_str())
    .bind(at_ms)
    .bind(failure.code)
    .bind(failure.title.as_str())
    .execute(&mut *tx)
    .await?
    .rows_affected();
    if updated == 0 {
        ensure_outbound_exists(&mut tx, tenant, reply_id).await?;
    }
    tx.commit().await?;
    Ok(())
}

/// Inbound messages since `since_ms` with no reply link, oldest first.
pub(crate) async fn unanswered_inbound(
    db: &Db,
    tenant: &TenantId,
    since_ms: i64,
) -> Result<Vec<StoredMessage>, Failure> {
    let rows = sqlx::query(select_messages!(
        "WHERE m.tenant_id = $1 AND m.direction = 'inbound' AND m.created_ms >= $2 \
         AND NOT EXISTS (SELECT 1 FROM reply_links r WHERE r.inbound_id = m.id) \
         ORDER BY m.created_ms, m.id"
    ))
    .bind(tenant.as_str())
    .bind(since_ms)
    .fetch_all(&db.pool)
    .await?;
    messages_from_rows(&rows)
}

/// One chat's inbound messages with no reply link, oldest first.
pub(crate) async fn unanswered_inbound_in_chat(
    db: &Db,
    tenant: &TenantId,
    chat: &ChatId,
) -> Result<Vec<StoredMessage>, Failure> {
    let rows = sqlx::query(select_messages!(
        "WHERE m.tenant_id = $1 AND m.chat_id = $2 AND m.direction = 'inbound' \
         AND NOT EXISTS (SELECT 1 FROM reply_links r WHERE r.inbound_id = m.id) \
         ORDER BY m.created_ms, m.id"
    ))
    .bind(tenant.as_str())
    .bind(chat.as_str())
    .fetch_all(&db.pool)
    .await?;
    messages_from_rows(&rows)
}

/// Tenants with an unanswered inbound message received in `[since_ms, before_ms)` or a
/// pending outbound message: one query (the created-at index and the partial pending index).
pub(crate) async fn tenants_with_pending_work(
    db: &Db,
    since_ms: i64,
    before_ms: i64,
) -> Result<Vec<TenantId>, Failure> {
    let rows = sqlx::query(
        "SELECT DISTINCT m.tenant_id FROM messages m \
         WHERE m.direction = 'inbound' AND m.created_ms >= $1 AND m.created_ms < $2 \
         AND NOT EXISTS (SELECT 1 FROM reply_links r WHERE r.inbound_id = m.id) \
         UNION SELECT DISTINCT tenant_id FROM messages WHERE status = 'pending'",
    )
    .bind(since_ms)
    .bind(before_ms)
    .fetch_all(&db.pool)
    .await?;
    rows.iter().map(|row| id(row, "tenant_id")).collect()
}

/// Pending outbound messages, oldest first.
pub(crate) async fn unsent_replies(
    db: &Db,
    tenant: &TenantId,
) -> Result<Vec<StoredMessage>, Failure> {
    let rows = sqlx::query(select_messages!(
        "WHERE m.tenant_id = $1 AND m.status = 'pending' ORDER BY m.created_ms, m.id"
    ))
    .bind(tenant.as_str())
    .fetch_all(&db.pool)
    .await?;
    messages_from_rows(&rows)
}

/// The chat's last `count` messages, oldest first.
pub(crate) async fn conversation_messages(
    db: &Db,
    tenant: &TenantId,
    chat: &ChatId,
    count: u32,
) -> Result<Vec<StoredMessage>, Failure> {
    let rows = sqlx::query(select_messages!(
        "WHERE m.tenant_id = $1 AND m.chat_id = $2 \
         ORDER BY m.created_ms DESC, m.id DESC LIMIT $3"
    ))
    .bind(tenant.as_str())
    .bind(chat.as_str())
    .bind(limit(count))
    .fetch_all(&db.pool)
    .await?;
    oldest_first(&rows)
}

/// The chat's last `count` messages with text that the customer saw, oldest first.
pub(crate) async fn recent_history(
    db: &Db,
    tenant: &TenantId,
    chat: &ChatId,
    count: u32,
) -> Result<Vec<StoredMessage>, Failure> {
    let rows = sqlx::query(select_messages!(
        "WHERE m.tenant_id = $1 AND m.chat_id = $2 AND m.body IS NOT NULL \
         AND (m.status IS NULL OR m.status <> 'failed') \
         ORDER BY m.created_ms DESC, m.id DESC LIMIT $3"
    ))
    .bind(tenant.as_str())
    .bind(chat.as_str())
    .bind(limit(count))
    .fetch_all(&db.pool)
    .await?;
    oldest_first(&rows)
}

/// The tenant's messages created before `before_ms`, newest first.
pub(crate) async fn chat_log(
    db: &Db,
    tenant: &TenantId,
    before_ms: Option<i64>,
    count: u32,
) -> Result<Vec<StoredMessage>, Failure> {
    let rows = sqlx::query(select_messages!(
        "WHERE m.tenant_id = $1 AND m.created_ms < $2 \
         ORDER BY m.created_ms DESC, m.id DESC LIMIT $3"
    ))
    .bind(tenant.as_str())
    .bind(before_ms.unwrap_or(i64::MAX))
    .bind(limit(count))
    .fetch_all(&db.pool)
    .await?;
    messages_from_rows(&rows)
}

/// Deletes messages created before `cutoff_ms`, in batches; reply links go with them
/// (`ON DELETE CASCADE` / `SET NULL`).
pub(crate) async fn delete_messages_before(db: &Db, cutoff_ms: i64) -> Result<u64, Failure> {
    let mut deleted = 0;
    loop {
        let batch = sqlx::query(
            "DELETE FROM messages WHERE id IN \
             (SELECT id FROM messages WHERE created_ms < $1 ORDER BY id LIMIT $2)",
        )
        .bind(cutoff_ms)
        .bind(RETENTION_BATCH)
        .execute(&db.pool)
        .await?
        .rows_affected();
        deleted += batch;
        if batch < RETENTION_BATCH.unsigned_abs() {
            return Ok(deleted);
        }
    }
}

/// The answered ids, sorted and deduplicated; an empty batch is refused.
fn batch(ids: &[i64]) -> Result<Vec<i64>, Failure> {
    if ids.is_empty() {
        return Err(StoreError::Invalid {
            reason: "a reply must answer at least one inbound message".to_owned(),
        }
        .into());
    }
    let mut ids = ids.to_vec();
    ids.sort_unstable();
    ids.dedup();
    Ok(ids)
}

/// Links each inbound message of the chat to `reply_id` (`None`: dismissed). `Ok(Err(id))`
/// when message `id` is already linked; [`StoreError::NotFound`] when it is not an inbound
/// message of this chat. The caller rolls back on either.
async fn link_inbound(
    tx: &mut AnyConnection,
    tenant: &TenantId,
    chat: &ChatId,
    inbound: &[i64],
    reply_id: Option<i64>,
    at_ms: i64,
) -> Result<Result<(), i64>, Failure> {
    for &inbound_id in inbound {
        let linked = sqlx::query(
            "INSERT INTO reply_links (inbound_id, reply_id, created_ms) \
             SELECT id, $2, $3 FROM messages \
             WHERE id = $1 AND tenant_id = $4 AND chat_id = $5 AND direction = 'inbound' \
             ON CONFLICT (inbound_id) DO NOTHING",
        )
        .bind(inbound_id)
        .bind(reply_id)
        .bind(at_ms)
        .bind(tenant.as_str())
        .bind(chat.as_str())
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if linked == 1 {
            continue;
        }
        let already = sqlx::query("SELECT 1 FROM reply_links WHERE inbound_id = $1")
            .bind(inbound_id)
            .fetch_optional(&mut *tx)
            .await?
            .is_some();
        if already {
            return Ok(Err(inbound_id));
        }
        return Err(StoreError::NotFound {
            what: format!("inbound message {inbound_id} in chat {chat} of tenant {tenant}"),
        }
        .into());
    }
    Ok(Ok(()))
}

/// Creates the conversation row if it does not exist yet.
async fn ensure_conversation(
    tx: &mut AnyConnection,
    tenant: &TenantId,
    chat: &ChatId,
) -> Result<(), Failure> {
    sqlx::query(
        "INSERT INTO conversations (tenant_id, chat_id) VALUES ($1, $2) \
         ON CONFLICT (tenant_id, chat_id) DO NOTHING",
    )
    .bind(tenant.as_str())
    .bind(chat.as_str())
    .execute(&mut *tx)
    .await?;
    Ok(())
}

/// The id of the tenant's message with this wamid (which must exist).
async fn existing_wamid(
    tx: &mut AnyConnection,
    tenant: &TenantId,
    wamid: &Wamid,
) -> Result<i64, Failure> {
    Ok(
        sqlx::query_scalar("SELECT id FROM messages WHERE tenant_id = $1 AND wamid = $2")
            .bind(tenant.as_str())
            .bind(wamid.as_str())
            .fetch_one(&mut *tx)
            .await?,
    )
}

/// [`StoreError::NotFound`] unless the tenant has an outbound message `id`.
async fn ensure_outbound_exists(
    tx: &mut AnyConnection,
    tenant: &TenantId,
    id: i64,
) -> Result<(), Failure> {
    let exists = sqlx::query(
        "SELECT 1 FROM messages WHERE id = $1 AND tenant_id = $2 AND direction = 'outbound'",
    )
    .bind(id)
    .bind(tenant.as_str())
    .fetch_optional(&mut *tx)
    .await?
    .is_some();
    if exists {
        Ok(())
    } else {
        Err(StoreError::NotFound {
            what: format!("outbound message {id} of tenant {tenant}"),
        }
        .into())
    }
}

fn messages_from_rows(rows: &[AnyRow]) -> Result<Vec<StoredMessage>, Failure> {
    rows.iter().map(message_from_row).collect()
}

/// Rows fetched newest first, returned oldest first.
fn oldest_first(rows: &[AnyRow]) -> Result<Vec<StoredMessage>, Failure> {
    let mut messages = messages_from_rows(rows)?;
    messages.reverse();
    Ok(messages)
}

fn message_from_row(row: &AnyRow) -> Result<StoredMessage, Failure> {
    let error_title: Option<String> = get(row, "error_title")?;
    Ok(StoredMessage {
        id: get(row, "id")?,
        tenant: id(row, "tenant_id")?,
        chat: id(row, "chat_id")?,
        direction: named(row, "direction", Direction::parse)?,
        origin: optional_named(row, "origin", OutboundOrigin::parse)?,
        wamid: optional_id(row, "wamid")?,
        kind: get(row, "kind")?,
        body: get(row, "body")?,
        status: optional_named(row, "status", DeliveryStatus::parse)?,
        status_ms: get(row, "status_ms")?,
        failure: error_title
            .map(|title| {
                Ok::<_, Failure>(SendFailure {
                    code: get(row, "error_code")?,
                    title,
                })
            })
            .transpose()?,
        created_ms: get(row, "created_ms")?,
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
    fn sql_status_ranks_agree_with_can_advance_to() {
        for current in DeliveryStatus::ALL {
            for next in DeliveryStatus::ALL {
                assert_eq!(
                    status_rank(current) < advance_threshold(next),
                    current.can_advance_to(next),
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
