//! The events outbox (`event_outbox`): each event is written in the transaction of the
//! change it reports ([`append`]; [`push_append_all`] for a group commit's), or on its own
//! when it reports no change of the store's ([`record_events`]). The events publisher reads
//! the unpublished ones back in order and marks them published once the stream has them;
//! webhook deliveries read them by sequence.

use salesboy_protocol::events::{EVENT_FORMAT_VERSION, Event};
use salesboy_protocol::subjects::EventKind;
use salesboy_protocol::{ChatId, TenantId};
use serde_json::json;
use sqlx::AnyConnection;
use sqlx::any::AnyRow;

use super::decode::{get, limit, named, optional_id};
use super::error::Failure;
use super::json_rows::{self, Column, Rows};
use super::round_trip::RoundTrip;
use super::{Db, lists, webhooks};
use salesboy_actors::store::StoreError;

/// An event as the outbox keeps it.
#[derive(Debug, Clone, PartialEq)]
pub struct OutboxEvent {
    /// Its place in the outbox: increases with each event written (a transaction that
    /// commits late may leave a smaller one behind a larger one already read).
    pub seq: i64,
    /// The event.
    pub event: Event,
    /// When the events stream acknowledged it; `None` while it waits to be published.
    pub published_ms: Option<i64>,
}

/// `SELECT` of the columns every read needs, followed by the rest of the query.
macro_rules! select_events {
    ($($rest:literal),+) => {
        concat!(
            "SELECT seq, event_id, tenant_id, chat_id, kind, detail, at_ms, published_ms \
             FROM event_outbox ",
            $($rest),+
        )
    };
}

