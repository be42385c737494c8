//! HTTP event webhooks: the tenants' webhooks (`webhooks`) and the events each has still to
//! receive or gave up on (`webhook_deliveries`).
//!
//! The transaction that marks events published ([`super::outbox::mark_published`]) finds the
//! webhooks each event goes to and writes one `webhook_batches` row naming the events; the
//! deliveries themselves are handed to the delivery worker in memory, so a first attempt
//! that succeeds writes no row (decision 0015). A delivery enters the queue
//! (`webhook_deliveries`) only when it fails, waits behind one that failed, or cannot be
//! held in memory ([`record_attempts`]); the batch row goes once each of its deliveries is
//! delivered or queued. A batch row left behind (a node killed, a lost lead) is recovered
//! ([`recover_batches`]): its events are queued for every matching webhook, so every
//! published event reaches every matching webhook at least once. The worker reads the
//! queue's due deliveries ([`due`]): the first pending delivery of each order key (tenant
//! and chat), so one chat's events go out one at a time, in order.

use salesboy_actors::store::StoreError;
use salesboy_protocol::TenantId;
use salesboy_protocol::events::Event;
use sqlx::AnyConnection;
use sqlx::any::AnyRow;

use super::Db;
use super::decode::{get, id, limit};
use super::error::Failure;
use super::lists;
use super::outbox::{OutboxEvent, outbox_event};
use super::secrets::WEBHOOK_SECRET;

/// A tenant's webhook, with its secret (for signing; never shown after creation).
#[derive(Clone, PartialEq, Eq)]
pub struct Webhook {
    /// Its id (`wh_…`).
    pub id: String,
    /// The tenant whose events it receives.
    pub tenant: TenantId,
    /// Where events are POSTed.
    pub url: String,
    /// The kinds it receives; `None`: every kind.
    pub kinds: Option<Vec<String>>,
    /// The HMAC-SHA256 key of its signatures.
    pub secret: String,
    /// When it was added (unix ms).
    pub created_ms: i64,
}

impl std::fmt::Debug for Webhook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Webhook")
            .field("id", &self.id)
            .field("tenant", &self.tenant)
            .field("url", &self.url)
            .field("kinds", &self.kinds)
            .field("secret", &"***")
            .field("created_ms", &self.created_ms)
            .finish()
    }
}

/// A webhook with how many events it has still to receive and how many it gave up on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebhookSummary {
    /// The webhook.
    pub webhook: Webhook,
    /// Events waiting to be delivered.
    pub pending: i64,
    /// Events dead-lettered.
    pub dead: i64,
}

/// One queue of deliveries: a webhook and an order key (tenant and chat), whose events go
/// out one at a time, in order.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct QueueKey {
    /// The webhook.
    pub webhook_id: String,
    /// The tenant and chat (`tenant/chat`; `tenant/` for events of no chat).
    pub order_key: String,
}

/// What the delivery worker is told of new deliveries since it last looked.
#[derive(Debug, Default)]
pub struct Queued {
    /// Queues that got deliveries the worker reads from the queue itself (re-queued dead
    /// letters).
    pub keys: Vec<QueueKey>,
    /// Deliveries of events just published, whole (webhook and event), in outbox order, not
    /// in the queue ([`DueDelivery::batch`]): the worker attempts them from memory, or
    /// queues them.
    pub fresh: Vec<DueDelivery>,
}

/// The deliveries queued since the delivery worker last took them: named or handed over by
/// the writes that queue them, taken by the worker, which is woken.
#[derive(Default)]
pub(crate) struct NamedQueues {
    named: std::sync::Mutex<Named>,
    wake: tokio::sync::Notify,
}

/// The deliveries themselves; when more pile up than [`MAX_NAMED`] (no worker takes them),
/// they are forgotten and the worker told to read the whole queue instead.
#[derive(Default)]
struct Named {
    keys: std::collections::HashSet<QueueKey>,
    fresh: Vec<DueDelivery>,
    overflowed: bool,
}

impl Named {
    /// Makes room for `more`; forgets everything (and says so) when there is none.
    fn room_for(&mut self, more: usize) -> bool {
        if self.overflowed || self.keys.len() + self.fresh.len() + more > MAX_NAMED {
            self.keys.clear();
            self.fresh.clear();
            self.overflowed = true;
            return false;
        }
        true
    }
}

