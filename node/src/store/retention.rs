//! Retention: deleting what is older than its window, one bounded batch at a time.
//!
//! Each call of [`delete_batch`] deletes at most `limit` rows of one [`RetentionTable`] in
//! one short transaction and answers where the next batch starts ([`Batch::next`]), so a
//! run walks each table once (keyset pagination on the column the deletes are indexed on)
//! and the caller can pause between batches (`crate::retention` paces them). Usage is never
//! lost: messages and LLM calls are folded into `usage_monthly` in the transaction that
//! deletes them.

use std::collections::BTreeMap;

use salesboy_actors::store::{LlmUsageTotals, UsageReport};
use salesboy_protocol::TenantId;
use salesboy_protocol::month::Month;
use sqlx::AnyConnection;

use super::decode::get;
use super::error::Failure;
use super::{Db, fencing};

/// The batch size of the store's own whole-table deletes ([`delete_all_before`]).
pub(crate) const DEFAULT_BATCH: u32 = 1_000;

/// A table retention deletes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum RetentionTable {
    /// Chat messages (`messages`, reply links with them), by `created_ms`; counted into
    /// `usage_monthly` as they go.
    Messages,
    /// Conversations without messages and without an inbound message within the window
    /// (`conversations`), unless the bot is paused past the cutoff.
    Conversations,
    /// LLM calls (`llm_usage`), by `at_ms`; folded into `usage_monthly` as they go.
    LlmUsage,
    /// The events outbox (`event_outbox`), by `at_ms`; events a webhook has still to
    /// receive stay.
    Events,
    /// Dead-lettered webhook deliveries (`webhook_deliveries` in state `dead`), by `dead_ms`.
    DeadLetters,
    /// Webhook items that could not be read (`webhook_rejected_items`), by `received_ms`.
    RejectedItems,
}

impl RetentionTable {
    /// Every table, in the order a run visits them (messages before the conversations they
    /// empty).
    pub const ALL: [Self; 6] = [
        Self::Messages,
        Self::Conversations,
        Self::LlmUsage,
        Self::Events,
        Self::DeadLetters,
        Self::RejectedItems,
    ];

    /// The name in logs and metrics (the `table` label).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Messages => "messages",
            Self::Conversations => "conversations",
            Self::LlmUsage => "llm_usage",
            Self::Events => "event_outbox",
            Self::DeadLetters => "webhook_dead_letters",
            Self::RejectedItems => "webhook_rejected_items",
        }
    }
}

/// Where a table's next batch starts: below it, everything old was deleted (or kept on
/// purpose) by the batches before. `Start` for a run's first batch.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum BatchCursor {
    /// Nothing deleted yet in this run.
    #[default]
    Start,
    /// After this value of the table's retention key (a time or a sequence).
    From(i64),
    /// After this conversation.
    AfterChat(String, String),
}

/// What one batch did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Batch {
    /// Rows deleted.
    pub deleted: u64,
    /// Of those, events that had never been published (events outbox only).
    pub unpublished: u64,
    /// Where the next batch starts; `None`: the table has nothing older left.
    pub next: Option<BatchCursor>,
}

impl Batch {
    fn last(deleted: u64) -> Self {
        Self {
            deleted,
            unpublished: 0,
            next: None,
        }
    }
}