/// Writes `event` on `conn`, inside the caller's transaction.
pub(crate) async fn append(conn: &mut AnyConnection, event: &Event) -> Result<(), Failure> {
    sqlx::query(
        "INSERT INTO event_outbox (event_id, tenant_id, chat_id, kind, detail, at_ms) \
         VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(event.id.as_str())
    .bind(event.tenant.as_ref().map(TenantId::as_str))
    .bind(event.chat.as_ref().map(ChatId::as_str))
    .bind(event.kind.as_str())
    .bind(event.detail.to_string())
    .bind(event.at_ms)
    .execute(conn)
    .await?;
    Ok(())
}

/// Adds to `round` what appends `events` in their order: one statement (the hot path's
/// group commit), none for no events.
pub(crate) fn push_append_all(round: &mut RoundTrip, events: &[Event]) {
    if events.is_empty() {
        return;
    }
    let mut rows = Rows::default();
    for event in events {
        rows.push([
            ("e", json!(event.id.as_str())),
            ("t", json!(event.tenant.as_ref().map(TenantId::as_str))),
            ("c", json!(event.chat.as_ref().map(ChatId::as_str))),
            ("k", json!(event.kind.as_str())),
            ("d", json!(event.detail.to_string())),
            ("a", json!(event.at_ms)),
        ]);
    }
    let sql = format!(
        "INSERT INTO event_outbox (event_id, tenant_id, chat_id, kind, detail, at_ms) \
         SELECT x.e, x.t, x.c, x.k, x.d, x.a FROM {}",
        json_rows::source(
            round.dialect(),
            round.next_param(),
            "x",
            &[
                Column::Text("e"),
                Column::Text("t"),
                Column::Text("c"),
                Column::Text("k"),
                Column::Text("d"),
                Column::BigInt("a"),
            ]
        )
    );
    round.push(sql, vec![rows.into_json()]);
}

/// Writes events that report no change of the store's own (a session's state, a migration,
/// an alert), in one transaction.
pub(crate) async fn record_events(db: &Db, events: &[Event]) -> Result<(), Failure> {
    if events.is_empty() {
        return Ok(());
    }
    let mut tx = db.pool.begin().await?;
    for event in events {
        append(&mut tx, event).await?;
    }
    tx.commit().await?;
    db.outbox_written();
    Ok(())
}

/// The last `count` events, newest first.
pub(crate) async fn recent_events(db: &Db, count: u32) -> Result<Vec<Event>, Failure> {
    let rows = sqlx::query(select_events!("ORDER BY seq DESC LIMIT $1"))
        .bind(limit(count))
        .fetch_all(&db.pool)
        .await?;
    rows.iter()
        .map(|row| outbox_event(row).map(|e| e.event))
        .collect()
}

/// The first `count` events not yet published, in outbox order.
pub(crate) async fn unpublished(db: &Db, count: u32) -> Result<Vec<OutboxEvent>, Failure> {
    let rows = sqlx::query(select_events!(
        "WHERE published_ms IS NULL ORDER BY seq LIMIT $1"
    ))
    .bind(limit(count))
    .fetch_all(&db.pool)
    .await?;
    rows.iter().map(outbox_event).collect()
}

/// Marks `events` published at `at_ms`, and queues those not marked before for the
/// webhooks that want them, in one transaction; the deliveries queued are handed over to
/// the delivery worker whole, after the commit.
pub(crate) async fn mark_published(
    db: &Db,
    events: &[OutboxEvent],
    at_ms: i64,
) -> Result<(), Failure> {
    if events.is_empty() {
        return Ok(());
    }
    let seqs: Vec<i64> = events.iter().map(|e| e.seq).collect();
    // Exact sequences, never a range: an event that commits late may sit inside the range
    // of a batch without being in it.
    let sql = format!(
        "UPDATE event_outbox SET published_ms = $1 \
         WHERE seq IN ({}) AND published_ms IS NULL RETURNING seq",
        lists::placeholders(2, lists::padded_len(seqs.len()))
    );
    let mut tx = db.begin().await?;
    // Safe: the text holds only numbered placeholders; the values are bound.
    let mut query = sqlx::query_scalar(sqlx::AssertSqlSafe(sql)).bind(at_ms);
    for seq in lists::padded(&seqs) {
        query = query.bind(*seq);
    }
    // Only the events marked now: one published twice (two publishers overlapping) goes
    // to the webhooks once.
    let marked: Vec<i64> = query.fetch_all(&mut *tx).await?;
    let matched = webhooks::matching(&mut tx, &marked).await?;
    let fresh = if matched.is_empty() {
        Vec::new()
    } else {
        // One row stands for the deliveries until each is delivered or queued.
        let batch = webhooks::write_batch(&mut tx, &marked, at_ms).await?;
        webhooks::fresh_deliveries(db, &mut tx, matched, events, batch, at_ms).await?
    };
    tx.commit().await?;
    db.webhooks_fresh(fresh);
    Ok(())
}

/// Up to `count` events after sequence `after`, in outbox order.
pub(crate) async fn events_after(
    db: &Db,
    after: i64,
    count: u32,
) -> Result<Vec<OutboxEvent>, Failure> {
    let rows = sqlx::query(select_events!("WHERE seq > $1 ORDER BY seq LIMIT $2"))
        .bind(after)
        .bind(limit(count))
        .fetch_all(&db.pool)
        .await?;
    rows.iter().map(outbox_event).collect()
}

pub(crate) fn outbox_event(row: &AnyRow) -> Result<OutboxEvent, Failure> {
    let detail: String = get(row, "detail")?;
    let detail = serde_json::from_str(&detail).map_err(|e| {
        Failure::Store(StoreError::Invalid {
            reason: format!("stored event detail is not JSON: {e}"),
        })
    })?;
    Ok(OutboxEvent {
        seq: get(row, "seq")?,
        event: Event {
            id: get(row, "event_id")?,
            v: EVENT_FORMAT_VERSION,
            kind: named(row, "kind", EventKind::from_name)?,
            tenant: optional_id(row, "tenant_id")?,
            chat: optional_id(row, "chat_id")?,
            at_ms: get(row, "at_ms")?,
            detail,
        },
        published_ms: get(row, "published_ms")?,
    })
}
