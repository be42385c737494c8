//! Cluster benchmarks on real processes (`salesboy-sim cluster-bench`): live migration
//! latency per tenant, drain time, failover time (kill → first reply served by a survivor),
//! and rebalance moves when a node joins, next to the ideal and to what `hash % N` would
//! move. Real `salesboy serve` binaries, one nats-server, one PostgreSQL, fake Cloud API and
//! LLM, all on this machine (see `ClusterSandbox`).

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow, bail};
use futures::StreamExt;
use salesboy_node::bus::{Bus, Bytes, Headers, NatsBus, NatsBusOptions};
use salesboy_node::cluster::MigrationError;
use salesboy_node::cluster::rebalance::hash_mod_moves;
use salesboy_node::cluster::wire::{ControlError, ControlReply, ControlRequest};
use salesboy_node::cluster::{DRAIN_TIMEOUT, control_request};
use salesboy_protocol::subjects::{self, DIRECTORY_BUCKET};
use salesboy_protocol::{NodeId, PhoneNumberId, TenantId};
use salesboy_testkit::{ClusterSandbox, Db, webhooks};
use serde::Serialize;

use crate::bench::stats::Distribution;

/// What to measure.
#[derive(Debug, Clone)]
pub struct ClusterBenchArgs {
    /// The `salesboy` binary (a release build).
    pub binary: PathBuf,
    /// Tenants for the migration, failover and rebalance measurements.
    pub tenants: usize,
    /// Tenant counts to drain (each on a fresh cluster).
    pub drain_sizes: Vec<usize>,
    /// Migrations timed one by one.
    pub migrations: usize,
    /// The nodes' failure timeout (`SALESBOY_FAILURE_TIMEOUT_MS`), ms.
    pub failure_timeout_ms: u64,
}

/// The figures.
#[derive(Debug, Clone, Serialize)]
pub struct ClusterReport {
    /// The floor of a cross-node hop: a bare request/reply round trip between two NATS
    /// connections through the cluster's nats-server (256-byte payload), milliseconds.
    pub nats_round_trip_ms: Percentiles,
    /// Migration latency per tenant (control request round trip: freeze, adopt, directory
    /// writes, release), milliseconds: p50, p99, max, count.
    pub migration_ms: Percentiles,
    /// Drain time per drained tenant count: (tenants on the node, seconds).
    pub drain_secs: Vec<(usize, f64)>,
    /// Kill -9 → first reply to a message for one of the dead node's tenants, seconds.
    pub failover_secs: f64,
    /// Failure timeout the nodes ran with, ms.
    pub failure_timeout_ms: u64,
    /// Adding a 4th node to 3: tenants moved, the ideal T/(N+1), and hash % N's moves.
    pub rebalance: Rebalance,
}

/// Latency percentiles.
#[derive(Debug, Clone, Serialize)]
pub struct Percentiles {
    /// Median.
    pub p50: f64,
    /// 99th percentile.
    pub p99: f64,
    /// Largest.
    pub max: f64,
    /// Samples.
    pub count: usize,
}

/// Rebalance figures.
#[derive(Debug, Clone, Serialize)]
pub struct Rebalance {
    /// Tenants.
    pub tenants: usize,
    /// Tenants the cluster moved.
    pub moved: usize,
    /// T / (N + 1).
    pub ideal: usize,
    /// What `hash(tenant) % N` placement would have moved.
    pub hash_mod: usize,
    /// Seconds from the node joining to the spread settling.
    pub settle_secs: f64,
}

/// The p50, p99 and maximum of `samples` (ms), by the benches' one definition
/// ([`Distribution`]).
fn percentiles(samples: Vec<f64>) -> Percentiles {
    let distribution = Distribution::of(samples);
    Percentiles {
        p50: distribution.p50_ms,
        p99: distribution.p99_ms,
        max: distribution.max_ms,
        count: distribution.count,
    }
}

