//! Retention: the periodic run that deletes what every growing table holds past its window
//! (docs/storage.md, "Retention"), and dead nodes' membership records.
//!
//! A run visits each [`RetentionTable`] in turn and deletes in batches of at most
//! [`RetentionSettings::batch_rows`] rows, each batch one short transaction
//! ([`SqlStore::retention_batch`]), sleeping [`RetentionSettings::batch_pause`] between
//! batches so ingress writes (the group commit, SQLite's one writer) are never queued
//! behind a long delete. Runs happen on the cluster's leader only (or a node alone): one
//! node deletes, the others do not compete for the same rows. Progress is logged and
//! counted (`salesboy_retention_deleted_rows_total{table}`,
//! `salesboy_retention_batches_total{table}`, `salesboy_retention_runs_total{outcome}`).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use salesboy_actors::ports::{Clock, SystemClock};
use salesboy_actors::store::StoreError;
use tracing::{info, warn};

use crate::cluster::ClusterMember;
use crate::store::{BatchCursor, RetentionTable, SqlStore};

/// Milliseconds in a day.
const DAY_MS: i64 = 24 * 3600 * 1000;

/// Retention's windows and pacing (configuration keys `retention_*` and
/// `events_max_age_secs`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetentionSettings {
    /// How often a run starts (default 1 hour).
    pub interval: Duration,
    /// Chat messages, empty conversations and rejected webhook items older than this many
    /// days go (`retention_days`, default 90).
    pub messages_days: u32,
    /// LLM usage rows older than this many days go, folded by month first
    /// (`retention_llm_usage_days`, default 90).
    pub llm_usage_days: u32,
    /// Events older than this go from the outbox (`events_max_age_secs`, default 7 days).
    pub events_max_age: Duration,
    /// Dead-lettered webhook deliveries given up longer ago than this many days go
    /// (`retention_dead_letter_days`, default 30).
    pub dead_letter_days: u32,
    /// A dead node's membership record is removed this long after it was declared dead
    /// (`retention_membership_grace_secs`, default 1 day).
    pub membership_grace: Duration,
    /// The most rows one batch deletes (`retention_batch_rows`, default 1,000).
    pub batch_rows: u32,
    /// The pause between two batches (`retention_batch_pause_ms`, default 50 ms).
    pub batch_pause: Duration,
}

impl Default for RetentionSettings {
    fn default() -> Self {
        Self {
            interval: Duration::from_secs(3600),
            messages_days: 90,
            llm_usage_days: 90,
            events_max_age: Duration::from_secs(7 * 24 * 3600),
            dead_letter_days: 30,
            membership_grace: Duration::from_secs(24 * 3600),
            batch_rows: 1_000,
            batch_pause: Duration::from_millis(50),
        }
    }
}

impl RetentionSettings {
    /// The cutoff of `table` at `now_ms`: rows older than it go.
    pub fn cutoff_ms(&self, table: RetentionTable, now_ms: i64) -> i64 {
        let days = |days: u32| now_ms.saturating_sub(i64::from(days).saturating_mul(DAY_MS));
        match table {
            RetentionTable::Messages
            | RetentionTable::Conversations
            | RetentionTable::RejectedItems => days(self.messages_days),
            RetentionTable::LlmUsage => days(self.llm_usage_days),
            RetentionTable::DeadLetters => days(self.dead_letter_days),
            RetentionTable::Events => now_ms
                .saturating_sub(i64::try_from(self.events_max_age.as_millis()).unwrap_or(i64::MAX)),
        }
    }
}

/// What one table's part of a run did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TableReport {
    /// Rows deleted.
    pub deleted: u64,
    /// Batches (statements or transactions) it took.
    pub batches: u64,
    /// Events deleted that had never been published (events outbox only).
    pub unpublished: u64,
}

/// What a run did, by table.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RetentionReport {
    /// Each table's deletions.
    pub tables: BTreeMap<RetentionTable, TableReport>,
}

/// One retention run over the SQL store, at `now_ms`. A table whose batch fails is left
/// for the next run; the others still go.
pub async fn run_once(
    sql: &SqlStore,
    settings: &RetentionSettings,
    now_ms: i64,
) -> Result<RetentionReport, StoreError> {
    let mut report = RetentionReport::default();
    let mut failure = None;
    for table in RetentionTable::ALL {
        match run_table(sql, settings, table, now_ms).await {
            Ok(done) => {
                report.tables.insert(table, done);
            }
            Err((done, e)) => {
                report.tables.insert(table, done);
                warn!(table = table.as_str(), error = %e, "retention of a table failed");
                failure = Some(e);
            }
        }
    }
    match failure {
        Some(e) => Err(e),
        None => Ok(report),
    }
}

/// Deletes `table`'s old rows batch after batch, pausing between batches.
async fn run_table(
    sql: &SqlStore,
    settings: &RetentionSettings,
    table: RetentionTable,
    now_ms: i64,
) -> Result<TableReport, (TableReport, StoreError)> {
    let cutoff = settings.cutoff_ms(table, now_ms);
    let mut done = TableReport::default();
    let mut cursor = BatchCursor::Start;
    loop {
        let batch = sql
            .retention_batch(table, cutoff, &cursor, settings.batch_rows)
            .await
            .map_err(|e| (done, e))?;
        done.batches += 1;
        done.deleted += batch.deleted;
        done.unpublished += batch.unpublished;
        let label = table.as_str();
        metrics::counter!("salesboy_retention_batches_total", "table" => label).increment(1);
        metrics::counter!("salesboy_retention_deleted_rows_total", "table" => label)
            .increment(batch.deleted);
        let Some(next) = batch.next else {
            break;
        };
        cursor = next;
        if done.batches.is_multiple_of(100) {
            info!(
                table = label,
                deleted = done.deleted,
                batches = done.batches,
                "retention in progress"
            );
        }
        if !settings.batch_pause.is_zero() {
            tokio::time::sleep(settings.batch_pause).await;
        }
    }
    if done.deleted > 0 {
        if done.unpublished > 0 {
            warn!(
                table = table.as_str(),
                deleted = done.deleted,
                unpublished = done.unpublished,
                "old events deleted from the outbox, some never published"
            );
        } else {
            info!(
                table = table.as_str(),
                deleted = done.deleted,
                batches = done.batches,
                cutoff_ms = cutoff,
                "old rows deleted"
            );
        }
    }
    Ok(done)
}

/// The node's retention task: a run every [`RetentionSettings::interval`] while this node
/// leads the cluster (or runs alone); the leader also removes dead nodes' membership
/// records after the grace ([`ClusterMember::forget_dead_nodes`]).
pub async fn retention_job(
    sql: SqlStore,
    cluster: Option<Arc<ClusterMember>>,
    settings: RetentionSettings,
) {
    let mut interval = tokio::time::interval(settings.interval);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        interval.tick().await;
        if cluster.as_ref().is_some_and(|c| !c.is_leader()) {
            continue;
        }
        if let Some(cluster) = &cluster {
            match cluster.forget_dead_nodes(settings.membership_grace).await {
                Ok(0) => {}
                Ok(forgotten) => {
                    metrics::counter!("salesboy_retention_deleted_rows_total", "table" => "membership")
                        .increment(forgotten);
                    info!(forgotten, "dead nodes' membership records removed");
                }
                Err(e) => warn!(error = %e, "removing dead nodes' membership records failed"),
            }
        }
        let outcome = match run_once(&sql, &settings, SystemClock.now_ms()).await {
            Ok(_) => "ok",
            Err(_) => "failed",
        };
        metrics::counter!("salesboy_retention_runs_total", "outcome" => outcome).increment(1);
    }
}