/// Deletes up to `limit` rows of `table` older than `cutoff_ms`, from `cursor` on.
///
/// Each batch reads the next `limit` rows in the order of the table's time index from the
/// cursor (`WHERE t >= $from ORDER BY t LIMIT n`), then keeps those before the cutoff: the
/// index is walked for `limit` rows whatever the planner thinks of the cutoff (a range with
/// both bounds, planned generically or on stale statistics, may be read whole and sorted
/// instead — millions of rows per batch on a large table).
pub(crate) async fn delete_batch(
    db: &Db,
    table: RetentionTable,
    cutoff_ms: i64,
    cursor: &BatchCursor,
    limit: u32,
) -> Result<Batch, Failure> {
    let limit = i64::from(limit.max(1));
    let from = match cursor {
        BatchCursor::From(from) => *from,
        _ => i64::MIN,
    };
    match table {
        RetentionTable::Messages => messages(db, cutoff_ms, from, limit).await,
        RetentionTable::LlmUsage => llm_usage(db, cutoff_ms, from, limit).await,
        RetentionTable::Events => events(db, cutoff_ms, from, limit).await,
        RetentionTable::DeadLetters => dead_letters(db, cutoff_ms, from, limit).await,
        RetentionTable::RejectedItems => rejected(db, cutoff_ms, from, limit).await,
        RetentionTable::Conversations => {
            let after = match cursor {
                BatchCursor::AfterChat(tenant, chat) => Some((tenant.as_str(), chat.as_str())),
                _ => None,
            };
            conversations(db, cutoff_ms, after, limit).await
        }
    }
}

/// Deletes everything of `table` older than `cutoff_ms`, batch after batch; how many rows.
pub(crate) async fn delete_all_before(
    db: &Db,
    table: RetentionTable,
    cutoff_ms: i64,
    limit: u32,
) -> Result<(u64, u64), Failure> {
    let (mut deleted, mut unpublished) = (0, 0);
    let mut cursor = BatchCursor::Start;
    loop {
        let batch = delete_batch(db, table, cutoff_ms, &cursor, limit).await?;
        deleted += batch.deleted;
        unpublished += batch.unpublished;
        match batch.next {
            Some(next) => cursor = next,
            None => return Ok((deleted, unpublished)),
        }
    }
}

/// The cursor after a batch that deleted `deleted` of at most `limit` rows, the largest
/// key among them being `last`.
fn next_from(deleted: u64, limit: i64, last: Option<i64>) -> Option<BatchCursor> {
    let full = i64::try_from(deleted).unwrap_or(i64::MAX) >= limit;
    match last {
        Some(last) if full => Some(BatchCursor::From(last)),
        _ => None,
    }
}

/// Usage folded by tenant and month, to add to `usage_monthly`.
#[derive(Debug, Default)]
struct MonthlyUsage {
    llm_requests: i64,
    prompt_tokens: i64,
    completion_tokens: i64,
    cost_micros: i64,
    messages_in: i64,
    messages_out: i64,
}

/// Adds `folded` to `usage_monthly`, inside the caller's transaction.
async fn add_monthly(
    conn: &mut AnyConnection,
    folded: BTreeMap<(String, i64), MonthlyUsage>,
) -> Result<(), Failure> {
    for ((tenant, month_start_ms), usage) in folded {
        sqlx::query(
            "INSERT INTO usage_monthly (tenant_id, month_start_ms, llm_requests, prompt_tokens, \
             completion_tokens, cost_micros, messages_in, messages_out) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8) \
             ON CONFLICT (tenant_id, month_start_ms) DO UPDATE SET \
             llm_requests = usage_monthly.llm_requests + excluded.llm_requests, \
             prompt_tokens = usage_monthly.prompt_tokens + excluded.prompt_tokens, \
             completion_tokens = usage_monthly.completion_tokens + excluded.completion_tokens, \
             cost_micros = usage_monthly.cost_micros + excluded.cost_micros, \
             messages_in = usage_monthly.messages_in + excluded.messages_in, \
             messages_out = usage_monthly.messages_out + excluded.messages_out",
        )
        .bind(tenant)
        .bind(month_start_ms)
        .bind(usage.llm_requests)
        .bind(usage.prompt_tokens)
        .bind(usage.completion_tokens)
        .bind(usage.cost_micros)
        .bind(usage.messages_in)
        .bind(usage.messages_out)
        .execute(&mut *conn)
        .await?;
    }
    Ok(())
}

/// The month key of `at_ms`.
fn month_of(at_ms: i64) -> i64 {
    Month::containing(at_ms).start_ms()
}