async fn cluster(
    args: &ClusterBenchArgs,
    nodes: usize,
) -> anyhow::Result<(ClusterSandbox, Arc<dyn Bus>)> {
    let sandbox = ClusterSandbox::builder()
        .nodes(nodes)
        .binary(args.binary.clone())
        .database(Db::Postgres)
        .env("SALESBOY_DEBOUNCE_MS", "0")
        .env(
            "SALESBOY_FAILURE_TIMEOUT_MS",
            args.failure_timeout_ms.to_string(),
        )
        .env("RUST_LOG", "warn")
        .start()
        .await
        .map_err(|e| anyhow!(e))?;
    let bus: Arc<dyn Bus> = salesboy_testkit::sandbox_sealed_bus(Arc::new(
        NatsBus::connect(
            &sandbox.nats_url(),
            NatsBusOptions {
                name: "cluster-bench".into(),
                ..Default::default()
            },
        )
        .await?,
    ));
    Ok((sandbox, bus))
}

/// One message per tenant (each from its own chat), to the nodes in turn; waits for every
/// reply. Activates every tenant.
async fn activate_all(
    sandbox: &ClusterSandbox,
    tenants: &[(TenantId, PhoneNumberId)],
    round: usize,
) -> anyhow::Result<()> {
    let nodes = sandbox.node_count();
    let before = sandbox.whatsapp().sent_count();
    futures::stream::iter(tenants.iter().enumerate())
        .for_each_concurrent(32, |(i, (_, phone))| async move {
            let body = webhooks::text_message(
                phone.as_str(),
                &format!("1650{round:03}{i:06}"),
                &format!("wamid.b{round}.{i}"),
                &format!("round {round}: hours?"),
            );
            for attempt in 0..nodes * 10 {
                if let Ok(status) = sandbox.post_webhook((i + attempt) % nodes, &body).await
                    && status.is_success()
                {
                    return;
                }
            }
        })
        .await;
    sandbox
        .whatsapp()
        .wait_for_sent(before + tenants.len(), Duration::from_secs(300))
        .await
        .map_err(|e| anyhow!(e))?;
    Ok(())
}

async fn placements(bus: &Arc<dyn Bus>) -> anyhow::Result<HashMap<String, String>> {
    let kv = bus.kv(DIRECTORY_BUCKET, 1).await?;
    let mut out = HashMap::new();
    for entry in kv.entries().await? {
        let value: serde_json::Value = serde_json::from_slice(&entry.value)?;
        out.insert(
            entry.key.clone(),
            value["node"].as_str().unwrap_or_default().to_owned(),
        );
    }
    Ok(out)
}

/// The placements once no tenant has moved for [`SETTLED_AFTER`] (longer than a rebalancing
/// round) and every tenant is placed.
async fn settled(bus: &Arc<dyn Bus>, tenants: usize) -> anyhow::Result<HashMap<String, String>> {
    let deadline = Instant::now() + Duration::from_secs(180);
    let mut last = placements(bus).await?;
    let mut unchanged_since = Instant::now();
    loop {
        tokio::time::sleep(Duration::from_millis(250)).await;
        let now = placements(bus).await?;
        if now != last || now.len() < tenants {
            last = now;
            unchanged_since = Instant::now();
        } else if unchanged_since.elapsed() >= SETTLED_AFTER {
            return Ok(now);
        }
        if Instant::now() > deadline {
            bail!("placements still changing after 180 s");
        }
    }
}

/// How long placements must stay unchanged to count as settled (the rebalancer runs every
/// 2 s).
const SETTLED_AFTER: Duration = Duration::from_secs(5);

