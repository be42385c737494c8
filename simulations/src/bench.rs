//! Benchmarks of one gateway node: `salesboy-sim bench throughput | latency | tenant-memory`.
//!
//! Each bench runs the release `salesboy` binary as a separate process (as in production),
//! configured through `SALESBOY_*` variables, on SQLite or a fresh PostgreSQL database, in
//! front of a fake WhatsApp Cloud API that runs in the bench process. Tenants, numbers and
//! knowledge are written to the database before the node starts. Webhook bodies are built
//! and signed before the clock starts. The node answers with debounce 0 and the offline
//! responder (no LLM), so the figures are the gateway's own.
//!
//! The load generator and the fake Cloud API share the machine's cores with the node (and
//! with PostgreSQL): every report records where the CPU time went during the measured phase.
//!
//! Modules: [`node`] (the process, its database, the fake), [`setup`] (tenants and
//! deliveries), [`load`] (closed and open loops), [`flow`] (warm-up, waiting, exactly-once
//! checks), [`verify`] (database counts), [`seed`] (old messages for retention to delete
//! while `latency` runs), [`stats`], [`env`] (machine, CPU, RSS),
//! [`report`], [`subscribers`] (event listeners for a run); one module per bench: [`throughput`], [`latency`], [`memory`].

pub mod env;
pub mod flow;
pub mod latency;
pub mod load;
pub mod memory;
pub mod node;
pub mod report;
pub mod seed;
pub mod setup;
pub mod stats;
pub mod subscribers;
pub mod throughput;
pub mod verify;

use std::sync::OnceLock;
use std::time::Instant;

pub use latency::LatencyOptions;
pub use memory::MemoryOptions;
pub use node::{DbKind, NodeOptions};
pub use report::Report;
pub use throughput::ThroughputOptions;

/// Which benchmark to run.
#[derive(Debug, Clone, clap::Subcommand)]
pub enum BenchKind {
    /// Closed-loop maximum rate, end to end (webhook → persisted → reply accepted by the
    /// fake Cloud API); target ≥ 5,000 msg/s.
    Throughput(ThroughputOptions),
    /// Open-loop paced load; gateway-added latency per message from its scheduled send
    /// time to its reply at the fake Cloud API; target p99 ≤ 10 ms at 1,000 msg/s.
    Latency(LatencyOptions),
    /// RSS per active idle tenant (supervisor, session and responder alive, conversations
    /// passivated); target ≤ 32 KiB.
    TenantMemory(MemoryOptions),
}

/// Runs a benchmark; its report.
pub async fn run(kind: &BenchKind) -> anyhow::Result<Report> {
    match kind {
        BenchKind::Throughput(options) => throughput::run(options).await,
        BenchKind::Latency(options) => latency::run(options).await,
        BenchKind::TenantMemory(options) => memory::run(options).await,
    }
}

/// A progress line on stderr, stamped with the seconds since the first one.
pub fn progress(line: impl AsRef<str>) {
    static START: OnceLock<Instant> = OnceLock::new();
    let start = START.get_or_init(Instant::now);
    eprintln!(
        "[{:>7.1}s] {}",
        start.elapsed().as_secs_f64(),
        line.as_ref()
    );
}
