//! `bench latency`: gateway-added latency under a paced (open-loop) load.
//!
//! Deliveries are posted at `--rate` per second on a fixed schedule (absolute deadlines;
//! each post in its own task), whatever the node does: a node that falls behind cannot slow
//! the load down, and latency is measured from each message's *scheduled* send time, so
//! coordinated omission cannot hide it. A message's latency is the time the fake Cloud API
//! received its reply (same process, same clock) minus its scheduled time. With debounce 0
//! and the offline responder this is the gateway-added latency; it includes two HTTP hops
//! (the webhook in, the Graph API send out) and every database write on the way.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::AtomicUsize;
use std::time::{Duration, Instant};

use serde_json::json;

use super::env::CpuMark;
use super::flow::{
    Baseline, MEASURED_RUN, check_delivery, collect_replies, tick_accepted, warm_up,
};
use super::load::{Posted, open_loop, scheduled};
use super::node::{Deployment, NodeOptions};
use super::progress;
use super::report::{Report, Verdict, mib};
use super::setup::{Layout, build_deliveries, chat_index};
use super::stats::Distribution;

/// The p99 target of issue "Single-node gateway", milliseconds.
pub const TARGET_P99_MS: f64 = 10.0;

/// Options of `bench latency`.
#[derive(Debug, Clone, clap::Args)]
pub struct LatencyOptions {
    /// The node under test.
    #[command(flatten)]
    pub node: NodeOptions,
    /// Messages per second, paced.
    #[arg(long, default_value_t = 1000.0)]
    pub rate: f64,
    /// How long to send.
    #[arg(long, default_value_t = 30.0)]
    pub seconds: f64,
    /// Tenants (each with its own WhatsApp number) the messages are spread over.
    #[arg(long, default_value_t = 200)]
    pub tenants: usize,
    /// Messages per customer chat: 1 (default) gives every message its own chat; more
    /// spreads each chat's messages evenly over the run.
    #[arg(long, default_value_t = 1)]
    pub messages_per_chat: usize,
    /// How long to wait for the replies after the last send.
    #[arg(long, default_value_t = 300)]
    pub timeout_secs: u64,
    /// Before the node starts, seed this many old chat messages (inbound, spread over the
    /// tenants) for retention to work on while the load runs.
    #[arg(long, default_value_t = 0)]
    pub seed_old_messages: u64,
    /// How old the seeded messages are, in days.
    #[arg(long, default_value_t = 100)]
    pub seed_age_days: u32,
    /// `SALESBOY_RETENTION_DAYS` for the node: with the seeded messages 100 days old, the
    /// default (90) deletes them during the run; a larger value keeps them (the baseline).
    #[arg(long)]
    pub retention_days: Option<u32>,
    /// Write one line per message to this CSV file: its scheduled send, POST start, webhook
    /// answer and reply, milliseconds from the run's start (empty: never) — to see when in
    /// the run the slow ones were.
    #[arg(long)]
    pub timeline_csv: Option<std::path::PathBuf>,
}

