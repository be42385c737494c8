//! Steps every bench shares: warming the tenants up, waiting for the replies, and checking
//! that every message was answered exactly once.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use salesboy_testkit::SentMessage;

use super::env::{CpuMark, CpuUsage};
use super::load::closed_loop;
use super::node::Deployment;
use super::progress;
use super::report::Report;
use super::setup::{Layout, chat_index, delivery};
use super::verify::{Counter, DbCounts};

/// The run id of warm-up messages (measured runs use 1).
pub const WARMUP_RUN: u32 = 0;
/// The run id of measured messages.
pub const MEASURED_RUN: u32 = 1;

/// Activates every tenant with one message each (its own chat) and waits for the replies,
/// so that the measured run starts with tenants active and connection pools open; then
/// forgets what the fake Cloud API recorded.
pub async fn warm_up(deployment: &Deployment, tenants: usize) -> anyhow::Result<()> {
    let started = Instant::now();
    let deliveries: Vec<_> = (0..tenants)
        .map(|t| delivery(WARMUP_RUN, t, t, &format!("wamid.warmup.{t}"), t))
        .collect();
    let url = deployment.webhook_url()?;
    let outcome = closed_loop(
        &deployment.http,
        &url,
        Arc::new(deliveries),
        16,
        Arc::new(AtomicUsize::new(0)),
    )
    .await;
    anyhow::ensure!(
        outcome.accepted() == tenants,
        "warm-up: {} of {tenants} deliveries accepted ({:?})",
        outcome.accepted(),
        outcome.failures()
    );
    deployment
        .whatsapp
        .wait_for_sent(tenants, Duration::from_secs(300))
        .await
        .map_err(|e| anyhow::anyhow!("warm-up: {e}"))?;
    // Let the last `mark_reply_sent` writes land before the clock starts.
    tokio::time::sleep(Duration::from_millis(500)).await;
    deployment.whatsapp.clear();
    progress(format!(
        "warm-up: {tenants} tenants active in {:.1} s",
        started.elapsed().as_secs_f64()
    ));
    Ok(())
}

/// What the measured run starts from, read after the warm-up.
pub struct Baseline {
    /// Counts the database's messages and replies (close it when done).
    pub counter: Counter,
    /// The database's counts before the run.
    pub counts: DbCounts,
    /// How busy the machine was just before the run (0–1).
    pub machine_load: f64,
}

impl Baseline {
    /// Connects the counter and reads the database's counts and the machine's load.
    pub async fn read(deployment: &Deployment) -> anyhow::Result<Self> {
        let counter = Counter::connect(&deployment.database_url).await?;
        let counts = counter.counts().await?;
        let machine_load = deployment.machine_load_before_run().await;
        Ok(Self {
            counter,
            counts,
            machine_load,
        })
    }
}

/// How waiting for the replies ended.
#[derive(Debug, Clone, Copy)]
pub struct Completion {
    /// Whether everything expected arrived before the timeout.
    pub complete: bool,
    /// The database's counts at the end.
    pub counts: DbCounts,
}

/// Waits until the run is answered: with one message per chat, until the fake received
/// `accepted` sends; otherwise (batches may merge) until the database has
/// `inbound_total` inbound messages, none unanswered, none pending, and the fake received
/// every recorded reply (`outbound_before` were recorded before the run). Gives up after
/// `timeout` and says so (the report then lists what is missing).
pub async fn wait_for_replies(
    deployment: &mut Deployment,
    counter: &Counter,
    layout: &Layout,
    accepted: usize,
    inbound_total: i64,
    outbound_before: i64,
    timeout: Duration,
) -> anyhow::Result<Completion> {
    let started = Instant::now();
    let mut last_progress = Instant::now();
    let complete = loop {
        let sent = deployment.whatsapp.sent_count();
        let done = if layout.messages_per_chat <= 1 {
            // Count only this run's recipients: a stray sender (another test's node that
            // found this port) must not end the wait early.
            sent >= accepted
                && deployment
                    .whatsapp
                    .sent()
                    .iter()
                    .filter(|s| chat_index(MEASURED_RUN, &s.to).is_some())
                    .count()
                    >= accepted
        } else {
            let counts = counter.counts().await?;
            counts.inbound >= inbound_total
                && counts.unanswered == 0
                && counts.pending == 0
                && sent as i64 >= counts.outbound - outbound_before
        };
        if done {
            break true;
        }
        if started.elapsed() > timeout {
            break false;
        }
        deployment.node_mut()?.check_alive()?;
        if last_progress.elapsed() >= Duration::from_secs(2) {
            progress(format!("  {sent} replies received"));
            last_progress = Instant::now();
        }
        let pause = if layout.messages_per_chat <= 1 {
            10
        } else {
            200
        };
        tokio::time::sleep(Duration::from_millis(pause)).await;
    };
    Ok(Completion {
        complete,
        counts: counter.counts().await?,
    })
}

