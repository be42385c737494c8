//! Seeding old chat messages fast, before the node starts: the table retention works on
//! (`bench latency --seed-old-messages N`).
//!
//! Rows are made by the database itself in chunks of [`CHUNK`] (`generate_series` on
//! PostgreSQL, a recursive CTE on SQLite), one multi-row `INSERT … SELECT` per chunk: no
//! round trip per row. Each seeded message is an inbound text in one of
//! [`CHATS_PER_TENANT`] chats of a bench tenant, `age_days` old or a little more, one
//! millisecond apart, so retention (default 90 days) finds them all old.

use std::time::Instant;

use anyhow::Context;
use sqlx::{AnyConnection, Connection};

use super::node::DbKind;
use super::progress;
use super::setup::tenant_id;

/// Rows per statement.
pub const CHUNK: u64 = 100_000;

/// Chats each tenant's seeded messages are spread over.
pub const CHATS_PER_TENANT: u64 = 50;

/// Milliseconds in a day.
const DAY_MS: i64 = 24 * 3600 * 1000;

/// Inserts `rows` inbound messages created `age_days` ago (and up to `rows` ms before), spread
/// over the first `tenants` bench tenants (which must exist).
pub async fn old_messages(
    database_url: &str,
    db: DbKind,
    tenants: usize,
    rows: u64,
    age_days: u32,
) -> anyhow::Result<()> {
    sqlx::any::install_default_drivers();
    let mut conn = AnyConnection::connect(database_url)
        .await
        .context("connecting to seed old messages")?;
    let tenants = u64::try_from(tenants.max(1)).unwrap_or(1);
    let started = Instant::now();
    let now_ms = i64::try_from(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)?
            .as_millis(),
    )?;
    let newest = now_ms - i64::from(age_days) * DAY_MS;
    let oldest = newest - i64::try_from(rows)?;
    // The conversations first (the messages' foreign key).
    for t in 0..tenants {
        let tenant = tenant_id(usize::try_from(t)?);
        for c in 0..CHATS_PER_TENANT {
            sqlx::query(
                "INSERT INTO conversations (tenant_id, chat_id, last_inbound_ms) \
                 VALUES ($1, $2, $3) ON CONFLICT (tenant_id, chat_id) DO NOTHING",
            )
            .bind(&tenant)
            .bind(format!("7{t:05}{c:05}"))
            .bind(newest)
            .execute(&mut conn)
            .await?;
        }
    }
    // g: 0-based row number; tenant g % tenants, chat (g / tenants) % chats.
    let series = match db {
        DbKind::Postgres => "SELECT g FROM generate_series($1::BIGINT, $2::BIGINT - 1) AS s(g)",
        DbKind::Sqlite => {
            "WITH RECURSIVE s(g) AS (SELECT $1 UNION ALL SELECT g + 1 FROM s WHERE g + 1 < $2) \
             SELECT g FROM s"
        }
    };
    let tenant_of = "'bench-' || substr('000000' || CAST(g % $3 AS TEXT), -6, 6)";
    let chat_of = "'7' || substr('00000' || CAST(g % $3 AS TEXT), -5, 5) || \
                   substr('00000' || CAST((g / $3) % $4 AS TEXT), -5, 5)";
    let (tenant_of, chat_of) = match db {
        // PostgreSQL's substr counts from the start only: right() does the padding.
        DbKind::Postgres => (
            "'bench-' || lpad(CAST(g % $3 AS TEXT), 6, '0')",
            "'7' || lpad(CAST(g % $3 AS TEXT), 5, '0') || lpad(CAST((g / $3) % $4 AS TEXT), 5, '0')",
        ),
        DbKind::Sqlite => (tenant_of, chat_of),
    };
    let insert = format!(
        "INSERT INTO messages (tenant_id, chat_id, direction, wamid, kind, body, created_ms) \
         SELECT {tenant_of}, {chat_of}, 'inbound', 'wamid.seed.' || CAST(g AS TEXT), 'text', \
         'an old message kept for the retention bench', $5 + g FROM ({series}) AS rows"
    );
    let mut done = 0;
    while done < rows {
        let end = (done + CHUNK).min(rows);
        sqlx::query(sqlx::AssertSqlSafe(insert.clone()))
            .bind(i64::try_from(done)?)
            .bind(i64::try_from(end)?)
            .bind(i64::try_from(tenants)?)
            .bind(i64::try_from(CHATS_PER_TENANT)?)
            .bind(oldest)
            .execute(&mut conn)
            .await
            .context("seeding old messages")?;
        done = end;
        if done % (10 * CHUNK) == 0 || done == rows {
            progress(format!(
                "  {done} of {rows} old messages seeded ({:.0} s)",
                started.elapsed().as_secs_f64()
            ));
        }
    }
    if db == DbKind::Postgres {
        sqlx::query("ANALYZE messages").execute(&mut conn).await?;
    }
    conn.close().await?;
    Ok(())
}
