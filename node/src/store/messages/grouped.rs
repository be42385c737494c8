//! The hot path's writes, each run inside a transaction it shares with others (the
//! group-commit writer's, `store::writer`): an inbound message, a bot reply with its links,
//! a reply's send result.
//!
//! None of them rolls the transaction back: a write that decides to change nothing (a
//! duplicate, a batch already answered, a stale epoch) either checks before it writes or
//! undoes its own rows, so the other writes of the transaction commit whatever it decided.
//! A database error is the one way a write fails the transaction; the writer then runs each
//! write again on its own.

use std::collections::{HashMap, HashSet};

use salesboy_actors::store::{
    InsertOutcome, NewInbound, NewReply, ReplyOutcome, StoreError, StoredInbound,
};
use salesboy_protocol::events::Event;
use salesboy_protocol::subjects::EventKind;
use salesboy_protocol::{TenantId, Wamid};
use serde_json::json;
use sqlx::AnyConnection;

use super::{batch, ensure_outbound_exists, existing_wamid, link_inbound, sent_event};
use crate::store::decode::{get, id, named};
use crate::store::error::Failure;
use crate::store::fencing::Fences;
use crate::store::{lists, outbox};
use salesboy_actors::store::OutboundOrigin;
use salesboy_protocol::ChatId;

/// What a transaction's inbound messages find stored already: the messages themselves,
/// (tenant, wamid) → id, and their chats.
#[derive(Debug, Default)]
pub(crate) struct Duplicates {
    stored: HashMap<(String, String), i64>,
    /// (tenant, chat) of the chats that exist, including those created in this transaction.
    chats: HashSet<(String, String)>,
}

impl Duplicates {
    /// Reads which of `messages`, and which of their chats, are stored already: two
    /// statements per 512 messages.
    pub(crate) async fn read(
        tx: &mut AnyConnection,
        messages: &[&NewInbound],
    ) -> Result<Self, Failure> {
        let mut stored = HashMap::new();
        let mut chats = HashSet::new();
        // One lookup per message, by the unique index: a scalar subquery per row of a
        // `VALUES` list. (Postgres plans `(a, b) IN (VALUES …)` as a semi-join that may scan
        // the whole table, a cost that grows with history.)
        for chunk in messages.chunks(lists::MAX_LIST / 2) {
            let count = lists::padded_len(chunk.len());
            let pairs = lists::pair_placeholders(1, count);
            let sql = format!(
                "WITH v (t, w) AS (VALUES {pairs}) SELECT v.t, v.w, \
                 (SELECT m.id FROM messages m WHERE m.tenant_id = v.t AND m.wamid = v.w) \
                 FROM v"
            );
            let mut query =
                sqlx::query_as::<_, (String, String, Option<i64>)>(sqlx::AssertSqlSafe(sql));
            for message in lists::padded(chunk) {
                query = query
                    .bind(message.tenant.as_str())
                    .bind(message.wamid.as_str());
            }
            for (tenant, wamid, id) in query.fetch_all(&mut *tx).await? {
                if let Some(id) = id {
                    stored.insert((tenant, wamid), id);
                }
            }
            let sql = format!(
                "WITH v (t, c) AS (VALUES {pairs}) SELECT v.t, v.c, \
                 (SELECT 1 FROM conversations k WHERE k.tenant_id = v.t AND k.chat_id = v.c) \
                 FROM v"
            );
            let mut query =
                sqlx::query_as::<_, (String, String, Option<i32>)>(sqlx::AssertSqlSafe(sql));
            for message in lists::padded(chunk) {
                query = query
                    .bind(message.tenant.as_str())
                    .bind(message.chat.as_str());
            }
            for (tenant, chat, found) in query.fetch_all(&mut *tx).await? {
                if found.is_some() {
                    chats.insert((tenant, chat));
                }
            }
        }
        Ok(Self { stored, chats })
    }

    /// Whether the message's chat is new; from now on it exists.
    fn create_chat(&mut self, message: &NewInbound) -> bool {
        self.chats.insert((
            message.tenant.as_str().to_owned(),
            message.chat.as_str().to_owned(),
        ))
    }

    fn get(&self, message: &NewInbound) -> Option<i64> {
        self.stored
            .get(&(
                message.tenant.as_str().to_owned(),
                message.wamid.as_str().to_owned(),
            ))
            .copied()
    }
}