/// Messages created before the cutoff, oldest first (`messages_by_age`); reply links go
/// with them (`ON DELETE CASCADE` / `SET NULL`). Counted into `usage_monthly` in the same
/// transaction: `DELETE … RETURNING` answers only the rows this statement deleted, so two
/// nodes running retention at once never count a message twice.
async fn messages(db: &Db, cutoff_ms: i64, from: i64, limit: i64) -> Result<Batch, Failure> {
    let mut tx = db.begin().await?;
    let rows = sqlx::query(
        "DELETE FROM messages WHERE id IN \
         (SELECT id FROM (SELECT id, created_ms FROM messages WHERE created_ms >= $1 \
          ORDER BY created_ms LIMIT $3) AS page WHERE created_ms < $2) \
         RETURNING tenant_id, direction, created_ms",
    )
    .bind(from)
    .bind(cutoff_ms)
    .bind(limit)
    .fetch_all(&mut *tx)
    .await?;
    let mut folded: BTreeMap<(String, i64), MonthlyUsage> = BTreeMap::new();
    let mut last = None;
    for row in &rows {
        let tenant: String = get(row, "tenant_id")?;
        let direction: String = get(row, "direction")?;
        let created_ms: i64 = get(row, "created_ms")?;
        last = last.max(Some(created_ms));
        let usage = folded.entry((tenant, month_of(created_ms))).or_default();
        if direction == "inbound" {
            usage.messages_in += 1;
        } else {
            usage.messages_out += 1;
        }
    }
    add_monthly(&mut tx, folded).await?;
    tx.commit().await?;
    let deleted = rows.len() as u64;
    Ok(Batch {
        deleted,
        unpublished: 0,
        next: next_from(deleted, limit, last),
    })
}

/// LLM calls that finished before the cutoff, oldest first (`llm_usage_by_age`), folded
/// into `usage_monthly` in the deleting transaction (see [`messages`]).
async fn llm_usage(db: &Db, cutoff_ms: i64, from: i64, limit: i64) -> Result<Batch, Failure> {
    let mut tx = db.begin().await?;
    let rows = sqlx::query(
        "DELETE FROM llm_usage WHERE id IN \
         (SELECT id FROM (SELECT id, at_ms FROM llm_usage WHERE at_ms >= $1 \
          ORDER BY at_ms LIMIT $3) AS page WHERE at_ms < $2) \
         RETURNING tenant_id, prompt_tokens, completion_tokens, cost_micros, at_ms",
    )
    .bind(from)
    .bind(cutoff_ms)
    .bind(limit)
    .fetch_all(&mut *tx)
    .await?;
    let mut folded: BTreeMap<(String, i64), MonthlyUsage> = BTreeMap::new();
    let mut last = None;
    for row in &rows {
        let tenant: String = get(row, "tenant_id")?;
        let at_ms: i64 = get(row, "at_ms")?;
        last = last.max(Some(at_ms));
        let usage = folded.entry((tenant, month_of(at_ms))).or_default();
        usage.llm_requests += 1;
        usage.prompt_tokens += get::<i64>(row, "prompt_tokens")?;
        usage.completion_tokens += get::<i64>(row, "completion_tokens")?;
        usage.cost_micros += get::<i64>(row, "cost_micros")?;
    }
    add_monthly(&mut tx, folded).await?;
    tx.commit().await?;
    let deleted = rows.len() as u64;
    Ok(Batch {
        deleted,
        unpublished: 0,
        next: next_from(deleted, limit, last),
    })
}

