//! `bench tenant-memory`: resident memory per active idle tenant.
//!
//! The node starts with N tenants in the database and none active; its RSS is read from
//! `/proc/<pid>/status`. Then half the tenants are activated (one message each, so each
//! gets its supervisor, session and responder actors and one conversation), the bench waits
//! until `/api/health` shows every conversation passivated (`SALESBOY_CONVERSATION_IDLE_SECS=1`,
//! the node sweeps every 5 s) and reads the RSS again; then the other half, and again.
//!
//! Per tenant = (RSS with N active − RSS with none) / N. The marginal figure, (RSS at N −
//! RSS at N/2) / (N/2), leaves out one-time costs (pool connections, buffers, caches filled
//! by the first messages). RSS includes memory the allocator keeps after the passivated
//! conversations freed it (glibc malloc does not return most of it to the system).

use std::sync::Arc;
use std::sync::atomic::AtomicUsize;
use std::time::{Duration, Instant};

use serde::Serialize;
use serde_json::json;

use super::env::Rss;
use super::flow::MEASURED_RUN;
use super::load::closed_loop;
use super::node::{Deployment, NodeOptions};
use super::progress;
use super::report::{Report, Verdict, kib, mib};
use super::setup::delivery;

/// The target of issue "Single-node gateway": bytes per active idle tenant (32 KiB).
pub const TARGET_BYTES_PER_TENANT: f64 = 32.0 * 1024.0;

/// Options of `bench tenant-memory`.
#[derive(Debug, Clone, clap::Args)]
pub struct MemoryOptions {
    /// The node under test.
    #[command(flatten)]
    pub node: NodeOptions,
    /// Tenants to activate.
    #[arg(long, default_value_t = 1_000)]
    pub tenants: usize,
    /// Concurrent webhook deliveries while activating.
    #[arg(long, default_value_t = 32)]
    pub concurrency: usize,
    /// Pause before each RSS reading, seconds.
    #[arg(long, default_value_t = 2)]
    pub settle_secs: u64,
    /// How long each step may take.
    #[arg(long, default_value_t = 900)]
    pub timeout_secs: u64,
    /// Keep the node running this many seconds after the last reading, for inspection from
    /// outside (a heap profiler's snapshot, `/proc/<pid>/smaps`).
    #[arg(long, default_value_t = 0)]
    pub hold_secs: u64,
}

/// One RSS reading.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Step {
    /// Tenants active at the reading.
    pub active_tenants: usize,
    /// The node's memory.
    pub rss: Rss,
    /// Seconds the activations of this step took (first POST → last reply).
    pub activation_secs: f64,
    /// Seconds until every conversation was passivated after the last reply.
    pub passivation_secs: f64,
}

