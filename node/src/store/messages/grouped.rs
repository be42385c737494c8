//! The hot path's writes, run inside a transaction they share with others (the
//! group-commit writer's, `store::writer`): inbound messages, bot replies with their links,
//! replies' send results. Each kind is written with one statement per table for the whole
//! group, its rows passed as one JSON parameter (`store::json_rows`), so a transaction costs
//! about the same number of statements whether it holds one write or hundreds.
//!
//! Each kind comes in halves: `push_*` adds its statements to a [`RoundTrip`] the writer
//! sends with other kinds' statements, `finish_*` decides each write from their rows (and
//! may read or undo more on its own in the rare cases: a message stored meanwhile by another
//! node, a reply whose batch was answered already).
//!
//! None of them rolls the transaction back: a write that decides to change nothing (a
//! duplicate, a batch already answered, a stale epoch) either is left out before the
//! statements run or has its own rows undone after, so the other writes of the transaction
//! commit whatever it decided. A database error is the one way a write fails the
//! transaction; the writer then runs each write again on its own.

use std::collections::{HashMap, HashSet, VecDeque};

use salesboy_actors::store::{
    InsertOutcome, NewInbound, NewReply, Predecessor, ReplyOutcome, StoreError, StoredInbound,
};
use salesboy_protocol::events::Event;
use salesboy_protocol::subjects::EventKind;
use salesboy_protocol::{TenantId, Wamid};
use serde_json::json;
use sqlx::AnyConnection;
use sqlx::any::AnyRow;

use super::{batch, ensure_outbound_exists, existing_wamid, is_answered, sent_event};
use crate::store::decode::{epoch_to_sql, get, id, named};
use crate::store::error::Failure;
use crate::store::fencing::Fences;
use crate::store::json_rows::{Column, Rows, source};
use crate::store::round_trip::{Answers, RoundTrip, Slot};
use salesboy_actors::store::OutboundOrigin;
use salesboy_protocol::ChatId;

/// What a transaction's inbound messages find stored already: the messages themselves,
/// (tenant, wamid) → id, and their chats.
#[derive(Debug)]
struct Duplicates {
    stored: HashMap<(String, String), i64>,
    /// (tenant, chat) of the chats that exist, including those created in this transaction.
    chats: HashSet<(String, String)>,
}

