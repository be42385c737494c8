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
    /// Run the seeded fault simulation: the cluster in one process on simulated time, with
    /// seeded faults, invariants checked after each seed. Exits non-zero if a seed fails,
    /// printing the command that replays it.
    Chaos {
        /// Seeds, both ends included: `1..500`, or one seed `42`.
        #[arg(long)]
        seeds: String,
        /// Seeds run at once (one thread each).
        #[arg(long, default_value_t = 1)]
        jobs: usize,
        /// Print every seed's figures, not only failures.
        #[arg(long)]
        verbose: bool,
        /// Inject a bug, to see the invariant checker catch it.
        #[arg(long, value_enum)]
        inject_bug: Option<salesboy_sim::chaos::InjectedBug>,
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
        /// The nodes' failure timeout, ms (`SALESBOY_FAILURE_TIMEOUT_MS`).
        #[arg(long, default_value_t = 5_000)]
        failure_timeout_ms: u64,
    },
    /// Score knowledge retrieval on a labelled set: recall@k and MRR, full text alone vs
    /// hybrid (full text + vectors). The embedding provider is `--providers` or
    /// SALESBOY_EMBEDDING_PROVIDERS (real keys) or, when neither is set, the test kit's
    /// fake embedder. Markdown on stdout, JSON with `--json`.
    RetrievalEval {
        /// A labelled set (JSON, as `simulations/data/retrieval-eval.json`, the default).
        #[arg(long)]
        data: Option<std::path::PathBuf>,
        /// The embedding providers (JSON list, as SALESBOY_EMBEDDING_PROVIDERS).
        #[arg(long, env = "SALESBOY_EMBEDDING_PROVIDERS", hide_env_values = true)]
        providers: Option<String>,
        /// The k of recall@k.
        #[arg(long, default_value_t = 3)]
        k: usize,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Time semantic search for one tenant: the index scan, the whole hybrid search (warm
    /// cache), the index's memory and its cold load, at f32 and int8. Markdown on stdout.
    RetrievalBench {
        /// Tenant sizes in chunks.
        #[arg(long, value_delimiter = ',', default_value = "1000,20000")]
        chunks: Vec<usize>,
        /// Vector length.
        #[arg(long, default_value_t = 768)]
        dimensions: usize,
        /// Timed searches per size.
        #[arg(long, default_value_t = 2000)]
        searches: usize,
    },
    /// Measure the resident memory of idle WhatsApp Web sessions: N `web` tenants with a
    /// realistic stored protocol state, a real client each (on a transport that never
    /// answers) in this process. Human lines on stderr, one JSON line on stdout. Exits
    /// non-zero when an idle session costs more than 1 MiB.
    WebMemory {
        /// Idle sessions (tenants, clients).
        #[arg(long, default_value_t = 100)]
        sessions: usize,
        /// An empty database (`sqlite:…`, `postgres:…`); default: a SQLite file in a temp
        /// dir.
        #[arg(long)]
        database: Option<String>,
    },
    /// Time one database round trip by statement size (does a statement over 16 KiB stall
    /// on Nagle's algorithm?): one JSON line per size, milliseconds.
    StatementBench {
        /// The database (`postgres://…`).
        #[arg(long)]
        database: String,
        /// Parameter sizes in bytes, comma-separated.
        #[arg(long, value_delimiter = ',', default_values_t = salesboy_sim::statement_bench::DEFAULT_SIZES)]
        sizes: Vec<usize>,
        /// Round trips per size.
        #[arg(long, default_value_t = 50)]
        rounds: usize,
    },
    /// Run a local stand-in for Meta's Graph API that accepts the gateway's sends and prints
    /// them: a whole conversation on one machine, no Meta account needed. Point the node at
    /// it with SALESBOY_WHATSAPP_API_BASE=http://ADDR/v21.0.
    FakeCloudApi {
        /// Where to listen.
        #[arg(long, default_value = "127.0.0.1:8090")]
        addr: std::net::SocketAddr,
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
        Command::Chaos {
            seeds,
            jobs,
            verbose,
            inject_bug,
        } => {
            // Each seed runs on its own current-thread runtime, off this one.
            tokio::task::spawn_blocking(move || {
                salesboy_sim::chaos::cli::run(&seeds, jobs, verbose, inject_bug)
            })
            .await?
        }
        Command::ClusterBench {
            salesboy_bin,
            tenants,
            migrations,
            drain,
            failure_timeout_ms,
        } => {
            let args = salesboy_sim::cluster_bench::ClusterBenchArgs {
                binary: salesboy_bin,
                tenants,
                drain_sizes: drain,
                migrations,
                failure_timeout_ms,
            };
            let report = tokio::select! {
                report = salesboy_sim::cluster_bench::run(&args) => report?,
                _ = tokio::signal::ctrl_c() => anyhow::bail!("interrupted"),
            };
            println!("{}", serde_json::to_string_pretty(&report)?);
            Ok(())
        }
        Command::RetrievalEval {
            data,
            providers,
            k,
            json,
        } => {
            use salesboy_sim::retrieval_eval;
            let set = match data {
                Some(path) => serde_json::from_str(&std::fs::read_to_string(&path)?)?,
                None => retrieval_eval::default_set()?,
            };
            let report = retrieval_eval::run(&set, providers.as_deref(), k).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                println!("{}", report.markdown());
            }
            Ok(())
        }
        Command::RetrievalBench {
            chunks,
            dimensions,
            searches,
        } => {
            let rows = salesboy_sim::retrieval_bench::run(&chunks, dimensions, searches).await?;
            println!("{}", serde_json::to_string(&rows)?);
            println!();
            println!("{}", salesboy_sim::retrieval_bench::markdown(&rows));
            Ok(())
        }
        Command::WebMemory { sessions, database } => {
            use salesboy_sim::web_memory;
            let args = web_memory::WebMemoryArgs {
                sessions,
                database,
                state: web_memory::StoredState::default(),
                progress: true,
            };
            let report = tokio::select! {
                report = web_memory::run(&args) => report?,
                _ = tokio::signal::ctrl_c() => anyhow::bail!("interrupted"),
            };
            for line in report.human_lines() {
                eprintln!("{line}");
            }
            println!("{}", serde_json::to_string(&report)?);
            if !report.within_target() {
                anyhow::bail!(
                    "an idle web session costs {} bytes, over the {} bytes target",
                    report.rss_per_session_bytes,
                    report.target_bytes
                );
            }
            Ok(())
        }
        Command::StatementBench {
            database,
            sizes,
            rounds,
        } => {
            let args = salesboy_sim::statement_bench::StatementBenchArgs {
                database,
                sizes,
                rounds,
            };
            for size in salesboy_sim::statement_bench::run(&args).await? {
                println!("{}", serde_json::to_string(&size)?);
            }
            Ok(())
        }
        Command::FakeCloudApi { addr } => salesboy_sim::fake_cloud_api::run(addr).await,
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
