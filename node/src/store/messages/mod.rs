//! Conversations, messages, replies and delivery statuses; the reads reconciliation needs.
//!
//! One table holds both directions. Inbound rows are deduplicated by the unique
//! (tenant_id, wamid) key with `ON CONFLICT DO NOTHING`; `reply_links` (primary key
//! `inbound_id`) makes a second reply to the same inbound message impossible.
//!
//! This module writes conversations, inbound and outbound messages and replies; `status`
//! applies delivery statuses, `reads` holds the queries that read messages back.

mod grouped;
mod reads;
mod status;

pub(crate) use grouped::{
    FenceTest, ReplySent, finish_inbound, finish_replies, finish_sent, push_inbound, push_links,
    push_replies, push_sent,
};
pub(crate) use reads::{
    CHAT_HISTORY, CHAT_MESSAGES, chat_log, chat_messages_before, last_of_chat,
    tenants_with_pending_work, unanswered_inbound, unanswered_inbound_in_chat, unsent_replies,
};
pub(crate) use status::update_status;

use salesboy_actors::store::{
    Conversation, DeliveryStatus, DismissOutcome, InsertOutcome, NewOutbound, SendFailure,
    StoreError,
};
use salesboy_protocol::whatsapp::OutboundContent;
use salesboy_protocol::{ChatId, TenantId, Wamid};
use sqlx::any::AnyArguments;
use sqlx::query::Query;
use sqlx::{Any, AnyConnection};

use salesboy_actors::store::{OutboundOrigin, PAUSED_INDEFINITELY};
use salesboy_protocol::events::Event;
use salesboy_protocol::subjects::EventKind;
use serde_json::json;

use super::Db;
use super::decode::{get, id};
use super::error::Failure;
use super::fencing::fence;
use super::outbox;

/// The tenant's conversations, most recent inbound first (never: last), ties by chat id,
/// after conversation `after` in that order; at most `count`.
pub(crate) async fn conversations(
    db: &Db,
    tenant: &TenantId,
    after: Option<&ChatId>,
    count: u32,
) -> Result<Vec<Conversation>, Failure> {
    // The order's key: (COALESCE(last_inbound_ms, -1) descending, chat id ascending).
    let (cursor_ms, cursor_chat) = match after {
        None => (i64::MAX, String::new()),
        Some(chat) => match conversation(db, tenant, chat).await? {
            Some(found) => (found.last_inbound_ms.unwrap_or(-1), chat.to_string()),
            None => return Ok(Vec::new()),
        },
    };
    let rows = sqlx::query(
        "SELECT tenant_id, chat_id, last_inbound_ms, bot_paused_until_ms FROM conversations \
         WHERE tenant_id = $1 AND (COALESCE(last_inbound_ms, -1) < $2 \
         OR (COALESCE(last_inbound_ms, -1) = $3 AND chat_id > $4)) \
         ORDER BY COALESCE(last_inbound_ms, -1) DESC, chat_id LIMIT $5",
    )
    .bind(tenant.as_str())
    .bind(cursor_ms)
    .bind(cursor_ms)
    .bind(cursor_chat)
    .bind(super::decode::limit(count))
    .fetch_all(&db.reader)
    .await?;
    rows.iter().map(conversation_from_row).collect()
}

fn conversation_from_row(row: &sqlx::any::AnyRow) -> Result<Conversation, Failure> {
    Ok(Conversation {
        tenant: id(row, "tenant_id")?,
        chat: id(row, "chat_id")?,
        last_inbound_ms: get(row, "last_inbound_ms")?,
        bot_paused_until_ms: get(row, "bot_paused_until_ms")?,
    })
}

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
    .fetch_optional(&db.reader)
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
    at_ms: i64,
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
    let (kind, detail) = match until_ms {
        Some(until) if until == PAUSED_INDEFINITELY => {
            (EventKind::BotPaused, json!({"until_ms": null}))
        }
        Some(until) => (EventKind::BotPaused, json!({"until_ms": until})),
        None => (EventKind::BotResumed, json!({})),
    };
    let event = Event::tenant(kind, tenant.clone(), at_ms, detail).with_chat(chat.clone());
    outbox::append(&mut tx, &event).await?;
    tx.commit().await?;
    db.outbox_written();
    Ok(())
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
         status, status_ms, created_ms, client_ref, content) \
         VALUES ($1, $2, 'outbound', $3, $4, $5, $6, $7, $8, $9, $10, $11) \
         ON CONFLICT DO NOTHING RETURNING id",
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
    .bind(message.client_ref.as_deref())
    .bind(message.content.as_ref().map(OutboundContent::to_json))
    .fetch_optional(&mut *tx)
    .await?;
    // No id: the tenant has the wamid or the client_ref already (the two unique keys).
    let existing = match (inserted, &message.wamid, &message.client_ref) {
        (Some(id), wamid, _) => {
            if let Some(wamid) = wamid {
                let event = sent_event(
                    &message.tenant,
                    &message.chat,
                    message.origin,
                    id,
                    wamid.as_str(),
                    message.body.as_deref(),
                    message.created_ms,
                );
                outbox::append(&mut tx, &event).await?;
            }
            tx.commit().await?;
            if wamid.is_some() {
                db.outbox_written();
            }
            return Ok(InsertOutcome::Inserted { id });
        }
        (None, Some(wamid), _) => existing_wamid(&mut tx, &message.tenant, wamid).await?,
        (None, None, Some(client_ref)) => {
            existing_client_ref(&mut tx, &message.tenant, client_ref).await?
        }
        (None, None, None) => {
            return Err(StoreError::Backend(
                "insert of an outbound message without wamid returned no id".to_owned(),
            )
            .into());
        }
    };
    tx.rollback().await?;
    Ok(InsertOutcome::Duplicate { id: existing })
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

