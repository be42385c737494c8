//! `salesboy`: the gateway node's command line.

use std::path::PathBuf;

use clap::{Parser, Subcommand};
use salesboy_node::config::Config;
use salesboy_node::{cli, run, telemetry};

/// The process's allocator (decision 0016).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Salesboy: a WhatsApp AI-sales-assistant gateway.
#[derive(Debug, Parser)]
#[command(name = "salesboy", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run a gateway node (with no configuration: the embedded single node on SQLite).
    Serve {
        /// A TOML configuration file (see docs/configuration.md).
        #[arg(long, value_name = "FILE")]
        config: Option<PathBuf>,
    },
    /// Manage tenants and their WhatsApp numbers (through a running node's admin API).
    Tenant {
        #[command(flatten)]
        target: cli::Target,
        #[command(subcommand)]
        command: cli::TenantCommand,
    },
    /// Manage tenants' knowledge bases (through a running node's admin API).
    Kb {
        #[command(flatten)]
        target: cli::Target,
        #[command(subcommand)]
        command: cli::KbCommand,
    },
    /// Pause or resume the bot in a chat, or write as the owner (through the admin API).
    Chat {
        #[command(flatten)]
        target: cli::Target,
        #[command(subcommand)]
        command: cli::ChatCommand,
    },
    /// Show the cluster's nodes (load, capacity, state) and tenant counts (through NATS).
    Status {
        /// A TOML configuration file (the nodes' own; SALESBOY_NATS_URL is what matters).
        #[arg(long, value_name = "FILE")]
        config: Option<PathBuf>,
        /// Print the JSON document `GET /api/cluster` serves instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Move every tenant off a node, then have it exit (through NATS).
    Drain {
        /// The node to drain.
        node: String,
        /// A TOML configuration file (the nodes' own; SALESBOY_NATS_URL is what matters).
        #[arg(long, value_name = "FILE")]
        config: Option<PathBuf>,
    },
    /// Print the nats-server users entry of a tenant's NATS user: its own commands and
    /// events only (docs/bus.md, "Tenant credentials").
    NatsPermissions {
        #[command(flatten)]
        args: cli::nats::NatsPermissionsArgs,
    },
    /// Secrets at rest: make a key, or encrypt every stored secret under a new one (on the
    /// database directly; docs/security.md).
    Secrets {
        #[command(subcommand)]
        command: cli::secrets::SecretsCommand,
    },
    /// Copy the embedded SQLite database to a new file while the node runs (VACUUM INTO);
    /// PostgreSQL is backed up with pg_dump (docs/operations.md).
    Backup {
        /// The new file to write.
        path: PathBuf,
        /// A TOML configuration file (the node's own: data_dir or database_url say which
        /// database).
        #[arg(long, value_name = "FILE")]
        config: Option<PathBuf>,
    },
    /// Development helpers.
    Dev {
        #[command(subcommand)]
        command: cli::DevCommand,
    },
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Serve { config } => {
            let config = Config::load(config.as_deref())?;
            telemetry::init(config.log_format);
            run::run(config, run::shutdown_signal()).await
        }
        Command::Tenant { target, command } => cli::tenant(&target, command).await,
        Command::Kb { target, command } => cli::kb(&target, command).await,
        Command::Chat { target, command } => cli::chat(&target, command).await,
        Command::Dev { command } => cli::dev(command).await,
        Command::Secrets { command } => cli::secrets::secrets(command).await,
        Command::NatsPermissions { args } => cli::nats::nats_permissions(args).await,
        Command::Status { config, json } => {
            cli::cluster::status(&Config::load(config.as_deref())?, json).await
        }
        Command::Backup { path, config } => {
            cli::backup::backup(&Config::load(config.as_deref())?, &path).await
        }
        Command::Drain { node, config } => {
            cli::cluster::drain(&Config::load(config.as_deref())?, &node).await
        }
    }
}
