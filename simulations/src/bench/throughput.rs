//! `bench throughput`: the closed-loop maximum rate, end to end.
//!
//! K workers post pre-built, pre-signed webhook deliveries (one inbound text message each)
//! as fast as the node answers them. The clock runs from the first POST until the fake
//! Cloud API has accepted the last reply; every message must be persisted, answered by the
//! offline responder (debounce 0) and its reply sent exactly once.

use std::sync::Arc;
use std::sync::atomic::AtomicUsize;
use std::time::{Duration, Instant};

use serde_json::json;

use super::env::CpuMark;
use super::flow::{
    Baseline, MEASURED_RUN, check_delivery, collect_replies, tick_accepted, warm_up,
};
use super::load::closed_loop;
use super::node::{DbKind, Deployment, NodeOptions};
use super::progress;
use super::report::{Report, Verdict, mib};
use super::setup::{Layout, build_deliveries};
use super::stats::Distribution;
use super::subscribers::EventSubscribers;

/// The end-to-end target of issue "Single-node gateway", messages per second.
pub const TARGET_MSGS_PER_SEC: f64 = 5_000.0;

/// Options of `bench throughput`.
#[derive(Debug, Clone, clap::Args)]
pub struct ThroughputOptions {
    /// The node under test.
    #[command(flatten)]
    pub node: NodeOptions,
    /// Tenants (each with its own WhatsApp number) the messages are spread over.
    #[arg(long, default_value_t = 200)]
    pub tenants: usize,
    /// Messages in the measured run.
    #[arg(long, default_value_t = 50_000)]
    pub messages: usize,
    /// Concurrent webhook deliveries (closed loop).
    #[arg(long, default_value_t = 64)]
    pub concurrency: usize,
    /// Messages per customer chat: 1 (default) gives every message its own chat, so each
    /// gets its own reply; more spreads each chat's messages evenly over the run.
    #[arg(long, default_value_t = 1)]
    pub messages_per_chat: usize,
    /// How long to wait for the replies before reporting what is missing.
    #[arg(long, default_value_t = 600)]
    pub timeout_secs: u64,
    /// With `--nats`: a durable consumer reads every event from the stream and each tenant
    /// has an HTTP event webhook (a local receiver) during the run: the cost of events with
    /// subscribers.
    #[arg(long)]
    pub event_subscribers: bool,
    /// Before the node starts, seed this many old inbound messages (100 days old, kept:
    /// retention is set to 100,000 days for the run): the cost of a long history.
    #[arg(long, default_value_t = 0)]
    pub seed_old_messages: u64,
}

/// How old the seeded history is, in days.
const SEED_AGE_DAYS: u32 = 100;

/// The node's retention window while seeded history is measured: long enough to keep it.
const SEED_KEPT_DAYS: u32 = 100_000;