/// Events that happened before the cutoff. Events are written in time order, so the old
/// ones are a prefix of `seq`, walked on the primary key (no index on `at_ms` to keep up on
/// every write, migration 0007): the batch reads the next `limit` sequences, its end is
/// the first event at or after the cutoff among them (the run's last batch) or past the
/// last one read. Each event's time is still checked: one that commits late, with a lower
/// `seq`, is not old. An event a webhook has still to receive stays.
async fn events(db: &Db, cutoff_ms: i64, from: i64, limit: i64) -> Result<Batch, Failure> {
    let page: Vec<(i64, i64)> =
        sqlx::query_as("SELECT seq, at_ms FROM event_outbox WHERE seq >= $1 ORDER BY seq LIMIT $2")
            .bind(from)
            .bind(limit)
            .fetch_all(&db.pool)
            .await?;
    let Some(&(last_seq, _)) = page.last() else {
        return Ok(Batch::last(0));
    };
    let (end, more) = match page.iter().find(|(_, at_ms)| *at_ms >= cutoff_ms) {
        Some(&(seq, _)) => (seq, false),
        None => (
            last_seq + 1,
            i64::try_from(page.len()).unwrap_or(i64::MAX) >= limit,
        ),
    };
    let published: Vec<Option<i64>> = sqlx::query_scalar(
        "DELETE FROM event_outbox WHERE seq >= $1 AND seq < $2 AND at_ms < $3 AND NOT EXISTS \
         (SELECT 1 FROM webhook_deliveries d WHERE d.seq = event_outbox.seq) \
         RETURNING published_ms",
    )
    .bind(from)
    .bind(end)
    .bind(cutoff_ms)
    .fetch_all(&db.pool)
    .await?;
    Ok(Batch {
        deleted: published.len() as u64,
        unpublished: published.iter().filter(|p| p.is_none()).count() as u64,
        next: more.then_some(BatchCursor::From(end)),
    })
}

/// Dead letters given up before the cutoff, oldest first (`webhook_deliveries_dead`).
async fn dead_letters(db: &Db, cutoff_ms: i64, from: i64, limit: i64) -> Result<Batch, Failure> {
    let dead: Vec<i64> = sqlx::query_scalar(
        "DELETE FROM webhook_deliveries WHERE state = 'dead' AND (webhook_id, seq) IN \
         (SELECT webhook_id, seq FROM (SELECT webhook_id, seq, dead_ms \
          FROM webhook_deliveries WHERE state = 'dead' AND dead_ms >= $1 \
          ORDER BY dead_ms LIMIT $3) AS page WHERE dead_ms < $2) \
         RETURNING dead_ms",
    )
    .bind(from)
    .bind(cutoff_ms)
    .bind(limit)
    .fetch_all(&db.pool)
    .await?;
    let deleted = dead.len() as u64;
    Ok(Batch {
        deleted,
        unpublished: 0,
        next: next_from(deleted, limit, dead.into_iter().max()),
    })
}

/// Rejected webhook items received before the cutoff (`webhook_rejected_items_by_age`).
async fn rejected(db: &Db, cutoff_ms: i64, from: i64, limit: i64) -> Result<Batch, Failure> {
    let received: Vec<i64> = sqlx::query_scalar(
        "DELETE FROM webhook_rejected_items WHERE id IN \
         (SELECT id FROM (SELECT id, received_ms FROM webhook_rejected_items \
          WHERE received_ms >= $1 ORDER BY received_ms LIMIT $3) AS page \
          WHERE received_ms < $2) \
         RETURNING received_ms",
    )
    .bind(from)
    .bind(cutoff_ms)
    .bind(limit)
    .fetch_all(&db.pool)
    .await?;
    let deleted = received.len() as u64;
    Ok(Batch {
        deleted,
        unpublished: 0,
        next: next_from(deleted, limit, received.into_iter().max()),
    })
}

/// The condition of a conversation retention deletes (`c`: the conversation): no message
/// left (`messages_by_chat`), no inbound message since the cutoff (`$1`), the bot not
/// paused past it.
macro_rules! empty_old_conversation {
    () => {
        "COALESCE(c.last_inbound_ms, 0) < $1 \
         AND (c.bot_paused_until_ms IS NULL OR c.bot_paused_until_ms < $1) \
         AND NOT EXISTS (SELECT 1 FROM messages m \
         WHERE m.tenant_id = c.tenant_id AND m.chat_id = c.chat_id)"
    };
}

