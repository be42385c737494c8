//! `salesboy-sim statement-bench`: how long one PostgreSQL round trip takes as its statement
//! grows, to show whether large statements stall on Nagle's algorithm (a write over about
//! 16 KiB waiting ≈ 40 ms for the server's delayed ACK when the client's socket lacks
//! `TCP_NODELAY`; decision 0020).
//!
//! One connection, the node's driver (sqlx `Any`); each size runs `SELECT length($1)` with a
//! text parameter of that many bytes `rounds` times after one warm-up, and reports the
//! distribution of the round trips.

use std::time::Instant;

use anyhow::Context;
use serde::Serialize;
use sqlx::Connection;

use crate::bench::stats::Distribution;

/// Sizes measured unless told otherwise: both sides of the 16 KiB edge, and batches.
pub const DEFAULT_SIZES: [usize; 6] = [1_000, 16_000, 16_500, 64_000, 256_000, 1_000_000];

/// What to measure.
#[derive(Debug, Clone)]
pub struct StatementBenchArgs {
    /// The database (`postgres://…`, or `sqlite:…` for comparison).
    pub database: String,
    /// Parameter sizes in bytes.
    pub sizes: Vec<usize>,
    /// Round trips per size.
    pub rounds: usize,
}

/// The round trips of one size.
#[derive(Debug, Clone, Serialize)]
pub struct SizeReport {
    /// The text parameter's size, bytes.
    pub bytes: usize,
    /// The round trips, milliseconds.
    pub round_trip: Distribution,
}

/// Measures every size on one connection.
pub async fn run(args: &StatementBenchArgs) -> anyhow::Result<Vec<SizeReport>> {
    sqlx::any::install_default_drivers();
    let mut connection = sqlx::AnyConnection::connect(&args.database)
        .await
        .with_context(|| "connecting to the database")?;
    let mut reports = Vec::with_capacity(args.sizes.len());
    for &bytes in &args.sizes {
        let text = "x".repeat(bytes);
        let mut round_trips = Vec::with_capacity(args.rounds);
        for round in 0..=args.rounds {
            let start = Instant::now();
            let length: i64 = sqlx::query_scalar("SELECT CAST(length($1) AS BIGINT)")
                .bind(text.as_str())
                .fetch_one(&mut connection)
                .await?;
            anyhow::ensure!(
                usize::try_from(length) == Ok(bytes),
                "the database counted {length} bytes of {bytes}"
            );
            if round > 0 {
                round_trips.push(start.elapsed().as_secs_f64() * 1_000.0);
            }
        }
        reports.push(SizeReport {
            bytes,
            round_trip: Distribution::of(round_trips),
        });
    }
    connection.close().await?;
    Ok(reports)
}