/// Persists an inbound message with its `message_received` event; one stored already (in
/// `duplicates`, or by a write earlier in this transaction) is reported and changes nothing.
pub(crate) async fn insert_inbound(
    tx: &mut AnyConnection,
    duplicates: &mut Duplicates,
    message: &NewInbound,
) -> Result<StoredInbound, Failure> {
    if let Some(id) = duplicates.get(message) {
        return Ok(StoredInbound {
            outcome: InsertOutcome::Duplicate { id },
            new_chat: false,
        });
    }
    let new_chat = duplicates.create_chat(message);
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
        "INSERT INTO messages \
         (tenant_id, chat_id, direction, wamid, kind, body, raw, created_ms, sent_ms) \
         VALUES ($1, $2, 'inbound', $3, $4, $5, $6, $7, $8) \
         ON CONFLICT (tenant_id, wamid) DO NOTHING RETURNING id",
    )
    .bind(message.tenant.as_str())
    .bind(message.chat.as_str())
    .bind(message.wamid.as_str())
    .bind(message.kind.as_str())
    .bind(message.body.as_deref())
    .bind(message.raw.as_deref())
    .bind(message.received_ms)
    .bind(message.sent_ms)
    .fetch_optional(&mut *tx)
    .await?;
    let Some(id) = inserted else {
        // Stored since `duplicates` was read (twice in one delivery, or by another node):
        // the conversation's last inbound time may have moved to this receive time, which
        // is as recent as the stored one's.
        let id = existing_wamid(&mut *tx, &message.tenant, &message.wamid).await?;
        return Ok(StoredInbound {
            outcome: InsertOutcome::Duplicate { id },
            new_chat: false,
        });
    };
    let event = Event::tenant(
        EventKind::MessageReceived,
        message.tenant.clone(),
        message.received_ms,
        json!({
            "message_id": id,
            "wamid": message.wamid.as_str(),
            "type": message.kind.as_str(),
            "text": message.body,
        }),
    )
    .with_chat(message.chat.clone());
    outbox::append(&mut *tx, &event).await?;
    Ok(StoredInbound {
        outcome: InsertOutcome::Inserted { id },
        new_chat,
    })
}

/// Records a bot reply and links its batch, all or nothing: when a message of the batch is
/// answered already, or is not an inbound message of the chat, the rows written for this
/// reply are deleted again. Fenced (the tenant must be in `fences`).
pub(crate) async fn record_reply(
    tx: &mut AnyConnection,
    fences: &Fences,
    reply: &NewReply,
) -> Result<ReplyOutcome, Failure> {
    let answers = batch(&reply.answers)?;
    fences.check(&reply.tenant, reply.epoch)?;
    let outbound_id: i64 = sqlx::query_scalar(
        "INSERT INTO messages (tenant_id, chat_id, direction, origin, kind, body, status, \
         created_ms, passages) VALUES ($1, $2, 'outbound', 'bot', 'text', $3, 'pending', $4, $5) \
         RETURNING id",
    )
    .bind(reply.tenant.as_str())
    .bind(reply.chat.as_str())
    .bind(reply.body.as_str())
    .bind(reply.created_ms)
    .bind(
        (!reply.passages.is_empty())
            .then(|| serde_json::to_string(&reply.passages))
            .transpose()
            .map_err(|e| StoreError::Invalid {
                reason: format!("passages: {e}"),
            })?,
    )
    .fetch_one(&mut *tx)
    .await?;
    let linked = link_inbound(
        &mut *tx,
        &reply.tenant,
        &reply.chat,
        &answers,
        Some(outbound_id),
        reply.created_ms,
    )
    .await;
    match linked {
        Ok(Ok(())) => Ok(ReplyOutcome::Recorded { outbound_id }),
        Ok(Err(inbound_id)) => {
            unrecord_reply(tx, outbound_id).await?;
            Ok(ReplyOutcome::AlreadyAnswered { inbound_id })
        }
        Err(Failure::Store(error)) => {
            unrecord_reply(tx, outbound_id).await?;
            Err(error.into())
        }
        Err(failure) => Err(failure),
    }
}

/// Deletes a reply recorded in this transaction, and its links.
async fn unrecord_reply(tx: &mut AnyConnection, outbound_id: i64) -> Result<(), Failure> {
    sqlx::query("DELETE FROM reply_links WHERE reply_id = $1")
        .bind(outbound_id)
        .execute(&mut *tx)
        .await?;
    sqlx::query("DELETE FROM messages WHERE id = $1")
        .bind(outbound_id)
        .execute(&mut *tx)
        .await?;
    Ok(())
}

/// Records that a pending outbound message was accepted by Meta, with its event; one no
/// longer pending is left as it is. Fenced (the tenant must be in `fences`).
pub(crate) async fn mark_reply_sent(
    tx: &mut AnyConnection,
    fences: &Fences,
    sent: &ReplySent,
) -> Result<(), Failure> {
    fences.check(&sent.tenant, sent.epoch)?;
    let row = sqlx::query(
        "UPDATE messages SET wamid = $3, status = 'sent', status_ms = $4 \
         WHERE id = $1 AND tenant_id = $2 AND direction = 'outbound' AND status = 'pending' \
         RETURNING chat_id, origin, body",
    )
    .bind(sent.outbound_id)
    .bind(sent.tenant.as_str())
    .bind(sent.wamid.as_str())
    .bind(sent.at_ms)
    .fetch_optional(&mut *tx)
    .await?;
    let Some(row) = row else {
        return ensure_outbound_exists(&mut *tx, &sent.tenant, sent.outbound_id).await;
    };
    let chat: ChatId = id(&row, "chat_id")?;
    let origin = named(&row, "origin", OutboundOrigin::parse)?;
    let body: Option<String> = get(&row, "body")?;
    let event = sent_event(
        &sent.tenant,
        &chat,
        origin,
        sent.outbound_id,
        sent.wamid.as_str(),
        body.as_deref(),
        sent.at_ms,
    );
    outbox::append(&mut *tx, &event).await
}

/// A pending outbound message accepted by Meta.
#[derive(Debug, Clone)]
pub(crate) struct ReplySent {
    /// The tenant.
    pub tenant: TenantId,
    /// The outbound message.
    pub outbound_id: i64,
    /// Meta's id for it.
    pub wamid: Wamid,
    /// When Meta accepted it.
    pub at_ms: i64,
    /// The sender's epoch for the tenant (fenced).
    pub epoch: u64,
}