/// Conversations without messages whose last inbound message (if any) is older than the
/// cutoff, walked in primary-key order. The candidates are read first; each tenant's are
/// then deleted under its fence taken exclusively ([`fencing::lock_exclusive`]), the
/// condition checked again, so a message being written to one (a fenced write) either
/// commits first and keeps it, or waits and finds it gone and creates it again.
async fn conversations(
    db: &Db,
    cutoff_ms: i64,
    after: Option<(&str, &str)>,
    limit: i64,
) -> Result<Batch, Failure> {
    let (after_tenant, after_chat) = after.unwrap_or(("", ""));
    let candidates: Vec<(String, String)> = sqlx::query_as(concat!(
        "SELECT c.tenant_id, c.chat_id FROM conversations c \
         WHERE (c.tenant_id > $2 OR (c.tenant_id = $2 AND c.chat_id > $3)) AND ",
        empty_old_conversation!(),
        " ORDER BY c.tenant_id, c.chat_id LIMIT $4"
    ))
    .bind(cutoff_ms)
    .bind(after_tenant)
    .bind(after_chat)
    .bind(limit)
    .fetch_all(&db.pool)
    .await?;
    let mut by_tenant: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for (tenant, chat) in &candidates {
        by_tenant.entry(tenant).or_default().push(chat);
    }
    let mut deleted = 0;
    for (tenant, chats) in by_tenant {
        let mut tx = db.begin().await?;
        fencing::lock_exclusive(db, &mut tx, tenant).await?;
        for chat in chats {
            deleted += sqlx::query(concat!(
                "DELETE FROM conversations WHERE tenant_id = $2 AND chat_id = $3 AND EXISTS \
                 (SELECT 1 FROM conversations c WHERE c.tenant_id = $2 AND c.chat_id = $3 AND ",
                empty_old_conversation!(),
                ")"
            ))
            .bind(cutoff_ms)
            .bind(tenant)
            .bind(chat)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        }
        tx.commit().await?;
    }
    let full = i64::try_from(candidates.len()).unwrap_or(i64::MAX) >= limit;
    let next = match candidates.into_iter().last() {
        Some((tenant, chat)) if full => Some(BatchCursor::AfterChat(tenant, chat)),
        _ => None,
    };
    Ok(Batch {
        deleted,
        unpublished: 0,
        next,
    })
}

/// The tenant's usage folded into `usage_monthly` for the months that start in
/// `[from_ms, until_ms)`.
pub(crate) async fn monthly_usage(
    db: &Db,
    tenant: &TenantId,
    from_ms: i64,
    until_ms: i64,
) -> Result<UsageReport, Failure> {
    let row = sqlx::query(
        "SELECT CAST(COALESCE(SUM(llm_requests), 0) AS BIGINT) AS requests, \
         CAST(COALESCE(SUM(prompt_tokens), 0) AS BIGINT) AS prompt_tokens, \
         CAST(COALESCE(SUM(completion_tokens), 0) AS BIGINT) AS completion_tokens, \
         CAST(COALESCE(SUM(cost_micros), 0) AS BIGINT) AS cost_micros, \
         CAST(COALESCE(SUM(messages_in), 0) AS BIGINT) AS messages_in, \
         CAST(COALESCE(SUM(messages_out), 0) AS BIGINT) AS messages_out \
         FROM usage_monthly WHERE tenant_id = $1 AND month_start_ms >= $2 \
         AND month_start_ms < $3",
    )
    .bind(tenant.as_str())
    .bind(from_ms)
    .bind(until_ms)
    .fetch_one(&db.pool)
    .await?;
    Ok(UsageReport {
        llm: LlmUsageTotals {
            requests: get(&row, "requests")?,
            prompt_tokens: get(&row, "prompt_tokens")?,
            completion_tokens: get(&row, "completion_tokens")?,
            cost_micros: get(&row, "cost_micros")?,
        },
        messages_in: get(&row, "messages_in")?,
        messages_out: get(&row, "messages_out")?,
    })
}
