//! `salesboy status` and `salesboy drain`: the cluster seen and steered through NATS, with
//! the same configuration a node reads (`SALESBOY_NATS_URL`, `--config`).

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use salesboy_protocol::NodeId;

use crate::bus::{Bus, NatsBus};
use crate::cluster::status::ClusterStatus;
use crate::cluster::wire::{ControlReply, ControlRequest};
use crate::cluster::{ClusterKey, ClusterKeyError, DRAIN_TIMEOUT, SealedKvBus, control_request};
use crate::config::Config;

/// A bus on the configured NATS server, with the configured credentials.
pub(super) async fn connect(config: &Config) -> anyhow::Result<Arc<dyn Bus>> {
    crate::run::install_crypto_provider();
    let url = config.nats_url.as_deref().context(
        "SALESBOY_NATS_URL is not set: this command talks to the cluster through its NATS server",
    )?;
    let options = config.nats_options("salesboy-cli".into());
    let bus = NatsBus::connect(url, options)
        .await
        .with_context(|| format!("connecting to nats at {}", crate::store::redact_url(url)))?;
    Ok(Arc::new(bus))
}

/// [`connect`] for reading and steering the cluster: its buckets sealed under the cluster
/// key, which is checked before connecting.
async fn connect_with_key(config: &Config) -> anyhow::Result<(Arc<dyn Bus>, Arc<ClusterKey>)> {
    let key = Arc::new(ClusterKey::from_config(config)?.ok_or(ClusterKeyError::Missing)?);
    let bus = connect(config).await?;
    Ok((Arc::new(SealedKvBus::new(bus, Arc::clone(&key))), key))
}

/// Prints the cluster's nodes (load, capacity, state) and tenant counts; `json` for the same
/// document `GET /api/cluster` serves.
pub async fn status(config: &Config, json: bool) -> anyhow::Result<()> {
    let (bus, _) = connect_with_key(config).await?;
    let status = ClusterStatus::read(
        bus.as_ref(),
        Duration::from_millis(config.failure_timeout_ms),
    )
    .await
    .context("reading the cluster's state")?;
    if json {
        println!("{}", serde_json::to_string_pretty(&status)?);
    } else {
        print!("{}", status.table());
    }
    Ok(())
}

/// Asks `node` to move every tenant off and exit; shows progress until it has.
pub async fn drain(config: &Config, node: &str) -> anyhow::Result<()> {
    let node = NodeId::new(node).map_err(|e| anyhow::anyhow!("node: {e}"))?;
    let (bus, key) = connect_with_key(config).await?;
    let failure_timeout = Duration::from_millis(config.failure_timeout_ms);
    let before = ClusterStatus::read(bus.as_ref(), failure_timeout).await?;
    let Some(target) = before
        .nodes
        .iter()
        .find(|n| n.node_id == node.as_str() && n.alive)
    else {
        bail!("node {node} is not a live member of the cluster (see `salesboy status`)");
    };
    eprintln!("draining {node}: {} tenants to move", target.placed);
    let progress_bus = Arc::clone(&bus);
    let watched = node.clone();
    let progress = tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        tick.tick().await;
        loop {
            tick.tick().await;
            if let Ok(status) = ClusterStatus::read(progress_bus.as_ref(), failure_timeout).await {
                let left = status
                    .nodes
                    .iter()
                    .find(|n| n.node_id == watched.as_str())
                    .map_or(0, |n| n.placed);
                eprintln!("  {left} tenants left on {watched}");
            }
        }
    });
    let reply = control_request(
        bus.as_ref(),
        &key,
        &node,
        &ControlRequest::Drain,
        DRAIN_TIMEOUT,
    )
    .await;
    progress.abort();
    match reply.context("asking the node to drain")? {
        ControlReply::Drained { moved } => {
            println!("{node} drained: {moved} tenants moved; it exits now");
            Ok(())
        }
        ControlReply::Error(reason) => bail!("drain of {node} failed: {reason}"),
        ControlReply::Ok => bail!("unexpected answer from {node}"),
    }
}