/// Round trips of a 256-byte request between two connections of their own, answered at
/// once, on a node-inbox subject (a cross-node hop with nothing behind it).
async fn nats_round_trip(url: &str, samples: usize) -> anyhow::Result<Percentiles> {
    let connect = |name: &str| {
        NatsBus::connect(
            url,
            NatsBusOptions {
                name: name.to_owned(),
                ..Default::default()
            },
        )
    };
    let responder = connect("cluster-bench-echo").await?;
    let requester = connect("cluster-bench-ask").await?;
    let subject = subjects::node_inbox(&NodeId::new("bench-echo")?);
    let mut inbox = responder.subscribe(&subject, None).await?;
    let echo = tokio::spawn(async move {
        while let Some(message) = inbox.next().await {
            let _ = responder
                .respond(&message, Headers::default(), message.payload.clone())
                .await;
        }
    });
    let payload = Bytes::from(vec![b'x'; 256]);
    let mut timings = Vec::with_capacity(samples);
    for i in 0..samples + 200 {
        let started = Instant::now();
        requester
            .request(
                &subject,
                Headers::default(),
                payload.clone(),
                Duration::from_secs(5),
            )
            .await?;
        // The first 200 warm the connections up.
        if i >= 200 {
            timings.push(started.elapsed().as_secs_f64() * 1000.0);
        }
    }
    echo.abort();
    Ok(percentiles(timings))
}

