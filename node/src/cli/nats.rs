//! `salesboy nats-permissions`: the nats-server `users` entry of a tenant's own NATS user
//! (its commands and events only, see [`crate::bus::tenant_users`]) and, with
//! `--create-consumer`, the durable consumer its events are read from.

use anyhow::Context;
use clap::Args;
use salesboy_protocol::TenantId;
use salesboy_protocol::subjects::{EVENTS_STREAM, tenant_events_consumer};
use uuid::Uuid;

use crate::bus::tenant_users::{TenantPermissions, ensure_events_consumer};
use crate::config::Config;

/// `salesboy nats-permissions …`
#[derive(Debug, Clone, Args)]
pub struct NatsPermissionsArgs {
    /// The tenant's id.
    #[arg(long)]
    pub tenant: String,
    /// The NATS user name [default: the tenant's id].
    #[arg(long)]
    pub user: Option<String>,
    /// The user's password [default: a new random one, printed in the entry].
    #[arg(long, value_name = "PASSWORD")]
    pub password: Option<String>,
    /// Also create the tenant's events consumer (`tenant_<id>` on `SB_EVENTS`), connecting
    /// as the configured NATS user (SALESBOY_NATS_URL, SALESBOY_NATS_USER, …).
    #[arg(long)]
    pub create_consumer: bool,
    /// A TOML configuration file (the nodes' own), for --create-consumer.
    #[arg(long, value_name = "FILE")]
    pub config: Option<std::path::PathBuf>,
}

/// Prints the entry on standard output (notes on standard error); creates the consumer
/// when asked.
pub async fn nats_permissions(args: NatsPermissionsArgs) -> anyhow::Result<()> {
    let tenant = TenantId::new(args.tenant).map_err(|e| anyhow::anyhow!("tenant: {e}"))?;
    let user = args.user.unwrap_or_else(|| tenant.to_string());
    let generated = args.password.is_none();
    let password = args
        .password
        .unwrap_or_else(|| Uuid::new_v4().simple().to_string());
    let entry = TenantPermissions::of(&tenant)
        .user_entry(&user, &password)
        .context("writing the user entry")?;
    print!("{entry}");
    if generated {
        eprintln!("note: the password is new; hand it to the tenant with the user name {user}");
    }
    if args.create_consumer {
        let config = Config::load(args.config.as_deref())?;
        let bus = super::cluster::connect(&config).await?;
        let client = bus
            .nats_client()
            .context("the configured bus is not NATS")?;
        ensure_events_consumer(&client, &tenant).await?;
        eprintln!(
            "events consumer {} on {EVENTS_STREAM} is ready",
            tenant_events_consumer(&tenant)
        );
    }
    Ok(())
}
