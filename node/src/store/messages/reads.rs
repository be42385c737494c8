//! The message reads: what reconciliation needs (unanswered inbound messages, pending
//! outbound ones, tenants with either), a chat's history and the tenant's chat log.

use salesboy_actors::store::{
    DeliveryStatus, Direction, OutboundOrigin, SendFailure, StoredMessage,
};
use salesboy_protocol::{ChatId, TenantId};
use sqlx::Any;
use sqlx::any::{AnyArguments, AnyRow};
use sqlx::query::Query;

use super::super::Db;
use salesboy_protocol::whatsapp::OutboundContent;

use super::super::decode::{get, id, limit, named, optional_id, optional_json, optional_named};
use super::super::error::Failure;

/// `SELECT` of the columns [`message_from_row`] reads from `messages m`, followed by `$rest`.
macro_rules! select_messages {
    ($rest:literal) => {
        concat!(
            "SELECT m.id, m.tenant_id, m.chat_id, m.direction, m.origin, m.wamid, m.kind, \
             m.body, m.status, m.status_ms, m.error_code, m.error_title, m.created_ms, m.sent_ms, m.content, m.passages \
             FROM messages m ",
            $rest
        )
    };
}

/// Inbound messages since `since_ms` with no reply link, oldest first.
pub(crate) async fn unanswered_inbound(
    db: &Db,
    tenant: &TenantId,
    since_ms: i64,
) -> Result<Vec<StoredMessage>, Failure> {
    let query = sqlx::query(select_messages!(
        "WHERE m.tenant_id = $1 AND m.direction = 'inbound' AND m.created_ms >= $2 \
         AND NOT EXISTS (SELECT 1 FROM reply_links r WHERE r.inbound_id = m.id) \
         ORDER BY m.created_ms, m.id"
    ))
    .bind(tenant.as_str())
    .bind(since_ms);
    fetch_messages(db, query).await
}

/// One chat's inbound messages with no reply link, oldest first.
pub(crate) async fn unanswered_inbound_in_chat(
    db: &Db,
    tenant: &TenantId,
    chat: &ChatId,
) -> Result<Vec<StoredMessage>, Failure> {
    let query = sqlx::query(select_messages!(
        "WHERE m.tenant_id = $1 AND m.chat_id = $2 AND m.direction = 'inbound' \
         AND NOT EXISTS (SELECT 1 FROM reply_links r WHERE r.inbound_id = m.id) \
         ORDER BY m.created_ms, m.id"
    ))
    .bind(tenant.as_str())
    .bind(chat.as_str());
    fetch_messages(db, query).await
}

/// Tenants with an unanswered inbound message received in `[since_ms, before_ms)` or an
/// outbound message pending since before `before_ms` (a reply under way is not work left
/// over): one query (the created-at index and the partial pending index).
/// Tenants whose session is stopped, and deleted ones, are left out: nothing activates them.
pub(crate) async fn tenants_with_pending_work(
    db: &Db,
    since_ms: i64,
    before_ms: i64,
) -> Result<Vec<TenantId>, Failure> {
    let rows = sqlx::query(
        "SELECT w.tenant_id FROM (SELECT DISTINCT m.tenant_id FROM messages m \
         WHERE m.direction = 'inbound' AND m.created_ms >= $1 AND m.created_ms < $2 \
         AND NOT EXISTS (SELECT 1 FROM reply_links r WHERE r.inbound_id = m.id) \
         UNION SELECT DISTINCT tenant_id FROM messages \
         WHERE status = 'pending' AND created_ms < $3) w \
         JOIN tenants t ON t.id = w.tenant_id \
         WHERE t.session_stopped_ms IS NULL AND t.deleted_ms IS NULL",
    )
    .bind(since_ms)
    .bind(before_ms)
    .bind(before_ms)
    .fetch_all(&db.reader)
    .await?;
    rows.iter().map(|row| id(row, "tenant_id")).collect()
}

/// Pending outbound messages, oldest first.
pub(crate) async fn unsent_replies(
    db: &Db,
    tenant: &TenantId,
) -> Result<Vec<StoredMessage>, Failure> {
    let query = sqlx::query(select_messages!(
        "WHERE m.tenant_id = $1 AND m.status = 'pending' ORDER BY m.created_ms, m.id"
    ))
    .bind(tenant.as_str());
    fetch_messages(db, query).await
}

