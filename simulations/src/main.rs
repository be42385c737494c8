//! `salesboy-sim`: load tests, fault simulation and benchmarks of the Salesboy gateway.

use clap::{Parser, Subcommand};
use salesboy_sim::bench::{self, BenchKind};
use salesboy_sim::scenario;

/// Salesboy's simulation harness.
#[derive(Debug, Parser)]
#[command(name = "salesboy-sim", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run a load scenario (real node processes, NATS, SQL, fake Cloud API and LLMs):
    /// progress on stderr, `report.json`, `report.md` and SVG charts in the output
    /// directory, a summary line on stdout. Exits non-zero when the scenario's `[expect]`
    /// checks fail.
    Run {
        /// The scenario file, e.g. `simulations/scenarios/node-kill.toml`.
        scenario: std::path::PathBuf,
        /// Where the report goes (default `target/sim-runs/<scenario name>`).
        #[arg(long)]
        out: Option<std::path::PathBuf>,
        /// The `salesboy` binary (a release build for figures).
        #[arg(long, default_value = "target/release/salesboy")]
        salesboy_bin: std::path::PathBuf,
    },
    /// Run the seeded fault simulation (not built yet).
    Chaos {
        /// Seeds, e.g. `1..500`.
        #[arg(long)]
        seeds: String,
    },
    /// Benchmark one node (a real `salesboy serve` process): progress on stderr, the result
    /// as one JSON line and a markdown table on stdout.
    Bench {
        /// Which benchmark.
        #[command(subcommand)]
        kind: BenchKind,
    },
    /// Benchmark the cluster on real processes (NATS, PostgreSQL): migration latency per
    /// tenant, failover time, rebalance moves, drain time. Result as JSON on stdout.
    ClusterBench {
        /// The `salesboy` binary (a release build).
        #[arg(long, default_value = "target/release/salesboy")]
        salesboy_bin: std::path::PathBuf,
        /// Tenants for migration, failover and rebalancing.
        #[arg(long, default_value_t = 300)]
        tenants: usize,
        /// Migrations timed one by one.
        #[arg(long, default_value_t = 100)]
        migrations: usize,
        /// Active tenants to drain off one node, each on a fresh cluster.
        #[arg(long, value_delimiter = ',', default_value = "1000")]
        drain: Vec<usize>,
    },
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Run {
            scenario,
            out,
            salesboy_bin,
        } => scenario::command(&scenario, out, salesboy_bin).await,
        Command::Chaos { .. } => {
            anyhow::bail!("not built yet: the fault simulation is an open issue")
        }
        Command::ClusterBench {
            salesboy_bin,
            tenants,
            migrations,
            drain,
        } => {
            let args = salesboy_sim::cluster_bench::ClusterBenchArgs {
                binary: salesboy_bin,
                tenants,
                drain_sizes: drain,
                migrations,
            };
            let report = tokio::select! {
                report = salesboy_sim::cluster_bench::run(&args) => report?,
                _ = tokio::signal::ctrl_c() => anyhow::bail!("interrupted"),
            };
            println!("{}", serde_json::to_string_pretty(&report)?);
            Ok(())
        }
        Command::Bench { kind } => {
            // Ctrl-C drops the bench: the node is killed, temp dirs removed, the PostgreSQL
            // database dropped.
            let report = tokio::select! {
                report = bench::run(&kind) => report?,
                _ = tokio::signal::ctrl_c() => anyhow::bail!("interrupted"),
            };
            println!("{}", report.json_line());
            println!();
            println!("{}", report.markdown());
            Ok(())
        }
    }
}