/// The most queues named and deliveries handed over between two takes.
const MAX_NAMED: usize = 100_000;

impl NamedQueues {
    /// Names queues that got deliveries (after the commit) and wakes the worker.
    pub(crate) fn name(&self, queued: Vec<QueueKey>) {
        if queued.is_empty() {
            return;
        }
        {
            let mut named = self.lock();
            if named.room_for(queued.len()) {
                named.keys.extend(queued);
            }
        }
        self.wake.notify_one();
    }

    /// Hands over deliveries just queued (after the commit), in outbox order, and wakes the
    /// worker.
    pub(crate) fn hand_over(&self, fresh: Vec<DueDelivery>) {
        if fresh.is_empty() {
            return;
        }
        {
            let mut named = self.lock();
            if named.room_for(fresh.len()) {
                named.fresh.extend(fresh);
            }
        }
        self.wake.notify_one();
    }

    /// What was queued since the last take, or `None` when too much piled up to keep.
    pub(crate) fn take(&self) -> Option<Queued> {
        let mut named = self.lock();
        if std::mem::take(&mut named.overflowed) {
            return None;
        }
        Some(Queued {
            keys: named.keys.drain().collect(),
            fresh: std::mem::take(&mut named.fresh),
        })
    }

    /// Completes when deliveries were queued since the last call (at once if they were).
    pub(crate) async fn named(&self) {
        self.wake.notified().await;
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Named> {
        self.named
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// Webhooks by id, with their secrets open, for the deliveries handed over at publishing.
/// A webhook never changes once added; a removed one leaves with its deliveries (and
/// from this cache on the node that removes it), so an entry left elsewhere is never used
/// for a new delivery and only waits to be evicted.
pub(crate) struct WebhookCache(moka::sync::Cache<String, Webhook>);

impl Default for WebhookCache {
    fn default() -> Self {
        Self(moka::sync::Cache::new(WEBHOOK_CACHE_ENTRIES))
    }
}

/// The most webhooks [`WebhookCache`] holds.
const WEBHOOK_CACHE_ENTRIES: u64 = 50_000;

/// A delivery to attempt: the first pending delivery of a queue, or one handed over at
/// publishing.
#[derive(Debug, Clone)]
pub struct DueDelivery {
    /// Its queue.
    pub key: QueueKey,
    /// When its next attempt is due (unix ms).
    pub next_attempt_ms: i64,
    /// The webhook.
    pub webhook: Webhook,
    /// The event, with its place in the outbox.
    pub event: OutboxEvent,
    /// Failed attempts so far.
    pub attempts: i64,
    /// The start of its retry window (unix ms).
    pub since_ms: i64,
    /// `Some(batch)`: handed over at publishing and not in the queue; `batch` is the
    /// `webhook_batches` row that stands for it until it is delivered or queued. `None`: read
    /// from the queue.
    pub batch: Option<i64>,
}

/// An event a webhook gave up on.
#[derive(Debug, Clone, PartialEq)]
pub struct DeadLetter {
    /// The event.
    pub event: Event,
    /// How many attempts failed.
    pub attempts: i64,
    /// Why the last one failed.
    pub last_error: Option<String>,
    /// When it was given up (unix ms).
    pub dead_ms: i64,
}

/// The stored form of a kinds filter (`,a,b,`), matched with `LIKE '%,kind,%'`.
fn kinds_column(kinds: Option<&[String]>) -> Option<String> {
    kinds.map(|kinds| format!(",{},", kinds.join(",")))
}

fn webhook(db: &Db, row: &AnyRow) -> Result<Webhook, Failure> {
    let kinds: Option<String> = get(row, "kinds")?;
    let webhook_id: String = get(row, "webhook_id")?;
    let tenant: TenantId = id(row, "webhook_tenant")?;
    let secret = db.open(
        WEBHOOK_SECRET,
        tenant.as_str(),
        &webhook_id,
        get(row, "secret")?,
    )?;
    Ok(Webhook {
        id: webhook_id,
        tenant,
        url: get(row, "url")?,
        kinds: kinds.map(|k| {
            k.split(',')
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
                .collect()
        }),
        secret,
        created_ms: get(row, "created_ms")?,
    })
}

/// The columns [`webhook`] reads, from `webhooks w`.
macro_rules! webhook_columns {
    () => {
        "w.id AS webhook_id, w.tenant_id AS webhook_tenant, w.url, w.kinds, w.secret, \
         w.created_ms"
    };
}

/// Adds a webhook.
pub(crate) async fn add(db: &Db, webhook: &Webhook) -> Result<(), Failure> {
    sqlx::query(
        "INSERT INTO webhooks (id, tenant_id, url, kinds, secret, created_ms) \
         VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(webhook.id.as_str())
    .bind(webhook.tenant.as_str())
    .bind(webhook.url.as_str())
    .bind(kinds_column(webhook.kinds.as_deref()))
    .bind(db.seal(
        WEBHOOK_SECRET,
        webhook.tenant.as_str(),
        &webhook.id,
        &webhook.secret,
    ))
    .bind(webhook.created_ms)
    .execute(&db.pool)
    .await?;
    Ok(())
}

/// The tenant's webhooks, oldest first, with their pending and dead counts.
pub(crate) async fn list(db: &Db, tenant: &TenantId) -> Result<Vec<WebhookSummary>, Failure> {
    let rows = sqlx::query(concat!(
        "SELECT ",
        webhook_columns!(),
        ", (SELECT COUNT(*) FROM webhook_deliveries d WHERE d.webhook_id = w.id \
         AND d.state = 'pending') AS pending, \
         (SELECT COUNT(*) FROM webhook_deliveries d WHERE d.webhook_id = w.id \
         AND d.state = 'dead') AS dead \
         FROM webhooks w WHERE w.tenant_id = $1 ORDER BY w.created_ms, w.id"
    ))
    .bind(tenant.as_str())
    .fetch_all(&db.pool)
    .await?;
    rows.iter()
        .map(|row| {
            Ok(WebhookSummary {
                webhook: webhook(db, row)?,
                pending: get(row, "pending")?,
                dead: get(row, "dead")?,
            })
        })
        .collect()
}

/// Removes one of the tenant's webhooks with its queue; whether it existed.
pub(crate) async fn remove(db: &Db, tenant: &TenantId, webhook_id: &str) -> Result<bool, Failure> {
    let mut tx = db.begin().await?;
    // Explicit, not only by cascade: SQLite connections may run without foreign keys.
    sqlx::query(
        "DELETE FROM webhook_deliveries WHERE webhook_id IN \
         (SELECT id FROM webhooks WHERE id = $1 AND tenant_id = $2)",
    )
    .bind(webhook_id)
    .bind(tenant.as_str())
    .execute(&mut *tx)
    .await?;
    let removed = sqlx::query("DELETE FROM webhooks WHERE id = $1 AND tenant_id = $2")
        .bind(webhook_id)
        .bind(tenant.as_str())
        .execute(&mut *tx)
        .await?
        .rows_affected();
    tx.commit().await?;
    db.webhook_cache.0.invalidate(webhook_id);
    Ok(removed > 0)
}

/// The matching webhook and event pairs of events `seqs`: the queue of each delivery and
/// its event.
macro_rules! matching_deliveries {
    () => {
        "SELECT w.id AS webhook_id, e.seq, e.tenant_id || '/' || COALESCE(e.chat_id, '') \
         AS order_key FROM event_outbox e JOIN webhooks w ON w.tenant_id = e.tenant_id \
         WHERE e.seq IN ({}) AND (w.kinds IS NULL OR w.kinds LIKE '%,' || e.kind || ',%')"
    };
}

/// The deliveries the events `seqs` (just marked published, on `conn`) make: one per
/// matching webhook, as their queue and event.
pub(crate) async fn matching(
    conn: &mut AnyConnection,
    seqs: &[i64],
) -> Result<Vec<(QueueKey, i64)>, Failure> {
    let mut out = Vec::new();
    for chunk in seqs.chunks(lists::MAX_LIST) {
        let sql = format!(
            matching_deliveries!(),
            lists::placeholders(1, lists::padded_len(chunk.len()))
        );
        // Safe: the text holds only numbered placeholders; the values are bound.
        let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
        for seq in lists::padded(chunk) {
            query = query.bind(*seq);
        }
        for row in query.fetch_all(&mut *conn).await? {
            out.push((queue_key(&row)?, get(&row, "seq")?));
        }
    }
    // The padding repeats a seq: each delivery once.
    out.sort_by(|a, b| (a.1, &a.0).cmp(&(b.1, &b.0)));
    out.dedup();
    Ok(out)
}

/// Writes the batch row that stands for deliveries handed over at publishing (on `conn`,
/// in the marking transaction); answers its id.
pub(crate) async fn write_batch(
    conn: &mut AnyConnection,
    seqs: &[i64],
    now_ms: i64,
) -> Result<i64, Failure> {
    let listed = seqs
        .iter()
        .map(i64::to_string)
        .collect::<Vec<_>>()
        .join(",");
    Ok(sqlx::query_scalar(
        "INSERT INTO webhook_batches (seqs, created_ms) VALUES ($1, $2) RETURNING id",
    )
    .bind(listed)
    .bind(now_ms)
    .fetch_one(conn)
    .await?)
}

/// Queues events `seqs` for every matching webhook (or, with `only`, for those webhook and
/// event pairs), due at `now_ms`, their retry windows from `since_ms`; what a webhook holds
/// already stays as it is.
async fn queue_events(
    conn: &mut AnyConnection,
    seqs: &[i64],
    only: Option<&[(&str, i64)]>,
    now_ms: i64,
    since_ms: i64,
) -> Result<(), Failure> {
    let mut seqs = seqs.to_vec();
    seqs.sort_unstable();
    seqs.dedup();
    for chunk in seqs.chunks(lists::MAX_LIST) {
        let count = lists::padded_len(chunk.len());
        let pairs: Vec<(&str, i64)> = only
            .map(|pairs| {
                pairs
                    .iter()
                    .filter(|(_, seq)| chunk.binary_search(seq).is_ok())
                    .copied()
                    .collect()
            })
            .unwrap_or_default();
        if only.is_some() && pairs.is_empty() {
            continue;
        }
        let only_clause = if only.is_some() {
            format!(
                " AND (w.id, e.seq) IN (VALUES {})",
                lists::pair_placeholders(3 + count, lists::padded_len(pairs.len()))
            )
        } else {
            String::new()
        };
        let sql = format!(
            "INSERT INTO webhook_deliveries \
             (webhook_id, seq, order_key, state, attempts, next_attempt_ms, since_ms) \
             SELECT w.id, e.seq, e.tenant_id || '/' || COALESCE(e.chat_id, ''), 'pending', 0, \
             $1, $2 FROM event_outbox e JOIN webhooks w ON w.tenant_id = e.tenant_id \
             WHERE e.seq IN ({}) AND (w.kinds IS NULL OR w.kinds LIKE '%,' || e.kind || ',%'){} \
             ON CONFLICT DO NOTHING",
            lists::placeholders(3, count),
            only_clause
        );
        // Safe: the text holds only numbered placeholders; the values are bound.
        let mut query = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(now_ms)
            .bind(since_ms);
        for seq in lists::padded(chunk) {
            query = query.bind(*seq);
        }
        if only.is_some() {
            for (webhook_id, seq) in lists::padded(&pairs) {
                query = query.bind(*webhook_id).bind(*seq);
            }
        }
        query.execute(&mut *conn).await?;
    }
    Ok(())
}

/// The deliveries `matched` (of `events`, just marked published on `conn`, standing for by
/// batch row `batch`) whole, as a first attempt at `now_ms` sees them, in outbox order; the
/// webhooks come from `db`'s cache, the ones it lacks read on `conn`. A webhook removed
/// meanwhile gets nothing.
pub(crate) async fn fresh_deliveries(
    db: &Db,
    conn: &mut AnyConnection,
    matched: Vec<(QueueKey, i64)>,
    events: &[OutboxEvent],
    batch: i64,
    now_ms: i64,
) -> Result<Vec<DueDelivery>, Failure> {
    // The webhooks at hand for this batch: the cache's, and the ones it lacks read now (a
    // cache entry may be evicted at any time, so never read back from it).
    let mut webhooks: std::collections::HashMap<String, Webhook> = std::collections::HashMap::new();
    let mut missing = std::collections::BTreeSet::new();
    for (key, _) in &matched {
        if webhooks.contains_key(&key.webhook_id) || missing.contains(key.webhook_id.as_str()) {
            continue;
        }
        match db.webhook_cache.0.get(&key.webhook_id) {
            Some(webhook) => {
                webhooks.insert(key.webhook_id.clone(), webhook);
            }
            None => {
                missing.insert(key.webhook_id.as_str());
            }
        }
    }
    let missing: Vec<&str> = missing.into_iter().collect();
    for chunk in missing.chunks(lists::MAX_LIST) {
        let sql = format!(
            concat!(
                "SELECT ",
                webhook_columns!(),
                " FROM webhooks w WHERE w.id IN ({})"
            ),
            lists::placeholders(1, lists::padded_len(chunk.len()))
        );
        // Safe: the text holds only numbered placeholders; the values are bound.
        let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
        for id in lists::padded(chunk) {
            query = query.bind(*id);
        }
        for row in query.fetch_all(&mut *conn).await? {
            let webhook = webhook(db, &row)?;
            db.webhook_cache
                .0
                .insert(webhook.id.clone(), webhook.clone());
            webhooks.insert(webhook.id.clone(), webhook);
        }
    }
    let by_seq: std::collections::HashMap<i64, &OutboxEvent> =
        events.iter().map(|e| (e.seq, e)).collect();
    let mut fresh = Vec::with_capacity(matched.len());
    for (key, seq) in matched {
        // A webhook removed since the match gets nothing; the events are the ones marked.
        if let (Some(webhook), Some(event)) = (webhooks.get(&key.webhook_id), by_seq.get(&seq)) {
            fresh.push(DueDelivery {
                key,
                next_attempt_ms: now_ms,
                webhook: webhook.clone(),
                event: OutboxEvent {
                    published_ms: Some(now_ms),
                    ..(*event).clone()
                },
                attempts: 0,
                since_ms: now_ms,
                batch: Some(batch),
            });
        }
    }
    fresh.sort_by(|a, b| (a.event.seq, &a.key).cmp(&(b.event.seq, &b.key)));
    Ok(fresh)
}

fn queue_key(row: &AnyRow) -> Result<QueueKey, Failure> {
    Ok(QueueKey {
        webhook_id: get(row, "webhook_id")?,
        order_key: get(row, "order_key")?,
    })
}

/// The head of each queue: for each webhook and order key, its first pending delivery
/// (one pass over the queue index, grouped; never a per-row subquery, which planners turn
/// into a scan per row).
macro_rules! queue_heads {
    () => {
        "(SELECT webhook_id, MIN(seq) AS seq FROM webhook_deliveries \
         WHERE state = 'pending' GROUP BY webhook_id, order_key) h \
         JOIN webhook_deliveries d ON d.webhook_id = h.webhook_id AND d.seq = h.seq"
    };
}

/// Up to `count` deliveries due at `now_ms`: for each webhook and order key, its first
/// pending delivery, if its next attempt is due. In outbox order.
pub(crate) async fn due(db: &Db, now_ms: i64, count: u32) -> Result<Vec<DueDelivery>, Failure> {
    let rows = sqlx::query(concat!(
        "SELECT ",
        webhook_columns!(),
        ", ",
        head_columns!(),
        " FROM ",
        queue_heads!(),
        " JOIN webhooks w ON w.id = d.webhook_id \
         JOIN event_outbox e ON e.seq = d.seq \
         WHERE d.next_attempt_ms <= $1 ORDER BY d.seq LIMIT $2"
    ))
    .bind(now_ms)
    .bind(limit(count))
    .fetch_all(&db.pool)
    .await?;
    rows.iter().map(|row| due_delivery(db, row)).collect()
}

/// The columns [`due_delivery`] reads besides the webhook's, from
/// `webhook_deliveries d` and `event_outbox e`.
macro_rules! head_columns {
    () => {
        "d.order_key, d.next_attempt_ms, d.attempts, d.since_ms, \
         e.seq, e.event_id, e.tenant_id, e.chat_id, e.kind, e.detail, e.at_ms, e.published_ms"
    };
}
use head_columns;

fn due_delivery(db: &Db, row: &AnyRow) -> Result<DueDelivery, Failure> {
    let webhook = webhook(db, row)?;
    Ok(DueDelivery {
        key: QueueKey {
            webhook_id: webhook.id.clone(),
            order_key: get(row, "order_key")?,
        },
        next_attempt_ms: get(row, "next_attempt_ms")?,
        webhook,
        event: outbox_event(row)?,
        attempts: get(row, "attempts")?,
        since_ms: get(row, "since_ms")?,
        batch: None,
    })
}

/// The first pending delivery of each of `keys`' queues, whatever its next attempt's time.
/// One index probe per queue (the queue index, `MIN(seq)` of a key), never a pass over
/// the whole queue.
pub(crate) async fn heads_of(db: &Db, keys: &[QueueKey]) -> Result<Vec<DueDelivery>, Failure> {
    let mut heads = Vec::with_capacity(keys.len());
    for chunk in keys.chunks(lists::MAX_LIST) {
        // VALUES columns are `column1`, `column2` in both dialects.
        let sql = format!(
            concat!(
                "SELECT ",
                webhook_columns!(),
                ", ",
                head_columns!(),
                " FROM (SELECT k.column1 AS webhook_id, \
                 (SELECT MIN(x.seq) FROM webhook_deliveries x WHERE x.webhook_id = k.column1 \
                 AND x.order_key = k.column2 AND x.state = 'pending') AS seq \
                 FROM (VALUES {}) AS k) h \
                 JOIN webhook_deliveries d ON d.webhook_id = h.webhook_id AND d.seq = h.seq \
                 JOIN webhooks w ON w.id = d.webhook_id \
                 JOIN event_outbox e ON e.seq = d.seq"
            ),
            lists::pair_placeholders(1, lists::padded_len(chunk.len()))
        );
        // Safe: the text holds only numbered placeholders; the values are bound. A key
        // repeated by the padding answers its head twice: kept once.
        let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
        for key in lists::padded(chunk) {
            query = query
                .bind(key.webhook_id.as_str())
                .bind(key.order_key.as_str());
        }
        let mut seen = std::collections::HashSet::new();
        for row in query.fetch_all(&db.pool).await? {
            let head = due_delivery(db, &row)?;
            if seen.insert(head.event.seq) {
                heads.push(head);
            }
        }
    }
    Ok(heads)
}

/// What became of one delivery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AttemptOutcome {
    /// The receiver answered 2xx: the delivery is done and leaves the queue.
    Delivered,
    /// Not attempted (it waits behind one that failed, or the worker cannot hold it): it
    /// enters the queue, due at `at_ms`.
    Queued {
        /// When it is due (unix ms).
        at_ms: i64,
    },
    /// It failed; tried again at `at_ms`.
    Retry {
        /// When the next attempt is due (unix ms).
        at_ms: i64,
        /// Why it failed.
        error: String,
    },
    /// It failed after its retry window: dead-lettered at `at_ms`.
    Dead {
        /// When it was given up (unix ms).
        at_ms: i64,
        /// Why it failed.
        error: String,
    },
}

/// What became of one delivery, for [`record_attempts`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttemptRecord {
    /// The delivery's queue (its webhook and chat).
    pub key: QueueKey,
    /// The event's place in the outbox.
    pub seq: i64,
    /// `Some`: the delivery is not in the queue (handed over at publishing, with this batch
    /// row); `None`: it is.
    pub batch: Option<i64>,
    /// The start of its retry window (unix ms).
    pub since_ms: i64,
    /// What became of it.
    pub outcome: AttemptOutcome,
}

/// Records deliveries in one transaction: delivered ones leave the queue in one statement,
/// each failed one is rescheduled or dead-lettered (entering the queue if it was not in
/// it), queued ones enter the queue; then the batch rows `settled` (each of their
/// deliveries delivered or queued) go.
pub(crate) async fn record_attempts(
    db: &Db,
    records: &[AttemptRecord],
    settled: &[i64],
) -> Result<(), Failure> {
    if records.is_empty() && settled.is_empty() {
        return Ok(());
    }
    let mut tx = db.begin().await?;
    // Handed-over deliveries to queue, each with the time it was queued.
    let queuing: Vec<(&AttemptRecord, i64)> = records
        .iter()
        .filter(|r| r.batch.is_some())
        .filter_map(|r| match r.outcome {
            AttemptOutcome::Queued { at_ms } => Some((r, at_ms)),
            _ => None,
        })
        .collect();
    if !queuing.is_empty() {
        // Due at once (each waits behind its queue's head); the retry windows from the
        // earliest publishing among them.
        let now_ms = queuing
            .iter()
            .map(|(_, at_ms)| *at_ms)
            .min()
            .unwrap_or_default();
        let since_ms = queuing
            .iter()
            .map(|(r, _)| r.since_ms)
            .min()
            .unwrap_or(now_ms);
        let queued: Vec<(&str, i64)> = queuing
            .iter()
            .map(|(r, _)| (r.key.webhook_id.as_str(), r.seq))
            .collect();
        let seqs: Vec<i64> = queued.iter().map(|(_, seq)| *seq).collect();
        queue_events(&mut tx, &seqs, Some(&queued), now_ms, since_ms).await?;
    }
    let delivered: Vec<&AttemptRecord> = records
        .iter()
        .filter(|r| r.batch.is_none() && r.outcome == AttemptOutcome::Delivered)
        .collect();
    // Bound parameters per statement stay far below both dialects' limits.
    for chunk in delivered.chunks(lists::MAX_LIST) {
        // The `seq` list lets Postgres find the rows by the seq index; a list of pairs
        // alone may be planned as a pass over the whole queue.
        let count = lists::padded_len(chunk.len());
        let sql = format!(
            "DELETE FROM webhook_deliveries WHERE seq IN ({}) AND (webhook_id, seq) IN (VALUES {})",
            lists::placeholders(1, count),
            lists::pair_placeholders(1 + count, count)
        );
        // Safe: the text holds only numbered placeholders; the values are bound.
        let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
        for record in lists::padded(chunk) {
            query = query.bind(record.seq);
        }
        for record in lists::padded(chunk) {
            query = query.bind(record.key.webhook_id.as_str()).bind(record.seq);
        }
        query.execute(&mut *tx).await?;
    }
    for record in records {
        let (state, next, dead, error) = match &record.outcome {
            AttemptOutcome::Delivered | AttemptOutcome::Queued { .. } => continue,
            AttemptOutcome::Retry { at_ms, error } => ("pending", *at_ms, None, error),
            AttemptOutcome::Dead { at_ms, error } => ("dead", *at_ms, Some(*at_ms), error),
        };
        let query = sqlx::query(if record.batch.is_some() {
            // Its first attempt: it enters the queue (unless its webhook went meanwhile, or
            // a recovery queued it already).
            "INSERT INTO webhook_deliveries (webhook_id, seq, last_error, state, \
             next_attempt_ms, dead_ms, order_key, since_ms, attempts) \
             SELECT $1, $2, $3, $4, $5, $6, $7, $8, 1 \
             WHERE EXISTS (SELECT 1 FROM webhooks WHERE id = $1) ON CONFLICT DO NOTHING"
        } else {
            "UPDATE webhook_deliveries SET attempts = attempts + 1, last_error = $3, \
             state = $4, next_attempt_ms = $5, dead_ms = $6 WHERE webhook_id = $1 AND seq = $2"
        })
        .bind(record.key.webhook_id.as_str())
        .bind(record.seq)
        .bind(error.as_str())
        .bind(state)
        .bind(next)
        .bind(dead);
        let query = if record.batch.is_some() {
            query
                .bind(record.key.order_key.as_str())
                .bind(record.since_ms)
        } else {
            query
        };
        query.execute(&mut *tx).await?;
    }
    delete_batches(&mut tx, settled).await?;
    tx.commit().await?;
    Ok(())
}

/// Deletes the batch rows `ids` (on `conn`, in the caller's transaction).
async fn delete_batches(conn: &mut AnyConnection, ids: &[i64]) -> Result<(), Failure> {
    for chunk in ids.chunks(lists::MAX_LIST) {
        let sql = format!(
            "DELETE FROM webhook_batches WHERE id IN ({})",
            lists::placeholders(1, lists::padded_len(chunk.len()))
        );
        // Safe: the text holds only numbered placeholders; the values are bound.
        let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
        for id in lists::padded(chunk) {
            query = query.bind(*id);
        }
        query.execute(&mut *conn).await?;
    }
    Ok(())
}

/// Recovers the batch rows left behind written at or before `written_by_ms`, except those
/// in `held` (a worker holds their deliveries): queues their events for every matching
/// webhook, due at `now_ms` (a delivery already made is made again; one the queue holds
/// stays as it is), and deletes them, in one transaction. Answers the batches recovered.
pub(crate) async fn recover_batches(
    db: &Db,
    held: &std::collections::HashSet<i64>,
    written_by_ms: i64,
    now_ms: i64,
) -> Result<Vec<i64>, Failure> {
    let mut tx = db.begin().await?;
    let rows =
        sqlx::query("SELECT id, seqs FROM webhook_batches WHERE created_ms <= $1 ORDER BY id")
            .bind(written_by_ms)
            .fetch_all(&mut *tx)
            .await?;
    let mut recovered = Vec::new();
    let mut seqs = Vec::new();
    for row in &rows {
        let batch: i64 = get(row, "id")?;
        if held.contains(&batch) {
            continue;
        }
        let listed: String = get(row, "seqs")?;
        for seq in listed.split(',').filter(|s| !s.is_empty()) {
            seqs.push(seq.parse::<i64>().map_err(|e| {
                Failure::Store(StoreError::Invalid {
                    reason: format!("webhook batch {batch} names an event {seq:?}: {e}"),
                })
            })?);
        }
        recovered.push(batch);
    }
    if recovered.is_empty() {
        return Ok(recovered);
    }
    queue_events(&mut tx, &seqs, None, now_ms, now_ms).await?;
    delete_batches(&mut tx, &recovered).await?;
    tx.commit().await?;
    Ok(recovered)
}

/// Up to `count` of a webhook's dead letters, oldest event first.
pub(crate) async fn dead_letters(
    db: &Db,
    tenant: &TenantId,
    webhook_id: &str,
    count: u32,
) -> Result<Option<Vec<DeadLetter>>, Failure> {
    if !exists(db, tenant, webhook_id).await? {
        return Ok(None);
    }
    let rows = sqlx::query(
        "SELECT d.attempts, d.last_error, d.dead_ms, e.seq, e.event_id, e.tenant_id, \
         e.chat_id, e.kind, e.detail, e.at_ms, e.published_ms \
         FROM webhook_deliveries d JOIN event_outbox e ON e.seq = d.seq \
         WHERE d.webhook_id = $1 AND d.state = 'dead' ORDER BY d.seq LIMIT $2",
    )
    .bind(webhook_id)
    .bind(limit(count))
    .fetch_all(&db.pool)
    .await?;
    rows.iter()
        .map(|row| {
            Ok(DeadLetter {
                event: outbox_event(row)?.event,
                attempts: get(row, "attempts")?,
                last_error: get(row, "last_error")?,
                dead_ms: get::<Option<i64>>(row, "dead_ms")?.unwrap_or_default(),
            })
        })
        .collect::<Result<Vec<_>, Failure>>()
        .map(Some)
}

/// Queues a webhook's dead letters again (all, or the one of event `event_id`), with a new
/// retry window from `now_ms`. `None` if the tenant has no such webhook; else how many.
pub(crate) async fn redeliver(
    db: &Db,
    tenant: &TenantId,
    webhook_id: &str,
    event_id: Option<&str>,
    now_ms: i64,
) -> Result<Option<u64>, Failure> {
    if !exists(db, tenant, webhook_id).await? {
        return Ok(None);
    }
    let query = match event_id {
        None => sqlx::query(
            "UPDATE webhook_deliveries SET state = 'pending', attempts = 0, \
             next_attempt_ms = $2, since_ms = $2, dead_ms = NULL, last_error = NULL \
             WHERE webhook_id = $1 AND state = 'dead' RETURNING webhook_id, order_key",
        )
        .bind(webhook_id)
        .bind(now_ms),
        Some(event_id) => sqlx::query(
            "UPDATE webhook_deliveries SET state = 'pending', attempts = 0, \
             next_attempt_ms = $2, since_ms = $2, dead_ms = NULL, last_error = NULL \
             WHERE webhook_id = $1 AND state = 'dead' \
             AND seq IN (SELECT seq FROM event_outbox WHERE event_id = $3) \
             RETURNING webhook_id, order_key",
        )
        .bind(webhook_id)
        .bind(now_ms)
        .bind(event_id),
    };
    let queued = query
        .fetch_all(&db.pool)
        .await?
        .iter()
        .map(queue_key)
        .collect::<Result<Vec<_>, _>>()?;
    let count = u64::try_from(queued.len()).unwrap_or(u64::MAX);
    db.webhooks_queued(queued);
    Ok(Some(count))
}

async fn exists(db: &Db, tenant: &TenantId, webhook_id: &str) -> Result<bool, Failure> {
    Ok(
        sqlx::query("SELECT 1 FROM webhooks WHERE id = $1 AND tenant_id = $2")
            .bind(webhook_id)
            .bind(tenant.as_str())
            .fetch_optional(&db.pool)
            .await?
            .is_some(),
    )
}