/// Runs the benchmark; the report (whose `problems` list any loss).
pub async fn run(options: &ThroughputOptions) -> anyhow::Result<Report> {
    let layout = Layout {
        tenants: options.tenants.max(1),
        messages: options.messages.max(1),
        messages_per_chat: options.messages_per_chat.max(1),
    };
    let mut settings = Vec::new();
    if layout.tenants > 100_000 {
        settings.push(("SALESBOY_MAX_TENANTS", layout.tenants.to_string()));
    }
    // The wait for merged batches counts every unanswered message, seeded ones too.
    anyhow::ensure!(
        options.seed_old_messages == 0 || layout.messages_per_chat == 1,
        "--seed-old-messages needs --messages-per-chat 1"
    );
    if options.seed_old_messages > 0 {
        settings.push(("SALESBOY_RETENTION_DAYS", SEED_KEPT_DAYS.to_string()));
    }
    let mut deployment = Deployment::start_with_history(
        &options.node,
        &settings,
        options.concurrency,
        layout.tenants,
        true,
        Some((options.seed_old_messages, SEED_AGE_DAYS)),
    )
    .await?;
    let deliveries = Arc::new(build_deliveries(MEASURED_RUN, &layout));
    progress(format!(
        "{} deliveries built and signed ({} chats, {} tenants)",
        deliveries.len(),
        layout.chats(),
        layout.tenants
    ));
    let subscribers = if options.event_subscribers {
        Some(EventSubscribers::start(&deployment, layout.tenants).await?)
    } else {
        None
    };
    warm_up(&deployment, layout.tenants).await?;
    let baseline = Baseline::read(&deployment).await?;

    progress(format!(
        "posting {} messages with {} workers",
        layout.messages, options.concurrency
    ));
    let url = deployment.webhook_url()?;
    let accepted_now = Arc::new(AtomicUsize::new(0));
    let ticker = tick_accepted(
        Arc::clone(&accepted_now),
        layout.messages,
        Duration::from_secs(2),
    );
    let mark = CpuMark::now(deployment.node()?.pid());
    let started = Instant::now();
    let outcome = closed_loop(
        &deployment.http,
        &url,
        Arc::clone(&deliveries),
        options.concurrency,
        accepted_now,
    )
    .await;
    ticker.abort();
    let accepted = outcome.accepted();
    progress(format!(
        "{accepted} accepted in {:.2} s; waiting for the replies",
        started.elapsed().as_secs_f64()
    ));
    let timeout = Duration::from_secs(options.timeout_secs);
    let end = collect_replies(
        &mut deployment,
        &baseline,
        &layout,
        accepted,
        &mark,
        timeout,
    )
    .await?;
    let mark_reads = deployment.whatsapp.mark_reads().len();
    let peak_rss = deployment.node()?.peak_rss();
    let sweep_ms = baseline.counter.sweep_query_ms().await?;
    let table_stats = match deployment.db() {
        DbKind::Postgres => Some(baseline.counter.postgres_table_stats().await?),
        DbKind::Sqlite => None,
    };
    baseline.counter.close().await;

    let first = outcome.first_post().unwrap_or(started);
    let last_accept = outcome.last_accepted().unwrap_or(first);
    let last_reply = end.sent.iter().map(|s| s.received).max().unwrap_or(first);
    let accept_secs = last_accept.duration_since(first).as_secs_f64();
    let e2e_secs = last_reply.duration_since(first).as_secs_f64();
    let accept_rate = accepted as f64 / accept_secs.max(1e-9);
    let e2e_rate = layout.messages as f64 / e2e_secs.max(1e-9);
    let response = Distribution::of(
        outcome
            .posted
            .iter()
            .filter_map(|p| Some(p.accepted?.duration_since(p.started?).as_secs_f64() * 1e3))
            .collect(),
    );

    let mut report = deployment.report("throughput");
    report.row(
        "messages (one per webhook request)",
        layout.messages.to_string(),
    );
    report.row(
        "tenants / chats / messages per chat",
        format!(
            "{} / {} / {}",
            layout.tenants,
            layout.chats(),
            layout.messages_per_chat
        ),
    );
    report.row(
        "concurrent deliveries (closed loop)",
        options.concurrency.to_string(),
    );
    if options.seed_old_messages > 0 {
        report.row(
            "old messages seeded before the run (kept)",
            format!(
                "{} ({SEED_AGE_DAYS} days old; retention_days {SEED_KEPT_DAYS})",
                options.seed_old_messages
            ),
        );
    }
    report.row(
        "webhook accept rate (first POST → last 200)",
        format!("{accept_rate:.0} msg/s ({accept_secs:.2} s)"),
    );
    report.row(
        "end-to-end rate (first POST → last reply at the fake Cloud API)",
        format!("{e2e_rate:.0} msg/s ({e2e_secs:.2} s)"),
    );
    report.row("webhook response time", response.cell());
    report.row(
        "replies sent / mark-reads",
        format!("{} / {mark_reads}", end.sent.len()),
    );
    if let Some(peak) = peak_rss {
        report.row("node peak RSS (VmHWM)", mib(peak as f64));
    }
    report.row(
        "the node's sweep query (every 5 s) on the final tables, run once by the bench",
        format!("{sweep_ms:.1} ms"),
    );
    if let Some(stats) = &table_stats {
        let scanned: Vec<String> = stats
            .iter()
            .filter(|t| t.seq_tup_read > 0)
            .map(|t| format!("{} {} scans / {} rows", t.table, t.seq_scan, t.seq_tup_read))
            .collect();
        report.row(
            "sequential scans (pg_stat_user_tables, whole run)",
            if scanned.is_empty() {
                "none".to_owned()
            } else {
                scanned.join("; ")
            },
        );
    }
    let events = match &subscribers {
        Some(subscribers) => {
            // A message_received per message and a reply_sent per reply, at least.
            let expected = (layout.messages + end.sent.len()) as u64;
            let caught_up = subscribers.wait_for(expected, timeout).await;
            report.row(
                "events read by the stream consumer / delivered to the tenants' webhooks",
                format!(
                    "{} / {} (≥ {expected} expected), {}",
                    subscribers.consumed(),
                    subscribers.delivered(),
                    match caught_up {
                        Some(lag) =>
                            format!("all in {:.2} s after the last reply", lag.as_secs_f64()),
                        None => "still short at the timeout".to_owned(),
                    }
                ),
            );
            if caught_up.is_none() {
                report.problems.push(format!(
                    "event subscribers got {} (stream) and {} (webhooks) of at least {expected} events",
                    subscribers.consumed(),
                    subscribers.delivered()
                ));
            }
            json!({
                "consumed": subscribers.consumed(),
                "delivered": subscribers.delivered(),
                "catch_up_secs": caught_up.map(|lag| lag.as_secs_f64()),
            })
        }
        None => serde_json::Value::Null,
    };
    report.cpu_per_message(end.cpu, layout.messages);
    report.machine_busy_before(baseline.machine_load);
    report.verdicts.push(Verdict::at_least(
        "≥ 5,000 inbound msg/s end to end",
        e2e_rate,
        TARGET_MSGS_PER_SEC,
        "msg/s",
    ));
    check_delivery(&mut report, &layout, accepted, &end, &baseline.counts, 0);
    report.results = json!({
        "messages": layout.messages,
        "tenants": layout.tenants,
        "chats": layout.chats(),
        "messages_per_chat": layout.messages_per_chat,
        "concurrency": options.concurrency,
        "seeded_old_messages": options.seed_old_messages,
        "accepted": accepted,
        "delivery_failures": outcome.failures(),
        "accept_secs": accept_secs,
        "accept_rate_msgs_per_sec": accept_rate,
        "e2e_secs": e2e_secs,
        "e2e_rate_msgs_per_sec": e2e_rate,
        "webhook_response": response,
        "replies_sent": end.sent.len(),
        "mark_reads": mark_reads,
        "machine_busy_before_run": baseline.machine_load,
        "db_counts": end.completion.counts,
        "db_counts_before": baseline.counts,
        "node_peak_rss_bytes": peak_rss,
        "sweep_query_ms": sweep_ms,
        "postgres_table_stats": table_stats,
        "events": events,
    });
    if !outcome.failures().is_empty() {
        report.row(
            "failed webhook attempts (retried)",
            format!("{:?}", outcome.failures()),
        );
    }
    deployment.shutdown().await;
    Ok(report)
}
