//! What the database says happened: counts of messages, replies, dismissals and unsent
//! replies, read straight from the node's database after (or while) it works.

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

    /// Closes the pool.
    pub async fn close(self) {
        self.pool.close().await;
    }
}