impl Duplicates {
    /// Which of `messages`, and which of their chats, were stored already: from the rows of
    /// [`push_inbound`]'s read.
    fn from_rows(found: Vec<AnyRow>) -> Result<Self, Failure> {
        let mut stored = HashMap::new();
        let mut chats = HashSet::new();
        for row in found {
            let tenant: String = get(&row, "t")?;
            let wamid: String = get(&row, "w")?;
            let chat: String = get(&row, "c")?;
            let id: Option<i64> = get(&row, "stored_id")?;
            let chat_found: Option<i32> = get(&row, "chat_found")?;
            if chat_found.is_some() {
                chats.insert((tenant.clone(), chat));
            }
            if let Some(id) = id {
                stored.insert((tenant, wamid), id);
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

/// Where [`push_inbound`]'s statements answer, for [`finish_inbound`].
#[derive(Debug)]
pub(crate) struct InboundStatements {
    duplicates: Slot,
    inserted: Slot,
}

/// Adds to `round` what persists inbound messages (at least one): a read of which of them,
/// and of their chats, are stored already (one statement, run first, so it sees the store
/// as it was), one statement for their conversations and one for the messages. A message
/// stored already, or by another writer meanwhile, is left alone by the insert's
/// `ON CONFLICT`; one twice in the group is written once.
pub(crate) fn push_inbound(round: &mut RoundTrip, messages: &[&NewInbound]) -> InboundStatements {
    let dialect = round.dialect();
    let mut rows = Rows::default();
    for message in messages {
        rows.push([
            ("t", json!(message.tenant.as_str())),
            ("w", json!(message.wamid.as_str())),
            ("c", json!(message.chat.as_str())),
        ]);
    }
    // One lookup per message by each unique index: a scalar subquery per row. (Postgres
    // plans `(a, b) IN (…)` as a semi-join that may scan the whole table, a cost that
    // grows with history.)
    let sql = format!(
        "SELECT x.t AS t, x.w AS w, x.c AS c, \
         (SELECT m.id FROM messages m WHERE m.tenant_id = x.t AND m.wamid = x.w) AS stored_id, \
         (SELECT 1 FROM conversations k WHERE k.tenant_id = x.t AND k.chat_id = x.c) \
         AS chat_found FROM {}",
        source(
            dialect,
            round.next_param(),
            "x",
            &[Column::Text("t"), Column::Text("w"), Column::Text("c")]
        )
    );
    let duplicates = round.push(sql, vec![rows.into_json()]);
    // Each message once (the first of the group with its wamid), for the conversations and
    // the messages.
    let mut first_of: HashSet<(&str, &str)> = HashSet::new();
    let mut chats = Rows::default();
    let mut fresh = Rows::default();
    for message in messages {
        if !first_of.insert((message.tenant.as_str(), message.wamid.as_str())) {
            continue;
        }
        chats.push([
            ("t", json!(message.tenant.as_str())),
            ("c", json!(message.chat.as_str())),
            ("w", json!(message.wamid.as_str())),
            ("r", json!(message.received_ms)),
        ]);
        fresh.push([
            ("t", json!(message.tenant.as_str())),
            ("c", json!(message.chat.as_str())),
            ("w", json!(message.wamid.as_str())),
            ("k", json!(message.kind)),
            ("b", json!(message.body)),
            ("j", json!(message.raw)),
            ("r", json!(message.received_ms)),
            ("s", json!(message.sent_ms)),
        ]);
    }
    // Each chat's last inbound time moves to the latest receive time among its new messages
    // (a message stored already moves nothing: a scalar subquery per row probes the unique
    // index; Postgres would plan `NOT EXISTS` as an anti-join that may scan the table).
    // Upserted in chat order, so two PostgreSQL writer tasks lock the conversations they
    // share in the same order and never deadlock on them.
    let sql = format!(
        "INSERT INTO conversations (tenant_id, chat_id, last_inbound_ms) \
         SELECT x.t, x.c, max(x.r) FROM {} WHERE \
         (SELECT m.id FROM messages m WHERE m.tenant_id = x.t AND m.wamid = x.w) IS NULL \
         GROUP BY x.t, x.c ORDER BY x.t, x.c \
         ON CONFLICT (tenant_id, chat_id) DO UPDATE SET last_inbound_ms = CASE \
         WHEN conversations.last_inbound_ms IS NULL \
         OR conversations.last_inbound_ms < excluded.last_inbound_ms \
         THEN excluded.last_inbound_ms ELSE conversations.last_inbound_ms END",
        source(
            dialect,
            round.next_param(),
            "x",
            &[
                Column::Text("t"),
                Column::Text("c"),
                Column::Text("w"),
                Column::BigInt("r"),
            ]
        )
    );
    round.push(sql, vec![chats.into_json()]);
    let sql = format!(
        "INSERT INTO messages \
         (tenant_id, chat_id, direction, wamid, kind, body, raw, created_ms, sent_ms) \
         SELECT x.t, x.c, 'inbound', x.w, x.k, x.b, x.j, x.r, x.s FROM {} WHERE true \
         ON CONFLICT (tenant_id, wamid) DO NOTHING \
         RETURNING id, tenant_id, wamid, {PREDECESSOR} AS before_id",
        source(
            dialect,
            round.next_param(),
            "x",
            &[
                Column::Text("t"),
                Column::Text("c"),
                Column::Text("w"),
                Column::Text("k"),
                Column::Text("b"),
                Column::Text("j"),
                Column::BigInt("r"),
                Column::BigInt("s"),
            ]
        )
    );
    let inserted = round.push(sql, vec![fresh.into_json()]);
    InboundStatements {
        duplicates,
        inserted,
    }
}

/// What became of each inbound message of [`push_inbound`], from its statements' rows, each
/// new one with its `message_received` event (added to `events` with the message's index in
/// `messages`, for the caller to append). A message stored already (before the group, or
/// earlier in it) is reported and changed nothing. Results in the messages' order.
pub(crate) async fn finish_inbound(
    tx: &mut AnyConnection,
    statements: InboundStatements,
    answers: &mut Answers,
    messages: &[&NewInbound],
    events: &mut Vec<(usize, Event)>,
) -> Result<Vec<StoredInbound>, Failure> {
    /// What became of one message.
    enum Plan {
        Stored(StoredInbound),
        /// New: inserted with the group (its chat new or not).
        Fresh {
            new_chat: bool,
        },
        /// The same wamid as an earlier message of the group (at that index).
        SameAs(usize),
    }
    let mut duplicates = Duplicates::from_rows(answers.take(statements.duplicates)?)?;
    let mut plans = Vec::with_capacity(messages.len());
    let mut first_of: HashMap<(&str, &str), usize> = HashMap::new();
    for (index, message) in messages.iter().enumerate() {
        let key = (message.tenant.as_str(), message.wamid.as_str());
        if let Some(id) = duplicates.get(message) {
            plans.push(Plan::Stored(StoredInbound {
                outcome: InsertOutcome::Duplicate { id },
                new_chat: false,
                predecessor: Predecessor::Unknown,
            }));
        } else if let Some(&first) = first_of.get(&key) {
            plans.push(Plan::SameAs(first));
        } else {
            first_of.insert(key, index);
            plans.push(Plan::Fresh {
                new_chat: duplicates.create_chat(message),
            });
        }
    }
    let mut inserted: HashMap<(String, String), i64> = HashMap::new();
    // Each inserted message's id → the chat's latest inbound message with a lower id, as
    // its insert saw the table (see [`PREDECESSOR`]).
    let mut stored_before: HashMap<i64, Option<i64>> = HashMap::new();
    for row in answers.take(statements.inserted)? {
        let id: i64 = get(&row, "id")?;
        inserted.insert((get(&row, "tenant_id")?, get(&row, "wamid")?), id);
        stored_before.insert(id, get(&row, "before_id")?);
    }
    // Each new message's id as the insert returned it (none: stored meanwhile by another
    // node), looked up once for its predecessor and its result.
    let inserted_ids: Vec<Option<i64>> = messages
        .iter()
        .zip(&plans)
        .map(|(message, plan)| {
            let Plan::Fresh { .. } = plan else {
                return None;
            };
            let key = (
                message.tenant.as_str().to_owned(),
                message.wamid.as_str().to_owned(),
            );
            inserted.get(&key).copied()
        })
        .collect();
    let fresh = messages
        .iter()
        .zip(&inserted_ids)
        .filter_map(|(message, id)| {
            id.map(|id| (message.tenant.as_str(), message.chat.as_str(), id))
        });
    let predecessors = predecessors(fresh, &stored_before);
    let mut results: Vec<StoredInbound> = Vec::with_capacity(messages.len());
    for (index, (message, plan)) in messages.iter().zip(plans).enumerate() {
        let stored = match plan {
            Plan::Stored(stored) => stored,
            Plan::SameAs(first) => StoredInbound {
                outcome: InsertOutcome::Duplicate {
                    id: results[first].outcome.id(),
                },
                new_chat: false,
                predecessor: Predecessor::Unknown,
            },
            Plan::Fresh { new_chat } => {
                match inserted_ids[index] {
                    Some(id) => {
                        events.push((index, received_event(message, id)));
                        StoredInbound {
                            outcome: InsertOutcome::Inserted { id },
                            new_chat,
                            predecessor: predecessors
                                .get(&id)
                                .copied()
                                .unwrap_or(Predecessor::Unknown),
                        }
                    }
                    // Stored since `duplicates` was read (by another node): the
                    // conversation's last inbound time may have moved to this receive time,
                    // which is as recent as the stored one's.
                    None => StoredInbound {
                        outcome: InsertOutcome::Duplicate {
                            id: existing_wamid(&mut *tx, &message.tenant, &message.wamid).await?,
                        },
                        new_chat: false,
                        predecessor: Predecessor::Unknown,
                    },
                }
            }
        };
        results.push(stored);
    }
    Ok(results)
}

/// What the inbound insert returns of each row it inserts: the chat's latest inbound
/// message with a lower id. Only the value of each chat's first new message (its lowest id)
/// is used: it is what was stored before the statement on both databases (Postgres's
/// subquery sees the statement's snapshot; SQLite's sees the rows inserted so far, none of
/// them in that chat). The transaction holds the chats' conversation rows (the insert before
/// took them), so every message of these chats with a lower id is committed and none can
/// commit after with one. The partial index `messages_inbound_by_chat` makes each a short
/// descent, however long the chat.
const PREDECESSOR: &str = "(SELECT max(m.id) FROM messages m \
    WHERE m.tenant_id = messages.tenant_id AND m.chat_id = messages.chat_id \
    AND m.direction = 'inbound' AND m.id < messages.id)";

/// The predecessor in its chat of each message this transaction inserted (`inserted`:
/// (tenant, chat, id)), by id: each chat's first from `stored_before` (what the insert
/// returned, [`PREDECESSOR`]), the rest from the ids.
fn predecessors<'a>(
    inserted: impl Iterator<Item = (&'a str, &'a str, i64)>,
    stored_before: &HashMap<i64, Option<i64>>,
) -> HashMap<i64, Predecessor> {
    let mut by_chat: HashMap<(&str, &str), Vec<i64>> = HashMap::new();
    for (tenant, chat, id) in inserted {
        by_chat.entry((tenant, chat)).or_default().push(id);
    }
    let mut predecessors = HashMap::new();
    for ids in by_chat.values_mut() {
        ids.sort_unstable();
        let mut previous = match stored_before.get(&ids[0]) {
            Some(Some(id)) => Predecessor::Message(*id),
            Some(None) => Predecessor::FirstInChat,
            None => continue,
        };
        for &id in ids.iter() {
            predecessors.insert(id, previous);
            previous = Predecessor::Message(id);
        }
    }
    predecessors
}

/// The `message_received` event of an inbound message stored under `id`.
fn received_event(message: &NewInbound, id: i64) -> Event {
    Event::tenant(
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
    .with_chat(message.chat.clone())
}

/// A reply that passed its checks: its index among the replies, the inbound ids it answers,
/// its passages as stored.
type ValidReply = (usize, Vec<i64>, Option<String>);

/// Where a group's fenced writes (replies, send results) test their tenants' epochs.
#[derive(Debug, Clone, Copy)]
pub(crate) enum FenceTest<'a> {
    /// The fences were read before the statements are built: a write at a stale epoch is
    /// refused and left out of them.
    Read(&'a Fences),
    /// In the statements themselves ([`FENCE_PASSES`]), the fences read in the same round
    /// trip before them: a write at a stale epoch changes nothing and is refused once they
    /// ran. One round trip fewer on SQLite; on Postgres, which runs a round trip's
    /// statements one by one anyway, the test costs a scan of `tenant_epochs` per row
    /// while the table is small (the planner's choice; docs/benchmarks.md).
    InStatement,
}

impl FenceTest<'_> {
    /// The write's refusal when its fence was read and is stale.
    fn refused(self, tenant: &TenantId, epoch: u64) -> Option<Failure> {
        match self {
            Self::Read(fences) => fences.check(tenant, epoch).err(),
            Self::InStatement => None,
        }
    }

    /// The condition on the statement's rows `x`.
    fn condition(self) -> &'static str {
        match self {
            Self::Read(_) => "true",
            Self::InStatement => FENCE_PASSES,
        }
    }
}

/// The condition a fenced write's row `x` (with its tenant `x.t` and its writer's epoch
/// `x.e`) passes when no newer epoch was claimed for the tenant: the same test as
/// [`Fences::check`]. A scalar subquery per row reads the tenant's epoch.
const FENCE_PASSES: &str = "COALESCE((SELECT f.epoch FROM tenant_epochs f \
    WHERE f.tenant_id = x.t), x.e) <= x.e";

/// What is written of an outbound reply, as its insert returns it: (tenant, chat, body,
/// created, passages).
type WrittenReply = (String, String, String, i64, Option<String>);

/// Where [`push_replies`]'s statement answers, and what the replies decided before it.
#[derive(Debug)]
pub(crate) struct ReplyStatements {
    results: Vec<Option<Result<ReplyOutcome, Failure>>>,
    valid: Vec<ValidReply>,
    inserted: Option<Slot>,
}

/// Adds to `round` what records bot replies: one statement for their outbound messages.
/// Fenced as `fence` says: a reply at a stale epoch is refused alone (by [`push_links`],
/// with the fences read), as is one with no batch. [`push_links`] links their batches once
/// it ran.
pub(crate) fn push_replies(
    round: &mut RoundTrip,
    fence: FenceTest<'_>,
    replies: &[&NewReply],
) -> ReplyStatements {
    let mut results: Vec<Option<Result<ReplyOutcome, Failure>>> = Vec::with_capacity(replies.len());
    let mut valid: Vec<ValidReply> = Vec::new();
    let mut epochs: Vec<i64> = Vec::new();
    for (index, reply) in replies.iter().enumerate() {
        let checked = batch(&reply.answers).and_then(|answers| {
            if let Some(stale) = fence.refused(&reply.tenant, reply.epoch) {
                return Err(stale);
            }
            let epoch = epoch_to_sql(reply.epoch)?;
            let passages = (!reply.passages.is_empty())
                .then(|| serde_json::to_string(&reply.passages))
                .transpose()
                .map_err(|e| StoreError::Invalid {
                    reason: format!("passages: {e}"),
                })?;
            Ok((answers, passages, epoch))
        });
        match checked {
            Ok((answers, passages, epoch)) => {
                valid.push((index, answers, passages));
                epochs.push(epoch);
                results.push(None);
            }
            Err(failure) => results.push(Some(Err(failure))),
        }
    }
    if valid.is_empty() {
        return ReplyStatements {
            results,
            valid,
            inserted: None,
        };
    }
    let mut rows = Rows::default();
    for ((index, _, passages), epoch) in valid.iter().zip(epochs) {
        let reply = replies[*index];
        rows.push([
            ("t", json!(reply.tenant.as_str())),
            ("c", json!(reply.chat.as_str())),
            ("b", json!(reply.body)),
            ("r", json!(reply.created_ms)),
            ("p", json!(passages)),
            ("e", json!(epoch)),
        ]);
    }
    let sql = format!(
        "INSERT INTO messages (tenant_id, chat_id, direction, origin, kind, body, status, \
         created_ms, passages) \
         SELECT x.t, x.c, 'outbound', 'bot', 'text', x.b, 'pending', x.r, x.p FROM {} \
         WHERE {} \
         RETURNING id, tenant_id, chat_id, body, created_ms, passages",
        source(
            round.dialect(),
            round.next_param(),
            "x",
            &[
                Column::Text("t"),
                Column::Text("c"),
                Column::Text("b"),
                Column::BigInt("r"),
                Column::Text("p"),
                Column::BigInt("e"),
            ]
        ),
        fence.condition()
    );
    let inserted = Some(round.push(sql, vec![rows.into_json()]));
    ReplyStatements {
        results,
        valid,
        inserted,
    }
}

/// Where [`push_links`]'s statement answers, and what the replies decided before it.
#[derive(Debug)]
pub(crate) struct LinkStatements {
    results: Vec<Option<Result<ReplyOutcome, Failure>>>,
    valid: Vec<ValidReply>,
    /// Each valid reply's outbound message, by its index.
    outbound: HashMap<usize, i64>,
    linked: Option<Slot>,
}

/// Adds to `round` the links of the replies [`push_replies`]'s statement inserted (its rows
/// taken from `answers`): one statement for all. A reply at a stale epoch (every tenant
/// must be in `fences`) was not inserted and is refused alone. An inbound message linked
/// already (or twice in this group) is left to the first; a message that is no inbound
/// message of the chat is not linked. [`finish_replies`] decides each reply once it ran.
pub(crate) fn push_links(
    round: &mut RoundTrip,
    statements: ReplyStatements,
    answers: &mut Answers,
    fences: &Fences,
    replies: &[&NewReply],
) -> Result<LinkStatements, Failure> {
    let ReplyStatements {
        mut results,
        mut valid,
        inserted,
    } = statements;
    valid.retain(|(index, ..)| {
        let reply = replies[*index];
        match fences.check(&reply.tenant, reply.epoch) {
            Ok(()) => true,
            Err(stale) => {
                results[*index] = Some(Err(stale));
                false
            }
        }
    });
    // A returned row is matched to its reply by everything written: what each reply
    // writes → the replies that write it (replies written alike are interchangeable).
    let mut waiting: HashMap<WrittenReply, VecDeque<usize>> = HashMap::new();
    for (index, _, passages) in &valid {
        let reply = replies[*index];
        waiting
            .entry((
                reply.tenant.as_str().to_owned(),
                reply.chat.as_str().to_owned(),
                reply.body.clone(),
                reply.created_ms,
                passages.clone(),
            ))
            .or_default()
            .push_back(*index);
    }
    let mut outbound: HashMap<usize, i64> = HashMap::with_capacity(valid.len());
    let Some(inserted) = inserted else {
        return Ok(LinkStatements {
            results,
            valid,
            outbound,
            linked: None,
        });
    };
    for row in answers.take(inserted)? {
        let body: Option<String> = get(&row, "body")?;
        let key = (
            get(&row, "tenant_id")?,
            get(&row, "chat_id")?,
            body.unwrap_or_default(),
            get(&row, "created_ms")?,
            get(&row, "passages")?,
        );
        let index = waiting
            .get_mut(&key)
            .and_then(VecDeque::pop_front)
            .ok_or_else(|| StoreError::Backend("an inserted reply matches no reply".to_owned()))?;
        outbound.insert(index, get(&row, "id")?);
    }
    if outbound.len() != valid.len() {
        return Err(StoreError::Backend("a reply was not inserted".to_owned()).into());
    }
    if valid.is_empty() {
        return Ok(LinkStatements {
            results,
            valid,
            outbound,
            linked: None,
        });
    }
    let mut rows = Rows::default();
    for (index, answers, _) in &valid {
        let reply = replies[*index];
        for inbound_id in answers {
            rows.push([
                ("i", json!(inbound_id)),
                ("o", json!(outbound[index])),
                ("a", json!(reply.created_ms)),
                ("t", json!(reply.tenant.as_str())),
                ("c", json!(reply.chat.as_str())),
            ]);
        }
    }
    // A scalar subquery per row probes the primary key (never a join the planner could turn
    // into a pass over the table).
    let sql = format!(
        "INSERT INTO reply_links (inbound_id, reply_id, created_ms) \
         SELECT y.i, y.o, y.a FROM (SELECT x.i, x.o, x.a, \
         (SELECT 1 FROM messages m WHERE m.id = x.i AND m.tenant_id = x.t \
         AND m.chat_id = x.c AND m.direction = 'inbound') AS found FROM {}) AS y \
         WHERE y.found IS NOT NULL \
         ON CONFLICT (inbound_id) DO NOTHING RETURNING inbound_id, reply_id",
        source(
            round.dialect(),
            round.next_param(),
            "x",
            &[
                Column::BigInt("i"),
                Column::BigInt("o"),
                Column::BigInt("a"),
                Column::Text("t"),
                Column::Text("c"),
            ]
        )
    );
    let linked = Some(round.push(sql, vec![rows.into_json()]));
    Ok(LinkStatements {
        results,
        valid,
        outbound,
        linked,
    })
}

/// Each reply's result, all or nothing, once [`push_links`]'s statement ran: a reply with
/// a message of its batch answered already (by a reply recorded earlier, or by another of
/// this group), or that is no inbound message of the chat, has its rows deleted again.
/// Results in the replies' order.
pub(crate) async fn finish_replies(
    tx: &mut AnyConnection,
    statements: LinkStatements,
    answers: &mut Answers,
    replies: &[&NewReply],
) -> Result<Vec<Result<ReplyOutcome, Failure>>, Failure> {
    let LinkStatements {
        mut results,
        valid,
        outbound,
        linked,
    } = statements;
    let mut links: HashSet<(i64, i64)> = HashSet::new();
    if let Some(linked) = linked {
        for row in answers.take(linked)? {
            links.insert((get(&row, "inbound_id")?, get(&row, "reply_id")?));
        }
    }
    for (index, answers, _) in &valid {
        let outbound_id = outbound[index];
        let unlinked = answers
            .iter()
            .copied()
            .find(|inbound_id| !links.contains(&(*inbound_id, outbound_id)));
        let result = match unlinked {
            None => Ok(ReplyOutcome::Recorded { outbound_id }),
            Some(inbound_id) => {
                let reply = replies[*index];
                unrecord_reply(tx, outbound_id).await?;
                if is_answered(&mut *tx, inbound_id).await? {
                    Ok(ReplyOutcome::AlreadyAnswered { inbound_id })
                } else {
                    Err(StoreError::NotFound {
                        what: format!(
                            "inbound message {inbound_id} in chat {} of tenant {}",
                            reply.chat, reply.tenant
                        ),
                    }
                    .into())
                }
            }
        };
        results[*index] = Some(result);
    }
    Ok(results.into_iter().map(decided).collect())
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

/// Where [`push_sent`]'s statement answers, and what the results decided before it.
#[derive(Debug)]
pub(crate) struct SentStatements {
    results: Vec<Option<Result<(), Failure>>>,
    /// The index of the result that writes each message's row.
    writing: HashSet<usize>,
    updated: Option<Slot>,
}

/// Adds to `round` what records that pending outbound messages were accepted by Meta: one
/// statement for all. Fenced as `fence` says: a result at a stale epoch is refused alone
/// (by [`finish_sent`], with the fences read).
pub(crate) fn push_sent(
    round: &mut RoundTrip,
    fence: FenceTest<'_>,
    sent: &[&ReplySent],
) -> SentStatements {
    let mut results: Vec<Option<Result<(), Failure>>> = Vec::with_capacity(sent.len());
    // One row per message: of several results for it, the first at the newest epoch given
    // writes it (if that passes its fence, so would any other that does); the others find
    // the message no longer pending, as they would in a transaction after its.
    let mut row_of: HashMap<i64, (usize, i64)> = HashMap::new();
    for (index, one) in sent.iter().enumerate() {
        if let Some(stale) = fence.refused(&one.tenant, one.epoch) {
            results.push(Some(Err(stale)));
            continue;
        }
        match epoch_to_sql(one.epoch) {
            Ok(epoch) => {
                let row = row_of.entry(one.outbound_id).or_insert((index, epoch));
                if epoch > row.1 {
                    *row = (index, epoch);
                }
                results.push(None);
            }
            Err(failure) => results.push(Some(Err(failure))),
        }
    }
    let mut writing: Vec<(usize, i64)> = row_of.into_values().collect();
    writing.sort_unstable();
    if writing.is_empty() {
        return SentStatements {
            results,
            writing: HashSet::new(),
            updated: None,
        };
    }
    let mut rows = Rows::default();
    for &(index, epoch) in &writing {
        let one = sent[index];
        rows.push([
            ("o", json!(one.outbound_id)),
            ("t", json!(one.tenant.as_str())),
            ("w", json!(one.wamid.as_str())),
            ("a", json!(one.at_ms)),
            ("e", json!(epoch)),
        ]);
    }
    let sql = format!(
        "UPDATE messages SET wamid = x.w, status = 'sent', status_ms = x.a FROM {} \
         WHERE messages.id = x.o AND messages.tenant_id = x.t \
         AND messages.direction = 'outbound' AND messages.status = 'pending' \
         AND {} \
         RETURNING id, chat_id, origin, body",
        source(
            round.dialect(),
            round.next_param(),
            "x",
            &[
                Column::BigInt("o"),
                Column::Text("t"),
                Column::Text("w"),
                Column::BigInt("a"),
                Column::BigInt("e"),
            ]
        ),
        fence.condition()
    );
    let updated = Some(round.push(sql, vec![rows.into_json()]));
    SentStatements {
        results,
        writing: writing.into_iter().map(|(index, _)| index).collect(),
        updated,
    }
}

/// Each send result of [`push_sent`] once its statement ran, each recorded one with its
/// event (added to `events` with its index in `sent`). One at a stale epoch (every tenant
/// must be in `fences`) is refused alone; one no longer pending is left as it is; one that
/// is no outbound message of its tenant is [`StoreError::NotFound`]. Results in the order
/// given.
pub(crate) async fn finish_sent(
    tx: &mut AnyConnection,
    statements: SentStatements,
    answers: &mut Answers,
    fences: &Fences,
    sent: &[&ReplySent],
    events: &mut Vec<(usize, Event)>,
) -> Result<Vec<Result<(), Failure>>, Failure> {
    let SentStatements {
        mut results,
        writing,
        updated,
    } = statements;
    let Some(updated) = updated else {
        return Ok(results.into_iter().map(decided).collect());
    };
    let mut updated: HashMap<i64, sqlx::any::AnyRow> = answers
        .take(updated)?
        .into_iter()
        .map(|row| Ok((get::<i64>(&row, "id")?, row)))
        .collect::<Result<_, Failure>>()?;
    for (index, (one, result)) in sent.iter().zip(results.iter_mut()).enumerate() {
        if result.is_some() {
            continue;
        }
        if let Err(stale) = fences.check(&one.tenant, one.epoch) {
            *result = Some(Err(stale));
            continue;
        }
        let row = if writing.contains(&index) {
            updated.remove(&one.outbound_id)
        } else {
            None
        };
        *result = Some(match row {
            Some(row) => sent_event_of(&row, one).map(|event| events.push((index, event))),
            None => own(ensure_outbound_exists(&mut *tx, &one.tenant, one.outbound_id).await)?,
        });
    }
    Ok(results.into_iter().map(decided).collect())
}

/// The event of a send result, from the row its update returned.
fn sent_event_of(row: &sqlx::any::AnyRow, sent: &ReplySent) -> Result<Event, Failure> {
    let chat: ChatId = id(row, "chat_id")?;
    let origin = named(row, "origin", OutboundOrigin::parse)?;
    let body: Option<String> = get(row, "body")?;
    Ok(sent_event(
        &sent.tenant,
        &chat,
        origin,
        sent.outbound_id,
        sent.wamid.as_str(),
        body.as_deref(),
        sent.at_ms,
    ))
}

/// A write's own result, or the error that fails the whole transaction (a database error).
fn own<T>(result: Result<T, Failure>) -> Result<Result<T, Failure>, Failure> {
    match result {
        Err(failure @ Failure::Sql(_)) => Err(failure),
        other => Ok(other),
    }
}

/// A write's result once every write of its kind is decided.
fn decided<T>(result: Option<Result<T, Failure>>) -> Result<T, Failure> {
    result
        .unwrap_or_else(|| Err(StoreError::Backend("a write was left undecided".to_owned()).into()))
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