/// Runs every measurement; progress on stderr.
pub async fn run(args: &ClusterBenchArgs) -> anyhow::Result<ClusterReport> {
    salesboy_node::run::install_crypto_provider();
    if !args.binary.exists() {
        bail!(
            "{} not found: build it with `cargo build --release -p salesboy-node`",
            args.binary.display()
        );
    }

    // Migration latency and failover, on 3 nodes.
    eprintln!("cluster-bench: 3 nodes, {} tenants", args.tenants);
    let (sandbox, bus) = cluster(args, 3).await?;
    let nats_round_trip_ms = nats_round_trip(&sandbox.nats_url(), 5_000).await?;
    eprintln!(
        "cluster-bench: NATS request/reply p50 {:.3} ms, p99 {:.3} ms over {}",
        nats_round_trip_ms.p50, nats_round_trip_ms.p99, nats_round_trip_ms.count
    );
    let tenants = sandbox
        .seed_tenants(args.tenants, "We open at 9am every day.")
        .await
        .map_err(|e| anyhow!(e))?;
    activate_all(&sandbox, &tenants, 0).await?;
    // Time moves of a settled cluster, not moves racing the rebalancer's.
    let placed = settled(&bus, args.tenants).await?;
    let on_node0: Vec<TenantId> = tenants
        .iter()
        .filter(|(t, _)| placed.get(t.as_str()).map(String::as_str) == Some("node-0"))
        .map(|(t, _)| t.clone())
        .collect();
    let node0 = NodeId::new("node-0")?;
    let node1 = NodeId::new("node-1")?;
    let mut samples = Vec::new();
    for tenant in on_node0.iter().take(args.migrations) {
        let started = Instant::now();
        let reply = control_request(
            bus.as_ref(),
            &salesboy_testkit::sandbox_cluster_key(),
            &node0,
            &ControlRequest::MigrateOut {
                tenant: tenant.clone(),
                to: node1.clone(),
            },
            Duration::from_secs(30),
        )
        .await?;
        match reply {
            ControlReply::Ok => {}
            // The rebalancer moved it meanwhile: not a failure, not a sample.
            ControlReply::Error(
                reason @ ControlError::Migration(
                    MigrationError::AlreadyMoving { .. } | MigrationError::NotHostedHere { .. },
                ),
            ) => {
                eprintln!("cluster-bench: {tenant} skipped: {reason}");
                continue;
            }
            other => bail!("migration of {tenant} failed: {other:?}"),
        }
        samples.push(started.elapsed().as_secs_f64() * 1000.0);
    }
    let migration_ms = percentiles(samples);
    eprintln!(
        "cluster-bench: migration p50 {:.2} ms, p99 {:.2} ms over {}",
        migration_ms.p50, migration_ms.p99, migration_ms.count
    );

    // Failover: kill node-2, then message one of its tenants through node-0.
    let placed = placements(&bus).await?;
    let (victim, phone) = tenants
        .iter()
        .find(|(t, _)| placed.get(t.as_str()).map(String::as_str) == Some("node-2"))
        .cloned()
        .context("node-2 hosts no tenant")?;
    let sent_before = sandbox.whatsapp().sent_count();
    sandbox.kill(2).await.map_err(|e| anyhow!(e))?;
    let killed = Instant::now();
    let body = webhooks::text_message(
        phone.as_str(),
        "16509999999",
        "wamid.failover",
        "are you there?",
    );
    let status = sandbox
        .post_webhook(0, &body)
        .await
        .map_err(|e| anyhow!(e))?;
    if !status.is_success() {
        bail!("webhook for {victim} refused: {status}");
    }
    sandbox
        .whatsapp()
        .wait_for_sent(sent_before + 1, Duration::from_secs(60))
        .await
        .map_err(|e| anyhow!(e))?;
    let failover_secs = killed.elapsed().as_secs_f64();
    eprintln!(
        "cluster-bench: failover {failover_secs:.2} s (failure timeout {} ms)",
        args.failure_timeout_ms
    );
    drop(sandbox);

    // Rebalance: 3 nodes → 4.
    let (sandbox, bus) = cluster(args, 3).await?;
    let tenants = sandbox
        .seed_tenants(args.tenants, "We open at 9am every day.")
        .await
        .map_err(|e| anyhow!(e))?;
    activate_all(&sandbox, &tenants, 0).await?;
    // The spread over 3 nodes must have settled first, or its own moves would count.
    let before = settled(&bus, args.tenants).await?;
    sandbox.add_node().await.map_err(|e| anyhow!(e))?;
    let joined = Instant::now();
    let ideal = args.tenants / 4;
    loop {
        let now = placements(&bus).await?;
        let on_new = now.values().filter(|n| *n == "node-3").count();
        if on_new >= ideal.saturating_sub(1) || joined.elapsed() > Duration::from_secs(120) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let settle_secs = joined.elapsed().as_secs_f64();
    // Every move the join caused, including any after the new node got its share.
    let after = settled(&bus, args.tenants).await?;
    let moved = before
        .iter()
        .filter(|(t, n)| after.get(*t) != Some(*n))
        .count();
    let ids: Vec<TenantId> = tenants.iter().map(|(t, _)| t.clone()).collect();
    let rebalance = Rebalance {
        tenants: args.tenants,
        moved,
        ideal,
        hash_mod: hash_mod_moves(&ids, 3, 4),
        settle_secs,
    };
    eprintln!(
        "cluster-bench: rebalance moved {moved} (ideal {ideal}, hash % N {}) in {settle_secs:.2} s",
        rebalance.hash_mod
    );
    drop(sandbox);

    // Drain time.
    let mut drain_secs = Vec::new();
    for &size in &args.drain_sizes {
        let (sandbox, bus) = cluster(args, 2).await?;
        let tenants = sandbox
            .seed_tenants(size * 2, "We open at 9am every day.")
            .await
            .map_err(|e| anyhow!(e))?;
        activate_all(&sandbox, &tenants, 0).await?;
        let on_node0 = placements(&bus)
            .await?
            .values()
            .filter(|n| *n == "node-0")
            .count();
        let started = Instant::now();
        let reply = control_request(
            bus.as_ref(),
            &salesboy_testkit::sandbox_cluster_key(),
            &node0,
            &ControlRequest::Drain,
            DRAIN_TIMEOUT,
        )
        .await?;
        let secs = started.elapsed().as_secs_f64();
        if !matches!(reply, ControlReply::Drained { .. }) {
            bail!("drain failed: {reply:?}");
        }
        eprintln!("cluster-bench: drained {on_node0} active tenants in {secs:.2} s");
        drain_secs.push((on_node0, secs));
    }

    Ok(ClusterReport {
        nats_round_trip_ms,
        migration_ms,
        drain_secs,
        failover_secs,
        failure_timeout_ms: args.failure_timeout_ms,
        rebalance,
    })
}