/// Runs the benchmark.
pub async fn run(options: &MemoryOptions) -> anyhow::Result<Report> {
    let tenants = options.tenants.max(2);
    let settings = [
        ("SALESBOY_CONVERSATION_IDLE_SECS", "1".to_owned()),
        ("SALESBOY_MAX_TENANTS", tenants.max(100_000).to_string()),
    ];
    let mut deployment = Deployment::start_with_tenants(
        &options.node,
        &settings,
        options.concurrency,
        tenants,
        false,
    )
    .await?;
    let settle = Duration::from_secs(options.settle_secs);
    let timeout = Duration::from_secs(options.timeout_secs);
    tokio::time::sleep(settle).await;
    let load_before = deployment.machine_load_before_run().await;
    let baseline = Step {
        active_tenants: deployment.health().await?.tenants,
        rss: deployment.node()?.rss()?,
        activation_secs: 0.0,
        passivation_secs: 0.0,
    };
    progress(format!(
        "no tenant active: RSS {}",
        mib(baseline.rss.rss as f64)
    ));
    let half = tenants / 2;
    let mut steps = vec![baseline];
    for range in [0..half, half..tenants] {
        let step = activate(&mut deployment, range, options.concurrency, settle, timeout).await?;
        steps.push(step);
    }
    let (base, mid, full) = (steps[0], steps[1], steps[2]);
    let per_tenant = |a: u64, b: u64, n: usize| (b as f64 - a as f64) / n as f64;
    let per_tenant_rss = per_tenant(base.rss.rss, full.rss.rss, tenants);
    let per_tenant_anon = per_tenant(base.rss.anon, full.rss.anon, tenants);
    let marginal_rss = per_tenant(mid.rss.rss, full.rss.rss, tenants - half);
    let marginal_anon = per_tenant(mid.rss.anon, full.rss.anon, tenants - half);

    let mut report = deployment.report("tenant-memory");
    for step in &steps {
        report.row(
            format!("RSS with {} tenants active", step.active_tenants),
            format!(
                "{} (anon {}, file {}, shmem {}){}",
                mib(step.rss.rss as f64),
                mib(step.rss.anon as f64),
                mib(step.rss.file as f64),
                mib(step.rss.shmem as f64),
                if step.active_tenants > 0 {
                    format!(
                        "; activated in {:.1} s, passivated {:.1} s later",
                        step.activation_secs, step.passivation_secs
                    )
                } else {
                    String::new()
                }
            ),
        );
    }
    report.row(
        format!("per tenant: (RSS at {tenants} − RSS at 0) / {tenants}"),
        format!(
            "{} ({:.0} B); anon only {}",
            kib(per_tenant_rss),
            per_tenant_rss,
            kib(per_tenant_anon)
        ),
    );
    report.row(
        format!(
            "marginal: (RSS at {tenants} − RSS at {half}) / {}",
            tenants - half
        ),
        format!(
            "{} ({:.0} B); anon only {}",
            kib(marginal_rss),
            marginal_rss,
            kib(marginal_anon)
        ),
    );
    report.machine_busy_before(load_before);
    report.verdicts.push(Verdict::at_most(
        &format!("≤ 32 KiB RSS per active idle tenant ({tenants} tenants, delta from 0)"),
        per_tenant_rss / 1024.0,
        TARGET_BYTES_PER_TENANT / 1024.0,
        "KiB",
    ));
    report.verdicts.push(Verdict::at_most(
        "≤ 32 KiB RSS per active idle tenant (marginal, second half)",
        marginal_rss / 1024.0,
        TARGET_BYTES_PER_TENANT / 1024.0,
        "KiB",
    ));
    if options.hold_secs > 0 {
        progress(format!(
            "holding the node (pid {}) for {} s",
            deployment.node()?.pid(),
            options.hold_secs
        ));
        tokio::time::sleep(Duration::from_secs(options.hold_secs)).await;
    }
    report.results = json!({
        "tenants": tenants,
        "steps": steps,
        "per_tenant_rss_bytes": per_tenant_rss,
        "per_tenant_anon_bytes": per_tenant_anon,
        "marginal_rss_bytes": marginal_rss,
        "marginal_anon_bytes": marginal_anon,
        "node_peak_rss_bytes": deployment.node()?.peak_rss(),
    });
    deployment.shutdown().await;
    Ok(report)
}

/// Activates tenants `range` with one message each, waits for their replies and for every
/// conversation to be passivated, then reads the RSS.
async fn activate(
    deployment: &mut Deployment,
    range: std::ops::Range<usize>,
    concurrency: usize,
    settle: Duration,
    timeout: Duration,
) -> anyhow::Result<Step> {
    let expected_active = range.end;
    let count = range.len();
    let deliveries: Vec<_> = range
        .map(|t| delivery(MEASURED_RUN, t, t, &format!("wamid.mem.{t}"), t))
        .collect();
    progress(format!(
        "activating tenants {}..{expected_active}",
        expected_active - count
    ));
    let url = deployment.webhook_url()?;
    let started = Instant::now();
    let sent_before = deployment.whatsapp.sent_count();
    let outcome = closed_loop(
        &deployment.http,
        &url,
        Arc::new(deliveries),
        concurrency,
        Arc::new(AtomicUsize::new(0)),
    )
    .await;
    anyhow::ensure!(
        outcome.accepted() == count,
        "{} of {count} activation messages accepted ({:?})",
        outcome.accepted(),
        outcome.failures()
    );
    deployment
        .whatsapp
        .wait_for_sent(sent_before + count, timeout)
        .await
        .map_err(|e| anyhow::anyhow!("activation: {e}"))?;
    let activation_secs = started.elapsed().as_secs_f64();
    let replied = Instant::now();
    loop {
        let health = deployment.health().await?;
        if health.conversations == 0 && health.tenants >= expected_active {
            anyhow::ensure!(
                health.tenants == expected_active,
                "{} tenants active, {expected_active} expected",
                health.tenants
            );
            break;
        }
        anyhow::ensure!(
            replied.elapsed() < timeout,
            "conversations not passivated after {timeout:?}: {health:?}"
        );
        deployment.node_mut()?.check_alive()?;
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let passivation_secs = replied.elapsed().as_secs_f64();
    tokio::time::sleep(settle).await;
    let rss = deployment.node()?.rss()?;
    progress(format!(
        "{expected_active} tenants active, conversations passivated: RSS {} (activation {activation_secs:.1} s)",
        mib(rss.rss as f64)
    ));
    Ok(Step {
        active_tenants: expected_active,
        rss,
        activation_secs,
        passivation_secs,
    })
}