/// For [`last_of_chat`]: the chat's last messages.
pub(crate) const CHAT_MESSAGES: &str = select_messages!(
    "WHERE m.tenant_id = $1 AND m.chat_id = $2 \
     ORDER BY m.created_ms DESC, m.id DESC LIMIT $3"
);

/// For [`last_of_chat`]: the chat's last messages with text that the customer saw.
pub(crate) const CHAT_HISTORY: &str = select_messages!(
    "WHERE m.tenant_id = $1 AND m.chat_id = $2 AND m.body IS NOT NULL \
     AND (m.status IS NULL OR m.status <> 'failed') \
     ORDER BY m.created_ms DESC, m.id DESC LIMIT $3"
);

/// The chat's last `count` messages before message `before` (in the order of `created_ms`,
/// then id), oldest first; none if `before` is not a message of the chat.
pub(crate) async fn chat_messages_before(
    db: &Db,
    tenant: &TenantId,
    chat: &ChatId,
    before: i64,
    count: u32,
) -> Result<Vec<StoredMessage>, Failure> {
    let cursor = sqlx::query(
        "SELECT created_ms FROM messages WHERE tenant_id = $1 AND chat_id = $2 AND id = $3",
    )
    .bind(tenant.as_str())
    .bind(chat.as_str())
    .bind(before)
    .fetch_optional(&db.reader)
    .await?;
    let Some(cursor) = cursor else {
        return Ok(Vec::new());
    };
    let created_ms: i64 = get(&cursor, "created_ms")?;
    let query = sqlx::query(select_messages!(
        "WHERE m.tenant_id = $1 AND m.chat_id = $2 \
         AND (m.created_ms < $3 OR (m.created_ms = $4 AND m.id < $5)) \
         ORDER BY m.created_ms DESC, m.id DESC LIMIT $6"
    ))
    .bind(tenant.as_str())
    .bind(chat.as_str())
    .bind(created_ms)
    .bind(created_ms)
    .bind(before)
    .bind(limit(count));
    let mut messages = fetch_messages(db, query).await?;
    messages.reverse();
    Ok(messages)
}

/// The chat's last `count` messages that `query` ([`CHAT_MESSAGES`] or [`CHAT_HISTORY`])
/// selects, oldest first.
pub(crate) async fn last_of_chat(
    db: &Db,
    query: &'static str,
    tenant: &TenantId,
    chat: &ChatId,
    count: u32,
) -> Result<Vec<StoredMessage>, Failure> {
    let query = sqlx::query(query)
        .bind(tenant.as_str())
        .bind(chat.as_str())
        .bind(limit(count));
    let mut messages = fetch_messages(db, query).await?;
    messages.reverse();
    Ok(messages)
}

/// Runs `query`, a `select_messages!` with its values bound, and reads the messages.
async fn fetch_messages(
    db: &Db,
    query: Query<'_, Any, AnyArguments>,
) -> Result<Vec<StoredMessage>, Failure> {
    let rows = query.fetch_all(&db.reader).await?;
    rows.iter().map(message_from_row).collect()
}

/// The tenant's messages created before `before_ms`, newest first.
pub(crate) async fn chat_log(
    db: &Db,
    tenant: &TenantId,
    before_ms: Option<i64>,
    count: u32,
) -> Result<Vec<StoredMessage>, Failure> {
    let query = sqlx::query(select_messages!(
        "WHERE m.tenant_id = $1 AND m.created_ms < $2 \
         ORDER BY m.created_ms DESC, m.id DESC LIMIT $3"
    ))
    .bind(tenant.as_str())
    .bind(before_ms.unwrap_or(i64::MAX))
    .bind(limit(count));
    fetch_messages(db, query).await
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
        sent_ms: get(row, "sent_ms")?,
        content: optional_json(row, "content", OutboundContent::from_json)?,
        passages: optional_json(row, "passages", |raw| serde_json::from_str(raw))?
            .unwrap_or_default(),
    })
}
