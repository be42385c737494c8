//! `salesboy-sim`: load tests, fault simulation and benchmarks of the Salesboy gateway.

use clap::{Parser, Subcommand};

/// Salesboy's simulation harness.
#[derive(Debug, Parser)]
#[command(name = "salesboy-sim", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run a load scenario (not built yet).
    Run {
        /// The scenario file.
        scenario: std::path::PathBuf,
    },
    /// Run the seeded fault simulation (not built yet).
    Chaos {
        /// Seeds, e.g. `1..500`.
        #[arg(long)]
        seeds: String,
    },
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Run { .. } | Command::Chaos { .. } => {
            anyhow::bail!("not built yet: the load harness and fault simulation are open issues")
        }
    }
}