/// Says every `every` how many of the run's `total` deliveries `accepted` counts so far,
/// until the returned task is aborted.
pub fn tick_accepted(
    accepted: Arc<AtomicUsize>,
    total: usize,
    every: Duration,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut interval = tokio::time::interval(every);
        interval.tick().await;
        loop {
            interval.tick().await;
            progress(format!(
                "  {} of {total} accepted",
                accepted.load(Ordering::Relaxed)
            ));
        }
    })
}

/// What a measured run left once its replies are in.
#[derive(Debug)]
pub struct RunEnd {
    /// How waiting ended, with the database's counts a second after.
    pub completion: Completion,
    /// The CPU used from the mark until the replies were in.
    pub cpu: CpuUsage,
    /// What the fake Cloud API received.
    pub sent: Vec<SentMessage>,
}

/// Waits for the replies to the `accepted` deliveries ([`wait_for_replies`]), reads the CPU
/// used since `mark`, then looks again a second later: late duplicates would arrive after
/// the count was reached.
pub async fn collect_replies(
    deployment: &mut Deployment,
    baseline: &Baseline,
    layout: &Layout,
    accepted: usize,
    mark: &CpuMark,
    timeout: Duration,
) -> anyhow::Result<RunEnd> {
    let counter = &baseline.counter;
    let completion = wait_for_replies(
        deployment,
        counter,
        layout,
        accepted,
        baseline.counts.inbound + accepted as i64,
        baseline.counts.outbound,
        timeout,
    )
    .await?;
    let cpu = mark.usage();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let sent = deployment.whatsapp.sent();
    let completion = Completion {
        counts: counter.counts().await?,
        ..completion
    };
    Ok(RunEnd {
        completion,
        cpu,
        sent,
    })
}

/// Checks the run's replies against its messages and writes what is wrong into the report:
/// chats with no reply, more replies than messages, unanswered or dismissed messages,
/// unsent replies, refused deliveries. `before`: the database's counts before the run (old
/// messages seeded for retention are inbound and unanswered); `retired`: how many of those
/// old inbound messages retention deleted since `before` was read.
pub fn check_delivery(
    report: &mut Report,
    layout: &Layout,
    accepted: usize,
    end: &RunEnd,
    before: &DbCounts,
    retired: i64,
) {
    let (sent, completion) = (&end.sent, &end.completion);
    let mut replies_per_chat: HashMap<usize, usize> = HashMap::new();
    let mut strangers = 0;
    for message in sent {
        match chat_index(MEASURED_RUN, &message.to) {
            Some(chat) => *replies_per_chat.entry(chat).or_insert(0) += 1,
            None => strangers += 1,
        }
    }
    let mut messages_per_chat: HashMap<usize, usize> = HashMap::new();
    for i in 0..layout.messages {
        *messages_per_chat.entry(layout.chat_of(i)).or_insert(0) += 1;
    }
    let silent = messages_per_chat
        .keys()
        .filter(|chat| !replies_per_chat.contains_key(chat))
        .count();
    let extra: usize = replies_per_chat
        .iter()
        .map(|(chat, &replies)| replies.saturating_sub(*messages_per_chat.get(chat).unwrap_or(&0)))
        .sum();
    let counts = &completion.counts;
    let persisted = counts.inbound - before.inbound + retired;
    let unanswered = counts.unanswered - before.unanswered + retired;
    if accepted < layout.messages {
        report.problems.push(format!(
            "{} of {} deliveries never accepted after retries",
            layout.messages - accepted,
            layout.messages
        ));
    }
    if persisted != accepted as i64 {
        report.problems.push(format!(
            "{persisted} messages persisted for {accepted} accepted deliveries"
        ));
    }
    if !completion.complete {
        report
            .problems
            .push("timed out waiting for the replies".to_owned());
    }
    if silent > 0 {
        report
            .problems
            .push(format!("{silent} chats got no reply (messages lost)"));
    }
    if extra > 0 {
        report.problems.push(format!(
            "{extra} replies beyond one per message (duplicates)"
        ));
    }
    if layout.messages_per_chat <= 1 && sent.len() != layout.messages {
        report.problems.push(format!(
            "{} replies for {} messages (one chat each)",
            sent.len(),
            layout.messages
        ));
    }
    if strangers > 0 {
        report.problems.push(format!(
            "{strangers} replies to recipients the run never used"
        ));
    }
    if unanswered > 0 {
        report.problems.push(format!(
            "{unanswered} inbound messages left unanswered in the database"
        ));
    }
    if counts.dismissed > 0 {
        report.problems.push(format!(
            "{} inbound messages dismissed without a reply",
            counts.dismissed
        ));
    }
    if counts.pending > 0 {
        report
            .problems
            .push(format!("{} replies recorded but not sent", counts.pending));
    }
}