/// Runs the benchmark.
pub async fn run(options: &LatencyOptions) -> anyhow::Result<Report> {
    let messages = (options.rate * options.seconds).round().max(1.0) as usize;
    let layout = Layout {
        tenants: options.tenants.max(1),
        messages,
        messages_per_chat: options.messages_per_chat.max(1),
    };
    let mut settings = Vec::new();
    if let Some(days) = options.retention_days {
        settings.push(("SALESBOY_RETENTION_DAYS", days.to_string()));
    }
    let mut deployment = Deployment::start_with_history(
        &options.node,
        &settings,
        256,
        layout.tenants,
        true,
        Some((options.seed_old_messages, options.seed_age_days)),
    )
    .await?;
    let deliveries = Arc::new(build_deliveries(MEASURED_RUN, &layout));
    warm_up(&deployment, layout.tenants).await?;
    // Retention deletes old messages from the node's start on: the books count from the
    // baseline, so what it deletes after the baseline is added back. The counter and the
    // counts are read until no batch landed between them.
    let (baseline, retained_at_baseline) = {
        let mut attempt = 0;
        loop {
            let before = deployment.retention_deleted_messages().await;
            let baseline = Baseline::read(&deployment).await?;
            let after = deployment.retention_deleted_messages().await;
            attempt += 1;
            if before == after || attempt == 20 {
                break (baseline, after);
            }
        }
    };

    progress(format!(
        "sending {messages} messages at {} msg/s for {} s",
        options.rate, options.seconds
    ));
    let url = deployment.webhook_url()?;
    let accepted_now = Arc::new(AtomicUsize::new(0));
    let ticker = tick_accepted(Arc::clone(&accepted_now), messages, Duration::from_secs(5));
    let retained_before = deployment.retention_deleted_messages().await;
    let mark = CpuMark::now(deployment.node()?.pid());
    let start = Instant::now() + Duration::from_millis(50);
    let outcome = open_loop(
        &deployment.http,
        &url,
        Arc::clone(&deliveries),
        options.rate,
        start,
        accepted_now,
    )
    .await;
    ticker.abort();
    let accepted = outcome.accepted();
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
    let retained_after = deployment.retention_deleted_messages().await;
    let deleted_during_run = retained_after - retained_before;
    let peak_rss = deployment.node()?.peak_rss();
    baseline.counter.close().await;

    // Pair each chat's messages (in schedule order) with its replies (in arrival order).
    let mut messages_of: HashMap<usize, Vec<usize>> = HashMap::new();
    for i in 0..layout.messages {
        messages_of.entry(layout.chat_of(i)).or_default().push(i);
    }
    let mut replies_of: HashMap<usize, Vec<Instant>> = HashMap::new();
    for reply in &end.sent {
        if let Some(chat) = chat_index(MEASURED_RUN, &reply.to) {
            replies_of.entry(chat).or_default().push(reply.received);
        }
    }
    let mut reply_of: Vec<Option<Instant>> = vec![None; layout.messages];
    let mut latencies = Vec::with_capacity(layout.messages);
    let mut from_post = Vec::with_capacity(layout.messages);
    let mut merged_chats = 0;
    for (chat, indices) in &messages_of {
        let Some(replies) = replies_of.get_mut(chat) else {
            continue;
        };
        if replies.len() != indices.len() {
            merged_chats += 1;
            continue;
        }
        replies.sort();
        for (&i, &received) in indices.iter().zip(replies.iter()) {
            reply_of[i] = Some(received);
            let at = scheduled(start, options.rate, i);
            latencies.push(received.saturating_duration_since(at).as_secs_f64() * 1e3);
            if let Some(posted) = outcome.posted[i].started {
                from_post.push(received.saturating_duration_since(posted).as_secs_f64() * 1e3);
            }
        }
    }
    let latency = Distribution::of(latencies);
    let latency_from_post = Distribution::of(from_post);
    // Milliseconds from each delivery's scheduled send to the moment `when` picks.
    let since_scheduled = |when: fn(&Posted) -> Option<Instant>| {
        let posted = outcome.posted.iter().enumerate();
        Distribution::of(
            posted
                .filter_map(|(i, p)| {
                    let at = scheduled(start, options.rate, i);
                    Some(when(p)?.saturating_duration_since(at).as_secs_f64() * 1e3)
                })
                .collect(),
        )
    };
    let ingress = since_scheduled(|p| p.accepted);
    let lag = since_scheduled(|p| p.started);
    let last_start = outcome.posted.iter().filter_map(|p| p.started).max();
    let achieved = match last_start {
        Some(last) if layout.messages > 1 => {
            (layout.messages - 1) as f64 / last.duration_since(start).as_secs_f64().max(1e-9)
        }
        _ => 0.0,
    };

    if let Some(path) = &options.timeline_csv {
        write_timeline(path, start, options.rate, &outcome.posted, &reply_of)?;
    }

    let mut report = deployment.report("latency");
    report.row(
        "messages / tenants / chats",
        format!(
            "{} / {} / {}",
            layout.messages,
            layout.tenants,
            layout.chats()
        ),
    );
    report.row(
        "target rate / achieved send rate",
        format!("{:.0} / {achieved:.1} msg/s", options.rate),
    );
    report.row(
        "**gateway-added latency** (reply at fake Cloud API − scheduled send; debounce 0, offline responder, two HTTP hops)",
        latency.cell(),
    );
    report.row(
        "same, measured from the actual POST start (leaves out the generator's lag)",
        latency_from_post.cell(),
    );
    report.row("webhook answered 200 − scheduled send", ingress.cell());
    report.row("load generator lag (POST start − scheduled)", lag.cell());
    if merged_chats > 0 {
        report.row(
            "chats whose messages were merged into fewer replies (left out of the latency)",
            merged_chats.to_string(),
        );
    }
    if options.seed_old_messages > 0 {
        report.row(
            "old messages seeded before the run (retention's work)",
            format!(
                "{} ({} days old; retention_days {})",
                options.seed_old_messages,
                options.seed_age_days,
                options
                    .retention_days
                    .map_or_else(|| "default 90".to_owned(), |d| d.to_string())
            ),
        );
    }
    report.row(
        "messages deleted by retention between the first send and the last reply",
        format!("{deleted_during_run:.0}"),
    );
    if let Some(peak) = peak_rss {
        report.row("node peak RSS (VmHWM)", mib(peak as f64));
    }
    report.cpu_per_message(end.cpu, layout.messages);
    report.machine_busy_before(baseline.machine_load);
    let at_rate = if options.rate >= 1000.0 {
        format!("at {:.0} msg/s", options.rate)
    } else {
        format!("at {:.0} msg/s (the target is set at 1,000)", options.rate)
    };
    report.verdicts.push(Verdict::at_most(
        &format!("gateway-added latency p99 ≤ 10 ms {at_rate}"),
        latency.p99_ms,
        TARGET_P99_MS,
        "ms",
    ));
    report.verdicts.push(Verdict {
        target: "p50 (reported, no target)".to_owned(),
        measured: format!("{:.2} ms", latency.p50_ms),
        met: true,
        verdict: "—".to_owned(),
    });
    if achieved < options.rate * 0.98 {
        report.problems.push(format!(
            "the load generator fell behind: {achieved:.1} msg/s sent for {:.0} scheduled",
            options.rate
        ));
    }
    check_delivery(
        &mut report,
        &layout,
        accepted,
        &end,
        &baseline.counts,
        (retained_after - retained_at_baseline) as i64,
    );
    report.results = json!({
        "messages": layout.messages,
        "tenants": layout.tenants,
        "chats": layout.chats(),
        "messages_per_chat": layout.messages_per_chat,
        "rate": options.rate,
        "seconds": options.seconds,
        "achieved_rate": achieved,
        "accepted": accepted,
        "delivery_failures": outcome.failures(),
        "latency": latency,
        "latency_from_post_start": latency_from_post,
        "webhook_accepted_since_scheduled": ingress,
        "generator_lag": lag,
        "merged_chats": merged_chats,
        "replies_sent": end.sent.len(),
        "machine_busy_before_run": baseline.machine_load,
        "db_counts": end.completion.counts,
        "node_peak_rss_bytes": peak_rss,
        "seeded_old_messages": options.seed_old_messages,
        "retention_deleted_during_run": deleted_during_run,
    });
    deployment.shutdown().await;
    Ok(report)
}

/// Writes `--timeline-csv`: per message, milliseconds from `start` to its scheduled send,
/// its POST start, its webhook answer and its reply.
fn write_timeline(
    path: &std::path::Path,
    start: Instant,
    rate: f64,
    posted: &[Posted],
    reply_of: &[Option<Instant>],
) -> anyhow::Result<()> {
    use std::fmt::Write as _;
    let ms = |at: Option<Instant>| {
        at.map(|at| {
            format!(
                "{:.3}",
                at.saturating_duration_since(start).as_secs_f64() * 1e3
            )
        })
        .unwrap_or_default()
    };
    let mut csv = String::from("message,scheduled_ms,post_started_ms,accepted_ms,reply_ms\n");
    for (i, (p, reply)) in posted.iter().zip(reply_of).enumerate() {
        let at = Some(scheduled(start, rate, i));
        let _ = writeln!(
            csv,
            "{i},{},{},{},{}",
            ms(at),
            ms(p.started),
            ms(p.accepted),
            ms(*reply)
        );
    }
    std::fs::write(path, csv)
        .map_err(|e| anyhow::anyhow!("cannot write the timeline to {}: {e}", path.display()))
}
