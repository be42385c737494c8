//! What the database says happened: counts of messages, replies, dismissals and unsent
//! replies, read straight from the node's database after (or while) it works.

use std::time::Instant;

use anyhow::Context;
use serde::Serialize;
use sqlx::AnyPool;
use sqlx::any::AnyPoolOptions;

/// Counts over the whole database.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct DbCounts {
    /// Inbound messages persisted.
    pub inbound: i64,
    /// Inbound messages with no reply link (not answered, not dismissed).
    pub unanswered: i64,
    /// Inbound messages handled without a reply (bot paused, outside the window, …).
    pub dismissed: i64,
    /// Outbound messages recorded.
    pub outbound: i64,
    /// Outbound messages still pending (recorded, not accepted by the Cloud API).
    pub pending: i64,
    /// Outbound messages accepted by the Cloud API.
    pub sent: i64,
}

/// A small pool on the node's database, for counting.
pub struct Counter {
    pool: AnyPool,
}

impl Counter {
    /// Connects to `url` (the node's database; already migrated).
    pub async fn connect(url: &str) -> anyhow::Result<Self> {
        sqlx::any::install_default_drivers();
        let pool = AnyPoolOptions::new()
            .max_connections(1)
            .connect(url)
            .await
            .context("connecting to the node's database to count")?;
        Ok(Self { pool })
    }

    /// The counts now.
    pub async fn counts(&self) -> anyhow::Result<DbCounts> {
        let count = |sql: &'static str| async move {
            sqlx::query_scalar::<_, i64>(sql)
                .fetch_one(&self.pool)
                .await
                .with_context(|| format!("counting: {sql}"))
        };
        Ok(DbCounts {
            inbound: count("SELECT COUNT(*) FROM messages WHERE direction = 'inbound'").await?,
            unanswered: count(
                "SELECT COUNT(*) FROM messages m WHERE m.direction = 'inbound' \
                 AND NOT EXISTS (SELECT 1 FROM reply_links r WHERE r.inbound_id = m.id)",
            )
            .await?,
            dismissed: count("SELECT COUNT(*) FROM reply_links WHERE reply_id IS NULL").await?,
            outbound: count("SELECT COUNT(*) FROM messages WHERE direction = 'outbound'").await?,
            pending: count(
                "SELECT COUNT(*) FROM messages WHERE direction = 'outbound' AND status = 'pending'",
            )
            .await?,
            sent: count(
                "SELECT COUNT(*) FROM messages WHERE direction = 'outbound' AND status = 'sent'",
            )
            .await?,
        })
    }

    /// How long the node's periodic sweep query (`tenants_with_pending_work`, run every
    /// 5 s) takes now, in milliseconds: the same SQL, over the last 5 minutes.
    pub async fn sweep_query_ms(&self) -> anyhow::Result<f64> {
        let now_ms = i64::try_from(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)?
                .as_millis(),
        )?;
        let started = Instant::now();
        sqlx::query(
            "SELECT DISTINCT m.tenant_id FROM messages m \
             WHERE m.direction = 'inbound' AND m.created_ms >= $1 AND m.created_ms < $2 \
             AND NOT EXISTS (SELECT 1 FROM reply_links r WHERE r.inbound_id = m.id) \
             UNION SELECT DISTINCT tenant_id FROM messages WHERE status = 'pending'",
        )
        .bind(now_ms - 300_000)
        .bind(now_ms - 10_000)
        .fetch_all(&self.pool)
        .await
        .context("running the sweep query")?;
        Ok(started.elapsed().as_secs_f64() * 1e3)
    }

    /// PostgreSQL only: scans and writes per table since the database was created
    /// (`pg_stat_user_tables`), to spot sequential scans of big tables.
    pub async fn postgres_table_stats(&self) -> anyhow::Result<Vec<TableStats>> {
        let rows: Vec<(String, i64, i64, i64, i64, i64)> = sqlx::query_as(
            "SELECT relname::text, seq_scan, seq_tup_read, COALESCE(idx_scan, 0), n_tup_ins, \
             n_tup_upd FROM pg_stat_user_tables ORDER BY relname",
        )
        .fetch_all(&self.pool)
        .await
        .context("reading pg_stat_user_tables")?;
        Ok(rows
            .into_iter()
            .map(
                |(table, seq_scan, seq_tup_read, idx_scan, inserted, updated)| TableStats {
                    table,
                    seq_scan,
                    seq_tup_read,
                    idx_scan,
                    inserted,
                    updated,
                },
            )
            .collect())
    }

    /// Closes the pool.
    pub async fn close(self) {
        self.pool.close().await;
    }
}

/// One table's activity (`pg_stat_user_tables`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TableStats {
    /// The table.
    pub table: String,
    /// Sequential scans.
    pub seq_scan: i64,
    /// Rows read by sequential scans.
    pub seq_tup_read: i64,
    /// Index scans.
    pub idx_scan: i64,
    /// Rows inserted.
    pub inserted: i64,
    /// Rows updated.
    pub updated: i64,
}