/// The event of an outbound message accepted by Meta: `reply_sent` for the bot's,
/// `owner_message_sent` for the owner's (through the API or an echo from the phone).
pub(super) fn sent_event(
    tenant: &TenantId,
    chat: &ChatId,
    origin: OutboundOrigin,
    message_id: i64,
    wamid: &str,
    text: Option<&str>,
    at_ms: i64,
) -> Event {
    let kind = match origin {
        OutboundOrigin::Bot => EventKind::ReplySent,
        OutboundOrigin::Owner | OutboundOrigin::Echo => EventKind::OwnerMessageSent,
    };
    let detail = json!({
        "message_id": message_id,
        "wamid": wamid,
        "origin": origin.as_str(),
        "text": text,
    });
    Event::tenant(kind, tenant.clone(), at_ms, detail).with_chat(chat.clone())
}

/// Records that sending a pending outbound message failed. Fenced.
pub(crate) async fn mark_reply_failed(
    db: &Db,
    tenant: &TenantId,
    outbound_id: i64,
    failure: &SendFailure,
    at_ms: i64,
    epoch: u64,
) -> Result<(), Failure> {
    let update = sqlx::query(
        "UPDATE messages SET status = 'failed', status_ms = $3, error_code = $4, \
         error_title = $5 \
         WHERE id = $1 AND tenant_id = $2 AND direction = 'outbound' AND status = 'pending'",
    )
    .bind(outbound_id)
    .bind(tenant.as_str())
    .bind(at_ms)
    .bind(failure.code)
    .bind(failure.title.as_str());
    update_pending_reply(db, tenant, outbound_id, epoch, update).await
}

/// Runs `update` on the outbound message `outbound_id` of `tenant` in one fenced transaction.
/// `update` changes the message only while it is pending: one no longer pending is left as
/// it is, and [`StoreError::NotFound`] says there is no such outbound message.
async fn update_pending_reply<'q>(
    db: &Db,
    tenant: &TenantId,
    outbound_id: i64,
    epoch: u64,
    update: Query<'q, Any, AnyArguments>,
) -> Result<(), Failure> {
    let mut tx = db.begin().await?;
    fence(db, &mut tx, tenant, epoch).await?;
    let updated = update.execute(&mut *tx).await?.rows_affected();
    if updated == 0 {
        ensure_outbound_exists(&mut tx, tenant, outbound_id).await?;
    }
    tx.commit().await?;
    Ok(())
}

/// The answered ids, sorted and deduplicated; an empty batch is refused.
pub(super) fn batch(ids: &[i64]) -> Result<Vec<i64>, Failure> {
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

/// Links each inbound message of the chat to its reply, outbound message `outbound_id` (column
/// `reply_links.reply_id`; `None`: dismissed). `Ok(Err(id))`
/// when message `id` is already linked; [`StoreError::NotFound`] when it is not an inbound
/// message of this chat. The caller rolls back on either.
async fn link_inbound(
    tx: &mut AnyConnection,
    tenant: &TenantId,
    chat: &ChatId,
    inbound: &[i64],
    outbound_id: Option<i64>,
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
        .bind(outbound_id)
        .bind(at_ms)
        .bind(tenant.as_str())
        .bind(chat.as_str())
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if linked == 1 {
            continue;
        }
        if is_answered(&mut *tx, inbound_id).await? {
            return Ok(Err(inbound_id));
        }
        return Err(StoreError::NotFound {
            what: format!("inbound message {inbound_id} in chat {chat} of tenant {tenant}"),
        }
        .into());
    }
    Ok(Ok(()))
}

/// Whether inbound message `inbound_id` has a reply link (answered or dismissed).
pub(super) async fn is_answered(tx: &mut AnyConnection, inbound_id: i64) -> Result<bool, Failure> {
    Ok(
        sqlx::query("SELECT 1 FROM reply_links WHERE inbound_id = $1")
            .bind(inbound_id)
            .fetch_optional(&mut *tx)
            .await?
            .is_some(),
    )
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
pub(super) async fn existing_wamid(
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

/// The id of the tenant's message recorded with `client_ref`.
async fn existing_client_ref(
    tx: &mut AnyConnection,
    tenant: &TenantId,
    client_ref: &str,
) -> Result<i64, Failure> {
    Ok(
        sqlx::query_scalar("SELECT id FROM messages WHERE tenant_id = $1 AND client_ref = $2")
            .bind(tenant.as_str())
            .bind(client_ref)
            .fetch_one(&mut *tx)
            .await?,
    )
}

/// [`StoreError::NotFound`] unless the tenant has an outbound message `id`.
pub(super) async fn ensure_outbound_exists(
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
